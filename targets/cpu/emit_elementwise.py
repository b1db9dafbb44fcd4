"""Elementwise lowering for the cpu target: one specialised loop nest per node.

Every single elementwise op (Add, Relu, Clip, ...) and ``lowering::FusedElementwise`` go through one
emitter. The body encoding is the one ``fused_elementwise`` in ``lowering/reference/ops.py`` defines:
registers 0..n-1 are the node inputs, each op in ``body_ops`` appends a register, reading its operands'
register numbers from ``body_args`` and its float parameters from ``body_params``.

Broadcasting is resolved at compile time: dimensions of size one are dropped, neighbouring dimensions that
every input treats alike are merged, and the innermost merged dimension becomes a unit-stride (or hoisted
scalar) loop gcc vectorizes; the outer dimensions become one parallel loop over rows. Scalar constants are
inlined as exact float literals.
"""

from __future__ import annotations

from lowering.ir import Node, Value
from lowering.opinfo import BINARY_OPS, DOMAIN, UNARY_OPS, activation_params

from .pack import batchnorm_scale_shift
from .registry import ANY_STORED, EmitContext, KernelCode, c_float, numel, register

BINARY_C = {"Add": "{0} + {1}", "Sub": "{0} - {1}", "Mul": "{0} * {1}", "Div": "{0} / {1}"}
UNARY_C = {
    "Relu": "lw_relu({0})",
    "LeakyRelu": "lw_leaky({0}, {p0})",
    "Clip": "lw_clip({0}, {p0}, {p1})",
    "Sigmoid": "lw_sigmoid({0})",
    "Tanh": "lw_tanhf({0})",
    "Neg": "-{0}",
    "Abs": "fabsf({0})",
    "Exp": "lw_expf({0})",
    "Sqrt": "sqrtf({0})",
    "Identity": "{0}",
    "Gelu": "lw_gelu({0}, {p0})",
}
ROW_CHUNK = 8192  # elements per parallel task when the inner dimension is long
PARALLEL_MIN = 32768  # elements below which a loop runs on one thread


def collapse_broadcast(out_shape: tuple[int, ...], in_shapes: list[tuple[int, ...]]):
    """Merged loop dims over the output and, per input, the element stride along each (0: broadcast)."""
    rank = len(out_shape)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in in_shapes]
    dims: list[int] = []
    flags: list[tuple[bool, ...]] = []
    for d in range(rank):
        if out_shape[d] == 1:
            continue
        full = tuple(p[d] != 1 for p in padded)
        if dims and flags[-1] == full:
            dims[-1] *= out_shape[d]
        else:
            dims.append(out_shape[d])
            flags.append(full)
    if not dims:
        dims, flags = [1], [tuple(True for _ in in_shapes)]
    strides = []
    for i in range(len(in_shapes)):
        step, per_dim = 1, [0] * len(dims)
        for d in reversed(range(len(dims))):
            if flags[d][i]:
                per_dim[d] = step
                step *= dims[d]
        strides.append(per_dim)
    return dims, strides


def emit_body(
    ctx: EmitContext, node: Node, inputs: list[Value], ops: list[str], args: list[int], params: list[float]
) -> KernelCode:
    """The loop nest computing ``ops`` over broadcast ``inputs`` into ``node.output``."""
    out = node.output
    shape = out.type.shape
    if numel(shape) == 0:
        return KernelCode("(void)ctx;")
    dims, strides = collapse_broadcast(shape, [v.type.shape for v in inputs])
    inner, outer = dims[-1], dims[:-1]
    rows = numel(outer)
    chunk = inner if inner <= 2 * ROW_CHUNK else ROW_CHUNK
    chunks = -(-inner // chunk)
    lines = [f"float *y = {ctx.out(out)};"]
    loads, hoisted = [], []
    for i, v in enumerate(inputs):
        if v.is_const and v.const.size == 1:
            loads.append(f"const float r{i} = {c_float(v.const.reshape(-1)[0])};")
            continue
        lines.append(f"const float *x{i} = {ctx.ptr(v)};")
        if strides[i][-1]:
            loads.append(f"const float r{i} = x{i}r[j];")
        else:
            hoisted.append(f"const float r{i} = x{i}r[0];")
    task = [
        f"const long row = t / {chunks}, j0 = (t % {chunks}) * {chunk};",
        f"const long j1 = j0 + {chunk} < {inner} ? j0 + {chunk} : {inner};",
    ]
    if outer:
        task.append("long rem = row;")
        for d in reversed(range(len(outer))):
            task.append(f"const long c{d} = rem % {outer[d]}; rem /= {outer[d]};")
    for i, v in enumerate(inputs):
        if not (v.is_const and v.const.size == 1):
            offset = " + ".join(f"c{d} * {strides[i][d]}" for d in range(len(outer)) if strides[i][d]) or "0"
            task.append(f"const float *x{i}r = x{i} + {offset};")
    task.append(f"float *yr = y + row * {inner};")
    task += hoisted
    body = loads + _register_code(len(inputs), ops, args, params)
    last = len(inputs) + len(ops) - 1
    task.append("for (long j = j0; j < j1; j++) {")
    task += ["    " + line for line in body] + [f"    yr[j] = r{last};", "}"]
    tasks = rows * chunks
    if numel(shape) >= PARALLEL_MIN and tasks > 1:
        lines.append("#pragma omp parallel for num_threads(ctx->nt) schedule(static) if (ctx->nt > 1)")
    lines.append(f"for (long t = 0; t < {tasks}; t++) {{")
    lines += ["    " + line for line in task] + ["}"]
    return KernelCode("\n".join(lines), flops=numel(shape) * len(ops))


def _register_code(n_inputs: int, ops: list[str], args: list[int], params: list[float]) -> list[str]:
    args, params = list(args), list(params)
    code, reg = [], n_inputs
    for op in ops:
        if op in BINARY_C:
            a, b = args.pop(0), args.pop(0)
            expr = BINARY_C[op].format(f"r{a}", f"r{b}")
        else:
            count = UNARY_OPS[op]
            p = [c_float(x) for x in params[:count]]
            del params[:count]
            expr = UNARY_C[op].format(f"r{args.pop(0)}", **{f"p{i}": x for i, x in enumerate(p)})
        code.append(f"const float r{reg} = {expr};")
        reg += 1
    return code


def check_fused(node: Node) -> str | None:
    ops = list(node.attr("body_ops", ()))
    if not ops:
        return "FusedElementwise has an empty body"
    unknown = [op for op in ops if op not in BINARY_OPS and op not in UNARY_OPS]
    if unknown:
        return f"FusedElementwise body op {unknown[0]} is not supported by the cpu target"
    n_args = sum(2 if op in BINARY_OPS else 1 for op in ops)
    n_params = sum(UNARY_OPS.get(op, 0) for op in ops)
    if len(node.attr("body_args", ())) != n_args or len(node.attr("body_params", ())) != n_params:
        return "FusedElementwise body_args/body_params do not match body_ops"
    return None


@register(f"{DOMAIN}::FusedElementwise", check=check_fused)
def emit_fused(ctx: EmitContext, node: Node) -> KernelCode:
    return emit_body(
        ctx,
        node,
        list(node.inputs),
        list(node.attr("body_ops")),
        list(node.attr("body_args", ())),
        list(node.attr("body_params", ())),
    )


@register(*sorted(BINARY_OPS))
def emit_binary(ctx: EmitContext, node: Node) -> KernelCode:
    return emit_body(ctx, node, [node.input(0), node.input(1)], [node.op], [0, 1], [])


def check_unary(node: Node) -> str | None:
    if activation_params(node) is None:
        return f"{node.op} bounds must be compile-time constants (scalars) on the cpu target"
    return None


@register(*sorted(op for op in UNARY_OPS if op != "Identity"), check=check_unary, data_inputs=1)
def emit_unary(ctx: EmitContext, node: Node) -> KernelCode:
    return emit_body(ctx, node, [node.input(0)], [node.op], [0], list(activation_params(node)))


@register(f"{DOMAIN}::Copy", dtypes=ANY_STORED)
def emit_copy(ctx: EmitContext, node: Node) -> KernelCode:
    n = numel(node.output.type.shape) * node.output.type.dtype.itemsize
    return KernelCode(f"lw_copy(ctx->nt, {ctx.out(node.output)}, {ctx.ptr(node.input(0))}, {n});")


def check_batchnorm(node: Node) -> str | None:
    if node.attr("training_mode", 0):
        return "BatchNormalization in training mode is not supported by the cpu target"
    if any(v is None or not v.is_const for v in node.inputs[1:5]):
        return "BatchNormalization scale, bias, mean and variance must be constants on the cpu target"
    if node.input(0).type.rank < 2:
        return "BatchNormalization needs an input of rank 2 or more"
    return None


@register("BatchNormalization", check=check_batchnorm, data_inputs=1)
def emit_batchnorm(ctx: EmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    scale, shift = batchnorm_scale_shift(*(v.const for v in node.inputs[1:5]), node.attr("epsilon", 1e-5))
    n, c, p = shape[0], shape[1], numel(shape[2:])
    body = (
        f"lw_scale_shift(ctx->nt, {ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {n}, {c}, {p}, "
        f"{ctx.weights(scale)}, {ctx.weights(shift)});"
    )
    return KernelCode(body, flops=2 * numel(shape))

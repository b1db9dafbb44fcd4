"""Reduction, Softmax, ArgMax and CumSum lowering for the cpu target (kernels in ``kernels_math.c``).

Every kernel here works along the middle axis of a tensor viewed as ``[outer][len][inner]`` (see
``kernels_math.c``). Reductions over any set of axes are collapsed at compile time: size-one dimensions are
dropped and neighbouring dimensions that are both reduced or both kept merge, which leaves alternating
kept/reduced groups. Each reduced group is one ``lw_reduce`` pass, innermost first, through the workspace
(a mean of equal-sized means is the mean, a max of maxima the max), so a LayerNorm-style ``axes=[-1]`` or
a pooling-style ``axes=[2, 3]`` is one pass and ``axes=[0, 2]`` two.

Axes (attribute, or the constant input of ReduceSum >= 13 / Reduce* >= 18) must be known when the model is
compiled; CumSum's axis input too. Softmax and LogSoftmax have opset-13 semantics (the importer upgrades
older models, whose "coerce to 2-D" Softmax the version converter rewrites).
"""

from __future__ import annotations

from lowering.ir import DType, Node

from .registry import C_TYPES, EmitContext, KernelCode, align, numel, register

REDUCE_KINDS = {"ReduceSum": "LW_REDUCE_SUM", "ReduceMean": "LW_REDUCE_MEAN", "ReduceMax": "LW_REDUCE_MAX",
                "ReduceMin": "LW_REDUCE_MIN"}
CUMSUM_TYPES = (DType.FLOAT32, DType.INT64, DType.INT32)
CUMSUM_BLOCK = 1024  # inner positions per parallel CumSum task


def _constant_ints(node: Node, index: int) -> tuple[int, ...] | None:
    v = node.input(index)
    if v is None:
        return ()
    if not v.is_const:
        return None
    return tuple(int(a) for a in v.const.reshape(-1))


def node_reduce_axes(node: Node) -> tuple[int, ...] | str:
    """The sorted axes a Reduce* node reduces (() for a no-op), or why they are not known."""
    rank = node.input(0).type.rank
    axes = _constant_ints(node, 1)
    if axes is None:
        return f"{node.op} axes must be a constant on the cpu target"
    axes = axes or tuple(node.attr("axes", ()))
    if not axes:
        return () if node.attr("noop_with_empty_axes", 0) else tuple(range(rank))
    if any(not -rank <= a < rank for a in axes):
        return f"{node.op} axes {axes} are out of range for a rank-{rank} input"
    return tuple(sorted({a % rank for a in axes}))


def reduce_passes(shape: tuple[int, ...], axes: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(outer, len, inner) of each ``lw_reduce`` pass, innermost reduced group first; [] for a copy."""
    dims: list[int] = []
    reduced: list[bool] = []
    for d, size in enumerate(shape):
        if size == 1:
            continue
        if dims and reduced[-1] == (d in axes):
            dims[-1] *= size
        else:
            dims.append(size)
            reduced.append(d in axes)
    passes = []
    for k in reversed(range(len(dims))):
        if reduced[k]:
            passes.append((numel(dims[:k]), dims[k], numel(dims[k + 1:])))
            dims[k] = 1
    return passes


def check_reduce(node: Node) -> str | None:
    axes = node_reduce_axes(node)
    if isinstance(axes, str):
        return axes
    if 0 in node.input(0).type.shape:
        return f"{node.op} of an empty tensor is not supported by the cpu target"
    return None


@register(*REDUCE_KINDS, check=check_reduce, data_inputs=1)
def emit_reduce(ctx: EmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    passes = reduce_passes(shape, node_reduce_axes(node))
    x, y = ctx.ptr(node.input(0)), ctx.out(node.output)
    if not passes:  # nothing reduced: a copy
        return KernelCode(f"lw_copy(ctx->nt, {y}, {x}, {numel(shape) * 4});")
    sizes = [outer * inner for outer, _, inner in passes]  # elements after each pass
    offsets = [0, align(sizes[0] * 4)]  # ping-pong buffers in the workspace
    lines, src = [], x
    for k, (outer, length, inner) in enumerate(passes):
        dst = y if k == len(passes) - 1 else f"(float *)(ctx->ws + {offsets[k % 2]})"
        kind = REDUCE_KINDS[node.op]
        lines.append(f"lw_reduce(ctx->nt, {src}, {dst}, {outer}, {length}, {inner}, {kind});")
        src = f"(const float *)(ctx->ws + {offsets[k % 2]})"
    buffers = min(len(passes) - 1, 2)
    workspace = (0, offsets[1], offsets[1] + align(sizes[1] * 4) if buffers == 2 else 0)[buffers]
    return KernelCode("\n".join(lines), flops=numel(shape), workspace=workspace)


def _axis_split(node: Node, axis: int) -> tuple[int, int, int]:
    shape = node.input(0).type.shape
    axis %= len(shape)
    return numel(shape[:axis]), shape[axis], numel(shape[axis + 1:])


def check_axis(node: Node) -> str | None:
    rank = node.input(0).type.rank
    axis = node.attr("axis", _DEFAULT_AXIS[node.op])
    if rank == 0 or not -rank <= axis < rank:
        return f"{node.op} axis {axis} is out of range for a rank-{rank} input"
    return None


_DEFAULT_AXIS = {"Softmax": -1, "LogSoftmax": -1, "ArgMax": 0, "ArgMin": 0}


@register("Softmax", "LogSoftmax", check=check_axis)
def emit_softmax(ctx: EmitContext, node: Node) -> KernelCode:
    outer, length, inner = _axis_split(node, node.attr("axis", -1))
    body = (f"lw_softmax(ctx->nt, {ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {outer}, {length}, "
            f"{inner}, {int(node.op == 'LogSoftmax')});")
    return KernelCode(body, flops=5 * numel(node.input(0).type.shape))


def check_arg(node: Node) -> str | None:
    x = node.input(0)
    if x.type.dtype is not DType.FLOAT32 or node.output.type.dtype is not DType.INT64:
        return f"the cpu {node.op} takes a float32 tensor to int64 indices, not {x.type.dtype.value}"
    if 0 in x.type.shape:
        return f"{node.op} of an empty tensor is not supported by the cpu target"
    return check_axis(node)


@register("ArgMax", "ArgMin", check=check_arg, dtypes=None)
def emit_arg(ctx: EmitContext, node: Node) -> KernelCode:
    outer, length, inner = _axis_split(node, node.attr("axis", 0))
    body = (f"lw_arg_extreme(ctx->nt, {ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {outer}, {length}, "
            f"{inner}, {int(node.op == 'ArgMax')}, {int(bool(node.attr('select_last_index', 0)))});")
    return KernelCode(body, flops=numel(node.input(0).type.shape))


def check_cumsum(node: Node) -> str | None:
    axis = _constant_ints(node, 1)
    if not axis:
        return "CumSum's axis must be a constant on the cpu target"
    rank = node.input(0).type.rank
    if not -rank <= axis[0] < rank:
        return f"CumSum axis {axis[0]} is out of range for a rank-{rank} input"
    return None


@register("CumSum", check=check_cumsum, data_inputs=1, dtypes=CUMSUM_TYPES)
def emit_cumsum(ctx: EmitContext, node: Node) -> KernelCode:
    """Running sums row by row along the axis (``y[a] = y[a - 1] + x[a]``, or ``x[a - 1]`` when
    exclusive), each row a vector loop over a block of inner positions; sequential in the input type, like
    the reference."""
    x = node.input(0)
    outer, length, inner = _axis_split(node, _constant_ints(node, 1)[0])
    ctype = C_TYPES[x.type.dtype]
    reverse, exclusive = bool(node.attr("reverse", 0)), bool(node.attr("exclusive", 0))
    chunk = min(inner, CUMSUM_BLOCK)
    blocks = -(-inner // chunk)
    step = -inner if reverse else inner  # from one row to the next in the running order
    first = (length - 1) * inner if reverse else 0
    lines = [
        f"const {ctype} *x = {ctx.ptr(x)};",
        f"{ctype} *y = {ctx.out(node.output)};",
    ]
    if numel(x.type.shape) >= 65536 and outer * blocks > 1:
        lines.append("#pragma omp parallel for num_threads(ctx->nt) schedule(static) if (ctx->nt > 1)")
    first_row = "0" if exclusive else "xo[i]"
    previous = "xo[(a - 1) * step + i]" if exclusive else "xo[a * step + i]"
    lines += [
        f"for (long t = 0; t < {outer * blocks}; t++) {{",
        f"    const long o = t / {blocks}, i0 = (t % {blocks}) * {chunk};",
        f"    const long n = i0 + {chunk} < {inner} ? {chunk} : {inner} - i0;",
        f"    const long step = {step};",
        f"    const {ctype} *xo = x + o * {length * inner} + {first} + i0;",
        f"    {ctype} *yo = y + o * {length * inner} + {first} + i0;",
        f"    for (long i = 0; i < n; i++) yo[i] = {first_row};",
        f"    for (long a = 1; a < {length}; a++)",
        f"        for (long i = 0; i < n; i++) yo[a * step + i] = yo[(a - 1) * step + i] + {previous};",
        "}",
    ]
    return KernelCode("\n".join(lines), flops=numel(x.type.shape))


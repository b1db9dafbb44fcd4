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

import numpy as np

from lowering.ir import DType, Node

from .emit_nn import emit_bool_reduce
from .registry import C_TYPES, EmitContext, KernelCode, align, c_float, c_longs, numel, register

REDUCE_KINDS = {"ReduceSum": "LW_REDUCE_SUM", "ReduceMean": "LW_REDUCE_MEAN", "ReduceMax": "LW_REDUCE_MAX",
                "ReduceMin": "LW_REDUCE_MIN"}
#: Reductions only the general kernel (``lw_reduce_any``: any axes, one pass in double) computes.
OTHER_REDUCE_KINDS = {"ReduceProd": "LW_REDUCE_PROD", "ReduceL1": "LW_REDUCE_L1", "ReduceL2": "LW_REDUCE_L2",
                      "ReduceSumSquare": "LW_REDUCE_SUMSQ", "ReduceLogSum": "LW_REDUCE_LOGSUM",
                      "ReduceLogSumExp": "LW_REDUCE_LOGSUMEXP"}
MAX_REDUCE_RANK = 16
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
    v = node.input(1)
    empty = v is not None and v.type is not None and numel(v.type.shape) == 0
    axes = () if empty else _constant_ints(node, 1)
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


def _runtime_axes(node: Node):
    """The axes input when it is a tensor computed at run time (with at least one axis), else None."""
    v = node.input(1)
    return v if v is not None and not v.is_const and numel(v.type.shape) > 0 else None


def check_reduce(node: Node) -> str | None:
    axes_input = _runtime_axes(node) if node.input(1) is not None and node.input(1).type is not None else None
    if axes_input is not None:
        if axes_input.type.dtype is not DType.INT64:
            return f"{node.op} axes (input 1 '{axes_input.name}') must be int64"
        if node.input(0).type.rank > MAX_REDUCE_RANK:
            return f"{node.op} of a rank-{node.input(0).type.rank} tensor is not supported by the cpu target"
        return None
    axes = node_reduce_axes(node)
    if isinstance(axes, str):
        return axes
    return None


def _general_reduce(ctx: EmitContext, node: Node, axes: tuple[int, ...] | None) -> KernelCode:
    """``lw_reduce_any`` over constant ``axes``, or (None) the run-time axes of input 1, checked against the
    compiled output shape (a mismatch fails the run with status LW_STATUS_OPERAND)."""
    shape = node.input(0).type.shape
    out_shape = node.output.type.shape
    ny = numel(out_shape)
    kind = {**REDUCE_KINDS, **OTHER_REDUCE_KINDS}[node.op]
    lines = [f"static const long shape[{max(len(shape), 1)}] = {c_longs(shape or (1,))};"]
    if axes is None:
        axes_input = node.input(1)
        lines += [
            f"static const long out_shape[{max(len(out_shape), 1)}] = {c_longs(out_shape or (1,))};",
            f"const long mask = lw_reduce_mask({ctx.ptr(axes_input)}, {numel(axes_input.type.shape)}, "
            f"{len(shape)}, shape, {int(bool(node.attr('keepdims', 1)))}, {len(out_shape)}, out_shape);",
            "if (mask < 0) { *ctx->status = LW_STATUS_OPERAND; return; }",
        ]
        mask = "(unsigned)mask"
    else:
        mask = f"{sum(1 << a for a in axes)}u"
    lines.append(f"lw_reduce_any({ctx.ptr(node.input(0))}, {ctx.out(node.output)}, (double *)ctx->ws, "
                 f"{len(shape)}, shape, {mask}, {ny}, {kind});")
    workspace = align(ny * 8 * (2 if node.op == "ReduceLogSumExp" else 1))
    return KernelCode("\n".join(lines), flops=numel(shape), workspace=workspace)


@register("ReduceMax", "ReduceMin", check=check_reduce, data_inputs=1, dtypes=(DType.FLOAT32, DType.BOOL))
@register(*REDUCE_KINDS, *OTHER_REDUCE_KINDS, check=check_reduce, data_inputs=1)
def emit_reduce(ctx: EmitContext, node: Node) -> KernelCode:
    if node.input(0).type.dtype is DType.BOOL:  # ReduceMax: any, ReduceMin: all (emit_nn.py)
        axes = None if _runtime_axes(node) is not None else node_reduce_axes(node)
        return emit_bool_reduce(ctx, node, axes)
    shape = node.input(0).type.shape
    if _runtime_axes(node) is not None:
        return _general_reduce(ctx, node, None)
    axes = node_reduce_axes(node)
    if node.op in OTHER_REDUCE_KINDS or 0 in shape:
        if not axes and (node.op in REDUCE_KINDS or node.attr("noop_with_empty_axes", 0)):
            # noop_with_empty_axes: the input, unchanged (as ONNX says); a sum, max... of a scalar is itself
            return KernelCode(f"lw_copy(ctx->nt, {ctx.out(node.output)}, {ctx.ptr(node.input(0))}, "
                              f"{numel(shape) * 4});")
        return _general_reduce(ctx, node, axes)
    passes = reduce_passes(shape, axes)
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
    v = node.input(1)
    if v is None or v.type is None or numel(v.type.shape) != 1 or \
            v.type.dtype not in (DType.INT64, DType.INT32):
        return f"{node.op}'s axis must be one int32 or int64 value"
    rank = node.input(0).type.rank
    axis = _constant_ints(node, 1)
    if axis is not None and not -rank <= axis[0] < rank:
        return f"{node.op} axis {axis[0]} is out of range for a rank-{rank} input"
    return None


@register("CumSum", "CumProd", check=check_cumsum, data_inputs=1, dtypes=CUMSUM_TYPES)
def emit_cumsum(ctx: EmitContext, node: Node) -> KernelCode:
    """Running sums (products) row by row along the axis (``y[a] = y[a - 1] + x[a]``, or ``x[a - 1]`` when
    exclusive), each row a vector loop over a block of inner positions; sequential in the input type, like
    the reference. An axis computed at run time selects among loops compiled for every axis."""
    x = node.input(0)
    ctype = C_TYPES[x.type.dtype]
    lines = [
        f"const {ctype} *x = {ctx.ptr(x)};",
        f"{ctype} *y = {ctx.out(node.output)};",
    ]
    axis = _constant_ints(node, 1)
    if axis is not None:
        return KernelCode("\n".join(lines + _cum_loops(node, axis[0])), flops=numel(x.type.shape))
    rank = x.type.rank
    lines += [f"long axis = (long){ctx.ptr(node.input(1))}[0];",
              f"if (axis < 0) axis += {rank};",
              "switch (axis) {"]
    for a in range(rank):
        lines += [f"case {a}: {{"] + ["    " + line for line in _cum_loops(node, a)] + ["    break;", "}"]
    lines += ["default: *ctx->status = LW_STATUS_OPERAND;", "}"]
    return KernelCode("\n".join(lines), flops=numel(x.type.shape))


def _cum_loops(node: Node, axis: int) -> list[str]:
    x = node.input(0)
    outer, length, inner = _axis_split(node, axis)
    ctype = C_TYPES[x.type.dtype]
    op = "+" if node.op == "CumSum" else "*"
    reverse, exclusive = bool(node.attr("reverse", 0)), bool(node.attr("exclusive", 0))
    chunk = max(min(inner, CUMSUM_BLOCK), 1)
    blocks = -(-inner // chunk)
    step = -inner if reverse else inner  # from one row to the next in the running order
    first = (length - 1) * inner if reverse else 0
    lines = []
    if numel(x.type.shape) >= 65536 and outer * blocks > 1:
        lines.append("#pragma omp parallel for num_threads(ctx->nt) schedule(static) if (ctx->nt > 1)")
    first_row = ("0" if op == "+" else "1") if exclusive else "xo[i]"
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
        f"        for (long i = 0; i < n; i++) yo[a * step + i] = yo[(a - 1) * step + i] {op} {previous};",
        "}",
    ]
    return lines


# --- Hardmax, LpNormalization, Instance/Group/RMS normalization -----------------------------------------

def check_hardmax_lp(node: Node) -> str | None:
    rank = node.input(0).type.rank
    axis = node.attr("axis", -1)
    if rank == 0 or not -rank <= axis < rank:
        return f"{node.op} axis {axis} is out of range for a rank-{rank} input"
    if node.op == "LpNormalization" and node.attr("p", 2) not in (1, 2):
        return f"LpNormalization p={node.attr('p', 2)} (1 and 2 are defined)"
    return None


@register("Hardmax", "LpNormalization", check=check_hardmax_lp)
def emit_hardmax_lp(ctx: EmitContext, node: Node) -> KernelCode:
    outer, length, inner = _axis_split(node, node.attr("axis", -1))
    kind = 0 if node.op == "Hardmax" else int(node.attr("p", 2))
    body = (f"lw_along_axis({ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {outer}, {length}, {inner}, "
            f"{kind});")
    return KernelCode(body, flops=3 * numel(node.input(0).type.shape))


def _rms_scale(node: Node):
    """RMSNormalization's scale as (value, per_element): a scalar, or one value per element of the
    normalized axes (a constant of another broadcastable shape is expanded at compile time); None: a run-time
    scale of another shape."""
    x, scale = node.input(0), node.input(1)
    axis = node.attr("axis", -1) % x.type.rank
    inner = x.type.shape[axis:]
    shape = scale.type.shape
    while shape and shape[0] == 1 and len(shape) > len(inner):
        shape = shape[1:]
    if numel(shape) == 1:
        return scale, False
    if tuple(shape) == tuple(inner):
        return scale, True
    if scale.is_const:
        try:
            return np.ascontiguousarray(np.broadcast_to(scale.const.reshape(shape), inner)), True
        except ValueError:
            return None
    return None


def check_norm(node: Node) -> str | None:
    x = node.input(0)
    if x.type.rank < (1 if node.op == "RMSNormalization" else 3):
        return f"{node.op} of a rank-{x.type.rank} tensor is not supported by the cpu target"
    if node.op == "RMSNormalization":
        axis = node.attr("axis", -1)
        if not -x.type.rank <= axis < x.type.rank:
            return f"RMSNormalization axis {axis} is out of range for a rank-{x.type.rank} input"
        if _rms_scale(node) is None:
            return "RMSNormalization scale must broadcast to the normalized axes on the cpu target"
        return None
    channels = x.type.shape[1]
    if any(v is None or numel(v.type.shape) != channels for v in node.inputs[1:3]):
        return f"{node.op} scale and bias must have one value per channel"
    if node.op == "GroupNormalization":
        groups = int(node.attr("num_groups", 0))
        if groups < 1 or channels % groups:
            return f"GroupNormalization num_groups={groups} does not divide {channels} channels"
    return None


@register("InstanceNormalization", "GroupNormalization", "RMSNormalization", check=check_norm)
def emit_norm(ctx: EmitContext, node: Node) -> KernelCode:
    x = node.input(0)
    shape = x.type.shape
    eps = c_float(node.attr("epsilon", 1e-5))
    bias = "NULL"
    if node.op == "RMSNormalization":
        axis = node.attr("axis", -1) % len(shape)
        rows, length = numel(shape[:axis]), numel(shape[axis:])
        scale, per_element = _rms_scale(node)
        scale = ctx.weights(scale) if isinstance(scale, np.ndarray) else ctx.ptr(scale)
        center, rmod, rmul, jdiv = 0, 1, 0, 1 if per_element else length
    else:
        n, c, spatial = shape[0], shape[1], numel(shape[2:])
        groups = c if node.op == "InstanceNormalization" else int(node.attr("num_groups"))
        rows, length = n * groups, (c // groups) * spatial
        scale, bias = ctx.ptr(node.input(1)), ctx.ptr(node.input(2))
        center, rmod, rmul, jdiv = 1, groups, c // groups, spatial
    body = (f"lw_norm_rows(ctx->nt, {ctx.ptr(x)}, {ctx.out(node.output)}, {rows}, {length}, {eps}, {center}, "
            f"{scale}, {bias}, {rmod}, {rmul}, {jdiv});")
    return KernelCode(body, flops=5 * numel(shape))


# --- NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss -----------------------------------------------------

LOSS_REDUCTIONS = ("none", "sum", "mean")


def check_loss(node: Node) -> str | None:
    x, target = node.input(0), node.input(1)
    if x.type.rank < 2:
        return f"{node.op} needs scores of rank 2 or more"
    if target is None or target.type.dtype not in (DType.INT64, DType.INT32):
        return f"{node.op} targets must be int64 or int32"
    if node.attr("reduction", "mean") not in LOSS_REDUCTIONS:
        return f"{node.op} reduction '{node.attr('reduction')}' is not supported"
    weight = node.input(2)
    if weight is not None and (weight.type.dtype is not DType.FLOAT32 or numel(weight.type.shape) !=
                               x.type.shape[1]):
        return f"{node.op} weights must be one float32 per class"
    return None


@register("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", check=check_loss, data_inputs=1,
          outputs=2)
def emit_loss(ctx: EmitContext, node: Node) -> KernelCode:
    """The loss of each position (``-log_prob[n][t][d] * w[t]``, 0 for ``ignore_index``), or its sum, or the
    sum over the weights taken (``mean``), in double; SoftmaxCrossEntropyLoss first writes LogSoftmax along
    axis 1 (to output 1, or the workspace). A target outside the classes fails the run (status 3)."""
    x, target, weight = node.input(0), node.input(1), node.input(2)
    shape = x.type.shape
    n, c, d = shape[0], shape[1], numel(shape[2:])
    reduction = node.attr("reduction", "mean")
    ignore = node.attr("ignore_index")
    lines = [f"const {C_TYPES[target.type.dtype]} *t = {ctx.ptr(target)};",
             f"float *y = {ctx.out(node.output)};"]
    workspace = 0
    if node.op == "SoftmaxCrossEntropyLoss":
        log_prob = node.outputs[1] if len(node.outputs) > 1 and node.outputs[1].type is not None else None
        if log_prob is not None:
            lines.append(f"float *lp = {ctx.out(log_prob)};")
        else:
            lines.append("float *lp = (float *)ctx->ws;")
            workspace = align(numel(shape) * 4)
        lines.append(f"lw_softmax(ctx->nt, {ctx.ptr(x)}, lp, {n}, {c}, {d}, 1);")
        lines.append("const float *x = lp;")
    else:
        lines.append(f"const float *x = {ctx.ptr(x)};")
    lines += [
        "double total = 0.0, taken = 0.0;",
        f"for (long i = 0; i < {n}; i++)",
        f"    for (long j = 0; j < {d}; j++) {{",
        f"        const long k = (long)t[i * {d} + j];",
        "        double loss = 0.0, w = 0.0;",
        f"        if ({'0' if ignore is None else f'k == {int(ignore)}L'}) {{",
        f"        }} else if (k < 0 || k >= {c}) {{",
        "            *ctx->status = LW_STATUS_INDEX_RANGE;",
        "        } else {",
        f"            w = {f'{ctx.ptr(weight)}[k]' if weight is not None else '1.0'};",
        f"            loss = -(double)x[(i * {c} + k) * {d} + j] * w;",
        "        }",
        f"        {'y[i * ' + str(d) + ' + j] = (float)loss;' if reduction == 'none' else 'total += loss;'}",
        "        taken += w;",
        "    }",
    ]
    if reduction == "sum":
        lines.append("y[0] = (float)total;")
    elif reduction == "mean":
        lines.append("y[0] = (float)(total / taken);")
    else:
        lines.append("(void)total; (void)taken;")
    return KernelCode("\n".join(lines), flops=6 * numel(shape), workspace=workspace)

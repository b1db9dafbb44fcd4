"""Neural-network ops of the cpu target beyond Conv and pooling (kernels in ``kernels_nn.c``).

- ConvTranspose (1-D to 3-D, groups, dilations, pads, ``output_shape``/``output_padding``, SAME auto
  padding): per (image, group) a GEMM of the transposed weights (read in place) with the packed input into
  a column buffer, then col2im accumulation into the output planes; the weights may be a run-time tensor.
  A column buffer over ``MAX_COLUMN_BYTES`` falls back to a direct loop nest.
- Col2Im: the block columns summed back into the image; ``image_shape`` must match the compiled output
  (checked at run time when it is not a constant) and ``block_shape`` may be a run-time operand (the
  kernel checks it against the input's shape).
- LRN, Det, ReverseSequence, MaxUnpool (its optional ``output_shape`` must match the compiled output).
- Training-mode BatchNormalization (``emit_batchnorm_training``) and ReduceMax / ReduceMin of bool tensors
  (``emit_bool_reduce``: any / all): the ops are registered in ``emit_elementwise.py`` and ``emit_math.py``,
  which dispatch here.

Output shapes are the compiled (static) ones; a run-time operand that contradicts them fails the run with
``LW_STATUS_OPERAND``. Spatial ops take at most 3 spatial axes, lifted to 3-D with leading 1s.
"""

from __future__ import annotations

from lowering.errors import LoweringError
from lowering.ir import DType, Node, Value
from lowering.reference.ops_nn import conv_transpose_geometry, lrn_window, max_unpool_shape

from .registry import ALL_TYPES, EmitContext, KernelCode, align, c_float, c_longs, numel, register

#: status lw_run returns when a run-time operand contradicts the compiled shapes (kernels_math.c)
STATUS_OPERAND = "LW_STATUS_OPERAND"
#: ConvTranspose runs as GEMMs plus col2im while one (image, group)'s columns fit in this many bytes of
#: workspace, else as the direct loop nest
MAX_COLUMN_BYTES = 256 << 20


def _lift(values, one: int, spatial: int) -> str:
    """A C initializer of 3 longs: ``values`` (one per spatial axis) after leading ``one``s."""
    return c_longs((one,) * (3 - spatial) + tuple(int(v) for v in values))


def _used_output(node: Node, index: int) -> Value | None:
    """Output ``index`` of ``node`` when the graph reads it (a later node or a graph output), else None."""
    if len(node.outputs) <= index or node.outputs[index] is None:
        return None
    value = node.outputs[index]
    graph_outputs = {id(v) for v in node.graph.outputs} if node.graph is not None else set()
    return value if value.uses() or id(value) in graph_outputs else None


def _int_operand_reason(node: Node, index: int, role: str, count: int) -> str | None:
    v = node.input(index)
    if v is None or v.type is None or v.type.dtype is not DType.INT64 or numel(v.type.shape) != count:
        return f"{node.op} {role} (input {index}) must be {count} int64 value(s)"
    return None


def _must_equal(ctx: EmitContext, value: Value, expected) -> str:
    """C that fails the run (LW_STATUS_OPERAND) unless the run-time int64 tensor ``value`` holds
    ``expected``, the values the compiled output shape was derived from."""
    expected = [int(e) for e in expected]
    n = len(expected)
    return (f"{{ static const int64_t want[{max(n, 1)}] = {c_longs(expected or [0])};\n"
            f"  for (long i = 0; i < {n}; i++) if ({ctx.ptr(value)}[i] != want[i]) "
            f"{{ *ctx->status = {STATUS_OPERAND}; return; }} }}\n")


# --- ConvTranspose ----------------------------------------------------------------------------------


def check_conv_transpose(node: Node) -> str | None:
    x, w = node.input(0), node.input(1)
    rank = x.type.rank
    if rank not in (3, 4, 5):
        return f"ConvTranspose on a rank-{rank} input: the cpu target takes 1-D to 3-D (rank 3 to 5)"
    if w is None or w.type.rank != rank:
        return f"ConvTranspose weights must have rank {rank}, like the input"
    groups = int(node.attr("group", 1))
    c, kernel = x.type.shape[1], tuple(w.type.shape[2:])
    if groups < 1 or c % groups or w.type.shape[0] != c:
        return (f"ConvTranspose weights {list(w.type.shape)} do not match {c} input channels in {groups} "
                "group(s)")
    if node.attr("kernel_shape") is not None and tuple(node.attr("kernel_shape")) != kernel:
        return (f"ConvTranspose kernel_shape {list(node.attr('kernel_shape'))} differs from the weights' "
                f"{list(kernel)}")
    geo = conv_transpose_geometry(node, tuple(x.type.shape[2:]), kernel)
    want = (x.type.shape[0], w.type.shape[1] * groups) + geo.out
    if tuple(node.output.type.shape) != want or min(geo.out) < 1:
        return (f"ConvTranspose output '{node.output.name}' has shape {list(node.output.type.shape)}, not "
                f"{list(want)}")
    b = node.input(2)
    if b is not None and numel(b.type.shape) != want[1]:
        return f"ConvTranspose bias '{b.name}' must have {want[1]} values"
    return None


@register("ConvTranspose", check=check_conv_transpose)
def emit_conv_transpose(ctx: EmitContext, node: Node) -> KernelCode:
    x, w = node.input(0), node.input(1)
    spatial = x.type.rank - 2
    groups = int(node.attr("group", 1))
    kernel = tuple(w.type.shape[2:])
    geo = conv_transpose_geometry(node, tuple(x.type.shape[2:]), kernel)
    n, c = x.type.shape[:2]
    m = w.type.shape[1] * groups
    fields = ", ".join([
        str(n), str(c), str(m), str(groups), _lift(x.type.shape[2:], 1, spatial), _lift(geo.out, 1, spatial),
        _lift(kernel, 1, spatial), _lift(geo.strides, 1, spatial), _lift(geo.dilations, 1, spatial),
        _lift(geo.pads_begin, 0, spatial),
    ])
    args = f"{ctx.ptr(x)}, {ctx.ptr(w)}, {ctx.opt_ptr(node.input(2))}, {ctx.out(node.output)}"
    flops = 2 * numel(x.type.shape) * w.type.shape[1] * numel(kernel)
    head = f"static const lw_convt_geom g = {{{fields}}};\n"
    # lw_conv_transpose_ws (kernels_nn.c): one (image, group)'s packed input and its columns, in floats
    cg, positions = c // groups, numel(x.type.shape[2:])
    packed = align(-(-positions // ctx.isa.nr) * ctx.isa.nr * cg, 16)
    floats = packed + w.type.shape[1] * numel(kernel) * positions
    if 4 * floats > MAX_COLUMN_BYTES:  # the direct loop nest needs no workspace
        return KernelCode(f"{head}lw_conv_transpose_direct(ctx->nt, &g, {args});", flops=flops)
    return KernelCode(f"{head}lw_conv_transpose(ctx->nt, &g, {args}, (float *)ctx->ws);", flops=flops,
                      workspace=align(4 * floats))


# --- Col2Im -------------------------------------------------------------------------------------------


def check_col2im(node: Node) -> str | None:
    x, y = node.input(0), node.output
    spatial = y.type.rank - 2
    if x.type.rank != 3 or spatial < 1:
        return (f"Col2Im takes a rank-3 input and gives a rank-3 or more output, not rank {x.type.rank} -> "
                f"{y.type.rank}")
    if spatial > 3:
        return f"Col2Im over {spatial} spatial axes: the cpu target takes at most 3"
    for index, role in ((1, "image_shape"), (2, "block_shape")):
        reason = _int_operand_reason(node, index, role, spatial)
        if reason:
            return reason
    image = node.input(1)
    if image.is_const and tuple(int(v) for v in image.const.reshape(-1)) != tuple(y.type.shape[2:]):
        return f"Col2Im image_shape {image.const.tolist()} differs from the output's {list(y.type.shape[2:])}"
    if x.type.shape[0] != y.type.shape[0]:
        return "Col2Im input and output batch sizes differ"
    return None


@register("Col2Im", check=check_col2im, data_inputs=1)
def emit_col2im(ctx: EmitContext, node: Node) -> KernelCode:
    x, image, block, y = node.input(0), node.input(1), node.input(2), node.output
    spatial = y.type.rank - 2
    n, rows, length = x.type.shape
    strides = node.attr("strides", (1,) * spatial)
    dilations = node.attr("dilations", (1,) * spatial)
    pads = tuple(node.attr("pads", (0,) * (2 * spatial)))
    lines = [] if image.is_const else [_must_equal(ctx, image, y.type.shape[2:])]
    if block.is_const:
        lines.append(f"const long blk[3] = {_lift(block.const.reshape(-1), 1, spatial)};")
    else:
        lines.append("long blk[3] = {1, 1, 1};")
        lines.append(f"for (int i = 0; i < {spatial}; i++) blk[{3 - spatial} + i] = "
                     f"(long){ctx.ptr(block)}[i];")
    lines += [
        f"static const long img[3] = {_lift(y.type.shape[2:], 1, spatial)};",
        f"static const long s[3] = {_lift(strides, 1, spatial)}, d[3] = {_lift(dilations, 1, spatial)};",
        f"static const long pb[3] = {_lift(pads[:spatial], 0, spatial)};",
        f"static const long pe[3] = {_lift(pads[spatial:], 0, spatial)};",
        f"if (lw_col2im(ctx->nt, {ctx.ptr(x)}, {ctx.out(y)}, {numel(y.type.shape[:2])}, {n * rows}, "
        f"{length}, img, blk, s, d, pb, pe)) *ctx->status = {STATUS_OPERAND};",
    ]
    return KernelCode("\n".join(lines), flops=numel(x.type.shape))


# --- LRN, Det -----------------------------------------------------------------------------------------


def check_lrn(node: Node) -> str | None:
    if node.input(0).type.rank < 2:
        return "LRN needs an input of rank 2 or more"
    if node.attr("size") is None or int(node.attr("size")) < 1:
        return "LRN needs a positive size"
    return None


@register("LRN", check=check_lrn)
def emit_lrn(ctx: EmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    size = int(node.attr("size"))
    before, after = lrn_window(size)
    alpha, beta, bias = (float(node.attr(a, v)) for a, v in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    body = (f"lw_lrn(ctx->nt, {ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {shape[0]}, {shape[1]}, "
            f"{numel(shape[2:])}, {before}, {after}, {c_float(alpha / size)}, {c_float(beta)}, "
            f"{c_float(bias)});")
    return KernelCode(body, flops=(2 * size + 4) * numel(shape))


def check_det(node: Node) -> str | None:
    shape = node.input(0).type.shape
    if len(shape) < 2 or shape[-1] != shape[-2]:
        return f"Det takes square matrices in the last two axes, not shape {list(shape)}"
    return None


@register("Det", check=check_det)
def emit_det(ctx: EmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    count, n = numel(shape[:-2]), shape[-1]
    body = (f"lw_det(ctx->nt, {ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {count}, {n}, "
            "(double *)ctx->ws);")
    return KernelCode(body, flops=count * n ** 3, workspace=align(8 * count * n * n))


# --- ReverseSequence, MaxUnpool -----------------------------------------------------------------------


def check_reverse_sequence(node: Node) -> str | None:
    shape = node.input(0).type.shape
    batch_axis, time_axis = int(node.attr("batch_axis", 1)), int(node.attr("time_axis", 0))
    if len(shape) < 2 or {batch_axis, time_axis} != {0, 1}:
        return "ReverseSequence needs rank 2 or more and batch_axis, time_axis being 0 and 1"
    return _int_operand_reason(node, 1, "sequence_lens", shape[batch_axis])


@register("ReverseSequence", check=check_reverse_sequence, data_inputs=1, dtypes=ALL_TYPES)
def emit_reverse_sequence(ctx: EmitContext, node: Node) -> KernelCode:
    x = node.input(0)
    shape = x.type.shape
    batch_axis = int(node.attr("batch_axis", 1))
    chunk = numel(shape[2:]) * x.type.dtype.itemsize
    body = (f"lw_reverse_sequence(ctx->nt, {ctx.ptr(x)}, {ctx.out(node.output)}, {ctx.ptr(node.input(1))}, "
            f"{shape[batch_axis]}, {shape[1 - batch_axis]}, {chunk}, {int(batch_axis == 0)}, ctx->status);")
    return KernelCode(body)


def check_max_unpool(node: Node) -> str | None:
    x, idx, y = node.input(0), node.input(1), node.output
    kernel = node.attr("kernel_shape")
    if kernel is None or len(kernel) != x.type.rank - 2 or x.type.rank < 3:
        return "MaxUnpool needs a kernel_shape with one entry per spatial axis of an input of rank 3 or more"
    if idx is None or idx.type is None or idx.type.dtype is not DType.INT64 or idx.type.shape != x.type.shape:
        return "MaxUnpool indices (input 1) must be int64 with the input's shape"
    inferred = max_unpool_shape(node, tuple(x.type.shape))
    out = tuple(y.type.shape)
    shape_in = node.input(2)
    if shape_in is None:
        if out != inferred:
            return f"MaxUnpool output '{y.name}' has shape {list(out)}, not {list(inferred)}"
        return None
    reason = _int_operand_reason(node, 2, "output_shape", len(out))
    if reason:
        return reason
    if shape_in.is_const and tuple(int(v) for v in shape_in.const.reshape(-1)) != out:
        return f"MaxUnpool output_shape {shape_in.const.tolist()} differs from the output's {list(out)}"
    if len(out) != len(inferred) or any(o < i for o, i in zip(out, inferred)):
        return f"MaxUnpool output_shape {list(out)} is smaller than the unpooled shape {list(inferred)}"
    return None


@register("MaxUnpool", check=check_max_unpool, data_inputs=1)
def emit_max_unpool(ctx: EmitContext, node: Node) -> KernelCode:
    x, y, shape_in = node.input(0), node.output, node.input(2)
    inferred = max_unpool_shape(node, tuple(x.type.shape))
    out = tuple(y.type.shape)
    strides, step = [], 1
    for d in reversed(out):
        strides.insert(0, step)
        step *= d
    check = "" if shape_in is None or shape_in.is_const else _must_equal(ctx, shape_in, out)
    rank = len(out)
    body = check + (
        f"static const long dims[{rank}] = {c_longs(inferred)}, ystride[{rank}] = {c_longs(strides)};\n"
        f"lw_max_unpool({ctx.ptr(x)}, {ctx.ptr(node.input(1))}, {ctx.out(y)}, {numel(x.type.shape)}, "
        f"{numel(out)}, {rank}, dims, ystride, ctx->status);")
    return KernelCode(body)


# --- training-mode BatchNormalization -----------------------------------------------------------------


def check_batchnorm_training(node: Node) -> str | None:
    """Why a ``training_mode=1`` BatchNormalization cannot be lowered (None: it can)."""
    params = node.inputs[1:5]
    if len(params) < 4 or any(v is None or v.type is None or v.type.dtype is not DType.FLOAT32
                              for v in params):
        return "BatchNormalization needs float32 scale, bias, mean and variance"
    if node.input(0).type.rank < 2:
        return "BatchNormalization needs an input of rank 2 or more"
    c = node.input(0).type.shape[1]
    if any(numel(v.type.shape) != c for v in params):
        return f"BatchNormalization scale, bias, mean and variance must have {c} values"
    for index in (1, 2):
        out = _used_output(node, index)
        if out is not None and (out.type is None or out.type.dtype is not DType.FLOAT32):
            return f"BatchNormalization output {index} '{out.name}' must be float32"
    return None


def emit_batchnorm_training(ctx: EmitContext, node: Node) -> KernelCode:
    """Normalised with the batch's statistics; outputs 1 and 2 (when read) are the running mean and
    variance."""
    x = node.input(0)
    shape = x.type.shape
    rmean, rvar = (_used_output(node, i) for i in (1, 2))
    scale, bias, mean, var = (ctx.ptr(v) for v in node.inputs[1:5])
    body = (
        f"lw_batchnorm_train(ctx->nt, {ctx.ptr(x)}, {ctx.out(node.output)}, {shape[0]}, {shape[1]}, "
        f"{numel(shape[2:])}, {scale}, {bias}, {mean}, {var}, {c_float(node.attr('epsilon', 1e-5))}, "
        f"{c_float(node.attr('momentum', 0.9))}, {ctx.out(rmean) if rmean is not None else 'NULL'}, "
        f"{ctx.out(rvar) if rvar is not None else 'NULL'});"
    )
    return KernelCode(body, flops=6 * numel(shape))


# --- ReduceMax / ReduceMin of bool tensors ------------------------------------------------------------


def emit_bool_reduce(ctx: EmitContext, node: Node, axes: tuple[int, ...] | None) -> KernelCode:
    """ReduceMax (any) or ReduceMin (all) of a bool tensor over constant ``axes`` or, with None, the
    run-time axes of input 1 (checked against the compiled output shape: a mismatch fails the run with
    LW_STATUS_OPERAND). Called by ``emit_math.emit_reduce`` for bool inputs."""
    shape = tuple(node.input(0).type.shape)
    out_shape = tuple(node.output.type.shape)
    rank = len(shape)
    if rank > 16:
        raise LoweringError(f"{node.op} '{node.name}': a bool reduction of rank {rank} (the cpu target "
                            "takes up to 16)")
    lines = [f"static const long shape[{max(rank, 1)}] = {c_longs(shape or (1,))};"]
    if axes is None:
        axes_input = node.input(1)
        lines += [
            f"static const long out_shape[{max(len(out_shape), 1)}] = {c_longs(out_shape or (1,))};",
            f"const long mask = lw_reduce_mask({ctx.ptr(axes_input)}, {numel(axes_input.type.shape)}, "
            f"{rank}, shape, {int(bool(node.attr('keepdims', 1)))}, {len(out_shape)}, out_shape);",
            f"if (mask < 0) {{ *ctx->status = {STATUS_OPERAND}; return; }}",
        ]
        mask = "(unsigned)mask"
    else:
        mask = f"{sum(1 << a for a in axes)}u"
    lines.append(f"lw_reduce_bool({ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {rank}, shape, {mask}, "
                 f"{numel(out_shape)}, {int(node.op == 'ReduceMax')});")
    return KernelCode("\n".join(lines), flops=numel(shape))

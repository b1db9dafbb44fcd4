"""Pooling and data-movement lowering for the cpu target (kernels in ``kernels_ops.c``).

MaxPool / AveragePool run on the vectorised row kernels (``lw_pool2d``, 1-D to 3-D; the integer max pools,
1-D and 2-D); LpPool and MaxPool's Indices output on ``lw_pool3``, one output at a time.
"""

from __future__ import annotations

from dataclasses import replace

from lowering.ir import DType, Node
from lowering.opinfo import window_geometry

from .registry import (
    ALL_TYPES,
    BYTE_TYPES,
    EmitContext,
    KernelCode,
    c_float,
    c_longs,
    numel,
    register,
)

#: integer max pooling kernels of kernels_quant.c, by element type
INT_MAXPOOL = {DType.INT8: "lw_maxpool2d_i8", DType.UINT8: "lw_maxpool2d_u8"}
#: LW_POOL_SLOTS of kernels_ops.c: at most this many threads run one float pooling, one row buffer each
POOL_SLOTS = 64


def _indices_output(node: Node):
    """MaxPool's Indices output when the graph reads it, else None."""
    if node.op != "MaxPool" or len(node.outputs) < 2 or node.outputs[1] is None:
        return None
    value = node.outputs[1]
    graph_outputs = {id(v) for v in node.graph.outputs} if node.graph is not None else set()
    return value if value.uses() or id(value) in graph_outputs else None


def _row_kernel(node: Node) -> bool:
    """Whether the vectorised row kernels (lw_pool2d, the integer max pools) compute ``node``: MaxPool and
    AveragePool without the Indices output, 1-D and 2-D (and 3-D for float32). Everything else (LpPool,
    the Indices output) goes through lw_pool3."""
    x = node.input(0).type
    if node.op == "LpPool" or _indices_output(node) is not None:
        return False
    return x.rank in (3, 4) or (x.rank == 5 and x.dtype is DType.FLOAT32)


def check_pool(node: Node) -> str | None:
    rank = node.input(0).type.rank
    if rank not in (3, 4, 5):
        return (
            f"only 1-D, 2-D and 3-D pooling (3-D, 4-D or 5-D tensors) is supported by the cpu target, "
            f"got a rank-{rank} input"
        )
    kernel = node.attr("kernel_shape")
    if kernel is None:
        return f"{node.op} has no kernel_shape"
    if len(kernel) != rank - 2:
        return f"{node.op} kernel_shape {list(kernel)} does not match its rank-{rank} input"
    if not _row_kernel(node) and node.input(0).type.dtype is not DType.FLOAT32:
        what = "the Indices output" if _indices_output(node) is not None else "3-D windows"
        return f"{node.op} with {what} is computed for float32 tensors only by the cpu target"
    indices = _indices_output(node)
    if indices is not None and (indices.type is None or indices.type.dtype is not DType.INT64):
        return f"MaxPool Indices output '{indices.name}' must be int64"
    return None


@register("AveragePool", check=check_pool, data_inputs=1)
@register("LpPool", check=check_pool, data_inputs=1)
@register("MaxPool", check=check_pool, data_inputs=1, dtypes=BYTE_TYPES, outputs=2)
def emit_pool(ctx: EmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    kernel = tuple(node.attr("kernel_shape"))
    geo = window_geometry(node, tuple(shape[2:]), kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
    x, y = ctx.ptr(node.input(0)), ctx.out(node.output)
    flops = numel(node.output.type.shape) * numel(kernel)
    if not _row_kernel(node):
        return _emit_pool3(ctx, node, geo, x, y, flops)
    depth = "NULL"
    head = ""
    if len(shape) == 5:  # the depth axis: lw_pool_depth D, OD, KD, SD, DD, PD, PDE; the rest is 2-D
        dz = [shape[2], geo.out[0], kernel[0], geo.strides[0], geo.dilations[0], geo.pads_begin[0],
              geo.pads_end[0]]
        head = f"static const lw_pool_depth dz = {c_longs(dz)};\n"
        depth = "&dz"
        shape, kernel = shape[:2] + shape[3:], kernel[1:]
        geo = replace(geo, kernel=kernel, strides=geo.strides[1:], dilations=geo.dilations[1:],
                      pads_begin=geo.pads_begin[1:], pads_end=geo.pads_end[1:], out=geo.out[1:])
    lift = (lambda t, one: (one,) + tuple(t)) if len(shape) == 3 else (lambda t, one: tuple(t))
    # lw_pool_geom: planes, H, W, OH, OW, KH, KW, SH, SW, DH, DW, PH, PW, PHE, PWE, is_max, count_include_pad
    fields = [
        numel(shape[:2]),
        *lift(shape[2:], 1),
        *lift(geo.out, 1),
        *lift(kernel, 1),
        *lift(geo.strides, 1),
        *lift(geo.dilations, 1),
        *lift(geo.pads_begin, 0),
        *lift(geo.pads_end, 0),
        int(node.op == "MaxPool"),
        int(bool(node.attr("count_include_pad", 0))),
    ]
    int_kernel = INT_MAXPOOL.get(node.input(0).type.dtype)
    head += f"static const lw_pool_geom g = {c_longs(fields)};\n"
    if int_kernel is not None:
        return KernelCode(f"{head}{int_kernel}(ctx->nt, &g, {x}, {y});", flops=flops)
    body = f"{head}lw_pool2d(ctx->nt, &g, {depth}, {x}, {y}, (float *)ctx->ws);"
    depth_planes = numel(node.output.type.shape[2:3]) if len(node.output.type.shape) == 5 else 1
    return KernelCode(body, flops=flops, workspace=pool_workspace(fields, ctx.isa.vec, depth_planes))


#: lw_pool3's mode (kernels_ops.c) of each op
POOL3_MODES = {"MaxPool": 0, "AveragePool": 1, "LpPool": 2}


def _emit_pool3(ctx: EmitContext, node: Node, geo, x: str, y: str, flops: int) -> KernelCode:
    """The one-output-at-a-time pooling of up to 3 spatial axes (lifted to 3 with leading 1s)."""
    shape = node.input(0).type.shape
    lead = 5 - len(shape)

    def lift(t, one):
        return c_longs((one,) * lead + tuple(t))

    indices = _indices_output(node)
    fields = ", ".join([
        str(numel(shape[:2])), lift(shape[2:], 1), lift(geo.out, 1), lift(geo.kernel, 1),
        lift(geo.strides, 1), lift(geo.dilations, 1), lift(geo.pads_begin, 0), lift(geo.pads_end, 0),
        str(POOL3_MODES[node.op]),
        str(int(bool(node.attr("count_include_pad", 0)))), str(int(bool(node.attr("storage_order", 0)))),
        c_float(float(node.attr("p", 2))),
    ])
    idx = ctx.out(indices, "int64_t") if indices is not None else "NULL"
    body = f"static const lw_pool3_geom g = {{{fields}}};\nlw_pool3(ctx->nt, &g, {x}, {y}, {idx});"
    return KernelCode(body, flops=flops)


def pool_workspace(fields: list[int], vec: int, depth_planes: int = 1) -> int:
    """Bytes of lw_pool2d's row buffers: up to POOL_SLOTS threads' padded row and phases, each
    ``lw_pool_row_len`` floats (kernels_ops.c); ``depth_planes``: the output planes per channel (3-D)."""
    planes, _, w, oh, ow, _, kw, _, sw, _, dw, _, pw = fields[:13]
    phase_len = -(-(ow + (kw - 1) * dw // sw) // vec) * vec
    row_len = sw * phase_len + pw + w + 2 * vec
    return min(POOL_SLOTS, planes * depth_planes * oh) * 2 * row_len * 4


def check_global_pool(node: Node) -> str | None:
    if node.input(0).type.rank < 3:
        return f"{node.op} needs an input of rank 3 or more"
    return None


@register("GlobalAveragePool", check=check_global_pool)
@register("GlobalMaxPool", check=check_global_pool, dtypes=BYTE_TYPES)
def emit_global_pool(ctx: EmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    planes, positions = numel(shape[:2]), numel(shape[2:])
    int_kernel = INT_MAXPOOL.get(node.input(0).type.dtype)
    if int_kernel is not None:
        x, y = ctx.ptr(node.input(0)), ctx.out(node.output)
        body = f"{int_kernel}_global(ctx->nt, {x}, {y}, {planes}, {positions});"
        return KernelCode(body, flops=numel(shape))
    body = (
        f"lw_global_pool(ctx->nt, {ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {planes}, {positions}, "
        f"{int(node.op == 'GlobalMaxPool')});"
    )
    return KernelCode(body, flops=numel(shape))


def collapse_transpose(shape: tuple[int, ...], perm: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """Output dims and the input stride each steps by, with size-1 dims dropped and runs merged."""
    strides, step = [0] * len(shape), 1
    for d in reversed(range(len(shape))):
        strides[d] = step
        step *= shape[d]
    dims: list[int] = []
    steps: list[int] = []
    for p in perm:
        if shape[p] == 1:
            continue
        if dims and steps[-1] == strides[p] * shape[p]:
            dims[-1] *= shape[p]
            steps[-1] = strides[p]
        else:
            dims.append(shape[p])
            steps.append(strides[p])
    return (dims, steps) if dims else ([1], [1])


@register("Transpose", dtypes=ALL_TYPES)
def emit_transpose(ctx: EmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    perm = tuple(node.attr("perm", tuple(reversed(range(len(shape))))))
    dims, steps = collapse_transpose(shape, perm)
    body = (
        f"static const long shape[{len(dims)}] = {c_longs(dims)};\n"
        f"static const long stride[{len(dims)}] = {c_longs(steps)};\n"
        f"lw_transpose(ctx->nt, {ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {len(dims)}, shape, "
        f"stride, {node.output.type.dtype.itemsize});"
    )
    return KernelCode(body)


@register("Concat", dtypes=ALL_TYPES)
def emit_concat(ctx: EmitContext, node: Node) -> KernelCode:
    out_shape = node.output.type.shape
    axis = node.attr("axis", 0) % len(out_shape)
    parts = [v for v in node.inputs if v is not None and numel(v.type.shape) > 0]
    outer = numel(out_shape[:axis])
    chunks = [numel(v.type.shape[axis:]) * v.type.dtype.itemsize for v in parts]
    if not parts or outer == 0:
        return KernelCode("(void)ctx;")
    body = (
        f"const void *xs[{len(parts)}] = {{{', '.join(ctx.ptr(v) for v in parts)}}};\n"
        f"static const long chunk[{len(parts)}] = {c_longs(chunks)};\n"
        f"lw_concat(ctx->nt, xs, chunk, {len(parts)}, {outer}, {ctx.out(node.output)});"
    )
    return KernelCode(body)

"""Indexing and data-movement lowering for the cpu target (kernels in ``kernels_index.c``).

The kernels move elements of any stored type by size, so one lowering covers float32, int8/uint8/bool,
int32 and int64. Slice, Expand and Tile are one kernel, a copy of a strided view of the input: every
geometry (start offsets, steps of any sign, broadcast and repeat strides of 0) is resolved here, at compile
time, from the static types and the constant parameters. Resize reads source-index and weight tables that
``lowering.reference.ops_data.resize_axis`` computes, the same function the reference interpreter uses.

Gather-style kernels never read outside the data: an element whose index is out of range is written as
zeros and the kernel sets ``*ctx->status`` (passed to them as their last argument), so ``lw_run`` returns
3 and the runtime raises an "index was out of range" error, as ONNX Runtime fails such a run: see
``kernels_index.c``.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.reference.ops_data import (
    PAD_MODES,
    pad_amounts,
    resize_plan,
    resize_unsupported,
)

from .registry import ALL_TYPES, EmitContext, KernelCode, c_longs, numel, register

#: Split writes every output; this bounds how many (a node with more is refused by type_reason)
MAX_SPLIT_OUTPUTS = 1024
INDEX_TYPES = (DType.INT64, DType.INT32)
TOPK_KERNELS = {DType.FLOAT32: "lw_topk_f32", DType.INT32: "lw_topk_i32", DType.INT64: "lw_topk_i64"}


def _const(node: Node, index: int) -> np.ndarray | None:
    """The constant data of input ``index`` (None when absent)."""
    v = node.input(index)
    return None if v is None else v.const


def _not_const(node: Node, *inputs: tuple[int, str]) -> str | None:
    """A reason naming the first of the given (index, role) inputs that is present but not a constant."""
    for index, role in inputs:
        v = node.input(index)
        if v is not None and not v.is_const:
            return f"{node.op} {role} (input {index} '{v.name}') must be a constant on the cpu target"
    return None


def _index_type_reason(node: Node, index: int, allowed=INDEX_TYPES) -> str | None:
    v = node.input(index)
    if v is None or v.type is None or v.type.dtype not in allowed:
        kind = v.type.dtype.value if v is not None and v.type is not None else "missing"
        names = " or ".join(d.value for d in allowed)
        return f"{node.op} indices (input {index}) are {kind}; the cpu target takes {names}"
    return None


def strides_of(shape) -> list[int]:
    """Row-major element strides."""
    strides, step = [0] * len(shape), 1
    for d in reversed(range(len(shape))):
        strides[d] = step
        step *= shape[d]
    return strides


def collapse_strided(shape, strides) -> tuple[list[int], list[int]]:
    """Drop size-1 dims and merge neighbours that step like one dim, so the kernel's inner loop is long."""
    dims: list[int] = []
    steps: list[int] = []
    for n, s in zip(shape, strides):
        if n == 1:
            continue
        if dims and steps[-1] == s * n:
            dims[-1] *= n
            steps[-1] = s
        else:
            dims.append(int(n))
            steps.append(int(s))
    return (dims, steps) if dims else ([1], [1])


def _strided_copy(ctx: EmitContext, x: Value, y: Value, shape, strides, offset: int = 0) -> KernelCode:
    """y = the view of x starting ``offset`` elements in, with dims ``shape`` stepping ``strides``."""
    dims, steps = collapse_strided(shape, strides)
    esize = x.type.dtype.itemsize
    src = ctx.ptr(x, "unsigned char")
    if offset:
        src = f"({src} + {offset * esize})"
    body = (
        f"static const long shape[{len(dims)}] = {c_longs(dims)};\n"
        f"static const long stride[{len(dims)}] = {c_longs(steps)};\n"
        f"lw_strided_copy(ctx->nt, {src}, {ctx.out(y)}, {len(dims)}, shape, stride, {esize});"
    )
    return KernelCode(body)


# --- slice / expand / tile / split ------------------------------------------------------------------

def check_slice(node: Node) -> str | None:
    reason = _not_const(node, (1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))
    if reason is None and node.input(4) is not None and not node.input(4).const.all():
        reason = "Slice has a step of 0"
    return reason


def slice_geometry(node: Node) -> tuple[list[int], list[int], int]:
    """(output dims, input strides per output dim, start offset in elements) of a Slice with constant
    parameters; clamping follows Python's slice.indices, which is ONNX's rule."""
    shape = node.input(0).type.shape
    rank = len(shape)
    starts, ends = _const(node, 1).reshape(-1), _const(node, 2).reshape(-1)
    axes = _const(node, 3)
    axes = range(len(starts)) if axes is None else axes.reshape(-1)
    steps = _const(node, 4)
    steps = [1] * len(starts) if steps is None else steps.reshape(-1)
    base = strides_of(shape)
    dims, strides, offset = list(shape), list(base), 0
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = int(a) % rank
        start, stop, step = slice(int(s), int(e), int(st)).indices(shape[a])
        dims[a] = len(range(start, stop, step))
        strides[a] = base[a] * step
        offset += start * base[a]
    return dims, strides, offset


@register("Slice", check=check_slice, data_inputs=1, dtypes=ALL_TYPES)
def emit_slice(ctx: EmitContext, node: Node) -> KernelCode:
    dims, strides, offset = slice_geometry(node)
    return _strided_copy(ctx, node.input(0), node.output, dims, strides, offset)


@register("Expand", data_inputs=1, dtypes=ALL_TYPES)
def emit_expand(ctx: EmitContext, node: Node) -> KernelCode:
    x, y = node.input(0), node.output
    out = y.type.shape
    lead = len(out) - x.type.rank
    shape_in = (1,) * lead + tuple(x.type.shape)
    base = strides_of(shape_in)
    strides = [0 if shape_in[d] == 1 else base[d] for d in range(len(out))]
    return _strided_copy(ctx, x, y, out, strides)


@register("Tile", data_inputs=1, dtypes=ALL_TYPES)
def emit_tile(ctx: EmitContext, node: Node) -> KernelCode:
    """Each output axis is [repeat][size]: the repeat index steps the input by 0."""
    x, y = node.input(0), node.output
    shape = x.type.shape
    base = strides_of(shape)
    dims, strides = [], []
    for d, (n, out) in enumerate(zip(shape, y.type.shape)):
        dims += [out // n, n]
        strides += [0, base[d]]
    return _strided_copy(ctx, x, y, dims, strides)


def check_split(node: Node) -> str | None:
    return _not_const(node, (1, "split"))


@register("Split", check=check_split, data_inputs=1, dtypes=ALL_TYPES, outputs=MAX_SPLIT_OUTPUTS)
def emit_split(ctx: EmitContext, node: Node) -> KernelCode:
    """Each output's share of an outer row is its bytes from the axis on (the sizes are its static type)."""
    x = node.input(0)
    axis = node.attr("axis", 0) % x.type.rank
    outer = numel(x.type.shape[:axis])
    parts = [v for v in node.outputs if v is not None and numel(v.type.shape) > 0]
    if not parts or outer == 0:
        return KernelCode("(void)ctx;")
    chunks = [numel(v.type.shape[axis:]) * v.type.dtype.itemsize for v in parts]
    body = (
        f"void *const ys[{len(parts)}] = {{{', '.join(ctx.out(v) for v in parts)}}};\n"
        f"static const long chunk[{len(parts)}] = {c_longs(chunks)};\n"
        f"lw_split(ctx->nt, {ctx.ptr(x)}, ys, chunk, {len(parts)}, {outer});"
    )
    return KernelCode(body)


# --- gathers ----------------------------------------------------------------------------------------

def check_gather(node: Node) -> str | None:
    return _index_type_reason(node, 1)


@register("Gather", check=check_gather, data_inputs=1, dtypes=ALL_TYPES)
def emit_gather(ctx: EmitContext, node: Node) -> KernelCode:
    x, idx = node.input(0), node.input(1)
    shape = x.type.shape
    axis = node.attr("axis", 0) % len(shape)
    chunk = numel(shape[axis + 1:]) * x.type.dtype.itemsize
    body = (
        f"lw_gather(ctx->nt, {ctx.ptr(x)}, {ctx.ptr(idx)}, {int(idx.type.dtype is DType.INT64)}, "
        f"{ctx.out(node.output)}, {numel(shape[:axis])}, {shape[axis]}, {numel(idx.type.shape)}, {chunk}, "
        "ctx->status);"
    )
    return KernelCode(body)


def check_gather_elements(node: Node) -> str | None:
    return _index_type_reason(node, 1)


@register("GatherElements", check=check_gather_elements, data_inputs=1, dtypes=ALL_TYPES)
def emit_gather_elements(ctx: EmitContext, node: Node) -> KernelCode:
    x, idx = node.input(0), node.input(1)
    rank = x.type.rank
    axis = node.attr("axis", 0) % rank
    body = (
        f"static const long ishape[{rank}] = {c_longs(idx.type.shape)};\n"
        f"static const long xstride[{rank}] = {c_longs(strides_of(x.type.shape))};\n"
        f"lw_gather_elements(ctx->nt, {ctx.ptr(x)}, {ctx.ptr(idx)}, {int(idx.type.dtype is DType.INT64)}, "
        f"{ctx.out(node.output)}, {rank}, ishape, xstride, {axis}, {x.type.shape[axis]}, "
        f"{x.type.dtype.itemsize}, ctx->status);"
    )
    return KernelCode(body)


def check_gather_nd(node: Node) -> str | None:
    reason = _index_type_reason(node, 1, (DType.INT64,))
    if reason is None and node.input(1).type.rank == 0:
        reason = "GatherND indices must have rank 1 or more"
    return reason


@register("GatherND", check=check_gather_nd, data_inputs=1, dtypes=ALL_TYPES)
def emit_gather_nd(ctx: EmitContext, node: Node) -> KernelCode:
    x, idx = node.input(0), node.input(1)
    shape, ishape = x.type.shape, idx.type.shape
    b, k = node.attr("batch_dims", 0), ishape[-1]
    esize = x.type.dtype.itemsize
    chunk = numel(shape[b + k:])
    dims = list(shape[b:b + k]) or [1]
    steps = [numel(shape[b + j + 1:b + k]) for j in range(k)] or [0]
    body = (
        f"static const long dims[{len(dims)}] = {c_longs(dims)};\n"
        f"static const long steps[{len(steps)}] = {c_longs(steps)};\n"
        f"lw_gather_nd(ctx->nt, {ctx.ptr(x)}, {ctx.ptr(idx)}, {ctx.out(node.output)}, {numel(shape[:b])}, "
        f"{numel(ishape[b:-1])}, {k}, dims, steps, {numel(shape[b:]) * esize}, {chunk * esize}, "
        "ctx->status);"
    )
    return KernelCode(body)


# --- pad / trilu ------------------------------------------------------------------------------------

PAD_KERNEL_MODES = {"constant": "LW_PAD_CONSTANT", "reflect": "LW_PAD_REFLECT", "edge": "LW_PAD_EDGE",
                    "wrap": "LW_PAD_WRAP"}


def check_pad(node: Node) -> str | None:
    reason = _not_const(node, (1, "pads"), (2, "constant_value"), (3, "axes"))
    if reason is not None:
        return reason
    mode = node.attr("mode", "constant")
    if mode not in PAD_MODES:
        return f"Pad mode '{mode}' is not supported by the cpu target"
    if mode != "constant" and 0 in node.input(0).type.shape:
        return f"Pad mode '{mode}' of an empty tensor"
    return None


@register("Pad", check=check_pad, data_inputs=1, dtypes=ALL_TYPES)
def emit_pad(ctx: EmitContext, node: Node) -> KernelCode:
    x, y = node.input(0), node.output
    rank = x.type.rank
    begin, _ = pad_amounts(node, rank, _const(node, 1), _const(node, 3))
    value = _const(node, 2)
    value = value.reshape(-1)[0] if value is not None and value.size else 0
    data = np.asarray(value).astype(x.type.dtype.numpy).tobytes()
    if rank == 0:
        return KernelCode(f"lw_copy(ctx->nt, {ctx.out(y)}, {ctx.ptr(x)}, {x.type.dtype.itemsize});")
    body = (
        f"static const long ishape[{rank}] = {c_longs(x.type.shape)};\n"
        f"static const long oshape[{rank}] = {c_longs(y.type.shape)};\n"
        f"static const long begin[{rank}] = {c_longs(begin)};\n"
        f"static const unsigned char value[{len(data)}] = {c_longs(data)};\n"
        f"lw_pad(ctx->nt, {ctx.ptr(x)}, {ctx.out(y)}, {rank}, ishape, oshape, begin, "
        f"{PAD_KERNEL_MODES[node.attr('mode', 'constant')]}, value, {x.type.dtype.itemsize});"
    )
    return KernelCode(body)


def check_trilu(node: Node) -> str | None:
    if node.input(0).type.rank < 2:
        return "Trilu needs an input of rank 2 or more"
    return _not_const(node, (1, "k"))


@register("Trilu", check=check_trilu, data_inputs=1, dtypes=ALL_TYPES)
def emit_trilu(ctx: EmitContext, node: Node) -> KernelCode:
    x = node.input(0)
    shape = x.type.shape
    k = _const(node, 1)
    k = int(k.reshape(-1)[0]) if k is not None else 0
    k = max(-shape[-2] - 1, min(shape[-1] + 1, k))  # the same matrix, and no overflow in C
    body = (
        f"lw_trilu(ctx->nt, {ctx.ptr(x)}, {ctx.out(node.output)}, {numel(shape[:-2])}, {shape[-2]}, "
        f"{shape[-1]}, {k}L, {int(bool(node.attr('upper', 1)))}, {x.type.dtype.itemsize});"
    )
    return KernelCode(body)


# --- topk -------------------------------------------------------------------------------------------

def check_topk(node: Node) -> str | None:
    reason = _not_const(node, (1, "k"))
    if reason is None and len(node.outputs) > 1 and node.outputs[1].type is not None \
            and node.outputs[1].type.dtype is not DType.INT64:
        reason = "TopK indices must be int64"
    return reason


@register("TopK", check=check_topk, data_inputs=1, dtypes=tuple(TOPK_KERNELS), outputs=2)
def emit_topk(ctx: EmitContext, node: Node) -> KernelCode:
    x = node.input(0)
    shape = x.type.shape
    axis = node.attr("axis", -1) % len(shape)
    k = int(_const(node, 1).reshape(-1)[0])
    outer, n, inner = numel(shape[:axis]), shape[axis], numel(shape[axis + 1:])
    if k == 0 or outer * inner == 0:
        return KernelCode("(void)ctx;")
    values, indices = node.outputs[0], node.outputs[1]
    body = (
        f"{TOPK_KERNELS[x.type.dtype]}(ctx->nt, {ctx.ptr(x)}, {ctx.out(values)}, {ctx.out(indices)}, "
        f"{outer}, {n}, {inner}, {k}, {int(bool(node.attr('largest', 1)))});"
    )
    return KernelCode(body, flops=numel(shape) * min(k, 32))


# --- resize -----------------------------------------------------------------------------------------

def _resize_plan(node: Node):
    return resize_plan(node, node.input(0).type.shape, _const(node, 2), _const(node, 3))


def check_resize(node: Node) -> str | None:
    reason = resize_unsupported(node) or _not_const(node, (2, "scales"), (3, "sizes"))
    if reason is not None:
        return reason
    x = node.input(0)
    if x.type.rank < 2:
        return "Resize needs an input of rank 2 or more on the cpu target"
    if node.attr("mode", "nearest") == "linear" and x.type.dtype is not DType.FLOAT32:
        return f"linear Resize of {x.type.dtype.value} data is not supported by the cpu target (float32 is)"
    try:
        plan = _resize_plan(node)
    except (ValueError, NotImplementedError) as exc:
        return f"Resize: {exc}"
    for axis, ax in enumerate(plan[:-2]):
        if ax.out_len != x.type.shape[axis] or not ax.identity:
            return f"Resize of axis {axis} (only the last two axes are resized on the cpu target)"
    if tuple(ax.out_len for ax in plan) != tuple(node.output.type.shape):
        return "Resize output shape does not match its scales or sizes"
    return None


@register("Resize", check=check_resize, data_inputs=1, dtypes=ALL_TYPES)
def emit_resize(ctx: EmitContext, node: Node) -> KernelCode:
    x, y = node.input(0), node.output
    shape = x.type.shape
    ay, ax = _resize_plan(node)[-2:]
    geometry = f"{numel(shape[:-2])}, {shape[-2]}, {shape[-1]}, {ay.out_len}, {ax.out_len}"

    def table(a: np.ndarray) -> str:
        return ctx.weights(a.astype(np.int64), "int64_t") if a.dtype.kind == "i" else ctx.weights(a, "float")

    if node.attr("mode", "nearest") == "nearest":
        body = (f"lw_resize_nearest(ctx->nt, {ctx.ptr(x)}, {ctx.out(y)}, {geometry}, {table(ay.lo)}, "
                f"{table(ax.lo)}, {x.type.dtype.itemsize});")
        return KernelCode(body)
    tables = ", ".join(table(t) for t in (ay.lo, ay.hi, ay.w_lo, ay.w_hi, ax.lo, ax.hi, ax.w_lo, ax.w_hi))
    body = f"lw_resize_linear(ctx->nt, {ctx.ptr(x)}, {ctx.out(y)}, {geometry}, {tables});"
    return KernelCode(body, flops=6 * numel(y.type.shape))

"""Indexing and data-movement lowering for the cpu target (kernels in ``kernels_index.c``).

The kernels move elements of any stored type by size, so one lowering covers float32, int8/uint8/bool,
int32 and int64. Slice, Expand and Tile are one kernel, a copy of a strided view of the input: every
geometry (start offsets, steps of any sign, broadcast and repeat strides of 0) is resolved here, at compile
time, from the static types and the constant parameters. Resize reads source-index and weight tables that
``lowering.reference.ops_data.resize_axis`` computes (every mode, filter and coordinate mapping is resolved
there), the same function the reference interpreter uses: the last two axes in one kernel, any other
resized axis in one pass each.

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
    block_permutation,
    dropout_is_identity,
    pad_amounts,
    resize_axes,
    resize_plan,
    resize_unsupported,
)

from .emit_data import collapse_transpose
from .registry import ALL_TYPES, C_TYPES, EmitContext, KernelCode, align, c_float, c_longs, numel, register

#: Split writes every output; this bounds how many (a node with more is refused by type_reason)
MAX_SPLIT_OUTPUTS = 1024
INDEX_TYPES = (DType.INT64, DType.INT32)
TOPK_KERNELS = {DType.FLOAT32: "lw_topk_f32", DType.INT32: "lw_topk_i32", DType.INT64: "lw_topk_i64",
                DType.UINT64: "lw_topk_u64"}


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

def _runtime_slice(node: Node) -> bool:
    return any(v is not None and not v.is_const for v in node.inputs[1:5])


def check_slice(node: Node) -> str | None:
    if _runtime_slice(node):  # starts, ends, axes, steps read when the model runs
        count = numel(node.input(1).type.shape)
        for index, role in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
            v = node.input(index)
            if v is not None and (v.type.dtype not in INDEX_TYPES or numel(v.type.shape) != count):
                return f"Slice {role} (input {index} '{v.name}') must be {count} int32 or int64 value(s)"
        return None
    if node.input(4) is not None and not node.input(4).const.all():
        return "Slice has a step of 0"
    return None


def _emit_runtime_slice(ctx: EmitContext, node: Node) -> KernelCode:
    """Slice geometry computed when the model runs (Python's slice.indices clamping, as ONNX says), checked
    against the compiled output shape (a mismatch fails the run with LW_STATUS_OPERAND)."""
    x, y = node.input(0), node.output
    shape, out = x.type.shape, y.type.shape
    rank, count, esize = len(shape), numel(node.input(1).type.shape), x.type.dtype.itemsize
    if numel(out) == 0:
        return KernelCode("(void)ctx;")

    def item(index: int, default: str) -> str:
        v = node.input(index)
        return f"(long){ctx.ptr(v)}[i]" if v is not None else default

    lines = [
        f"static const long shape[{rank}] = {c_longs(shape)};",
        f"static const long base[{rank}] = {c_longs(strides_of(shape))};",
        f"static const long oshape[{rank}] = {c_longs(out)};",
        f"long stride[{rank}], seen[{rank}], offset = 0;",
        f"for (int d = 0; d < {rank}; d++) {{ stride[d] = base[d]; seen[d] = 0; }}",
        f"for (long i = 0; i < {count}; i++) {{",
        f"    long a = {item(3, 'i')};",
        f"    const long step = {item(4, '1')};",
        f"    if (a < 0) a += {rank};",
        f"    if (a < 0 || a >= {rank} || step == 0 || seen[a]) {{",
        f"        *ctx->status = {STATUS_OPERAND};",
        "        return;",
        "    }",
        "    seen[a] = 1;",
        "    const long dim = shape[a], lo = step > 0 ? 0 : -1, hi = step > 0 ? dim : dim - 1;",
        f"    long s = {item(1, '0')}, e = {item(2, '0')}, len;",
        "    s = s < 0 ? (s + dim < lo ? lo : s + dim) : (s > hi ? hi : s);",
        "    e = e < 0 ? (e + dim < lo ? lo : e + dim) : (e > hi ? hi : e);",
        "    if (step > 0) len = e > s ? (e - s + step - 1) / step : 0;",
        "    else len = s > e ? (s - e - step - 1) / -step : 0;",
        f"    if (len != oshape[a]) {{ *ctx->status = {STATUS_OPERAND}; return; }}",
        "    stride[a] = base[a] * step;",
        "    offset += s * base[a];",
        "}",
        f"for (int d = 0; d < {rank}; d++) if (!seen[d] && oshape[d] != shape[d]) "
        f"{{ *ctx->status = {STATUS_OPERAND}; return; }}",
        f"lw_strided_copy(ctx->nt, {ctx.ptr(x, 'unsigned char')} + offset * {esize}, {ctx.out(y)}, {rank}, "
        f"oshape, stride, {esize});",
    ]
    return KernelCode("\n".join(lines))


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
    if _runtime_slice(node):
        return _emit_runtime_slice(ctx, node)
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
    split = node.input(1)
    if split is not None and not split.is_const and numel(split.type.shape) != len(node.outputs):
        return "Split split (input 1) must have one size per output"
    return _runtime_int_reason(node, 1, "split", len(node.outputs))


@register("Split", check=check_split, data_inputs=1, dtypes=ALL_TYPES, outputs=MAX_SPLIT_OUTPUTS)
def emit_split(ctx: EmitContext, node: Node) -> KernelCode:
    """Each output's share of an outer row is its bytes from the axis on (the sizes are its static type)."""
    x = node.input(0)
    axis = node.attr("axis", 0) % x.type.rank
    outer = numel(x.type.shape[:axis])
    check = ""
    if node.input(1) is not None and not node.input(1).is_const:  # the sizes are the outputs' types
        check = _runtime_must_equal(ctx, node.input(1), [v.type.shape[axis] for v in node.outputs])
    parts = [v for v in node.outputs if v is not None and numel(v.type.shape) > 0]
    if not parts or outer == 0:
        return KernelCode(check or "(void)ctx;")
    chunks = [numel(v.type.shape[axis:]) * v.type.dtype.itemsize for v in parts]
    body = check + (
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
    reason = _not_const(node, (3, "axes"))
    pads, value = node.input(1), node.input(2)
    if reason is None and pads is not None and not pads.is_const:
        rank = node.input(0).type.rank
        axes = _const(node, 3)
        count = rank if axes is None else axes.size
        if pads.type.dtype is not DType.INT64 or numel(pads.type.shape) != 2 * count:
            return f"Pad pads (input 1 '{pads.name}') must be {2 * count} int64 values"
        listed = set(range(rank)) if axes is None else {int(a) % rank for a in axes.reshape(-1)}
        if any(node.output.type.shape[d] != node.input(0).type.shape[d] for d in set(range(rank)) - listed):
            return "Pad output shape does not match its input on the axes it does not pad"
    if reason is None and value is not None and not value.is_const and numel(value.type.shape) != 1:
        reason = "Pad constant_value must be one value"
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
    pads = node.input(1)
    runtime_pads = pads is not None and not pads.is_const
    begin = [0] * rank if runtime_pads else pad_amounts(node, rank, _const(node, 1), _const(node, 3))[0]
    value = _const(node, 2)
    value = value.reshape(-1)[0] if value is not None and value.size else 0
    data = np.asarray(value).astype(x.type.dtype.numpy).tobytes()
    if rank == 0:
        return KernelCode(f"lw_copy(ctx->nt, {ctx.out(y)}, {ctx.ptr(x)}, {x.type.dtype.itemsize});")
    prologue = ""
    if runtime_pads:  # begin from the pads read at run time; each padded size must be the compiled one
        axes = _const(node, 3)
        axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes.reshape(-1)]
        n = len(axes)
        prologue = (
            f"static const long axes[{n}] = {c_longs(axes)};\n"
            f"long begin[{rank}] = {{0}};\n"
            f"for (long i = 0; i < {n}; i++) {{\n"
            f"    const long a = axes[i], b = (long){ctx.ptr(pads)}[i], e = (long){ctx.ptr(pads)}[i + {n}];\n"
            f"    if (ishape[a] + b + e != oshape[a]) {{ *ctx->status = {STATUS_OPERAND}; return; }}\n"
            "    begin[a] = b;\n"
            "}\n")
    const_value = node.input(2) is None or node.input(2).is_const
    value_decl = f"static const unsigned char value[{len(data)}] = {c_longs(data)};\n"
    if not const_value:
        value_decl = (f"unsigned char value[{len(data)}];\n"
                      f"memcpy(value, {ctx.ptr(node.input(2))}, {len(data)});\n")
    body = (
        f"static const long ishape[{rank}] = {c_longs(x.type.shape)};\n"
        f"static const long oshape[{rank}] = {c_longs(y.type.shape)};\n"
        + (prologue if runtime_pads else f"static const long begin[{rank}] = {c_longs(begin)};\n")
        + value_decl
        + f"lw_pad(ctx->nt, {ctx.ptr(x)}, {ctx.out(y)}, {rank}, ishape, oshape, begin, "
        f"{PAD_KERNEL_MODES[node.attr('mode', 'constant')]}, value, {x.type.dtype.itemsize});"
    )
    return KernelCode(body)


def check_trilu(node: Node) -> str | None:
    if node.input(0).type.rank < 2:
        return "Trilu needs an input of rank 2 or more"
    k = node.input(1)
    if k is not None and not k.is_const and k.type.dtype is not DType.INT64:
        return "Trilu k must be int64"
    return None


@register("Trilu", check=check_trilu, data_inputs=1, dtypes=ALL_TYPES)
def emit_trilu(ctx: EmitContext, node: Node) -> KernelCode:
    x = node.input(0)
    shape = x.type.shape
    lo, hi = -shape[-2] - 1, shape[-1] + 1  # clamped to these: the same matrix, and no overflow in C
    prologue = ""
    if node.input(1) is not None and not node.input(1).is_const:  # read at run time
        prologue = (f"const int64_t k0 = {ctx.ptr(node.input(1))}[0];\n"
                    f"const long k = k0 < {lo} ? {lo} : k0 > {hi} ? {hi} : (long)k0;\n")
        k = "k"
    else:
        k = _const(node, 1)
        k = int(k.reshape(-1)[0]) if k is not None else 0
        k = f"{max(lo, min(hi, k))}L"
    body = prologue + (
        f"lw_trilu(ctx->nt, {ctx.ptr(x)}, {ctx.out(node.output)}, {numel(shape[:-2])}, {shape[-2]}, "
        f"{shape[-1]}, {k}, {int(bool(node.attr('upper', 1)))}, {x.type.dtype.itemsize});"
    )
    return KernelCode(body)


# --- topk -------------------------------------------------------------------------------------------

def _runtime_must_equal(ctx: EmitContext, value: Value, expected: list[int]) -> str:
    """C that fails the run (LW_STATUS_OPERAND) unless the run-time integer tensor ``value`` holds
    ``expected``: a run-time operand the compiled output shapes were derived from."""
    n = len(expected)
    return (f"{{ static const int64_t want[{max(n, 1)}] = {c_longs(expected or [0])};\n"
            f"  for (long i = 0; i < {n}; i++) if ((int64_t){ctx.ptr(value)}[i] != want[i]) "
            f"{{ *ctx->status = {STATUS_OPERAND}; return; }} }}\n")


def _runtime_int_reason(node: Node, index: int, role: str, count: int) -> str | None:
    v = node.input(index)
    if v is None or v.is_const:
        return None
    if v.type.dtype not in (DType.INT64, DType.INT32) or numel(v.type.shape) != count:
        return f"{node.op} {role} (input {index} '{v.name}') must be {count} int64 value(s)"
    return None


def _topk_k(node: Node) -> int:
    k = _const(node, 1)
    if k is not None:
        return int(k.reshape(-1)[0])
    return node.outputs[0].type.shape[node.attr("axis", -1) % node.input(0).type.rank]


def check_topk(node: Node) -> str | None:
    reason = _runtime_int_reason(node, 1, "k", 1)
    if reason is None and len(node.outputs) > 1 and node.outputs[1].type is not None \
            and node.outputs[1].type.dtype is not DType.INT64:
        reason = "TopK indices must be int64"
    return reason


@register("TopK", check=check_topk, data_inputs=1, dtypes=tuple(TOPK_KERNELS), outputs=2)
def emit_topk(ctx: EmitContext, node: Node) -> KernelCode:
    x = node.input(0)
    shape = x.type.shape
    axis = node.attr("axis", -1) % len(shape)
    k = _topk_k(node)
    outer, n, inner = numel(shape[:axis]), shape[axis], numel(shape[axis + 1:])
    check = "" if node.input(1).is_const else _runtime_must_equal(ctx, node.input(1), [k])
    if k == 0 or outer * inner == 0:
        return KernelCode(check or "(void)ctx;")
    values, indices = node.outputs[0], node.outputs[1]
    body = check + (
        f"{TOPK_KERNELS[x.type.dtype]}(ctx->nt, {ctx.ptr(x)}, {ctx.out(values)}, {ctx.out(indices)}, "
        f"{outer}, {n}, {inner}, {k}, {int(bool(node.attr('largest', 1)))});"
    )
    return KernelCode(body, flops=numel(shape) * min(k, 32))


# --- resize -----------------------------------------------------------------------------------------

#: floats of the separable Resize's row buffer (lw_resize_taps goes through the planes this many at most)
RESIZE_TMP_FLOATS = 1 << 22


def _resize_sizes(node: Node) -> list[int] | None:
    """Run-time ``sizes``: the output's dimensions along the resized axes (checked when the model runs)."""
    sizes = node.input(3)
    if sizes is None or sizes.is_const or not numel(sizes.type.shape):
        return None
    return [node.output.type.shape[a] for a in resize_axes(node, node.input(0).type.rank)]


def _resize_plan(node: Node):
    sizes = _resize_sizes(node)
    sizes = _const(node, 3) if sizes is None else np.array(sizes, np.int64)
    return resize_plan(node, node.input(0).type.shape, _const(node, 2), sizes, _const(node, 1))


def check_resize(node: Node) -> str | None:
    sizes = node.input(3)
    runtime_sizes = sizes is not None and not sizes.is_const and numel(sizes.type.shape) > 0
    reason = resize_unsupported(node) or _not_const(node, (2, "scales"))
    if reason is None and node.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
        reason = _not_const(node, (1, "roi"))
    if reason is None and not runtime_sizes:
        reason = _not_const(node, (3, "sizes"))
    if reason is None and runtime_sizes:
        if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
            return (f"Resize sizes (input 3 '{sizes.name}') must be a constant with keep_aspect_ratio_policy "
                    f"'{node.attr('keep_aspect_ratio_policy')}' on the cpu target")
        reason = _runtime_int_reason(node, 3, "sizes", len(_resize_sizes(node)))
    if reason is not None:
        return reason
    x = node.input(0)
    if x.type.rank < 2:
        return "Resize needs an input of rank 2 or more on the cpu target"
    mode = node.attr("mode", "nearest")
    if mode != "nearest" and x.type.dtype is not DType.FLOAT32:
        return f"{mode} Resize of {x.type.dtype.value} data is not supported by the cpu target (float32 is)"
    try:
        plan = _resize_plan(node)
    except (ValueError, NotImplementedError) as exc:
        return f"Resize: {exc}"
    if tuple(ax.out_len for ax in plan) != tuple(node.output.type.shape):
        return "Resize output shape does not match its scales or sizes"
    return None


@register("Resize", check=check_resize, data_inputs=1, dtypes=ALL_TYPES)
def emit_resize(ctx: EmitContext, node: Node) -> KernelCode:
    """Resizing the last two axes: nearest is a gather of rows and columns (any element type), linear the
    2x2 blend, cubic and antialiased filters the separable ``lw_resize_taps``. Resizing other axes too: one
    pass per such axis (``_resize_stages``). Then tf_crop_and_resize's extrapolation."""
    x, y = node.input(0), node.output
    plan = _resize_plan(node)
    sizes = _resize_sizes(node)
    body = "" if sizes is None else _runtime_must_equal(ctx, node.input(3), sizes)
    if numel(y.type.shape) == 0:
        return KernelCode(body or "(void)ctx;")
    if any(not ax.identity for ax in plan[:-2]):
        code = _resize_stages(ctx, node, plan)
    else:
        code = _resize_last_two(ctx, node, plan, x.type.shape, ctx.ptr(x), ctx.out(y), "ctx->ws")
    body += code.body
    esize = x.type.dtype.itemsize
    value = np.asarray(node.attr("extrapolation_value", 0.0)).astype(x.type.dtype.numpy).tobytes()
    for axis, ax in enumerate(plan):
        if ax.outside is not None and ax.outside.any():
            outer, inner = numel(y.type.shape[:axis]), numel(y.type.shape[axis + 1:])
            body += (f"{{ static const unsigned char value[{len(value)}] = {c_longs(value)};\n"
                     f"  lw_resize_fill_axis(ctx->nt, {ctx.out(y)}, {outer}, {ax.out_len}, {inner}, "
                     f"{_resize_table(ctx, ax.outside)}, value, {esize}); }}\n")
    return KernelCode(body.rstrip("\n"), flops=code.flops, workspace=code.workspace)


def _resize_table(ctx: EmitContext, a: np.ndarray) -> str:
    """A Resize index (int64), weight (float) or mask (uint8) table in the weights blob."""
    if a.dtype == np.bool_:
        return ctx.weights(a.astype(np.uint8), "uint8_t")
    return ctx.weights(a.astype(np.int64), "int64_t") if a.dtype.kind == "i" else ctx.weights(a, "float")


def _resize_last_two(ctx: EmitContext, node: Node, plan, shape, src: str, dst: str, ws: str) -> KernelCode:
    """The last two axes of ``src`` (of ``shape``) resized into ``dst``; ``ws``: the scratch it may use."""
    ay, ax = plan[-2:]
    esize = node.input(0).type.dtype.itemsize
    planes = numel(shape[:-2])
    geometry = f"{planes}, {shape[-2]}, {shape[-1]}, {ay.out_len}, {ax.out_len}"
    out = planes * ay.out_len * ax.out_len

    def table(a: np.ndarray) -> str:
        return _resize_table(ctx, a)

    if node.attr("mode", "nearest") == "nearest":
        return KernelCode(f"lw_resize_nearest(ctx->nt, {src}, {dst}, {geometry}, {table(ay.lo)}, "
                          f"{table(ax.lo)}, {esize});\n")
    src, dst = f"(const float *){src}", f"(float *){dst}"
    if ay.taps <= 2 and ax.taps <= 2:
        tables = ", ".join(table(t) for t in (ay.lo, ay.hi, ay.w_lo, ay.w_hi, ax.lo, ax.hi, ax.w_lo, ax.w_hi))
        return KernelCode(f"lw_resize_linear(ctx->nt, {src}, {dst}, {geometry}, {tables});\n", flops=6 * out)
    h, w = shape[-2], shape[-1]
    chunk = max(1, min(planes, RESIZE_TMP_FLOATS // max(1, h * ax.out_len)))
    body = (f"lw_resize_taps(ctx->nt, {src}, {dst}, (float *)({ws}), {planes}, {chunk}, {h}, {w}, "
            f"{ay.out_len}, {ax.out_len}, {ay.taps}, {table(ay.idx)}, {table(ay.w)}, {ax.taps}, "
            f"{table(ax.idx)}, {table(ax.w)});\n")
    return KernelCode(body, flops=2 * planes * ax.out_len * (h * ax.taps + ay.out_len * ay.taps),
                      workspace=chunk * h * ax.out_len * 4)


def _resize_stages(ctx: EmitContext, node: Node, plan) -> KernelCode:
    """A Resize of axes other than the last two: one pass per such axis, viewing its input as
    [outer][n][inner] -> [outer][m][inner], a gather of the source slices (nearest, ``lw_gather``; any element
    type) or a weighted sum of them (``lw_resample_axis``, float32), and the last two axes as when they alone
    are resized. The stages that shrink the tensor most go first, so the intermediates (ping-ponged through
    the workspace, before the last-two-axes kernel's own scratch) stay small."""
    x, y = node.input(0), node.output
    esize = x.type.dtype.itemsize
    shape = list(x.type.shape)
    stages = [(plan[a].out_len / max(1, shape[a]), a) for a, ax in enumerate(plan[:-2]) if not ax.identity]
    if not (plan[-2].identity and plan[-1].identity):
        stages.append((plan[-2].out_len * plan[-1].out_len / max(1, shape[-2] * shape[-1]), -1))
    stages.sort()
    sizes = []  # the shape after each stage
    for _, a in stages:
        if a < 0:
            shape[-2:] = [plan[-2].out_len, plan[-1].out_len]
        else:
            shape[a] = plan[a].out_len
        sizes.append(list(shape))
    half = align(max((numel(s) * esize for s in sizes[:-1]), default=0))
    buffers = min(2, len(stages) - 1)
    lines, flops, workspace = [], 0, half * buffers
    before = list(x.type.shape)
    for i, (_, a) in enumerate(stages):
        src = ctx.ptr(x, "void") if i == 0 else f"(ctx->ws + {((i - 1) % 2) * half})"
        dst = ctx.out(y, "void") if i == len(stages) - 1 else f"(ctx->ws + {(i % 2) * half})"
        if a < 0:
            code = _resize_last_two(ctx, node, plan, before, src, dst, f"ctx->ws + {half * buffers}")
            lines.append(code.body.rstrip("\n"))
            flops += code.flops
            workspace = max(workspace, half * buffers + code.workspace)
        else:
            ax, outer, n, inner = plan[a], numel(before[:a]), before[a], numel(before[a + 1:])
            if node.attr("mode", "nearest") == "nearest":
                lines.append(f"lw_gather(ctx->nt, {src}, {_resize_table(ctx, ax.lo)}, 1, {dst}, {outer}, "
                             f"{n}, {ax.out_len}, {inner * esize}, ctx->status);")
            else:
                lines.append(f"lw_resample_axis(ctx->nt, (const float *){src}, (float *){dst}, {outer}, {n}, "
                             f"{ax.out_len}, {inner}, {ax.taps}, {_resize_table(ctx, ax.idx)}, "
                             f"{_resize_table(ctx, ax.w)});")
                flops += 2 * numel(sizes[i]) * ax.taps
        before = sizes[i]
    return KernelCode("\n".join(lines) + "\n", flops=flops, workspace=workspace)


# --- scatters -----------------------------------------------------------------------------------------

#: how a scattered update meets the element already there (ONNX ``reduction``), as a C expression
SCATTER_C = {"none": "{u}", "add": "{y} + {u}", "mul": "{y} * {u}", "max": "({u} > {y} ? {u} : {y})",
             "min": "({u} < {y} ? {u} : {y})"}
#: status lw_run returns when a run-time operand contradicts the compiled shapes (kernels_math.c)
STATUS_OPERAND = "LW_STATUS_OPERAND"


def check_scatter(node: Node) -> str | None:
    reduction = node.attr("reduction", "none")
    if reduction not in SCATTER_C:
        return f"{node.op} reduction '{reduction}' is not supported by the cpu target"
    if reduction != "none" and node.input(0).type.dtype is DType.BOOL:
        return f"{node.op} reduction '{reduction}' of bool tensors is not supported by the cpu target"
    reason = _index_type_reason(node, 1, (DType.INT64,) if node.op == "ScatterND" else INDEX_TYPES)
    if reason:
        return reason
    data, updates = node.input(0), node.input(2)
    if updates is None or updates.type is None or updates.type.dtype is not data.type.dtype:
        return f"{node.op} updates must have the data's element type"
    if node.op == "ScatterND":
        k = node.input(1).type.shape[-1] if node.input(1).type.rank else 0
        if node.input(1).type.rank == 0 or k > data.type.rank:
            return "ScatterND indices must have rank 1 or more and tuples no longer than the data's rank"
    return None


def _scatter_prologue(ctx: EmitContext, node: Node) -> list[str]:
    data, ctype = node.input(0), C_TYPES[node.input(0).type.dtype]
    return [
        f"const {ctype} *x = {ctx.ptr(data)}, *u = {ctx.ptr(node.input(2))};",
        f"{ctype} *y = {ctx.out(node.output)};",
        f"const {C_TYPES[node.input(1).type.dtype]} *idx = {ctx.ptr(node.input(1))};",
        f"if ((const void *)y != (const void *)x) lw_copy(ctx->nt, y, x, "
        f"{numel(data.type.shape) * data.type.dtype.itemsize});",
    ]


@register("ScatterElements", check=check_scatter, data_inputs=1, dtypes=ALL_TYPES)
def emit_scatter_elements(ctx: EmitContext, node: Node) -> KernelCode:
    """``y = x``, then each update in storage order (duplicates apply in order, as the reference does)."""
    data, idx = node.input(0), node.input(1)
    rank = data.type.rank
    axis = node.attr("axis", 0) % rank
    dim = data.type.shape[axis]
    combine = SCATTER_C[node.attr("reduction", "none")].format(y="y[off]", u="u[k]")
    lines = _scatter_prologue(ctx, node) + [
        f"static const long ishape[{rank}] = {c_longs(idx.type.shape)};",
        f"static const long ystride[{rank}] = {c_longs(strides_of(data.type.shape))};",
        f"for (long k = 0; k < {numel(idx.type.shape)}; k++) {{",
        "    long rem = k, off = 0;",
        f"    for (int d = {rank - 1}; d >= 0; d--) {{",
        "        long c = rem % ishape[d];",
        "        rem /= ishape[d];",
        f"        if (d == {axis}) {{",
        f"            c = (long)idx[k] < 0 ? (long)idx[k] + {dim} : (long)idx[k];",
        f"            if (c < 0 || c >= {dim}) {{ *ctx->status = LW_STATUS_INDEX_RANGE; off = -1; break; }}",
        "        }",
        "        off += c * ystride[d];",
        "    }",
        f"    if (off >= 0) y[off] = {combine};",
        "}",
    ]
    return KernelCode("\n".join(lines))


@register("ScatterND", check=check_scatter, data_inputs=1, dtypes=ALL_TYPES)
def emit_scatter_nd(ctx: EmitContext, node: Node) -> KernelCode:
    """``y = x``, then for each index tuple in order the slice it addresses combined with its updates."""
    data, idx = node.input(0), node.input(1)
    shape = data.type.shape
    k = idx.type.shape[-1]
    tuples, size = numel(idx.type.shape[:-1]), numel(shape[k:])
    combine = SCATTER_C[node.attr("reduction", "none")].format(y="y[off + s]", u="u[t * SIZE + s]")
    lines = _scatter_prologue(ctx, node) + [
        f"static const long dims[{max(k, 1)}] = {c_longs(shape[:k] or (1,))};",
        f"static const long ystride[{max(k, 1)}] = {c_longs(strides_of(shape)[:k] or (1,))};",
        f"for (long t = 0; t < {tuples}; t++) {{",
        "    long off = 0;",
        f"    for (int j = 0; j < {k}; j++) {{",
        f"        long i = (long)idx[t * {k} + j];",
        "        if (i < 0) i += dims[j];",
        "        if (i < 0 || i >= dims[j]) { *ctx->status = LW_STATUS_INDEX_RANGE; off = -1; break; }",
        "        off += i * ystride[j];",
        "    }",
        "    if (off < 0) continue;",
        f"    for (long s = 0; s < {size}; s++) y[off + s] = {combine.replace('SIZE', str(size))};",
        "}",
    ]
    return KernelCode("\n".join(lines))


# --- generators: OneHot, EyeLike, ConstantOfShape, Range ---------------------------------------------

def check_one_hot(node: Node) -> str | None:
    idx, values = node.input(0), node.input(2)
    if idx.type.dtype not in (DType.INT64, DType.INT32, DType.FLOAT32):
        return f"OneHot indices are {idx.type.dtype.value}; the cpu target takes int64, int32 or float32"
    if node.input(1).type.dtype not in (DType.INT64, DType.INT32, DType.FLOAT32) or \
            numel(node.input(1).type.shape) != 1:
        return "OneHot depth must be one int64, int32 or float32 value on the cpu target"
    if values.type.dtype is not node.output.type.dtype or numel(values.type.shape) != 2:
        return "OneHot values must be two elements of the output's type"
    return None


@register("OneHot", check=check_one_hot, data_inputs=0, dtypes=ALL_TYPES)
def emit_one_hot(ctx: EmitContext, node: Node) -> KernelCode:
    """y[o][d][i] = values[idx[o][i] == d] (an index below zero counts from the end). The depth is the
    compiled output's; a run-time depth that differs fails the run."""
    idx, depth_v, values = node.input(0), node.input(1), node.input(2)
    rank = idx.type.rank + 1
    axis = node.attr("axis", -1) % rank
    depth = node.output.type.shape[axis]
    outer, inner = numel(idx.type.shape[:axis]), numel(idx.type.shape[axis:])
    ctype = C_TYPES[node.output.type.dtype]
    index = "(long)idx[o * INNER + i]".replace("INNER", str(inner))
    lines = [
        f"const {C_TYPES[idx.type.dtype]} *idx = {ctx.ptr(idx)};",
        f"const {ctype} *v = {ctx.ptr(values)};",
        f"{ctype} *y = {ctx.out(node.output)};",
        f"if ((long){ctx.ptr(depth_v)}[0] != {depth}) {{ *ctx->status = {STATUS_OPERAND}; return; }}",
        f"for (long o = 0; o < {outer}; o++)",
        f"    for (long d = 0; d < {depth}; d++)",
        f"        for (long i = 0; i < {inner}; i++) {{",
        f"            long k = {index};",
        f"            if (k < 0) k += {depth};",
        f"            y[(o * {depth} + d) * {inner} + i] = v[k == d];",
        "        }",
    ]
    return KernelCode("\n".join(lines))


@register("EyeLike", data_inputs=0, dtypes=ALL_TYPES)
def emit_eye_like(ctx: EmitContext, node: Node) -> KernelCode:
    rows, cols = node.output.type.shape
    k = int(node.attr("k", 0))
    ctype = C_TYPES[node.output.type.dtype]
    body = (f"{ctype} *y = {ctx.out(node.output)};\n"
            f"for (long i = 0; i < {rows}; i++)\n"
            f"    for (long j = 0; j < {cols}; j++) y[i * {cols} + j] = ({ctype})(j - i == {k});")
    return KernelCode(body)


def check_constant_of_shape(node: Node) -> str | None:
    if node.input(0).type.dtype is not DType.INT64:
        return "ConstantOfShape takes an int64 shape"
    return None


@register("ConstantOfShape", check=check_constant_of_shape, data_inputs=0, dtypes=ALL_TYPES)
def emit_constant_of_shape(ctx: EmitContext, node: Node) -> KernelCode:
    """The compiled output filled with ``value``; a run-time shape other than the compiled one fails the
    run."""
    out = node.output
    shape = out.type.shape
    value = node.attr("value")
    fill = np.asarray(value).reshape(-1)[0] if value is not None else np.float32(0)
    fill = np.asarray(fill).astype(out.type.dtype.numpy).reshape(1)
    lines = [f"const int64_t *s = {ctx.ptr(node.input(0))};"]
    if shape:
        lines.append(f"static const int64_t want[{len(shape)}] = {c_longs(shape)};")
        lines.append(f"for (int d = 0; d < {len(shape)}; d++) if (s[d] != want[d]) "
                     f"{{ *ctx->status = {STATUS_OPERAND}; return; }}")
    else:
        lines.append("(void)s;")
    if numel(shape):
        lines.append(f"lw_fill({ctx.out(out)}, {ctx.weights(fill, C_TYPES[out.type.dtype])}, {numel(shape)}, "
                     f"{out.type.dtype.itemsize});")
    return KernelCode("\n".join(lines))


RANGE_TYPES = (DType.FLOAT32, DType.INT32, DType.INT64)


@register("Range", dtypes=RANGE_TYPES)
def emit_range(ctx: EmitContext, node: Node) -> KernelCode:
    """``y[i] = start + i * delta`` over the compiled length; run-time bounds that give another length
    (``max(ceil((limit - start) / delta), 0)``) fail the run."""
    n = numel(node.output.type.shape)
    ctype = C_TYPES[node.output.type.dtype]
    start, limit, delta = (f"{ctx.ptr(node.input(i))}[0]" for i in range(3))
    lines = [
        f"const {ctype} start = {start}, limit = {limit}, delta = {delta};",
        f"{ctype} *y = {ctx.out(node.output)};",
        "const double len = delta == 0 ? 0.0 : ceil(((double)limit - (double)start) / (double)delta);",
        f"if ((len > 0 ? len : 0.0) != {n}.0) {{ *ctx->status = {STATUS_OPERAND}; return; }}",
        f"for (long i = 0; i < {n}; i++) y[i] = ({ctype})(start + ({ctype})i * delta);",
    ]
    return KernelCode("\n".join(lines))


# --- block rearrangements, dropout, bitcast ------------------------------------------------------------

def check_space_depth(node: Node) -> str | None:
    shape, b = node.input(0).type.shape, int(node.attr("blocksize", 0))
    mode = node.attr("mode", "DCR")
    if len(shape) != 4 or b < 1 or mode not in ("DCR", "CRD"):
        return f"{node.op} takes a 4-D tensor, a positive blocksize and mode DCR or CRD"
    if (node.op == "SpaceToDepth" and (shape[2] % b or shape[3] % b)) or \
            (node.op == "DepthToSpace" and shape[1] % (b * b)):
        return f"{node.op} blocksize {b} does not divide the tensor of shape {shape}"
    return None


@register("SpaceToDepth", "DepthToSpace", check=check_space_depth, dtypes=ALL_TYPES)
def emit_space_depth(ctx: EmitContext, node: Node) -> KernelCode:
    """A reshape to 6-D and a transpose (``block_permutation``, shared with the reference)."""
    x = node.input(0)
    six, perm, _ = block_permutation(node.op, x.type.shape, int(node.attr("blocksize")),
                                     node.attr("mode", "DCR"))
    dims, steps = collapse_transpose(six, perm)
    body = (
        f"static const long shape[{len(dims)}] = {c_longs(dims)};\n"
        f"static const long stride[{len(dims)}] = {c_longs(steps)};\n"
        f"lw_transpose(ctx->nt, {ctx.ptr(x)}, {ctx.out(node.output)}, {len(dims)}, shape, stride, "
        f"{x.type.dtype.itemsize});"
    )
    return KernelCode(body)


def check_dropout(node: Node) -> str | None:
    ratio, training = node.input(1), node.input(2)
    if training is not None and training.is_const and (ratio is None or ratio.is_const):
        if not dropout_is_identity(node, None if ratio is None else ratio.const, training.const):
            return "Dropout in training mode with a nonzero ratio (random) is not supported by the cpu target"
    if ratio is not None and ratio.type.dtype is not DType.FLOAT32:
        return f"Dropout ratio is {ratio.type.dtype.value}; the cpu target takes float32"
    return None


@register("Dropout", check=check_dropout, data_inputs=1, dtypes=ALL_TYPES, outputs=2)
def emit_dropout(ctx: EmitContext, node: Node) -> KernelCode:
    """Inference: the input, and a mask of trues. A run-time ``training_mode`` that is true with a nonzero
    ratio (a random dropout, which this does not compute) fails the run."""
    x, ratio, training = node.input(0), node.input(1), node.input(2)
    lines = []
    if training is not None and not (training.is_const and (ratio is None or ratio.is_const)):
        r = f"{ctx.ptr(ratio)}[0]" if ratio is not None else c_float(node.attr("ratio", 0.5))
        lines.append(f"if ({ctx.ptr(training)}[0] && {r} != 0.0f) {{ *ctx->status = {STATUS_OPERAND}; "
                     "return; }")
    nbytes = numel(x.type.shape) * x.type.dtype.itemsize
    lines.append(f"lw_copy(ctx->nt, {ctx.out(node.output)}, {ctx.ptr(x)}, {nbytes});")
    mask = node.outputs[1] if len(node.outputs) > 1 else None
    if mask is not None and mask.type is not None and numel(mask.type.shape):
        lines.append(f"memset({ctx.out(mask)}, 1, {numel(mask.type.shape)});")
    return KernelCode("\n".join(lines))


def check_bit_cast(node: Node) -> str | None:
    x, y = node.input(0), node.output
    if x.type.dtype not in ALL_TYPES or y.type.dtype not in ALL_TYPES:
        return f"BitCast from {x.type.dtype.value} to {y.type.dtype.value} is not supported by the cpu target"
    if x.type.dtype.itemsize != y.type.dtype.itemsize:
        return "BitCast between types of different widths"
    return None


@register("BitCast", check=check_bit_cast, dtypes=None)
def emit_bit_cast(ctx: EmitContext, node: Node) -> KernelCode:
    x = node.input(0)
    nbytes = numel(x.type.shape) * x.type.dtype.itemsize
    return KernelCode(f"lw_copy(ctx->nt, {ctx.out(node.output)}, {ctx.ptr(x)}, {nbytes});")

"""Normalisation and fused transformer kernels for the cpu target (kernels in ``kernels_transformer.c``).

- ``LayerNormalization``: rows of the trailing ``axis..rank-1`` elements; a constant scale or bias that
  broadcasts to that row is expanded into the weights blob, so the kernel always reads full rows.
- ``lowering::Attention``: Q/K/V rank 4 ([B, H, S, D]); masks broadcast through strides (0 where a
  mask dimension is 1), so the [B, 1, 1, Sk] padding mask of a BERT never becomes [B, H, Sq, Sk]. Q, K
  and V are read through their ``*_perm`` layouts and ``*_slice`` parts (an element offset into the
  input and its strides), so GPT-2's three heads views of one fused projection are read in place.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.opinfo import DOMAIN

from .registry import EmitContext, KernelCode, c_float, c_longs, numel, register

#: the scores of one task (LW_MR rows of Sk floats, rounded up to a vector) live on the stack of the
#: thread running it; this bounds them (at most 128 KiB)
MAX_KEYS = 4096


def _norm_axis(node: Node) -> int:
    rank = node.input(0).type.rank
    return node.attr("axis", -1) % rank if rank else 0


def _row_param(value: Value | None, cols_shape: tuple[int, ...]) -> str | None:
    """Why a LayerNormalization scale/bias cannot be read as a full row of the normalised shape."""
    if value is None:
        return None
    shape = value.type.shape
    if numel(shape) == numel(cols_shape) and shape[-len(cols_shape):] == cols_shape:
        return None
    if not value.is_const:
        return f"'{value.name}' {list(shape)} must have the normalised shape {list(cols_shape)}"
    try:
        np.broadcast_to(value.const, cols_shape)
    except ValueError:
        return f"'{value.name}' {list(shape)} does not broadcast to the normalised shape {list(cols_shape)}"
    return None


def check_layernorm(node: Node) -> str | None:
    rank = node.input(0).type.rank
    axis = node.attr("axis", -1)
    if rank == 0 or not -rank <= axis < rank:
        return f"LayerNormalization axis {axis} is out of range for a rank-{rank} input"
    cols_shape = node.input(0).type.shape[axis % rank:]
    if numel(cols_shape) == 0:
        return "LayerNormalization over an empty row"
    for value in node.inputs[1:3]:
        reason = _row_param(value, cols_shape)
        if reason is not None:
            return f"LayerNormalization {reason}"
    if node.attr("stash_type", 1) != 1:
        stash = node.attr("stash_type", 1)
        return f"LayerNormalization stash_type {stash} is not supported (the cpu target computes in float32)"
    for index, value in enumerate(node.outputs[1:3], start=1):
        if value is not None and value.type is not None and value.type.dtype is not DType.FLOAT32:
            kind = value.type.dtype.value
            return f"LayerNormalization output {index} '{value.name}' is {kind}, not float32"
    return None


def _used_output(node: Node, index: int) -> Value | None:
    """Output ``index`` of ``node`` when the graph reads it (a later node or a graph output), else None."""
    if len(node.outputs) <= index or node.outputs[index] is None:
        return None
    value = node.outputs[index]
    graph_outputs = {id(v) for v in node.graph.outputs} if node.graph is not None else set()
    return value if value.uses() or id(value) in graph_outputs else None


def _row_ptr(ctx: EmitContext, value: Value | None, cols_shape: tuple[int, ...]) -> str:
    if value is None:
        return "NULL"
    if value.is_const and value.const.shape[-len(cols_shape):] != cols_shape:
        return ctx.weights(np.ascontiguousarray(np.broadcast_to(value.const, cols_shape), np.float32))
    return ctx.ptr(value)


@register("LayerNormalization", check=check_layernorm, data_inputs=3, outputs=3)
def emit_layernorm(ctx: EmitContext, node: Node) -> KernelCode:
    """Output 0 alone by ``lw_layernorm``; the optional Mean and InvStdDev (one float per row, the reduced
    axes kept as size one) by ``lw_layernorm_stats`` when the graph reads either."""
    shape = node.input(0).type.shape
    axis = _norm_axis(node)
    rows, cols = numel(shape[:axis]), numel(shape[axis:])
    scale = _row_ptr(ctx, node.input(1), shape[axis:])
    bias = _row_ptr(ctx, node.input(2), shape[axis:])
    eps = c_float(node.attr("epsilon", 1e-5))
    x, y = ctx.ptr(node.input(0)), ctx.out(node.output)
    mean, inv_std = _used_output(node, 1), _used_output(node, 2)
    if mean is None and inv_std is None:
        body = f"lw_layernorm(ctx->nt, {x}, {scale}, {bias}, {y}, {rows}, {cols}, {eps});"
    else:
        stats = ", ".join("NULL" if v is None else ctx.out(v) for v in (mean, inv_std))
        body = f"lw_layernorm_stats(ctx->nt, {x}, {scale}, {bias}, {y}, {stats}, {rows}, {cols}, {eps});"
    return KernelCode(body, flops=8 * numel(shape))


# --- attention -------------------------------------------------------------------------------------

def _mask_strides(value: Value | None, out_shape: tuple[int, ...]) -> list[int]:
    """Element strides of a mask broadcast to ``out_shape`` [B, H, Sq, Sk] (0 along broadcast axes)."""
    if value is None:
        return [0, 0, 0, 0]
    shape = (1,) * (4 - value.type.rank) + tuple(value.type.shape)
    strides, step = [0] * 4, 1
    for d in reversed(range(4)):
        strides[d] = step if shape[d] != 1 else 0
        step *= shape[d]
    return strides


def _perm(node: Node, name: str) -> tuple[int, ...]:
    """A layout attribute of the Attention (a transpose folded into it, see ``fold_transpose``)."""
    perm = node.attr(name, None)
    return (0, 1, 2, 3) if perm is None else tuple(int(a) for a in perm)


def _slice(node: Node, i: int) -> tuple[int, int, int] | None:
    """The ``[axis, start, stop]`` part of input ``i`` the Attention reads (``q_slice``...), or None."""
    bounds = node.attr("qkv"[i] + "_slice", None)
    return None if bounds is None else tuple(int(b) for b in bounds)


def _operand(node: Node, i: int) -> tuple[tuple[int, ...], list[int], int]:
    """The shape the Attention computes with of input ``i`` (Q, K, V), its element strides and the
    element offset where it starts in the input (its ``*_slice`` and ``*_perm`` applied)."""
    value, perm = node.input(i), _perm(node, "qkv"[i] + "_perm")
    shape, strides, offset = list(value.type.shape), _contiguous(value.type.shape), 0
    bounds = _slice(node, i)
    if bounds is not None:
        axis, start, stop = bounds
        shape[axis], offset = stop - start, start * strides[axis]
    return tuple(shape[p] for p in perm), [strides[p] for p in perm], offset


def _slice_reason(node: Node) -> str | None:
    for i in range(3):
        bounds = _slice(node, i)
        if bounds is None:
            continue
        shape = node.input(i).type.shape
        if len(bounds) != 3 or not 0 <= bounds[0] < len(shape) or not 0 <= bounds[1] < bounds[2] <= \
                shape[bounds[0]]:
            return f"Attention {'qkv'[i]}_slice {list(bounds)} is not a part of {list(shape)}"
    return None


def _attention_shapes(node: Node):
    (q, _, _), (k, _, _), (v, _, _) = (_operand(node, i) for i in range(3))
    sk = k[-1] if node.attr("k_transposed", 0) else k[-2]
    kd = k[-2] if node.attr("k_transposed", 0) else k[-1]
    return q, k, v, sk, kd


def check_attention(node: Node) -> str | None:
    kinds = [DType.FLOAT32] * 4 + [DType.BOOL]
    for i, value in enumerate(node.inputs):
        if value is not None and value.type.dtype is not kinds[i]:
            return f"Attention input {i} '{value.name}' is {value.type.dtype.value}, not {kinds[i].value}"
    if node.output.type.dtype is not DType.FLOAT32:
        return "Attention computes float32 only"
    if any(node.input(i).type.rank != 4 for i in range(3)) or node.output.type.rank != 4:
        return "Attention needs rank-4 Q, K, V and output ([batch, heads, sequence, head size])"
    reason = _slice_reason(node) or _layout_reason(node)
    if reason is not None:
        return reason
    q, k, v, sk, kd = _attention_shapes(node)
    if k[0] != q[0] or not k[1] or q[1] % k[1] or v[:2] != k[:2] or kd != q[3] or v[2] != sk:
        return f"Attention shapes Q {list(q)}, K {list(k)}, V {list(v)} do not agree"
    if sk == 0 or q[2] == 0:
        return "Attention over an empty sequence"
    if sk > MAX_KEYS:
        return f"Attention over {sk} keys (more than {MAX_KEYS}) is not supported by the cpu target"
    target = (q[0], q[1], q[2], sk)
    for value in node.inputs[3:5]:
        if value is None:
            continue
        if value.type.rank > 4:
            return f"Attention mask '{value.name}' has rank {value.type.rank}, more than 4"
        padded = (1,) * (4 - value.type.rank) + tuple(value.type.shape)
        if any(m not in (1, t) for m, t in zip(padded, target)):
            shape = list(value.type.shape)
            return f"Attention mask '{value.name}' {shape} does not broadcast to {list(target)}"
    return None


def _contiguous(shape) -> list[int]:
    strides, step = [0] * len(shape), 1
    for d in reversed(range(len(shape))):
        strides[d] = step
        step *= shape[d]
    return strides


def attention_strides(node: Node) -> dict[str, list[int]]:
    """Element strides of Q (b, h, query, d), K (b, h, key, d), V (b, h, key, d) and Y (b, h, query, d)
    in the tensors the node reads and writes (its ``*_perm`` layouts applied)."""
    (_, qs, _), (_, ks, _), (_, vs, _) = (_operand(node, i) for i in range(3))
    y_perm, out = _perm(node, "y_perm"), _contiguous(node.output.type.shape)
    ys = [0] * 4
    for axis, p in enumerate(y_perm):
        ys[p] = out[axis]
    return {
        "q_stride": qs,
        "k_stride": [ks[0], ks[1], ks[3], ks[2]] if node.attr("k_transposed", 0) else ks,
        "v_stride": vs,
        "y_stride": ys,
    }


def _layout_reason(node: Node) -> str | None:
    for name in ("q_perm", "k_perm", "v_perm", "y_perm"):
        if sorted(_perm(node, name)) != [0, 1, 2, 3]:
            return f"Attention {name} {list(_perm(node, name))} is not a permutation of 4 axes"
    strides = attention_strides(node)
    for name in ("q_stride", "v_stride", "y_stride"):
        if strides[name][3] != 1:
            return f"Attention {name[0].upper()} is not contiguous along the head size"
    if 1 not in strides["k_stride"][2:]:
        return "Attention K is contiguous along neither the keys nor the head size"
    return None


@register(f"{DOMAIN}::Attention", check=check_attention, dtypes=None)
def emit_attention(ctx: EmitContext, node: Node) -> KernelCode:
    q, k, v, sk, _ = _attention_shapes(node)
    target = (q[0], q[1], q[2], sk)
    mask, bool_mask = node.input(3), node.input(4)
    fields = [
        f".B = {q[0]}", f".H = {q[1]}", f".Sq = {q[2]}", f".Sk = {sk}", f".D = {q[3]}", f".Dv = {v[3]}",
        f".causal = {int(bool(node.attr('causal', 0)))}", f".kv_group = {q[1] // k[1]}",
        f".nan_to_zero = {int(bool(node.attr('nan_to_zero', 0)))}",
        f".scale = {c_float(node.attr('scale', 1.0))}",
        f".mask_fill = {c_float(node.attr('mask_fill', float('-inf')))}",
        f".mask_stride = {c_longs(_mask_strides(mask, target))}",
        f".bool_stride = {c_longs(_mask_strides(bool_mask, target))}",
    ] + [f".{name} = {c_longs(strides[:4 if name == 'k_stride' else 3])}"
         for name, strides in attention_strides(node).items()]
    bool_ptr = "NULL" if bool_mask is None else ctx.ptr(bool_mask)
    qkv = []
    for i in range(3):
        offset = _operand(node, i)[2]
        qkv.append(f"({ctx.ptr(node.input(i))} + {offset})" if offset else ctx.ptr(node.input(i)))
    body = (
        f"static const lw_attention_geom g = {{{', '.join(fields)}}};\n"
        f"lw_attention(ctx->nt, &g, {qkv[0]}, {qkv[1]}, {qkv[2]}, {ctx.opt_ptr(mask)}, {bool_ptr}, "
        f"{ctx.out(node.output)}, (float *)ctx->ws);"
    )
    b, h, sq, d, dv = q[0], q[1], q[2], q[3], v[3]
    vec = ctx.isa.vec
    skp, dvp = -(-sk // vec) * vec, -(-dv // vec) * vec
    workspace = 4 * b * h * (d * skp + (sk * dvp if dv % vec else 0))
    return KernelCode(body, flops=2 * b * h * sq * sk * (d + dv) + 5 * b * h * sq * sk, workspace=workspace)

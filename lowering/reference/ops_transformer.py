"""Numpy semantics of normalisation ops and the fused transformer ops (see ``ops.py``).

- ``LayerNormalization`` (ONNX opset 17): statistics in float64, so the reference is the accurate side of
  every comparison.
- ``lowering::Attention``: what ``passes.fusion.fuse_transformer`` replaces a MatMul -> scale -> mask ->
  Softmax -> MatMul chain by, computed the way that chain computes it (see :func:`attention`). Its
  optional ``q_perm`` / ``k_perm`` / ``v_perm`` / ``y_perm`` attributes are transposes folded into it
  (``passes.fusion.fold_transpose``): the operand it computes with is ``np.transpose(input, q_perm)``, and
  its output is ``np.transpose(result, y_perm)``. Optional ``q_slice`` / ``k_slice`` / ``v_slice``
  ``[axis, start, stop]`` read the operand from part of its input, before the permutation
  (``np.transpose(input[..., start:stop, ...], q_perm)``, the slice along ``axis``): Q, K and V sliced
  from one fused projection (``fuse_transformer.fold_qkv_split``).
"""

from __future__ import annotations

import numpy as np

from ..opinfo import DOMAIN
from .ops import register


@register("LayerNormalization")
def layer_normalization(node, xs):
    """``(x - mean) / sqrt(var + epsilon) * scale + bias`` over the axes ``axis..rank-1``; the optional
    outputs Mean and InvStdDev keep the reduced axes as size one."""
    x = xs[0]
    scale = xs[1]
    bias = xs[2] if len(xs) > 2 else None
    axis = node.attr("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(((x64 - mean) ** 2).mean(axis=axes, keepdims=True) + node.attr("epsilon", 1e-5))
    y = (x64 - mean) * inv_std * scale.astype(np.float64)
    if bias is not None:
        y = y + bias
    stash = np.float32 if node.attr("stash_type", 1) == 1 else x.dtype
    return [y.astype(x.dtype), mean.astype(stash), inv_std.astype(stash)][: len(node.outputs)]


def attention_scores(node, q, k, bool_mask, mask):
    """The pre-softmax scores ``where(bool_mask, q k^T * scale, mask_fill) + mask`` in float32, with
    ``causal`` hiding key j from query i when ``j > i + Sk - Sq`` (it is only set when every such entry
    would have been replaced by a fill far below any score, so that it adds exactly 0 to the softmax)."""
    kt = k if node.attr("k_transposed", 0) else np.swapaxes(k, -1, -2)
    scores = np.matmul(q, kt) * np.float32(node.attr("scale", 1.0))
    if bool_mask is not None:
        scores = np.where(bool_mask, scores, np.float32(node.attr("mask_fill", -np.inf)))
    if mask is not None:
        scores = scores + mask
    if node.attr("causal", 0):
        sq, sk = scores.shape[-2:]
        scores = np.where(np.tril(np.ones((sq, sk), bool), sk - sq), scores, np.float32(-np.inf))
    return scores.astype(np.float32)


def _operand(x, perm, bounds):
    """``np.transpose(x[lo:hi along axis], perm)`` (each part only when its attribute is set)."""
    if bounds is not None:
        axis, lo, hi = (int(b) for b in bounds)
        x = x[(slice(None),) * axis + (slice(lo, hi),)]
    return _permuted(x, perm)


def _permuted(x, perm):
    return x if perm is None else np.transpose(x, perm)


@register("Attention", domain=DOMAIN)
def attention(node, xs):
    """``softmax(scores) @ v`` over the last axis (scores as :func:`attention_scores`); inputs Q
    [..., Sq, D], K [..., Sk, D] (or [..., D, Sk] with ``k_transposed``), V [..., Sk, Dv], an optional
    additive float mask and an optional bool mask, both broadcast to [..., Sq, Sk]. K and V may have
    fewer heads (axis -3) than Q, a divisor of its heads (grouped-query attention, as ``np.repeat``). A
    row whose scores are all -inf gives NaN, as Softmax does; with ``nan_to_zero`` (the exporters' IsNaN
    -> Where guard after the softmax) every NaN probability becomes 0 instead."""
    q, k, v = (_operand(x, node.attr(f"{n}_perm", None), node.attr(f"{n}_slice", None))
               for x, n in zip(xs[:3], "qkv"))
    if k.shape[-3] != q.shape[-3]:  # grouped-query attention: query head h reads K/V head h // group
        group = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    mask = xs[3] if len(xs) > 3 else None
    bool_mask = xs[4] if len(xs) > 4 else None
    scores = attention_scores(node, q, k, bool_mask, mask)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    if node.attr("nan_to_zero", 0):
        p = np.where(np.isnan(p), np.float32(0), p)
    y = np.matmul(p.astype(np.float32), v).astype(np.float32)
    return [np.ascontiguousarray(_permuted(y, node.attr("y_perm", None)))]

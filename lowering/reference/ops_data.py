"""Numpy semantics of the indexing and data-movement ops (see ``ops.py``).

Out-of-range indices (Gather, GatherElements, GatherND) raise, as ONNX Runtime does: the reference must
not quietly clamp or wrap what the spec calls an error. ``resize_axis`` is shared with the cpu target, so
its precomputed source tables and the reference agree by construction; both follow ONNX Runtime's float32
coordinate arithmetic (ties of ``nearest`` and the clamping of ``linear`` to the input's edges included).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ops import ONNX_TYPE_CODES, register


def _normalize_indices(indices: np.ndarray, size: int, what: str) -> np.ndarray:
    """Indices in [-size, size) -> [0, size); anything else is an error (ONNX Runtime refuses it too)."""
    idx = np.asarray(indices).astype(np.int64)
    bad = (idx < -size) | (idx >= size)
    if bad.any():
        raise IndexError(f"{what} index {int(idx[bad].reshape(-1)[0])} is out of range for a dimension of "
                         f"{size}")
    return np.where(idx < 0, idx + size, idx)


# --- split / tile / pad / trilu ---------------------------------------------------------------------

def split_sizes(node, dim: int, split) -> list[int]:
    """The size of every Split output along the axis: from the ``split`` input or attribute, else
    ``num_outputs`` (opset 18: equal chunks of ceil(dim / n), the last one smaller), else equal parts."""
    if split is None:
        split = node.attr("split")
    if split is not None and len(split):
        return [int(s) for s in split]
    n = node.attr("num_outputs") or len(node.outputs)
    if node.attr("num_outputs") is not None:
        chunk = -(-dim // n)
        return [min(chunk, max(dim - i * chunk, 0)) for i in range(n)]
    if dim % n:
        raise ValueError(f"Split of a dimension of {dim} into {n} equal outputs")
    return [dim // n] * n


@register("Split")
def split(node, xs):
    x = xs[0]
    axis = node.attr("axis", 0) % x.ndim
    sizes = split_sizes(node, x.shape[axis], xs[1] if len(xs) > 1 else None)
    if sum(sizes) != x.shape[axis]:
        raise ValueError(f"Split sizes {sizes} do not add up to the dimension {x.shape[axis]}")
    bounds = np.cumsum([0] + sizes)
    return [np.ascontiguousarray(np.take(x, np.arange(bounds[i], bounds[i + 1]), axis=axis))
            for i in range(len(sizes))]


@register("Tile")
def tile(node, xs):
    repeats = [int(r) for r in xs[1]]
    if len(repeats) != xs[0].ndim:
        raise ValueError(f"Tile repeats {repeats} do not match the rank {xs[0].ndim}")
    return [np.tile(xs[0], repeats)]


def pad_amounts(node, rank: int, pads, axes) -> tuple[list[int], list[int]]:
    """(begin, end) pads for every axis, from the ``pads`` input (opset >= 11) and its optional ``axes``
    input (opset >= 18) or the ``pads`` attribute."""
    pads = [int(p) for p in (pads if pads is not None else node.attr("pads"))]
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad has {len(pads)} pads for {len(axes)} axes")
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + len(axes)]
    return begin, end


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@register("Pad")
def pad(node, xs):
    x = xs[0]
    mode = node.attr("mode", "constant")
    if mode not in PAD_MODES:
        raise NotImplementedError(f"Pad mode '{mode}'")
    begin, end = pad_amounts(node, x.ndim, xs[1] if len(xs) > 1 else None, xs[3] if len(xs) > 3 else None)
    grow = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        value = xs[2] if len(xs) > 2 and xs[2] is not None and np.size(xs[2]) else node.attr("value", 0)
        value = np.asarray(value).reshape(-1)[0] if np.size(value) else 0
        y = np.pad(x, grow, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
    else:
        y = np.pad(x, grow, mode=PAD_MODES[mode])
    # negative pads crop
    crop = tuple(slice(-min(b, 0), y.shape[d] + min(e, 0)) for d, (b, e) in enumerate(zip(begin, end)))
    return [np.ascontiguousarray(y[crop])]


@register("Trilu")
def trilu(node, xs):
    x = xs[0]
    k = int(np.asarray(xs[1]).reshape(-1)[0]) if len(xs) > 1 and xs[1] is not None else 0
    return [np.triu(x, k) if node.attr("upper", 1) else np.tril(x, k)]


# --- gathers ----------------------------------------------------------------------------------------

@register("GatherElements")
def gather_elements(node, xs):
    data = xs[0]
    axis = node.attr("axis", 0) % data.ndim
    idx = _normalize_indices(xs[1], data.shape[axis], "GatherElements")
    if idx.size == 0:
        return [np.zeros(idx.shape, data.dtype)]
    # indices may be smaller than data along the other axes: they address its leading part
    window = tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(idx.shape))
    return [np.take_along_axis(data[window], idx, axis=axis)]


@register("GatherND")
def gather_nd(node, xs):
    data, indices = xs[0], np.asarray(xs[1]).astype(np.int64)
    b = node.attr("batch_dims", 0)
    k = indices.shape[-1]
    batch_shape, rest = data.shape[:b], data.shape[b + k:]
    out_shape = indices.shape[:-1] + rest
    batch = int(np.prod(batch_shape))
    data_b = data.reshape((batch,) + data.shape[b:])
    idx_b = indices.reshape(batch, -1, k)
    idx_b = np.stack([_normalize_indices(idx_b[..., j], data.shape[b + j], "GatherND") for j in range(k)],
                     axis=-1) if k else idx_b
    parts = [data_b[i][tuple(idx_b[i].T)] for i in range(batch)]
    return [np.ascontiguousarray(np.stack(parts).reshape(out_shape)) if parts else
            np.zeros(out_shape, data.dtype)]


@register("TopK")
def topk(node, xs):
    """Values and int64 indices of the k largest (or smallest) along ``axis``, sorted, ties broken by the
    lower index (as ONNX Runtime does). ``sorted=0`` leaves the order unspecified; this returns it sorted."""
    x = xs[0]
    k = int(np.asarray(xs[1]).reshape(-1)[0])
    axis = node.attr("axis", -1) % x.ndim
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise ValueError(f"TopK k={k} is out of range for a dimension of {n}")
    if node.attr("largest", 1):
        # a stable ascending sort of the reversed axis, reversed back: descending, ties by lower index
        order = n - 1 - np.argsort(np.flip(x, axis), axis=axis, kind="stable")
        order = np.flip(order, axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    order = np.take(order, np.arange(k), axis=axis)
    return [np.take_along_axis(x, order, axis=axis), order.astype(np.int64)]


# --- resize -----------------------------------------------------------------------------------------

#: coordinate_transformation_mode -> x_original(x_resized, scale, in_len, out_len), in float32 as ONNX
#: Runtime computes it
COORDINATE_MODES = {
    "half_pixel": lambda x, s, n, m: (x + np.float32(0.5)) / s - np.float32(0.5),
    "pytorch_half_pixel": lambda x, s, n, m: (
        (x + np.float32(0.5)) / s - np.float32(0.5) if m > 1 else np.zeros_like(x)),
    "asymmetric": lambda x, s, n, m: x / s,
    "align_corners": lambda x, s, n, m: (
        x * np.float32(n - 1) / np.float32(m - 1) if m > 1 else np.zeros_like(x)),
}

NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclass(frozen=True)
class ResizeAxis:
    """How one output axis of a Resize reads its input axis.

    nearest: output i copies input ``lo[i]``; linear: output i is ``w_lo[i] * in[lo[i]] + w_hi[i] *
    in[hi[i]]``. Indices are already clamped into the input.
    """

    out_len: int
    lo: np.ndarray  # int64
    hi: np.ndarray  # int64
    w_lo: np.ndarray  # float32
    w_hi: np.ndarray  # float32

    @property
    def identity(self) -> bool:
        return len(self.lo) == len(self.hi) and np.array_equal(self.lo, np.arange(len(self.lo))) and \
            not self.w_hi.any()


def resize_unsupported(node) -> str | None:
    """Why the reference (and so the compiler) cannot evaluate this Resize, or None."""
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"Resize mode '{mode}' is not supported (nearest and linear are)"
    ctm = node.attr("coordinate_transformation_mode", "half_pixel")
    if ctm not in COORDINATE_MODES:
        return f"Resize coordinate_transformation_mode '{ctm}' is not supported"
    if mode == "nearest" and node.attr("nearest_mode", "round_prefer_floor") not in NEAREST_MODES:
        return f"Resize nearest_mode '{node.attr('nearest_mode')}' is not supported"
    if node.attr("antialias", 0):
        return "Resize with antialias=1 is not supported"
    if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        return f"Resize keep_aspect_ratio_policy '{node.attr('keep_aspect_ratio_policy')}' is not supported"
    return None


def resize_scales(node, in_shape: tuple[int, ...], scales, sizes) -> tuple[list[int], list[np.float32]]:
    """Output sizes and float32 scales of every axis from the ``scales`` or ``sizes`` input (and the
    opset-18 ``axes`` attribute); with sizes, scale = out / in, as ONNX Runtime computes it."""
    rank = len(in_shape)
    axes = node.attr("axes")
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    out = list(in_shape)
    scale = [np.float32(1.0)] * rank
    if sizes is not None and np.size(sizes):
        for a, s in zip(axes, np.asarray(sizes).reshape(-1)):
            out[a] = int(s)
            scale[a] = np.float32(np.float32(s) / np.float32(in_shape[a]))
    elif scales is not None and np.size(scales):
        for a, s in zip(axes, np.asarray(scales, dtype=np.float32).reshape(-1)):
            scale[a] = np.float32(s)
            out[a] = int(np.floor(np.float32(in_shape[a]) * np.float32(s)))
    else:
        raise ValueError("Resize needs a scales or a sizes input")
    return out, scale


def resize_axis(node, in_len: int, out_len: int, scale: np.float32) -> ResizeAxis:
    """The source indices and weights of one axis (see ``ResizeAxis``)."""
    x = COORDINATE_MODES[node.attr("coordinate_transformation_mode", "half_pixel")](
        np.arange(out_len, dtype=np.float32), np.float32(scale), in_len, out_len).astype(np.float32)
    last = in_len - 1
    if node.attr("mode", "nearest") == "nearest":
        mode = node.attr("nearest_mode", "round_prefer_floor")
        floor = np.floor(x)
        tie = x - floor == np.float32(0.5)
        if mode == "floor":
            idx = floor
        elif mode == "ceil":
            idx = np.ceil(x)
        else:  # round half away from zero, except exact ties follow the mode
            rounded = np.where(x >= 0, np.floor(x + np.float32(0.5)), np.ceil(x - np.float32(0.5)))
            idx = np.where(tie, floor if mode == "round_prefer_floor" else floor + 1, rounded)
        idx = np.clip(idx.astype(np.int64), 0, last)
        zero = np.zeros(out_len, np.float32)
        return ResizeAxis(out_len, idx, idx, np.ones(out_len, np.float32), zero)
    x = np.clip(x, np.float32(0), np.float32(last))
    lo = np.minimum(np.floor(x).astype(np.int64), last)
    hi = np.minimum(lo + 1, last)
    w_hi = np.where(lo == hi, np.float32(0), x - lo.astype(np.float32)).astype(np.float32)
    w_lo = np.where(lo == hi, np.float32(1), hi.astype(np.float32) - x).astype(np.float32)
    return ResizeAxis(out_len, lo, hi, w_lo, w_hi)


def resize_plan(node, in_shape: tuple[int, ...], scales, sizes) -> list[ResizeAxis]:
    """One ``ResizeAxis`` per axis of the input."""
    reason = resize_unsupported(node)
    if reason is not None:
        raise NotImplementedError(reason)
    out, scale = resize_scales(node, in_shape, scales, sizes)
    return [resize_axis(node, n, m, s) for n, m, s in zip(in_shape, out, scale)]


@register("Resize")
def resize(node, xs):
    x = xs[0]
    plan = resize_plan(node, x.shape, xs[2] if len(xs) > 2 else None, xs[3] if len(xs) > 3 else None)
    nearest = node.attr("mode", "nearest") == "nearest"
    y = x if nearest else x.astype(np.float64)
    for axis, ax in enumerate(plan):
        if ax.identity and ax.out_len == x.shape[axis]:
            continue
        if nearest:
            y = np.take(y, ax.lo, axis=axis)
        else:
            shape = [1] * x.ndim
            shape[axis] = ax.out_len
            y = (np.take(y, ax.lo, axis=axis) * ax.w_lo.astype(np.float64).reshape(shape)
                 + np.take(y, ax.hi, axis=axis) * ax.w_hi.astype(np.float64).reshape(shape))
    return [np.ascontiguousarray(y.astype(x.dtype, copy=False))]


# --- scatters, one-hot, eye, block rearrangements, dropout -------------------------------------------

def _scatter_combine(reduction: str):
    """How a scattered update meets the element already there (ONNX ``reduction``)."""
    table = {"none": lambda old, new: new, "add": np.add, "mul": np.multiply, "max": np.maximum,
             "min": np.minimum}
    if reduction not in table:
        raise NotImplementedError(f"scatter reduction '{reduction}'")
    return table[reduction]


@register("ScatterElements")
def scatter_elements(node, xs):
    """``y = data``, then for every position p of indices, in storage order: ``y[p with p[axis] =
    indices[p]] = combine(that, updates[p])`` (duplicates apply in order)."""
    data, updates = xs[0], xs[2]
    axis = node.attr("axis", 0) % data.ndim
    idx = _normalize_indices(xs[1], data.shape[axis], "ScatterElements")
    combine = _scatter_combine(node.attr("reduction", "none"))
    y = np.array(data, copy=True)
    for p in np.ndindex(*idx.shape):
        target = p[:axis] + (int(idx[p]),) + p[axis + 1:]
        y[target] = combine(y[target], updates[p])
    return [y]


@register("ScatterND")
def scatter_nd(node, xs):
    """``y = data``, then for each index tuple (the last axis of indices), in order: ``y[tuple] =
    combine(y[tuple], updates[...])``, a slice when the tuple is shorter than data's rank."""
    data, indices, updates = xs[0], np.asarray(xs[1]).astype(np.int64), xs[2]
    combine = _scatter_combine(node.attr("reduction", "none"))
    k = indices.shape[-1]
    y = np.array(data, copy=True)
    flat_idx = indices.reshape(-1, k)
    flat_upd = updates.reshape((flat_idx.shape[0],) + data.shape[k:])
    for t, u in zip(flat_idx, flat_upd):
        target = tuple(int(_normalize_indices(t[j], data.shape[j], "ScatterND")) for j in range(k))
        y[target] = combine(y[target], u)
    return [y]


@register("OneHot")
def one_hot(node, xs):
    """``values[1]`` where an index (in [-depth, depth): negative ones count from the end) equals the
    position along the new ``axis``, ``values[0]`` elsewhere; out-of-range indices give an all-off row."""
    indices = np.asarray(xs[0])
    depth = int(np.asarray(xs[1]).reshape(-1)[0])
    values = np.asarray(xs[2]).reshape(-1)
    axis = node.attr("axis", -1)
    rank = indices.ndim + 1
    axis %= rank
    idx = np.trunc(indices).astype(np.int64) if indices.dtype.kind == "f" else indices.astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)
    positions = np.arange(depth).reshape((depth,) + (1,) * indices.ndim)
    hot = np.moveaxis(positions == idx[None], 0, axis)
    return [np.where(hot, values[1], values[0]).astype(values.dtype)]


@register("EyeLike")
def eye_like(node, xs):
    """Ones on the ``k``-th diagonal of a 2-D tensor shaped like the input, in ``dtype`` (default the
    input's type)."""
    x = xs[0]
    dtype = node.attr("dtype")
    out = ONNX_TYPE_CODES[int(dtype)] if dtype is not None else x.dtype
    return [np.eye(x.shape[0], x.shape[1], k=node.attr("k", 0), dtype=out)]


def block_permutation(op: str, shape: tuple[int, ...], blocksize: int, mode: str):
    """SpaceToDepth / DepthToSpace as a reshape of the N-C-H-W input to 6-D and a transpose: (the 6-D
    shape, the permutation, the output shape)."""
    n, c, h, w = shape
    b = blocksize
    if op == "SpaceToDepth":
        six = (n, c, h // b, b, w // b, b)
        perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
        return six, perm, (n, c * b * b, h // b, w // b)
    if mode == "DCR":
        six, perm = (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2)
    else:
        six, perm = (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3)
    return six, perm, (n, c // (b * b), h * b, w * b)


@register("SpaceToDepth", "DepthToSpace")
def space_depth(node, xs):
    x = xs[0]
    b = int(node.attr("blocksize"))
    if x.ndim != 4 or (node.op == "SpaceToDepth" and (x.shape[2] % b or x.shape[3] % b)) or \
            (node.op == "DepthToSpace" and x.shape[1] % (b * b)):
        raise ValueError(f"{node.op} with blocksize {b} of a tensor of shape {x.shape}")
    six, perm, out = block_permutation(node.op, x.shape, b, node.attr("mode", "DCR"))
    return [np.ascontiguousarray(x.reshape(six).transpose(perm)).reshape(out)]


def dropout_is_identity(node, ratio, training) -> bool:
    """Whether a Dropout computes its input unchanged: not training (the default), or a ratio of 0."""
    training = bool(np.asarray(training).reshape(-1)[0]) if training is not None else False
    ratio = float(np.asarray(ratio).reshape(-1)[0]) if ratio is not None else node.attr("ratio", 0.5)
    return not training or ratio == 0.0


@register("Dropout")
def dropout(node, xs):
    """Inference: the input, and (output 1) a mask of trues. Training with a nonzero ratio drops random
    elements, which nothing here reproduces: refused."""
    x = xs[0]
    ratio = xs[1] if len(xs) > 1 else None
    training = xs[2] if len(xs) > 2 else None
    if not dropout_is_identity(node, ratio, training):
        raise NotImplementedError("Dropout in training mode with a nonzero ratio (random)")
    return [x, np.ones(x.shape, dtype=np.bool_)][: len(node.outputs)]


@register("BitCast")
def bit_cast(node, xs):
    """The input's bytes read as the type ``to`` (of the same width)."""
    x = np.ascontiguousarray(xs[0])
    to = np.dtype(ONNX_TYPE_CODES[int(node.attr("to"))])
    if to.itemsize != x.dtype.itemsize:
        raise ValueError(f"BitCast from {x.dtype} to {to}: the widths differ")
    return [x.view(to)]

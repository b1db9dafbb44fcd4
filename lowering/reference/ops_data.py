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

# Coordinates follow ONNX Runtime's float32 arithmetic and the operator document. One known difference
# from the ONNX reference implementation: align_corners with scales divides by the integer output length
# minus 1 (the document's ``length_resized``), where the ONNX reference uses the fractional in * scale; the
# two agree whenever in * scale is an integer (the backend tests test_resize_downsample_scales_*_align_corners
# are the cases where they do not, and ONNX Runtime fails them too).
F32 = np.float32


def _half_pixel_symmetric(x, s, n, m, r0, r1):
    """The half_pixel mapping shifted so that the output's centre maps to the input's (it differs from
    half_pixel only when ``scale * n`` is not an integer): partly in double, as ONNX Runtime computes it."""
    adjustment = F32(F32(m) / F32(s * F32(n)))
    offset = F32(F32(F32(n) / F32(2)) * (F32(1) - adjustment))
    return (np.float64(offset) + (x.astype(np.float64) + 0.5) / np.float64(s) - 0.5).astype(F32)


def _tf_crop_and_resize(x, s, n, m, r0, r1):
    """Output i samples the roi [r0, r1] (fractions of the input's extent) at m evenly spaced points."""
    r0, r1, last = F32(r0), F32(r1), F32(n - 1)
    if m > 1:
        return r0 * last + (x * (r1 - r0) * last) / F32(m - 1)
    return np.full_like(x, F32(0.5 * (np.float64(r0) + np.float64(r1)) * np.float64(last)))


#: coordinate_transformation_mode -> x_original(x_resized, scale, in_len, out_len, roi_start, roi_end), in
#: float32 as ONNX Runtime computes it
COORDINATE_MODES = {
    "half_pixel": lambda x, s, n, m, r0, r1: (x + F32(0.5)) / s - F32(0.5),
    "half_pixel_symmetric": _half_pixel_symmetric,
    "pytorch_half_pixel": lambda x, s, n, m, r0, r1: (
        (x + F32(0.5)) / s - F32(0.5) if m > 1 else np.zeros_like(x)),
    "asymmetric": lambda x, s, n, m, r0, r1: x / s,
    "align_corners": lambda x, s, n, m, r0, r1: (
        x * F32(n - 1) / F32(m - 1) if m > 1 else np.zeros_like(x)),
    "tf_crop_and_resize": _tf_crop_and_resize,
}

RESIZE_MODES = ("nearest", "linear", "cubic")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


@dataclass(frozen=True)
class ResizeAxis:
    """How one output axis of a Resize reads its input axis: output i is ``sum_k w[i, k] * in[idx[i, k]]``
    (nearest: one tap of weight 1; linear: two; cubic and antialiased filters: more, unused ones of weight
    0). Indices are already clamped into the input (ONNX's edge padding). ``outside`` (tf_crop_and_resize
    only, else None) marks the outputs whose source lies outside the input: they are the
    ``extrapolation_value``, whatever the other axes say.
    """

    out_len: int
    idx: np.ndarray  # int64, (out_len, taps)
    w: np.ndarray  # float32, (out_len, taps)
    outside: np.ndarray | None = None  # bool, (out_len,)
    identity: bool = False  # output i is input i (the axis is not resized)

    @property
    def taps(self) -> int:
        return self.idx.shape[1]

    # the one- and two-tap (nearest, linear) views the cpu target's specialised kernels take
    @property
    def lo(self) -> np.ndarray:
        return self.idx[:, 0]

    @property
    def hi(self) -> np.ndarray:
        return self.idx[:, -1]

    @property
    def w_lo(self) -> np.ndarray:
        return self.w[:, 0]

    @property
    def w_hi(self) -> np.ndarray:
        return self.w[:, 1] if self.taps > 1 else np.zeros(self.out_len, F32)


def resize_unsupported(node) -> str | None:
    """Why the reference (and so the compiler) cannot evaluate this Resize, or None."""
    mode = node.attr("mode", "nearest")
    if mode not in RESIZE_MODES:
        return f"Resize mode '{mode}' is not supported (nearest, linear and cubic are)"
    ctm = node.attr("coordinate_transformation_mode", "half_pixel")
    if ctm not in COORDINATE_MODES:
        return f"Resize coordinate_transformation_mode '{ctm}' is not supported"
    if mode == "nearest" and node.attr("nearest_mode", "round_prefer_floor") not in NEAREST_MODES:
        return f"Resize nearest_mode '{node.attr('nearest_mode')}' is not supported"
    if mode == "nearest" and node.attr("antialias", 0):
        return "Resize with antialias=1 and mode 'nearest' (ONNX defines antialiasing for linear and cubic)"
    if node.attr("keep_aspect_ratio_policy", "stretch") not in ASPECT_POLICIES:
        return f"Resize keep_aspect_ratio_policy '{node.attr('keep_aspect_ratio_policy')}' is not supported"
    return None


def resize_axes(node, rank: int) -> list[int]:
    """The axes that roi, scales and sizes list (opset-18 ``axes``; default all)."""
    axes = node.attr("axes")
    return list(range(rank)) if axes is None else [int(a) % rank for a in axes]


def resize_scales(node, in_shape: tuple[int, ...], scales, sizes) -> tuple[list[int], list[np.float32]]:
    """Output sizes and float32 scales of every axis from the ``scales`` or ``sizes`` input and the
    ``axes`` attribute. With sizes, scale = out / in (``stretch``), or one scale for every listed axis, the
    smallest (``not_larger``) or largest (``not_smaller``) of those, the sizes then rounded from it (half
    up); as ONNX Runtime computes them."""
    rank = len(in_shape)
    axes = resize_axes(node, rank)
    out = list(in_shape)
    scale = [F32(1.0)] * rank
    if sizes is not None and np.size(sizes):
        sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
        if len(sizes) != len(axes):
            raise ValueError(f"Resize has {len(sizes)} sizes for {len(axes)} axes")
        policy = node.attr("keep_aspect_ratio_policy", "stretch")
        ratios = [F32(F32(s) / F32(in_shape[a])) if in_shape[a] else F32(np.inf) for a, s in zip(axes, sizes)]
        if policy == "stretch":
            for a, s, r in zip(axes, sizes, ratios):
                out[a], scale[a] = s, r
        else:
            common = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                scale[a] = common
                out[a] = int(np.floor(common * F32(in_shape[a]) + F32(0.5)))
    elif scales is not None and np.size(scales):
        scales = np.asarray(scales, dtype=F32).reshape(-1)
        if len(scales) != len(axes):
            raise ValueError(f"Resize has {len(scales)} scales for {len(axes)} axes")
        for a, s in zip(axes, scales):
            if not s > 0:
                raise ValueError(f"Resize scale {float(s)} of axis {a} is not positive")
            scale[a] = F32(s)
            out[a] = int(np.floor(F32(in_shape[a]) * F32(s)))
    else:
        raise ValueError("Resize needs a scales or a sizes input")
    return out, scale


def resize_roi(node, rank: int, roi) -> list[tuple[float, float]]:
    """(start, end) of every axis from the ``roi`` input (read by tf_crop_and_resize only): the starts of the
    listed axes, then their ends; an absent or empty roi is the whole input."""
    bounds = [(0.0, 1.0)] * rank
    if node.attr("coordinate_transformation_mode", "half_pixel") != "tf_crop_and_resize" or roi is None \
            or not np.size(roi):
        return bounds
    axes = resize_axes(node, rank)
    roi = np.asarray(roi, dtype=np.float64).reshape(-1)
    if roi.size != 2 * len(axes):
        raise ValueError(f"Resize roi has {roi.size} values for {len(axes)} axes (2 per axis)")
    for i, a in enumerate(axes):
        bounds[a] = (float(roi[i]), float(roi[i + len(axes)]))
    return bounds


def _cubic_weights(frac: np.ndarray, a: np.float32) -> np.ndarray:
    """Keys' cubic convolution weights of the taps floor(x) - 1 .. floor(x) + 2 for x = floor(x) + frac
    (float32, ONNX Runtime's formulas)."""
    s = np.abs(frac).astype(F32)
    one, two, three, four, five, eight = (F32(v) for v in (1, 2, 3, 4, 5, 8))
    s1, r, r1 = s + one, one - s, two - s
    return np.stack([
        ((a * s1 - five * a) * s1 + eight * a) * s1 - four * a,
        ((a + two) * s - (a + three)) * s * s + one,
        ((a + two) * r - (a + three)) * r * r + one,
        ((a * r1 - five * a) * r1 + eight * a) * r1 - four * a,
    ], axis=1).astype(F32)


def _antialias_filter(t: np.float32, cubic: bool, a: np.float32) -> np.float32:
    """The resampling filter, stretched by the caller for antialiasing (Pillow's, as ONNX Runtime's)."""
    t = F32(abs(t))
    if not cubic:
        return F32(1) - t if t < F32(1) else F32(0)
    if t < F32(1):
        return ((a + F32(2)) * t - (a + F32(3))) * t * t + F32(1)
    if t < F32(2):
        return (((t - F32(5)) * t + F32(8)) * t - F32(4)) * a
    return F32(0)


def _antialias_taps(x: np.ndarray, in_len: int, scale: np.float32, cubic: bool, a: np.float32,
                    exclude: bool) -> tuple[np.ndarray, np.ndarray]:
    """Taps of the antialiased filter: the linear or cubic kernel widened by 1 / scale when downscaling,
    every input within its support weighted and the weights normalised to sum 1; inputs beyond the edge
    count as the edge (or, with exclude_outside, are dropped)."""
    inv = F32(F32(1) / scale)  # > 1 when downscaling
    half = F32(2 if cubic else 1)
    support = half * inv if inv >= F32(1) else half
    window = int(np.ceil(support)) * 2 + 1
    stretch = F32(F32(1) / inv) if inv >= F32(1) else F32(1)
    rows_idx, rows_w = [], []
    for xi in x:
        center = F32(0.5) + F32(xi)
        lo = int(np.floor(center - support + F32(0.5)))
        hi = int(np.floor(center + support + F32(0.5)))
        hi = lo + min(max(hi - lo, 0), window)
        if exclude:
            lo, hi = min(max(lo, 0), in_len), min(max(hi, 0), in_len)
        js = list(range(lo, hi))
        ws = [_antialias_filter((F32(j) - center + F32(0.5)) * stretch, cubic, a) for j in js]
        total = F32(0)
        for w in ws:
            total = F32(total + w)
        norm = F32(1) if total == F32(0) else F32(F32(1) / total)
        rows_idx.append(js)
        rows_w.append([F32(w * norm) for w in ws])
    taps = max((len(r) for r in rows_idx), default=1)
    idx = np.zeros((len(x), taps), np.int64)
    w = np.zeros((len(x), taps), F32)
    for i, (js, ws) in enumerate(zip(rows_idx, rows_w)):
        idx[i, :len(js)] = np.clip(js, 0, in_len - 1) if js else 0
        w[i, :len(ws)] = ws
    return idx, w


def resize_axis(node, in_len: int, out_len: int, scale: np.float32,
                roi: tuple[float, float] = (0.0, 1.0)) -> ResizeAxis:
    """The source indices and weights of one axis (see ``ResizeAxis``)."""
    mode = node.attr("mode", "nearest")
    ctm = node.attr("coordinate_transformation_mode", "half_pixel")
    if in_len == 0 and out_len > 0:
        raise ValueError("Resize of an empty axis to a nonempty one")
    if out_len == 0:
        return ResizeAxis(0, np.zeros((0, 1), np.int64), np.zeros((0, 1), F32), None, in_len == 0)
    ones = np.ones((out_len, 1), F32)
    if out_len == in_len and scale == F32(1) and (ctm != "tf_crop_and_resize" or tuple(roi) == (0.0, 1.0)):
        return ResizeAxis(out_len, np.arange(out_len, dtype=np.int64).reshape(-1, 1), ones, None, True)
    x = np.asarray(COORDINATE_MODES[ctm](np.arange(out_len, dtype=F32), F32(scale), in_len, out_len, *roi),
                   dtype=F32)
    last = in_len - 1
    outside = ((x < 0) | (x > F32(last))) if ctm == "tf_crop_and_resize" else None
    if mode == "nearest":
        rule = node.attr("nearest_mode", "round_prefer_floor")
        floor = np.floor(x)
        tie = x - floor == F32(0.5)
        if rule == "floor":
            idx = floor
        elif rule == "ceil":
            idx = np.ceil(x)
        else:  # round half away from zero, except exact ties follow the mode
            rounded = np.where(x >= 0, np.floor(x + F32(0.5)), np.ceil(x - F32(0.5)))
            idx = np.where(tie, floor if rule == "round_prefer_floor" else floor + 1, rounded)
        idx = np.clip(idx.astype(np.int64), 0, last).reshape(-1, 1)
        return ResizeAxis(out_len, idx, ones, outside)
    a = F32(node.attr("cubic_coeff_a", -0.75))
    exclude = bool(node.attr("exclude_outside", 0))
    if node.attr("antialias", 0):
        idx, w = _antialias_taps(x, in_len, F32(scale), mode == "cubic", a, exclude)
        return ResizeAxis(out_len, idx, w, outside)
    if mode == "linear":
        xc = np.clip(x, F32(0), F32(last))
        lo = np.minimum(np.floor(xc).astype(np.int64), last)
        hi = np.minimum(lo + 1, last)
        w_hi = np.where(lo == hi, F32(0), xc - lo.astype(F32)).astype(F32)
        w_lo = np.where(lo == hi, F32(1), hi.astype(F32) - xc).astype(F32)
        return ResizeAxis(out_len, np.stack([lo, hi], axis=1), np.stack([w_lo, w_hi], axis=1), outside)
    floor = np.floor(x)
    w = _cubic_weights(x - floor, a)
    idx = floor.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    if exclude:  # drop the taps beyond the edges and renormalise (in tap order, as ONNX Runtime sums)
        w = np.where((idx >= 0) & (idx <= last), w, F32(0)).astype(F32)
        total = ((w[:, 0] + w[:, 1]) + w[:, 2]) + w[:, 3]
        w = (w / np.where(total == 0, F32(1), total)[:, None]).astype(F32)
    return ResizeAxis(out_len, np.clip(idx, 0, last), w, outside)


def resize_plan(node, in_shape: tuple[int, ...], scales, sizes, roi=None) -> list[ResizeAxis]:
    """One ``ResizeAxis`` per axis of the input."""
    reason = resize_unsupported(node)
    if reason is not None:
        raise NotImplementedError(reason)
    out, scale = resize_scales(node, in_shape, scales, sizes)
    bounds = resize_roi(node, len(in_shape), roi)
    return [resize_axis(node, n, m, s, r) for n, m, s, r in zip(in_shape, out, scale, bounds)]


def resize_outside(plan: list[ResizeAxis]) -> np.ndarray | None:
    """Where the output is the extrapolation value (tf_crop_and_resize): outside on any axis; None if
    nowhere."""
    mask = None
    for axis, ax in enumerate(plan):
        if ax.outside is not None and ax.outside.any():
            shape = [1] * len(plan)
            shape[axis] = ax.out_len
            m = ax.outside.reshape(shape)
            mask = m if mask is None else mask | m
    return None if mask is None else np.broadcast_to(mask, tuple(ax.out_len for ax in plan))


@register("Resize")
def resize(node, xs):
    x = xs[0]
    inputs = list(xs) + [None] * (4 - len(xs))
    plan = resize_plan(node, x.shape, inputs[2], inputs[3], inputs[1])
    nearest = node.attr("mode", "nearest") == "nearest"
    y = x if nearest else x.astype(np.float64)
    for axis, ax in enumerate(plan):
        if ax.identity:
            continue
        if nearest:
            y = np.take(y, ax.lo, axis=axis)
            continue
        shape = [1] * x.ndim
        shape[axis] = ax.out_len
        acc = 0
        for k in range(ax.taps):
            acc = acc + np.take(y, ax.idx[:, k], axis=axis) * ax.w[:, k].astype(np.float64).reshape(shape)
        y = acc
    outside = resize_outside(plan)
    if outside is not None:
        y = np.where(outside, np.asarray(node.attr("extrapolation_value", 0.0)).astype(y.dtype), y)
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

"""Numpy semantics of the sampling ops: GridSample, AffineGrid, RoiAlign and CenterCropPad.

They follow the ONNX definitions (the operator documents and the ONNX reference implementation, which the
backend node tests' expected outputs come from); ONNX Runtime agrees on every case the tests cover:

- GridSample maps the grid's normalised coordinates (-1 .. 1; the last grid component is the last spatial
  axis) to input pixels (``align_corners``: -1 and 1 are the centres of the corner pixels, else their outer
  edges), rounds them half to even (``nearest``), folds coordinates beyond the edges in for ``border``
  (clamp) and ``reflection`` padding, then reads 1, 2 or 4 taps per axis (nearest, linear, cubic with
  a = -0.75), each tap outside the input reading 0 (``zeros``), the edge (``border``) or its reflection.
  Cubic sampling pads only its taps, never the coordinate, as PyTorch's bicubic grid_sample (which the op
  follows) and ONNX Runtime do; the ONNX reference also clamps the coordinate of a cubic ``border`` sample
  (no backend test covers that case).
- AffineGrid is the grid ``theta @ [x, y, (z,) 1]`` over the base grid of normalised pixel centres.
- RoiAlign averages (or takes the max of) ``sampling_ratio``\\ :sup:`2` bilinear samples per output bin, with
  Detectron's conventions (samples more than one pixel outside read 0, the rest clamp to the edge); its
  ``max`` mode is the max over samples of the largest of the four weighted corners, as ONNX Runtime and the
  ONNX reference compute it.
- CenterCropPad crops or zero-pads every listed axis symmetrically (the odd pixel goes to the end).

Coordinates are float32 arithmetic, as ONNX Runtime computes them; the interpolation is float64.
"""

from __future__ import annotations

import numpy as np

from ..ir import Node
from .ops import register

F32 = np.float32

GRID_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic",
              "cubic": "cubic"}
GRID_PADDING = ("zeros", "border", "reflection")
CUBIC_A = -0.75


# --- GridSample -------------------------------------------------------------------------------------

def grid_sample_unsupported(node: Node) -> str | None:
    """Why the reference cannot evaluate this GridSample, or None."""
    mode = node.attr("mode", "linear")
    if mode not in GRID_MODES:
        return f"GridSample mode '{mode}' is not supported (nearest, linear and cubic are)"
    padding = node.attr("padding_mode", "zeros")
    if padding not in GRID_PADDING:
        return f"GridSample padding_mode '{padding}' is not supported"
    return None


def grid_denormalize(n: np.ndarray, length: int, align_corners: bool) -> np.ndarray:
    """Normalised coordinates (-1 .. 1) to pixel coordinates along an axis of ``length`` pixels."""
    n = np.asarray(n, F32)
    if align_corners:
        return ((n + F32(1)) / F32(2) * F32(length - 1)).astype(F32)
    return (((n + F32(1)) * F32(length) - F32(1)) / F32(2)).astype(F32)


def grid_reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates at the borders ``lo`` and ``hi`` until they lie between them."""
    x = np.asarray(x, np.float64)
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    below, above = x < lo, x > hi
    d = np.where(below, lo - x, np.where(above, x - hi, 0.0))
    flips = np.floor(d / span)
    r = d - flips * span
    even = flips % 2 == 0
    folded = np.where(below, np.where(even, lo + r, hi - r), np.where(even, hi - r, lo + r))
    return np.where(below | above, folded, x)


def _grid_borders(length: int, align_corners: bool) -> tuple[float, float]:
    return (0.0, length - 1.0) if align_corners else (-0.5, length - 0.5)


def _cubic(t: np.ndarray) -> list[np.ndarray]:
    """Keys' cubic weights (a = -0.75) of the taps floor(x) - 1 .. floor(x) + 2, t = x - floor(x)."""
    a = CUBIC_A
    return [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]


def grid_axis_taps(x: np.ndarray, length: int, mode: str, padding: str, align_corners: bool):
    """The taps one axis contributes at pixel coordinates ``x``: (index, weight, valid) arrays; an invalid
    tap (outside the input with zeros padding) reads 0."""
    lo, hi = _grid_borders(length, align_corners)
    if mode == "nearest":
        x = np.rint(x).astype(F32)
    out = (x < lo) | (x > hi)
    if mode == "cubic":  # PyTorch's bicubic (and ONNX Runtime's) pads each tap, not the coordinate
        out = np.zeros_like(out)
    if padding == "border":
        x = np.where(out, np.clip(x, 0, length - 1), x).astype(F32)
    elif padding == "reflection":
        x = np.where(out, grid_reflect(x, lo, hi), x).astype(F32)
    x = x.astype(np.float64)
    if mode == "nearest":
        taps = [(np.trunc(x).astype(np.int64), np.ones_like(x))]
    else:
        base = np.floor(x)
        t = x - base
        base = base.astype(np.int64)
        if mode == "linear":
            taps = [(base, 1 - t), (base + 1, t)]
        else:
            taps = [(base + k - 1, w) for k, w in enumerate(_cubic(t))]
    result = []
    for idx, w in taps:
        if padding == "zeros":
            valid = (idx >= 0) & (idx < length)
        elif padding == "border":
            idx, valid = np.clip(idx, 0, length - 1), np.ones(idx.shape, bool)
        else:
            idx = np.trunc(grid_reflect(idx, lo, hi)).astype(np.int64)
            idx, valid = np.clip(idx, 0, length - 1), np.ones(idx.shape, bool)
        result.append((np.where(valid, idx, 0), w, valid))
    return result


@register("GridSample")
def grid_sample(node, xs):
    reason = grid_sample_unsupported(node)
    if reason is not None:
        raise NotImplementedError(reason)
    x, grid = xs[0], np.asarray(xs[1])
    spatial = x.shape[2:]
    r = len(spatial)
    if grid.ndim != r + 2 or grid.shape[0] != x.shape[0] or grid.shape[-1] != r:
        raise ValueError(f"GridSample grid of shape {grid.shape} for an input of shape {x.shape}")
    mode = GRID_MODES[node.attr("mode", "linear")]
    padding = node.attr("padding_mode", "zeros")
    corners = bool(node.attr("align_corners", 0))
    n_out = grid.shape[1:-1]
    # spatial axis d reads grid component r - 1 - d (the grid lists x, y, z: the last axis first)
    axes = [grid_axis_taps(grid_denormalize(grid[..., r - 1 - d], spatial[d], corners), spatial[d], mode,
                           padding, corners) for d in range(r)]
    xt = np.moveaxis(x, 1, -1).astype(np.float64)  # (N, *spatial, C)
    batch = np.arange(x.shape[0]).reshape((-1,) + (1,) * len(n_out))
    acc = np.zeros((x.shape[0], *n_out, x.shape[1]), np.float64)
    for combo in np.ndindex(*(len(a) for a in axes)):
        idx = [axes[d][k][0] for d, k in enumerate(combo)]
        w = np.prod([axes[d][k][1] for d, k in enumerate(combo)], axis=0)
        valid = np.all([axes[d][k][2] for d, k in enumerate(combo)], axis=0)
        acc += xt[(batch, *idx)] * np.where(valid, w, 0.0)[..., None]
    return [np.ascontiguousarray(np.moveaxis(acc, -1, 1).astype(x.dtype))]


# --- AffineGrid -------------------------------------------------------------------------------------

def affine_base_grid(spatial: tuple[int, ...], align_corners: bool) -> list[np.ndarray]:
    """The normalised coordinates of the pixel centres along each spatial axis (the corners' centres are
    -1 and 1 with ``align_corners``, else the corners' outer edges are)."""
    axes = []
    for n in spatial:
        i = np.arange(n, dtype=np.float64)
        if align_corners:
            axes.append(np.zeros(n) - 1.0 if n == 1 else i * (2.0 / (n - 1)) - 1.0)
        else:
            axes.append((2.0 * i + 1.0) / n - 1.0)
    return axes


@register("AffineGrid")
def affine_grid(node, xs):
    theta, size = np.asarray(xs[0]), [int(s) for s in np.asarray(xs[1]).reshape(-1)]
    r = len(size) - 2
    if r not in (2, 3) or theta.shape != (size[0], r, r + 1):
        raise ValueError(f"AffineGrid theta of shape {theta.shape} for size {size}")
    spatial = tuple(size[2:])
    base = np.meshgrid(*affine_base_grid(spatial, bool(node.attr("align_corners", 0))), indexing="ij")
    # homogeneous coordinates in the grid's order: x (last axis), y, (z), 1
    homo = np.stack([base[r - 1 - k] for k in range(r)] + [np.ones(spatial)], axis=-1)
    grid = np.einsum("...k,njk->n...j", homo, theta.astype(np.float64))
    return [np.ascontiguousarray(grid.astype(theta.dtype))]


# --- RoiAlign ---------------------------------------------------------------------------------------

ROI_MODES = ("avg", "max")
ROI_COORDINATES = ("half_pixel", "output_half_pixel")


def roi_align_unsupported(node: Node) -> str | None:
    if node.attr("mode", "avg") not in ROI_MODES:
        return f"RoiAlign mode '{node.attr('mode')}' is not supported (avg and max are)"
    if node.attr("coordinate_transformation_mode", "half_pixel") not in ROI_COORDINATES:
        return f"RoiAlign coordinate_transformation_mode '{node.attr('coordinate_transformation_mode')}'"
    return None


def roi_bilinear(plane_shape: tuple[int, int], y: np.ndarray, x: np.ndarray):
    """Detectron's bilinear sample at (y, x): the four corner indices (flat, into an H x W plane) and
    weights; a sample more than one pixel outside weighs 0, the rest clamp to the edge."""
    h, w = plane_shape
    y, x = np.asarray(y, F32), np.asarray(x, F32)
    dead = (y < F32(-1)) | (y > F32(h)) | (x < F32(-1)) | (x > F32(w))
    y, x = np.maximum(y, F32(0)), np.maximum(x, F32(0))
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    y_edge, x_edge = y0 >= h - 1, x0 >= w - 1
    y0, x0 = np.where(y_edge, h - 1, y0), np.where(x_edge, w - 1, x0)
    y1, x1 = np.where(y_edge, y0, y0 + 1), np.where(x_edge, x0, x0 + 1)
    y, x = np.where(y_edge, y0.astype(F32), y), np.where(x_edge, x0.astype(F32), x)
    ly, lx = y - y0.astype(F32), x - x0.astype(F32)
    hy, hx = F32(1) - ly, F32(1) - lx
    pos = [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1]
    wts = [hy * hx, hy * lx, ly * hx, ly * lx]
    return [np.where(dead, 0, p) for p in pos], [np.where(dead, F32(0), q).astype(F32) for q in wts]


@register("RoiAlign")
def roi_align(node, xs):
    reason = roi_align_unsupported(node)
    if reason is not None:
        raise NotImplementedError(reason)
    x, rois, batch = xs[0], np.asarray(xs[1], F32), np.asarray(xs[2]).astype(np.int64).reshape(-1)
    n, c, h, w = x.shape
    oh, ow = int(node.attr("output_height", 1)), int(node.attr("output_width", 1))
    ratio = int(node.attr("sampling_ratio", 0))
    scale = F32(node.attr("spatial_scale", 1.0))
    half = node.attr("coordinate_transformation_mode", "half_pixel") == "half_pixel"
    use_max = node.attr("mode", "avg") == "max"
    if rois.ndim != 2 or rois.shape[1] != 4 or rois.shape[0] != batch.size:
        raise ValueError(f"RoiAlign rois of shape {rois.shape} with {batch.size} batch indices")
    if ((batch < 0) | (batch >= n)).any():
        raise IndexError(f"RoiAlign batch index {int(batch[(batch < 0) | (batch >= n)][0])} is out of range "
                         f"for a batch of {n}")
    y = np.zeros((batch.size, c, oh, ow), np.float64)
    offset = F32(0.5) if half else F32(0)
    for k in range(batch.size):
        x0, y0, x1, y1 = (rois[k, i] * scale - offset for i in range(4))
        rw, rh = F32(x1 - x0), F32(y1 - y0)
        if not half:  # malformed boxes become 1 x 1
            rw, rh = max(rw, F32(1)), max(rh, F32(1))
        bh, bw = F32(rh / F32(oh)), F32(rw / F32(ow))
        gh = ratio if ratio > 0 else int(np.ceil(rh / F32(oh)))
        gw = ratio if ratio > 0 else int(np.ceil(rw / F32(ow)))
        if gh <= 0 or gw <= 0:  # an empty box: nothing sampled, the bins are 0
            continue
        count = gh * gw
        ph, iy = np.arange(oh, dtype=F32), np.arange(gh, dtype=F32)
        pw, ix = np.arange(ow, dtype=F32), np.arange(gw, dtype=F32)
        sy = y0 + ph[:, None] * bh + (iy[None, :] + F32(0.5)) * bh / F32(gh)  # (oh, gh)
        sx = x0 + pw[:, None] * bw + (ix[None, :] + F32(0.5)) * bw / F32(gw)  # (ow, gw)
        yy = np.broadcast_to(sy[:, None, :, None], (oh, ow, gh, gw))
        xx = np.broadcast_to(sx[None, :, None, :], (oh, ow, gh, gw))
        pos, wts = roi_bilinear((h, w), yy, xx)
        plane = x[batch[k]].reshape(c, h * w).astype(np.float64)
        terms = [plane[:, p] * q.astype(np.float64) for p, q in zip(pos, wts)]  # (c, oh, ow, gh, gw) each
        if use_max:
            corners = np.maximum(np.maximum(terms[0], terms[1]), np.maximum(terms[2], terms[3]))
            y[k] = corners.max(axis=(3, 4))
        else:
            y[k] = (terms[0] + terms[1] + terms[2] + terms[3]).sum(axis=(3, 4)) / count
    return [y.astype(x.dtype)]


# --- CenterCropPad ----------------------------------------------------------------------------------

def center_crop_pad_begin(node: Node, in_shape: tuple[int, ...], shape) -> tuple[list[int], list[int]]:
    """(output shape, begin) of a CenterCropPad: output position o along axis d reads input o - begin[d];
    a crop starts (in - out) // 2 in, a pad puts (out - in) // 2 zeros before (the odd one goes last)."""
    rank = len(in_shape)
    axes = node.attr("axes")
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    shape = [int(s) for s in np.asarray(shape).reshape(-1)]
    if len(shape) != len(axes):
        raise ValueError(f"CenterCropPad has {len(shape)} sizes for {len(axes)} axes")
    out, begin = list(in_shape), [0] * rank
    for a, s in zip(axes, shape):
        if s < 0:
            raise ValueError(f"CenterCropPad size {s} of axis {a} is negative")
        out[a] = s
        begin[a] = (s - in_shape[a]) // 2 if s >= in_shape[a] else -((in_shape[a] - s) // 2)
    return out, begin


@register("CenterCropPad")
def center_crop_pad(node, xs):
    x = xs[0]
    out, begin = center_crop_pad_begin(node, x.shape, xs[1])
    y = np.zeros(out, x.dtype)
    src = tuple(slice(max(0, -b), max(0, -b) + min(o, n - max(0, -b), o - max(0, b)))
                for o, n, b in zip(out, x.shape, begin))
    dst = tuple(slice(max(0, b), max(0, b) + (s.stop - s.start)) for b, s in zip(begin, src))
    y[dst] = x[src]
    return [y]

"""Numpy semantics of the neural-network ops beyond Conv and the pools of ``ops.py``: ConvTranspose, LpPool,
LRN, Col2Im, MaxUnpool, ReverseSequence, Det and training-mode BatchNormalization.

Where ONNX Runtime and the ONNX reference disagree, the ONNX reference (and the expected outputs of the
backend node tests) wins: MaxUnpool's indices address the inferred (unpadded) shape even when an
``output_shape`` is given, and ConvTranspose's ``output_shape`` splits its total padding as the spec's
formula says (floor division). LpPool is the true p-norm of each window (pads hold zeros, and add nothing).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ir import Node
from ..opinfo import WindowGeometry, window_geometry
from .ops import register

# --- ConvTranspose ----------------------------------------------------------------------------------


#: ConvTranspose over the spatial axes, the fields of a pooling window's geometry: output position
#: ``i * stride + k * dilation - pads_begin``, ``out`` the output's spatial shape
TransposeGeometry = WindowGeometry


def conv_transpose_geometry(node: Node, spatial: tuple[int, ...],
                            kernel: tuple[int, ...]) -> TransposeGeometry:
    """Resolve a ConvTranspose's pads and output sizes (``output_shape``, ``output_padding``, ``auto_pad``),
    as the ONNX spec defines them: with an ``output_shape`` (or SAME auto padding, whose output is
    ``input * stride``) and no explicit pads, the total padding is split SAME_UPPER: begin = total // 2,
    otherwise begin = total - total // 2 (floor division, so a negative total pads the end)."""
    d = len(spatial)
    strides = tuple(int(s) for s in node.attr("strides", (1,) * d))
    dilations = tuple(int(s) for s in node.attr("dilations", (1,) * d))
    out_pad = tuple(int(s) for s in node.attr("output_padding", (0,) * d))
    auto_pad = node.attr("auto_pad", "NOTSET")
    pads = node.attr("pads")
    output_shape = node.attr("output_shape")
    if output_shape is not None:
        output_shape = tuple(int(s) for s in output_shape)[-d:]
    extent = [(k - 1) * dl + 1 for k, dl in zip(kernel, dilations)]
    natural = [s * (n - 1) + op + e for s, n, op, e in zip(strides, spatial, out_pad, extent)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") or (pads is None and output_shape is not None):
        target = output_shape or tuple(n * s for n, s in zip(spatial, strides))
        total = [nat - t for nat, t in zip(natural, target)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
        return TransposeGeometry(tuple(kernel), strides, dilations, tuple(begin), tuple(end), tuple(target))
    pads = (0,) * (2 * d) if pads is None or auto_pad == "VALID" else tuple(int(p) for p in pads)
    begin, end = pads[:d], pads[d:]
    out = output_shape or tuple(nat - b - e for nat, b, e in zip(natural, begin, end))
    return TransposeGeometry(tuple(kernel), strides, dilations, tuple(begin), tuple(end), tuple(out))


@register("ConvTranspose")
def conv_transpose(node, xs):
    """``Y[n, g*Mg + m, i*s + k*d - pb] += X[n, g*Cg + c, i] * W[g*Cg + c, m, k]`` (+ B), by a
    scatter-add of each kernel tap's strided slice (in float64)."""
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    n, c = x.shape[:2]
    groups = int(node.attr("group", 1))
    cg, mg = c // groups, w.shape[1]
    kernel = tuple(w.shape[2:])
    d = len(kernel)
    geo = conv_transpose_geometry(node, tuple(x.shape[2:]), kernel)
    # the padded output: every tap lands inside it (negative end pads are cropped at the end)
    full = tuple(s * (i - 1) + (k - 1) * dl + 1 for s, i, k, dl in zip(geo.strides, x.shape[2:], kernel,
                                                                      geo.dilations))
    size = tuple(max(f, pb + o) for f, pb, o in zip(full, geo.pads_begin, geo.out))
    shift = tuple(max(0, -pb) for pb in geo.pads_begin)  # a negative begin pad: zeros before the taps
    y = np.zeros((n, groups, mg) + tuple(s + sh for s, sh in zip(size, shift)))
    xg = x.astype(np.float64).reshape((n, groups, cg) + x.shape[2:])
    wg = w.astype(np.float64).reshape((groups, cg, mg) + kernel)
    for tap in np.ndindex(*kernel):
        contrib = np.einsum("ngc...,gcm->ngm...", xg, wg[(slice(None), slice(None), slice(None)) + tap])
        index = tuple(slice(sh + k * dl, sh + k * dl + s * (i - 1) + 1, s)
                      for k, dl, s, i, sh in zip(tap, geo.dilations, geo.strides, x.shape[2:], shift))
        y[(slice(None),) * 3 + index] += contrib
    crop = tuple(slice(sh + pb, sh + pb + o) for sh, pb, o in zip(shift, geo.pads_begin, geo.out))
    y = y[(slice(None),) * 3 + crop].reshape((n, groups * mg) + geo.out)
    if b is not None:
        y = y + b.astype(np.float64).reshape((1, -1) + (1,) * d)
    return [y.astype(x.dtype)]


# --- LpPool, LRN ------------------------------------------------------------------------------------


@register("LpPool")
def lp_pool(node, xs):
    """``(sum over the window of |x|^p)^(1/p)``; padded positions hold 0. Computed in float64."""
    x = xs[0]
    p = float(node.attr("p", 2))
    kernel = tuple(node.attr("kernel_shape"))
    d = len(kernel)
    geo = window_geometry(node, tuple(x.shape[2:]), kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
    extra = [max(0, (o - 1) * s + (k - 1) * dl + 1 - (size + pb + pe))
             for o, s, k, dl, size, pb, pe in zip(geo.out, geo.strides, kernel, geo.dilations, x.shape[2:],
                                                   geo.pads_begin, geo.pads_end)]
    pad_width = [(0, 0), (0, 0)] + [(pb, pe + e) for pb, pe, e in zip(geo.pads_begin, geo.pads_end, extra)]
    xp = np.pad(np.abs(x.astype(np.float64)) ** p, pad_width)
    extent = tuple((k - 1) * dl + 1 for k, dl in zip(kernel, geo.dilations))
    index = tuple(slice(0, o * s, s) for o, s in zip(geo.out, geo.strides))
    index += tuple(slice(None, None, dl) for dl in geo.dilations)
    win = sliding_window_view(xp, extent, axis=tuple(range(2, 2 + d)))[(slice(None), slice(None)) + index]
    total = win.sum(axis=tuple(range(2 + d, 2 + 2 * d)))
    return [(total ** (1.0 / p)).astype(x.dtype)]


def lrn_window(size: int) -> tuple[int, int]:
    """The channels LRN sums for channel c: [c - before, c + after] (ONNX: floor and ceil of (size-1)/2)."""
    return (size - 1) // 2, size // 2


@register("LRN")
def lrn(node, xs):
    """``x / (bias + alpha / size * sum of x^2 over the nearby channels) ^ beta`` (float64)."""
    x = xs[0]
    size = int(node.attr("size"))
    alpha, beta, bias = (float(node.attr(a, v)) for a, v in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    before, after = lrn_window(size)
    sq = x.astype(np.float64) ** 2
    c = x.shape[1]
    padded = np.pad(sq, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
    total = sum(padded[:, j:j + c] for j in range(size))
    return [(x / (bias + alpha / size * total) ** beta).astype(x.dtype)]


# --- Col2Im, MaxUnpool ------------------------------------------------------------------------------


def col2im_blocks(image: tuple[int, ...], block: tuple[int, ...], strides, dilations,
                  pads) -> tuple[int, ...]:
    """How many sliding blocks fit along each spatial axis of the padded image."""
    d = len(image)
    return tuple((image[i] + pads[i] + pads[i + d] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1
                 for i in range(d))


@register("Col2Im")
def col2im(node, xs):
    """Sum each column of ``x`` ([N, C * prod(block), L]) back into the blocks of the image it came from."""
    x = xs[0]
    image = tuple(int(v) for v in xs[1])
    block = tuple(int(v) for v in xs[2])
    d = len(image)
    strides = tuple(node.attr("strides", (1,) * d))
    dilations = tuple(node.attr("dilations", (1,) * d))
    pads = tuple(node.attr("pads", (0,) * (2 * d)))
    blocks = col2im_blocks(image, block, strides, dilations, pads)
    n, ck, length = x.shape
    k = int(np.prod(block))
    if ck % k or length != int(np.prod(blocks)):
        raise ValueError(f"Col2Im input shape {x.shape} does not match image {image} and block {block}")
    c = ck // k
    padded = tuple(image[i] + pads[i] + pads[i + d] for i in range(d))
    y = np.zeros((n, c) + padded, dtype=np.float64)
    cols = x.astype(np.float64).reshape((n, c) + block + blocks)
    for tap in np.ndindex(*block):
        index = tuple(slice(t * dl, t * dl + s * (b - 1) + 1, s)
                      for t, dl, s, b in zip(tap, dilations, strides, blocks))
        y[(slice(None), slice(None)) + index] += cols[(slice(None), slice(None)) + tap]
    crop = tuple(slice(pads[i], pads[i] + image[i]) for i in range(d))
    return [y[(slice(None), slice(None)) + crop].astype(x.dtype)]


def max_unpool_shape(node: Node, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape MaxUnpool's indices address: (in - 1) * stride - pads + kernel per spatial axis."""
    kernel = tuple(node.attr("kernel_shape"))
    d = len(kernel)
    strides = tuple(node.attr("strides", (1,) * d))
    pads = tuple(node.attr("pads", (0,) * (2 * d)))
    return tuple(shape[:2]) + tuple((shape[2 + i] - 1) * strides[i] - pads[i] - pads[i + d] + kernel[i]
                                    for i in range(d))


@register("MaxUnpool")
def max_unpool(node, xs):
    """Zeros of the inferred shape with ``x`` scattered to the flat positions ``indices`` (later writes
    win), then placed at the start of ``output_shape`` when one is given (as the ONNX reference does)."""
    x, indices = xs[0], xs[1]
    inferred = max_unpool_shape(node, x.shape)
    flat = np.zeros(int(np.prod(inferred)), dtype=x.dtype)
    idx = indices.reshape(-1).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= flat.size):
        raise ValueError("MaxUnpool index out of range")
    flat[idx] = x.reshape(-1)
    y = flat.reshape(inferred)
    if len(xs) > 2 and xs[2] is not None:
        shape = tuple(int(v) for v in xs[2])
        out = np.zeros(shape, dtype=x.dtype)
        out[tuple(slice(0, s) for s in inferred)] = y
        y = out
    return [y]


# --- ReverseSequence, Det, BatchNormalization ------------------------------------------------------


@register("ReverseSequence")
def reverse_sequence(node, xs):
    """Reverse the first ``sequence_lens[b]`` steps along ``time_axis`` of each batch item ``b``."""
    x, lens = xs[0], xs[1]
    batch_axis, time_axis = int(node.attr("batch_axis", 1)), int(node.attr("time_axis", 0))
    y = np.array(x, copy=True)
    steps = x.shape[time_axis]
    for b, n in enumerate(lens.reshape(-1)):
        n = int(n)
        if n < 0 or n > steps:
            raise ValueError(f"ReverseSequence length {n} is outside [0, {steps}]")
        src = [slice(None)] * x.ndim
        dst = [slice(None)] * x.ndim
        src[batch_axis] = dst[batch_axis] = b
        src[time_axis] = slice(n - 1, None, -1) if n else slice(0, 0)
        dst[time_axis] = slice(0, n)
        y[tuple(dst)] = x[tuple(src)]
    return [y]


@register("Det")
def det(node, xs):
    """The determinant of each trailing square matrix (LU in float64)."""
    x = xs[0]
    return [np.linalg.det(x.astype(np.float64)).astype(x.dtype)]


@register("BatchNormalization")
def batch_norm(node, xs):
    """Inference: ``(x - mean) / sqrt(var + eps) * scale + bias`` with the given statistics. Training mode
    (``training_mode=1``): normalised with the batch's own mean and (biased) variance over every axis but
    1, and outputs 1 and 2 are the running statistics ``mean * momentum + batch_mean * (1 - momentum)``
    (and the same for the variance)."""
    x, scale, bias, mean, var = xs[:5]
    eps = np.float32(node.attr("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if not node.attr("training_mode", 0):
        inv = (scale / np.sqrt(var + eps)).astype(x.dtype)
        y = (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)
        return [y.astype(x.dtype, copy=False)] + [None] * (len(node.outputs) - 1)
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    batch_mean = x64.mean(axis=axes)
    batch_var = x64.var(axis=axes)
    momentum = float(node.attr("momentum", 0.9))
    y = (x64 - batch_mean.reshape(shape)) / np.sqrt(batch_var.reshape(shape) + float(eps))
    y = y * scale.astype(np.float64).reshape(shape) + bias.astype(np.float64).reshape(shape)
    running_mean = mean.astype(np.float64) * momentum + batch_mean * (1 - momentum)
    running_var = var.astype(np.float64) * momentum + batch_var * (1 - momentum)
    outs = [y.astype(x.dtype), running_mean.astype(mean.dtype), running_var.astype(var.dtype)]
    return outs[:len(node.outputs)]

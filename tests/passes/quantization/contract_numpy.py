"""An independent re-implementation of the integer op contract (``lowering/quantized.py``'s docstring),
written from the formulas and nothing else: Python integers (no overflow anywhere, so the int32 wrap of
the accumulator is explicit), plain loops over windows, padding with the input's zero point.

Slow on purpose; tests use small tensors. Deliberately imports nothing from ``lowering``.
"""

from __future__ import annotations

import itertools

import numpy as np

QRANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


def ints(a) -> np.ndarray:
    """An object array of Python ints (exact arithmetic)."""
    return np.vectorize(int, otypes=[object])(np.asarray(a))


def wrap32(v: int) -> int:
    return ((v + 2**31) % 2**32) - 2**31


def rounding_shift(t: int, m: int, shift: int) -> int:
    """floor((t * m + 2^(shift-1)) / 2^shift): round half up (toward +inf)."""
    return (t * m + 2 ** (shift - 1)) // 2**shift


def finish(y: int, out_zp: int, cmin: int, cmax: int, lut, qmin: int) -> int:
    y = min(max(y + out_zp, cmin), cmax)
    return int(lut[y - qmin]) if lut is not None else y


def _channel(values, c):
    values = list(values)
    return values[c] if len(values) > 1 else values[0]


def qconv(x, w, bias, *, x_zp, w_zp, out_zp, multiplier, shift, clamp, out_dtype, strides, pads,
          dilations, group=1, lut=None):
    """2-D QConv by loops; the input is padded with ``x_zp`` (so padding contributes 0)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    pt, pl, pb, pr = pads
    padded = np.full((n, c, h + pt + pb, wd + pl + pr), x_zp, dtype=object)
    padded[:, :, pt:pt + h, pl:pl + wd] = ints(x)
    wi = ints(w)
    oh = (h + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wd + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
    qmin = QRANGE[np.dtype(out_dtype)][0]
    y = np.zeros((n, m, oh, ow), dtype=object)
    per_group = m // group
    for b, o, i, j in itertools.product(range(n), range(m), range(oh), range(ow)):
        g = o // per_group
        acc = 0
        for ci, a, e in itertools.product(range(cg), range(kh), range(kw)):
            xv = padded[b, g * cg + ci, i * sh + a * dh, j * sw + e * dw]
            acc += (xv - x_zp) * (wi[o, ci, a, e] - w_zp)
        t = wrap32(acc) + (int(bias[o]) if bias is not None else 0)
        r = rounding_shift(t, _channel(multiplier, o), _channel(shift, o))
        y[b, o, i, j] = finish(r, out_zp, clamp[0], clamp[1], lut, qmin)
    return y.astype(out_dtype)


def qmatmul(a, b, bias, *, a_zp, b_zp, out_zp, multiplier, shift, clamp, out_dtype, lut=None):
    """QMatMul with numpy's batch broadcasting; multiplier/shift per tensor or per column."""
    ai, bi = ints(a) - a_zp, ints(b) - b_zp
    acc = np.matmul(ai, bi)  # object dtype: exact Python ints
    qmin = QRANGE[np.dtype(out_dtype)][0]
    out = np.empty(acc.shape, dtype=object)
    for idx in np.ndindex(acc.shape):
        col = idx[-1]
        t = wrap32(acc[idx]) + (int(bias[col]) if bias is not None else 0)
        r = rounding_shift(t, _channel(multiplier, col), _channel(shift, col))
        out[idx] = finish(r, out_zp, clamp[0], clamp[1], lut, qmin)
    return out.astype(out_dtype)


def qadd(a, b, *, a_zp, b_zp, a_mult, b_mult, shift, out_zp, clamp, out_dtype, lut=None):
    qmin = QRANGE[np.dtype(out_dtype)][0]
    ai, bi = np.broadcast_arrays(ints(a), ints(b))
    out = np.empty(ai.shape, dtype=object)
    for idx in np.ndindex(ai.shape):
        t = a_mult * (ai[idx] - a_zp) + b_mult * (bi[idx] - b_zp)
        out[idx] = finish((t + 2 ** (shift - 1)) // 2**shift, out_zp, clamp[0], clamp[1], lut, qmin)
    return out.astype(out_dtype)


def qmul(a, b, *, a_zp, b_zp, multiplier, shift, out_zp, clamp, out_dtype, lut=None):
    qmin = QRANGE[np.dtype(out_dtype)][0]
    ai, bi = np.broadcast_arrays(ints(a), ints(b))
    out = np.empty(ai.shape, dtype=object)
    for idx in np.ndindex(ai.shape):
        r = rounding_shift((ai[idx] - a_zp) * (bi[idx] - b_zp), multiplier, shift)
        out[idx] = finish(r, out_zp, clamp[0], clamp[1], lut, qmin)
    return out.astype(out_dtype)


def qaverage_pool(x, *, kernel, strides, pads, x_zp, out_zp, multiplier, shift, clamp, out_dtype):
    """2-D QAveragePool by loops over windows of the input padded with ``x_zp``."""
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, strides
    pt, pl, pb, pr = pads
    padded = np.full((n, c, h + pt + pb, wd + pl + pr), x_zp, dtype=object)
    padded[:, :, pt:pt + h, pl:pl + wd] = ints(x)
    oh, ow = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    qmin = QRANGE[np.dtype(out_dtype)][0]
    y = np.zeros((n, c, oh, ow), dtype=object)
    for b, ch, i, j in itertools.product(range(n), range(c), range(oh), range(ow)):
        total = sum(padded[b, ch, i * sh + a, j * sw + e] - x_zp for a in range(kh) for e in range(kw))
        r = rounding_shift(total, multiplier, shift)
        y[b, ch, i, j] = finish(r, out_zp, clamp[0], clamp[1], None, qmin)
    return y.astype(out_dtype)


def qlut(x, table, out_dtype):
    qmin = QRANGE[np.dtype(x.dtype)][0]
    return np.array([table[int(v) - qmin] for v in x.reshape(-1)], dtype=out_dtype).reshape(x.shape)


def encode_multiplier(real: float) -> tuple[int, int]:
    """``real ~ m * 2^-shift`` with m in [2^30, 2^31), found by search (independent of frexp)."""
    shift = 0
    while real * 2**shift < 2**30:
        shift += 1
    m = int(np.floor(real * 2**shift + 0.5))
    if m >= 2**31:
        m, shift = m // 2, shift - 1
    return m, shift

"""Numpy semantics of QuantizeLinear/DequantizeLinear and the integer ops of ``lowering.quantized``.

Registered into ``ops.REGISTRY``. These are the executable definition the cpu target's integer kernels
and the accelerator simulator must match bit for bit.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..opinfo import DOMAIN, window_geometry
from ..quantized import finish, rounding_shift, wrap_int32
from .ops import ONNX_TYPE_CODES, _conv, register


def _per_axis(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Reshape a per-axis parameter (scale, zero point) to broadcast along ``axis`` of an ndim tensor."""
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = param.size
    return param.reshape(shape)


@register("QuantizeLinear")
def quantize_linear(node, xs):
    x, scale = xs[0], xs[1]
    zp = xs[2] if len(xs) > 2 and xs[2] is not None else None
    out_dtype = zp.dtype if zp is not None else np.dtype(ONNX_TYPE_CODES.get(node.attr("output_dtype", 2)))
    axis = node.attr("axis", 1)
    s = _per_axis(scale.astype(np.float32), x.ndim, axis)
    z = _per_axis(zp.astype(np.int64), x.ndim, axis) if zp is not None else np.int64(0)
    info = np.iinfo(out_dtype)
    q = np.rint(x.astype(np.float32) / s).astype(np.int64) + z  # rint: round half to even
    return [np.clip(q, info.min, info.max).astype(out_dtype)]


@register("DequantizeLinear")
def dequantize_linear(node, xs):
    x, scale = xs[0], xs[1]
    zp = xs[2] if len(xs) > 2 and xs[2] is not None else None
    axis = node.attr("axis", 1)
    s = _per_axis(scale.astype(np.float32), x.ndim, axis)
    z = _per_axis(zp.astype(np.int64), x.ndim, axis) if zp is not None else np.int64(0)
    return [((x.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)]


def _requant(node, t: np.ndarray, channel_axis: int, dtype) -> np.ndarray:
    mult = np.asarray(node.attr("multiplier"), np.int64)
    shift = np.asarray(node.attr("shift"), np.int64)
    if mult.size > 1:
        shape = [1] * t.ndim
        shape[channel_axis] = mult.size
        mult, shift = mult.reshape(shape), shift.reshape(shape)
    y = rounding_shift(t, mult, shift)
    return finish(y, node.attr("out_zero_point", 0), node.attr("clamp_min"), node.attr("clamp_max"), dtype,
                  node.attr("lut"))


@register("QConv", domain=DOMAIN)
def qconv(node, xs):
    x = xs[0].astype(np.int64) - node.attr("x_zero_point", 0)
    w = xs[1].astype(np.int64) - node.attr("w_zero_point", 0)
    acc = wrap_int32(_conv(x, w, None, node))
    if len(xs) > 2 and xs[2] is not None:
        acc = acc + xs[2].astype(np.int64).reshape((1, -1) + (1,) * (acc.ndim - 2))
    return [_requant(node, acc, 1, node.output.type.dtype.numpy)]


@register("QMatMul", domain=DOMAIN)
def qmatmul(node, xs):
    a = xs[0].astype(np.int64) - node.attr("a_zero_point", 0)
    b = xs[1].astype(np.int64) - node.attr("b_zero_point", 0)
    acc = wrap_int32(np.matmul(a, b))
    if len(xs) > 2 and xs[2] is not None:
        acc = acc + xs[2].astype(np.int64)
    return [_requant(node, acc, acc.ndim - 1, node.output.type.dtype.numpy)]


@register("QAdd", domain=DOMAIN)
def qadd(node, xs):
    a = xs[0].astype(np.int64) - node.attr("a_zero_point", 0)
    b = xs[1].astype(np.int64) - node.attr("b_zero_point", 0)
    shift = node.attr("shift")
    t = a * node.attr("a_multiplier") + b * node.attr("b_multiplier") + (1 << (shift - 1))
    return [finish(t >> shift, node.attr("out_zero_point", 0), node.attr("clamp_min"),
                   node.attr("clamp_max"), node.output.type.dtype.numpy, node.attr("lut"))]


@register("QMul", domain=DOMAIN)
def qmul(node, xs):
    a = xs[0].astype(np.int64) - node.attr("a_zero_point", 0)
    b = xs[1].astype(np.int64) - node.attr("b_zero_point", 0)
    y = rounding_shift(a * b, node.attr("multiplier")[0], node.attr("shift")[0])
    return [finish(y, node.attr("out_zero_point", 0), node.attr("clamp_min"), node.attr("clamp_max"),
                   node.output.type.dtype.numpy, node.attr("lut"))]


@register("QAveragePool", domain=DOMAIN)
def qaverage_pool(node, xs):
    x = xs[0].astype(np.int64) - node.attr("x_zero_point", 0)
    d = x.ndim - 2
    if node.attr("global", 0):
        total = x.sum(axis=tuple(range(2, x.ndim)), keepdims=True)
    else:
        kernel = tuple(node.attr("kernel_shape"))
        geo = window_geometry(node, tuple(x.shape[2:]), kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
        xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(geo.pads_begin, geo.pads_end)))
        win = sliding_window_view(xp, kernel, axis=tuple(range(2, 2 + d)))
        index = tuple(slice(0, o * s, s) for o, s in zip(geo.out, geo.strides))
        total = win[(slice(None), slice(None)) + index].sum(axis=tuple(range(2 + d, 2 + 2 * d)))
    y = rounding_shift(total, node.attr("multiplier")[0], node.attr("shift")[0])
    return [finish(y, node.attr("out_zero_point", 0), node.attr("clamp_min"), node.attr("clamp_max"),
                   node.output.type.dtype.numpy)]


@register("QLut", domain=DOMAIN)
def qlut(node, xs):
    x = xs[0]
    qmin = np.iinfo(x.dtype).min
    table = np.asarray(node.attr("lut"), np.int64)
    return [table[x.astype(np.int64) - qmin].astype(node.output.type.dtype.numpy)]

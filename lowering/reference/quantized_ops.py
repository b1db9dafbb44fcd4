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


def _qdq_param(param: np.ndarray, x: np.ndarray, node) -> np.ndarray:
    """A QuantizeLinear/DequantizeLinear scale or zero point broadcast against ``x``: per tensor, per axis,
    or blocked (``block_size`` > 0: the parameter has x's shape with ceil(size / block_size) entries along
    ``axis``, each covering block_size consecutive elements)."""
    axis, block = node.attr("axis", 1), node.attr("block_size", 0) or 0
    if not block:
        return _per_axis(param, x.ndim, axis)
    axis %= x.ndim
    return np.repeat(param, block, axis=axis).take(np.arange(x.shape[axis]), axis=axis)


@register("QuantizeLinear")
def quantize_linear(node, xs):
    x, scale = xs[0], xs[1]
    zp = xs[2] if len(xs) > 2 and xs[2] is not None else None
    out_dtype = zp.dtype if zp is not None else np.dtype(ONNX_TYPE_CODES.get(node.attr("output_dtype", 2)))
    s = _qdq_param(scale.astype(np.float32), x, node)
    z = _qdq_param(zp.astype(np.int64), x, node) if zp is not None else np.int64(0)
    info = np.iinfo(out_dtype)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = np.rint(x.astype(np.float32) / s)  # rint: round half to even
    # saturate in float before the integer cast (inf would be undefined there), NaN -> qmin like ORT
    r = np.where(np.isnan(r), -np.inf, r)
    r = np.clip(r, np.float64(info.min) - 2.0**40, np.float64(info.max) + 2.0**40)
    q = r.astype(np.int64) + z
    return [np.clip(q, info.min, info.max).astype(out_dtype)]


@register("DequantizeLinear")
def dequantize_linear(node, xs):
    x, scale = xs[0], xs[1]
    zp = xs[2] if len(xs) > 2 and xs[2] is not None else None
    s = _qdq_param(scale.astype(np.float32), x, node)
    z = _qdq_param(zp.astype(np.int64), x, node) if zp is not None else np.int64(0)
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
        _check_uniform_windows(node, tuple(x.shape[2:]), geo)
        xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(geo.pads_begin, geo.pads_end)))
        win = sliding_window_view(xp, kernel, axis=tuple(range(2, 2 + d)))
        index = tuple(slice(0, o * s, s) for o, s in zip(geo.out, geo.strides))
        total = win[(slice(None), slice(None)) + index].sum(axis=tuple(range(2 + d, 2 + 2 * d)))
    y = rounding_shift(total, node.attr("multiplier")[0], node.attr("shift")[0])
    return [finish(y, node.attr("out_zero_point", 0), node.attr("clamp_min"), node.attr("clamp_max"),
                   node.output.type.dtype.numpy)]


def _check_uniform_windows(node, spatial: tuple[int, ...], geo) -> None:
    """The contract's QAveragePool sums undilated windows that all lie inside the padded input (so every
    window counts the same number of elements); anything else is refused, not silently misread
    (``evaluate_node`` reports it as a ReferenceError naming the node)."""
    if any(d != 1 for d in geo.dilations):
        raise NotImplementedError(f"QAveragePool with dilations {geo.dilations} is not implemented (the "
                                  "contract's windows are undilated; fold_qdq leaves a dilated pool float)")
    for axis, (size, k, o, s, pb, pe) in enumerate(zip(spatial, geo.kernel, geo.out, geo.strides,
                                                         geo.pads_begin, geo.pads_end)):
        if (o - 1) * s + k > size + pb + pe:
            raise NotImplementedError(
                f"QAveragePool's ceil_mode windows run past the padded input along spatial "
                f"axis {axis} (the last of {o} windows of {k} at stride {s} ends at {(o - 1) * s + k}, the "
                f"padded input at {size + pb + pe}); the contract needs every window to count the same "
                "number of elements (pad the end explicitly instead)")


@register("QLut", domain=DOMAIN)
def qlut(node, xs):
    x = xs[0]
    qmin = np.iinfo(x.dtype).min
    table = np.asarray(node.attr("lut"), np.int64)
    return [table[x.astype(np.int64) - qmin].astype(node.output.type.dtype.numpy)]


# --- ONNX QOperator ops (standard domain and ONNX Runtime's com.microsoft domain) -------------------
#
# These define what ONNX Runtime's QOperator-format models compute. ONNX Runtime requantizes in float32
# (``rint(float32(acc) * float32(s_x * s_w / s_y))``, round half to even), and so do these; the folding
# pass rewrites them into the integer ops above, whose fixed-point requantization may differ by one step.

MS_DOMAIN = "com.microsoft"


def _param(xs, i, default=None):
    return xs[i] if len(xs) > i and xs[i] is not None else default


def _zero_point(xs, i, like: np.ndarray) -> np.ndarray:
    """An optional zero-point input (absent = 0 of the quantized tensor's type)."""
    return _param(xs, i, np.zeros((), like.dtype))


def _dequantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int = 1) -> np.ndarray:
    s = _per_axis(np.asarray(scale, np.float32), x.ndim, axis)
    z = _per_axis(np.asarray(zp, np.int64), x.ndim, axis)
    return ((x.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def _quantize(y: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    """QuantizeLinear, per tensor: ``saturate(rint(y / scale) + zp)`` in float32."""
    info = np.iinfo(zp.dtype)
    q = np.rint(y.astype(np.float32) / np.float32(scale.reshape(-1)[0])).astype(np.int64)
    return np.clip(q + int(zp.reshape(-1)[0]), info.min, info.max).astype(zp.dtype)


def _requantize_float(acc: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    """ONNX Runtime's requantization of an int32 accumulator: ``rint(float32(acc) * scale) + zp``,
    saturated (``scale`` float32, broadcast against ``acc``)."""
    info = np.iinfo(zp.dtype)
    z = int(zp.reshape(-1)[0])
    y = np.rint(wrap_int32(acc).astype(np.float32) * scale.astype(np.float32))
    return (np.clip(y, info.min - z, info.max - z).astype(np.int64) + z).astype(zp.dtype)


def _output_scale(s_in: np.ndarray, s_w: np.ndarray, s_out: np.ndarray) -> np.ndarray:
    """``s_in * s_w / s_out`` in float32, in ONNX Runtime's order of operations."""
    return (np.float32(s_in.reshape(-1)[0]) * s_w.astype(np.float32).reshape(-1)) / np.float32(
        s_out.reshape(-1)[0])


@register("QLinearConv")
def qlinear_conv(node, xs):
    """Inputs x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B?; w_scale/w_zp per tensor or per
    output channel."""
    x, sx, zx, w, sw, zw, sy, zy = xs[:8]
    m = w.shape[0]
    zw = np.broadcast_to(np.asarray(zw, np.int64).reshape(-1), (m,))
    acc = _conv(x.astype(np.int64) - int(zx.reshape(-1)[0]),
                w.astype(np.int64) - zw.reshape((m,) + (1,) * (w.ndim - 1)), None, node)
    bias = _param(xs, 8)
    if bias is not None:
        acc = acc + bias.astype(np.int64).reshape((1, m) + (1,) * (acc.ndim - 2))
    scale = np.broadcast_to(_output_scale(sx, sw, sy), (m,)).reshape((1, m) + (1,) * (acc.ndim - 2))
    return [_requantize_float(acc, scale, zy)]


def _matmul_operand(v: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    z = np.asarray(zp, np.int64)
    return v.astype(np.int64) - (_per_axis(z, v.ndim, axis) if z.size > 1 else z.reshape(()))


@register("QLinearMatMul")
def qlinear_matmul(node, xs):
    """Inputs a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp; b's parameters per tensor or per column."""
    a, sa, za, b, sb, zb, sy, zy = xs[:8]
    acc = np.matmul(_matmul_operand(a, za, -2), _matmul_operand(b, zb, -1))
    return [_requantize_float(acc, _output_scale(sa, sb, sy), zy)]


@register("MatMulInteger")
def matmul_integer(node, xs):
    """int32 ``(a - a_zp) @ (b - b_zp)``; a_zp per tensor or per row, b_zp per tensor or per column."""
    a, b = xs[0], xs[1]
    acc = np.matmul(_matmul_operand(a, _zero_point(xs, 2, a), -2),
                    _matmul_operand(b, _zero_point(xs, 3, b), -1))
    return [wrap_int32(acc).astype(np.int32)]


@register("ConvInteger")
def conv_integer(node, xs):
    """int32 convolution of ``x - x_zp`` and ``w - w_zp`` (w_zp per tensor or per output channel); the
    padding holds the zero point, so it contributes 0."""
    x, w = xs[0], xs[1]
    zw = np.asarray(_zero_point(xs, 3, w), np.int64).reshape(-1)
    zw = zw.reshape((-1,) + (1,) * (w.ndim - 1)) if zw.size > 1 else zw.reshape(())
    acc = _conv(x.astype(np.int64) - int(np.asarray(_zero_point(xs, 2, x)).reshape(-1)[0]),
                w.astype(np.int64) - zw, None, node)
    return [wrap_int32(acc).astype(np.int32)]


@register("DynamicQuantizeLinear")
def dynamic_quantize_linear(node, xs):
    """uint8 quantization over the range of ``x`` extended to include 0, in float32 as ONNX Runtime (and
    ONNX's reference) compute it: ``scale = (max - min) / 255`` (1 when the range is empty),
    ``zp = rint(clamp(0 - min / scale, 0, 255))``, ``y = saturate(rint(x / scale) + zp)``."""
    x = xs[0].astype(np.float32)
    lo = np.minimum(np.float32(0), x.min(initial=np.float32(0)))
    hi = np.maximum(np.float32(0), x.max(initial=np.float32(0)))
    scale = np.float32(1) if hi == lo else np.float32(hi - lo) / np.float32(255)
    zp = np.uint8(np.rint(np.clip(np.float32(0) - lo / scale, np.float32(0), np.float32(255))))
    y = _quantize(x, np.array(scale, np.float32), np.array(zp, np.uint8))
    return [y, np.array(scale, np.float32), np.array(zp, np.uint8)]


def _binary_q(xs):
    a, sa, za = xs[0], xs[1], _zero_point(xs, 2, xs[0])
    b, sb, zb = xs[3], xs[4], _zero_point(xs, 5, xs[3])
    return a, sa, za, b, sb, zb, xs[6], _zero_point(xs, 7, xs[0])


@register("QLinearAdd", domain=MS_DOMAIN)
def qlinear_add(node, xs):
    """``C = saturate(rint(sa/sc (a - za) + sb/sc (b - zb)) + zc)`` in float32 (MLAS's reference form)."""
    a, sa, za, b, sb, zb, sc, zc = _binary_q(xs)
    ratio_a = np.float32(sa.reshape(-1)[0]) / np.float32(sc.reshape(-1)[0])
    ratio_b = np.float32(sb.reshape(-1)[0]) / np.float32(sc.reshape(-1)[0])
    va = ratio_a * (a.astype(np.int64) - int(za.reshape(-1)[0])).astype(np.float32)
    vb = ratio_b * (b.astype(np.int64) - int(zb.reshape(-1)[0])).astype(np.float32)
    return [_requantize_float(np.rint(va + vb).astype(np.int64), np.ones((), np.float32), zc)]


@register("QLinearMul", domain=MS_DOMAIN)
def qlinear_mul(node, xs):
    """``C = saturate(rint((a - za)(b - zb) * sa sb / sc) + zc)`` in float32."""
    a, sa, za, b, sb, zb, sc, zc = _binary_q(xs)
    prod = (a.astype(np.int64) - int(za.reshape(-1)[0])) * (b.astype(np.int64) - int(zb.reshape(-1)[0]))
    return [_requantize_float(prod, _output_scale(sa, sb, sc), zc)]


@register("QLinearGlobalAveragePool", domain=MS_DOMAIN)
def qlinear_global_average_pool(node, xs):
    """int32 sum of ``x - x_zp`` over the spatial axes, requantized by ``s_x / (s_y * count)``."""
    x, sx, zx, sy, zy = xs[:5]
    axes = tuple(range(1, x.ndim - 1)) if node.attr("channels_last", 0) else tuple(range(2, x.ndim))
    count = int(np.prod([x.shape[a] for a in axes]))
    total = (x.astype(np.int64) - int(zx.reshape(-1)[0])).sum(axis=axes, keepdims=True)
    scale = np.float32(sx.reshape(-1)[0]) / (np.float32(sy.reshape(-1)[0]) * np.float32(count))
    return [_requantize_float(total, np.asarray(scale, np.float32), zy)]


def _float_wrapped(kernel, node, x, sx, zx, sy, zy):
    """``Q(kernel(DQ(x)))``: the definition of the com.microsoft ops that wrap a float op."""
    return [_quantize(kernel(node, [_dequantize(x, sx, zx)])[0], sy, zy)]


def _unary_q(xs):
    x = xs[0]
    return x, xs[1], _zero_point(xs, 2, x), xs[3], _param(xs, 4, np.zeros((), x.dtype))


def full_count_pads(node, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """The pads (begin..., end...) that make an AveragePool window never run past its padded input:
    ceil_mode windows overhanging the end get that overhang as extra end padding."""
    kernel = tuple(node.attr("kernel_shape"))
    geo = window_geometry(node, spatial, kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
    extra = [max(0, (o - 1) * s + k - (size + pb + pe))
             for o, s, k, size, pb, pe in zip(geo.out, geo.strides, kernel, spatial, geo.pads_begin,
                                               geo.pads_end)]
    return tuple(geo.pads_begin) + tuple(pe + e for pe, e in zip(geo.pads_end, extra))


def _average_full_count(node, x: np.ndarray) -> np.ndarray:
    """Window sums over the zero-padded input divided by the kernel size, ceil_mode overhang included
    (ONNX Runtime's QLinearAveragePool with count_include_pad=1; ONNX's AveragePool excludes the
    overhang from the count)."""
    kernel = tuple(node.attr("kernel_shape"))
    d = len(kernel)
    pads = full_count_pads(node, tuple(x.shape[2:]))
    geo = window_geometry(node, tuple(x.shape[2:]), kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(pads[:d], pads[d:])))
    win = sliding_window_view(xp, kernel, axis=tuple(range(2, 2 + d)))
    index = tuple(slice(0, o * s, s) for o, s in zip(geo.out, geo.strides))
    total = win[(slice(None), slice(None)) + index].sum(axis=tuple(range(2 + d, 2 + 2 * d)))
    return (total / np.prod(kernel)).astype(np.float32)


@register("QLinearAveragePool", domain=MS_DOMAIN)
def qlinear_average_pool(node, xs):
    """``Q(AveragePool(DQ(x)))`` (NCHW only); with count_include_pad=1 every window divides by the
    kernel size, ceil_mode overhang included, as ONNX Runtime computes it."""
    if node.attr("channels_last", 0):
        raise NotImplementedError("QLinearAveragePool with channels_last=1")
    from .ops import average_pool

    x, sx, zx, sy, zy = _unary_q(xs)
    if node.attr("count_include_pad", 0):
        return [_quantize(_average_full_count(node, _dequantize(x, sx, zx)), sy, zy)]
    return _float_wrapped(average_pool, node, x, sx, zx, sy, zy)


def _lut_wrapped(op: str):
    def kernel(node, xs):
        """``Q(f(DQ(x)))``: ONNX Runtime evaluates it through a 256-entry table of exactly this."""
        from .ops import REGISTRY

        return _float_wrapped(REGISTRY[op], node, *_unary_q(xs))
    return kernel


register("QLinearSigmoid", domain=MS_DOMAIN)(_lut_wrapped("Sigmoid"))
register("QLinearLeakyRelu", domain=MS_DOMAIN)(_lut_wrapped("LeakyRelu"))


@register("QLinearSoftmax", domain=MS_DOMAIN)
def qlinear_softmax(node, xs):
    """``Q(Softmax(DQ(x)))`` over ``axis`` (ONNX opset >= 13 semantics; older ones coerce to 2-D)."""
    from .ops import softmax

    x = xs[0]
    axis = node.attr("axis", -1 if node.attr("opset", 13) >= 13 else 1) % x.ndim
    if node.attr("opset", 13) < 13 and axis != x.ndim - 1:
        raise NotImplementedError("QLinearSoftmax with opset < 13 over a non-last axis")
    return [_quantize(softmax(node, [_dequantize(x, xs[1], _zero_point(xs, 2, x))])[0], xs[3], xs[4])]


@register("QLinearConcat", domain=MS_DOMAIN)
def qlinear_concat(node, xs):
    """Inputs y_scale, y_zp, then (x, x_scale, x_zp) per operand: ``Q(Concat(DQ(x_i)))``."""
    sy, zy = xs[0], xs[1]
    parts = [_dequantize(xs[i], xs[i + 1], xs[i + 2]) for i in range(2, len(xs), 3)]
    return [_quantize(np.concatenate(parts, axis=node.attr("axis")), sy, zy)]


@register("QGemm", domain=MS_DOMAIN)
def qgemm(node, xs):
    """``alpha * sa * sb * ((A' - za)(B' - zb) + C)`` with int32 C, requantized to (y_scale, y_zp) in
    float32 when they are given, else returned as float32; b's parameters per tensor or per column."""
    a, sa, za, b, sb, zb = xs[:6]
    c, sy, zy = _param(xs, 6), _param(xs, 7), _param(xs, 8)
    a = a.T if node.attr("transA", 0) else a
    b = b.T if node.attr("transB", 0) else b
    acc = np.matmul(_matmul_operand(a, za, -2), _matmul_operand(b, zb, -1))
    if c is not None:
        acc = wrap_int32(acc) + c.astype(np.int64)
    alpha = np.float32(node.attr("alpha", 1.0))
    scale = alpha * np.float32(sa.reshape(-1)[0]) * sb.astype(np.float32).reshape(-1)
    if sy is None:
        return [(wrap_int32(acc).astype(np.float32) * scale).astype(np.float32)]
    return [_requantize_float(acc, scale / np.float32(sy.reshape(-1)[0]),
                              _param([zy], 0, np.zeros((), np.uint8)))]

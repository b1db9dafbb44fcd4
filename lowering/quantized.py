"""The integer arithmetic of quantized ops: the contract between the QDQ-folding pass, the reference
interpreter, the cpu target's integer kernels and the accelerator (ACCELERATOR.md B.3/B.4, ACT/EWISE/POOL).

Quantized tensors are int8 or uint8 with ``real = scale * (q - zero_point)``. After the folding pass
(``passes/quantization``), targets see these fused ops of the ``lowering`` domain (attributes in
brackets; every ``*_zero_point``, ``clamp_*`` is an int, ``multiplier``/``shift`` are ints):

``QConv(X, W, B?)``  [Conv attrs (group, strides, pads, dilations, kernel_shape), x_zero_point,
    w_zero_point, out_zero_point, multiplier, shift, clamp_min, clamp_max, lut?]
    ``acc[n,m,p] = sum_{c,k} (x[n,c,p+k] - x_zero_point) * (w[m,c,k] - w_zero_point)`` over the input
    padded with ``x_zero_point`` (so padding contributes 0), wrapped to int32; ``t = acc + B[m]`` (B int32,
    absent = 0); ``y = requantize(t, multiplier[m], shift[m])`` (one entry, or one per output channel).
``QMatMul(A, B, bias?)``  [a_zero_point, b_zero_point, out_zero_point, multiplier, shift, clamp_min,
    clamp_max, lut?]  numpy matmul semantics (N-d, broadcasting):
    ``acc = sum_k (a - a_zero_point)(b - b_zero_point)`` wrapped to int32, ``t = acc + bias[n]``;
    multiplier/shift per tensor or per output column n.
``QAdd(A, B)``  [a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift, out_zero_point,
    clamp_min, clamp_max, lut?]  numpy broadcasting:
    ``y = clamp(out_zp + ((Ma (a - za) + Mb (b - zb) + 2^(shift-1)) >> shift))``; Sub uses ``Mb < 0``.
``QMul(A, B)``  [a_zero_point, b_zero_point, multiplier, shift, out_zero_point, clamp_min, clamp_max,
    lut?]  ``y = clamp(out_zp + (((a - za)(b - zb) M + 2^(shift-1)) >> shift))``.
``QAveragePool(X)``  [AveragePool attrs, or global=1; x_zero_point, out_zero_point, multiplier, shift,
    clamp_min, clamp_max]  every window counts the same number of elements ``count`` (the folding pass
    only produces it then): ``y = clamp(out_zp + ((sum (x - zx)) M + 2^(shift-1)) >> shift)`` with
    ``M / 2^shift ~ s_in / (s_out * count)``.
``QLut(X)``  [lut]  ``y = lut[x - qmin]`` (256 entries; qmin = -128 for int8, 0 for uint8).

``requantize(t, M, shift)`` (64-bit inside): ``y = (t * M + 2^(shift-1)) >> shift`` (arithmetic shift,
i.e. round half up), then ``y = clamp(y + out_zero_point, clamp_min, clamp_max)``, then, when ``lut`` is
present, ``y = lut[y - qmin]``. ReLU is ``clamp_min = out_zero_point``; Clip/ReLU6 are quantised bounds.

``M, shift`` encode a real multiplier ``r ~ M * 2^-shift`` with ``M`` in [2^30, 2^31) (Vela/TFLite-style
``frexp`` encoding, :func:`quantize_multiplier`), ``1 <= shift <= 62``.

Quantize/Dequantize at the float boundaries are the standard ONNX ops: ``QuantizeLinear`` computes
``saturate(round_half_even(x / scale) + zero_point)`` in float32, ``DequantizeLinear`` computes
``(x - zero_point) * scale`` in float32, both per tensor or per ``axis``.
"""

from __future__ import annotations

import math

import numpy as np

QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}
MAX_SHIFT = 62


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Encode ``real >= 0`` as ``(M, shift)`` with ``real ~ M * 2**-shift``, ``M`` in [2^30, 2^31)."""
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"requantisation multiplier must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 1
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2**exponent, mantissa in [0.5, 1)
    m = math.floor(mantissa * (1 << 31) + 0.5)
    if m == 1 << 31:
        m //= 2
        exponent += 1
    shift = 31 - exponent
    if shift < 1:
        raise ValueError(f"requantisation multiplier {real} is too large (must be < 2^30)")
    if shift > MAX_SHIFT:
        m >>= shift - MAX_SHIFT
        shift = MAX_SHIFT
    return int(m), int(shift)


def quantize_multipliers(reals) -> tuple[tuple[int, ...], tuple[int, ...]]:
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, np.float64).reshape(-1)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def rounding_shift(t: np.ndarray, multiplier, shift) -> np.ndarray:
    """``(t * M + 2^(shift-1)) >> shift`` in int64, broadcasting M and shift."""
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    return (t.astype(np.int64) * m + (np.int64(1) << (s - 1))) >> s


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap-around to int32 (what a hardware accumulator does), kept as int64."""
    return ((x.astype(np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def finish(y: np.ndarray, out_zero_point: int, clamp_min: int, clamp_max: int, dtype, lut=None):
    """Add the output zero point, clamp, apply the LUT; return ``dtype`` (int8/uint8)."""
    y = np.clip(y + out_zero_point, clamp_min, clamp_max)
    if lut is not None and len(lut):
        qmin = QRANGE[np.dtype(dtype).name][0]
        y = np.asarray(lut, np.int64)[y - qmin]
    return y.astype(dtype)

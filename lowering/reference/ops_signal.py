"""Numpy semantics of the signal ops: DFT, STFT, HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix.

As ONNX defines them, and computed as its reference computes the expected outputs: the transforms by numpy's
FFT in the input's precision, the windows and mel filters in float64 rounded to the output type:

- DFT: the input's last dimension is 1 (real) or 2 (complex, re/im); the transform runs along ``axis``
  (opset 17-19: an attribute, default 1; opset 20: input 2, default -2) over ``dft_length`` points (input 1;
  default the axis length, or 2 (m - 1) for an inverse one-sided transform of m bins), the signal cut or
  zero-padded to it. ``onesided`` keeps bins 0..n/2 of a forward transform; with ``inverse`` it is the
  inverse real transform (numpy's irfft: n real points, last dimension 1). The inverse scales by 1/n.
- STFT: frames of ``frame_length`` samples every ``frame_step`` (frames = 1 + (L - frame_length) //
  frame_step), each times ``window``, transformed; ``onesided`` (default 1) keeps frame_length // 2 + 1 bins.
- The windows: ``periodic`` (default 1) divides by the size, else by size - 1; Hamming is 25/46 - 21/46 cos.
- MelWeightMatrix: the triangular filters of ONNX's definition, band edges floored to DFT bins.

``dft_geometry`` and ``stft_geometry`` (the resolved parameters) are shared with the cpu lowering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Node
from .ops import ONNX_TYPE_CODES, register


class SignalSpecError(ValueError):
    """A signal op's parameters are inconsistent with its input (the message names what)."""


def _scalar(value) -> int:
    return int(np.asarray(value).reshape(-1)[0])


def dft_axis_attr(node: Node) -> int | None:
    """The axis when it is not an input (opset 17-19 attribute, or the default)."""
    if node.attr("axis", None) is not None:
        return int(node.attr("axis"))
    if node.input(2) is not None:
        return None
    opset = node.graph.opset if node.graph is not None else 20
    return -2 if opset >= 20 else 1


@dataclass(frozen=True)
class DftGeometry:
    axis: int  # non-negative
    n: int  # transform length
    inverse: bool
    onesided: bool
    out_shape: tuple[int, ...]


def dft_geometry(node: Node, shape: tuple[int, ...], axis: int, dft_length: int | None) -> DftGeometry:
    """The resolved DFT of an input of ``shape`` (axis and dft_length already read)."""
    rank = len(shape)
    if rank < 2 or shape[-1] not in (1, 2):
        raise SignalSpecError(f"input shape {list(shape)} must have rank 2 or more and a last dimension of "
                              "1 (real) or 2 (complex)")
    if not (-rank <= axis < rank - 1) or axis % rank == rank - 1:
        raise SignalSpecError(f"axis {axis} is not a signal axis of a rank-{rank} input")
    axis %= rank
    inverse, onesided = bool(node.attr("inverse", 0)), bool(node.attr("onesided", 0))
    if dft_length is None:
        n = 2 * (shape[axis] - 1) if inverse and onesided else shape[axis]
    else:
        n = dft_length
    if n < 1:
        raise SignalSpecError(f"dft_length {n} is not positive")
    out = list(shape)
    out[axis] = n // 2 + 1 if onesided and not inverse else n
    out[-1] = 1 if inverse and onesided else 2
    return DftGeometry(axis, n, inverse, onesided, tuple(out))


def _complex(x: np.ndarray) -> np.ndarray:
    """The signal as complex numbers of the input's precision (complex64 for float32): numpy then runs its
    FFT in that precision, as ONNX's reference does for the expected outputs (whose float32 rounding noise
    is within the node tests' 1e-7 absolute tolerance only when reproduced)."""
    x = np.asarray(x)
    kind = np.complex64 if x.dtype == np.float32 else np.complex128
    return (x[..., 0] if x.shape[-1] == 1 else x[..., 0] + 1j * x[..., 1]).astype(kind)


def _split(c: np.ndarray) -> np.ndarray:
    return np.stack([np.real(c), np.imag(c)], axis=-1)


@register("DFT")
def dft(node, xs):
    x = xs[0]
    length = xs[1] if len(xs) > 1 and xs[1] is not None else None
    axis = dft_axis_attr(node)
    if axis is None:
        axis = _scalar(xs[2])
    geo = dft_geometry(node, x.shape, axis, None if length is None else _scalar(length))
    signal = _complex(x)
    if geo.inverse and geo.onesided:
        y = np.fft.irfft(signal, n=geo.n, axis=geo.axis)[..., None]
    elif geo.inverse:
        y = _split(np.fft.ifft(signal, n=geo.n, axis=geo.axis))
    else:
        y = np.fft.fft(signal, n=geo.n, axis=geo.axis)
        if geo.onesided:
            y = np.take(y, np.arange(geo.n // 2 + 1), axis=geo.axis)
        y = _split(y)
    return [np.ascontiguousarray(y, dtype=x.dtype)]


@dataclass(frozen=True)
class StftGeometry:
    step: int
    frame_length: int
    frames: int
    bins: int
    onesided: bool


def stft_geometry(node: Node, shape: tuple[int, ...], step: int, window_length: int | None,
                  frame_length: int | None) -> StftGeometry:
    if len(shape) != 3 or shape[-1] not in (1, 2):
        raise SignalSpecError(f"signal shape {list(shape)} must be [batch, length, 1 or 2]")
    if frame_length is None:
        frame_length = shape[1] if window_length is None else window_length
    if window_length is not None and window_length != frame_length:
        raise SignalSpecError(f"the window has {window_length} points but frame_length is {frame_length}")
    if step < 1 or not 1 <= frame_length <= shape[1]:
        raise SignalSpecError(f"frame_step {step} / frame_length {frame_length} do not fit a signal of "
                              f"{shape[1]} samples")
    onesided = bool(node.attr("onesided", 1))
    bins = frame_length // 2 + 1 if onesided else frame_length
    return StftGeometry(step, frame_length, 1 + (shape[1] - frame_length) // step, bins, onesided)


@register("STFT")
def stft(node, xs):
    x, step = xs[0], _scalar(xs[1])
    window = xs[2] if len(xs) > 2 else None
    length = xs[3] if len(xs) > 3 else None
    geo = stft_geometry(node, x.shape, step, None if window is None else int(window.shape[0]),
                        None if length is None else _scalar(length))
    signal = _complex(x)  # [batch, L]
    w = np.ones(geo.frame_length, x.dtype) if window is None else np.asarray(window)
    starts = np.arange(geo.frames) * geo.step
    frames = signal[:, starts[:, None] + np.arange(geo.frame_length)] * w  # [batch, frames, frame_length]
    y = np.fft.fft(frames, axis=-1)[..., :geo.bins]
    return [np.ascontiguousarray(_split(y), dtype=x.dtype)]


#: window op -> its kind code in kernels_signal.c
WINDOW_KINDS = {"HannWindow": 0, "HammingWindow": 1, "BlackmanWindow": 2}


def window_values(kind: int, size: int, periodic: bool) -> np.ndarray:
    den = size if periodic else size - 1
    n = np.arange(size, dtype=np.float64)
    with np.errstate(all="ignore"):
        if kind == 0:
            return np.sin(np.pi * n / den) ** 2
        if kind == 1:
            return 25.0 / 46.0 - (21.0 / 46.0) * np.cos(2.0 * np.pi * n / den)
        return 0.42 - 0.5 * np.cos(2.0 * np.pi * n / den) + 0.08 * np.cos(4.0 * np.pi * n / den)


def _output_type(node: Node):
    code = int(node.attr("output_datatype", 1))
    if code not in ONNX_TYPE_CODES:
        raise SignalSpecError(f"output_datatype {code} is not supported")
    return ONNX_TYPE_CODES[code]


for _op, _kind in WINDOW_KINDS.items():
    @register(_op)
    def _window(node, xs, _kind=_kind):
        size = _scalar(xs[0])
        if size < 0:
            raise SignalSpecError(f"window size {size} is negative")
        values = window_values(_kind, size, bool(node.attr("periodic", 1)))
        return [values.astype(_output_type(node))]


def mel_edges(mel_bins: int, dft_length: int, sample_rate: int, lower, upper) -> np.ndarray:
    """The mel_bins + 2 band edges, as DFT bin indices (the band edges in float32, as ONNX computes them)."""
    lower, upper = np.float32(lower), np.float32(upper)
    low = np.float64(np.float32(2595) * np.log1p(lower / np.float32(700))) / np.log(10)
    high = np.float64(np.float32(2595) * np.log1p(upper / np.float32(700))) / np.log(10)
    step = (high - low) / (mel_bins + 2)
    hz = 700 * np.expm1((np.arange(mel_bins + 2) * step + low) / 2595 * np.log(10))
    return np.floor_divide((dft_length + 1) * hz, sample_rate).astype(np.int64)


@register("MelWeightMatrix")
def mel_weight_matrix(node, xs):
    mel_bins, dft_length, sample_rate = (_scalar(v) for v in xs[:3])
    edges = mel_edges(mel_bins, dft_length, sample_rate, np.asarray(xs[3]).reshape(-1)[0],
                      np.asarray(xs[4]).reshape(-1)[0])
    rows = dft_length // 2 + 1
    out = np.zeros((rows, mel_bins))
    for i in range(mel_bins):
        lo, mid, hi = (int(e) for e in edges[i:i + 3])
        if lo < 0 or mid < 0 or mid >= rows or hi > rows:
            raise SignalSpecError(f"mel band {i} [{lo}, {hi}] falls outside the {rows} DFT bins")
        if mid == lo:
            out[mid, i] = 1.0
        else:
            out[lo:mid + 1, i] = (np.arange(lo, mid + 1) - lo) / (mid - lo)
        if hi > mid:
            out[mid:hi, i] = (hi - np.arange(mid, hi)) / (hi - mid)
    return [out.astype(_output_type(node))]

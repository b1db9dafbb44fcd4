"""Constant packing for conv / GEMM layers (ACCELERATOR.md B.1): weights in block order and the 10-line ACT
parameter (PB) records, with the input zero point folded into the bias (B.2 ACT).

Weights ``w[Cout, Cin, kh, kw]`` (int8, symmetric: zero point 0) become blocks
``[Cout/B][Cin/B][kh][kw]`` of ``[B (k = input channel)][B (n = output channel)]`` int8, i.e. one 32-line
block per (output block, input block, tap) in consumption order; padded channels are 0.

A PB record per output block: lines 0-3 bias int32[B], 4-7 multiplier int32[B], 8 shift uint8[B],
9 byte 0 = out_zero_point. Padded channels get bias 0, multiplier 0, shift 1 (so they requantise to the
output zero point).
"""

from __future__ import annotations

import numpy as np

INT32 = (-(1 << 31), (1 << 31) - 1)
PB_RECORD_LINES = 10


def pack_weights(w: np.ndarray, block: int = 32) -> np.ndarray:
    """``w[Cout, Cin, kh, kw]`` int8 -> ``[NB, CB, kh, kw, B(k), B(n)]`` int8 (zero-padded channels)."""
    cout, cin, kh, kw = w.shape
    nb, cb = -(-cout // block), -(-cin // block)
    full = np.zeros((nb * block, cb * block, kh, kw), np.int8)
    full[:cout, :cin] = w
    blocks = full.reshape(nb, block, cb, block, kh, kw)          # [nb, n, cb, k, kh, kw]
    return np.ascontiguousarray(blocks.transpose(0, 2, 4, 5, 3, 1))


def folded_bias(w: np.ndarray, bias: np.ndarray | None, x_zero_point: int) -> np.ndarray:
    """``bias' = bias - x_zp * sum_k w[n, k]`` in int64 (the caller checks it fits int32)."""
    cout = w.shape[0]
    b = np.zeros(cout, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(cout)
    return b - int(x_zero_point) * w.reshape(cout, -1).astype(np.int64).sum(axis=1)


def fits_int32(values: np.ndarray) -> bool:
    return bool(values.size == 0 or (values.min() >= INT32[0] and values.max() <= INT32[1]))


def per_channel(values, cout: int) -> np.ndarray:
    """A per-tensor (one entry) or per-channel parameter as an int64 vector of ``cout`` entries."""
    v = np.asarray(values, np.int64).reshape(-1)
    return np.full(cout, v[0], np.int64) if v.size == 1 else v


def pack_params(bias: np.ndarray, multiplier, shift, out_zero_point: int, block: int = 32) -> np.ndarray:
    """The PB records ``[NB, 10, B]`` uint8 for int64 ``bias[Cout]`` and per-tensor/per-channel
    multiplier/shift."""
    cout = bias.shape[0]
    nb = -(-cout // block)
    pad = nb * block

    def padded(v, fill):
        out = np.full(pad, fill, np.int64)
        out[:cout] = v
        return out

    b = padded(bias, 0).astype("<i4")
    m = padded(per_channel(multiplier, cout), 0).astype("<i4")
    s = padded(per_channel(shift, cout), 1).astype(np.uint8)
    rec = np.zeros((nb, PB_RECORD_LINES, block), np.uint8)
    rec[:, 0:4] = b.reshape(nb, block).view(np.uint8).reshape(nb, 4, block)
    rec[:, 4:8] = m.reshape(nb, block).view(np.uint8).reshape(nb, 4, block)
    rec[:, 8] = s.reshape(nb, block)
    rec[:, 9, 0] = np.uint8(int(out_zero_point) & 0xFF)
    return rec


def pack_lut(lut) -> bytes:
    """A 256-entry int8 table as the 256 bytes one ``LOAD buf=LUT`` reads (index ``y + 128``)."""
    return np.asarray(lut, np.int64).astype(np.int8).tobytes()

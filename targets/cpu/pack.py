"""Weights for the cpu target: the blob layout and the compile-time prepacking of constant operands.

The blob (``cpu/weights.bin``) is arrays (float32, or the integer types of quantized ops) laid end to end,
each at a 64-byte aligned byte offset, in the order the code generator asks for them (node order, so the
blob is deterministic); identical requests are stored once. Constants are stored in the layout their
kernel reads:

- GEMM operands as panels (``pack_a``: ``[ceil(M/mr)][K][mr]``, ``pack_b``: ``[ceil(N/nr)][K][nr]``,
  zero-padded), the same layouts ``lw_pack_a``/``lw_pack_b`` in ``kernels_gemm.c`` write at run time;
- convolution weights as one packed A per group;
- BatchNormalization as a per-channel scale and shift;
- int8 GEMM operands in groups of 4 along K (``qpack_a``: ``[ceil(M/mr)][ceil(K/4)][mr][4]``, ``qpack_b``:
  ``[ceil(N/nr)][ceil(K/4)][nr][4]`` bytes), the layouts ``lw_qpack_a``/``lw_qpack_b`` in
  ``kernels_quant.c`` write at run time.
"""

from __future__ import annotations

import hashlib

import numpy as np

ALIGN = 64


class WeightsBlob:
    """Accumulates arrays and hands out their byte offsets in the blob."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._size = 0
        self._offsets: dict[tuple, int] = {}

    def add(self, array: np.ndarray, dtype=np.float32) -> int:
        """Store ``array`` as ``dtype`` (once per distinct content) and return its byte offset."""
        data = np.ascontiguousarray(array, dtype=dtype).tobytes()
        key = (hashlib.sha256(data).hexdigest(), len(data))
        if key in self._offsets:
            return self._offsets[key]
        pad = -self._size % ALIGN
        if pad:
            self._parts.append(b"\0" * pad)
            self._size += pad
        offset = self._size
        self._parts.append(data)
        self._size += len(data)
        self._offsets[key] = offset
        return offset

    @property
    def size(self) -> int:
        return self._size

    def tobytes(self) -> bytes:
        return b"".join(self._parts)


def pack_a(matrix: np.ndarray, mr: int) -> np.ndarray:
    """[M, K] -> row panels [ceil(M/mr), K, mr], zero past M."""
    m, k = matrix.shape
    panels = -(-m // mr)
    padded = np.zeros((panels * mr, k), np.float32)
    padded[:m] = matrix
    return np.ascontiguousarray(padded.reshape(panels, mr, k).transpose(0, 2, 1))


def pack_b(matrix: np.ndarray, nr: int) -> np.ndarray:
    """[K, N] -> column panels [ceil(N/nr), K, nr], zero past N."""
    k, n = matrix.shape
    panels = -(-n // nr)
    padded = np.zeros((k, panels * nr), np.float32)
    padded[:, :n] = matrix
    return np.ascontiguousarray(padded.reshape(k, panels, nr).transpose(1, 0, 2))


def packed_a_floats(m: int, k: int, mr: int) -> int:
    return -(-m // mr) * mr * k


def packed_b_floats(k: int, n: int, nr: int) -> int:
    return -(-n // nr) * nr * k


def pack_conv_weights(weights: np.ndarray, groups: int, mr: int) -> np.ndarray:
    """ONNX conv weights [M, C/G, *kernel] -> one packed A per group, concatenated."""
    m = weights.shape[0]
    per_group = weights.reshape(groups, m // groups, -1).astype(np.float32)
    return np.concatenate([pack_a(w, mr).reshape(-1) for w in per_group])


def batchnorm_scale_shift(scale, bias, mean, var, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNormalization as y = x * s + t per channel (computed in float32 like the reference)."""
    inv = (scale / np.sqrt(var + np.float32(epsilon))).astype(np.float32)
    shift = (bias - mean * inv).astype(np.float32)
    return inv.reshape(-1), shift.reshape(-1)


def qpack_a(matrix: np.ndarray, mr: int) -> np.ndarray:
    """An int8 GEMM A operand [M, K] (integer values, one byte each) -> bytes
    [ceil(M/mr)][ceil(K/4)][mr][4], zero past M and K (``lw_qpack_a`` in ``kernels_quant.c``)."""
    m, k = matrix.shape
    panels, k4 = -(-m // mr), -(-k // 4)
    padded = np.zeros((panels * mr, k4 * 4), np.int64)
    padded[:m, :k] = matrix
    packed = padded.reshape(panels, mr, k4, 4).transpose(0, 2, 1, 3)
    return (np.ascontiguousarray(packed).reshape(-1) & 0xFF).astype(np.uint8)


def qpack_b(matrix: np.ndarray, nr: int) -> np.ndarray:
    """An int8 GEMM B operand [K, N] -> bytes [ceil(N/nr)][ceil(K/4)][nr][4], zero past K and N
    (``lw_qpack_b`` in ``kernels_quant.c``)."""
    k, n = matrix.shape
    panels, k4 = -(-n // nr), -(-k // 4)
    padded = np.zeros((k4 * 4, panels * nr), np.int64)
    padded[:k, :n] = matrix
    packed = padded.reshape(k4, 4, panels, nr).transpose(2, 0, 3, 1)
    return (np.ascontiguousarray(packed).reshape(-1) & 0xFF).astype(np.uint8)


def pack_conv_weights_t(weights: np.ndarray, groups: int, nc: int) -> np.ndarray:
    """ONNX conv weights [M, C/G, *kernel] -> per group the transposed GEMM's vector operand: W^T [K, M/G]
    as column panels [ceil((M/G)/nc), K, nc], zero past M/G (``lw_conv2d_t`` in ``kernels_conv.c``)."""
    m = weights.shape[0]
    per_group = weights.reshape(groups, m // groups, -1).astype(np.float32)
    return np.concatenate([pack_b(np.ascontiguousarray(w.T), nc).reshape(-1) for w in per_group])

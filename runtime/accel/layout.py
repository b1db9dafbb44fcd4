"""Host <-> NPU-1 DRAM tensor layouts (ACCELERATOR.md B.1; compiler side: ``targets/custom/builder.py``).

A tensor table entry (:class:`~.program.TensorInfo`) names the layout of one int8 tensor in DRAM:

- ``"NC/32HW32"``: a logical ``(N, C, H, W)`` tensor stored as ``[N][ceil(C/B)][H][W][B]`` int8, the channels
  padded to a multiple of B with the tensor's ``zero_point`` (B = ``padded_shape[-1]``, the array width).
- ``"MK:K/32M32"``: a logical 2-D ``(M, K)`` tensor stored as the 4-D ``(1, K, M, 1)`` in that same layout,
  i.e. ``[ceil(K/B)][M][B]`` (``padded_shape`` ``[1, ceil(K/B), M, 1, B]``).

:func:`pack` turns a logical array into the DRAM bytes, :func:`unpack` the bytes back into the logical
array (padding dropped); :func:`write` / :func:`read` do the same at the tensor's ``dram_offset`` of a DRAM
array. Every function checks the table entry and the array against each other first and raises
:class:`LayoutError` (a ``ValueError``) naming the tensor and what disagrees.
"""

from __future__ import annotations

import numpy as np

from .errors import AccelError
from .program import TensorInfo

LAYOUT_4D = "NC/32HW32"
LAYOUT_2D = "MK:K/32M32"
LAYOUTS = (LAYOUT_4D, LAYOUT_2D)

__all__ = ["LAYOUTS", "LAYOUT_2D", "LAYOUT_4D", "LayoutError", "check_info", "nbytes", "pack", "read",
           "unpack", "write"]


class LayoutError(AccelError, ValueError):
    """A tensor that does not match its tensor table entry (dtype, shape, layout, DRAM range)."""


def _info(info) -> TensorInfo:
    return info if isinstance(info, TensorInfo) else TensorInfo.from_dict(dict(info))


def _shape4(info: TensorInfo) -> tuple[int, int, int, int]:
    shape = tuple(int(d) for d in info.shape)
    if info.layout == LAYOUT_4D:
        if len(shape) != 4:
            raise LayoutError(f"tensor {info.name!r}: layout {LAYOUT_4D} needs a 4-D (N, C, H, W) shape, the "
                              f"table says {list(shape)}")
        return shape
    if len(shape) != 2:
        raise LayoutError(f"tensor {info.name!r}: layout {LAYOUT_2D} needs a 2-D (M, K) shape, the table "
                          f"says {list(shape)}")
    m, k = shape
    return (1, k, m, 1)


def check_info(info) -> TensorInfo:
    """Validate a tensor table entry on its own: known layout, int8, ``padded_shape`` consistent with the
    logical shape, non-negative offset. Returns it as a :class:`TensorInfo`."""
    try:
        info = _info(info)
    except TypeError as exc:
        raise LayoutError(f"malformed tensor table entry {info!r} ({exc})") from None
    if info.layout not in LAYOUTS:
        raise LayoutError(f"tensor {info.name!r}: unknown layout {info.layout!r} (this runtime reads "
                          f"{', '.join(LAYOUTS)})")
    if info.dtype != "int8":
        raise LayoutError(f"tensor {info.name!r}: dtype {info.dtype!r}; NPU-1 tensors are int8")
    if any(int(d) <= 0 for d in info.shape):
        raise LayoutError(f"tensor {info.name!r}: shape {list(info.shape)} has a non-positive dimension")
    n, c, h, w = _shape4(info)
    padded = [int(d) for d in info.padded_shape]
    if len(padded) != 5 or padded[-1] <= 0:
        raise LayoutError(f"tensor {info.name!r}: padded_shape {padded} is not [N, C/B, H, W, B]")
    block = padded[-1]
    want = [n, -(-c // block), h, w, block]
    if padded != want:
        raise LayoutError(f"tensor {info.name!r}: padded_shape {padded} does not match shape "
                          f"{list(info.shape)} in layout {info.layout} (expected {want})")
    if not -128 <= int(info.zero_point) <= 127:
        raise LayoutError(f"tensor {info.name!r}: zero_point {info.zero_point} is not an int8")
    if int(info.dram_offset) < 0:
        raise LayoutError(f"tensor {info.name!r}: negative DRAM offset {info.dram_offset}")
    return info


def nbytes(info) -> int:
    """Bytes the tensor occupies in DRAM (padding included)."""
    info = check_info(info)
    return int(np.prod(info.padded_shape))


def pack(array, info) -> bytes:
    """The DRAM bytes of the logical ``array`` (int8, shape ``info.shape``) in ``info``'s layout."""
    info = check_info(info)
    a = np.asarray(array)
    if a.dtype != np.int8:
        raise LayoutError(f"tensor {info.name!r}: array dtype is {a.dtype}, expected int8")
    if tuple(a.shape) != tuple(int(d) for d in info.shape):
        raise LayoutError(f"tensor {info.name!r}: array shape is {list(a.shape)}, expected "
                          f"{list(info.shape)}")
    n, c, h, w = _shape4(info)
    _, cb, _, _, block = info.padded_shape
    a4 = a.T.reshape(n, c, h, w) if info.layout == LAYOUT_2D else a       # (M, K) -> (1, K, M, 1)
    full = np.full((n, cb * block, h, w), np.int8(info.zero_point), np.int8)
    full[:, :c] = a4
    return full.reshape(n, cb, block, h, w).transpose(0, 1, 3, 4, 2).tobytes()


def unpack(buffer, info) -> np.ndarray:
    """The logical int8 array (shape ``info.shape``) from its DRAM bytes (``buffer``: bytes-like or a uint8 /
    int8 array holding at least :func:`nbytes` bytes; extra trailing bytes are ignored)."""
    info = check_info(info)
    size = int(np.prod(info.padded_shape))
    raw = np.frombuffer(buffer, np.uint8) if not isinstance(buffer, np.ndarray) else buffer.reshape(-1)
    if raw.dtype.itemsize != 1:
        raise LayoutError(f"tensor {info.name!r}: buffer dtype {raw.dtype} is not a byte array")
    if raw.size < size:
        raise LayoutError(f"tensor {info.name!r}: buffer holds {raw.size} bytes, the tensor needs {size}")
    n, c, h, w = _shape4(info)
    _, cb, _, _, block = info.padded_shape
    blocked = raw[:size].view(np.int8).reshape(n, cb, h, w, block)
    full = blocked.transpose(0, 1, 4, 2, 3).reshape(n, cb * block, h, w)[:, :c]
    out = full.reshape(c, h).T if info.layout == LAYOUT_2D else full                # (1, K, M, 1) -> (M, K)
    return np.ascontiguousarray(out)


def _range(dram: np.ndarray, info: TensorInfo) -> tuple[int, int]:
    lo = int(info.dram_offset)
    hi = lo + int(np.prod(info.padded_shape))
    if hi > dram.size:
        raise LayoutError(f"tensor {info.name!r}: DRAM bytes [{lo}, {hi}) exceed the DRAM of {dram.size} "
                          "bytes")
    return lo, hi


def write(dram: np.ndarray, array, info) -> None:
    """Pack ``array`` into ``dram`` (a writable uint8 array) at the tensor's offset."""
    info = check_info(info)
    data = np.frombuffer(pack(array, info), np.uint8)
    lo, hi = _range(dram, info)
    dram[lo:hi] = data


def read(dram: np.ndarray, info) -> np.ndarray:
    """Unpack the tensor from ``dram`` (a uint8 array) at its offset."""
    info = check_info(info)
    lo, hi = _range(dram, info)
    return unpack(dram[lo:hi], info)

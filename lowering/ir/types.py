"""Element types and tensor types of the graph IR.

The IR only knows static shapes: every dimension is a non-negative int. Symbolic dimensions are bound
(``--shape``) before import finishes, so passes and targets never see a string dimension.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """Element types. Values are the names used in manifests and the text printer."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    FLOAT64 = "float64"
    BFLOAT16 = "bfloat16"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        if self is DType.BFLOAT16:  # numpy has no bfloat16: ml_dtypes' (an onnx dependency) is onnx's too
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(self.value)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @classmethod
    def from_numpy(cls, dtype) -> DType:
        name = np.dtype(dtype).name
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unsupported element type {name}") from None


@dataclass(frozen=True)
class TensorType:
    """A tensor's element type and static shape."""

    dtype: DType
    shape: tuple[int, ...]

    def __post_init__(self):
        if not all(isinstance(d, int) and d >= 0 for d in self.shape):
            raise ValueError(f"shape must be non-negative ints, got {self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(map(str, self.shape))}]"

    @classmethod
    def of(cls, array: np.ndarray) -> TensorType:
        return cls(DType.from_numpy(array.dtype), tuple(int(d) for d in array.shape))

"""The lowering runtime: load an artifact and run it. Imports numpy and the standard library only (plus
what a target's native code needs); never the compiler (``lowering``, ``passes``, ``targets``) or onnx."""

from .errors import InvalidArtifactError, InvalidInputError, RuntimeLoadError, TargetUnavailableError
from .session import Session, TensorInfo, load

__all__ = ["InvalidArtifactError", "InvalidInputError", "RuntimeLoadError", "Session",
           "TargetUnavailableError", "TensorInfo", "load"]

"""Errors the runtime raises. Each message names the artifact, member, target, input or output at fault."""


class RuntimeLoadError(Exception):
    """An artifact could not be loaded: bad container, hash mismatch, newer format, unmet requirements."""


class InvalidArtifactError(RuntimeLoadError):
    """The file is not a valid artifact (truncated, tampered with, names escaping the container...)."""


class TargetUnavailableError(RuntimeLoadError):
    """The artifact has no usable target for this machine; the message says what is missing."""


class InvalidInputError(ValueError):
    """``run`` inputs with wrong names, shapes or dtypes."""

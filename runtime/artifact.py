"""The artifact container: the only contract between the compiler and the runtime.

A zip file with members stored uncompressed: ``manifest.json`` plus per-target members. The manifest
records the format name and version, the model signature, each target's entry, and the SHA-256 and size
of every other member. :func:`open_artifact` checks all of that before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import InvalidArtifactError, RuntimeLoadError

FORMAT_NAME = "lowering-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def check_member_name(name: str) -> None:
    """Refuse names that could escape the container when extracted."""
    path = PurePosixPath(name)
    if (not name or name.startswith("/") or "\\" in name or ".." in path.parts
            or ":" in name or name != path.as_posix()):
        raise InvalidArtifactError(f"member name '{name}' escapes the container or is malformed")


@dataclass
class Artifact:
    path: Path
    manifest: dict
    _members: dict[str, bytes]

    def read(self, name: str) -> bytes:
        """A member's bytes (already verified against the manifest's SHA-256)."""
        if name not in self._members:
            raise InvalidArtifactError(f"{self.path}: no member '{name}'")
        return self._members[name]

    @property
    def targets(self) -> dict[str, dict]:
        return self.manifest["targets"]

    def member_names(self) -> list[str]:
        return sorted(self._members)


def open_artifact(path) -> Artifact:
    """Open and fully verify an artifact. Raises :class:`InvalidArtifactError` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InvalidArtifactError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            for info in infos:
                check_member_name(info.filename)
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise InvalidArtifactError(f"{path}: duplicate member names")
            if MANIFEST not in names:
                raise InvalidArtifactError(f"{path}: no {MANIFEST}; not a lowering artifact")
            manifest = _parse_manifest(path, zf.read(MANIFEST))
            expected = manifest["members"]
            extra = sorted(set(names) - set(expected) - {MANIFEST})
            missing = sorted(set(expected) - set(names))
            if extra or missing:
                raise InvalidArtifactError(
                    f"{path}: members differ from the manifest (unexpected: {extra or 'none'}, "
                    f"missing: {missing or 'none'})")
            members = {}
            for name, meta in expected.items():
                data = zf.read(name)
                if len(data) != meta.get("size") or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
                    raise InvalidArtifactError(
                        f"{path}: member '{name}' does not match its SHA-256/size in the manifest "
                        "(corrupted or tampered with)")
                members[name] = data
    except zipfile.BadZipFile as exc:
        raise InvalidArtifactError(f"{path}: not a valid artifact (truncated or not a zip: {exc})") from None
    except (OSError, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise InvalidArtifactError(f"{path}: cannot read the artifact: {exc}") from None
    except (KeyError, ValueError) as exc:  # zlib/CRC errors surface as these
        if isinstance(exc, InvalidArtifactError):
            raise
        raise InvalidArtifactError(f"{path}: corrupted artifact ({exc})") from None
    return Artifact(path, manifest, members)


def _parse_manifest(path: Path, raw: bytes) -> dict:
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArtifactError(f"{path}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise InvalidArtifactError(f"{path}: not a lowering artifact (format is not '{FORMAT_NAME}')")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise InvalidArtifactError(f"{path}: manifest has no format_version")
    if version > FORMAT_VERSION:
        raise InvalidArtifactError(
            f"{path}: artifact format version {version} is newer than this runtime supports "
            f"({FORMAT_VERSION}); upgrade the runtime")
    for key, kind in (("members", dict), ("targets", dict), ("inputs", list), ("outputs", list)):
        if not isinstance(manifest.get(key), kind):
            raise InvalidArtifactError(f"{path}: manifest field '{key}' is missing or malformed")
    for name, meta in manifest["members"].items():
        check_member_name(name)
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
                and type(meta.get("size")) is int and meta["size"] >= 0):
            raise InvalidArtifactError(f"{path}: manifest entry of member '{name}' is malformed")
    for name, entry in manifest["targets"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("kind", name), str):
            raise InvalidArtifactError(f"{path}: manifest entry of target '{name}' is malformed")
    for key in ("inputs", "outputs"):
        names = [check_tensor(path, key, t) for t in manifest[key]]
        if len(set(names)) != len(names):
            raise InvalidArtifactError(f"{path}: manifest {key} repeat a name")
    return manifest


def check_tensor(path, role: str, tensor) -> str:
    """A signature entry ``{"name", "dtype", "shape"}``: a name, a numeric or bool dtype, a static shape of
    non-negative ints. Returns the name; raises InvalidArtifactError naming what is wrong."""
    ok = (isinstance(tensor, dict) and isinstance(tensor.get("name"), str)
          and isinstance(tensor.get("shape"), list) and isinstance(tensor.get("dtype"), str)
          and tensor["dtype"] in _DTYPES)
    if ok:
        ok = all(type(d) is int and 0 <= d < 2**48 for d in tensor["shape"])
    if not ok:
        shown = json.dumps(tensor, default=str)[:80]
        raise InvalidArtifactError(f"{path}: manifest {role} entry {shown} is malformed (needs a name, a "
                                   "dtype and a static shape)")
    return tensor["name"]


_DTYPES = frozenset({"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint64",
                     "uint32", "uint16", "uint8", "bool"})


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a signature's element type name. numpy has no bfloat16: it is ml_dtypes' type (the
    one onnx and JAX use), imported only for a model with a bfloat16 input or output, so the runtime needs
    numpy alone otherwise."""
    if name != "bfloat16":
        return np.dtype(name)
    try:
        import ml_dtypes
    except ImportError:
        raise RuntimeLoadError("the model has a bfloat16 input or output, which needs the ml_dtypes package "
                               "(pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)

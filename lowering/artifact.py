"""Write an artifact atomically and deterministically (format: ``runtime.artifact``).

Members are stored uncompressed in sorted order with a fixed timestamp, so identical inputs give a
byte-identical file. The file appears under its final name only once complete (temporary file in the
same folder, fsync, rename, fsync of the folder); an interrupted write leaves nothing that looks like an
artifact, and a failed one (a full disk, a folder that is not writable) raises a LoweringError naming the
file, removes its temporary file and leaves an artifact already at ``path`` as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

from runtime.artifact import FORMAT_NAME, FORMAT_VERSION, MANIFEST, check_member_name

from . import __version__
from .errors import LoweringError

_EPOCH = (1980, 1, 1, 0, 0, 0)


def build_manifest(base: dict, files: dict[str, bytes], producer: dict | None = None) -> dict:
    members = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
               for name, data in sorted(files.items())}
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "producer": producer or {"name": "lowering", "version": __version__}, **base, "members": members}


def write_artifact(path, manifest_base: dict, files: dict[str, bytes], producer: dict | None = None) -> dict:
    """Write ``files`` plus a manifest to ``path`` atomically. Returns the manifest. ``producer``: the
    manifest's producer record (default: this lowering), kept as is by ``lower merge``. Raises
    LoweringError when the file cannot be written (see the module docstring)."""
    for name in files:
        check_member_name(name)
    manifest = build_manifest(manifest_base, files, producer)
    entries = {MANIFEST: json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n", **files}
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as zf:
                for name in [MANIFEST] + sorted(files):
                    info = zipfile.ZipInfo(name, date_time=_EPOCH)
                    info.external_attr = 0o644 << 16
                    info.create_system = 3
                    zf.writestr(info, entries[name])
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason = f"{blocker} is a file, not a folder"
        else:
            reason = exc.strerror or str(exc)
            if exc.filename and Path(exc.filename).parent != path.parent:  # a folder, not our own file
                reason += f" ({exc.filename})"
        raise LoweringError(f"cannot write the artifact {path}: {reason}") from None
    finally:
        if tmp is not None:  # failed or interrupted (KeyboardInterrupt too): no partial file stays
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _fsync_folder(path.parent)
    return manifest


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (best effort: not every platform or file system can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

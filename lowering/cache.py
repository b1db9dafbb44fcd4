"""The build cache: a target's build, reused when nothing that could change it has changed.

An entry holds everything one target contributes to an artifact (its member files, its manifest entry, its
``report.json`` section, the optimized graph it exported, the model signature) and is keyed by a SHA-256 of

- the model bytes being compiled and the model's file name (it appears in reports and errors),
- the compile options that change an artifact (``CompileOptions.to_json`` without the target list, plus
  the target options such as ``--isa``, ``--accel-config`` and the content of an accelerator config file),
- the target's name and its toolchain identity (for cpu and the custom target's host segments: the C
  compiler's resolved path and full ``--version`` output, and the ISA level ``native`` resolves to on this
  machine; for cuda: nvcc's; a plugin target may define ``cache_identity(options) -> str``),
- the source of the compiler itself: every ``.py``/``.c``/``.h``/``.cuh`` file of the ``lowering``,
  ``passes``, ``targets`` and ``runtime`` packages (and of a plugin target's top-level package).

A quantization (``--quantize int8``) is an entry of its own, keyed by the model, the quantization settings
and the content of the calibration data; its QDQ model bytes then key the targets.

Entries are single files, ``DIR/v1/<key[:2]>/<key>.entry`` (a zip of ``meta.json`` and the blobs, each blob's
SHA-256 in ``meta.json``), written to a temporary file in the same folder, fsynced and renamed into place:
concurrent builds each write a complete entry and the last rename wins; a killed build leaves at most a
``.tmp`` file that is never read. An entry that fails to parse or whose hashes do not match is ignored
(and overwritten by the rebuild).

Size bound: after every store, entries beyond the bound are deleted, least recently used first (a hit
refreshes its entry's modification time, so the order does not depend on the file system recording access
times). The bound is ``$LOWERING_CACHE_MAX_BYTES``, else the one ``lower cache --max-bytes`` recorded in
``DIR/config.json``, else :data:`DEFAULT_MAX_BYTES`; sizes take K/M/G/T suffixes (powers of 1024), 0 means
no bound. Temporary files older than an hour (left by killed builds) are deleted too. ``lower cache``
(``lowering.cache_cli``) shows the cache (``--info``), empties it (``--clear``) and sets the bound.

Default location: ``$LOWERING_CACHE_DIR``, else ``$XDG_CACHE_HOME/lowering``, else ``~/.cache/lowering``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE_FORMAT = 1
#: the size bound when neither LOWERING_CACHE_MAX_BYTES nor ``lower cache --max-bytes`` set one
DEFAULT_MAX_BYTES = 5 << 30
#: a temporary file older than this (seconds) belongs to a killed build and is deleted by the next trim
STALE_TMP_SECONDS = 3600
_CONFIG = "config.json"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SOURCE_SUFFIXES = (".py", ".c", ".h", ".cuh", ".cu")
_OWN_PACKAGES = ("lowering", "passes", "targets", "runtime")


def default_cache_dir() -> Path:
    explicit = os.environ.get("LOWERING_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "lowering"


def parse_size(text) -> int:
    """``"500M"``, ``"2G"``, ``"1.5GiB"``, ``"4096"`` -> bytes (K/M/G/T are powers of 1024). ValueError when
    it is not a size."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size (e.g. 4096, 500M, 2G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass
class CacheStats:
    root: Path
    entries: int
    bytes: int
    max_bytes: int
    max_bytes_from: str
    temporary: int  # temporary files (builds writing now, or killed ones)

    def to_json(self) -> dict:
        return {"location": str(self.root), "entries": self.entries, "bytes": self.bytes,
                "max_bytes": self.max_bytes, "max_bytes_from": self.max_bytes_from,
                "temporary_files": self.temporary}


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@functools.cache
def package_source_hash(packages: tuple[str, ...] = _OWN_PACKAGES) -> str:
    """SHA-256 over the relative path and bytes of every source file of ``packages`` (sorted)."""
    h = hashlib.sha256()
    for package in packages:
        spec = importlib.util.find_spec(package)
        roots = list(spec.submodule_search_locations or []) if spec else []
        if spec and not roots and spec.origin:
            roots = [str(Path(spec.origin).parent)]  # a single-module plugin
        for root in roots:
            for path in sorted(Path(root).rglob("*")):
                if path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts and path.is_file():
                    rel = f"{package}/{path.relative_to(root).as_posix()}"
                    h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _tool_version(argv: tuple[str, ...]) -> str:
    """The resolved path and the whole ``--version`` output of a compiler command."""
    resolved = shutil.which(argv[0]) or argv[0]
    try:
        resolved = os.path.realpath(resolved)
        out = subprocess.run([*argv, "--version"], check=False, capture_output=True, text=True, timeout=60)
        text = out.stdout + out.stderr
    except (OSError, subprocess.SubprocessError) as exc:
        text = f"unavailable: {exc}"
    return f"{resolved} {' '.join(argv[1:])}\n{text}"


def toolchain_identity(target, options: dict) -> str:
    """What of the build machine's toolchain a target's output depends on (see the module docstring).
    Raises the target's own LoweringError when its compiler is missing (the same error a build gives)."""
    custom = getattr(target, "cache_identity", None)
    if callable(custom):
        return str(custom(options))
    name = getattr(target, "name", "")
    if name in ("cpu", "custom"):
        from targets.cpu.build import choose_isa, find_compiler

        isa = choose_isa(options.get("isa")).name
        return f"cc: {_tool_version(tuple(find_compiler(options)))}\nisa: {isa}"
    if name == "cuda":
        from targets.cuda.build import find_nvcc

        nvcc = find_nvcc(options)
        return f"nvcc: {_tool_version((nvcc,)) if nvcc else 'none'}"
    return f"target {name}: no toolchain identity"


def target_source_hash(target) -> str:
    """The compiler's source hash, plus a plugin target's own package when it lives outside ours."""
    package = type(target).__module__.partition(".")[0]
    packages = _OWN_PACKAGES if package in _OWN_PACKAGES else _OWN_PACKAGES + (package,)
    return package_source_hash(packages)


def file_content_hash(path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and bytes, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        rel = p.name if p == path else p.relative_to(path).as_posix()
        h.update(rel.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def entry_key(*parts) -> str:
    return _digest(CACHE_FORMAT, *parts)


class BuildCache:
    """A folder of cache entries. ``get`` returns ``(meta, blobs)`` or None; ``put`` stores atomically, then
    trims the folder to ``max_bytes`` (None: the configured bound, see the module docstring; 0: none).
    Every failure to read or write is a miss or a skipped store (logged), never an error: the cache can
    only save time. A malformed ``$LOWERING_CACHE_MAX_BYTES`` is a user's mistake (a LoweringError)."""

    def __init__(self, root, log=lambda message: None, max_bytes: int | None = None):
        self.root = Path(root)
        self.log = log
        if max_bytes is None:
            max_bytes, self.max_bytes_from = self._configured_bound()
        else:
            self.max_bytes_from = "argument"
        self.max_bytes = int(max_bytes)

    def _configured_bound(self) -> tuple[int, str]:
        explicit = os.environ.get("LOWERING_CACHE_MAX_BYTES")
        if explicit:
            try:
                return parse_size(explicit), "LOWERING_CACHE_MAX_BYTES"
            except ValueError as exc:
                from .errors import LoweringError

                raise LoweringError(f"LOWERING_CACHE_MAX_BYTES: {exc}") from None
        config = self.root / _CONFIG
        try:
            value = json.loads(config.read_text())["max_bytes"]
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value, str(config)
            raise ValueError(f"max_bytes {value!r} is not a size in bytes")
        except OSError:  # none, or the folder is unusable (a store then says so)
            pass
        except (ValueError, KeyError, TypeError) as exc:
            self.log(f"cache: ignoring {config} ({type(exc).__name__}: {exc})")
        return DEFAULT_MAX_BYTES, "default"

    def _path(self, key: str) -> Path:
        return self.root / f"v{CACHE_FORMAT}" / key[:2] / f"{key}.entry"

    def get(self, key: str) -> tuple[dict, dict[str, bytes]] | None:
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.log(f"cache: cannot read {path} ({exc}); rebuilding")
            return None
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                meta = json.loads(zf.read("meta.json").decode())
                if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
                    raise ValueError("key or format mismatch")
                blobs = {}
                for name, digest in meta["blobs"].items():
                    data = zf.read(f"blobs/{name}")
                    if hashlib.sha256(data).hexdigest() != digest:
                        raise ValueError(f"blob {name} does not match its SHA-256")
                    blobs[name] = data
        except Exception as exc:  # any damage at all: a miss, and the rebuild overwrites the entry
            self.log(f"cache: ignoring corrupted entry {path.name} ({type(exc).__name__}: {exc}); rebuilding")
            return None
        try:
            os.utime(path)  # recently used: the last to be evicted
        except OSError:
            pass
        return meta["value"], blobs

    def put(self, key: str, value: dict, blobs: dict[str, bytes]) -> None:
        path = self._path(key)
        meta = {"format": CACHE_FORMAT, "key": key, "value": value,
                "blobs": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(blobs.items())}}
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as raw:
                with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as zf:
                    zf.writestr("meta.json", json.dumps(meta, sort_keys=True))
                    for name, data in sorted(blobs.items()):
                        zf.writestr(f"blobs/{name}", data)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            self.log(f"cache: cannot store {path} ({exc})")
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        if tmp is None and self.max_bytes > 0:
            self.trim(keep=path)

    # ---- size bound and housekeeping (``lower cache``) ----------------------------------------------

    def _files(self):
        """``(path, stat, is_temporary)`` of every entry and temporary file, of every cache format."""
        try:
            versions = [d for d in self.root.iterdir() if re.fullmatch(r"v\d+", d.name) and d.is_dir()]
        except OSError:
            return
        for version in versions:
            for shard in version.iterdir():
                if not shard.is_dir():
                    continue
                for path in shard.iterdir():
                    temporary = path.name.startswith(".") and path.name.endswith(".tmp")
                    if not (temporary or path.name.endswith(".entry")):
                        continue
                    try:
                        yield path, path.stat(), temporary
                    except OSError:  # deleted meanwhile by another build's trim
                        continue

    def stats(self) -> CacheStats:
        entries = size = temporary = 0
        for _, st, is_tmp in self._files():
            if is_tmp:
                temporary += 1
            else:
                entries += 1
                size += st.st_size
        return CacheStats(self.root, entries, size, self.max_bytes, self.max_bytes_from, temporary)

    def trim(self, max_bytes: int | None = None, keep: Path | None = None) -> tuple[int, int]:
        """Delete the least recently used entries until the rest fit ``max_bytes`` (default: the bound;
        0: no bound), and temporary files older than an hour. ``keep`` (the entry just stored) stays.
        Returns (entries deleted, bytes freed)."""
        bound = self.max_bytes if max_bytes is None else max_bytes
        now = time.time()
        entries, total = [], 0
        for path, st, is_tmp in self._files():
            if is_tmp:
                if now - st.st_mtime > STALE_TMP_SECONDS:
                    _unlink(path)
                continue
            entries.append((st.st_mtime, path, st.st_size))
            total += st.st_size
        removed = freed = 0
        if bound <= 0 or total <= bound:
            return removed, freed
        for _, path, size in sorted(entries):
            if total <= bound:
                break
            if keep is not None and path == keep:
                continue
            if _unlink(path):
                removed += 1
                freed += size
            total -= size  # gone either way (another build may have deleted it first)
        if removed:
            self.log(f"cache: evicted {removed} least recently used entries ({format_size(freed)}) to stay "
                     f"within {format_size(bound)}")
        return removed, freed

    def clear(self) -> tuple[int, int]:
        """Delete every entry and temporary file (and the emptied folders; nothing else in the folder).
        Returns (entries deleted, bytes freed)."""
        removed = freed = 0
        for path, st, is_tmp in list(self._files()):
            if _unlink(path) and not is_tmp:
                removed += 1
                freed += st.st_size
        for version in [d for d in self.root.glob("v*") if re.fullmatch(r"v\d+", d.name) and d.is_dir()]:
            for folder in [*version.iterdir(), version]:
                try:
                    folder.rmdir()
                except OSError:  # not empty (a build is writing there), not a folder, or already gone
                    pass
        return removed, freed

    def set_max_bytes(self, max_bytes: int) -> Path:
        """Record ``max_bytes`` as this folder's bound (``config.json``, written atomically; a set
        ``$LOWERING_CACHE_MAX_BYTES`` still wins). Raises OSError when the folder is not writable."""
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / _CONFIG
        fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"max_bytes": int(max_bytes)}, f)
            os.chmod(tmp, 0o644)
            os.replace(tmp, config)
        except BaseException:
            _unlink(Path(tmp))
            raise
        return config


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except OSError:
        return False

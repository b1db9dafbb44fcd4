"""Calibration data on disk, streamed one batch at a time.

DATA is a ``.npz`` file whose arrays are keyed by model input name and stacked along the batch axis
(axis 0), or a folder of such files read in sorted name order. For a model whose batch dimension is fixed
at B, every file holds a multiple of B samples and the model is fed B samples per run; for a model whose
batch dimension is symbolic, it is fed one sample per run (shape (1, ...)). A ``.npy`` file (or ``.npy``
files in the folder) stands for the only input of a single-input model; for a model with several inputs,
a folder may instead hold one ``<input name>.npy`` per input (the arrays a ``.npz`` would hold).

Nothing is loaded whole: :meth:`CalibrationData.open` reads every file's array headers (names, dtypes,
shapes) so that a bad file fails before any calibration work, and :meth:`CalibrationData.batches` then
reads one batch at a time straight out of the zip members (compressed or not), so a calibration set
larger than memory works. (A Fortran-ordered array cannot be read row by row; that one array is loaded
whole.)

Dtypes. An array must have the input's dtype, except that a float input also accepts float16 (widening
is exact) and float64 when every value is exactly a float32 (checked per batch; a float64 array of
ordinary floats such as ``x / 255.0`` is refused: convert it with ``.astype(np.float32)`` so that
rounding is the user's decision, not a silent one). An integer input accepts narrower integers of the
same signedness. NaN and Inf are refused, naming the file, input and sample. Pickled (object) arrays are
refused; nothing is unpickled.

Every error is a :class:`~lowering.errors.LoweringError` whose one-line message names the file, the
input and what was expected.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LoweringError


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, numpy dtype and shape (``None`` for a symbolic dimension)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def batch(self) -> int:
        """Samples per run: the fixed batch dimension, or 1 when it is symbolic."""
        return self.shape[0] if self.shape and self.shape[0] is not None else 1

    def expected(self) -> str:
        dims = ["N"] + ["?" if d is None else str(d) for d in self.shape[1:]]
        return f"({', '.join(dims)})" if len(dims) > 1 else "(N,)"


@dataclass
class _Member:
    """One array inside a file: where it is and what its header says."""

    key: str
    member: str | None  # zip member name; None for a plain .npy file
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    path: Path | None = None  # the .npy file holding it, when not the _File's own path


@dataclass
class _File:
    path: Path
    samples: int
    arrays: dict[str, _Member]  # by input name


class CalibrationData:
    """A validated calibration set: the files, the sample count, and a batch stream."""

    def __init__(self, root: Path, inputs: list[InputSpec], files: list[_File]):
        self.root = root
        self.inputs = inputs
        self.files = files
        self.samples = sum(f.samples for f in files)
        self.batch = inputs[0].batch if inputs else 1
        self._digest = hashlib.sha256()
        self._digest_done = False

    @classmethod
    def open(cls, path: str | Path, inputs: list[InputSpec]) -> CalibrationData:
        """Check ``path`` against the model's ``inputs`` (headers only) and return the data set."""
        root = Path(path)
        if not inputs:
            raise LoweringError(f"{root}: the model has no inputs to calibrate")
        for spec in inputs:
            if not spec.shape:
                raise LoweringError(f"input '{spec.name}' is a scalar; calibration data is stacked along a "
                                    "batch axis, so every input needs one")
        batches = {spec.batch for spec in inputs}
        if len(batches) > 1:
            raise LoweringError("the model's inputs have different batch sizes "
                                f"({', '.join(f'{s.name}: {s.batch}' for s in inputs)})")
        if root.is_dir():
            paths = sorted(p for p in root.iterdir() if p.suffix in (".npz", ".npy") and p.is_file())
            if not paths:
                raise LoweringError(f"{root}: the folder holds no .npz or .npy files")
        elif root.is_file():
            paths = [root]
        else:
            raise LoweringError(f"{root}: no such file or folder")
        if root.is_dir() and _named_npy(paths, inputs):
            files = [_scan_named_npy(root, paths, inputs)]
        else:
            files = [_scan(p, inputs) for p in paths]
        data = cls(root, inputs, files)
        if data.samples == 0:
            raise LoweringError(f"{root}: no calibration samples (every array has 0 samples)")
        return data

    def batches(self, limit: int | None = None,
                progress: Callable[[int], None] | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yield feeds of ``self.batch`` samples per input, reading one batch at a time.

        ``limit`` stops after that many samples (rounded up to whole batches). ``progress`` is called
        with the number of samples each batch adds. A full pass (no ``limit``) also computes
        :attr:`sha256`.
        """
        digest = hashlib.sha256() if limit is None else None
        done = 0
        for f in self.files:
            for feed in _read_file(f, self.inputs, self.batch):
                if digest is not None:
                    for name in sorted(feed):
                        a = feed[name]
                        digest.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
                        digest.update(a.tobytes())
                yield feed
                done += self.batch
                if progress is not None:
                    progress(self.batch)
                if limit is not None and done >= limit:
                    return
        if digest is not None:
            self._digest, self._digest_done = digest, True

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the samples as fed (names, dtypes, shapes, bytes), after one full pass."""
        return self._digest.hexdigest() if self._digest_done else None


# --- reading headers ----------------------------------------------------------------------------------

def _scan(path: Path, inputs: list[InputSpec]) -> _File:
    """Read the array headers of one file and check them against the inputs."""
    if path.suffix == ".npy":
        if len(inputs) != 1:
            raise LoweringError(f"{path}: a .npy file holds one array, but the model has {len(inputs)} "
                                f"inputs ({', '.join(s.name for s in inputs)}); use a .npz keyed by "
                                "input name")
        try:
            with open(path, "rb") as fh:
                shape, fortran, dtype = _read_header(fh)
        except (OSError, ValueError) as exc:
            raise LoweringError(f"{path}: cannot read as .npy ({_why(exc)})") from None
        members = {inputs[0].name: _Member(inputs[0].name, None, shape, dtype, fortran)}
    else:
        members = {}
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    key = info.filename[:-4]
                    with zf.open(info) as fh:
                        shape, fortran, dtype = _read_header(fh)
                    members[key] = _Member(key, info.filename, shape, dtype, fortran)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise LoweringError(f"{path}: cannot read as .npz ({_why(exc)})") from None
    return _check_members(path, inputs, members)


def _named_npy(paths: list[Path], inputs: list[InputSpec]) -> bool:
    """A folder of one ``<input name>.npy`` per input of a model with several inputs."""
    return (len(inputs) > 1 and all(p.suffix == ".npy" for p in paths)
            and sorted(p.stem for p in paths) == sorted(s.name for s in inputs))


def _scan_named_npy(root: Path, paths: list[Path], inputs: list[InputSpec]) -> _File:
    members = {}
    for p in paths:
        try:
            with open(p, "rb") as fh:
                shape, fortran, dtype = _read_header(fh)
        except (OSError, ValueError) as exc:
            raise LoweringError(f"{p}: cannot read as .npy ({_why(exc)})") from None
        members[p.stem] = _Member(p.stem, None, shape, dtype, fortran, p)
    return _check_members(root, inputs, members)


def _check_members(path: Path, inputs: list[InputSpec], members: dict[str, _Member]) -> _File:
    """Check the arrays found in ``path`` against the inputs: names, shapes, dtypes, sample counts."""
    names = [s.name for s in inputs]
    for spec in inputs:
        if spec.name not in members:
            held = ", ".join(sorted(members)) or "no arrays"
            raise LoweringError(f"{path}: missing input '{spec.name}' (expected an array of shape "
                                f"{spec.expected()} keyed '{spec.name}'; the file holds: {held})")
    for key, m in members.items():
        if key not in names:
            raise LoweringError(f"{path}: unknown input '{key}' (the model's inputs: {', '.join(names)})")
        if m.dtype.hasobject:
            raise LoweringError(f"{path}: input '{key}' is a pickled object array; expected a numeric array "
                                "(pickles are never loaded)")
    counts = {}
    for spec in inputs:
        m = members[spec.name]
        _check_shape(path, spec, m)
        _check_dtype(path, spec, m.dtype)
        counts[spec.name] = m.shape[0]
    if len(set(counts.values())) > 1:
        raise LoweringError(f"{path}: inputs hold different numbers of samples "
                            f"({', '.join(f'{k}: {v}' for k, v in counts.items())})")
    samples = next(iter(counts.values()))
    batch = inputs[0].batch
    if samples % batch:
        raise LoweringError(f"{path}: {samples} samples is not a multiple of the model's batch size {batch} "
                            f"(input '{inputs[0].name}' has shape {_fmt(inputs[0].shape)})")
    return _File(path, samples, {s.name: members[s.name] for s in inputs})


def _read_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh, max_header_size=1 << 20)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(fh, max_header_size=1 << 20)
    raise ValueError(f"unsupported .npy format version {version}")


def _check_shape(path: Path, spec: InputSpec, m: _Member) -> None:
    want = spec.shape[1:]
    got = m.shape[1:]
    if len(m.shape) != len(spec.shape) or any(w is not None and w != g for w, g in zip(want, got)):
        raise LoweringError(f"{path}: input '{spec.name}' has shape {_fmt(m.shape)}; expected "
                            f"{spec.expected()} (N samples stacked along axis 0 of the model's "
                            f"{_fmt(spec.shape)})")


def _check_dtype(path: Path, spec: InputSpec, dtype: np.dtype) -> None:
    want = spec.dtype
    got = dtype.newbyteorder("=")
    if got == want or _widening(got, want) or (want == np.float32 and got == np.float64):
        return
    raise LoweringError(f"{path}: input '{spec.name}' is {got}; expected {want}"
                        + (" (convert it with .astype(np.float32))" if want.kind == "f" else ""))


def _widening(got: np.dtype, want: np.dtype) -> bool:
    """An exact conversion: float16 -> float32/64, or a narrower integer of the same signedness."""
    if got.kind != want.kind or got.kind not in "fiu":
        return False
    return got.itemsize < want.itemsize


# --- reading batches ----------------------------------------------------------------------------------

def _read_file(f: _File, inputs: list[InputSpec], batch: int) -> Iterator[dict[str, np.ndarray]]:
    zipped = f.path.suffix == ".npz" and f.path.is_file()
    zf = zipfile.ZipFile(f.path) if zipped else None
    handles = []
    try:
        streams = {}
        for spec in inputs:
            m = f.arrays[spec.name]
            fh = zf.open(m.member) if zf is not None else open(m.path or f.path, "rb")
            handles.append(fh)
            streams[spec.name] = _ArrayStream(fh, m)
        for start in range(0, f.samples, batch):
            feed = {}
            for spec in inputs:
                raw = streams[spec.name].read(batch)
                feed[spec.name] = _convert(f.path, spec, raw, start)
            yield feed
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise LoweringError(f"{f.path}: cannot read calibration data ({_why(exc)})") from None
    finally:
        for fh in handles:
            fh.close()
        if zf is not None:
            zf.close()


class _ArrayStream:
    """Rows of one .npy array, read sequentially from an open file object."""

    def __init__(self, fh, m: _Member):
        shape, fortran, dtype = _read_header(fh)
        self.fh, self.dtype, self.row_shape = fh, dtype, tuple(shape[1:])
        self.row_bytes = int(math.prod(self.row_shape)) * dtype.itemsize
        self.whole = None
        self.pos = 0
        if fortran:  # column-major: no row can be read on its own, so this one array is loaded whole
            count = int(math.prod(shape))
            buf = fh.read(count * dtype.itemsize)
            if len(buf) != count * dtype.itemsize:
                raise EOFError(f"truncated array '{m.key}'")
            self.whole = np.frombuffer(buf, dtype=dtype).reshape(shape[::-1]).transpose()

    def read(self, rows: int) -> np.ndarray:
        if self.whole is not None:
            out = self.whole[self.pos:self.pos + rows]
            self.pos += rows
            return out
        want = rows * self.row_bytes
        buf = self.fh.read(want)
        if len(buf) != want:
            raise EOFError(f"truncated array: wanted {want} bytes, got {len(buf)}")
        return np.frombuffer(buf, dtype=self.dtype).reshape((rows,) + self.row_shape)


def _convert(path: Path, spec: InputSpec, raw: np.ndarray, start: int) -> np.ndarray:
    want = spec.dtype
    out = raw.astype(want.newbyteorder("="), copy=False)
    if raw.dtype.newbyteorder("=") == np.float64 and want == np.float32:
        back = out.astype(np.float64)
        lossy = ~((back == raw) | (np.isnan(raw) & np.isnan(back)))
        if lossy.any():
            sample = start + int(np.argwhere(lossy)[0][0])
            raise LoweringError(f"{path}: input '{spec.name}' is float64 and sample {sample} holds values "
                                "float32 cannot represent exactly; expected float32 (convert it with "
                                ".astype(np.float32))")
    if want.kind == "f":
        finite = np.isfinite(out)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            value = out[tuple(bad)]
            what = "NaN" if np.isnan(value) else "Inf"
            raise LoweringError(f"{path}: input '{spec.name}' sample {start + int(bad[0])} holds {what}; "
                                "calibration data must be finite")
    return np.ascontiguousarray(out)


def _fmt(shape) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({dims},)" if len(shape) == 1 else f"({dims})"


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__

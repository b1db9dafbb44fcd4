"""Executor for the cpu target: loads ``cpu/model.so`` through ctypes and runs a whole inference in one call.

Imports only the standard library, numpy and ctypes. The manifest entry it reads (written by
``targets/cpu``) names the library, weights and arena size, the CPU the library needs and the
input/output signature. The library's C ABI (version 1):

    int       lw_abi_version(void);
    long long lw_arena_bytes(void), lw_weights_bytes(void);
    int       lw_num_inputs(void), lw_num_outputs(void);
    long long lw_input_bytes(int i), lw_output_bytes(int i);  /* each input's / output's size in bytes */
    int       lw_run(const void *const *inputs, void *const *outputs, const void *weights, void *arena,
                     int threads);   /* threads <= 0: OpenMP default; returns 0, or a status in RUN_STATUS */
    int       lw_num_kernels(void); const char *lw_kernel_name(int);     /* optional: profiling */
    int       lw_run_profiled(<lw_run's arguments>, double *seconds); /* adds kernel i's time to seconds[i] */

Everything that could make the native call misbehave is checked in Python first: CPU flags before the
library is loaded (a missing flag is a message, never a SIGILL), ABI version, arena and weights sizes and
tensor counts at load, buffer sizes and contiguity at every run.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import stat
import tempfile
from pathlib import Path

import numpy as np

from ..errors import RuntimeLoadError, TargetUnavailableError

ABI_VERSION = 2
ALIGN = 64
#: How long libgomp's idle threads spin before they sleep, unless the user set GOMP_SPINCOUNT (libgomp reads
#: it once, when the first library using it loads). Its default, 300,000 spins, keeps an idle thread on its
#: core for about a millisecond: with another CPU-bound process on a 2-core machine, the spinning threads took
#: the core a descheduled team member needed, and a 2-thread kernel waited a scheduler time slice at a
#: barrier (MobileNetV2's 1x1 convs at 14x14: 2.6-4.7 ms instead of 0.03-0.07 ms, every run; the whole model
#: 389 ms instead of 3.5). 10,000 spins (tens of microseconds, longer than the gaps between one inference's
#: kernels) took that loaded run to 21 ms and cost nothing on an idle machine (MobileNetV2, 2 threads: 3.58
#: ms against 3.72 with the default); 1,000 spins made idle runs 20% slower (threads asleep between kernels).
GOMP_SPINCOUNT = "10000"
# lw_run's nonzero results (set by the generated kernels: targets/cpu/kernels_index.c)
RUN_STATUS = {
    3: "an index was out of range (a Gather, GatherElements or GatherND index outside its axis)",
    4: "a run-time operand contradicts the compiled shapes (Reduce* axes, Slice/Pad/Split/TopK/Resize "
       "parameters, Range bounds, ConstantOfShape's shape, OneHot's depth, a training-mode Dropout, DFT "
       "axis or dft_length, STFT frame_step/frame_length, a window's size, MelWeightMatrix sizes, RNN "
       "sequence_lens)",
}


def cpu_flags() -> set[str] | None:
    """The flags of /proc/cpuinfo, or None when it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def _machine() -> str:
    machine = platform.machine().lower()
    return "x86_64" if machine in ("x86_64", "amd64") else machine


def _aligned_buffer(nbytes: int) -> np.ndarray:
    """A zeroed uint8 buffer of ``nbytes`` whose data pointer is 64-byte aligned."""
    raw = np.zeros(max(nbytes, 1) + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + max(nbytes, 1)]


def _cache_dir() -> Path:
    """A private directory for loaded libraries (owned by this user, mode 0700), created if needed."""
    uid = getattr(os, "getuid", lambda: 0)()
    path = Path(tempfile.gettempdir()) / f"lowering-cpu-{uid}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077:
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="lowering-cpu-"))


def _library_file(data: bytes) -> Path:
    """Write the library to ``<cache>/<sha256>.so`` (reusing a verified existing copy) and return its path."""
    digest = hashlib.sha256(data).hexdigest()
    folder = _cache_dir()
    path = folder / f"{digest}.so"
    try:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
            return path
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".so.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o700)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class CpuExecutor:
    """Runs one cpu target of an artifact. Not thread-safe: the session serialises calls."""

    kind = "cpu"

    @staticmethod
    def check_requirements(entry: dict) -> str | None:
        """Why this machine cannot run the library (None when it can)."""
        requires = entry.get("requires", {})
        machine, here = requires.get("machine"), _machine()
        if machine and machine != here:
            return f"needs an {machine} CPU; this machine is {here}"
        needed = list(requires.get("cpu_flags", []))
        if not needed:
            return None
        have = cpu_flags()
        if have is None:
            return f"needs CPU flags {', '.join(needed)} but /proc/cpuinfo cannot be read to check them"
        missing = [f for f in needed if f not in have]
        if missing:
            isa = requires.get("isa", "its ISA level")
            return (
                f"needs CPU flags {', '.join(missing)} (built for {isa}); this CPU lacks them "
                "(rebuild with isa=x86-64-v3 or x86-64-v2 for a portable artifact"
                + (", or isa=x86-64-v4 without VNNI" if missing == ["avx512_vnni"] else "")
                + ")"
            )
        return None

    def __init__(self, entry: dict, read_member, threads: int | None = None):
        reason = self.check_requirements(entry)
        if reason is not None:
            raise TargetUnavailableError(f"cpu target: {reason}")
        if entry.get("abi") != ABI_VERSION:
            raise RuntimeLoadError(
                f"cpu target: library ABI {entry.get('abi')} is not supported "
                f"(this runtime reads ABI {ABI_VERSION})"
            )
        self.threads = int(threads or 0)
        signature = entry.get("signature", {})
        self._in_bytes = [_nbytes(t) for t in signature.get("inputs", [])]
        self._out_bytes = [_nbytes(t) for t in signature.get("outputs", [])]
        weights = read_member(entry["weights"])
        self._lib = self._load(read_member(entry["library"]), entry["library"])
        self._validate(entry, len(weights))
        self._weights = _aligned_buffer(len(weights))
        self._weights[: len(weights)] = np.frombuffer(weights, np.uint8)
        self._arena = _aligned_buffer(int(entry["arena_bytes"]))
        self._fixed = (self._weights.ctypes.data, self._arena.ctypes.data)  # both live as long as self
        self._kernel_names: list[str] | None = None
        # the pointer tables lw_run reads, filled at every run (calls are serialised by the session)
        self._in_ptrs = (ctypes.c_void_p * max(len(self._in_bytes), 1))()
        self._out_ptrs = (ctypes.c_void_p * max(len(self._out_bytes), 1))()

    def _load(self, data: bytes, member: str) -> ctypes.CDLL:
        os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
        try:
            lib = ctypes.CDLL(str(_library_file(data)))
        except OSError as exc:
            hint = (
                " (install the OpenMP runtime, e.g. `apt-get install libgomp1`)" if "gomp" in str(exc) else ""
            )
            raise RuntimeLoadError(f"cpu target: cannot load {member}: {exc}{hint}") from exc
        try:
            lib.lw_abi_version.restype = ctypes.c_int
            abi = lib.lw_abi_version()
        except AttributeError as exc:
            raise RuntimeLoadError(f"cpu target: {member} is not a lowering cpu library ({exc})") from exc
        if abi != ABI_VERSION:
            raise RuntimeLoadError(f"cpu target: {member} was built for runtime ABI {abi}, this runtime "
                                   f"speaks ABI {ABI_VERSION}: rebuild the artifact with this lowering")
        try:
            for name, restype in (
                ("lw_abi_version", ctypes.c_int),
                ("lw_arena_bytes", ctypes.c_longlong),
                ("lw_weights_bytes", ctypes.c_longlong),
                ("lw_num_inputs", ctypes.c_int),
                ("lw_num_outputs", ctypes.c_int),
                ("lw_input_bytes", ctypes.c_longlong),
                ("lw_output_bytes", ctypes.c_longlong),
                ("lw_run", ctypes.c_int),
            ):
                getattr(lib, name).restype = restype
            lib.lw_input_bytes.argtypes = lib.lw_output_bytes.argtypes = [ctypes.c_int]
        except AttributeError as exc:
            raise RuntimeLoadError(f"cpu target: {member} is not a lowering cpu library ({exc})") from exc
        lib.lw_run.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
        if hasattr(lib, "lw_run_profiled"):  # libraries built before profiling existed lack it
            lib.lw_num_kernels.restype = ctypes.c_int
            lib.lw_kernel_name.restype = ctypes.c_char_p
            lib.lw_kernel_name.argtypes = [ctypes.c_int]
            lib.lw_run_profiled.restype = ctypes.c_int
            lib.lw_run_profiled.argtypes = lib.lw_run.argtypes + [ctypes.c_void_p]
        return lib

    def _validate(self, entry: dict, weights_size: int) -> None:
        lib = self._lib
        checks = [
            ("ABI version", lib.lw_abi_version(), ABI_VERSION),
            ("arena bytes", lib.lw_arena_bytes(), int(entry["arena_bytes"])),
            ("weights bytes", lib.lw_weights_bytes(), weights_size),
            ("input count", lib.lw_num_inputs(), len(self._in_bytes)),
            ("output count", lib.lw_num_outputs(), len(self._out_bytes)),
        ]
        # the tensors' sizes are compiled into the library: a manifest that lies about a shape would make
        # lw_run read or write past the caller's buffers
        checks += [(f"input {i} bytes", lib.lw_input_bytes(i), n) for i, n in enumerate(self._in_bytes)]
        checks += [(f"output {i} bytes", lib.lw_output_bytes(i), n) for i, n in enumerate(self._out_bytes)]
        for what, library, expected in checks:
            if library != expected:
                raise RuntimeLoadError(
                    f"cpu target: the library's {what} is {library} but the manifest says {expected}"
                )

    def run(self, inputs: list[np.ndarray], outputs: list[np.ndarray],
            seconds: np.ndarray | None = None) -> None:
        """Run one inference: read ``inputs``, fill the preallocated ``outputs`` (C-contiguous). With
        ``seconds`` (float64, one per kernel, see ``kernel_names``) each kernel's wall time is added to it."""
        self._fill(self._in_ptrs, inputs, self._in_bytes, "input", writable=False)
        self._fill(self._out_ptrs, outputs, self._out_bytes, "output", writable=True)
        args = (self._in_ptrs, self._out_ptrs, *self._fixed, self.threads)
        if seconds is None:
            rc = self._lib.lw_run(*args)
        else:
            count = len(self.kernel_names())
            shape_ok = seconds.shape == (count,) and seconds.flags.c_contiguous
            if seconds.dtype != np.float64 or not shape_ok:
                raise ValueError(f"cpu target: seconds must be a contiguous float64 array of {count}")
            rc = self._lib.lw_run_profiled(*args, seconds.ctypes.data)
        if rc != 0:
            reason = f": {RUN_STATUS[rc]}" if rc in RUN_STATUS else ""
            raise RuntimeError(f"cpu target: lw_run failed with status {rc}{reason}")

    def kernel_names(self) -> list[str]:
        """The library's kernels in run order (the report's kernel records use the same names)."""
        if not hasattr(self._lib, "lw_run_profiled"):
            raise RuntimeLoadError("cpu target: this library was built without profiling (rebuild it)")
        if self._kernel_names is None:  # read once from the library
            count = self._lib.lw_num_kernels()
            self._kernel_names = [self._lib.lw_kernel_name(i).decode() for i in range(count)]
        return list(self._kernel_names)

    @staticmethod
    def _fill(table, arrays, sizes: list[int], role: str, writable: bool) -> None:
        """Check each array (C-contiguous, the right size, writable outputs) and put its address in table."""
        if len(arrays) != len(sizes):
            raise ValueError(f"cpu target: expected {len(sizes)} {role}s, got {len(arrays)}")
        for i, (a, size) in enumerate(zip(arrays, sizes)):
            if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or a.nbytes != size:
                raise ValueError(f"cpu target: {role} {i} must be a C-contiguous array of {size} bytes")
            try:  # a writable buffer's address through ctypes: 4x cheaper than ndarray.ctypes.data
                table[i] = ctypes.addressof(ctypes.c_char.from_buffer(a))
            except (TypeError, ValueError):  # read-only (or empty) arrays
                if writable and not a.flags.writeable:
                    raise ValueError(f"cpu target: {role} {i} is read-only") from None
                table[i] = a.ctypes.data


def _nbytes(tensor: dict) -> int:
    count = 1
    for d in tensor["shape"]:
        count *= int(d)
    return count * (2 if tensor["dtype"] == "bfloat16" else np.dtype(tensor["dtype"]).itemsize)

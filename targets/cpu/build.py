"""Compile generated C into the shared library the cpu target ships (deterministically).

- :func:`find_compiler`: ``options["cc"]``, else ``$CC``, else ``cc``, else ``gcc``; a clear
  :class:`~lowering.errors.LoweringError` when there is none.
- :func:`choose_isa`: the x86-64 micro-architecture level (v2/v3/v4, and v4 with AVX-512 VNNI) of the build
  machine, or an explicit override; the level fixes the SIMD width the kernels are generated for, whether
  the int8 GEMM uses ``vpdpbusd`` and the CPU flags a machine needs to run the library (recorded in the
  manifest, checked by the runtime before it loads anything).
- :func:`compile_shared`: ``-O3 -fopenmp -fPIC -shared`` in a private temporary directory with a fixed
  relative source name, so the same source and flags give a byte-identical library.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lowering.errors import LoweringError

#: /proc/cpuinfo flags each x86-64 level needs (cumulative), as the runtime checks them.
_V2 = ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")
_V3 = _V2 + ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
_V4 = _V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
_V4_VNNI = _V4 + ("avx512_vnni",)
ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "x86-64-v2": _V2,
    "x86-64-v3": _V3,
    "x86-64-v4": _V4,
    "x86-64-v4-vnni": _V4_VNNI,
}
ISA_ORDER = ("x86-64-v4-vnni", "x86-64-v4", "x86-64-v3", "x86-64-v2")


@dataclass(frozen=True)
class IsaLevel:
    """An instruction-set level and the GEMM blocking the kernels use on it (measured, see README)."""

    name: str  # "x86-64-v4", ... or "generic" off x86-64
    vec: int  # floats per SIMD vector
    mr: int  # micro-kernel rows (the broadcast operand, packed A)
    nr: int  # micro-kernel columns (the vector operand, packed B), a multiple of vec
    kc: int  # K block: a kc x nr B micro-panel stays in L1
    mc: int  # rows per GEMM task (multiple of mr)
    nc: int  # columns per GEMM task (multiple of nr)
    qmr: int = 4  # int8 GEMM micro-kernel rows (broadcast operand)
    qnr: int = 16  # int8 GEMM micro-kernel columns (int32 lanes of the vector operand), a multiple of vec
    vnni: bool = False  # the int8 GEMM uses AVX-512 VNNI (vpdpbusd); else exact 16-bit multiply-adds

    @property
    def cpu_flags(self) -> tuple[str, ...]:
        return ISA_FLAGS.get(self.name, ())

    @property
    def march(self) -> list[str]:
        if self.name not in ISA_FLAGS:
            return []
        if self.vnni:
            return ["-march=x86-64-v4", "-mavx512vnni"]
        return [f"-march={self.name}"]

    def defines(self) -> str:
        """The C preprocessor lines that fix the kernels' blocking."""
        values = {
            "LW_VEC": self.vec,
            "LW_MR": self.mr,
            "LW_NR": self.nr,
            "LW_KC": self.kc,
            "LW_MC": self.mc,
            "LW_NC": self.nc,
            "LW_QMR": self.qmr,
            "LW_QNR": self.qnr,
            "LW_VNNI": int(self.vnni),
        }
        return "".join(f"#define {k} {v}\n" for k, v in values.items())


# Register blocking measured on a 2-core AVX-512 Xeon (1 thread, peak 227-236 GFLOP/s): 12x32 with AVX-512
# (24 of the 32 zmm as accumulators: the micro-kernel alone runs at 93-96% of peak from L1, 8x32 at 88%;
# with the L2 prefetch of the next operand panel, transformer and conv GEMMs at 190-220 GFLOP/s, cold
# weights included; 14x32 measured no better), 6x16 with AVX2 (12 ymm, ~115), 4x16 with SSE (~38).
# kc = 256 keeps the 32 KB B micro-panel in L1 next to a 12 KB A micro-panel (384 would fill L1).
LEVELS = {
    "x86-64-v4-vnni": IsaLevel(
        "x86-64-v4-vnni", vec=16, mr=12, nr=32, kc=256, mc=192, nc=256, qmr=8, qnr=32, vnni=True
    ),
    "x86-64-v4": IsaLevel("x86-64-v4", vec=16, mr=12, nr=32, kc=256, mc=192, nc=256, qmr=4, qnr=32),
    "x86-64-v3": IsaLevel("x86-64-v3", vec=8, mr=6, nr=16, kc=256, mc=96, nc=256, qmr=4, qnr=16),
    "x86-64-v2": IsaLevel("x86-64-v2", vec=4, mr=4, nr=16, kc=256, mc=96, nc=256, qmr=4, qnr=8),
    "generic": IsaLevel("generic", vec=4, mr=4, nr=16, kc=256, mc=96, nc=256, qmr=4, qnr=8),
}
#: the level a VNNI level falls back to when a graph has no int8 GEMM (so it does not need the flag)
WITHOUT_VNNI = {"x86-64-v4-vnni": "x86-64-v4"}

# -fno-math-errno and -fno-trapping-math let gcc vectorize sqrt, floor and selects; neither changes results
# (no -ffast-math: IEEE semantics, NaN and infinities are kept).
BASE_FLAGS = [
    "-std=gnu11",
    "-O3",
    "-fopenmp",
    "-fPIC",
    "-shared",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fvisibility=hidden",
    "-frandom-seed=model",
]


def machine_cpu_flags() -> set[str]:
    """The flags line of /proc/cpuinfo (empty when unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def choose_isa(requested: str | None = None) -> IsaLevel:
    """The ISA level to build for: ``requested`` if given, else (or for ``"native"``) the best the build
    machine supports."""
    if requested == "native":
        requested = None
    if requested:
        if requested not in LEVELS or requested == "generic":
            raise LoweringError(
                f"unknown cpu arch '{requested}' for the cpu target (choose native or one of "
                f"{', '.join(ISA_ORDER)})"
            )
        return LEVELS[requested]
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return LEVELS["generic"]
    flags = machine_cpu_flags()
    for name in ISA_ORDER:
        if set(ISA_FLAGS[name]) <= flags:
            return LEVELS[name]
    return LEVELS["generic"]


def find_compiler(options: dict) -> list[str]:
    """The C compiler command: options["cc"], $CC, cc or gcc. Raises LoweringError when none is found."""
    explicit = options.get("cc") or os.environ.get("CC")
    if explicit:
        argv = shlex.split(str(explicit))
        if argv and (shutil.which(argv[0]) or (os.path.isfile(argv[0]) and os.access(argv[0], os.X_OK))):
            return argv
        raise LoweringError(
            f"no C compiler was found: CC={explicit!r} is not an executable; install gcc "
            "(e.g. `apt-get install gcc`) or point CC at a C compiler"
        )
    for name in ("cc", "gcc"):
        if shutil.which(name):
            return [name]
    raise LoweringError(
        "no C compiler was found (looked for $CC, cc and gcc); the cpu target needs one: "
        "install gcc (e.g. `apt-get install gcc`) or set CC"
    )


def compiler_version(cc: list[str]) -> str:
    """The first line of ``cc --version`` (recorded in the manifest)."""
    try:
        out = subprocess.run(cc + ["--version"], check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (out.stdout.splitlines() or ["unknown"])[0].strip()


def build_flags(isa: IsaLevel) -> list[str]:
    return BASE_FLAGS + isa.march


def compile_shared(source: str, cc: list[str], flags: list[str]) -> bytes:
    """Compile ``source`` into a shared library and return its bytes. Raises LoweringError on failure."""
    with tempfile.TemporaryDirectory(prefix="lowering-cpu-") as tmp:
        Path(tmp, "model.c").write_text(source)
        cmd = cc + flags + ["-o", "model.so", "model.c", "-lm"]
        try:
            proc = subprocess.run(cmd, check=False, cwd=tmp, capture_output=True, text=True, timeout=1800)
        except OSError as exc:
            raise LoweringError(
                f"no C compiler was found: running {cc[0]!r} failed ({exc}); install gcc "
                "(e.g. `apt-get install gcc`) or set CC"
            ) from exc
        if proc.returncode != 0:
            raise LoweringError(
                f"the C compiler failed building the cpu target ({shlex.join(cc)}):\n"
                + _first_errors(proc.stderr)
            )
        return Path(tmp, "model.so").read_bytes()


def _first_errors(stderr: str, limit: int = 12) -> str:
    lines = stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if "error" in line.lower()]
    start = max(0, errors[0] - 2) if errors else 0
    return "\n".join(lines[start : start + limit]) or "(no compiler output)"

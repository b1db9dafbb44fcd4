"""Build ``kernels.cu`` into a fatbin with nvcc, and check every kernel's resources.

The fatbin holds SASS for each architecture of ``ARCHS`` and PTX for ``PTX`` (JIT-compiled by the driver on
newer GPUs). Warnings are errors (``-Werror all-warnings``). ``--resource-usage`` makes ptxas report each
kernel's registers, spills and shared memory per architecture; :func:`check_resources` fails the build on
any spill, more than ``MAX_REGISTERS`` registers or more than ``MAX_STATIC_SMEM`` bytes of static shared
memory, naming the kernel. No GPU is needed for any of this.

nvcc is found from ``options["nvcc"]``, ``$NVCC``, ``nvcc`` on PATH, ``/usr/local/cuda/bin/nvcc`` and the
PyPI wheel (``nvidia-cuda-nvcc``, which installs ``site-packages/nvidia/cu13/bin/nvcc``), in that order.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lowering.errors import LoweringError

ARCHS = ("sm_80", "sm_90")
PTX = "compute_90"
COMPUTE_CAPABILITY_MIN = 8.0
MAX_REGISTERS = 255
MAX_STATIC_SMEM = 48 * 1024
TIMEOUT_S = 900


def gencode_flags(archs=ARCHS, ptx: str | None = PTX) -> list[str]:
    flags = []
    for arch in archs:
        flags += ["-gencode", f"arch=compute_{arch[3:]},code={arch}"]
    if ptx:
        flags += ["-gencode", f"arch={ptx},code={ptx}"]
    return flags


def build_flags(archs=ARCHS, ptx: str | None = PTX) -> list[str]:
    """nvcc flags of the fatbin build (recorded in the manifest; the paths are added at build time)."""
    return ["-fatbin", "-O3", "--no-compress", "-Werror", "all-warnings", "--resource-usage",
            *gencode_flags(archs, ptx)]


def find_nvcc(options: dict | None = None) -> str | None:
    """The nvcc command to use, or None when there is none."""
    options = options or {}
    for candidate in (options.get("nvcc"), os.environ.get("NVCC")):
        if candidate:
            return candidate
    found = shutil.which("nvcc")
    if found:
        return found
    for path in (Path("/usr/local/cuda/bin/nvcc"),
                 Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cu13" / "bin" / "nvcc"):
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def nvcc_version(nvcc: str) -> str:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = re.search(r"release [\d.]+, V([\d.]+)", out)
    return f"nvcc {match.group(1)}" if match else "nvcc (unknown version)"


@dataclass
class KernelResources:
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    smem: int = 0

    def to_json(self) -> dict:
        return {"registers": self.registers, "spill_stores": self.spill_stores,
                "spill_loads": self.spill_loads, "stack_bytes": self.stack, "smem_bytes": self.smem}


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_resource_usage(text: str) -> dict[str, dict[str, KernelResources]]:
    """ptxas's ``--resource-usage`` report -> {kernel: {arch: resources}}."""
    usage: dict[str, dict[str, KernelResources]] = {}
    current: KernelResources | None = None
    for line in text.splitlines():
        entry = _ENTRY.search(line)
        if entry:
            current = usage.setdefault(entry.group(1), {}).setdefault(entry.group(2), KernelResources())
            continue
        if current is None:
            continue
        frame = _FRAME.search(line)
        if frame:
            current.stack, current.spill_stores, current.spill_loads = (int(g) for g in frame.groups())
        used = _USED.search(line)
        if used:
            current.registers = int(used.group(1))
            smem = _SMEM.search(line)
            current.smem = int(smem.group(1)) if smem else 0
    return usage


def check_resources(usage: dict[str, dict[str, KernelResources]], kernels: list[str],
                    archs=ARCHS) -> None:
    """Fail on a kernel missing from an architecture's report, a spill, or a resource above its limit."""
    problems = []
    for name in kernels:
        for arch in archs:
            res = usage.get(name, {}).get(arch)
            if res is None:
                problems.append(f"{name}: no {arch} code was compiled")
                continue
            if res.spill_stores or res.spill_loads:
                problems.append(f"{name} ({arch}): spills registers ({res.spill_stores} bytes stored, "
                                f"{res.spill_loads} bytes loaded)")
            if res.registers > MAX_REGISTERS:
                problems.append(f"{name} ({arch}): uses {res.registers} registers (limit {MAX_REGISTERS})")
            if res.smem > MAX_STATIC_SMEM:
                problems.append(f"{name} ({arch}): uses {res.smem} bytes of static shared memory "
                                f"(limit {MAX_STATIC_SMEM})")
    if problems:
        raise LoweringError("cuda target: kernel resource check failed: " + "; ".join(problems))


def compile_fatbin(source: str, nvcc: str, flags: list[str]) -> tuple[bytes, str]:
    """Compile ``source`` with ``nvcc flags``; return the fatbin and ptxas's report (stderr + stdout)."""
    with tempfile.TemporaryDirectory(prefix="lowering-cuda-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(source)
        try:
            proc = subprocess.run([nvcc, *flags, "-o", str(out), str(src)], capture_output=True, text=True,
                                  timeout=TIMEOUT_S, cwd=tmp)
        except FileNotFoundError:
            raise LoweringError(f"cuda target: nvcc '{nvcc}' not found") from None
        except subprocess.TimeoutExpired:
            raise LoweringError(f"cuda target: nvcc took longer than {TIMEOUT_S} s") from None
        report = proc.stderr + proc.stdout
        if proc.returncode != 0 or not out.is_file():
            errors = "\n".join(line for line in report.splitlines() if "ptxas info" not in line
                               and not line.startswith("    "))
            raise LoweringError(f"cuda target: nvcc failed (exit {proc.returncode}):\n{errors.strip()}")
        return out.read_bytes(), report

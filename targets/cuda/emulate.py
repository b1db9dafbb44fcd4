"""Run a cuda-target build without a GPU: its kernels.cu compiled as host C++, behind a simulated driver.

A thread-independent kernel is emulated by running every thread of every block in turn; a kernel whose
text uses ``__syncthreads`` (block-cooperative: ``__shared__`` tiles) runs each block's threads as fibers
that all meet at every barrier, and a divergent barrier fails the launch naming the kernel (``emulate.h``
explains both and defines the CUDA keywords away). :class:`EmulatedKernels` compiles ``kernels.cu`` with
g++ (``-Wall -Werror``: the same source nvcc builds) plus one generated wrapper per kernel,
``lw_emu_<kernel>(void **params, grid, block)`` (0, or -1 with ``lw_emu_error_text()`` set), which takes
the kernel parameters exactly as ``cuLaunchKernel`` does (each ``params[i]`` points at a pointer value).

:class:`EmulatedDriver` implements the methods of ``runtime.backends.cuda.Driver`` over host memory:
"device" allocations are host buffers (filled with NaN bytes, as uninitialised device memory is garbage,
and followed by guard bytes that :meth:`EmulatedDriver.check_guards` verifies), copies are memmoves,
``get_function`` checks that the kernel is in the fatbin image and in the emulated library, and ``launch``
checks the launch limits and calls the wrapper. So :func:`run_emulated` runs the real ``CudaExecutor``
(allocation, parameter packing, copies, the launch loop) on the emulated kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from lowering.errors import LoweringError
from runtime.backends.cuda import CudaError, CudaExecutor

HEADER = Path(__file__).with_name("emulate.h")
GUARD = 256  # guard bytes after every emulated allocation
GUARD_BYTE = 0xA5
CTYPES = {"float32": "float"}


def find_host_compiler() -> str | None:
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


_KERNEL = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\(')


def cooperative_kernels(source: str) -> set[str]:
    """The kernels of ``source`` whose text (up to the next kernel) uses ``__syncthreads``."""
    starts = [(m.start(), m.group(1)) for m in _KERNEL.finditer(source)]
    found = set()
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(source)
        if "__syncthreads" in source[start:end]:
            found.add(name)
    return found


def driver_source(source: str, steps: list[dict]) -> str:
    """The emulator's translation unit: emulate.h, kernels.cu, and one launch wrapper per kernel."""
    cooperative = cooperative_kernels(source)
    wrappers, seen = [], set()
    for step in steps:
        name = step["kernel"]
        if name in seen:
            continue
        seen.add(name)
        casts = []
        for i, arg in enumerate(step["args"]):
            ctype = CTYPES[arg.get("dtype", "float32")]
            qualified = f"const {ctype} *" if arg.get("access") == "read" else f"{ctype} *"
            casts.append(f"*({qualified}const *)lw_emu_params[{i}]")
        wrappers.append(
            f"static void lw_emu_body_{name}(void) {{ {name}({', '.join(casts)}); }}\n"
            f'extern "C" int lw_emu_{name}(void **params, const unsigned *grid, const unsigned *block) {{\n'
            f'    return lw_emu_launch("{name}", params, grid, block, lw_emu_body_{name}, '
            f"{int(name in cooperative)});\n"
            "}\n"
        )
    return (f'#include "{HEADER.name}"\n'
            "#pragma GCC diagnostic ignored \"-Wunused-function\"\n"
            "#line 1 \"kernels.cu\"\n"
            + source + "\n/* ---- emulator launch wrappers ---- */\n" + "\n".join(wrappers))


class EmulatedKernels:
    """kernels.cu built as a host shared library with a launch wrapper per kernel of ``steps``."""

    def __init__(self, source: str, steps: list[dict], cxx: str | None = None):
        cxx = cxx or find_host_compiler()
        if cxx is None:
            raise LoweringError("cuda emulator: no C++ compiler (g++) found")
        text = driver_source(source, steps)
        self._tmp = tempfile.TemporaryDirectory(prefix="lowering-cuda-emu-")
        folder = Path(self._tmp.name)
        shutil.copy(HEADER, folder / HEADER.name)
        src = folder / "emulated.cpp"
        src.write_text(text)
        lib = folder / f"emu_{hashlib.sha256(text.encode()).hexdigest()[:16]}.so"
        cmd = [cxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror", "-o", str(lib),
               str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder)
        if proc.returncode != 0:
            raise LoweringError(f"cuda emulator: {cxx} failed to compile kernels.cu:\n{proc.stderr.strip()}")
        self.lib = ctypes.CDLL(str(lib))
        self.names = {step["kernel"] for step in steps}

    def wrapper(self, name: str):
        fn = getattr(self.lib, f"lw_emu_{name}")
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint)]
        fn.restype = ctypes.c_int
        return fn

    def error_text(self) -> str:
        fn = self.lib.lw_emu_error_text
        fn.restype = ctypes.c_char_p
        return fn().decode(errors="replace")


class EmulatedDriver:
    """The ``runtime.backends.cuda.Driver`` methods over host memory and :class:`EmulatedKernels`."""

    MAX_BLOCK_THREADS = 1024
    MAX_GRID = (2**31 - 1, 65535, 65535)
    MAX_SMEM = 48 * 1024

    def __init__(self, kernels: EmulatedKernels, compute_capability=(9, 0)):
        self.kernels = kernels
        self.capability = compute_capability
        self.buffers: dict[int, tuple[np.ndarray, int]] = {}  # address -> (backing array, size)
        self.freed: list[int] = []
        self.launches: list[str] = []
        self._image = b""
        self._functions: dict[int, str] = {}

    # errors, device, context
    def error_text(self, result: int) -> str:
        return f"CUresult {result}"

    def check(self, result: int, what: str) -> None:
        if result:
            raise CudaError(f"cuda target: {what} failed ({self.error_text(result)})")

    def init(self) -> int:
        return 0

    def driver_version(self) -> int:
        return 13000

    def device_count(self) -> int:
        return 1

    def device(self, ordinal: int) -> int:
        return ordinal

    def compute_capability(self, device: int) -> tuple[int, int]:
        return self.capability

    def device_name(self, device: int) -> str:
        return "emulated GPU"

    def primary_context(self, device: int) -> int:
        return 1

    def release_primary_context(self, device: int) -> None:
        pass

    def set_current(self, ctx: int) -> None:
        assert ctx == 1

    def synchronize(self) -> None:
        pass

    # modules
    def load_module(self, image: bytes) -> int:
        self._image = bytes(image)
        return 1

    def get_function(self, module: int, name: str) -> int:
        if name.encode() + b"\0" not in self._image:
            raise CudaError(f"cuda target: cuModuleGetFunction('{name}') failed (CUDA_ERROR_NOT_FOUND: the "
                            "kernel is not in kernels.fatbin)")
        handle = len(self._functions) + 1
        self._functions[handle] = name
        return handle

    def unload_module(self, module: int) -> None:
        self._image = b""

    # memory
    def alloc(self, nbytes: int) -> int:
        backing = np.full(nbytes + GUARD + 64, 0xFF, np.uint8)  # NaN floats until written
        start = -backing.ctypes.data % 64
        address = backing.ctypes.data + start
        backing[start + nbytes:start + nbytes + GUARD] = GUARD_BYTE
        self.buffers[address] = (backing, nbytes)
        return address

    def free(self, ptr: int) -> None:
        self.check_guards()
        self.buffers.pop(ptr)
        self.freed.append(ptr)

    def _span(self, ptr: int, nbytes: int) -> None:
        for base, (_, size) in self.buffers.items():
            if base <= ptr and ptr + nbytes <= base + size:
                return
        raise CudaError(f"cuda target: a copy of {nbytes} bytes at {ptr:#x} is outside every allocation")

    def copy_to_device(self, dst: int, src: int, nbytes: int) -> None:
        self._span(dst, nbytes)
        ctypes.memmove(dst, src, nbytes)

    def copy_to_host(self, dst: int, src: int, nbytes: int) -> None:
        self._span(src, nbytes)
        ctypes.memmove(dst, src, nbytes)

    def check_guards(self) -> None:
        for base, (backing, size) in self.buffers.items():
            start = base - backing.ctypes.data
            guard = backing[start + size:start + size + GUARD]
            if not (guard == GUARD_BYTE).all():
                raise AssertionError(f"a kernel wrote past the end of the {size}-byte buffer at {base:#x}")

    # launches
    def launch(self, function: int, grid, block, smem: int, params, what: str) -> None:
        name = self._functions[function]
        threads = block[0] * block[1] * block[2]
        if threads > self.MAX_BLOCK_THREADS or any(g > m for g, m in zip(grid, self.MAX_GRID)):
            raise CudaError(f"cuda target: cuLaunchKernel({what}) failed (CUDA_ERROR_INVALID_VALUE: grid "
                            f"{list(grid)}, block {list(block)})")
        if smem > self.MAX_SMEM:
            raise CudaError(f"cuda target: cuLaunchKernel({what}) failed (too much shared memory)")
        grid_arr = (ctypes.c_uint * 3)(*grid)
        block_arr = (ctypes.c_uint * 3)(*block)
        if self.kernels.wrapper(name)(ctypes.cast(params, ctypes.c_void_p), grid_arr, block_arr):
            raise CudaError(f"cuda target: kernel {what} failed on the emulator: {self.kernels.error_text()}")
        self.launches.append(name)
        self.check_guards()


def emulated_executor(entry: dict, read_member, cxx: str | None = None
                      ) -> tuple[CudaExecutor, EmulatedDriver]:
    """A real ``CudaExecutor`` for a cuda manifest entry, over the emulated kernels."""
    source = read_member(entry["source"]).decode()
    kernels = EmulatedKernels(source, entry["launch_plan"], cxx)
    driver = EmulatedDriver(kernels)
    return CudaExecutor(entry, read_member, driver=driver), driver


def run_emulated(entry: dict, read_member, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run a cuda target (manifest entry + member reader) once on ``inputs``; return its outputs."""
    executor, driver = emulated_executor(entry, read_member)
    outputs = [np.empty(t["shape"], t["dtype"]) for t in entry["signature"]["outputs"]]
    executor.run([np.ascontiguousarray(a) for a in inputs], outputs)
    driver.check_guards()
    executor.close()
    return outputs


class EmulatedSession:
    """The parts of ``runtime.Session`` that ``lower verify`` uses, for an artifact's cuda target run on the
    emulator (``lower verify --target cuda --emulate``): what a machine without a GPU can check of it."""

    def __init__(self, path):
        from runtime.artifact import open_artifact
        from runtime.session import TensorInfo

        self.artifact = open_artifact(path)
        entry = self.artifact.targets.get("cuda")
        if entry is None:
            raise LoweringError(f"{path}: has no cuda target to emulate (built: "
                                f"{', '.join(sorted(self.artifact.targets)) or 'none'})")
        self.target = "cuda (emulated on the CPU)"
        self.inputs = [TensorInfo.from_manifest(e) for e in self.artifact.manifest["inputs"]]
        self.outputs = [TensorInfo.from_manifest(e) for e in self.artifact.manifest["outputs"]]
        self._entry = entry

    def run(self, output_names, feed: dict) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(feed[i.name], dtype=i.dtype) for i in self.inputs]
        outputs = run_emulated(self._entry, self.artifact.read, arrays)
        if output_names is None:
            return outputs
        index = {o.name: k for k, o in enumerate(self.outputs)}
        return [outputs[index[name]] for name in output_names]

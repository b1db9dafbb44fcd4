"""Executor for the cuda target: the CUDA driver API (``libcuda.so.1``) through ctypes, no compiled host code.

Imports only the standard library, numpy and ctypes. The manifest entry it reads (written by
``targets/cuda``) names the fatbin (``cuModuleLoadData`` takes it as is), the weights, the arena size, the
input/output signature, what the GPU must have (``requires``) and the ``launch_plan``: one step per kernel
launch, each ``{"kind": "kernel", "kernel": NAME, "grid": [x, y, z], "block": [x, y, z], "smem": BYTES,
"args": [...]}`` with one argument per kernel parameter, all device pointers:

    {"kind": "arena",   "offset": BYTES}    the planned intermediates
    {"kind": "weights", "offset": BYTES}    cuda/weights.bin, copied to the device once
    {"kind": "input",   "index": I}         graph input I (copied in at every run)
    {"kind": "output",  "index": I}         graph output I (copied out at every run)

Load: ``cuInit``, the device's primary context (``cuDevicePrimaryCtxRetain`` + ``cuCtxSetCurrent``, the
context cudart and so cuBLASLt use), ``cuModuleLoadData`` of the fatbin (the driver picks the SASS of the
GPU's architecture, else JIT-compiles the PTX), ``cuModuleGetFunction`` per plan kernel, and one
``cuMemAlloc_v2`` each for the arena, the weights and every input and output; every step's kernel
parameters are packed once (a ``void *[]`` of pointers to the ``CUdeviceptr`` values). Run: host-to-device
copies of the inputs, ``cuLaunchKernel`` per step on the default stream, ``cuCtxSynchronize``, device-to-
host copies of the outputs. Every ``CUresult`` is checked and reported with ``cuGetErrorName`` /
``cuGetErrorString``.

NOTE: written from the driver API documentation and exercised here only through a simulated driver (tests
run the same code against the kernel emulator); the path over a real GPU has not been executed yet.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from ..errors import RuntimeLoadError, TargetUnavailableError

ABI_VERSION = 1
DRIVER_LIBRARY = "libcuda.so.1"
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
#: device allocations are at least this large (cuMemAlloc refuses 0 bytes)
MIN_ALLOCATION = 256

_driver_lock = threading.Lock()
_driver_cache: dict[str, object] = {}


class CudaError(RuntimeError):
    """A CUDA driver call failed; the message names the call and the driver's error name and text."""


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types of every driver function the executor calls."""
    c_int, c_uint, c_size, c_void_p, c_u64 = (ctypes.c_int, ctypes.c_uint, ctypes.c_size_t, ctypes.c_void_p,
                                              ctypes.c_uint64)
    p_int, p_void, p_u64 = ctypes.POINTER(c_int), ctypes.POINTER(c_void_p), ctypes.POINTER(c_u64)
    signatures = {
        "cuInit": [c_uint],
        "cuDriverGetVersion": [p_int],
        "cuDeviceGetCount": [p_int],
        "cuDeviceGet": [p_int, c_int],
        "cuDeviceGetAttribute": [p_int, c_int, c_int],
        "cuDeviceGetName": [ctypes.c_char_p, c_int, c_int],
        "cuDevicePrimaryCtxRetain": [p_void, c_int],
        "cuDevicePrimaryCtxRelease_v2": [c_int],
        "cuCtxSetCurrent": [c_void_p],
        "cuCtxSynchronize": [],
        "cuModuleLoadData": [p_void, c_void_p],
        "cuModuleGetFunction": [p_void, c_void_p, ctypes.c_char_p],
        "cuModuleUnload": [c_void_p],
        "cuMemAlloc_v2": [p_u64, c_size],
        "cuMemFree_v2": [c_u64],
        "cuMemcpyHtoD_v2": [c_u64, c_void_p, c_size],
        "cuMemcpyDtoH_v2": [c_void_p, c_u64, c_size],
        "cuLaunchKernel": [c_void_p, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_void_p,
                           p_void, p_void],
        "cuGetErrorName": [c_int, ctypes.POINTER(ctypes.c_char_p)],
        "cuGetErrorString": [c_int, ctypes.POINTER(ctypes.c_char_p)],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = c_int  # CUresult


class Driver:
    """The driver calls the executor makes, as Python methods (handles and device pointers are ints).

    Tests substitute an object with the same methods (a simulated driver) to run the executor's logic
    without a GPU."""

    def __init__(self, lib: ctypes.CDLL):
        _declare(lib)
        self.lib = lib

    # --- errors ------------------------------------------------------------------------------------
    def error_text(self, result: int) -> str:
        name, text = ctypes.c_char_p(), ctypes.c_char_p()
        got_name = self.lib.cuGetErrorName(result, ctypes.byref(name)) == 0 and name.value
        got_text = self.lib.cuGetErrorString(result, ctypes.byref(text)) == 0 and text.value
        return (f"{name.value.decode() if got_name else f'CUresult {result}'}"
                + (f": {text.value.decode()}" if got_text else ""))

    def check(self, result: int, what: str) -> None:
        if result != 0:
            raise CudaError(f"cuda target: {what} failed ({self.error_text(result)})")

    # --- device and context -------------------------------------------------------------------------
    def init(self) -> int:
        """cuInit(0); returns its CUresult (check_requirements turns a failure into a reason)."""
        return self.lib.cuInit(0)

    def driver_version(self) -> int:
        v = ctypes.c_int()
        self.check(self.lib.cuDriverGetVersion(ctypes.byref(v)), "cuDriverGetVersion")
        return v.value

    def device_count(self) -> int:
        n = ctypes.c_int()
        self.check(self.lib.cuDeviceGetCount(ctypes.byref(n)), "cuDeviceGetCount")
        return n.value

    def device(self, ordinal: int) -> int:
        d = ctypes.c_int()
        self.check(self.lib.cuDeviceGet(ctypes.byref(d), ordinal), f"cuDeviceGet({ordinal})")
        return d.value

    def compute_capability(self, device: int) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        get = self.lib.cuDeviceGetAttribute
        self.check(get(ctypes.byref(major), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
                   "cuDeviceGetAttribute(major)")
        self.check(get(ctypes.byref(minor), CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
                   "cuDeviceGetAttribute(minor)")
        return major.value, minor.value

    def device_name(self, device: int) -> str:
        buf = ctypes.create_string_buffer(256)
        if self.lib.cuDeviceGetName(buf, len(buf), device) != 0:
            return f"device {device}"
        return buf.value.decode(errors="replace")

    def primary_context(self, device: int) -> int:
        ctx = ctypes.c_void_p()
        self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device), "cuDevicePrimaryCtxRetain")
        return ctx.value or 0

    def release_primary_context(self, device: int) -> None:
        self.check(self.lib.cuDevicePrimaryCtxRelease_v2(device), "cuDevicePrimaryCtxRelease")

    def set_current(self, ctx: int) -> None:
        self.check(self.lib.cuCtxSetCurrent(ctypes.c_void_p(ctx)), "cuCtxSetCurrent")

    def synchronize(self) -> None:
        self.check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize (a kernel failed)")

    # --- modules ------------------------------------------------------------------------------------
    def load_module(self, image: bytes) -> int:
        module = ctypes.c_void_p()
        buf = ctypes.create_string_buffer(image, len(image))  # a stable copy for the call
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), buf),
                   "cuModuleLoadData (loading kernels.fatbin)")
        return module.value or 0

    def get_function(self, module: int, name: str) -> int:
        fn = ctypes.c_void_p()
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(fn), ctypes.c_void_p(module), name.encode()),
                   f"cuModuleGetFunction('{name}')")
        return fn.value or 0

    def unload_module(self, module: int) -> None:
        self.check(self.lib.cuModuleUnload(ctypes.c_void_p(module)), "cuModuleUnload")

    # --- memory -------------------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self.check(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), nbytes), f"cuMemAlloc({nbytes} bytes)")
        return ptr.value

    def free(self, ptr: int) -> None:
        self.check(self.lib.cuMemFree_v2(ptr), "cuMemFree")

    def copy_to_device(self, dst: int, src: int, nbytes: int) -> None:
        self.check(self.lib.cuMemcpyHtoD_v2(dst, ctypes.c_void_p(src), nbytes), "cuMemcpyHtoD")

    def copy_to_host(self, dst: int, src: int, nbytes: int) -> None:
        self.check(self.lib.cuMemcpyDtoH_v2(ctypes.c_void_p(dst), src, nbytes), "cuMemcpyDtoH")

    # --- launches -----------------------------------------------------------------------------------
    def launch(self, function: int, grid, block, smem: int, params, what: str) -> None:
        """cuLaunchKernel on the default stream; ``params`` is the ``void *[]`` of :func:`pack_params`."""
        result = self.lib.cuLaunchKernel(ctypes.c_void_p(function), *grid, *block, smem, None, params, None)
        self.check(result, f"cuLaunchKernel({what})")


def load_driver() -> Driver:
    """The process's driver wrapper (raises OSError when libcuda.so.1 cannot be loaded)."""
    with _driver_lock:
        driver = _driver_cache.get("driver")
        if driver is None:
            driver = Driver(ctypes.CDLL(DRIVER_LIBRARY))
            _driver_cache["driver"] = driver
        return driver


def resolve_arg(arg: dict, arena: int, weights: int, inputs: list[int], outputs: list[int]) -> int:
    """The device address a launch-plan argument names, given the base addresses of the buffers."""
    kind = arg.get("kind")
    if kind == "arena":
        return arena + int(arg["offset"])
    if kind == "weights":
        return weights + int(arg["offset"])
    if kind == "input":
        return inputs[int(arg["index"])]
    if kind == "output":
        return outputs[int(arg["index"])]
    raise RuntimeLoadError(f"cuda target: launch-plan argument of unknown kind {kind!r}")


class PackedParams:
    """A kernel's parameters as cuLaunchKernel reads them: ``values`` holds each CUdeviceptr (64-bit), and
    ``array`` is the ``void *[]`` whose entry i points at value i. Both stay alive as long as this object."""

    def __init__(self, pointers: list[int]):
        n = len(pointers)
        self.values = (ctypes.c_uint64 * max(n, 1))(*pointers)
        base = ctypes.addressof(self.values)
        size = ctypes.sizeof(ctypes.c_uint64)
        self.array = (ctypes.c_void_p * max(n, 1))(*[base + i * size for i in range(n)])
        self.count = n

    def pointer_values(self) -> list[int]:
        """Read the pointers back through the ``void *[]`` (what the driver does)."""
        return [ctypes.c_uint64.from_address(self.array[i]).value for i in range(self.count)]


def pack_params(step: dict, arena: int, weights: int, inputs: list[int], outputs: list[int]) -> PackedParams:
    return PackedParams([resolve_arg(a, arena, weights, inputs, outputs) for a in step["args"]])


def validate_plan(entry: dict) -> None:
    """Refuse a launch plan this runtime cannot run, before any device work."""
    plan = entry.get("launch_plan")
    if not isinstance(plan, list):
        raise RuntimeLoadError("cuda target: the manifest has no launch_plan")
    n_in = len(entry.get("signature", {}).get("inputs", []))
    n_out = len(entry.get("signature", {}).get("outputs", []))
    arena, weights = int(entry.get("arena_bytes", 0)), int(entry.get("weights_bytes", 0))
    for i, step in enumerate(plan):
        if step.get("kind", "kernel") != "kernel":
            raise RuntimeLoadError(f"cuda target: step {i} is a {step.get('kind')!r} step; this runtime runs "
                                   "kernel steps only (upgrade the runtime)")
        for key in ("grid", "block"):
            dims = step.get(key)
            if not (isinstance(dims, list) and len(dims) == 3 and all(int(d) >= 1 for d in dims)):
                raise RuntimeLoadError(f"cuda target: step {i} ({step.get('kernel')}) has a bad {key} {dims}")
        for arg in step.get("args", []):
            kind = arg.get("kind")
            if kind in ("arena", "weights"):
                limit = arena if kind == "arena" else weights
                if not 0 <= int(arg["offset"]) <= limit:
                    raise RuntimeLoadError(f"cuda target: step {i} points past the {kind} ({arg['offset']})")
            elif kind in ("input", "output"):
                if not 0 <= int(arg["index"]) < (n_in if kind == "input" else n_out):
                    raise RuntimeLoadError(f"cuda target: step {i} names {kind} {arg['index']}, which "
                                           "does not exist")
            else:
                raise RuntimeLoadError(f"cuda target: step {i} has an argument of unknown kind {kind!r}")


class CudaExecutor:
    """Runs one cuda target of an artifact on device 0 (choose the GPU with CUDA_VISIBLE_DEVICES). Not
    thread-safe: the session serialises calls."""

    kind = "cuda"

    @staticmethod
    def check_requirements(entry: dict, driver: Driver | None = None) -> str | None:
        """Why this machine cannot run the target (None when it can)."""
        if driver is None:
            try:
                driver = load_driver()
            except OSError:
                return f"no NVIDIA driver ({DRIVER_LIBRARY} not found)"
            except AttributeError as exc:
                return f"{DRIVER_LIBRARY} lacks a CUDA driver function ({exc})"
        requires = entry.get("requires", {})
        try:
            result = driver.init()
            if result != 0:
                return f"the CUDA driver did not initialise ({driver.error_text(result)})"
            version = driver.driver_version()
            needed = int(requires.get("driver_version_min", 0))
            if version < needed:
                return (f"the NVIDIA driver supports CUDA {version // 1000}.{version % 1000 // 10}; these "
                        f"kernels need CUDA {needed // 1000}.{needed % 1000 // 10} or newer "
                        "(update the driver)")
            if driver.device_count() < 1:
                return "no CUDA device"
            device = driver.device(0)
            major, minor = driver.compute_capability(device)
        except CudaError as exc:
            return str(exc)
        minimum = float(requires.get("compute_capability_min", 0.0))
        if major + minor / 10 < minimum - 1e-9:
            return (f"{driver.device_name(device)} has compute capability {major}.{minor}; these kernels "
                    f"need {minimum:.1f} or newer")
        return None

    def __init__(self, entry: dict, read_member, threads: int | None = None, driver: Driver | None = None):
        del threads  # a GPU has no thread-count knob
        self._driver = None
        self._device = 0
        self._steps: list = []
        self._allocations: list[int] = []
        self._module = 0
        self._context = 0
        if entry.get("abi") != ABI_VERSION:
            raise RuntimeLoadError(f"cuda target: kernel ABI {entry.get('abi')} is not supported "
                                   f"(this runtime reads ABI {ABI_VERSION})")
        validate_plan(entry)
        if driver is None:
            reason = self.check_requirements(entry)
            if reason is not None:
                raise TargetUnavailableError(f"cuda target: {reason}")
            driver = load_driver()
        else:
            driver.init()
        self._driver = driver
        signature = entry.get("signature", {})
        self._in_bytes = [_nbytes(t) for t in signature.get("inputs", [])]
        self._out_bytes = [_nbytes(t) for t in signature.get("outputs", [])]
        weights = read_member(entry["weights"])
        if len(weights) != int(entry.get("weights_bytes", len(weights))):
            raise RuntimeLoadError(f"cuda target: {entry['weights']} has {len(weights)} bytes but the "
                                   f"manifest says {entry['weights_bytes']}")
        fatbin = read_member(entry["fatbin"])
        self._device = driver.device(0)
        self._context = driver.primary_context(self._device)
        try:
            driver.set_current(self._context)
            self._module = driver.load_module(fatbin)
            plan = entry["launch_plan"]
            names = sorted({s["kernel"] for s in plan})
            functions = {name: driver.get_function(self._module, name) for name in names}
            arena = self._alloc(int(entry["arena_bytes"]))
            weights_ptr = self._alloc(len(weights))
            if weights:
                host = np.frombuffer(weights, np.uint8)
                driver.copy_to_device(weights_ptr, host.ctypes.data, len(weights))
            self._inputs = [self._alloc(n) for n in self._in_bytes]
            self._outputs = [self._alloc(n) for n in self._out_bytes]
            self._steps = [
                (functions[s["kernel"]], tuple(int(d) for d in s["grid"]), tuple(int(d) for d in s["block"]),
                 int(s.get("smem", 0)), pack_params(s, arena, weights_ptr, self._inputs, self._outputs),
                 s["kernel"])
                for s in plan
            ]
        except BaseException:
            self.close()
            raise

    def _alloc(self, nbytes: int) -> int:
        ptr = self._driver.alloc(max(int(nbytes), MIN_ALLOCATION))
        self._allocations.append(ptr)
        return ptr

    def run(self, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> None:
        """Run one inference: copy ``inputs`` in, launch every step, copy into the preallocated ``outputs``
        (C-contiguous)."""
        if self._driver is None:
            raise RuntimeError("cuda target: the executor is closed")
        _check_arrays(inputs, self._in_bytes, "input", writable=False)
        _check_arrays(outputs, self._out_bytes, "output", writable=True)
        driver = self._driver
        driver.set_current(self._context)  # the context is current per thread
        for ptr, array, n in zip(self._inputs, inputs, self._in_bytes):
            if n:
                driver.copy_to_device(ptr, array.ctypes.data, n)
        for function, grid, block, smem, params, name in self._steps:
            driver.launch(function, grid, block, smem, params.array, name)
        driver.synchronize()
        for ptr, array, n in zip(self._outputs, outputs, self._out_bytes):
            if n:
                driver.copy_to_host(array.ctypes.data, ptr, n)

    def close(self) -> None:
        """Free the device buffers, unload the module and release the primary context (idempotent)."""
        driver, self._driver = self._driver, None
        if driver is None:
            return
        try:
            if self._context:
                driver.set_current(self._context)
            for ptr in self._allocations:
                driver.free(ptr)
            if self._module:
                driver.unload_module(self._module)
            if self._context:
                driver.release_primary_context(self._device)
        except CudaError:
            pass  # at teardown a failing driver has nothing left to free
        finally:
            self._allocations, self._module, self._context = [], 0, 0

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _check_arrays(arrays, sizes: list[int], role: str, writable: bool) -> None:
    if len(arrays) != len(sizes):
        raise ValueError(f"cuda target: expected {len(sizes)} {role}s, got {len(arrays)}")
    for i, (a, size) in enumerate(zip(arrays, sizes)):
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or a.nbytes != size:
            raise ValueError(f"cuda target: {role} {i} must be a C-contiguous array of {size} bytes")
        if writable and not a.flags.writeable:
            raise ValueError(f"cuda target: {role} {i} is read-only")


def _nbytes(tensor: dict) -> int:
    count = 1
    for d in tensor["shape"]:
        count *= int(d)
    return count * np.dtype(tensor["dtype"]).itemsize

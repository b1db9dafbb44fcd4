"""The cuda executor without a GPU: requirements checks, launch-plan validation and parameter packing, the
executor's load/run/close sequence against a simulated driver, and a cpu+cuda artifact falling back to cpu.

NOTE: nothing here runs on a GPU; the real-driver path of runtime/backends/cuda.py is unexecuted."""

from __future__ import annotations

import ctypes

import numpy as np
import onnx
import pytest

import runtime
from lowering.cli import main
from runtime.backends.cuda import (
    CudaError,
    CudaExecutor,
    PackedParams,
    pack_params,
    resolve_arg,
    validate_plan,
)
from runtime.errors import RuntimeLoadError, TargetUnavailableError
from targets.cuda.codegen import generate
from targets.cuda.emulate import EmulatedDriver, EmulatedKernels
from tests.e2e.conftest import make_tiny_cnn
from tests.targets.cpu_harness import naive_plan

from .harness import GraphMaker, entry_of, require_nvcc


def _have_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_have_driver(), reason="this machine has an NVIDIA driver")
def test_no_driver_is_a_clear_reason():
    assert CudaExecutor.check_requirements({}) == "no NVIDIA driver (libcuda.so.1 not found)"


class _FakeDriver(EmulatedDriver):
    def __init__(self, init=0, version=13000, devices=1, capability=(9, 0)):
        super().__init__(kernels=None, compute_capability=capability)
        self._init, self._version, self._devices = init, version, devices

    def init(self):
        return self._init

    def error_text(self, result):
        return "CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected" if result == 100 else str(result)

    def driver_version(self):
        return self._version

    def device_count(self):
        return self._devices


def test_requirement_reasons():
    entry = {"requires": {"compute_capability_min": 8.0, "driver_version_min": 13000}}
    check = CudaExecutor.check_requirements
    assert check(entry, _FakeDriver()) is None
    assert "CUDA_ERROR_NO_DEVICE" in check(entry, _FakeDriver(init=100))
    assert "supports CUDA 12.4; these kernels need CUDA 13.0" in check(entry, _FakeDriver(version=12040))
    assert check(entry, _FakeDriver(devices=0)) == "no CUDA device"
    assert "compute capability 7.5; these kernels need 8.0" in check(entry, _FakeDriver(capability=(7, 5)))


def test_argument_resolution_and_packing():
    step = {"args": [{"kind": "arena", "offset": 128}, {"kind": "weights", "offset": 64},
                     {"kind": "input", "index": 1}, {"kind": "output", "index": 0}]}
    packed = pack_params(step, arena=0x10000, weights=0x20000, inputs=[0x30000, 0x40000], outputs=[0x50000])
    # what cuLaunchKernel reads: kernelParams[i] points at the i-th CUdeviceptr (8 bytes each)
    assert packed.pointer_values() == [0x10080, 0x20040, 0x40000, 0x50000]
    assert [packed.array[i] - packed.array[0] for i in range(4)] == [0, 8, 16, 24]
    assert PackedParams([]).count == 0
    with pytest.raises(RuntimeLoadError, match="unknown kind"):
        resolve_arg({"kind": "shared"}, 0, 0, [], [])


def test_plan_validation():
    entry = {"arena_bytes": 256, "weights_bytes": 64, "signature": {"inputs": [{}], "outputs": [{}]},
             "launch_plan": [{"kind": "kernel", "kernel": "k", "grid": [1, 1, 1], "block": [32, 1, 1],
                              "args": [{"kind": "input", "index": 0}, {"kind": "arena", "offset": 0}]}]}
    validate_plan(entry)
    bad = {**entry, "launch_plan": [{**entry["launch_plan"][0], "kind": "gemm"}]}
    with pytest.raises(RuntimeLoadError, match="kernel steps only"):
        validate_plan(bad)
    bad = {**entry, "launch_plan": [{**entry["launch_plan"][0], "args": [{"kind": "output", "index": 3}]}]}
    with pytest.raises(RuntimeLoadError, match="names output 3"):
        validate_plan(bad)
    bad = {**entry, "launch_plan": [{**entry["launch_plan"][0], "block": [0, 1, 1]}]}
    with pytest.raises(RuntimeLoadError, match="bad block"):
        validate_plan(bad)


def _relu_module():
    m = GraphMaker("relu")
    graph = m.output(m.node("Relu", m.node("Add", m.input(3, 50), m.weight(50)))).graph
    graph.memory_plan = naive_plan(graph)
    module = generate(graph, graph.memory_plan.offsets, graph.memory_plan.arena_size)
    return m, graph, module


def test_executor_sequence_on_a_simulated_driver():
    m, graph, module = _relu_module()
    entry, files = entry_of(graph, module)
    driver = EmulatedDriver(EmulatedKernels(module.source, module.steps))
    executor = CudaExecutor(entry, files.__getitem__, driver=driver)
    (x,) = m.feeds.values()
    for _ in range(2):  # buffers are allocated once; every run copies in, launches, copies out
        out = np.empty((3, 50), np.float32)
        executor.run([x], [out])
        np.testing.assert_allclose(out, np.maximum(x + graph.nodes[0].input(1).const, 0), rtol=1e-6)
    assert driver.launches == [s["kernel"] for s in module.steps] * 2
    allocated = set(driver.buffers)
    assert len(allocated) == 4  # arena, weights, one input, one output
    executor.close()
    assert not driver.buffers and set(driver.freed) == allocated
    with pytest.raises(ValueError, match="input 0 must be a C-contiguous array of 600 bytes"):
        CudaExecutor(entry, files.__getitem__, driver=EmulatedDriver(driver.kernels)).run(
            [x[:, :10]], [out])


def test_a_kernel_missing_from_the_fatbin_fails_the_load_and_frees_everything():
    _, graph, module = _relu_module()
    entry, files = entry_of(graph, module)
    files["cuda/kernels.fatbin"] = b"nothing\0"
    driver = EmulatedDriver(EmulatedKernels(module.source, module.steps))
    with pytest.raises(CudaError, match=r"cuModuleGetFunction\('k\d+_\w+'\) failed"):
        CudaExecutor(entry, files.__getitem__, driver=driver)
    assert not driver.buffers


@pytest.fixture(scope="module")
def cpu_cuda_artifact(tmp_path_factory):
    require_nvcc()
    folder = tmp_path_factory.mktemp("cpu_cuda")
    onnx.save(make_tiny_cnn(batch=2), folder / "tiny.onnx")
    out = folder / "tiny.lwr"
    assert main([str(folder / "tiny.onnx"), "--target", "cpu,cuda", "-o", str(out)]) == 0
    return folder / "tiny.onnx", out


@pytest.mark.skipif(_have_driver(), reason="this machine has an NVIDIA driver")
def test_session_falls_back_to_cpu(cpu_cuda_artifact):
    model, artifact = cpu_cuda_artifact
    sess = runtime.load(artifact)
    assert sess.target == "cpu"
    assert sess.skipped == {"cuda": "no NVIDIA driver (libcuda.so.1 not found)"}
    assert set(sess.artifact.targets) == {"cpu", "cuda"}
    with pytest.raises(TargetUnavailableError, match=r"cuda: no NVIDIA driver \(libcuda.so.1 not found\)"):
        runtime.load(artifact, target="cuda")


@pytest.mark.skipif(_have_driver(), reason="this machine has an NVIDIA driver")
def test_cli_verify_cuda_without_a_gpu(cpu_cuda_artifact, capsys):
    model, artifact = cpu_cuda_artifact
    assert main(["verify", str(artifact), "--model", str(model), "--target", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no NVIDIA driver (libcuda.so.1 not found)" in err and "Traceback" not in err
    assert main(["verify", str(artifact), "--model", str(model)]) == 0  # the cpu target
    assert main(["inspect", str(artifact)]) == 0
    assert "target cuda: abi=1" in capsys.readouterr().out


class _FakeLibcuda:
    """Python stand-ins for a few libcuda functions, to exercise the ctypes wrapper (runtime Driver)."""

    def __init__(self):
        names = ("cuInit cuDriverGetVersion cuDeviceGetCount cuDeviceGet cuDeviceGetAttribute "
                 "cuDeviceGetName "
                 "cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRelease_v2 cuCtxSetCurrent cuCtxSynchronize "
                 "cuModuleLoadData cuModuleGetFunction cuModuleUnload cuMemAlloc_v2 cuMemFree_v2 "
                 "cuMemcpyHtoD_v2 cuMemcpyDtoH_v2 cuLaunchKernel cuGetErrorName cuGetErrorString").split()
        for name in names:
            setattr(self, name, _Stub(getattr(self, "_" + name, lambda *a: 0)))

    @staticmethod
    def _cuMemAlloc_v2(ref, size):
        ref._obj.value = 0x7000_0000 + size
        return 0

    @staticmethod
    def _cuDeviceGetAttribute(ref, attribute, device):
        ref._obj.value = {75: 9, 76: 0}[attribute]
        return 0

    @staticmethod
    def _cuLaunchKernel(*args):
        return 700

    @staticmethod
    def _cuGetErrorName(result, ref):
        ref._obj.value = b"CUDA_ERROR_ILLEGAL_ADDRESS"
        return 0

    @staticmethod
    def _cuGetErrorString(result, ref):
        ref._obj.value = b"an illegal memory access was encountered"
        return 0


class _Stub:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


def test_driver_wrapper_reads_results_and_reports_errors():
    from runtime.backends.cuda import Driver

    driver = Driver(_FakeLibcuda())
    assert driver.alloc(1024) == 0x7000_0400
    assert driver.compute_capability(0) == (9, 0)
    params = PackedParams([0x7000_0400])
    with pytest.raises(CudaError, match=r"cuLaunchKernel\(k0_relu\) failed \(CUDA_ERROR_ILLEGAL_ADDRESS: an "
                                        r"illegal memory access was encountered\)"):
        driver.launch(1, (1, 1, 1), (256, 1, 1), 0, params.array, "k0_relu")

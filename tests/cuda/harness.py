"""Helpers for the cuda target tests: emulate a graph's kernels (no GPU, no nvcc needed), compile them with
nvcc when it is there, and compare with the reference interpreter.

``emulate_graph`` generates kernels.cu and the launch plan for a graph (naive memory plan), builds the
manifest entry the target would, with a stand-in for the fatbin that names every kernel, and runs it
through the real ``CudaExecutor`` over the emulated driver (``targets/cuda/emulate.py``).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lowering.ir import Graph, verify
from lowering.reference import run_graph
from runtime.backends.cuda import CudaExecutor
from targets.cuda.build import find_nvcc
from targets.cuda.codegen import ABI_VERSION, CudaModule, generate
from targets.cuda.emulate import EmulatedDriver, EmulatedKernels
from tests.targets.cpu_harness import GraphMaker, naive_plan

RTOL, ATOL = 1e-4, 1e-5

__all__ = ["GraphMaker", "check_emulated", "emulate_graph", "nvcc_ptx", "require_nvcc"]


def require_nvcc() -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc is not installed (install the nvidia-cuda-nvcc wheels or the CUDA toolkit)")
    return nvcc


def nvcc_ptx(source: str) -> None:
    """Compile ``source`` to PTX with warnings as errors (the front end of the fatbin build, fast)."""
    nvcc = require_nvcc()
    with tempfile.TemporaryDirectory(prefix="lowering-cuda-test-") as tmp:
        src = Path(tmp) / "kernels.cu"
        src.write_text(source)
        proc = subprocess.run([nvcc, "-ptx", "-arch=compute_90", "-O3", "-Werror", "all-warnings", "-o",
                               str(Path(tmp) / "k.ptx"), str(src)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def entry_of(graph: Graph, module: CudaModule) -> tuple[dict, dict]:
    """A cuda manifest entry and its members for ``module`` (the fatbin replaced by the kernel names)."""
    image = b"".join(step["kernel"].encode() + b"\0" for step in module.steps)
    files = {"cuda/kernels.cu": module.source.encode(), "cuda/weights.bin": module.weights,
             "cuda/kernels.fatbin": image}
    entry = {
        "kind": "cuda", "abi": ABI_VERSION, "fatbin": "cuda/kernels.fatbin", "source": "cuda/kernels.cu",
        "weights": "cuda/weights.bin", "weights_bytes": len(module.weights),
        "arena_bytes": module.arena_bytes,
        "requires": {"compute_capability_min": 8.0},
        "signature": {
            "inputs": [{"name": v.name, "dtype": v.type.dtype.value, "shape": list(v.type.shape)}
                       for v in graph.inputs],
            "outputs": [{"name": n, "dtype": v.type.dtype.value, "shape": list(v.type.shape)}
                        for n, v in zip(graph.output_names, graph.outputs)],
        },
        "launch_plan": module.steps,
    }
    return entry, files


def emulate_graph(graph: Graph, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], CudaModule]:
    verify(graph)
    graph.memory_plan = naive_plan(graph)
    module = generate(graph, graph.memory_plan.offsets, graph.memory_plan.arena_size)
    entry, files = entry_of(graph, module)
    driver = EmulatedDriver(EmulatedKernels(module.source, module.steps))
    executor = CudaExecutor(entry, files.__getitem__, driver=driver)
    outputs = [np.empty(v.type.shape, v.type.dtype.numpy) for v in graph.outputs]
    executor.run([np.ascontiguousarray(feeds[v.name]) for v in graph.inputs], outputs)
    driver.check_guards()
    executor.close()
    assert not driver.buffers, "the executor left device buffers allocated"
    return dict(zip(graph.output_names, outputs)), module


def check_emulated(maker: GraphMaker, compile_ptx: bool = True, rtol: float = RTOL, atol: float = ATOL
                   ) -> CudaModule:
    """Emulate ``maker.graph`` and compare every output with the reference interpreter; with
    ``compile_ptx`` the same kernels.cu also goes through nvcc (-Werror) when nvcc is installed."""
    got, module = emulate_graph(maker.graph, maker.feeds)
    want = run_graph(maker.graph, maker.feeds)
    for name, expected in want.items():
        assert not np.isnan(got[name]).any() or np.isnan(expected).any(), f"output {name}: NaN (unwritten?)"
        np.testing.assert_allclose(got[name], expected, rtol=rtol, atol=atol, err_msg=f"output {name}")
    if compile_ptx and find_nvcc() is not None:
        nvcc_ptx(module.source)
    return module

"""The cuda target: generated CUDA C++ kernels in a fatbin, and a launch plan the runtime walks.

``CudaTarget.build`` reads the optimized, memory-planned graph IR (the same pipeline as the cpu target)
and returns the artifact members

    cuda/kernels.fatbin   SASS for sm_80 and sm_90 plus compute_90 PTX (nvcc; no GPU needed)
    cuda/kernels.cu       its generated source (extern "C" kernels, no host code), for inspection
    cuda/weights.bin      the constants, float32, each 64-byte aligned

and the manifest entry the runtime's ``CudaExecutor`` (runtime/backends/cuda.py) loads: the arena size,
the weights, the input/output signature, ``requires`` (compute capability, architectures, PTX) and the
``launch_plan`` (codegen.py documents a step). Options read: ``nvcc`` (command; else $NVCC, PATH,
/usr/local/cuda, the nvidia-cuda-nvcc wheel).
"""

from __future__ import annotations

import hashlib
import time
from typing import ClassVar

from lowering.errors import LoweringError
from lowering.ir import Graph, Node
from lowering.memory import is_view

from ..base import Target, TargetBuild
from .build import (
    ARCHS,
    COMPUTE_CAPABILITY_MIN,
    PTX,
    build_flags,
    check_resources,
    compile_fatbin,
    find_nvcc,
    nvcc_version,
    parse_resource_usage,
)
from .codegen import ABI_VERSION, generate
from .registry import LOWERINGS, float_reason, index_reason

FATBIN, SOURCE, WEIGHTS = "cuda/kernels.fatbin", "cuda/kernels.cu", "cuda/weights.bin"
#: the CUDA driver version (cuDriverGetVersion) that runs what nvcc 13.0 emits
DRIVER_VERSION_MIN = 13000


class CudaTarget(Target):
    """Generated CUDA C++ for NVIDIA GPUs (compute capability 8.0 and newer), fp32."""

    name: ClassVar[str] = "cuda"

    def unsupported_reason(self, node: Node) -> str | None:
        if is_view(node):
            return None
        lowering = LOWERINGS.get(node.qualified_op)
        if lowering is None:
            return f"cuda target: {node.qualified_op} is not supported"
        if any(v is not None and v.type is None for v in list(node.inputs) + node.outputs[:1]):
            return "a tensor has no static type"
        reason = float_reason(node, lowering) or index_reason(node)
        if reason is None and lowering.check is not None:
            reason = lowering.check(node)
        return reason

    def build(self, graph: Graph, options: dict) -> TargetBuild:
        plan = graph.memory_plan
        if plan is None:
            raise LoweringError("cuda target: the graph has no memory plan (run the memory planner first)")
        unsupported = [(n, r) for n in graph.nodes if (r := self.unsupported_reason(n)) is not None]
        if unsupported:
            listed = "; ".join(f"{n.label}: {r}" for n, r in unsupported)
            raise LoweringError(f"cuda target cannot lower {len(unsupported)} node(s): {listed}")
        nvcc = find_nvcc(options)
        if nvcc is None:
            raise LoweringError("cuda target: nvcc not found (set NVCC, put nvcc on PATH, or "
                                "pip install nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 "
                                "nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 "
                                "nvidia-cuda-runtime==13.0.96)")
        start = time.perf_counter()
        module = generate(graph, plan.offsets, plan.arena_size)
        generated = time.perf_counter()
        flags = build_flags()
        fatbin, report = compile_fatbin(module.source, nvcc, flags)
        usage = parse_resource_usage(report)
        names = [step["kernel"] for step in module.steps]
        check_resources(usage, names)
        phases = {"codegen": generated - start, "nvcc": time.perf_counter() - generated}
        for record in module.kernels:
            record["resources"] = {arch: res.to_json() for arch, res in sorted(usage[record["name"]].items())}
        manifest = {
            "kind": "cuda",
            "abi": ABI_VERSION,
            "fatbin": FATBIN,
            "fatbin_sha256": hashlib.sha256(fatbin).hexdigest(),
            "source": SOURCE,
            "weights": WEIGHTS,
            "weights_bytes": len(module.weights),
            "arena_bytes": module.arena_bytes,
            "kernels": len(module.steps),
            "requires": {
                "compute_capability_min": COMPUTE_CAPABILITY_MIN,
                "archs": list(ARCHS),
                "ptx": PTX,
                "driver_version_min": DRIVER_VERSION_MIN,
            },
            "build_flags": flags,
            "compiler": nvcc_version(nvcc),
            "signature": {
                "inputs": [_tensor(v) for v in graph.inputs],
                "outputs": [_tensor(v, name) for v, name in zip(graph.outputs, _output_names(graph))],
            },
            "launch_plan": module.steps,
        }
        files = {FATBIN: fatbin, SOURCE: module.source.encode(), WEIGHTS: module.weights}
        return TargetBuild(self.name, files, manifest, module.kernels, phases)


def _output_names(graph: Graph) -> list[str]:
    if len(graph.output_names) == len(graph.outputs):
        return list(graph.output_names)
    return [v.name for v in graph.outputs]


def _tensor(value, name: str | None = None) -> dict:
    return {"name": name or value.name, "dtype": value.type.dtype.value, "shape": list(value.type.shape)}

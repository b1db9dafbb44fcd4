"""The cpu target: the whole graph as generated C, one shared library, one native call per inference.

``CpuTarget.build`` reads the optimized, memory-planned graph IR and returns the artifact members

    cpu/model.so      the library (x86-64 ISA level from the build machine or ``options["isa"]``)
    cpu/model.c       its generated source, for inspection
    cpu/weights.bin   constants, prepacked into the layouts the kernels read (see pack.py)

and the manifest entry the runtime's ``CpuExecutor`` (runtime/backends/cpu.py) loads. Options read:
``isa`` ("x86-64-v2" | "x86-64-v3" | "x86-64-v4" | "x86-64-v4-vnni"), ``cc`` (compiler command, else $CC,
cc, gcc). Without ``isa`` the build machine's best level is used, except that a graph without an int8 GEMM
(QConv, QMatMul) is built for plain ``x86-64-v4`` rather than ``x86-64-v4-vnni``, so it does not require
the VNNI flag.
"""

from __future__ import annotations

import hashlib
import platform
import time
from typing import ClassVar

from lowering.errors import LoweringError
from lowering.ir import Graph, Node
from lowering.memory import is_view

from ..base import Target, TargetBuild
from .build import (
    LEVELS,
    WITHOUT_VNNI,
    build_flags,
    choose_isa,
    compile_shared,
    compiler_version,
    find_compiler,
)
from .codegen import ABI_VERSION, generate
from .emit_quant_common import INT8_GEMM_OPS
from .registry import LOWERINGS, type_reason

LIBRARY, SOURCE, WEIGHTS = "cpu/model.so", "cpu/model.c", "cpu/weights.bin"


class CpuTarget(Target):
    """Generated C + OpenMP for the host CPU."""

    name: ClassVar[str] = "cpu"

    def pipeline(self, options: dict) -> list:
        """Type legalization: float16/float64 nodes without a kernel for their type run in float32 between
        Casts (``legalize_types``), then the elementwise fusion takes those Casts into the elementwise
        kernels next to them and DCE removes what the two leave."""
        return legalize_passes(self)

    def unsupported_reason(self, node: Node) -> str | None:
        if is_view(node):
            return None
        lowering = LOWERINGS.get(node.qualified_op)
        if lowering is None:
            return f"{node.qualified_op} is not supported by the cpu target"
        if any(v is not None and v.type is None for v in list(node.inputs) + node.outputs[:1]):
            return "a tensor has no static type"
        reason = type_reason(node, lowering)
        if reason is None and lowering.check is not None:
            reason = lowering.check(node)
        return reason

    def build(self, graph: Graph, options: dict) -> TargetBuild:
        plan = graph.memory_plan
        if plan is None:
            raise LoweringError("cpu target: the graph has no memory plan (run the memory planner first)")
        unsupported = [(n, r) for n in graph.nodes if (r := self.unsupported_reason(n)) is not None]
        if unsupported:
            listed = "; ".join(f"{n.label}: {r}" for n, r in unsupported)
            raise LoweringError(f"cpu target cannot lower {len(unsupported)} node(s): {listed}")
        isa = choose_isa(options.get("isa"))
        if not options.get("isa") and isa.name in WITHOUT_VNNI and not any(
            n.qualified_op in INT8_GEMM_OPS for n in graph.nodes
        ):
            isa = LEVELS[WITHOUT_VNNI[isa.name]]  # no int8 GEMM: do not require the VNNI flag
        cc = find_compiler(options)
        start = time.perf_counter()
        module = generate(graph, plan.offsets, plan.arena_size, isa)
        generated = time.perf_counter()
        flags = build_flags(isa)
        library = compile_shared(module.source, cc, flags)
        phases = {"codegen": generated - start, "cc": time.perf_counter() - generated}
        manifest = {
            "kind": "cpu",
            "abi": ABI_VERSION,
            "library": LIBRARY,
            "library_sha256": hashlib.sha256(library).hexdigest(),
            "source": SOURCE,
            "weights": WEIGHTS,
            "weights_bytes": len(module.weights),
            "arena_bytes": module.arena_bytes,
            "workspace_offset": module.workspace_offset,
            "requires": {"machine": _machine(), "isa": isa.name, "cpu_flags": list(isa.cpu_flags)},
            "build_flags": flags,
            "compiler": compiler_version(cc),
            "blocking": {
                "mr": isa.mr,
                "nr": isa.nr,
                "kc": isa.kc,
                "vec": isa.vec,
                "qmr": isa.qmr,
                "qnr": isa.qnr,
                "vnni": isa.vnni,
            },
            "signature": {
                "inputs": [_tensor(v) for v in graph.inputs],
                "outputs": [_tensor(v, name) for v, name in zip(graph.outputs, _output_names(graph))],
            },
        }
        files = {LIBRARY: library, SOURCE: module.source.encode(), WEIGHTS: module.weights}
        return TargetBuild(self.name, files, manifest, module.kernels, phases)


def legalize_passes(target: Target) -> list:
    """The cpu target's type legalization for ``target``'s nodes (also the host part of a target that sends
    nodes to the cpu target: whatever ``target`` cannot run natively is computed in float32)."""
    from passes.cleanup.dce import EliminateDeadCode
    from passes.cleanup.legalize_types import LegalizeTypes
    from passes.fusion.fuse_elementwise import FuseElementwise

    host = CpuTarget()

    def native(node: Node) -> bool:
        return target.unsupported_reason(node) is None or host.unsupported_reason(node) is None

    return [LegalizeTypes(native, target.name), FuseElementwise(), EliminateDeadCode()]


def _machine() -> str:
    machine = platform.machine().lower()
    return "x86_64" if machine in ("x86_64", "amd64") else machine


def _output_names(graph: Graph) -> list[str]:
    if len(graph.output_names) == len(graph.outputs):
        return list(graph.output_names)
    return [v.name for v in graph.outputs]


def _tensor(value, name: str | None = None) -> dict:
    return {"name": name or value.name, "dtype": value.type.dtype.value, "shape": list(value.type.shape)}

"""What a target is and what it hands to the artifact writer.

A target reads the optimized, memory-planned graph IR (never ONNX) and returns a :class:`TargetBuild`:
the member files it adds to the artifact and its manifest entry. The runtime's executor for the same
target kind reads exactly that entry and those members; nothing else crosses the boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from lowering.ir import Graph, Node
from lowering.passmanager import Pass


@dataclass
class TargetBuild:
    target: str
    #: member path inside the artifact (e.g. "cpu/model.so") -> bytes
    files: dict[str, bytes]
    #: this target's manifest entry (JSON-able): kind, entry files, build flags, requirements...
    manifest: dict
    #: per-kernel details for report.json and ``inspect``
    kernels: list[dict] = field(default_factory=list)
    #: seconds spent per build phase (e.g. "codegen", "cc"), logged by ``lower -v``; not in the artifact
    phases: dict[str, float] = field(default_factory=dict)


class Target:
    """Base of every target: a name, its lowering pipeline, what it supports, and ``build``."""

    name: ClassVar[str] = ""

    def pipeline(self, options: dict) -> list[Pass]:
        """Target-specific passes run after the shared graph pipeline."""
        return []

    def unsupported_reason(self, node: Node) -> str | None:
        """Why this target cannot run ``node`` (None when it can)."""
        raise NotImplementedError

    def build(self, graph: Graph, options: dict) -> TargetBuild:
        raise NotImplementedError


def kernel_identifier(text: str) -> str:
    """A C identifier fragment for a node name (generated kernels are named k<index>_<this>)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)[:48]


def source_comment(text: str) -> str:
    """``text`` made safe inside a C comment."""
    return re.sub(r"[^A-Za-z0-9_.:,/ -]", "_", text)


def kernel_record(node, name: str, flops: int, **extra) -> dict:
    """A kernel's entry in report.json: op, source nodes, bytes read and written, FLOPs (and ``extra``)."""
    reads = {id(v): v for v in node.inputs if v is not None and v.type is not None}
    return {
        "name": name,
        "op": node.qualified_op,
        "node": node.name,
        "sources": list(node.meta.sources),
        "bytes_read": sum(v.type.nbytes for v in reads.values()),
        "bytes_written": sum(v.type.nbytes for v in node.outputs if v is not None and v.type is not None),
        "flops": int(flops),
        **extra,
    }

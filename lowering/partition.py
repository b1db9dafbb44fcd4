"""Partitioning: which nodes run on a target and which fall back to the host (cpu) target.

Each target says, node by node, why it cannot run something (``Target.unsupported_reason``). Runs of
consecutive nodes with the same placement form segments. A partition is never silent: every fallback
carries its reason, and ``lower`` prints them. The cpu target is its own host, so anything it cannot run
is an error listing every such node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import LoweringError
from .ir import Graph


@dataclass
class Segment:
    target: str
    nodes: list[str]


@dataclass
class Partition:
    segments: list[Segment] = field(default_factory=list)
    #: (node label, reason) for every node moved to the host
    fallbacks: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"segments": [{"target": s.target, "nodes": s.nodes} for s in self.segments],
                "fallbacks": [{"node": n, "reason": r} for n, r in self.fallbacks]}


def partition(graph: Graph, target, host=None, model_name: str = "model") -> Partition:
    """Place every node on ``target``, or on ``host`` when the target cannot run it."""
    result = Partition()
    errors = []
    for node in graph.nodes:
        placed = target.name
        reason = target.unsupported_reason(node)
        if reason:
            host_reason = host.unsupported_reason(node) if host is not None else reason
            if host is None or host_reason:
                errors.append(f"{node.label}: {host_reason}")
                continue
            placed = host.name
            result.fallbacks.append((node.label, reason))
        if not result.segments or result.segments[-1].target != placed:
            result.segments.append(Segment(placed, []))
        result.segments[-1].nodes.append(node.name)
    if errors:
        raise LoweringError(f"{model_name}: target '{target.name}' cannot run {len(errors)} node(s): "
                            + "; ".join(errors))
    return result

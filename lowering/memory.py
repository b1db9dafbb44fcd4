"""Where every tensor lives at run time: the memory plan targets read.

Graph inputs and outputs live in the caller's buffers, constants in the weights blob, and every other
value in one arena at a planned offset. View ops (``opinfo.VIEW_OPS``) alias their input's storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Graph, Value
from .opinfo import VIEW_OPS

ALIGNMENT = 64


def is_view(node) -> bool:
    return not node.domain and node.op in VIEW_OPS


def storage_roots(graph: Graph) -> dict[int, Value]:
    """Map id(value) -> the value whose storage it shares (itself unless produced by a view op)."""
    roots: dict[int, Value] = {}
    for v in graph.values():
        roots[id(v)] = v
    for node in graph.nodes:
        if is_view(node):
            roots[id(node.output)] = roots[id(node.input(0))]
    return roots


@dataclass
class Buffer:
    """One arena allocation: the storage of ``value`` and of every view of it."""

    value: str
    offset: int
    size: int
    first: int  # index of the node that writes it
    last: int  # index of the last node that reads it (or a view of it)

    def to_json(self) -> dict:
        return {"value": self.value, "offset": self.offset, "size": self.size,
                "live": [self.first, self.last]}


@dataclass
class MemoryPlan:
    """Arena offsets for every intermediate value, with the sizes ``inspect`` compares."""

    arena_size: int
    naive_size: int  # every intermediate in its own buffer
    lower_bound: int  # the most bytes live at once: no plan can use less
    buffers: list[Buffer] = field(default_factory=list)
    #: value name -> arena offset, for every value stored in the arena (views included)
    offsets: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "arena_bytes": self.arena_size, "naive_bytes": self.naive_size,
            "lower_bound_bytes": self.lower_bound,
            "buffers": [b.to_json() for b in self.buffers],
        }

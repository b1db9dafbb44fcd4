"""The pass contract and the pass manager (named passes, verification, timing, change reports).

A pass is a class with a ``name``, the IR properties it ``requires`` and ``provides``, and
``run(graph, ctx) -> PassResult``. Passes mutate the graph in place and say whether they changed it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

from .ir import Graph, print_graph, verify
from .ir.verify import IRError
from .opinfo import VIEW_OPS


@dataclass(frozen=True)
class PassContext:
    """Configuration of one pipeline run. Never read options from the environment or globals."""

    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    verify_each: bool = False
    print_after: frozenset[str] = frozenset()
    disabled: frozenset[str] = frozenset()
    log: Callable[[str], None] = lambda message: None
    #: Called after every top-level pass that ran, with its name, the graph (as the pass left it) and its
    #: record: ``lower verify --bisect`` runs the reference interpreter there, ``--dump-ir`` prints the IR.
    after_pass: Callable[[str, Graph, PassRecord], None] | None = None

    def option(self, name: str, default=None):
        return self.options.get(name, default)


@dataclass
class PassResult:
    modified: bool
    changes: list[str] = field(default_factory=list)


class Pass:
    """Base class of graph passes. Subclasses set ``name`` and implement ``run``."""

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    provides: ClassVar[frozenset[str]] = frozenset()

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError


class PreconditionError(Exception):
    def __init__(self, pass_name: str, missing: set[str]):
        super().__init__(f"pass '{pass_name}' requires {', '.join(sorted(missing))}, "
                         "which no earlier pass provided")


class PassFailed(Exception):
    """A pass raised or broke the IR. Names the pass and the passes that ran before it."""


class FixedPoint(Pass):
    """Run a group of passes until none changes the graph, at most ``max_steps`` rounds."""

    name = "fixed_point"

    def __init__(self, passes: list[Pass], max_steps: int = 8, name: str = "fixed_point"):
        self.passes = passes
        self.max_steps = max_steps
        self.name = name

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes: list[str] = []
        for _ in range(self.max_steps):
            round_modified = False
            for p in self.passes:
                if p.name in ctx.disabled:
                    continue
                result = p.run(graph, ctx)
                round_modified |= result.modified
                changes += [f"{p.name}: {c}" for c in result.changes]
            if not round_modified:
                return PassResult(bool(changes), changes)
        raise PassFailed(f"'{self.name}' did not converge in {self.max_steps} rounds")


def node_traffic(node) -> tuple[int, int]:
    """Bytes a node's kernel reads and writes (views move nothing)."""
    if node.op in VIEW_OPS and not node.domain:
        return 0, 0
    read = sum(v.type.nbytes for v in node.inputs if v is not None and v.type is not None)
    written = sum(v.type.nbytes for v in node.outputs if v.type is not None)
    return read, written


def graph_traffic(graph: Graph) -> int:
    return sum(sum(node_traffic(n)) for n in graph.nodes)


@dataclass
class PassRecord:
    """What one pass did: for ``inspect`` and ``report.json``."""

    name: str
    modified: bool
    seconds: float
    nodes_before: int
    nodes_after: int
    bytes_before: int
    bytes_after: int
    changes: list[str]

    def to_json(self) -> dict:
        """Everything but the timing: artifacts are byte-identical for identical inputs (``-v`` logs it)."""
        return {
            "name": self.name, "modified": self.modified,
            "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
            "bytes_moved_before": self.bytes_before, "bytes_moved_after": self.bytes_after,
            "changes": self.changes,
        }


@dataclass
class PassManager:
    passes: list[Pass]
    properties: set[str] = field(default_factory=set)

    def run(self, graph: Graph, ctx: PassContext) -> list[PassRecord]:
        records: list[PassRecord] = []
        history: list[str] = []
        if ctx.verify_each:
            verify(graph)
        for p in self.passes:
            if p.name in ctx.disabled:
                ctx.log(f"pass {p.name}: disabled")
                continue
            missing = set(p.requires) - self.properties
            if missing:
                raise PreconditionError(p.name, missing)
            nodes_before, bytes_before = len(graph.nodes), graph_traffic(graph)
            start = time.perf_counter()
            try:
                result = p.run(graph, ctx)
                if ctx.verify_each:
                    verify(graph)
            except IRError as exc:
                raise PassFailed(f"pass '{p.name}' broke the IR (after {history}): {exc}") from exc
            seconds = time.perf_counter() - start
            self.properties |= set(p.provides)
            history.append(p.name)
            record = PassRecord(p.name, result.modified, seconds, nodes_before, len(graph.nodes),
                                bytes_before, graph_traffic(graph), result.changes)
            records.append(record)
            ctx.log(f"pass {p.name}: {'changed' if result.modified else 'no change'} "
                    f"({len(result.changes)} rewrites, {nodes_before}->{len(graph.nodes)} nodes, "
                    f"{seconds * 1e3:.1f} ms)")
            if p.name in ctx.print_after:
                ctx.log(f"// IR after {p.name}\n{print_graph(graph)}")
            if ctx.after_pass is not None:
                ctx.after_pass(p.name, graph, record)
        return records

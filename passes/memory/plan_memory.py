"""PlanMemory: one arena for every intermediate tensor, offsets reused once a tensor is dead.

    values with live ranges  ->  graph.memory_plan (offset per value, arena size)

Greedy by size (largest first, lowest non-conflicting offset), as in TFLite's arena planner: a buffer
may share bytes with any buffer whose live range does not overlap. Views share their source's buffer
and extend its live range. ``inspect`` compares the arena with the naive sum and the lower bound (the
most bytes live at any one step).
"""

from __future__ import annotations

from lowering.ir import Graph
from lowering.memory import ALIGNMENT, Buffer, MemoryPlan, storage_roots
from lowering.passmanager import Pass, PassContext, PassResult


def _aligned(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def live_ranges(graph: Graph) -> dict[int, list]:
    """id(root value) -> [root, first step, last step] for every arena-resident storage root."""
    roots = storage_roots(graph)
    external = {id(v) for v in graph.inputs} | {id(roots[id(v)]) for v in graph.outputs}
    ranges: dict[int, list] = {}
    for step, node in enumerate(graph.nodes):
        for v in node.outputs:
            root = roots[id(v)]
            if root.is_const or id(root) in external:
                continue
            ranges.setdefault(id(root), [root, step, step])
        for v in node.inputs:
            if v is None:
                continue
            root = roots[id(v)]
            if id(root) in ranges:
                ranges[id(root)][2] = step
    return ranges


def plan(graph: Graph) -> MemoryPlan:
    ranges = live_ranges(graph)
    placed: list[Buffer] = []
    for root, first, last in sorted(ranges.values(), key=lambda r: (-r[0].type.nbytes, r[1], r[0].name)):
        size = _aligned(max(root.type.nbytes, 1))
        conflicts = sorted((b for b in placed if b.first <= last and first <= b.last),
                           key=lambda b: b.offset)
        offset = 0
        for b in conflicts:
            if offset + size <= b.offset:
                break
            offset = max(offset, b.offset + b.size)
        placed.append(Buffer(root.name, offset, size, first, last))
    steps = len(graph.nodes)
    live = [0] * max(steps, 1)
    for b in placed:
        for t in range(b.first, b.last + 1):
            live[t] += b.size
    roots = storage_roots(graph)
    by_root = {b.value: b.offset for b in placed}
    offsets = {}
    for v in graph.values():
        root = roots[id(v)]
        if root.name in by_root and id(root) in ranges:
            offsets[v.name] = by_root[root.name]
    placed.sort(key=lambda b: (b.first, b.value))
    return MemoryPlan(
        arena_size=max((b.offset + b.size for b in placed), default=0),
        naive_size=sum(b.size for b in placed),
        lower_bound=max(live),
        buffers=placed,
        offsets=offsets,
    )


class PlanMemory(Pass):
    name = "plan_memory"
    requires = frozenset({"outputs_materialized"})
    provides = frozenset({"memory_planned"})

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        graph.memory_plan = plan(graph)
        p = graph.memory_plan
        return PassResult(False, [f"arena {p.arena_size} B for {len(p.buffers)} buffers "
                                  f"(naive {p.naive_size} B, lower bound {p.lower_bound} B)"])

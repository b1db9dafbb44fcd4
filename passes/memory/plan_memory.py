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


#: buffer orders tried by :func:`plan` (the smallest arena wins; ties keep the earlier order)
ORDERS = {
    "size": lambda r: (-r[0].type.nbytes, r[1], r[0].name),
    "size_x_lifetime": lambda r: (-r[0].type.nbytes * (r[2] - r[1] + 1), r[1], r[0].name),
    "lifetime": lambda r: (-(r[2] - r[1]), -r[0].type.nbytes, r[1], r[0].name),
    "first_use": lambda r: (r[1], -r[0].type.nbytes, r[0].name),
}


def _place(ordered: list, best_fit: bool) -> list[Buffer]:
    """Place the buffers one by one, in the given order, at the lowest offset (or, with ``best_fit``, in the
    smallest gap) where each overlaps no already placed buffer whose live range overlaps its own."""
    placed: list[Buffer] = []
    for root, first, last in ordered:
        size = _aligned(max(root.type.nbytes, 1))
        conflicts = sorted((b for b in placed if b.first <= last and first <= b.last),
                           key=lambda b: b.offset)
        offset, best = 0, None
        for b in conflicts:
            gap = b.offset - offset
            if gap >= size:
                if not best_fit:
                    break
                if best is None or gap < best[1]:
                    best = (offset, gap)
            offset = max(offset, b.offset + b.size)
        if best_fit and best is not None:
            offset = best[0]
        placed.append(Buffer(root.name, offset, size, first, last))
    return placed


def _arena(placed: list[Buffer]) -> int:
    return max((b.offset + b.size for b in placed), default=0)


def _peak(ranges: list) -> int:
    """The most (aligned) bytes live at any one step: no placement can use less."""
    delta: dict[int, int] = {}
    for root, first, last in ranges:
        size = _aligned(max(root.type.nbytes, 1))
        delta[first] = delta.get(first, 0) + size
        delta[last + 1] = delta.get(last + 1, 0) - size
    peak = live = 0
    for step in sorted(delta):
        live += delta[step]
        peak = max(peak, live)
    return peak


#: placements the local search may try after the greedy orders (each costs O(buffers^2))
SEARCH_BUDGET = 300


def plan(graph: Graph) -> MemoryPlan:
    """Offsets for every arena buffer: the smallest arena of a few greedy placements (by size, size x
    lifetime, lifetime, first use; lowest offset or best-fitting gap), as in TFLite's and ONNX Runtime's
    planners; when none reaches the lower bound (the most bytes live at once), a bounded local search over
    the best order (move one buffer to the front) looks for a better one. Deterministic."""
    ranges = list(live_ranges(graph).values())
    bound = _peak(ranges)
    starts = []  # (arena, order, best_fit, placement) of every greedy order
    for order in ORDERS.values():
        for best_fit in (False, True):
            ordered = sorted(ranges, key=order)
            placed = _place(ordered, best_fit)
            starts.append((_arena(placed), ordered, best_fit, placed))
    starts.sort(key=lambda s: s[0])  # stable: ties keep the ORDERS order
    best = starts[0]
    budget = SEARCH_BUDGET if len(ranges) <= 400 else 0
    for start in starts:  # hill-climb from each greedy result: move one buffer earlier in the order
        current = start
        improved = True
        while improved and best[0] > bound and budget > 0:
            improved = False
            moves = ((i, j) for i in range(1, len(current[1])) for j in range(i - 1, -1, -1))
            for i, j in moves:
                if budget <= 0:
                    break
                budget -= 1
                order = current[1]
                ordered = order[:j] + [order[i]] + order[j:i] + order[i + 1:]
                placed = _place(ordered, current[2])
                if _arena(placed) < current[0]:
                    current = (_arena(placed), ordered, current[2], placed)
                    improved = True
                    break
            if current[0] < best[0]:
                best = current
        if best[0] <= bound or budget <= 0:
            break
    placed = best[3]
    ranges = {id(r[0]): r for r in ranges}
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

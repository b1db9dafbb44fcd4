"""``assert_parity``: the one helper every pass test uses.

It runs the reference interpreter on seeded random inputs, runs the passes through the ``PassManager``
with ``verify_each``, runs the reference again, and checks that the outputs agree, that the output names
did not change, and that each pass reported ``modified`` exactly when the printed graph changed (the
printer shows constants by type only, so a pass that rewrites only constant data reads as unchanged).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lowering.ir import Graph, print_graph
from lowering.passmanager import Pass, PassContext, PassManager
from lowering.reference import run_graph

from .graphs import GraphBuilder

#: ops an index tensor passes through unchanged in value on its way to a Gather
INDEX_PRESERVING = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast"})


def index_bounds(graph: Graph) -> dict[str, int]:
    """For each integer graph input that is (perhaps through reshapes and casts) the indices of a Gather,
    the size of the gathered axis; the smallest one when it indexes several."""
    bounds: dict[str, int] = {}
    for v in graph.inputs:
        if not np.issubdtype(v.type.dtype.numpy, np.integer):
            continue
        pending, seen = [v], set()
        while pending:
            value = pending.pop()
            for use in value.uses():
                node = use.node
                if node.op in INDEX_PRESERVING and use.index == 0 and id(node) not in seen:
                    seen.add(id(node))
                    pending.append(node.output)
                elif node.op == "Gather" and use.index == 1 and node.input(0).type is not None:
                    data = node.input(0).type
                    size = data.shape[node.attr("axis", 0) % data.rank]
                    bounds[v.name] = min(bounds.get(v.name, size), size)
    return bounds


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: normal floats, random bools, ints in range for the Gather they index (see
    :func:`index_bounds`) and other ints small and non-negative."""
    rng = np.random.default_rng(seed)
    bounds = index_bounds(graph)
    feeds = {}
    for v in graph.inputs:
        dtype, shape = v.type.dtype.numpy, v.type.shape
        if np.issubdtype(dtype, np.floating):
            feeds[v.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[v.name] = rng.random(shape) < 0.5
        else:
            feeds[v.name] = rng.integers(0, max(1, bounds.get(v.name, 4)), shape).astype(dtype)
    return feeds


def run_passes(graph: Graph, passes: list[Pass], log: Callable[[str], None] | None = None) -> bool:
    """Run ``passes`` one by one with verification; check each pass's ``modified`` against the printed
    graph. Returns whether any pass modified the graph."""
    ctx = PassContext(verify_each=True, log=log or (lambda message: None))
    modified = False
    for p in passes:
        before = print_graph(graph)
        records = PassManager([p]).run(graph, ctx)
        changed = print_graph(graph) != before
        for record in records:
            assert record.modified == changed, (
                f"pass '{record.name}' reported modified={record.modified} but the graph "
                f"{'changed' if changed else 'did not change'}; changes: {record.changes}")
            assert bool(record.changes) == record.modified, (
                f"pass '{record.name}' must list its changes exactly when it modifies the graph")
        modified |= changed
    return modified


def assert_parity(model: Graph | GraphBuilder, passes: list[Pass], inputs: dict | None = None,
                  rtol: float = 1e-5, atol: float = 1e-6, seed: int = 0, expect_modified: bool | None = None,
                  log: Callable[[str], None] | None = None) -> Graph:
    """Run ``passes`` on ``model`` (in place) and check the reference outputs before and after agree.

    Returns the rewritten graph for structural asserts. ``log`` receives the passes' log messages (why a
    rewrite was skipped), for negative tests.
    """
    graph = model.graph if isinstance(model, GraphBuilder) else model
    feeds = inputs if inputs is not None else random_inputs(graph, seed)
    names = list(graph.output_names)
    expected = run_graph(graph, feeds)
    modified = run_passes(graph, passes, log)
    if expect_modified is not None:
        assert modified == expect_modified, f"expected modified={expect_modified}, got {modified}"
    assert graph.output_names == names, "passes must not rename the graph's outputs"
    actual = run_graph(graph, feeds)
    for name in names:
        want, got = np.asarray(expected[name]), np.asarray(actual[name])
        assert got.dtype == want.dtype, f"output '{name}': dtype {got.dtype}, expected {want.dtype}"
        assert got.shape == want.shape, f"output '{name}': shape {got.shape}, expected {want.shape}"
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"output '{name}'")
    return graph

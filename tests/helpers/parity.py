"""``assert_parity``: the one helper every pass test uses.

It runs the reference interpreter on seeded random inputs, runs the passes through the ``PassManager``
with ``verify_each``, runs the reference again, and checks that the outputs agree, that the output names
did not change, and that each pass reported ``modified`` exactly when the printed graph changed (the
printer shows constants by type only, so a pass that rewrites only constant data reads as unchanged).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lowering.inputs import index_bounds, random_input
from lowering.ir import Graph, print_graph
from lowering.passmanager import Pass, PassContext, PassManager
from lowering.reference import run_graph

from .graphs import GraphBuilder


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: normal floats, random bools, ints in range for the Gather they index (see
    :func:`index_bounds`) and other ints small and non-negative."""
    rng = np.random.default_rng(seed)
    bounds = index_bounds(graph)
    feeds = {v.name: random_input(rng, v.type.dtype.numpy, v.type.shape, bounds.get(v.name), small=4)
             for v in graph.inputs}
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

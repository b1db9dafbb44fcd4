"""Seeded random inputs that a model accepts: what ``lower run``/``bench``/``verify`` feed when the user gives
no ``--inputs``, and what the tests feed.

Floats are standard normal and bools fair coins. An integer input that is, perhaps through reshapes and casts,
the indices of a ``Gather`` (token ids into an embedding table) is drawn within the gathered axis, so the run
does not fail on an out-of-range index; other integers (attention masks, token types, flags) are drawn small
and non-negative.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph

#: ops an index tensor passes through unchanged in value on its way to a Gather
INDEX_PRESERVING = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast"})


def index_bounds(graph: Graph) -> dict[str, int]:
    """For each integer graph input that is (perhaps through reshapes and casts) the indices of a Gather,
    the size of the gathered axis; the smallest one when it indexes several."""
    bounds: dict[str, int] = {}
    for v in graph.inputs:
        if v.type is None or not np.issubdtype(v.type.dtype.numpy, np.integer):
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


def random_input(rng: np.random.Generator, dtype, shape, index_bound: int | None = None,
                 small: int = 2) -> np.ndarray:
    """One seeded input: normal floats, random bools, integers in ``[0, index_bound)`` (Gather indices) or
    else in ``[0, small)``."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" or dtype.name == "bfloat16":  # (ml_dtypes' bfloat16 has kind 'V')
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(0, max(1, index_bound or small), shape).astype(dtype)

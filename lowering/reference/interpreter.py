"""Run a graph IR with the numpy semantics of ``ops.REGISTRY``: the oracle every pass is checked against."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from .ops import REGISTRY


class ReferenceError(Exception):
    """The reference interpreter could not evaluate a node."""


def evaluate_node(node: Node, inputs: list) -> list:
    """Evaluate one node on numpy inputs (None for absent optional inputs)."""
    kernel = REGISTRY.get(node.qualified_op)
    if kernel is None:
        raise ReferenceError(f"{node.label}: no reference semantics for {node.qualified_op}")
    try:
        outs = kernel(node, inputs)
    except ReferenceError:
        raise
    except Exception as exc:
        raise ReferenceError(f"{node.label}: {type(exc).__name__}: {exc}") from exc
    return [None if o is None else np.asarray(o) for o in outs]


def run_graph(graph: Graph, feeds: dict[str, np.ndarray], keep_all: bool = False) -> dict[str, np.ndarray]:
    """Run ``graph`` on ``feeds`` (keyed by input name). Returns the outputs keyed by the graph's output
    names, or with ``keep_all`` every value keyed by value name."""
    env: dict[int, np.ndarray] = {}
    for v in graph.inputs:
        if v.name not in feeds:
            raise ReferenceError(f"missing input '{v.name}'")
        env[id(v)] = np.asarray(feeds[v.name])
    named: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        args = [None if v is None else (v.const if v.is_const else env[id(v)]) for v in node.inputs]
        for out, result in zip(node.outputs, evaluate_node(node, args)):
            env[id(out)] = result
            if keep_all:
                named[out.name] = result
    if keep_all:
        return named
    return {name: (v.const if v.is_const else env[id(v)])
            for name, v in zip(graph.output_names, graph.outputs)}

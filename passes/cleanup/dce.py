"""Dead-code elimination: ``Relu(x) -> (unused)`` is removed; what reaches a graph output stays.

A node is live when one of its outputs is a graph output or an input of a live node; the pass walks the
nodes backwards from the graph outputs once and removes every node that is not live. ONNX inference ops
have no side effects, so nothing else keeps a node alive. Graph inputs are part of the model's signature
and are never removed, even when unused.
"""

from __future__ import annotations

from lowering.ir import Graph
from lowering.passmanager import Pass, PassContext, PassResult


class EliminateDeadCode(Pass):
    """Remove nodes none of whose outputs reach a graph output."""

    name = "dce"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        live = {id(v) for v in graph.outputs}
        dead = []
        for node in reversed(graph.nodes):
            if any(id(out) in live for out in node.outputs):
                live.update(id(v) for v in node.inputs if v is not None)
            else:
                dead.append(node)
        if not dead:
            return PassResult(False)
        dead.reverse()
        changes = [f"removed dead {node.qualified_op} '{node.name}'" for node in dead]
        graph.remove(dead)
        return PassResult(True, changes)

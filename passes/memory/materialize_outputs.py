"""MaterializeOutputs: give every graph output its own buffer.

    output = Reshape(x)  ->  output = lowering::Copy(Reshape(x))

Targets write each graph output straight into the caller's buffer, so an output must be produced by a
kernel: not a graph input, not a constant, not a view of another tensor, and not listed twice.
"""

from __future__ import annotations

from lowering.ir import Graph, Node, Value
from lowering.memory import storage_roots
from lowering.opinfo import DOMAIN
from lowering.passmanager import Pass, PassContext, PassResult


class MaterializeOutputs(Pass):
    name = "materialize_outputs"
    provides = frozenset({"outputs_materialized"})

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        roots = storage_roots(graph)
        inputs = {id(v) for v in graph.inputs}
        seen: set[int] = set()
        changes = []
        for i, v in enumerate(list(graph.outputs)):
            aliased = v.is_const or id(v) in inputs or roots[id(v)] is not v or id(v) in seen
            seen.add(id(v))
            if not aliased:
                continue
            out = Value(graph.unique_name(f"{graph.output_names[i]}_copy"), v.type)
            graph.append(Node("Copy", [v], [out], name=graph.unique_name("copy_output"), domain=DOMAIN))
            graph.outputs[i] = out
            seen.add(id(out))
            changes.append(f"copy into output '{graph.output_names[i]}' (it aliased '{v.name}')")
        return PassResult(bool(changes), changes)

"""RewriteReduceMeanAsPool: a mean over every spatial axis is a global average pool.

    ReduceMean(x[N,C,H,W], axes=[2,3], keepdims=1)  ->  GlobalAveragePool(x)
    ReduceMean(x[N,C,H,W], axes=[2,3], keepdims=0)  ->  Reshape(GlobalAveragePool(x), [N,C])

PyTorch's dynamo exporter writes ``AdaptiveAvgPool2d(1)`` and ``x.mean((2, 3))`` as ReduceMean; targets
then need only the pooling kernel. Runs after constant folding so that opset-18 ``axes`` inputs are
constants.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Graph, Node, TensorType, Value
from lowering.passmanager import Pass, PassContext, PassResult

from ..fusion.rewriting import new_constant


def _reduced_axes(node: Node, rank: int) -> list[int] | None:
    axes_input = node.input(1)
    if axes_input is not None:
        if not axes_input.is_const:
            return None
        axes = [int(a) for a in axes_input.const.reshape(-1)]
    else:
        axes = list(node.attr("axes", ()))
    return sorted(a % rank for a in axes)


class RewriteReduceMeanAsPool(Pass):
    name = "reduce_mean_to_pool"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes = []
        for node in graph:
            if node.op != "ReduceMean" or node.domain:
                continue
            x = node.input(0)
            rank = x.type.rank
            if rank < 3 or _reduced_axes(node, rank) != list(range(2, rank)):
                continue
            pooled_type = TensorType(x.type.dtype, x.type.shape[:2] + (1,) * (rank - 2))
            out = node.output
            keep = bool(node.attr("keepdims", 1))
            pooled = out if keep else Value(graph.unique_name(f"{out.name}_pooled"), pooled_type)
            index = graph.nodes.index(node)
            graph.remove(node, safe=False)  # its output value is taken over below
            pool = Node("GlobalAveragePool", [x], [pooled], name=node.name, meta=node.meta)
            graph.nodes.insert(index, pool)
            pool.graph = graph
            if not keep:
                shape = new_constant(graph, np.array(out.type.shape, np.int64), f"{out.name}_shape")
                graph.insert_after(pool, Node("Reshape", [pooled, shape], [out],
                                              name=graph.unique_name(f"{node.name}_reshape")))
            changes.append(f"ReduceMean '{node.name}' -> GlobalAveragePool")
        return PassResult(bool(changes), changes)

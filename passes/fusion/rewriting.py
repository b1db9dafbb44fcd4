"""Small graph-editing helpers the fusion passes share.

The fusion passes replace a connected group of nodes by one new node that produces the group's *final*
value object (so its name, its uses and its graph-output slots stay as they were). ``replace_group``
does that edit; ``sole_user`` is the single-use test every fusion applies to an intermediate value.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Graph, Node, NodeMeta, Use, Value


def is_graph_output(graph: Graph, value: Value) -> bool:
    return any(value is out for out in graph.outputs)


def sole_use(graph: Graph, value: Value) -> Use | None:
    """The only use of ``value``, or None when it has zero or several uses or is a graph output.

    Uses are counted, not users: ``Add(y, y)`` is two uses of ``y``.
    """
    uses = value.uses()
    if len(uses) != 1 or is_graph_output(graph, value):
        return None
    return uses[0]


def new_constant(graph: Graph, array: np.ndarray, hint: str) -> Value:
    """A new constant value named after ``hint``. (``Graph.constant`` goes through
    ``np.ascontiguousarray``, which turns a 0-d array into shape [1]; this keeps the shape.)"""
    return Value(graph.unique_name(hint), const=np.asarray(array, order="C"))


def merged_meta(nodes: list[Node]) -> NodeMeta:
    """The metadata of a node that computes all of ``nodes``: their source names, in order, once each."""
    sources: dict[str, None] = {}
    for node in nodes:
        for name in node.meta.sources:
            sources.setdefault(name, None)
    return NodeMeta(sources=tuple(sources))


def replace_group(graph: Graph, group: list[Node], new_node: Node) -> None:
    """Put ``new_node`` where the last node of ``group`` stands and remove ``group``.

    ``new_node`` must already own the output values it takes over from the group (building a ``Node``
    with a value as an output makes it that value's producer). Every other output of the group must be
    used only inside the group. Placing the node at the group's last position keeps topological order:
    each of its inputs was read by some group node, so it is defined before that position.
    """
    ids = {id(n) for n in group}
    taken = {id(v) for v in new_node.outputs}
    for node in group:
        for out in node.outputs:
            if id(out) in taken:
                continue
            if is_graph_output(graph, out) or any(id(u.node) not in ids for u in out.uses()):
                raise ValueError(f"cannot fuse {node.label}: {out.name} is used outside the group")
    last = max(group, key=graph.nodes.index)
    graph.insert_before(last, new_node)
    graph.remove(group, safe=False)

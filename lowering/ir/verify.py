"""``verify(graph)``: structural checks with messages that name the node and value at fault."""

from __future__ import annotations

from .core import Graph, Use


class IRError(Exception):
    """The graph IR broke one of its invariants."""


def verify(graph: Graph) -> None:
    """Check SSA form, topological order, use-list consistency and typing. Raises :class:`IRError`."""
    defined: set[int] = {id(v) for v in graph.inputs}
    names: dict[str, object] = {}

    def define(v, where: str) -> None:
        other = names.get(v.name)
        if other is not None and other is not v:
            raise IRError(f"value name '{v.name}' defined twice ({where})")
        names[v.name] = v

    for v in graph.inputs:
        if v.type is None:
            raise IRError(f"graph input '{v.name}' has no type")
        define(v, "graph input")
    for node in graph.nodes:
        if node.graph is not graph:
            raise IRError(f"{node.label} does not belong to this graph")
        for i, v in enumerate(node.inputs):
            if v is None:
                continue
            if not v.is_const and id(v) not in defined:
                raise IRError(f"{node.label} input {i} '{v.name}' is used before it is defined")
            if Use(node, i) not in v.uses():
                raise IRError(f"{node.label} input {i} '{v.name}' is missing from its use-list")
            if v.is_const:
                define(v, "constant")
        for i, out in enumerate(node.outputs):
            if out.producer is not node or out.output_index != i:
                raise IRError(f"{node.label} output {i} '{out.name}' has a wrong producer")
            if out.type is None:
                raise IRError(f"{node.label} output '{out.name}' has no type")
            if out.is_const:
                raise IRError(f"{node.label} output '{out.name}' is also a constant")
            if id(out) in defined:
                raise IRError(f"{node.label} output '{out.name}' is defined twice")
            define(out, node.label)
            defined.add(id(out))
        for v in node.outputs + [v for v in node.inputs if v is not None]:
            for use in v.uses():
                if use.node.graph is not graph or use.node.input(use.index) is not v:
                    raise IRError(f"value '{v.name}' has a stale use by {use.node.label}")
    if len(graph.output_names) != len(graph.outputs):
        raise IRError("graph output_names and outputs differ in length")
    for v in graph.outputs:
        if not v.is_const and id(v) not in defined:
            raise IRError(f"graph output '{v.name}' is not defined by any node or input")

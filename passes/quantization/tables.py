"""Collapse an elementwise region fed by one 8-bit tensor into one 256-entry ``QLut`` (``fold_qdq``'s
last step).

    x:int8 -> DQ -> Div(c) -> Erf -> Q -> QAdd(., 1) -> QMul(x, .) -> QMul(., 0.5) -> y:int8
                                                                     ->  y = QLut(x){lut}

After folding, a GELU (``x * 0.5 * (1 + erf(x / sqrt 2))`` with its intermediate QuantizeLinears) is a
chain of small kernels, some float, every one a function of the same int8 ``x`` alone. Whatever such a
region computes, it computes per element from the one code of ``x``: there are 256 possible inputs, so
the region *is* a table. The table is the reference interpreter's evaluation of the region on every code,
so the rewrite is exact by construction (the artifact and the reference agree on it bit for bit, and the
float ops inside no longer depend on the C library's ``erff``).

A region: nodes that are elementwise (:data:`ELEMENTWISE`), whose non-constant inputs are ``x`` or
outputs of the region, whose constants hold one element, and whose values all have ``x``'s shape; exactly
one of its values (8-bit) is used outside it. Regions of one node are left alone (a lone ``QLut`` is
already a table; a lone ``QAdd``/``QMul`` costs no more than a lookup).
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Attr, AttrKind, Graph, Node, Value
from lowering.opinfo import BINARY_OPS, DOMAIN, UNARY_OPS
from lowering.quantized import QRANGE
from lowering.reference import ReferenceError, evaluate_node

from ..fusion.rewriting import is_graph_output, merged_meta, replace_group

QUANTIZED = frozenset({"int8", "uint8"})
#: Elementwise ops a region may hold: (domain, op).
ELEMENTWISE = (frozenset(("", op) for op in set(UNARY_OPS) | BINARY_OPS)
               | frozenset(("", op) for op in ("QuantizeLinear", "DequantizeLinear"))
               | frozenset((DOMAIN, op) for op in ("QAdd", "QMul", "QLut")))


def _code_type(v: Value | None) -> str | None:
    return None if v is None or v.type is None else v.type.dtype.numpy.name


def _fits(node: Node, inside: set[int], source: Value) -> bool:
    """Whether ``node`` can join the region grown from ``source`` (its inputs known to be inside)."""
    if (node.domain, node.op) not in ELEMENTWISE or len(node.outputs) != 1:
        return False
    if node.output.type is None or node.output.type.shape != source.type.shape:
        return False
    for v in node.inputs:
        if v is None:
            continue
        if v.is_const:
            if v.const.size != 1:
                return False
        elif v is not source and id(v) not in inside:
            return False
    return True


def _region(graph: Graph, source: Value) -> list[Node]:
    """The nodes reachable from ``source`` that compute from it alone, in graph order."""
    inside: set[int] = set()  # ids of values computed in the region
    members: dict[int, Node] = {}
    frontier = [source]
    while frontier:
        value = frontier.pop()
        for use in value.uses():
            node = use.node
            if id(node) in members or node.graph is not graph or not _fits(node, inside, source):
                continue
            members[id(node)] = node
            inside.add(id(node.output))
            frontier.append(node.output)
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    return sorted(members.values(), key=lambda n: order[id(n)])


def _escaping(graph: Graph, nodes: list[Node]) -> list[Node]:
    """The nodes whose output is used outside ``nodes`` (or is a graph output)."""
    ids = {id(n) for n in nodes}
    return [n for n in nodes
            if is_graph_output(graph, n.output) or any(id(u.node) not in ids for u in n.output.uses())]


def _ancestors(nodes: list[Node], last: Node) -> list[Node]:
    """``last`` and the nodes of ``nodes`` it depends on, in the order of ``nodes``."""
    ids = {id(n) for n in nodes}
    keep, stack = set(), [last]
    while stack:
        node = stack.pop()
        if id(node) in keep:
            continue
        keep.add(id(node))
        stack += [v.producer for v in node.inputs if v is not None and id(v.producer) in ids]
    return [n for n in nodes if id(n) in keep]


def _collapsible(graph: Graph, nodes: list[Node]) -> list[Node] | None:
    """The largest part of a region that ends in one 8-bit value, the only one used outside it."""
    for last in reversed(nodes):
        if _code_type(last.output) not in QUANTIZED:
            continue
        part = _ancestors(nodes, last)
        if len(part) >= 2 and _escaping(graph, part) == [last]:
            return part
    return None


def _table(nodes: list[Node], source: Value, last: Node) -> np.ndarray | None:
    """The region's output for every code of ``source``, through the reference interpreter."""
    lo, hi = QRANGE[_code_type(source)]
    env = {id(source): np.arange(lo, hi + 1).astype(source.type.dtype.numpy)}
    try:
        with np.errstate(all="ignore"):
            for node in nodes:
                args = [None if v is None else (v.const if v.is_const else env[id(v)]) for v in node.inputs]
                env[id(node.output)] = evaluate_node(node, args)[0]
    except ReferenceError:
        return None
    out = np.asarray(env[id(last.output)]).reshape(-1)
    return out.astype(np.int64) if out.size == hi - lo + 1 else None


def collapse_tables(graph: Graph) -> list[str]:
    """Replace every elementwise region fed by one int8/uint8 tensor with a ``QLut``; return the changes."""
    changes = []
    sources = [v for v in graph.values() if not v.is_const and _code_type(v) in QUANTIZED
               and v.type.shape is not None]
    for source in sources:
        if source.producer is not None and source.producer.graph is not graph:
            continue  # computed inside a region collapsed already
        nodes = _collapsible(graph, _region(graph, source))
        if nodes is None:
            continue
        last = nodes[-1]
        table = _table(nodes, source, last)
        if table is None:
            continue
        attrs = {"lut": Attr(AttrKind.INTS, tuple(int(t) for t in table))}
        lut = Node("QLut", [source], [last.output], attrs, name=last.name, domain=DOMAIN,
                   meta=merged_meta(nodes))
        replace_group(graph, nodes, lut)
        changes.append(f"{len(nodes)} elementwise ops on '{source.name}' ({', '.join(n.op for n in nodes)}) "
                       f"-> QLut '{lut.name}'")
    return changes

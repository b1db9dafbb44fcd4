"""Elementwise fusion: ``Relu(Add(Mul(x, s), t)) -> lowering::FusedElementwise(x, s, t)``.

A group is a tree of elementwise nodes (``opinfo.BODY_OPS``: float math with constant parameters, integer
arithmetic, comparisons, logic, IsNaN, Cast, Where, and existing ``FusedElementwise`` nodes) whose internal
values each have exactly one use and are not graph outputs. Each maximal group of two or more nodes becomes
one ``lowering::FusedElementwise`` with the body encoding ``fused_elementwise`` in
``lowering/reference/ops_math.py`` reads:

- registers ``0..n-1`` are the node's inputs (the group's distinct leaf values, each listed once, in the
  order the body first reads them);
- ``body_ops[k]`` appends register ``n + k``; it reads its operands from ``body_args`` (``body_arity(op)``
  registers, consumed in order) and its parameters from ``body_params`` (``body_param_count(op)`` floats);
- the output is the last register broadcast to the output type.

Registers are typed: each has the element type ``opinfo.elementwise_result`` gives its op (a comparison
gives bool, Cast its ``to`` type, Where its operands' type), so a mask computation such as
``Where(Equal(m, 0), -inf, Add(s, b))`` is one loop, with no bool or int64 tensor in memory. A node joins a
group only when its operand and result types obey that rule (``elementwise_result`` returns its output's
type); anything else (a mistyped node) is left alone.

A group is only fused when its output shape is the broadcast of all its inputs' shapes, so every output
element is one evaluation of the body (always true for a well-typed group; checked anyway). A lone
elementwise node is left as it is: a one-op body would only hide the op from targets. A
``FusedElementwise`` whose output feeds another elementwise node (single use) is merged with it, so the
pass may run again after other fusions. The fused node takes the root node's name and output value.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Attr, AttrKind, Graph, Node, Value
from lowering.opinfo import (
    BODY_OPS,
    DOMAIN,
    body_arity,
    body_param_count,
    elementwise_params,
    elementwise_result,
)
from lowering.passmanager import Pass, PassContext, PassResult

from .rewriting import merged_meta, replace_group, sole_use

FUSED = "FusedElementwise"

#: One body op: (op, params, operands); an operand is ("input", leaf index) or ("op", op index).
BodyOp = tuple[str, tuple[float, ...], tuple[tuple[str, int], ...]]


def _is_fused(node: Node) -> bool:
    return node.domain == DOMAIN and node.op == FUSED


def _data_inputs(node: Node) -> list[Value]:
    """The tensor operands of an elementwise node (Clip's bounds are parameters, not operands)."""
    if _is_fused(node):
        return list(node.inputs)
    return list(node.inputs[: body_arity(node.op)])


def _is_standard_elementwise(node: Node) -> bool:
    if node.domain or len(node.outputs) != 1 or node.op not in BODY_OPS:
        return False
    arity = body_arity(node.op)
    if len(node.inputs) < arity or (node.op in ("Min", "Max", "Pow") and len(node.inputs) != arity):
        return False
    return elementwise_params(node) is not None


def _is_elementwise(node: Node) -> bool:
    if not (_is_fused(node) or _is_standard_elementwise(node)):
        return False
    values = _data_inputs(node) + [node.output]
    if any(v is None or v.type is None for v in values):
        return False
    if _is_fused(node):
        return True  # typed when it was fused
    result = elementwise_result(node.op, [v.type.dtype for v in values[:-1]], elementwise_params(node))
    return result is node.output.type.dtype


def _body_of(node: Node, operands: list[tuple[str, int]], body: list[BodyOp]) -> tuple[str, int]:
    """Append ``node``'s ops to ``body`` given its operands; return the operand of its result."""
    if not _is_fused(node):
        body.append((node.op, tuple(elementwise_params(node)), tuple(operands)))
        return ("op", len(body) - 1)
    registers = list(operands)
    args, params = list(node.attr("body_args", ())), list(node.attr("body_params", ()))
    for op in node.attr("body_ops"):
        arity, count = body_arity(op), body_param_count(op)
        body.append((op, tuple(params[:count]), tuple(registers[a] for a in args[:arity])))
        del args[:arity], params[:count]
        registers.append(("op", len(body) - 1))
    return registers[-1]


class FuseElementwise(Pass):
    """Fuse trees of single-use elementwise nodes into one ``lowering::FusedElementwise``."""

    name = "fuse_elementwise"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes = []
        position = {id(node): i for i, node in enumerate(graph.nodes)}
        claimed: set[int] = set()
        for root in reversed(graph.nodes):
            if id(root) in claimed or not _is_elementwise(root):
                continue
            group = self._group(graph, root)
            claimed.update(id(n) for n in group)
            if len(group) < 2:
                continue
            group.sort(key=lambda n: position[id(n)])
            fused = self._fuse(graph, root, group)
            if isinstance(fused, str):
                ctx.log(f"{self.name}: group at {root.label} not fused: {fused}")
                continue
            ops = ", ".join(f"{n.op} '{n.name}'" for n in group)
            changes.append(f"fused {ops} into {fused.qualified_op} '{fused.name}'")
        return PassResult(bool(changes), changes)

    def _group(self, graph: Graph, root: Node) -> list[Node]:
        """``root`` and every elementwise producer reachable through single-use values."""
        group, pending = [root], [root]
        while pending:
            node = pending.pop()
            for value in _data_inputs(node):
                producer = value.producer
                if producer is not None and _is_elementwise(producer) and sole_use(graph, value):
                    group.append(producer)
                    pending.append(producer)
        return group

    def _fuse(self, graph: Graph, root: Node, group: list[Node]) -> Node | str:
        """Replace ``group`` (in topological order) by one FusedElementwise; or say why not."""
        members = {id(n) for n in group}
        leaves: dict[int, int] = {}  # id(value) -> input index
        inputs: list[Value] = []
        results: dict[int, tuple[str, int]] = {}
        body: list[BodyOp] = []
        for node in group:
            operands = []
            for value in _data_inputs(node):
                if value.producer is not None and id(value.producer) in members:
                    operands.append(results[id(value)])
                else:
                    if id(value) not in leaves:
                        leaves[id(value)] = len(inputs)
                        inputs.append(value)
                    operands.append(("input", leaves[id(value)]))
            results[id(node.output)] = _body_of(node, operands, body)
        if results[id(root.output)] != ("op", len(body) - 1):
            return "the root's result is not the last op of the body"
        expected = np.broadcast_shapes(*(v.type.shape for v in inputs))
        if tuple(expected) != root.output.type.shape:
            return f"the output {root.output.type} is not the broadcast {list(expected)} of the inputs"
        registers = {"input": 0, "op": len(inputs)}
        attrs = {
            "body_ops": Attr(AttrKind.STRINGS, tuple(op for op, _, _ in body)),
            "body_args": Attr(AttrKind.INTS, tuple(registers[kind] + i for _, _, args in body
                                                   for kind, i in args)),
            "body_params": Attr(AttrKind.FLOATS, tuple(float(p) for _, params, _ in body for p in params)),
        }
        fused = Node(FUSED, inputs, [root.output], attrs, name=root.name, domain=DOMAIN,
                     meta=merged_meta(group))
        replace_group(graph, group, fused)
        return fused

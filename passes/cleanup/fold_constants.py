"""Constant folding: ``Add(const a, const b) -> const (a + b)``.

A node whose inputs are all constants (or absent optional inputs) is evaluated once with the reference
interpreter (``lowering.reference.evaluate_node``) and its outputs become constant values that keep the
outputs' names. Uses and graph-output slots move to the constants; the node is removed.

Size rule: a node is *not* folded when its outputs total more than ``MAX_GROWTH_BYTES`` (1 MiB) *and* more
than ``MAX_GROWTH_FACTOR`` (2) times the bytes of its distinct inputs. That keeps ``Expand`` and
``ConstantOfShape`` from materialising huge tensors in the weights, while reshaping, transposing or casting
a large weight (same size out as in) still folds.

Nodes the reference cannot evaluate, or whose result does not match the output's declared type, are left
alone and logged. Ops named in ``keep_ops`` are never folded: the default pipeline keeps
``DequantizeLinear`` of quantized weights until ``fold_qdq`` has read their integer data and parameters.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Graph, Node, TensorType, Value
from lowering.passmanager import Pass, PassContext, PassResult
from lowering.reference import ReferenceError, evaluate_node

MAX_GROWTH_BYTES = 1 << 20
MAX_GROWTH_FACTOR = 2


def _input_bytes(node: Node) -> int:
    distinct = {id(v): v for v in node.inputs if v is not None}
    return sum(v.const.nbytes for v in distinct.values())


def _output_bytes(node: Node) -> int:
    return sum(v.type.nbytes for v in node.outputs if v.type is not None)


class FoldConstants(Pass):
    """Evaluate nodes whose inputs are all constant and replace their outputs by constants."""

    name = "fold_constants"

    def __init__(self, keep_ops: frozenset[str] = frozenset()):
        self.keep_ops = frozenset(keep_ops)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes = []
        for node in graph:
            if node.qualified_op in self.keep_ops or not all(v is None or v.is_const for v in node.inputs):
                continue
            reason = self._fold(graph, node)
            if reason is None:
                changes.append(f"folded {node.qualified_op} '{node.name}' into a constant")
            else:
                ctx.log(f"{self.name}: kept {node.label}: {reason}")
        return PassResult(bool(changes), changes)

    def _fold(self, graph: Graph, node: Node) -> str | None:
        """Fold ``node``; on refusal return why (the graph is then unchanged)."""
        out_bytes, in_bytes = _output_bytes(node), _input_bytes(node)
        if out_bytes > MAX_GROWTH_BYTES and out_bytes > MAX_GROWTH_FACTOR * in_bytes:
            return (f"its outputs ({out_bytes} bytes) would be more than {MAX_GROWTH_FACTOR}x its inputs "
                    f"({in_bytes} bytes) and over {MAX_GROWTH_BYTES} bytes")
        try:
            results = evaluate_node(node, [None if v is None else v.const for v in node.inputs])
        except ReferenceError as exc:
            return f"the reference cannot evaluate it ({exc})"
        if len(results) != len(node.outputs):
            return f"the reference gives {len(results)} outputs for {len(node.outputs)}"
        constants: list[Value | None] = []
        for out, array in zip(node.outputs, results):
            if array is None:
                if out.uses() or any(out is v for v in graph.outputs):
                    return f"the reference gives no value for its used output '{out.name}'"
                constants.append(None)
                continue
            try:
                found = TensorType.of(array)
            except ValueError as exc:
                return str(exc)
            if out.type is not None and found != out.type:
                return f"the result {found} differs from the declared type {out.type}"
            # The output disappears with the node, so the constant can take over its name. (Not
            # np.ascontiguousarray: it turns a 0-d array into shape [1].)
            constants.append(Value(out.name, const=np.asarray(array, order="C")))
        for out, const in zip(node.outputs, constants):
            if const is not None:
                out.replace_all_uses_with(const, graph)
        graph.remove(node)
        return None

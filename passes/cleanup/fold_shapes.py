"""Static-shape simplification: ``Shape(x: f32[2,8]) -> const [2, 8]`` and ``Reshape(x: [2,8]) -> [2,8]``
-> ``x``.

Every value in the IR has a static type, so:

- ``Shape`` (with ``start``/``end``) and ``Size`` become int64 constants. The Shape -> Gather -> Concat ->
  Reshape chains that exporters emit for dynamic batch sizes then fold away under ``FoldConstants``.
- No-op ops are removed (their output's uses move to their input): ``Identity``; ``Reshape``,
  ``Flatten``, ``Squeeze``, ``Unsqueeze``, ``Expand`` and ``Tile`` whose output type equals the input
  type; ``Cast`` to the input's own element type; ``Transpose`` with the identity permutation; ``Slice``
  whose constant parameters select every element in order (``x[:, :T]`` with T the full length, common in
  exports); ``Pad`` with constant pads that are all zero.

A no-op whose output is a graph output is kept when its input is a graph input or another graph output:
removing it would make one value serve two signature slots (or an input double as an output), which
runtimes that bind one buffer per slot cannot express.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Graph, Node, Value
from lowering.passmanager import Pass, PassContext, PassResult
from lowering.reference.ops import ONNX_TYPE_CODES

SHAPE_PRESERVING = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand", "Tile"})


def _is_graph_output(graph: Graph, value: Value) -> bool:
    return any(value is out for out in graph.outputs)


def _static_shape_value(node: Node) -> np.ndarray | None:
    """The constant a ``Shape``/``Size`` node computes, or None."""
    source = node.input(0)
    if node.domain or source is None or source.type is None:
        return None
    dims = np.array(source.type.shape, dtype=np.int64)
    if node.op == "Shape":
        return dims[node.attr("start", 0):node.attr("end")]
    if node.op == "Size":
        return np.array(source.type.numel, dtype=np.int64)
    return None


def _is_noop(node: Node) -> bool:
    """Whether ``node`` returns its first input unchanged."""
    if node.domain or len(node.outputs) != 1 or node.input(0) is None:
        return False
    source, result = node.input(0), node.output
    if node.op == "Identity":
        return True
    if source.type is None or source.type != result.type:
        return False
    if node.op in SHAPE_PRESERVING:
        return True
    if node.op == "Cast":
        code = node.attr("to")
        return code in ONNX_TYPE_CODES and np.dtype(ONNX_TYPE_CODES[code]) == source.type.dtype.numpy
    if node.op == "Transpose":
        perm = node.attr("perm")
        identity = tuple(range(source.type.rank))
        return (tuple(perm) if perm is not None else identity[::-1]) == identity
    if node.op == "Slice":
        return _is_identity_slice(node)
    if node.op == "Pad":
        pads = node.input(1)
        return pads is not None and pads.is_const and not pads.const.any()
    return False


def _is_identity_slice(node: Node) -> bool:
    """Whether a Slice's constant starts/ends/axes/steps keep every element of its input, in order."""
    params = [node.input(i) for i in range(1, 5)]
    if any(p is not None and not p.is_const for p in params) or params[0] is None or params[1] is None:
        return False
    shape = node.input(0).type.shape
    starts, ends = params[0].const.reshape(-1), params[1].const.reshape(-1)
    axes = params[2].const.reshape(-1) if params[2] is not None else range(len(starts))
    steps = params[3].const.reshape(-1) if params[3] is not None else [1] * len(starts)
    for s, e, a, st in zip(starts, ends, axes, steps):
        n = shape[int(a) % len(shape)]
        if int(st) == 0 or (n > 1 and slice(int(s), int(e), int(st)).indices(n) != (0, n, 1)):
            return False
    return True


class FoldShapes(Pass):
    """Turn Shape/Size of statically typed values into constants and remove no-op ops."""

    name = "fold_shapes"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes = []
        for node in graph:
            shape = _static_shape_value(node)
            if shape is not None:
                node.output.replace_all_uses_with(Value(node.output.name, const=shape), graph)
                graph.remove(node)
                changes.append(f"folded {node.op} '{node.name}' of a static shape to {shape.tolist()}")
            elif _is_noop(node):
                reason = self._bypass(graph, node)
                if reason is None:
                    changes.append(f"removed no-op {node.op} '{node.name}'")
                else:
                    ctx.log(f"{self.name}: kept no-op {node.label}: {reason}")
        return PassResult(bool(changes), changes)

    def _bypass(self, graph: Graph, node: Node) -> str | None:
        """Point the no-op's uses at its input and remove it; on refusal return why."""
        source, result = node.input(0), node.output
        if _is_graph_output(graph, result):
            if any(source is v for v in graph.inputs):
                return f"its output '{result.name}' is a graph output and its input a graph input"
            if _is_graph_output(graph, source):
                return f"its output '{result.name}' and its input are both graph outputs"
        result.replace_all_uses_with(source, graph)
        graph.remove(node)
        return None

"""BatchNorm folding: ``BatchNormalization(Conv(x, W, b)) -> Conv(x, W * s, b * s + t)``.

With inference BatchNormalization ``y = (x - mean) * s' + bias`` and ``s = scale / sqrt(var + eps)``,
``t = bias - mean * s``, the normalization is a per-channel affine map ``y = x * s + t``. When the
BatchNormalization's input comes from

- a ``Conv`` with constant ``W`` (and constant or absent ``B``): the output channel is axis 0 of ``W``;
- a ``Gemm`` with constant ``B`` (and constant or absent ``C``): the channel is the column of ``Y``, so
  ``B`` scales along its N axis (axis 1, or axis 0 with ``transB``), and ``C`` becomes
  ``beta * C * s + t`` with ``beta = 1``;
- a ``MatMul`` of a rank-2 ``A`` with a constant rank-2 ``B``: it becomes ``Gemm(A, B * s, t)``,

and that producer's output has no other use and is not a graph output, the scale and shift fold into new
constant weights (computed in float64, cast back to the weights' type). Any other BatchNormalization with
constant parameters becomes ``Add(Mul(x, s), t)`` with ``s`` and ``t`` shaped ``[C, 1, ...]`` so that they
broadcast over the channel axis; elementwise fusion then merges it with its neighbours.

Not folded (and logged): parameters that are not constants, ``training_mode = 1`` or used running-statistics
outputs, inputs of rank < 2.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Graph, Node, Value
from lowering.passmanager import Pass, PassContext, PassResult

from .rewriting import is_graph_output, merged_meta, new_constant, replace_group, sole_use


def _affine(graph: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray] | str:
    """The float64 per-channel ``(s, t)`` of a BatchNormalization, or why it has none."""
    if bn.attr("training_mode", 0):
        return "training_mode is set"
    if any(out.uses() or is_graph_output(graph, out) for out in bn.outputs[1:]):
        return "its running-statistics outputs are used"
    params = bn.inputs[1:5]
    if len(params) != 4 or not all(v is not None and v.is_const for v in params):
        return "its scale, bias, mean and variance are not all constants"
    x = bn.input(0)
    if x.type is None or x.type.rank < 2:
        return "its input has rank < 2"
    scale, bias, mean, var = (v.const.astype(np.float64).reshape(-1) for v in params)
    if any(p.size != x.type.shape[1] for p in (scale, bias, mean, var)):
        return f"its parameters do not all have {x.type.shape[1]} channels"
    s = scale / np.sqrt(var + float(np.float32(bn.attr("epsilon", 1e-5))))
    return s, bias - mean * s


def _const(graph: Graph, array: np.ndarray, like: Value, hint: str) -> Value:
    return new_constant(graph, array.astype(like.type.dtype.numpy), hint)


class FoldBatchNorm(Pass):
    """Fold inference BatchNormalization into the Conv/Gemm/MatMul before it, or lower it to Mul+Add."""

    name = "fold_batchnorm"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes = []
        for bn in graph:
            if bn.op != "BatchNormalization" or bn.domain:
                continue
            affine = _affine(graph, bn)
            if isinstance(affine, str):
                ctx.log(f"{self.name}: kept {bn.label}: {affine}")
                continue
            producer = bn.input(0).producer
            reason = self._fold_into(graph, bn, producer, *affine)
            if reason is None:
                changes.append(f"folded BatchNormalization '{bn.name}' into {producer.op} '{producer.name}'")
                continue
            ctx.log(f"{self.name}: {bn.label} not folded into its producer: {reason}")
            self._lower_to_mul_add(graph, bn, *affine)
            changes.append(f"lowered BatchNormalization '{bn.name}' to Mul+Add")
        return PassResult(bool(changes), changes)

    def _fold_into(self, graph: Graph, bn: Node, producer: Node | None, s, t) -> str | None:
        """Fold ``bn`` into ``producer``; on refusal return why (the graph is then unchanged)."""
        if producer is None or producer.domain or producer.op not in ("Conv", "Gemm", "MatMul"):
            return "its input does not come from a Conv, Gemm or MatMul"
        if sole_use(graph, producer.output) is None:
            return f"the output of {producer.label} has other uses or is a graph output"
        build = {"Conv": self._folded_conv, "Gemm": self._folded_gemm, "MatMul": self._folded_matmul}
        parts = build[producer.op](graph, producer, s, t)
        if isinstance(parts, str):
            return parts
        op, inputs, attrs = parts
        node = Node(op, inputs, [bn.output], attrs, name=producer.name, meta=merged_meta([producer, bn]))
        replace_group(graph, [producer, bn], node)
        return None

    def _folded_conv(self, graph: Graph, conv: Node, s, t):
        x, w, b = conv.input(0), conv.input(1), conv.input(2)
        if not w.is_const or (b is not None and not b.is_const):
            return "the Conv's weights or bias are not constants"
        if w.const.shape[0] != s.size:
            return f"the Conv has {w.const.shape[0]} output channels, the BatchNormalization {s.size}"
        scaled = w.const.astype(np.float64) * s.reshape((-1,) + (1,) * (w.const.ndim - 1))
        shift = (0.0 if b is None else b.const.astype(np.float64)) * s + t
        bias_name = b.name if b is not None else conv.name + "_bias"
        inputs = [x, _const(graph, scaled, w, w.name), _const(graph, shift, w, bias_name)]
        return "Conv", inputs, conv.attrs

    def _folded_gemm(self, graph: Graph, gemm: Node, s, t):
        a, b, c = gemm.input(0), gemm.input(1), gemm.input(2)
        if not b.is_const or (c is not None and not c.is_const):
            return "the Gemm's B or C is not a constant"
        trans_b = gemm.attr("transB", 0)
        columns = b.const.shape[0 if trans_b else 1]
        if columns != s.size:
            return f"the Gemm has {columns} columns, the BatchNormalization {s.size}"
        scaled = b.const.astype(np.float64) * (s.reshape(-1, 1) if trans_b else s)
        bias = 0.0 if c is None else c.const.astype(np.float64) * gemm.attr("beta", 1.0)
        shift = bias * s + t
        attrs = dict(gemm.attrs)
        attrs.pop("beta", None)
        bias_name = c.name if c is not None else gemm.name + "_bias"
        inputs = [a, _const(graph, scaled, b, b.name), _const(graph, shift, b, bias_name)]
        return "Gemm", inputs, attrs

    def _folded_matmul(self, graph: Graph, matmul: Node, s, t):
        a, b = matmul.input(0), matmul.input(1)
        if not b.is_const or b.const.ndim != 2 or a.type is None or a.type.rank != 2:
            return "the MatMul is not a rank-2 input times a constant rank-2 matrix"
        if b.const.shape[1] != s.size:
            return f"the MatMul has {b.const.shape[1]} columns, the BatchNormalization {s.size}"
        scaled = b.const.astype(np.float64) * s
        return "Gemm", [a, _const(graph, scaled, b, b.name), _const(graph, t, b, matmul.name + "_bias")], {}

    def _lower_to_mul_add(self, graph: Graph, bn: Node, s, t) -> None:
        x = bn.input(0)
        shape = (-1,) + (1,) * (x.type.rank - 2)
        scale = _const(graph, s.reshape(shape), x, bn.name + "_scale")
        shift = _const(graph, t.reshape(shape), x, bn.name + "_shift")
        scaled = Value(graph.unique_name(bn.output.name + "_scaled"), x.type)
        mul = Node("Mul", [x, scale], [scaled], name=graph.unique_name(bn.name + "_scale"),
                   meta=merged_meta([bn]))
        add = Node("Add", [scaled, shift], [bn.output], name=graph.unique_name(bn.name + "_shift"),
                   meta=merged_meta([bn]))
        graph.insert_before(bn, mul)
        replace_group(graph, [bn], add)

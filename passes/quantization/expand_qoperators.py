"""ExpandQOperators: ONNX's and ONNX Runtime's QOperator ops -> the same computation in QDQ form.

    QLinearConv(x, sx, zx, w, sw, zw, sy, zy, B)   ->  Q(Conv(DQ(x), DQ(w), DQ(B, sx*sw, 0)), sy, zy)
    QLinearMatMul(a, .., b, .., sy, zy)            ->  Q(MatMul(DQ(a), DQ(b)), sy, zy)
    com.microsoft::QGemm(A, .., B, .., C, sy, zy)  ->  Q(Gemm(DQ(A), DQ(B), DQ(C, alpha*sa*sb, 0)), sy, zy)
    com.microsoft::QLinearAdd / QLinearMul         ->  Q(Add / Mul(DQ(a), DQ(b)))
    com.microsoft::QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid, QLinearLeakyRelu,
    QLinearSoftmax, QLinearConcat                  ->  Q(op(DQ(x), ...))

Every QOperator op is, by its definition, the float op between a dequantization of its inputs and a
quantization of its output; ONNX Runtime merely computes it with integer kernels. Written in QDQ form, a
QOperator model goes through the one folding pass (``fold_qdq``) that QDQ models take, into the
``lowering`` domain's integer ops; what cannot fold stays float between standalone DequantizeLinear and
QuantizeLinear, so targets never see the com.microsoft domain. The int32 biases of QLinearConv and QGemm
get a DequantizeLinear with the accumulator's scale (as ONNX Runtime's QDQ quantizer writes them), which
``fold_qdq`` recognises and keeps exact.

Left as they are (and logged): NHWC variants (``channels_last=1``), QLinearSoftmax of opset < 13 over a
non-last axis (2-D coercion), and biases whose scales are not constants.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Attr, AttrKind, DType, Graph, Node, TensorType, Value
from lowering.passmanager import Pass, PassContext, PassResult
from lowering.reference.quantized_ops import full_count_pads

from ..fusion.rewriting import new_constant

MS = "com.microsoft"


class _Expansion:
    """Builds the replacement of one node; ``finish`` puts it in the graph. (Building a node registers
    its uses, so an expander checks everything that can fail before it builds anything.)"""

    def __init__(self, graph: Graph, node: Node):
        self.graph, self.node = graph, node
        self.nodes: list[Node] = []

    def _value(self, hint: str, shape) -> Value:
        name = self.graph.unique_name(f"{self.node.name}_{hint}")
        return Value(name, TensorType(DType.FLOAT32, tuple(shape)))

    def _add(self, op: str, inputs, outputs, attrs=None) -> Node:
        node = Node(op, inputs, outputs, attrs or {}, name=self.graph.unique_name(f"{self.node.name}_{op}"),
                    meta=self.node.meta)
        self.nodes.append(node)
        return node

    def dq(self, x: Value, scale: Value, zp: Value | None, axis: int | None = None) -> Value:
        out = self._value("dequantized", x.type.shape)
        per_axis = scale.type is not None and scale.type.numel > 1
        attrs = {}
        if per_axis and axis is not None:
            attrs["axis"] = Attr(AttrKind.INT, axis % max(x.type.rank, 1))
        self._add("DequantizeLinear", [x, scale, zp], [out], attrs)
        return out

    def op(self, op: str, inputs, attrs: dict | None = None, out: Value | None = None) -> Value:
        out = out or self._value(op.lower(), self.node.output.type.shape)
        while inputs and inputs[-1] is None:
            inputs = inputs[:-1]
        self._add(op, inputs, [out], attrs)
        return out

    def q(self, y: Value, scale: Value, zp: Value | None) -> None:
        """Quantize ``y`` into the node's own output value (an absent zero point: 0 of its type)."""
        out = self.node.output
        if zp is None:
            zp = new_constant(self.graph, np.zeros((), out.type.dtype.numpy), f"{self.node.name}_zero_point")
        self._add("QuantizeLinear", [y, scale, zp], [out])

    def const(self, array: np.ndarray, hint: str) -> Value:
        return new_constant(self.graph, array, f"{self.node.name}_{hint}")

    def finish(self) -> None:
        for node in self.nodes:
            self.graph.insert_before(self.node, node)
        self.graph.remove(self.node, safe=False)  # its output value now belongs to the last new node


def _attrs(node: Node, *drop: str) -> dict[str, Attr]:
    return {k: v for k, v in node.attrs.items() if k not in drop}


def _bias(e: _Expansion, bias: Value | None, scale: np.ndarray, axis: int) -> Value | None | str:
    """``DQ(bias, scale, 0)`` for an int32 bias quantized at the accumulator's ``scale``."""
    if bias is None:
        return None
    scale = scale.astype(np.float32).reshape(-1)
    if scale.size > 1 and bias.type.rank == 0:
        return "the per-channel bias scale does not match a scalar bias"
    s = e.const(scale if scale.size > 1 else scale.reshape(()), "bias_scale")
    zp = e.const(np.zeros(scale.shape if scale.size > 1 else (), np.int32), "bias_zero_point")
    return e.dq(bias, s, zp, axis)


def _const(v: Value | None) -> np.ndarray | None:
    return None if v is None or not v.is_const else v.const


def expand_conv(e: _Expansion) -> str | None:
    x, sx, zx, w, sw, zw, sy, zy = e.node.inputs[:8]
    bias = e.node.input(8)
    if bias is not None and (_const(sx) is None or _const(sw) is None):
        return "its bias scale (x_scale * w_scale) is not a constant"
    b = None
    if bias is not None:
        b = _bias(e, bias, np.float32(_const(sx).reshape(-1)[0]) * _const(sw).astype(np.float32), 0)
        if isinstance(b, str):
            return b
    y = e.op("Conv", [e.dq(x, sx, zx), e.dq(w, sw, zw, 0), b], _attrs(e.node))
    e.q(y, sy, zy)
    return None


def expand_matmul(e: _Expansion) -> str | None:
    a, sa, za, b, sb, zb, sy, zy = e.node.inputs[:8]
    y = e.op("MatMul", [e.dq(a, sa, za, -2), e.dq(b, sb, zb, -1)])
    e.q(y, sy, zy)
    return None


def expand_gemm(e: _Expansion) -> str | None:
    node = e.node
    a, sa, za, b, sb, zb = node.inputs[:6]
    c, sy, zy = node.input(6), node.input(7), node.input(8)
    alpha = float(node.attr("alpha", 1.0))
    if c is not None and (_const(sa) is None or _const(sb) is None):
        return "its bias scale (alpha * a_scale * b_scale) is not a constant"
    bias = None
    if c is not None:
        scale = np.float32(alpha) * np.float32(_const(sa).reshape(-1)[0]) * _const(sb).astype(np.float32)
        bias = _bias(e, c, scale, -1)
        if isinstance(bias, str):
            return bias
    trans_b = node.attr("transB", 0)
    attrs = {"alpha": Attr(AttrKind.FLOAT, alpha), "beta": Attr(AttrKind.FLOAT, 1.0),
             "transA": Attr(AttrKind.INT, node.attr("transA", 0)), "transB": Attr(AttrKind.INT, trans_b)}
    inputs = [e.dq(a, sa, za), e.dq(b, sb, zb, 0 if trans_b else 1), bias]
    if sy is None:
        e.op("Gemm", inputs, attrs, out=node.output)
        return None
    e.q(e.op("Gemm", inputs, attrs), sy, zy)
    return None


def _binary(op: str):
    def expand(e: _Expansion) -> str | None:
        a, sa, za, b, sb, zb, sc = e.node.inputs[:7]
        e.q(e.op(op, [e.dq(a, sa, za), e.dq(b, sb, zb)]), sc, e.node.input(7))
        return None
    return expand


def _unary(op: str, *drop: str):
    def expand(e: _Expansion) -> str | None:
        if e.node.attr("channels_last", 0):
            return "it is channels-last (NHWC)"
        if op == "Softmax" and e.node.attr("opset", 13) < 13:
            rank = e.node.input(0).type.rank
            if e.node.attr("axis", 1) % rank != rank - 1:
                return "its opset < 13 softmax coerces the input to 2-D"
        x, sx, zx, sy = e.node.inputs[:4]
        e.q(e.op(op, [e.dq(x, sx, zx)], _attrs(e.node, *drop)), sy, e.node.input(4))
        return None
    return expand


def expand_average_pool(e: _Expansion) -> str | None:
    """ONNX Runtime counts a ceil_mode window's overhang past the padded input when count_include_pad=1
    (ONNX's AveragePool does not): that overhang becomes explicit end padding, with ceil_mode off."""
    node = e.node
    if node.attr("channels_last", 0):
        return "it is channels-last (NHWC)"
    attrs = _attrs(node, "channels_last")
    if node.attr("count_include_pad", 0) and node.attr("ceil_mode", 0):
        pads = full_count_pads(node, tuple(node.input(0).type.shape[2:]))
        attrs.update(pads=Attr(AttrKind.INTS, pads), ceil_mode=Attr(AttrKind.INT, 0),
                     auto_pad=Attr(AttrKind.STRING, "NOTSET"))
    x, sx, zx, sy = node.inputs[:4]
    e.q(e.op("AveragePool", [e.dq(x, sx, zx)], attrs), sy, node.input(4))
    return None


def expand_concat(e: _Expansion) -> str | None:
    inputs = e.node.inputs
    parts = [e.dq(inputs[i], inputs[i + 1], inputs[i + 2]) for i in range(2, len(inputs), 3)]
    e.q(e.op("Concat", parts, _attrs(e.node)), inputs[0], inputs[1])
    return None


EXPANSIONS = {
    "QLinearConv": expand_conv,
    "QLinearMatMul": expand_matmul,
    f"{MS}::QGemm": expand_gemm,
    f"{MS}::QLinearAdd": _binary("Add"),
    f"{MS}::QLinearMul": _binary("Mul"),
    f"{MS}::QLinearGlobalAveragePool": _unary("GlobalAveragePool", "channels_last"),
    f"{MS}::QLinearAveragePool": expand_average_pool,
    f"{MS}::QLinearSigmoid": _unary("Sigmoid"),
    f"{MS}::QLinearLeakyRelu": _unary("LeakyRelu"),
    f"{MS}::QLinearSoftmax": _unary("Softmax", "opset"),
    f"{MS}::QLinearConcat": expand_concat,
}


class ExpandQOperators(Pass):
    """Rewrite QLinearConv, QLinearMatMul and ONNX Runtime's com.microsoft quantized ops into QDQ form."""

    name = "expand_qoperators"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes = []
        for node in graph:
            expand = EXPANSIONS.get(node.qualified_op)
            if expand is None:
                continue
            expansion = _Expansion(graph, node)
            reason = expand(expansion)
            if reason is not None:
                ctx.log(f"{self.name}: kept {node.label}: {reason}")
                continue
            expansion.finish()
            ops = ", ".join(n.op for n in expansion.nodes)
            changes.append(f"{node.qualified_op} '{node.name}' -> {ops}")
        return PassResult(bool(changes), changes)

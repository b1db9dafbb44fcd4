"""FoldQDQ: DequantizeLinear -> op -> QuantizeLinear groups become the integer ops of the contract, within
one quantization step of the float QDQ computation; what cannot fold stays float and says why."""

import numpy as np
import pytest

from lowering.opinfo import DOMAIN
from lowering.reference import run_graph
from passes.quantization.fold_qdq import FoldQDQ
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import run_passes

from . import contract_numpy as ref
from .qdq import assert_within_steps, dequantize, int32_bias, qdq, quantize, scale_of, weight

pytestmark = pytest.mark.unit
RNG = np.random.default_rng(3)


def _rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _ops(graph):
    return [n.qualified_op for n in graph.nodes]


def _quantized_output(b, y, scale, zp, dtype=np.int8, name="out"):
    """Quantize ``y`` and dequantize it again as the graph output (so the check measures in steps)."""
    q = quantize(b, y, scale, zp, dtype, f"{name}_q")
    b.output(dequantize(b, q, scale, zp, name=f"{name}_dq"), "y")
    return q


def _fold(b, min_exact=0.9, **kwargs):
    messages = []
    graph, exact = assert_within_steps(b, [FoldQDQ()], log=messages.append, min_exact=min_exact, **kwargs)
    return graph, exact, messages


@pytest.mark.parametrize("act", [None, "Relu", "Clip"])
def test_conv_per_channel_with_int32_bias_and_activation(act):
    b = GraphBuilder()
    x = qdq(b, b.input("x", (2, 3, 9, 9)), 0.03, 5)
    w = _rand(8, 3, 3, 3, scale=0.3)
    w_dq = weight(b, w)
    w_scale = scale_of(w_dq).astype(np.float64)
    acc_scale = np.float32(0.03) * scale_of(w_dq)
    y = b.op("Conv", [x, w_dq, int32_bias(b, _rand(8), acc_scale)], {"pads": (1, 1, 1, 1), "strides": (2, 2)},
             name="conv")
    if act == "Relu":
        y = b.op("Relu", [y], name="relu")
    elif act == "Clip":
        y = b.op("Clip", [y, b.const(np.float32(-0.5)), b.const(np.float32(1.0))], name="clip")
    _quantized_output(b, y, 0.02, -3)
    graph, exact, _ = _fold(b, expect_modified=True)
    assert _ops(graph) == ["QuantizeLinear", f"{DOMAIN}::QConv", "DequantizeLinear"]
    conv = graph.nodes[1]
    assert conv.input(1).type.dtype.value == "int8" and conv.input(2).type.dtype.value == "int32"
    assert conv.attr("pads") == (1, 1, 1, 1) and conv.attr("strides") == (2, 2)
    assert conv.attr("x_zero_point") == 5 and conv.attr("out_zero_point") == -3
    expected = [ref.encode_multiplier(float(np.float32(0.03)) * s / float(np.float32(0.02))) for s in w_scale]
    assert list(zip(conv.attr("multiplier"), conv.attr("shift"))) == expected
    bounds = {None: (-128, 127), "Relu": (-3, 127), "Clip": (-3 - 25, -3 + 50)}[act]  # Clip(-0.5, 1) / 0.02
    assert (conv.attr("clamp_min"), conv.attr("clamp_max")) == bounds
    assert conv.meta.sources[0] == "conv"


def test_conv_uint8_float_bias_depthwise_same_padding():
    b = GraphBuilder()
    x = qdq(b, b.input("x", (1, 4, 7, 7)), 0.05, 128, np.uint8)
    w_dq = weight(b, _rand(4, 1, 3, 3))
    y = b.op("Conv", [x, w_dq, b.const(_rand(4))], {"group": 4, "auto_pad": "SAME_UPPER", "strides": (2, 2)})
    _quantized_output(b, y, 0.04, 100, np.uint8)
    graph, _, _ = _fold(b, expect_modified=True)
    conv = graph.nodes[1]
    assert conv.op == "QConv" and conv.attr("group") == 4 and conv.attr("pads") == (1, 1, 1, 1)
    assert conv.attr("kernel_shape") == (3, 3) and conv.attr("clamp_min") == 0


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_with_alpha_beta_and_float_bias(trans_b):
    b = GraphBuilder()
    a = qdq(b, b.input("a", (5, 16)), 0.04, -2)
    w = _rand(10, 16, scale=0.2) if trans_b else _rand(16, 10, scale=0.2)
    y = b.op("Gemm", [a, weight(b, w, axis=0 if trans_b else 1), b.const(_rand(10))],
             {"transB": trans_b, "alpha": 0.5, "beta": 2.0})
    _quantized_output(b, y, 0.03, 4)
    graph, _, _ = _fold(b, expect_modified=True)
    node = graph.nodes[1]
    assert node.op == "QMatMul" and node.input(1).type.shape == (16, 10)
    assert len(node.attr("multiplier")) == 10


def test_matmul_batched_per_column_with_bias_add():
    b = GraphBuilder()
    a = qdq(b, b.input("a", (2, 6, 16)), 0.04, 0)
    y = b.op("MatMul", [a, weight(b, _rand(16, 12, scale=0.2), axis=1)])
    y = b.op("Add", [b.const(_rand(12)), y])
    _quantized_output(b, y, 0.05, 1)
    graph, _, _ = _fold(b, expect_modified=True)
    assert _ops(graph) == ["QuantizeLinear", f"{DOMAIN}::QMatMul", "DequantizeLinear"]
    assert graph.nodes[1].input(2).type.shape == (12,)


def test_matmul_of_two_activations():
    b = GraphBuilder()
    a = qdq(b, b.input("a", (3, 4, 8)), 0.05, 3, name="a")
    c = qdq(b, b.input("c", (3, 8, 5)), 0.07, -1, name="c")
    _quantized_output(b, b.op("MatMul", [a, c]), 0.2, 0)
    graph, _, _ = _fold(b, expect_modified=True)
    node = next(n for n in graph.nodes if n.domain)
    assert node.op == "QMatMul" and node.attr("b_zero_point") == -1 and len(node.attr("multiplier")) == 1


@pytest.mark.parametrize("op", ["Add", "Sub"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_add_sub_with_relu(op, dtype):
    b = GraphBuilder()
    zp = 0 if dtype == np.int8 else 128
    x = qdq(b, b.input("x", (2, 4, 5, 5)), 0.04, zp + 3, dtype, name="x")
    r = qdq(b, b.input("r", (1, 4, 1, 5)), 0.09, zp - 4, dtype, name="r")
    y = b.op("Relu", [b.op(op, [x, r])])
    _quantized_output(b, y, 0.05, zp - 100 if dtype == np.uint8 else -128, dtype)
    graph, _, _ = _fold(b, expect_modified=True)
    node = next(n for n in graph.nodes if n.domain)
    assert node.op == "QAdd" and (node.attr("b_multiplier") < 0) == (op == "Sub")
    assert node.attr("clamp_min") == (28 if dtype == np.uint8 else -128)


def test_mul_of_two_activations():
    b = GraphBuilder()
    x = qdq(b, b.input("x", (2, 8)), 0.04, 3, name="x")
    s = qdq(b, b.input("s", (2, 8)), 1 / 255, -128, name="s")
    _quantized_output(b, b.op("Mul", [x, s]), 0.02, 0)
    graph, _, _ = _fold(b, expect_modified=True)
    assert [n.op for n in graph.nodes if n.domain] == ["QMul"]


def test_global_and_window_average_pool():
    b = GraphBuilder()
    x = qdq(b, b.input("x", (1, 3, 6, 6)), 0.05, -10, name="x")
    y1 = b.op("AveragePool", [x], {"kernel_shape": (3, 3), "strides": (1, 1), "pads": (1, 1, 1, 1),
                                   "count_include_pad": 1})
    p1 = quantize(b, y1, 0.05, -10, name="p1")
    y2 = b.op("GlobalAveragePool", [dequantize(b, p1, 0.05, -10)])
    _quantized_output(b, y2, 0.01, 0)
    graph, _, _ = _fold(b, expect_modified=True)
    pools = [n for n in graph.nodes if n.domain]
    assert [n.op for n in pools] == ["QAveragePool", "QAveragePool"]
    assert pools[0].attr("global") == 0 and pools[1].attr("global") == 1


@pytest.mark.parametrize("attrs,reason", [
    ({"kernel_shape": (2, 2), "pads": (1, 1, 1, 1), "count_include_pad": 0},
     "different numbers of elements"),
    ({"kernel_shape": (3, 3), "strides": (2, 2), "ceil_mode": 1, "count_include_pad": 1},
     "ceil_mode windows"),
])
def test_average_pool_with_uneven_windows_stays_float(attrs, reason):
    b = GraphBuilder()
    x = qdq(b, b.input("x", (1, 2, 6, 6)), 0.05, 0)
    _quantized_output(b, b.op("AveragePool", [x], attrs, name="pool"), 0.05, 0)
    graph, exact, messages = _fold(b, expect_modified=False, min_exact=1.0)
    assert "AveragePool" in _ops(graph)
    assert any("'pool' (AveragePool) stays float" in m and reason in m for m in messages), messages


def _lut_table(x_scale, x_zp, y_scale, y_zp, f):
    """Independent table: dequantize each int8 code, f in float64, round half to even, saturate."""
    codes = np.arange(-128, 128)
    real = (codes - x_zp).astype(np.float32) * np.float32(x_scale)
    return np.clip(np.rint(f(real.astype(np.float64)) / np.float32(y_scale)) + y_zp, -128, 127)


@pytest.mark.parametrize("op,attrs,f", [
    ("Sigmoid", {}, lambda v: 1 / (1 + np.exp(-v))),
    ("Tanh", {}, np.tanh),
    ("LeakyRelu", {"alpha": 0.1}, lambda v: np.where(v >= 0, v, v * 0.1)),
])
def test_unary_activation_becomes_a_table(op, attrs, f):
    b = GraphBuilder()
    x = qdq(b, b.input("x", (2, 3, 4)), 0.05, 7)
    y_scale, y_zp = (1 / 256, -128) if op == "Sigmoid" else (0.01, 0)
    _quantized_output(b, b.op(op, [x], attrs), y_scale, y_zp)
    graph, exact, _ = _fold(b, expect_modified=True, scale_inputs=3.0)
    node = graph.nodes[1]
    assert node.op == "QLut" and len(node.attr("lut")) == 256
    np.testing.assert_array_equal(node.attr("lut"), _lut_table(0.05, 7, y_scale, y_zp, f))


def test_scalar_arithmetic_becomes_a_table_and_a_table_after_conv_becomes_its_epilogue():
    b = GraphBuilder()
    x = qdq(b, b.input("x", (1, 2, 5, 5)), 0.05, 0)
    conv = b.op("Conv", [x, weight(b, _rand(3, 2, 1, 1))], name="conv")
    sig = b.op("Sigmoid", [qdq(b, conv, 0.04, 2, name="conv_out")], name="sigmoid")
    half = b.op("Mul", [qdq(b, sig, 1 / 256, -128, name="sig_out"), b.const(np.float32(0.5))], name="half")
    _quantized_output(b, half, 1 / 512, -128)
    graph, _, _ = _fold(b, expect_modified=True)
    # the two tables (sigmoid, then * 0.5) compose into one, which becomes the conv's epilogue
    assert _ops(graph) == ["QuantizeLinear", f"{DOMAIN}::QConv", "DequantizeLinear"]
    conv = graph.nodes[1]
    assert len(conv.attr("lut")) == 256
    assert conv.meta.sources == ("conv", "conv_out_q", "sigmoid", "sig_out_q", "half", "out_q")


def test_data_movement_runs_on_integers_and_concat_requantizes_unequal_inputs():
    b = GraphBuilder()
    x = qdq(b, b.input("x", (1, 4, 6, 6)), 0.05, -3, name="x")
    pooled = b.op("MaxPool", [x], {"kernel_shape": (2, 2), "strides": (2, 2)})
    p = quantize(b, pooled, 0.05, -3, name="pool_q")
    flat = b.op("Reshape", [dequantize(b, p, 0.05, -3), b.const(np.array([1, 4, 9], np.int64))])
    f = quantize(b, flat, 0.05, -3, name="flat_q")
    other = qdq(b, b.input("z", (1, 4, 9)), 0.11, 20, name="z")
    cat = b.op("Concat", [dequantize(b, f, 0.05, -3), other], {"axis": 2})
    _quantized_output(b, cat, 0.05, -3)
    graph, exact, _ = _fold(b, expect_modified=True, min_exact=1.0)  # selection commutes: exact
    assert [n.qualified_op for n in graph.nodes if n.op not in ("QuantizeLinear", "DequantizeLinear")] == [
        "MaxPool", "Reshape", f"{DOMAIN}::QLut", "Concat"]
    assert all(n.output.type.dtype.value == "int8" for n in graph.nodes if n.op in ("MaxPool", "Concat"))


def test_embedding_gather_of_a_float_table_reads_a_quantized_table():
    """Q(Gather(T, ids)) -> Gather(Q(T), ids): the table is quantized once with the QuantizeLinear's own
    parameters, exact (values at and past the range saturate the same way, ties round to even)."""
    b = GraphBuilder()
    table = _rand(20, 8, scale=2.0)
    table[0, :4] = np.float32(0.05) * np.array([2.5, 3.5, -2.5, 1e3], np.float32)  # ties and saturation
    ids = b.input("ids", (2, 5), np.int64)
    gathered = b.op("Gather", [b.const(table, "table"), ids], {"axis": 0}, name="embed")
    _quantized_output(b, gathered, 0.05, 7)
    feeds = {"ids": np.array([[0, 3, 19, 0, 7], [1, 2, 3, 4, 5]], np.int64)}
    graph, exact, _ = _fold(b, inputs=feeds, expect_modified=True, min_exact=1.0)
    assert _ops(graph) == ["Gather", "DequantizeLinear"]
    quantized = graph.nodes[0].input(0).const
    assert quantized.dtype == np.int8 and quantized[0, :4].tolist() == [9, 11, 5, 127]

def test_what_cannot_fold_stays_float_with_a_reason():
    b = GraphBuilder()
    x = qdq(b, b.input("x", (1, 2, 4, 4)), 0.05, 0, name="x")
    w_runtime = dequantize(b, b.input("w", (3, 2, 1, 1), np.int8), 0.1, 0, name="w_dq")
    conv = b.op("Conv", [x, w_runtime], name="conv")
    c = qdq(b, conv, 0.04, 0, name="c")
    soft = b.op("Softmax", [c], {"axis": 1}, name="softmax")
    _quantized_output(b, soft, 1 / 256, -128)
    messages = []
    graph, exact = assert_within_steps(b, [FoldQDQ()], log=messages.append, expect_modified=False,
                                       min_exact=1.0)
    text = "\n".join(messages)
    assert "'conv' (Conv) stays float" in text and "the weight is not a dequantized constant" in text
    assert "'softmax' (Softmax) stays float" in text and "no integer op computes Softmax" in text


def test_shared_float_output_and_per_channel_zero_points_stay_float():
    b = GraphBuilder()
    x = qdq(b, b.input("x", (1, 2, 4, 4)), 0.05, 0)
    wq = b.const(RNG.integers(0, 255, (3, 2, 1, 1)).astype(np.uint8))
    w = dequantize(b, wq, np.full(3, 0.01, np.float32), np.array([120, 128, 130], np.uint8), axis=0)
    conv = b.op("Conv", [x, w], name="conv")
    _quantized_output(b, conv, 0.05, 0)
    conv2 = b.op("Conv", [x, weight(b, _rand(3, 2, 1, 1), name="w2")], name="conv2")
    q2 = quantize(b, conv2, 0.05, 0, name="q2")
    b.output(conv2, "float_too")
    b.output(q2, "q2")
    messages = []
    assert not run_passes(b.graph, [FoldQDQ()], messages.append)
    text = "\n".join(messages)
    assert "different zero points per channel" in text
    assert "its float output has other uses" in text


def test_transposed_a_and_per_axis_outputs_stay_float():
    b = GraphBuilder()
    a = qdq(b, b.input("a", (16, 5)), 0.04, 0, name="a")
    gemm = b.op("Gemm", [a, weight(b, _rand(16, 10), axis=1)], {"transA": 1}, name="gemm")
    _quantized_output(b, gemm, 0.05, 0)
    messages = []
    assert not run_passes(b.graph, [FoldQDQ()], messages.append)
    assert any("'gemm' (Gemm) stays float" in m and "transA is set" in m for m in messages), messages
    b = GraphBuilder()
    x = qdq(b, b.input("x", (1, 2, 4, 4)), 0.05, 0)
    conv = b.op("Conv", [x, weight(b, _rand(3, 2, 1, 1))], name="conv")
    scales = b.const(np.array([0.1, 0.2, 0.3], np.float32))
    b.output(b.op("QuantizeLinear", [conv, scales, b.const(np.zeros(3, np.int8))], {"axis": 1}), "y")
    messages = []
    assert not run_passes(b.graph, [FoldQDQ()], messages.append)
    assert any("per-axis (3 scales along axis 1)" in m for m in messages), messages


def test_simplification_keeps_quantized_weights_for_the_fold():
    """The default pipeline's constant folding leaves DequantizeLinear alone (fold_qdq reads the int8
    weights); the fold_constants after fold_qdq dequantizes what stayed float."""
    from passes.cleanup.fold_constants import FoldConstants
    from passes.pipeline import KEEP_QUANTIZED

    b = GraphBuilder()
    b.output(b.op("Relu", [weight(b, _rand(3, 2), axis=None)]), "y")
    assert not run_passes(b.graph, [FoldConstants(keep_ops=KEEP_QUANTIZED)])
    assert run_passes(b.graph, [FoldConstants()]) and _ops(b.graph) == []


def _gelu_qdq(b, x_q, scale, zp):
    """ONNX Runtime's QDQ form of the exported erf GELU, ``x * 0.5 * (1 + erf(x / sqrt 2))``."""
    x = dequantize(b, x_q, scale, zp, name="x_dq")
    e = b.op("Erf", [b.op("Div", [x, b.const(np.float32(1.4142135), "sqrt2")], name="div")], name="erf")
    e = qdq(b, e, 2.0 / 255, 0, name="erf")
    one = dequantize(b, b.const(np.int8(127), "one_q"), np.float32(1 / 127), np.int8(0), name="one_dq")
    plus = qdq(b, b.op("Add", [e, one], name="add"), 3.0 / 255, -128, name="plus")
    prod = qdq(b, b.op("Mul", [x, plus], name="mul"), 0.05, -100, name="prod")
    half = dequantize(b, b.const(np.int8(127), "half_q"), np.float32(0.5 / 127), np.int8(0), name="half_dq")
    return b.op("Mul", [prod, half], name="mul_half")


def test_gelu_chain_on_one_int8_tensor_becomes_one_exact_table(monkeypatch):
    """DQ -> Div -> Erf -> Q, QAdd, QMul(x, .), QMul: every op a function of the one int8 x, so the region
    becomes one QLut whose entries are the folded region's own reference results (bit for bit, all 256
    codes), within a step of the float QDQ model."""
    import passes.quantization.fold_qdq as fold_qdq

    def build():
        b = GraphBuilder()
        x_q = b.input("x", (2, 128), np.int8)
        _quantized_output(b, _gelu_qdq(b, x_q, 0.04, 3), 0.03, -20)
        return b

    codes = {"x": np.arange(-128, 128).astype(np.int8).reshape(2, 128)}
    graph, _, _ = _fold(build(), inputs=codes, expect_modified=True, min_exact=0.95)
    assert _ops(graph) == [f"{DOMAIN}::QLut", "DequantizeLinear"]
    assert set(graph.nodes[0].meta.sources) >= {"div", "erf", "add", "mul", "mul_half"}
    monkeypatch.setattr(fold_qdq, "collapse_tables", lambda g: [])
    separate = build().graph
    run_passes(separate, [FoldQDQ()])
    assert f"{DOMAIN}::QMul" in _ops(separate)  # the same fold, op by op
    np.testing.assert_array_equal(run_graph(graph, codes)["y"], run_graph(separate, codes)["y"])


def test_a_region_whose_inner_value_is_used_outside_is_not_collapsed():
    b = GraphBuilder()
    x_q = b.input("x", (4, 8), np.int8)
    y = _gelu_qdq(b, x_q, 0.04, 3)
    _quantized_output(b, y, 0.03, -20)
    prod_q = next(n for n in b.graph.nodes if n.name == "prod_q").output
    b.output(dequantize(b, prod_q, 0.05, -100, name="side"), "side")
    graph, _, _ = _fold(b, expect_modified=True, min_exact=0.9)
    # prod is used outside: the chain up to it collapses into one table, the last QMul stays
    assert sorted(_ops(graph)) == ["DequantizeLinear"] * 2 + [f"{DOMAIN}::QLut", f"{DOMAIN}::QMul"]
    lut, mul = (next(n for n in graph.nodes if n.op == op) for op in ("QLut", "QMul"))
    assert mul.input(0) is lut.output and lut.input(0).name == "x"

"""QOperator-format ops: their reference semantics against ONNX Runtime, and ExpandQOperators (+ FoldQDQ)
turning each into the contract's integer ops within one quantization step.

ONNX Runtime requantizes in float32; so do the reference semantics of these ops, and they match it
exactly except where noted (averaging windows, softmax: one step at rounding ties).
"""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowering.errors import UnsupportedOpsError
from lowering.onnx.importer import import_model
from lowering.opinfo import DOMAIN
from lowering.reference import run_graph
from passes.quantization.expand_qoperators import ExpandQOperators
from passes.quantization.fold_qdq import FoldQDQ
from tests.helpers.parity import run_passes

from .qdq import assert_within_steps

pytestmark = pytest.mark.unit
RNG = np.random.default_rng(11)
MS = "com.microsoft"
ONNX_TYPE = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
             np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}


def _ints(dtype, shape):
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype)


def _model(op, inputs, consts, attrs=None, domain="", out_dtype=np.int8):
    """One ``op`` node reading graph inputs ``inputs`` (name -> array) and initializers ``consts``
    (name -> array, or None for an absent optional input), in that order of names."""
    names = list(inputs) + list(consts)
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if v is not None]
    node = helper.make_node(op, [k if (k in inputs or consts[k] is not None) else "" for k in names], ["y"],
                            domain=domain or None, **(attrs or {}))
    graph_inputs = [helper.make_tensor_value_info(k, ONNX_TYPE[v.dtype], v.shape) for k, v in inputs.items()]
    graph = helper.make_graph(
        [node], op, graph_inputs, [helper.make_tensor_value_info("y", ONNX_TYPE[np.dtype(out_dtype)], None)],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return model


def _against_onnxruntime(model, feeds, max_steps=0, min_exact=1.0):
    """Reference vs ONNX Runtime; returns the imported graph and the exactly-equal fraction."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    want = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    graph = import_model(model, name=model.graph.name)
    got = run_graph(graph, feeds)["y"]
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    if np.issubdtype(want.dtype, np.floating):
        diff = diff / max(np.abs(want).max(), 1e-30) * 1e6  # float outputs: relative, in 1e-6 units
    exact = float(np.mean(diff == 0))
    assert diff.max() <= max_steps and exact >= min_exact, (diff.max(), exact)
    return graph, exact


def _folded(graph, feeds, expected_ops, min_exact=0.9):
    graph, exact = assert_within_steps(graph, [ExpandQOperators(), FoldQDQ()], inputs=feeds,
                                       expect_modified=True, min_exact=min_exact)
    ops = {n.qualified_op for n in graph.nodes}
    assert not any(op.startswith(MS) for op in ops), ops
    assert set(expected_ops) <= ops, ops
    return graph


def _scale(*values):
    return np.array(values if len(values) > 1 else values[0], np.float32)


@pytest.mark.parametrize("x_dtype", [np.int8, np.uint8])
def test_qlinear_conv(x_dtype):
    x = _ints(x_dtype, (1, 4, 7, 7))
    zx = np.array(3 if x_dtype == np.int8 else 128, x_dtype)
    consts = {"sx": _scale(0.02), "zx": zx, "w": _ints(np.int8, (6, 2, 3, 3)),
              "sw": RNG.uniform(0.001, 0.01, 6).astype(np.float32), "zw": np.zeros(6, np.int8),
              "sy": _scale(0.3), "zy": np.array(-5 if x_dtype == np.int8 else 120, x_dtype),
              "b": RNG.integers(-20000, 20000, 6).astype(np.int32)}
    attrs = {"group": 2, "pads": [1, 0, 1, 2], "strides": [2, 1]}
    model = _model("QLinearConv", {"x": x}, consts, attrs, out_dtype=x_dtype)
    graph, _ = _against_onnxruntime(model, {"x": x})
    _folded(graph, {"x": x}, [f"{DOMAIN}::QConv"])


def test_qlinear_matmul_batched():
    a, b = _ints(np.uint8, (2, 3, 8)), _ints(np.int8, (8, 5))
    consts = {"sa": _scale(0.05), "za": np.array(120, np.uint8), "b": b, "sb": _scale(0.01),
              "zb": np.array(0, np.int8), "sy": _scale(0.4), "zy": np.array(128, np.uint8)}
    model = _model("QLinearMatMul", {"a": a}, consts, out_dtype=np.uint8)
    graph, _ = _against_onnxruntime(model, {"a": a})
    _folded(graph, {"a": a}, [f"{DOMAIN}::QMatMul"])


@pytest.mark.parametrize("with_output_scale", [True, False])
def test_qgemm(with_output_scale):
    a = _ints(np.int8, (3, 16))
    consts = {"sa": _scale(0.05), "za": np.array(2, np.int8), "b": _ints(np.int8, (10, 16)),
              "sb": RNG.uniform(0.002, 0.01, 10).astype(np.float32), "zb": np.zeros(10, np.int8),
              "c": RNG.integers(-5000, 5000, 10).astype(np.int32)}
    if with_output_scale:
        consts.update(sy=_scale(0.5), zy=np.array(-3, np.int8))
    model = _model("QGemm", {"a": a}, consts, {"transB": 1, "alpha": 0.75}, MS,
                   np.int8 if with_output_scale else np.float32)
    graph, _ = _against_onnxruntime(model, {"a": a}, max_steps=0 if with_output_scale else 1)
    if with_output_scale:
        _folded(graph, {"a": a}, [f"{DOMAIN}::QMatMul"])


@pytest.mark.parametrize("op,contract", [("QLinearAdd", "QAdd"), ("QLinearMul", "QMul")])
def test_qlinear_add_mul(op, contract):
    a, b = _ints(np.int8, (2, 3, 4, 4)), _ints(np.int8, (1, 3, 1, 4))
    consts = {"sa": _scale(0.04), "za": np.array(-3, np.int8), "b_in": None, "sb": _scale(0.07),
              "zb": np.array(9, np.int8), "sc": _scale(0.1 if op == "QLinearAdd" else 0.05),
              "zc": np.array(1, np.int8)}
    model = _model(op, {"a": a}, {**consts, "b_in": b}, domain=MS)  # B keeps its place between za and sb
    # ONNX Runtime's x86 QLinearAdd kernel rounds its own way: one step apart at a few percent
    graph, _ = _against_onnxruntime(model, {"a": a}, max_steps=1, min_exact=0.9 if op == "QLinearAdd" else 1)
    _folded(graph, {"a": a}, [f"{DOMAIN}::{contract}"])


def test_qlinear_global_average_pool():
    x = _ints(np.uint8, (1, 5, 6, 6))
    consts = {"sx": _scale(0.03), "zx": np.array(128, np.uint8), "sy": _scale(0.01),
              "zy": np.array(100, np.uint8)}
    model = _model("QLinearGlobalAveragePool", {"x": x}, consts, {"channels_last": 0}, MS, np.uint8)
    graph, _ = _against_onnxruntime(model, {"x": x})
    _folded(graph, {"x": x}, [f"{DOMAIN}::QAveragePool"])


@pytest.mark.parametrize("attrs,folds", [
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1,
      "count_include_pad": 1}, True),
    ({"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "count_include_pad": 1}, True),
    ({"kernel_shape": [2, 2], "strides": [1, 1], "pads": [1, 1, 1, 1], "count_include_pad": 0}, False),
])
def test_qlinear_average_pool(attrs, folds):
    """ONNX Runtime divides every count_include_pad window by the kernel size, ceil_mode overhang too;
    with count_include_pad=0 its rounding differs by one step at ties."""
    x = _ints(np.int8, (1, 2, 8, 8))
    consts = {"sx": _scale(0.05), "zx": np.array(3, np.int8), "sy": _scale(0.04), "zy": np.array(-5, np.int8)}
    model = _model("QLinearAveragePool", {"x": x}, consts, attrs, MS)
    graph, _ = _against_onnxruntime(model, {"x": x}, max_steps=1, min_exact=0.9)
    if folds:
        _folded(graph, {"x": x}, [f"{DOMAIN}::QAveragePool"])
    else:
        _folded(graph, {"x": x}, ["AveragePool"], min_exact=1.0)


@pytest.mark.parametrize("op,attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {"alpha": 0.1})])
def test_qlinear_table_ops(op, attrs):
    x = _ints(np.int8, (2, 3, 5))
    consts = {"sx": _scale(0.05), "zx": np.array(7, np.int8), "sy": _scale(1 / 256 if "Sig" in op else 0.04),
              "zy": np.array(-128 if "Sig" in op else 0, np.int8)}
    graph, _ = _against_onnxruntime(_model(op, {"x": x}, consts, attrs, MS), {"x": x})
    _folded(graph, {"x": x}, [f"{DOMAIN}::QLut"])


def test_qlinear_softmax():
    x = _ints(np.uint8, (2, 10))
    consts = {"sx": _scale(0.1), "zx": np.array(128, np.uint8), "sy": _scale(1 / 256),
              "zy": np.array(0, np.uint8)}
    model = _model("QLinearSoftmax", {"x": x}, consts, {"axis": -1, "opset": 13}, MS, np.uint8)
    graph, _ = _against_onnxruntime(model, {"x": x}, max_steps=1, min_exact=0.8)
    _folded(graph, {"x": x}, ["Softmax"], min_exact=1.0)  # no integer softmax: stays float, unchanged


def test_qlinear_concat_with_unequal_parameters():
    a, b = _ints(np.int8, (1, 2, 3)), _ints(np.int8, (1, 4, 3))
    model = _model("QLinearConcat", {"a": a, "b": b},
                   {"sy": _scale(0.05), "zy": np.array(0, np.int8), "sa": _scale(0.05),
                    "za": np.array(0, np.int8), "sb": _scale(0.13), "zb": np.array(-20, np.int8)},
                   {"axis": 1}, MS)
    model.graph.node[0].input[:] = ["sy", "zy", "a", "sa", "za", "b", "sb", "zb"]
    graph, _ = _against_onnxruntime(model, {"a": a, "b": b})
    _folded(graph, {"a": a, "b": b}, ["Concat", f"{DOMAIN}::QLut"], min_exact=1.0)


def test_integer_ops_and_dynamic_quantization_stay_runnable():
    a, b = _ints(np.uint8, (3, 6)), _ints(np.int8, (6, 4))
    zero_points = {"za": np.array(100, np.uint8), "zb": np.array(3, np.int8)}
    model = _model("MatMulInteger", {"a": a}, {"b": b, **zero_points}, out_dtype=np.int32)
    _against_onnxruntime(model, {"a": a})
    x, w = _ints(np.uint8, (1, 3, 6, 6)), _ints(np.uint8, (4, 3, 3, 3))
    zero_points = {"zx": np.array(90, np.uint8), "zw": np.array(128, np.uint8)}
    model = _model("ConvInteger", {"x": x}, {"w": w, **zero_points}, {"pads": [1, 1, 1, 1]},
                   out_dtype=np.int32)
    _against_onnxruntime(model, {"x": x})
    f = (RNG.standard_normal((4, 5)) * 3).astype(np.float32)
    node = helper.make_node("DynamicQuantizeLinear", ["f"], ["y", "s", "z"])
    outputs = [helper.make_tensor_value_info(n, t, None)
               for n, t in (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))]
    graph = helper.make_graph([node], "dql", [helper.make_tensor_value_info("f", TensorProto.FLOAT, f.shape)],
                              outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 3
    want = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"f": f})
    got = run_graph(import_model(model), {"f": f})
    for name, w_value in zip(("y", "s", "z"), want):
        np.testing.assert_array_equal(got[name], w_value)


def test_importer_accepts_only_known_com_microsoft_ops():
    x = _ints(np.int8, (1, 4))
    consts = {"sx": _scale(0.05), "zx": np.array(0, np.int8), "sy": _scale(0.05), "zy": np.array(0, np.int8)}
    with pytest.raises(UnsupportedOpsError, match="com.microsoft::QLinearUnknown"):
        import_model(_model("QLinearUnknown", {"x": x}, consts, domain=MS))
    with pytest.raises(UnsupportedOpsError, match="ai.vendor::QLinearSigmoid"):
        import_model(_model("QLinearSigmoid", {"x": x}, consts, domain="ai.vendor"))
    graph = import_model(_model("QLinearSigmoid", {"x": x}, consts, domain=MS))
    assert graph.nodes[0].qualified_op == f"{MS}::QLinearSigmoid"


def test_channels_last_pooling_is_kept_and_says_why():
    x = _ints(np.int8, (1, 6, 6, 3))
    consts = {"sx": _scale(0.05), "zx": np.array(0, np.int8), "sy": _scale(0.05), "zy": np.array(0, np.int8)}
    graph = import_model(_model("QLinearGlobalAveragePool", {"x": x}, consts, {"channels_last": 1}, MS))
    messages = []
    assert not run_passes(graph, [ExpandQOperators()], messages.append)
    assert any("kept" in m and "channels-last" in m for m in messages), messages
    assert graph.nodes[0].qualified_op == f"{MS}::QLinearGlobalAveragePool"

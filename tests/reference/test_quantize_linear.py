"""QuantizeLinear/DequantizeLinear reference semantics agree exactly with ONNX Runtime, and the
requantisation multiplier encoding is within its precision."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowering.onnx.importer import import_model
from lowering.quantized import quantize_multiplier
from lowering.reference import run_graph

pytestmark = pytest.mark.unit


def _qdq_model(dtype, axis, per_channel):
    scale = np.array([0.05, 0.1, 0.013], np.float32) if per_channel else np.array(0.037, np.float32)
    zp_value = [3, -7, 0] if dtype == np.int8 else [128, 3, 250]
    zp = np.array(zp_value if per_channel else zp_value[0], dtype)
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=axis)]
    qtype = TensorProto.INT8 if dtype == np.int8 else TensorProto.UINT8
    graph = helper.make_graph(nodes, "qdq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("q", qtype, [2, 3, 4]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_dequantize_match_onnxruntime_exactly(dtype, per_channel):
    model = _qdq_model(dtype, axis=1, per_channel=per_channel)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 4)) * 4).astype(np.float32)
    x[0, 0, :2] = [0.0185, -0.0185]  # exact ties at scale 0.037: round half to even
    x[1, 2, :] = [100.0, -100.0, 1e-9, -1e-9]  # saturation
    x[1, 1, :] = [np.inf, -np.inf, np.nan, 1e30]  # saturated like ONNX Runtime (NaN -> qmin)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})
    got = run_graph(import_model(model, name="qdq"), {"x": x})
    np.testing.assert_array_equal(got["q"], want[0])
    np.testing.assert_array_equal(got["y"], want[1])  # NaN positions compare equal here


@pytest.mark.parametrize("real", [1e-9, 3.2e-5, 0.00123, 0.25, 0.5, 1 / 3, 0.999999, 1.7, 1000.0])
def test_multiplier_encoding(real):
    m, shift = quantize_multiplier(real)
    assert 1 <= shift <= 62
    if shift < 62:
        assert (1 << 30) <= m < (1 << 31)
    assert abs(m * 2.0**-shift - real) <= real * 2.0**-30


def test_multiplier_encoding_rejects_bad_values():
    with pytest.raises(ValueError):
        quantize_multiplier(-1.0)
    with pytest.raises(ValueError):
        quantize_multiplier(float("nan"))
    assert quantize_multiplier(0.0) == (0, 1)

"""ONNX Gelu (both forms) on the cpu target: as an elementwise op and as a MatMul+Add epilogue, against
ONNX Runtime, and the reference against the closed forms."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import runtime
from lowering.driver import CompileOptions, compile_model
from lowering.onnx.importer import import_model
from lowering.reference import evaluate_node
from lowering.reference.ops import erf

pytestmark = pytest.mark.target_cpu


def test_reference_erf_is_exact():
    x = np.linspace(-4, 4, 101)
    np.testing.assert_array_equal(erf(x), np.array([math.erf(v) for v in x]))


def _gelu_model(approximate: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 48)).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Gelu", ["a"], ["y"], approximate=approximate),
        helper.make_node("Gelu", ["x"], ["z"], approximate=approximate),
    ]
    graph = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 48]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 32])],
        [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_elementwise_and_epilogue_match_onnxruntime(tmp_path, approximate):
    model = _gelu_model(approximate)
    path = tmp_path / "gelu.onnx"
    onnx.save(model, path)
    compile_model(path, output=tmp_path / "gelu.lwr",
                  options=CompileOptions(targets=("cpu",), verify_each=True))
    x = (np.random.default_rng(2).standard_normal((4, 32)) * 3).astype(np.float32)
    got = runtime.load(tmp_path / "gelu.lwr").run(None, {"x": x})
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-6)


def test_gelu_reference_closed_forms():
    graph = import_model(_gelu_model("tanh"))
    node = next(n for n in graph.nodes if n.op == "Gelu" and n.inputs[0].name == "x")
    x = np.linspace(-5, 5, 64, dtype=np.float32).reshape(4, 16)
    (y,) = evaluate_node(node, [x])
    x64 = x.astype(np.float64)
    want = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    np.testing.assert_allclose(y, want.astype(np.float32), rtol=1e-6, atol=1e-7)

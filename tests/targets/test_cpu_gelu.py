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
from lowering.opinfo import DOMAIN
from lowering.reference import evaluate_node
from lowering.reference.ops import erf

from .cpu_harness import GraphMaker, build_cpu

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


def _exact_erf(v: np.ndarray) -> np.ndarray:
    return np.array([math.erf(t) if np.isfinite(t) else np.sign(t) for t in v.reshape(-1)]).reshape(v.shape)


def test_erf_tanh_and_activations_are_accurate_over_the_whole_range():
    """The cpu kernels' erf and tanh (rational fits, kernels_common.h) within 4e-7 absolute and relative of
    the exact functions over [-12, 12] (both clamps, both tails), tiny magnitudes and infinities, NaN kept;
    Gelu (both forms), Tanh and Sigmoid evaluated on the accumulators of a GEMM epilogue (x . I, exact)
    within a few float ulps of the closed forms, on full-width tiles and on the partial column panel
    (48 = 32 + 16 columns)."""
    special = [0.0, -0.0, 1e-30, -1e-30, 1e-6, -1e-6, 3.9, -3.9, 9.0, -9.0, np.inf, -np.inf, np.nan]
    values = np.concatenate([np.linspace(-12, 12, 48 * 200 - len(special)), special]).astype(np.float32)
    dense = np.linspace(-12, 12, 48 * 200).astype(np.float32)
    m = GraphMaker("accuracy")
    x, y = m.input(200, 48), m.input(200, 48)
    m.feeds[x.name], m.feeds[y.name] = values.reshape(200, 48), dense.reshape(200, 48)
    m.output(m.node("Erf", x), m.node("Tanh", x))
    eye, zero = m.const(np.eye(48, dtype=np.float32)), m.const(np.zeros(48, np.float32))
    acts = [("Gelu", (0.0,)), ("Gelu", (1.0,)), ("Tanh", ()), ("Sigmoid", ())]
    for act, params in acts:
        m.output(m.node("FusedMatMul", y, eye, zero, None, domain=DOMAIN, transA=0, transB=0, alpha=1.0,
                        activation=act, activation_params=params))
    got = [g.reshape(-1).astype(np.float64) for g in build_cpu(m.graph).run(m.feeds, threads=1).values()]
    v, nan = values.astype(np.float64), np.isnan(values)
    for out, want in ((got[0], _exact_erf(v)), (got[1], np.tanh(v))):
        assert np.isnan(out[nan]).all()
        np.testing.assert_allclose(out[~nan], want[~nan], rtol=4e-7, atol=1e-37)
    d = dense.astype(np.float64)
    closed = {
        "Gelu0": 0.5 * d * (1 + _exact_erf(d / math.sqrt(2))),
        "Gelu1": 0.5 * d * (1 + np.tanh(math.sqrt(2 / math.pi) * (d + 0.044715 * d**3))),
        "Tanh": np.tanh(d),
        "Sigmoid": 1 / (1 + np.exp(-d)),
    }
    for out, (act, params) in zip(got[2:], acts):
        want = closed[act + (str(int(params[0])) if params else "")]
        # Gelu's 0.5 x (1 + f(x)) keeps f's absolute, not relative, accuracy where 1 + f is small (x < 0)
        scale = 1 + np.abs(d) if act == "Gelu" else np.abs(want)
        err = np.abs(out - want) / scale
        assert err.max() < 1e-6, f"{act}{params}: max error {err.max():.3g}"

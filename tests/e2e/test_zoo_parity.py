"""Every zoo model, exported by both torch exporters at a spread of opsets, lowered for the cpu target and
run through the runtime, matches ONNX Runtime within 1e-4."""

import numpy as np
import onnxruntime as ort
import pytest

import runtime
from lowering.driver import CompileOptions, compile_model
from tests.zoo.fixtures import zoo  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.target_cpu]

ZOO = ["mlp", "small_cnn", "resnet_style", "mobilenet_style", "activations", "pooling", "grouped_concat",
       "shapes", "arith", "batchnorm"]
CASES = ([(name, "legacy", 17) for name in ZOO] + [(name, "dynamo", 18) for name in ZOO]
         + [("resnet_style", "legacy", 13), ("mobilenet_style", "legacy", 21),
            ("resnet_style", "dynamo", 21), ("mobilenet_style", "dynamo", 20)])
TOL = 1e-4


def lower_and_compare(model_path, out_path, shapes=(), disabled=(), seed=0):
    options = CompileOptions(targets=("cpu",), shapes=tuple(shapes), disabled_passes=frozenset(disabled),
                             verify_each=True)
    result = compile_model(model_path, output=out_path, options=options)
    plan = result.report["targets"]["cpu"]["memory_plan"]
    assert plan["arena_bytes"] <= 1.1 * plan["lower_bound_bytes"]  # the memory plan is near its lower bound
    sess = runtime.load(out_path)
    rng = np.random.default_rng(seed)
    feed = {i.name: rng.standard_normal(i.shape).astype(i.dtype) for i in sess.inputs}
    got = sess.run(None, feed)
    want = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, feed)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)
    return sess


@pytest.mark.parametrize("name, exporter, opset", CASES)
def test_zoo_model_matches_onnxruntime(zoo, tmp_path, name, exporter, opset):  # noqa: F811
    lower_and_compare(zoo.get(name, exporter, opset), tmp_path / "m.lwr")


@pytest.mark.parametrize("exporter, opset", [("legacy", 17), ("dynamo", 18)])
def test_symbolic_batch_bound_with_shape(zoo, tmp_path, exporter, opset):  # noqa: F811
    path = zoo.get("resnet_style", exporter, opset, dynamic_batch=True)
    sess = lower_and_compare(path, tmp_path / "m.lwr", shapes=[("x", (3, 3, 32, 32))])
    assert sess.inputs[0].shape[0] == 3


def test_unfused_kernels_match_too(zoo, tmp_path):  # noqa: F811
    """With the fusion passes off, the target runs the plain ops (Conv, Gemm, BatchNorm, Add, Relu...)."""
    lower_and_compare(zoo.get("mobilenet_style", "legacy", 17), tmp_path / "m.lwr",
                      disabled=["fold_batchnorm", "fuse_epilogue", "fuse_elementwise"])
    lower_and_compare(zoo.get("batchnorm", "legacy", 17), tmp_path / "b.lwr",
                      disabled=["fold_batchnorm", "fuse_epilogue", "fuse_elementwise"])

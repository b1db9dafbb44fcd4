"""Small ONNX models built with onnx.helper (no torch), and a compiled artifact shared by CLI tests."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_tiny_cnn(seed: int = 0, batch="N", opset: int = 17) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, with a symbolic batch by default."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    onnx.save(make_tiny_cnn(seed=0), d / "tiny.onnx")
    onnx.save(make_tiny_cnn(seed=1), d / "tiny_other_weights.onnx")
    onnx.save(make_tiny_cnn(seed=0, batch=2), d / "tiny_static.onnx")
    return d


@pytest.fixture(scope="session")
def tiny_artifact(tiny_dir):
    from lowering.cli import main

    out = tiny_dir / "tiny.lwr"
    assert main([str(tiny_dir / "tiny.onnx"), "--target", "cpu", "--shape", "x=2x3x8x8",
                 "-o", str(out)]) == 0
    return out

"""Fixtures for the quantization tests: tiny ONNX models built with onnx.helper, zoo models and data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.e2e.conftest import make_tiny_cnn
from tests.zoo.fixtures import zoo  # noqa: F401  (a pytest fixture)

#: Calibration samples per zoo model, and held-back samples (other seeds) for the accuracy checks.
CALIBRATION_SAMPLES, HELD_OUT_SAMPLES = 32, 16


def make_cnn(batch=1, seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm; input x (batch, 3, 8, 8), output y (batch, 5)."""
    return make_tiny_cnn(seed=seed, batch=batch)


def make_two_inputs() -> onnx.ModelProto:
    """x + y -> Conv -> Softmax over channels: two inputs, and an op that stays float."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Add", ["x", "y"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "w"], ["c"], name="conv"),
             helper.make_node("Softmax", ["c"], ["z"], name="softmax", axis=1)]
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 4, 4]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "two", vi, [helper.make_tensor_value_info("z", TensorProto.FLOAT,
                                                                              [1, 4, 4, 4])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def make_reduce_means(opset: int) -> onnx.ModelProto:
    """Conv -> ReduceMean over H, W ("gmean", a global pool) -> Conv -> ReduceMean over C ("cmean").

    Opset 17 carries the axes as an attribute, opset 18 as an input."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), n)
             for n in ("w1", "w2")]

    def mean(name, x, y, axes):
        if opset < 18:
            return helper.make_node("ReduceMean", [x], [y], name=name, axes=axes, keepdims=1)
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), f"{name}_axes"))
        return helper.make_node("ReduceMean", [x, f"{name}_axes"], [y], name=name, keepdims=1)

    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"), mean("gmean", "a", "g", [2, 3]),
             helper.make_node("Conv", ["g", "w2"], ["b"], name="conv2"), mean("cmean", "b", "y", [1])]
    graph = helper.make_graph(nodes, "means",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def make_float_only() -> onnx.ModelProto:
    """Exp -> Softmax: nothing the quantizer quantizes."""
    nodes = [helper.make_node("Exp", ["x"], ["e"], name="exp"),
             helper.make_node("Softmax", ["e"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "float_only",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Paths of the tiny models and calibration data for them."""
    d = tmp_path_factory.mktemp("quant_tiny")
    rng = np.random.default_rng(0)
    onnx.save(make_cnn(batch=1), d / "cnn.onnx")
    onnx.save(make_cnn(batch=2), d / "cnn_b2.onnx")
    onnx.save(make_cnn(batch="N"), d / "cnn_dyn.onnx")
    onnx.save(make_two_inputs(), d / "two.onnx")
    onnx.save(make_float_only(), d / "float_only.onnx")
    onnx.save(make_reduce_means(17), d / "means17.onnx")
    onnx.save(make_reduce_means(18), d / "means18.onnx")
    np.savez(d / "means_cal.npz", x=rng.standard_normal((6, 4, 6, 6)).astype(np.float32))
    np.savez(d / "cnn_cal.npz", x=rng.standard_normal((8, 3, 8, 8)).astype(np.float32))
    np.savez(d / "two_cal.npz", x=rng.standard_normal((6, 3, 4, 4)).astype(np.float32),
             y=rng.standard_normal((6, 3, 4, 4)).astype(np.float32))
    np.savez(d / "float_only_cal.npz", x=rng.standard_normal((5, 6)).astype(np.float32))
    return d


def zoo_inputs(name: str, seeds) -> np.ndarray:
    from tests.zoo.export import example_input

    return np.concatenate([example_input(name, seed=s) for s in seeds])


@pytest.fixture(scope="session")
def zoo_models(zoo, tmp_path_factory):  # noqa: F811  (zoo is the fixture imported above)
    """name -> (fp32 model path, calibration .npz path, held-out inputs) for the two judged zoo models."""
    d = tmp_path_factory.mktemp("quant_zoo")
    out = {}
    for name in ("resnet_style", "mobilenet_style"):
        cal = d / f"{name}_cal.npz"
        np.savez(cal, x=zoo_inputs(name, range(CALIBRATION_SAMPLES)))
        held_out = zoo_inputs(name, range(1000, 1000 + HELD_OUT_SAMPLES))
        out[name] = (zoo.get(name, "legacy", 17), cal, held_out)
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def run_ort(path, x: np.ndarray, name: str = "x") -> np.ndarray:
    """Run a batch-1 model over the rows of x, one at a time."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])

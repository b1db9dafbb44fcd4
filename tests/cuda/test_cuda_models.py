"""Whole models lowered for the cuda target (nvcc fatbin, -Werror, resource checks), their kernels run on
the emulator through the real CudaExecutor, and compared with ONNX Runtime within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowering.driver import CompileOptions, compile_model
from runtime.artifact import open_artifact
from targets.cuda.emulate import cooperative_kernels, emulated_executor
from tests.zoo.fixtures import zoo  # noqa: F401  (pytest fixture)

from .harness import require_nvcc

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-4


def lower_and_emulate(model: Path, out: Path, feed: dict[str, np.ndarray] | None = None, seed: int = 0):
    """Build ``model`` for cuda, run it on the emulator and ONNX Runtime; return the artifact and launches."""
    require_nvcc()
    compile_model(model, output=out, options=CompileOptions(targets=("cuda",)))
    art = open_artifact(out)
    entry = art.targets["cuda"]
    if feed is None:
        rng = np.random.default_rng(seed)
        feed = {t["name"]: rng.standard_normal(t["shape"]).astype(t["dtype"]) for t in art.manifest["inputs"]}
    executor, driver = emulated_executor(entry, art.read)
    outputs = [np.empty(t["shape"], t["dtype"]) for t in entry["signature"]["outputs"]]
    executor.run([feed[t["name"]] for t in entry["signature"]["inputs"]], outputs)
    driver.check_guards()
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feed)
    for got, expected in zip(outputs, want):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL)
    assert driver.launches == [step["kernel"] for step in entry["launch_plan"]]
    executor.close()
    return art


def test_bundled_example_cnn(tmp_path):
    inputs = np.load(ROOT / "examples" / "cnn_input.npz")
    art = lower_and_emulate(ROOT / "examples" / "cnn.onnx", tmp_path / "cnn.lwr",
                            {k: inputs[k] for k in inputs.files})
    entry = art.targets["cuda"]
    assert entry["requires"]["archs"] == ["sm_80", "sm_90"] and entry["requires"]["ptx"] == "compute_90"
    fatbin = art.read(entry["fatbin"])
    for step in entry["launch_plan"]:  # every planned kernel is in the (uncompressed) fatbin
        assert step["kernel"].encode() + b"\0" in fatbin


@pytest.mark.parametrize("name", ["resnet_style", "mobilenet_style", "mlp"])
def test_zoo_models(zoo, tmp_path, name):  # noqa: F811
    art = lower_and_emulate(zoo.get(name, "legacy", 17), tmp_path / f"{name}.lwr")
    ops = {k["op"] for k in json.loads(art.read("report.json"))["targets"]["cuda"]["kernels"]}
    if name == "mobilenet_style":
        assert "lowering::FusedConv" in ops
    if name in ("resnet_style", "mobilenet_style"):  # some convs are the shared-memory tiled kernels
        entry = art.targets["cuda"]
        tiled = cooperative_kernels(art.read(entry["source"]).decode())
        assert any(step["kernel"] in tiled for step in entry["launch_plan"])
    if name == "mlp":
        assert "Softmax" in ops


def _matmul_mlp(path: Path) -> Path:
    """[2, 5, 24] -> MatMul + Add + Relu -> MatMul + Add -> Softmax: FusedMatMul with a batch of rows."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
             for n, s in (("w1", (24, 40)), ("b1", (40,)), ("w2", (40, 12)), ("b2", (12,)))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["ob"]),
        helper.make_node("Softmax", ["ob"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "matmul_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  [2, 5, 24])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 12])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_matmul_mlp(tmp_path):
    art = lower_and_emulate(_matmul_mlp(tmp_path / "mlp.onnx"), tmp_path / "mlp.lwr")
    ops = [s["kernel"] for s in art.targets["cuda"]["launch_plan"]]
    assert len(ops) == 3  # two FusedMatMul (bias and ReLU in the epilogue) and the Softmax

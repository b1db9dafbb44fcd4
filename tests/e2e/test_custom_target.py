"""The custom target (NPU-1) end to end, as a user drives it: quantize and lower a model for cpu and custom
into one artifact, run it on both, and get the same int8 results bit for bit (the integer semantics are
the same), with the simulator's report and the partition of what ran where."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import runtime
from lowering.cli import main
from lowering.driver import CompileOptions, compile_model
from lowering.quantize import QuantizeConfig
from tests.zoo.fixtures import zoo  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.e2e]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cnn.onnx"


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _input_shape(path) -> tuple[int, ...]:
    return tuple(d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim)


def _calibration(path, model, samples=16) -> Path:
    shape = _input_shape(model)
    name = onnx.load(str(model)).graph.input[0].name
    rng = np.random.default_rng(0)
    np.savez(path, **{name: rng.standard_normal((samples,) + shape[1:]).astype(np.float32)})
    return path


def _lower_both(model, tmp_path) -> Path:
    out = tmp_path / "m.lwr"
    compile_model(model, output=out, options=CompileOptions(
        targets=("cpu", "custom"), quantize=QuantizeConfig(),
        calibration=str(_calibration(tmp_path / "cal.npz", model))))
    return out


def _same_on_both(artifact, model, seeds=(1000, 1001)):
    cpu = runtime.load(artifact, target="cpu")
    npu = runtime.load(artifact, target="custom")
    name = cpu.inputs[0].name
    for seed in seeds:   # inputs not used for calibration
        x = np.random.default_rng(seed).standard_normal(_input_shape(model)).astype(np.float32)
        want = cpu.run(None, {name: x})
        got = npu.run(None, {name: x})
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    return npu


def test_custom_target_needs_a_quantized_model(tmp_path, capsys):
    code, _, err = run_cli([EXAMPLE, "--target", "custom", "-o", tmp_path / "x.lwr"], capsys)
    assert code == 2 and "--quantize int8 --calibration" in err and "Traceback" not in err
    assert not (tmp_path / "x.lwr").exists()


def test_example_cnn_on_the_npu_equals_the_cpu_int8_path(tmp_path, capsys):
    cal = _calibration(tmp_path / "cal.npz", EXAMPLE)
    out = tmp_path / "cnn.lwr"
    code, stdout, err = run_cli([EXAMPLE, "--target", "cpu,custom", "--quantize", "int8",
                                 "--calibration", cal, "-o", out], capsys)
    assert code == 0, err
    assert "QuantizeLinear" in stdout and "-> host" in stdout   # the partition says what ran where and why
    sess = _same_on_both(out, EXAMPLE)
    report = sess.last_report
    assert report["summary"]["macs_useful"] > 0 and report["summary"]["cycles"] > 0
    layers = [row for row in report["layers"] if row.get("op_type") == "QConv"]
    assert layers and all(row["dram_read_bytes"] + row["dram_write_bytes"] == row["predicted_dram_bytes"]
                          for row in layers)
    # the report sets the whole network's DRAM bytes beside those of the exhaustive search's best tilings
    dram = report["summary"]["dram"]
    best = [(row.get("tiling") or {}).get("best_exhaustive_bytes") for row in report["layers"]]
    assert all(b for row, b in zip(report["layers"], best) if row.get("op_type") in ("QConv", "QMatMul"))
    assert dram["best_tiling_bytes"] == sum(b or row["dram_read_bytes"] + row["dram_write_bytes"]
                                            for row, b in zip(report["layers"], best))
    assert 1.0 <= dram["ratio_to_best_tiling"] <= 1.1
    # the same artifact simulates to identical cycles, bytes and energy every run
    x = {sess.inputs[0].name: np.zeros(sess.inputs[0].shape, np.float32)}
    sess.run(None, x)
    first = json.dumps({k: v for k, v in sess.last_report.items() if k != "wall"}, sort_keys=True,
                       default=str)
    sess.run(None, x)
    assert json.dumps({k: v for k, v in sess.last_report.items() if k != "wall"}, sort_keys=True,
                      default=str) == first
    code, stdout, _ = run_cli(["disasm", out], capsys)
    assert code == 0 and "GEMM" in stdout and "FINISH" in stdout


@pytest.mark.parametrize("name", ["resnet_style", "mobilenet_style", "small_cnn"])
def test_zoo_model_on_the_npu_equals_the_cpu_int8_path(zoo, tmp_path, name):  # noqa: F811
    model = zoo.get(name, "legacy", 17)
    _same_on_both(_lower_both(model, tmp_path), model)


def _stem_model(path: Path, hw=192) -> Path:
    """A ResNet-style stem: Conv 3->64 7x7/2 pad 3, Relu, MaxPool 3x3/2 pad 1 (the pooled 64-channel input,
    (hw/2+2)^2 lines per block, does not fit the 512 KiB UB)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = numpy_helper.from_array((rng.standard_normal((64, 3, 7, 7)) * 0.1).astype(np.float32), "w")
    b = numpy_helper.from_array((rng.standard_normal(64) * 0.1).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[7, 7], strides=[2, 2],
                              pads=[3, 3, 3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, hw // 4, hw // 4])
    graph = helper.make_graph(nodes, "stem", [x], [y], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_stem_maxpool_fused_per_tile_cuts_dram_and_energy(tmp_path, capsys):
    """C.4 "pooling after conv" where the pooled input cannot stay in UB: the MaxPool runs on each conv
    output tile before the STORE (bit-exact with the cpu int8 path); `lower bench --baseline` shows fewer
    DRAM bytes and less energy than the artifact built without the memory-movement passes."""
    model = _stem_model(tmp_path / "stem.onnx")
    cal = _calibration(tmp_path / "cal.npz", model, samples=4)
    fused, plain = tmp_path / "fused.lwr", tmp_path / "plain.lwr"
    common = [model, "--quantize", "int8", "--calibration", cal]
    code, stdout, err = run_cli(common + ["--target", "cpu,custom", "-o", fused], capsys)
    assert code == 0, err
    code, _, err = run_cli(common + ["--target", "custom", "-o", plain, "--disable-pass",
                                     "npu_fuse_epilogues", "--disable-pass", "npu_residency"], capsys)
    assert code == 0, err
    sess = _same_on_both(fused, model, seeds=(1000,))
    rows = [r for r in sess.last_report["layers"] if r.get("op_type") == "QConv"]
    assert len(rows) == 1 and rows[0]["tiling"]["fusion"]["pool"]
    assert not [r for r in sess.last_report["layers"] if r.get("op_type") == "MaxPool"]
    code, stdout, err = run_cli(["bench", fused, "--baseline", plain], capsys)
    assert code == 0, err
    table = {line[:27].strip(): line[27:].split() for line in stdout.splitlines() if line[:27].strip()}
    num = lambda s: float(s.replace(",", ""))  # noqa: E731
    assert num(table["DRAM bytes"][0]) < num(table["DRAM bytes"][1])
    assert num(table["energy (uJ)"][0]) < num(table["energy (uJ)"][1])
    assert "outputs equal: yes" in stdout

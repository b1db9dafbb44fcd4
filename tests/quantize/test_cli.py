"""`lower quantize` and `lower MODEL --quantize int8` as a user drives them: exit codes, output, errors."""

from __future__ import annotations

import hashlib
import json
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from lowering.cli import main
from lowering.driver import CompileOptions
from lowering.errors import LoweringError
from lowering.quantize import QuantizeConfig

pytestmark = pytest.mark.e2e


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_quantize_writes_model_table_and_report(tiny, tmp_path, capsys):
    out, report = tmp_path / "cnn.int8.onnx", tmp_path / "report.json"
    code, stdout, err = run_cli(["quantize", tiny / "cnn.onnx", "--calibration", tiny / "cnn_cal.npz",
                                 "-o", out, "--report", report], capsys)
    assert code == 0, err
    assert err == ""  # no progress bar, no ORT chatter when stderr is not a terminal
    for needle in ("minmax calibration on 8 samples", "conv", "fc", "SQNR dB", "output y: cosine",
                   "top-1 agreement", "folded into output ranges: Relu x1", "stayed float: none", "wrote"):
        assert needle in stdout, needle
    text = report.read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"  # stable, sorted keys
    assert [row["name"] for row in data["layers"]] == ["conv", "fc"]
    assert onnx.load(str(out)).graph.output[0].name == "y"


def test_quantize_default_output_name_and_json(tiny, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes((tiny / "cnn.onnx").read_bytes())
    code, stdout, _ = run_cli(["quantize", model, "--calibration", tiny / "cnn_cal.npz", "--json",
                               "--method", "percentile", "--percentile", "99.9", "--per-tensor",
                               "--activation-type", "uint8"], capsys)
    assert code == 0 and (tmp_path / "m.int8.onnx").is_file()
    config = json.loads(stdout)["config"]
    assert (config["method"], config["percentile"], config["per_channel"], config["activation_type"]) == \
        ("percentile", 99.9, False, "uint8")


@pytest.mark.parametrize("args, needles", [
    (lambda t, d: ["quantize", d / "nowhere.onnx", "--calibration", t / "cnn_cal.npz"], ["nowhere.onnx",
                                                                                          "no such file"]),
    (lambda t, d: ["quantize", t / "cnn.onnx", "--calibration", d / "nan.npz"], ["nan.npz", "'x'", "NaN"]),
    (lambda t, d: ["quantize", t / "cnn.onnx", "--calibration", d / "wrong.npz"],
     ["wrong.npz", "'x'", "expected (N, 3, 8, 8)"]),
    (lambda t, d: ["quantize", t / "cnn.onnx", "--calibration", d / "other.npz"],
     ["other.npz", "missing input 'x'"]),
    (lambda t, d: ["quantize", t / "cnn.onnx", "--calibration", d / "empty.npz"], ["no calibration samples"]),
    (lambda t, d: ["quantize", t / "cnn.onnx", "--calibration", t / "cnn_cal.npz", "--method", "percentile",
                   "--percentile", "0"], ["percentile must be in (0, 100]"]),
    (lambda t, d: ["quantize", t / "cnn.onnx", "--calibration", t / "cnn_cal.npz", "--method", "kl"],
     ["'kl' is not one of"]),
    (lambda t, d: [t / "cnn.onnx", "--per-tensor", "--activation-type", "uint8", "-o", d / "o.lwr"],
     ["--per-channel/--per-tensor and --activation-type need --quantize int8"]),
    (lambda t, d: [t / "cnn.onnx", "--quantize", "int8", "--percentile", "99", "-o", d / "o.lwr"],
     ["--percentile needs --method percentile"]),
    (lambda t, d: [t / "cnn.onnx", "--calibration", t / "cnn_cal.npz", "-o", d / "o.lwr"],
     ["--calibration needs --quantize int8"]),
    (lambda t, d: ["quantize", d / "seq.onnx"], ["input 'x' has a symbolic dimension (axis 1)",
                                                 "--calibration DATA"]),
    (lambda t, d: [t / "cnn.onnx", "--quantize", "int8", "--calibration", d / "nan.npz", "-o", d / "o.lwr"],
     ["nan.npz", "NaN"]),
])
def test_bad_input_exits_2_with_one_line(tiny, tmp_path, capsys, args, needles):
    np.savez(tmp_path / "nan.npz", x=np.full((2, 3, 8, 8), np.nan, np.float32))
    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 3, 8, 9), np.float32))
    np.savez(tmp_path / "other.npz", y=np.zeros((2, 3, 8, 8), np.float32))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3, 8, 8), np.float32))
    onnx.save(_symbolic_sequence(), tmp_path / "seq.onnx")
    code, stdout, err = run_cli(args(tiny, tmp_path), capsys)
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    if err.startswith("error:"):
        assert len(lines) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "o.lwr").exists()


def _symbolic_sequence() -> onnx.ModelProto:
    """MatMul over an input whose sequence axis is symbolic: nothing to shape generated samples with."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "seq",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "S", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "S", 4])],
                              initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_cli_method_choices_match_the_package():
    from lowering import cli, quantize

    assert cli._QUANT_METHODS == quantize.METHODS


def test_options_record_the_quantization_settings():
    plain = CompileOptions()
    minmax = CompileOptions(quantize=QuantizeConfig(), calibration="/data/cal.npz")
    entropy = CompileOptions(quantize=QuantizeConfig(method="entropy"), calibration="/data/cal.npz")
    assert "quantize" not in plain.to_json()
    assert minmax.to_json()["quantize"]["method"] == "minmax"
    assert minmax.to_json() != entropy.to_json()
    assert "/data" not in json.dumps(minmax.to_json())  # no paths in an artifact
    with pytest.raises(LoweringError, match="--calibration DATA needs --quantize int8"):
        CompileOptions(calibration="/data/cal.npz")
    assert CompileOptions(quantize=QuantizeConfig()).calibration is None  # generated samples


def test_compile_with_quantize(tiny, tmp_path, capsys):
    """`lower MODEL --quantize int8 --calibration DATA --target cpu` builds the integer artifact: the
    quantization report in report.json (for the very QDQ model `lower quantize` writes with the same
    settings), the settings in the manifest, byte-identical rebuilds, `inspect` shows the per-layer table,
    and outputs within one output quantization step of ONNX Runtime running that QDQ model."""
    qdq, artifact = tmp_path / "cnn.int8.onnx", tmp_path / "cnn.int8.lwr"
    code, _, err = run_cli(["quantize", tiny / "cnn.onnx", "--calibration", tiny / "cnn_cal.npz", "-o", qdq],
                           capsys)
    assert code == 0, err
    compile_args = [tiny / "cnn.onnx", "--quantize", "int8", "--calibration", tiny / "cnn_cal.npz",
                    "--target", "cpu"]
    code, stdout, err = run_cli(compile_args + ["-o", artifact], capsys)
    assert code == 0, err
    assert "SQNR dB" in stdout and artifact.is_file()
    code, stdout, _ = run_cli(["inspect", artifact], capsys)
    assert code == 0 and "quantization:" in stdout and "SQNR dB" in stdout
    assert "lowering::QConv" in stdout
    again = tmp_path / "again.lwr"
    assert run_cli(compile_args + ["-o", again], capsys)[0] == 0
    assert again.read_bytes() == artifact.read_bytes()  # byte-identical for identical inputs and options
    with zipfile.ZipFile(artifact) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        report = json.loads(zf.read("report.json"))
    assert report["quantization"]["qdq_model"]["sha256"] == hashlib.sha256(qdq.read_bytes()).hexdigest()
    assert manifest["options"]["quantize"] == QuantizeConfig().to_json()
    import runtime

    model = onnx.load(str(qdq))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out_dq = next(n for n in model.graph.node if n.output[0] == "y")
    step = float(inits[out_dq.input[1]])
    sess, ref = runtime.load(artifact), ort.InferenceSession(str(qdq))
    for seed in range(8):
        x = np.random.default_rng(100 + seed).standard_normal((1, 3, 8, 8)).astype(np.float32)
        want = ref.run(None, {"x": x})[0]
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1.01 * step)  # within one output step


def test_without_calibration_data_generated_samples_and_one_warning(tiny, tmp_path, capsys):
    """No --calibration: `lower quantize` and `lower MODEL --quantize int8` calibrate on generated random
    samples, say so in one warning line on stderr, and the report records it."""
    out = tmp_path / "cnn.int8.onnx"
    code, stdout, err = run_cli(["quantize", tiny / "cnn.onnx", "-o", out, "--json"], capsys)
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if line.strip()]
    assert line.startswith("warning: no calibration data: calibrating on 32 generated random samples")
    assert "accuracy on real inputs is unknown" in line
    report = json.loads(stdout)
    assert report["calibration"]["generated"] is True and report["calibration"]["samples"] == 32
    assert report["model"]["cosine_min"] > 0.9  # on the generated samples themselves
    artifact = tmp_path / "cnn.int8.lwr"
    for attempt in ("built", "from the build cache"):  # the warning holds for a cached quantization too
        code, stdout, err = run_cli([tiny / "cnn.onnx", "--quantize", "int8", "--cache-dir",
                                     tmp_path / "cache", "-o", artifact], capsys)
        assert code == 0, err
        assert [line for line in err.splitlines() if line.startswith("warning: no calibration data")], attempt
        assert "on 32 generated random samples" in stdout
    with zipfile.ZipFile(artifact) as zf:
        assert json.loads(zf.read("report.json"))["quantization"]["calibration"]["generated"] is True


def test_compile_takes_the_quantize_commands_options(tiny, tmp_path, capsys):
    """--method/--percentile/--per-tensor/--activation-type on the compile command: the manifest records
    them, and the QDQ model they give is the one `lower quantize` writes with the same options."""
    options = ["--method", "percentile", "--percentile", "99.9", "--per-tensor", "--activation-type", "uint8"]
    artifact, qdq = tmp_path / "cnn.lwr", tmp_path / "cnn.int8.onnx"
    code, _, err = run_cli([tiny / "cnn.onnx", "--quantize", "int8", "--calibration", tiny / "cnn_cal.npz",
                            "--no-cache", "-o", artifact] + options, capsys)
    assert code == 0, err
    code, _, err = run_cli(["quantize", tiny / "cnn.onnx", "--calibration", tiny / "cnn_cal.npz", "-o", qdq]
                           + options, capsys)
    assert code == 0, err
    with zipfile.ZipFile(artifact) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        report = json.loads(zf.read("report.json"))
    want = QuantizeConfig(method="percentile", percentile=99.9, per_channel=False, activation_type="uint8")
    assert manifest["options"]["quantize"] == want.to_json()
    assert report["quantization"]["qdq_model"]["sha256"] == hashlib.sha256(qdq.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", ["ir_version_too_new", "float64_weights"])
def test_models_onnx_runtime_cannot_load_get_one_line(tiny, tmp_path, capsys, case):
    """Calibration runs the model in ONNX Runtime: a model it refuses is named in one line, exit 2."""
    model = onnx.load(str(tiny / "cnn.onnx"))
    if case == "ir_version_too_new":
        model.ir_version = 99
    else:
        init = model.graph.initializer[0]
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    path = tmp_path / f"{case}.onnx"
    onnx.save(model, str(path))
    code, _, err = run_cli(["quantize", path, "--calibration", tiny / "cnn_cal.npz",
                            "-o", tmp_path / "q.onnx"], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "q.onnx").exists()

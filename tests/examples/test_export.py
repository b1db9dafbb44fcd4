"""The export examples: examples/make_example.py (a PyTorch CNN to ONNX, the bundled files) and
examples/export_zoo.py (transformer models built from a config, no download), each followed by what a
user does next: lower, inspect, verify against ONNX Runtime. Need the [torch] extra."""

import re

import numpy as np
import pytest

from lowering.cli import main

from .conftest import EXAMPLES, onnxruntime_outputs, run_script

pytestmark = [pytest.mark.e2e]


def test_make_example_regenerates_the_bundled_model(tmp_path):
    torch = pytest.importorskip("torch")
    done = run_script(EXAMPLES / "make_example.py", "--out-dir", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(tmp_path / "cnn_input.npz") as data:
        feed = {"input": data["input"]}
    (fresh,) = onnxruntime_outputs(tmp_path / "cnn.onnx", feed)
    (bundled,) = onnxruntime_outputs(EXAMPLES / "cnn.onnx", feed)
    np.testing.assert_allclose(fresh, bundled, rtol=1e-5, atol=1e-5)
    # the export agrees with torch: the script prints torch's first logits
    printed = re.search(r"torch logits\[0,:3\] = \[([^\]]*)\]", done.stdout).group(1)
    np.testing.assert_allclose(np.array(printed.split(), np.float32), fresh[0, :3], rtol=1e-4, atol=1e-5)
    if torch.__version__.split("+")[0] == "2.13.0":  # the version the bundled files were written with
        for name in ("cnn.onnx", "cnn_input.npz", "cnn_calibration.npz"):
            assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


def test_transformer_from_a_config_exports_lowers_and_verifies(tmp_path, capsys):
    pytest.importorskip("torch")
    done = run_script(EXAMPLES / "export_zoo.py", tmp_path, "--models", "bert")
    assert done.returncode == 0, done.stderr[-2000:]
    model, inputs, artifact = tmp_path / "bert.onnx", tmp_path / "bert_input.npz", tmp_path / "bert.lwr"
    assert main([str(model), "--target", "cpu", "-o", str(artifact)]) == 0
    assert main(["inspect", str(artifact)]) == 0
    assert "kernels (" in capsys.readouterr().out
    assert main(["verify", str(artifact), "--model", str(model), "--inputs", str(inputs)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")


def test_bench_zoo_runs_on_an_exported_model(tmp_path):
    """examples/bench_zoo.py end to end on the smallest zoo model (a smoke run: nothing about the timings
    is asserted, only that every step ran and the results were written)."""
    pytest.importorskip("torch")
    assert run_script(EXAMPLES / "export_zoo.py", tmp_path, "--models", "mlp").returncode == 0
    done = run_script(EXAMPLES / "bench_zoo.py", tmp_path, "--models", "mlp", "--threads", "1",
                      "--min-seconds", "0.05")
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^\|\s*mlp\s*\|", done.stdout, re.M), done.stdout
    assert (tmp_path / "bench_zoo.json").is_file()

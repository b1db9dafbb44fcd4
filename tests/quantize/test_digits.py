"""The judged criterion: examples/digits trained, quantized to int8 and evaluated on held-back images.

int8 (QDQ, ONNX Runtime) top-1 accuracy within 1 percentage point of fp32.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lowering.cli import main

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"digits_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_int8_within_one_point_of_fp32(tmp_path, capsys):
    pytest.importorskip("torch", reason="the digits example needs the [torch] extra")
    pytest.importorskip("sklearn", reason="the digits example needs scikit-learn (the [torch] extra)")
    assert _load("train").main(["--out", str(tmp_path), "--epochs", "15"]) == 0
    assert main(["quantize", str(tmp_path / "digits.onnx"), "--calibration",
                 str(tmp_path / "calibration.npz"), "-o", str(tmp_path / "digits.int8.onnx")]) == 0
    capsys.readouterr()
    result = _load("evaluate").evaluate(tmp_path, artifact=False)
    print(result)
    assert result["test_samples"] == 540
    assert result["fp32_accuracy"] > 0.95
    assert result["drop_points"] <= 1.0, result
    assert result["ok"]

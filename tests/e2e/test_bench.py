"""`lower bench`: both sides measured in one run, JSON with stable keys (no timing assertions)."""

import json

import pytest

from lowering.cli import main

pytestmark = pytest.mark.e2e


def test_bench_json(tiny_dir, tiny_artifact, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", str(tiny_artifact), "--model", str(tiny_dir / "tiny.onnx"), "--threads", "1",
                 "--min-seconds", "0.05", "--repeats", "3", "--json", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and "speed-up vs ONNX Runtime" in stdout
    result = json.loads(out.read_text())
    assert result["threads"] == 1 and result["target"] == "cpu"
    for side in ("lowering", "onnxruntime"):
        assert result[side]["runs"] >= 3 and result[side]["median_ms"] > 0
        assert result[side]["p90_ms"] >= result[side]["median_ms"]
    assert result["speedup"] == pytest.approx(
        result["onnxruntime"]["median_ms"] / result["lowering"]["median_ms"])
    assert result["speedup_p90"] == pytest.approx(
        result["onnxruntime"]["p90_ms"] / result["lowering"]["p90_ms"])
    assert "(p90: " in stdout


def test_bench_rejects_bad_thread_count(tiny_dir, tiny_artifact, capsys):
    code = main(["bench", str(tiny_artifact), "--model", str(tiny_dir / "tiny.onnx"), "--threads", "0"])
    assert code == 2 and "--threads" in capsys.readouterr().err


@pytest.mark.parametrize("interleave", ["block", "run"])
def test_bench_interleave_modes(tiny_dir, tiny_artifact, tmp_path, capsys, interleave):
    out = tmp_path / "bench.json"
    code = main(["bench", str(tiny_artifact), "--model", str(tiny_dir / "tiny.onnx"), "--threads", "1",
                 "--min-seconds", "0.05", "--repeats", "3", "--interleave", interleave, "--json", str(out)])
    capsys.readouterr()
    result = json.loads(out.read_text())
    assert code == 0 and result["interleave"] == interleave
    assert result["lowering"]["runs"] >= 3 and result["onnxruntime"]["runs"] >= 3

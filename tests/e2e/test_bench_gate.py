"""`lower bench --baseline-json PREV.json --max-regression 5%`: a CI performance gate.

The baselines are fabricated so the outcome does not depend on this machine's speed: the gate compares the
artifact's time relative to ONNX Runtime (measured in the same run), so a baseline whose ratio is absurdly
good must fail and one whose ratio is absurdly bad must pass. No timing assertions otherwise.
"""

import json

import pytest

from lowering.bench import parse_margin, regression_gate
from lowering.cli import main
from lowering.errors import LoweringError

pytestmark = pytest.mark.e2e

FAST = ["--threads", "1", "--min-seconds", "0.05", "--repeats", "3"]


def side(median, spread=1.0, runs=100):
    return {"median_ms": median, "p90_ms": median * 1.1, "mean_ms": median, "min_ms": median * 0.9,
            "runs": runs, "spread_pct": spread}


def baseline(tmp_path, lowering_ms, ort_ms, **extra):
    data = {"target": "cpu", "threads": 1, "inputs": {"x": [2, 3, 8, 8]},
            "lowering": side(lowering_ms), "onnxruntime": side(ort_ms),
            "machine": {"cpu": "some other CPU", "cores": 64}, "versions": {"onnxruntime": "0.0.1"}, **extra}
    path = tmp_path / "prev.json"
    path.write_text(json.dumps(data))
    return path


def bench(tiny_dir, tiny_artifact, capsys, *args):
    code = main(["bench", str(tiny_artifact), "--model", str(tiny_dir / "tiny.onnx"), *FAST,
                 *[str(a) for a in args]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_gate_passes_against_a_slow_baseline_and_writes_the_next_one(tiny_dir, tiny_artifact, tmp_path,
                                                                      capsys):
    prev = baseline(tmp_path, lowering_ms=1000.0, ort_ms=1.0)  # was 1000x slower than ONNX Runtime
    out = tmp_path / "now.json"
    code, stdout, _ = bench(tiny_dir, tiny_artifact, capsys, "--baseline-json", prev,
                            "--max-regression", "5%", "--json", out)
    assert code == 0 and "PASS" in stdout
    for needle in ("time relative to ONNX Runtime", "spreads (IQR % of median)", "baseline lowering 1.0%",
                   "another machine", "ONNX Runtime changed (0.0.1 -> "):
        assert needle in stdout, needle
    result = json.loads(out.read_text())
    gate = result["gate"]
    assert gate["passed"] and gate["max_regression"] == pytest.approx(0.05)
    assert gate["relative_to_onnxruntime"]["baseline"] == pytest.approx(1000.0)
    assert gate["relative_to_onnxruntime"]["change"] < 0
    assert set(gate["spread_pct"]) == {"baseline", "current"}
    # the written result is itself a usable baseline for the next run
    code, stdout, _ = bench(tiny_dir, tiny_artifact, capsys, "--baseline-json", out,
                            "--max-regression", "900")
    assert code == 0 and "PASS" in stdout


def test_gate_fails_against_a_fast_baseline(tiny_dir, tiny_artifact, tmp_path, capsys):
    prev = baseline(tmp_path, lowering_ms=0.001, ort_ms=1000.0)  # was a million times faster than ORT
    out = tmp_path / "now.json"
    # --baseline X.json is the gate too
    code, stdout, err = bench(tiny_dir, tiny_artifact, capsys, "--baseline", prev, "--json", out)
    assert code == 1 and "FAIL" in stdout and "slower relative to ONNX Runtime" in stdout
    assert "Traceback" not in err
    assert json.loads(out.read_text())["gate"]["passed"] is False  # written even when the gate fails


@pytest.mark.parametrize("make, needle", [
    (lambda p: baseline(p, 1.0, 1.0, threads=4), "threads"),
    (lambda p: baseline(p, 1.0, 1.0, inputs={"x": [1, 3, 8, 8]}), "input shapes"),
    (lambda p: (p / "prev.json").write_text("{not json") and p / "prev.json", "not JSON"),
    (lambda p: (p / "prev.json").write_text('{"lowering": {}}') and p / "prev.json", "lower bench --json"),
    (lambda p: p / "missing.json", "cannot read"),
])
def test_unusable_baselines_are_bad_input(tiny_dir, tiny_artifact, tmp_path, capsys, make, needle):
    code, _, err = bench(tiny_dir, tiny_artifact, capsys, "--baseline-json", make(tmp_path))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_margin_parsing_and_option_conflicts(tiny_dir, tiny_artifact, tmp_path, capsys):
    assert parse_margin("5%") == pytest.approx(0.05) and parse_margin("12.5") == pytest.approx(0.125)
    for bad in ("-1%", "fast", "5000%"):
        with pytest.raises(LoweringError, match="max-regression"):
            parse_margin(bad)
    prev = baseline(tmp_path, 1.0, 1.0)
    code, _, err = bench(tiny_dir, tiny_artifact, capsys, "--baseline", prev, "--baseline-json", prev)
    assert code == 2 and "only one" in err


def test_noise_decides_small_changes():
    """A change above the margin but inside the measurement noise passes; the same change measured with
    little noise fails; the spreads of both runs are reported."""
    def result(lowering_ms, spread, runs=10):
        return {"target": "cpu", "threads": 1, "inputs": {}, "lowering": side(lowering_ms, spread, runs),
                "onnxruntime": side(1.0, spread, runs), "machine": {"cpu": "x"}, "versions": {}}

    noisy = regression_gate(result(1.10, spread=30.0), result(1.0, spread=30.0), 0.05)
    assert noisy["passed"] and noisy["noise"] > 0.10 and noisy["notes"]
    quiet = regression_gate(result(1.10, spread=1.0, runs=400), result(1.0, spread=1.0, runs=400), 0.05)
    assert not quiet["passed"] and quiet["relative_to_onnxruntime"]["change"] == pytest.approx(0.10)
    assert quiet["absolute"]["same_machine"] and quiet["spread_pct"]["baseline"]["lowering"] == 1.0
    within = regression_gate(result(1.04, spread=1.0, runs=400), result(1.0, spread=1.0, runs=400), 0.05)
    assert within["passed"]

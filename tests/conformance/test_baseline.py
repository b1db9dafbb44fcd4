"""The conformance merge gate: a test the baseline lists as passed must still pass (tests/conformance/run.py
``--baseline``)."""

import json

from tests.conformance import run
from tests.conformance.cases import Outcome


def _results(**status):
    return {"inputs": {name: Outcome(name, s, "" if s == "passed" else "compile", "" if s == "passed"
                                     else "UnsupportedOpsError: unsupported ops: X")
                       for name, s in status.items()}}


def test_regressions_and_new_passes_are_told_apart():
    baseline = {"inputs": ["test_a", "test_b", "test_not_run"]}
    regressions, new = run.compare_with_baseline(baseline, _results(test_a="passed", test_b="failed",
                                                                     test_c="passed", test_d="failed"))
    assert [r.split(":")[0] for r in regressions] == ["inputs test_b"]
    assert "unsupported ops: X" in regressions[0]
    assert new == ["inputs test_c"]


def test_a_mode_missing_from_the_baseline_only_adds_passes():
    regressions, new = run.compare_with_baseline({}, _results(test_a="passed", test_b="failed"))
    assert regressions == [] and new == ["inputs test_a"]


def test_the_committed_baseline_names_real_tests_only():
    from tests.conformance.cases import node_cases
    from tests.conformance.exclusions import excluded_reason

    baseline = json.loads((run.ROOT / "docs/results/conformance_passed.json").read_text())
    assert set(baseline) <= set(run.MODES) and baseline["inputs"]
    names = set(node_cases())
    for mode, passed in baseline.items():
        assert passed == sorted(set(passed)), mode
        assert set(passed) <= names, sorted(set(passed) - names)[:5]
        assert not [n for n in passed if excluded_reason(n)], mode


def test_the_gate_fails_the_run(tmp_path, monkeypatch, capsys):
    """main() with a baseline that a (faked) run breaks exits 1 and names the test."""
    baseline = tmp_path / "passed.json"
    baseline.write_text(json.dumps({"inputs": ["test_abs"]}))
    monkeypatch.setattr(run, "run_tests", lambda *a, **k: _results(test_abs="failed"))
    code = run.main(["--filter", "^test_abs$", "--out", str(tmp_path / "c.md"), "--baseline", str(baseline)])
    assert code == 1
    assert "test_abs" in capsys.readouterr().err
    monkeypatch.setattr(run, "run_tests", lambda *a, **k: _results(test_abs="passed"))
    assert run.main(["--filter", "^test_abs$", "--out", str(tmp_path / "c.md"),
                     "--baseline", str(baseline)]) == 0

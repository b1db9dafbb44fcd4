"""`lower verify --bisect` (a per-pass numerical bisect against ONNX Runtime) and `lower MODEL --dump-ir`."""

import json

import numpy as np
import onnx
import pytest

from lowering.bisect import pipeline_names
from lowering.cli import main
from lowering.ir import Graph
from passes.fusion.fuse_epilogue import FuseEpilogues

from .conftest import make_tiny_cnn

pytestmark = pytest.mark.e2e


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bisect_json(args, capsys):
    code, out, err = run_cli(["verify", *args, "--bisect", "--json"], capsys)
    return code, json.loads(out), err


def test_clean_model_every_stage_in_tolerance(tiny_dir, tiny_artifact, capsys):
    code, out, _ = run_cli(["verify", tiny_artifact, "--model", tiny_dir / "tiny.onnx", "--bisect"], capsys)
    assert code == 0, out
    assert "PASS: every stage within tolerance" in out and "MISMATCH" not in out
    for stage in ["import", *pipeline_names("cpu"), "artifact (cpu)"]:
        assert f" {stage} " in out
    code, result, _ = bisect_json([tiny_artifact, "--model", tiny_dir / "tiny.onnx"], capsys)
    assert code == 0 and result["ok"] and result["first_failure"] is None
    assert [r["stage"] for r in result["rows"]] == ["import", *pipeline_names("cpu"), "artifact (cpu)"]
    assert result["rows"][0]["nodes"] == 5 and result["rows"][-1]["kind"] == "artifact"
    for row in result["rows"]:
        (y,) = row["outputs"]
        assert row["ok"] and y["name"] == "y" and y["max_abs_error"] < 1e-4
        assert y["mean_abs_error"] <= y["max_abs_error"]
        assert y["sqnr_db"] is None or y["sqnr_db"] > 100  # None: exact
    assert result["rows"][0]["outputs"][0]["prev_max_abs_error"] is None
    assert result["same_model"] and result["shapes"] == {"x": [2, 3, 8, 8]}


def _scale_a_weight(graph: Graph) -> None:
    """Multiply the classifier's weight (the last node's constant operand) by 1.5: a wrong rewrite."""
    weight = next(v for v in graph.nodes[-1].inputs if v is not None and v.is_const and v.const.ndim == 2)
    weight.const = (weight.const * 1.5).astype(weight.const.dtype)


def test_a_broken_pass_is_named(tiny_dir, tiny_artifact, capsys, monkeypatch):
    original = FuseEpilogues.run

    def broken(self, graph, ctx):
        result = original(self, graph, ctx)
        _scale_a_weight(graph)
        return result

    monkeypatch.setattr(FuseEpilogues, "run", broken)
    code, out, _ = run_cli(["verify", tiny_artifact, "--model", tiny_dir / "tiny.onnx", "--bisect"], capsys)
    assert code == 1
    assert "FAIL: first failing stage" in out and "pass 'fuse_epilogue'" in out
    code, result, _ = bisect_json([tiny_artifact, "--model", tiny_dir / "tiny.onnx"], capsys)
    assert code == 1 and not result["ok"]
    failure = result["first_failure"]
    assert failure["stage"] == "fuse_epilogue" and failure["kind"] == "pass"
    rows = result["rows"]
    assert all(r["ok"] for r in rows[:failure["index"]])
    broken_row = rows[failure["index"]]["outputs"][0]
    assert broken_row["prev_max_abs_error"] > 1e-3 and broken_row["mismatched"] > 0
    # the artifact was built before the pass broke: it agrees with ONNX Runtime, not with the broken graph
    assert rows[-1]["ok"] and rows[-1]["outputs"][0]["prev_max_abs_error"] > 1e-3


def test_the_artifact_row_catches_a_wrong_artifact(tiny_dir, tiny_artifact, capsys):
    """An artifact built from other weights: every pass agrees with ONNX Runtime on MODEL, the artifact
    does not, so the blame falls on the target's code generation (with the note that MODEL differs)."""
    code, out, _ = run_cli(["verify", tiny_artifact, "--model", tiny_dir / "tiny_other_weights.onnx",
                            "--bisect"], capsys)
    assert code == 1 and "code generation" in out and "not the model" in out
    code, result, _ = bisect_json([tiny_artifact, "--model", tiny_dir / "tiny_other_weights.onnx"], capsys)
    assert code == 1 and not result["same_model"]
    assert result["first_failure"]["kind"] == "artifact"
    assert result["first_failure"]["stage"] == "artifact (cpu)"
    assert all(r["ok"] for r in result["rows"][:-1]) and not result["rows"][-1]["ok"]
    assert result["largest_sqnr_drop"]["stage"] == "artifact (cpu)"


def test_bisect_with_inputs_and_bad_inputs(tiny_dir, tiny_artifact, capsys, tmp_path):
    good = tmp_path / "in.npz"
    np.savez(good, x=np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32))
    code, result, _ = bisect_json([tiny_artifact, "--model", tiny_dir / "tiny.onnx", "--inputs", good],
                                  capsys)
    assert code == 0 and result["ok"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, z=np.zeros((2, 3, 8, 8), np.float32))
    code, out, err = run_cli(["verify", tiny_artifact, "--model", tiny_dir / "tiny.onnx", "--inputs", bad,
                              "--bisect"], capsys)
    assert code == 2 and "no array for input(s) x" in err and "Traceback" not in err
    code, _, err = run_cli(["verify", tiny_artifact, "--model", tiny_dir / "missing.onnx", "--bisect"],
                           capsys)
    assert code == 2 and "no such file" in err


def test_dump_ir_writes_one_file_per_pass(tiny_dir, capsys, tmp_path):
    out_dir = tmp_path / "ir"
    out_dir.mkdir()
    (out_dir / "99_stale.txt").write_text("from an earlier dump")
    code, out, err = run_cli([tiny_dir / "tiny.onnx", "--shape", "x=2x3x8x8", "-o", tmp_path / "t.lwr",
                              "--dump-ir", out_dir, "--print-after", "fuse_epilogue"], capsys)
    assert code == 0 and (tmp_path / "t.lwr").is_file()
    names = sorted(p.name for p in out_dir.iterdir())
    expected = ["00_import.txt"] + [f"{i:02d}_{n}.txt" for i, n in enumerate(pipeline_names("cpu"), 1)]
    assert names == expected and f"wrote {len(expected)} IR dumps" in out
    assert "= Conv(" in (out_dir / "00_import.txt").read_text()
    fused = (out_dir / names[pipeline_names("cpu").index("fuse_epilogue") + 1]).read_text()
    assert "lowering::FusedConv" in fused and "= Conv(" not in fused
    # the same stable text --print-after prints
    printed = err.split("// IR after fuse_epilogue\n", 1)[1]
    assert printed.startswith(fused.rstrip("\n"))
    # a disabled pass has no file; the numbering follows the passes that ran
    code, _, _ = run_cli([tiny_dir / "tiny.onnx", "--shape", "x=2x3x8x8", "-o", tmp_path / "u.lwr",
                          "--disable-pass", "fuse_epilogue", "--dump-ir", out_dir], capsys)
    assert code == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert not any("fuse_epilogue" in n for n in names)
    assert len(names) == len(pipeline_names("cpu", {"fuse_epilogue"})) + 1


def test_disabled_passes_are_replayed(tiny_dir, capsys, tmp_path):
    art = tmp_path / "nofuse.lwr"
    assert main([str(tiny_dir / "tiny.onnx"), "--shape", "x=2x3x8x8", "--disable-pass", "fuse_epilogue",
                 "-o", str(art)]) == 0
    capsys.readouterr()
    code, result, _ = bisect_json([art, "--model", tiny_dir / "tiny.onnx"], capsys)
    assert code == 0 and result["disabled_passes"] == ["fuse_epilogue"]
    assert "fuse_epilogue" not in [r["stage"] for r in result["rows"]]


def test_quantized_artifact(tmp_path, capsys):
    """A --quantize artifact: the float source is refused (the QDQ model is not stored), the QDQ model written
    by `lower quantize` with the same settings bisects, recognised by its SHA-256."""
    model = tmp_path / "t1.onnx"
    onnx.save(make_tiny_cnn(seed=0, batch=1), model)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.random.default_rng(1).standard_normal((8, 3, 8, 8)).astype(np.float32))
    art = tmp_path / "t1q.lwr"
    assert main([str(model), "--quantize", "int8", "--calibration", str(cal), "-o", str(art)]) == 0
    qdq = tmp_path / "t1.int8.onnx"
    assert main(["quantize", str(model), "--calibration", str(cal), "-o", str(qdq)]) == 0
    capsys.readouterr()
    code, _, err = run_cli(["verify", art, "--model", model, "--bisect"], capsys)
    assert code == 2 and "QDQ model it compiled is not stored" in err and "lower quantize t1.onnx" in err
    code, result, _ = bisect_json([art, "--model", qdq, "--atol", "0.05"], capsys)
    assert code == 0, result["first_failure"]
    assert result["compared_with"] == "the QDQ model the artifact was compiled from" and result["same_model"]
    assert [r["stage"] for r in result["rows"]][-1] == "artifact (cpu)"

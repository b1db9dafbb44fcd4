"""`lower merge`: artifacts of one model built on different machines become one artifact with every target."""

import json
import zipfile

import numpy as np
import pytest

from lowering.artifact import write_artifact
from lowering.cli import main
from runtime.artifact import open_artifact

pytestmark = pytest.mark.e2e

SHA = "ab" * 32
OPTIONS = {"shapes": {}, "disabled_passes": [], "isa": None}
SIGNATURE = {"inputs": [{"name": "x", "dtype": "float32", "shape": [1, 4]}],
             "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 4]}]}


def fake(path, targets: dict, *, sha=SHA, options=None, graph=b"graph", extra=None):
    """A hand-made artifact: ``targets`` maps a target name to its members' bytes."""
    files = {f"{t}/{m}": data for t, members in targets.items() for m, data in members.items()}
    files["graph.onnx"] = graph
    report = {"source": {"nodes": 1}, "targets": {t: {"kernels": [t]} for t in targets}}
    files["report.json"] = json.dumps(report).encode()
    files.update(extra or {})
    base = {"model": {"name": "m.onnx", "sha256": sha}, **SIGNATURE,
            "targets": {t: {"kind": t, "weights": f"{t}/w.bin"} for t in targets},
            "options": {**OPTIONS, **(options or {}), "targets": list(targets)}}
    write_artifact(path, base, files)
    return path


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: merge") and "Traceback" not in err, err
    return lines[0]


def test_merge_is_the_union(tmp_path, capsys):
    a = fake(tmp_path / "a.lwr", {"cpu": {"w.bin": b"cpu weights", "model.so": b"\x7fELF"}})
    b = fake(tmp_path / "b.lwr", {"cuda": {"w.bin": b"cuda weights"}}, graph=b"another graph")
    out = tmp_path / "all.lwr"
    code, stdout, _ = run_cli(["merge", a, b, "-o", out], capsys)
    assert code == 0 and "targets: cpu, cuda" in stdout
    art = open_artifact(out)
    assert sorted(art.targets) == ["cpu", "cuda"] and art.manifest["options"]["targets"] == ["cpu", "cuda"]
    assert art.read("cpu/model.so") == b"\x7fELF" and art.read("cuda/w.bin") == b"cuda weights"
    assert art.read("graph.onnx") == b"graph"  # the first input's
    report = json.loads(art.read("report.json"))
    assert report["targets"] == {"cpu": {"kernels": ["cpu"]}, "cuda": {"kernels": ["cuda"]}}
    assert report["source"] == {"nodes": 1}
    assert art.manifest["model"]["sha256"] == SHA and art.manifest["inputs"] == SIGNATURE["inputs"]
    # deterministic; the order of the inputs orders the targets
    again = tmp_path / "again.lwr"
    assert run_cli(["merge", a, b, "-o", again], capsys)[0] == 0
    assert again.read_bytes() == out.read_bytes()
    assert run_cli(["merge", b, a, "-o", tmp_path / "ba.lwr"], capsys)[0] == 0
    assert open_artifact(tmp_path / "ba.lwr").manifest["options"]["targets"] == ["cuda", "cpu"]
    # merging into one of the inputs is fine (inputs are read and verified before anything is written)
    assert run_cli(["merge", a, b, "-o", a], capsys)[0] == 0
    assert a.read_bytes() == out.read_bytes()


def test_identical_target_in_two_inputs_is_kept_once(tmp_path, capsys):
    a = fake(tmp_path / "a.lwr", {"cpu": {"w.bin": b"same"}})
    b = fake(tmp_path / "b.lwr", {"cpu": {"w.bin": b"same"}, "cuda": {"w.bin": b"gpu"}})
    code, _, _ = run_cli(["merge", a, b, "-o", tmp_path / "o.lwr"], capsys)
    assert code == 0 and sorted(open_artifact(tmp_path / "o.lwr").targets) == ["cpu", "cuda"]


@pytest.mark.parametrize("kind, make_b, needles", [
    ("model", lambda p: fake(p, {"cuda": {"w.bin": b"g"}}, sha="cd" * 32), ["different source model",
                                                                          "model.sha256"]),
    ("options", lambda p: fake(p, {"cuda": {"w.bin": b"g"}}, options={"isa": "x86-64-v3"}),
     ["different compile options", "options.isa", "x86-64-v3"]),
    ("pass", lambda p: fake(p, {"cuda": {"w.bin": b"g"}}, options={"disabled_passes": ["dce"]}),
     ["options.disabled_passes"]),
    ("target", lambda p: fake(p, {"cpu": {"w.bin": b"other weights"}}), ["target cpu", "cpu/w.bin"]),
    ("shared", lambda p: fake(p, {"cuda": {"w.bin": b"g"}}, extra={"notes.txt": b"2"}), None),
])
def test_refusals_are_one_line_naming_the_field(tmp_path, capsys, kind, make_b, needles):
    a = fake(tmp_path / "a.lwr", {"cpu": {"w.bin": b"cpu weights"}}, extra={"notes.txt": b"1"})
    b = make_b(tmp_path / "b.lwr")
    out = tmp_path / "o.lwr"
    code, _, err = run_cli(["merge", a, b, "-o", out], capsys)
    assert code == 2
    line = one_line_error(err)
    for needle in needles or ["notes.txt", "differs"]:
        assert needle in line, (needle, line)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["a.lwr", "b.lwr"]


def test_tampered_or_missing_input_is_refused(tmp_path, capsys):
    a = fake(tmp_path / "a.lwr", {"cpu": {"w.bin": b"cpu weights " * 10}})
    b = fake(tmp_path / "b.lwr", {"cuda": {"w.bin": b"g"}})
    data = bytearray(a.read_bytes())
    data[data.find(b"cpu weights") + 2] ^= 1
    a.write_bytes(bytes(data))
    code, _, err = run_cli(["merge", a, b, "-o", tmp_path / "o.lwr"], capsys)
    assert code == 2 and "a.lwr" in err and "cpu/w.bin" in err and not (tmp_path / "o.lwr").exists()
    code, _, err = run_cli(["merge", tmp_path / "nowhere.lwr", b, "-o", tmp_path / "o.lwr"], capsys)
    assert code == 2 and "nowhere.lwr" in err


def test_interrupted_merge_leaves_nothing(tmp_path, monkeypatch):
    from lowering.merge import merge_artifacts

    a = fake(tmp_path / "a.lwr", {"cpu": {"w.bin": b"c"}})
    b = fake(tmp_path / "b.lwr", {"cuda": {"w.bin": b"g"}})

    def boom(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        merge_artifacts([a, b], tmp_path / "o.lwr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lwr", "b.lwr"]


def _have_nvcc() -> bool:
    from targets.cuda.build import find_nvcc

    return find_nvcc() is not None


@pytest.mark.skipif(not _have_nvcc(), reason="needs nvcc to build the cuda target (no GPU needed)")
def test_merged_ci_matrix_equals_a_multi_target_build(tiny_dir, tiny_artifact, tmp_path, capsys):
    """cpu built on one runner, cuda on another: the merge is byte-identical to `lower --target cpu,cuda`
    (built through the same cache folder, so both see the same target builds even while the compiler's
    sources change under a running test session), and the runtime runs it (cpu here: no GPU)."""
    import runtime

    cpu, cuda = tmp_path / "cpu.lwr", tmp_path / "cuda.lwr"
    common = ["--shape", "x=2x3x8x8", "--cache-dir", tmp_path / "cache"]
    assert run_cli([tiny_dir / "tiny.onnx", "--target", "cpu", "-o", cpu, *common], capsys)[0] == 0
    assert run_cli([tiny_dir / "tiny.onnx", "--target", "cuda", "-o", cuda, *common], capsys)[0] == 0
    merged = tmp_path / "all.lwr"
    assert run_cli(["merge", cpu, cuda, "-o", merged], capsys)[0] == 0
    direct = tmp_path / "direct.lwr"
    assert run_cli([tiny_dir / "tiny.onnx", "--target", "cpu,cuda", "-o", direct, *common], capsys)[0] == 0
    with zipfile.ZipFile(merged) as zm, zipfile.ZipFile(direct) as zd:
        assert zm.namelist() == zd.namelist()
        for name in zm.namelist():
            assert zm.read(name) == zd.read(name), name
    assert merged.read_bytes() == direct.read_bytes()
    sess = runtime.load(merged, targets=["cpu"])
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = runtime.load(tiny_artifact).run(None, {"x": x})[0]
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], ref, rtol=1e-5, atol=1e-5)

"""The `lower` CLI as a user drives it: compile, run, verify, inspect, and every bad-input path."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lowering.cli import main

pytestmark = pytest.mark.e2e


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_compile_run_verify_inspect(tiny_dir, tiny_artifact, capsys, tmp_path):
    inputs = tmp_path / "in.npz"
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.savez(inputs, x=x)
    out = tmp_path / "out.npz"
    code, stdout, _ = run_cli(["run", tiny_artifact, "--inputs", inputs, "--output", out], capsys)
    assert code == 0 and "y: float32[2, 5]" in stdout
    with np.load(out) as data:
        assert data["y"].shape == (2, 5)
    code, stdout, _ = run_cli(["verify", tiny_artifact, "--model", tiny_dir / "tiny.onnx",
                               "--inputs", inputs], capsys)
    assert code == 0 and "PASS" in stdout
    code, stdout, _ = run_cli(["inspect", tiny_artifact], capsys)
    assert code == 0
    for needle in ("target cpu", "passes:", "kernels", "memory plan", "lower bound", "cpu/model.so"):
        assert needle in stdout
    code, stdout, _ = run_cli(["inspect", tiny_artifact, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["manifest"]["targets"]["cpu"]["kind"] == "cpu"


def test_run_with_random_inputs(tiny_artifact, capsys):
    code, stdout, _ = run_cli(["run", tiny_artifact], capsys)
    assert code == 0 and "target: cpu" in stdout


def test_verify_exits_1_on_mismatch(tiny_dir, tiny_artifact, capsys):
    code, stdout, err = run_cli(["verify", tiny_artifact, "--model", tiny_dir / "tiny_other_weights.onnx"],
                                capsys)
    assert code == 1 and "MISMATCH" in stdout and "FAIL" in stdout
    assert "is not the model" in err


def test_verify_json(tiny_dir, tiny_artifact, capsys):
    code, stdout, _ = run_cli(["verify", tiny_artifact, "--model", tiny_dir / "tiny.onnx", "--json"], capsys)
    result = json.loads(stdout)
    assert code == 0 and result["ok"] and result["outputs"][0]["max_abs_error"] < 1e-4


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.onnx", "no such file"),
    (lambda d: (d / "junk.onnx").write_bytes(b"\x00\xffnot a model" * 10) and d / "junk.onnx",
     "not an ONNX model"),
])
def test_bad_model_files(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    code, _, err = run_cli([path, "-o", tmp_path / "o.lwr"], capsys)
    assert code == 2 and needle in err and str(path.name) in err and "Traceback" not in err
    assert not (tmp_path / "o.lwr").exists()


def test_model_failing_the_checker(tmp_path, capsys):
    graph = helper.make_graph([helper.make_node("Relu", ["nowhere"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, _, err = run_cli([path, "-o", tmp_path / "o.lwr"], capsys)
    assert code == 2 and "onnx.checker" in err and "bad.onnx" in err


def test_unsupported_ops_are_all_listed(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("Unique", ["a"], ["b"], name="hm1"),
             helper.make_node("Unique", ["b"], ["c"], name="hm2"),
             helper.make_node("NonZero", ["c"], ["y"], name="acs")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    path = tmp_path / "unsupported.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, _, err = run_cli([path, "-o", tmp_path / "o.lwr"], capsys)
    assert code == 2
    for needle in ("Unique", "hm1", "hm2", "NonZero", "acs"):
        assert needle in err
    assert "ok" not in err.split("unsupported ops:")[1]


def test_symbolic_dimension_needs_a_shape(tiny_dir, tmp_path, capsys):
    code, _, err = run_cli([tiny_dir / "tiny.onnx", "-o", tmp_path / "o.lwr"], capsys)
    assert code == 2 and "'x'" in err and "dimension 0" in err and "--shape" in err
    code, _, err = run_cli([tiny_dir / "tiny.onnx", "--shape", "y=1x3x8x8", "-o", tmp_path / "o.lwr"],
                           capsys)
    assert code == 2 and "not a model input" in err
    code, _, err = run_cli([tiny_dir / "tiny.onnx", "--shape", "x=1x3x9", "-o", tmp_path / "o.lwr"], capsys)
    assert code == 2 and "rank" in err
    code, _, err = run_cli([tiny_dir / "tiny.onnx", "--shape", "x:1", "-o", tmp_path / "o.lwr"], capsys)
    assert code == 2 and "NAME=D1xD2" in err


def test_missing_c_compiler(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run_cli([tiny_dir / "tiny_static.onnx", "-o", tmp_path / "o.lwr"], capsys)
    assert code == 2 and "compiler" in err.lower() and "gcc" in err
    assert not (tmp_path / "o.lwr").exists()


def test_unknown_target(tiny_dir, tmp_path, capsys):
    code, _, err = run_cli([tiny_dir / "tiny_static.onnx", "--target", "tpu", "-o", tmp_path / "o.lwr"],
                           capsys)
    assert code == 2 and "unknown target 'tpu'" in err


@pytest.mark.parametrize("feed, needle", [
    ({"z": np.zeros((2, 3, 8, 8), np.float32)}, "unknown input(s) z"),
    ({"x": np.zeros((1, 3, 8, 8), np.float32)}, "shape [1, 3, 8, 8], expected [2, 3, 8, 8]"),
    ({"x": np.zeros((2, 3, 8, 8), np.float64)}, "dtype float64, expected float32"),
])
def test_run_rejects_wrong_inputs(tiny_artifact, tmp_path, capsys, feed, needle):
    path = tmp_path / "in.npz"
    np.savez(path, **feed)
    code, _, err = run_cli(["run", tiny_artifact, "--inputs", path], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_run_rejects_tampered_and_truncated_artifacts(tiny_artifact, tmp_path, capsys):
    data = bytearray(tiny_artifact.read_bytes())
    truncated = tmp_path / "truncated.lwr"
    truncated.write_bytes(bytes(data[: len(data) // 3]))
    code, _, err = run_cli(["run", truncated], capsys)
    assert code == 2 and "truncated.lwr" in err
    tampered = tmp_path / "tampered.lwr"
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    code, _, err = run_cli(["run", tampered], capsys)
    assert code == 2 and "tampered.lwr" in err


def test_console_script_and_layering_in_an_application(tiny_artifact):
    """The installed `lower` script works, and an application using only the runtime never loads the
    compiler or onnx, even after running a model."""
    lower = Path(sys.executable).with_name("lower")
    out = subprocess.run([str(lower), "inspect", str(tiny_artifact)], capture_output=True, text=True)
    assert out.returncode == 0 and "target cpu" in out.stdout
    probe = (
        "import sys, numpy as np, runtime\n"
        f"s = runtime.load({str(tiny_artifact)!r})\n"
        "y, = s.run(None, {'x': np.ones((2, 3, 8, 8), np.float32)})\n"
        "assert y.shape == (2, 5) and s.target == 'cpu'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lowering', 'passes', 'targets', 'onnx')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_print_after_verbose_and_disable_pass(tiny_dir, tmp_path, capsys):
    code, _, err = run_cli([tiny_dir / "tiny_static.onnx", "-o", tmp_path / "a.lwr", "--print-after",
                            "fuse_epilogue", "-v"], capsys)
    assert code == 0
    assert "// IR after fuse_epilogue" in err and "lowering::FusedConv" in err
    assert "pass simplify:" in err
    for phase in ("load", "cpu import", "cpu passes", "cpu codegen", "cpu cc", "write artifact"):
        assert f"phase {phase}: " in err  # compile time per phase
    code, stdout, err = run_cli([tiny_dir / "tiny_static.onnx", "-o", tmp_path / "b.lwr", "--disable-pass",
                                 "fuse_epilogue", "-v"], capsys)
    assert code == 0 and "pass fuse_epilogue: disabled" in err
    code, stdout, _ = run_cli(["inspect", tmp_path / "b.lwr"], capsys)
    assert "lowering::FusedConv" not in stdout and "Conv" in stdout


def test_same_model_and_options_give_a_byte_identical_artifact(tiny_dir, tmp_path, capsys):
    for name in ("a.lwr", "b.lwr"):
        assert run_cli([tiny_dir / "tiny_static.onnx", "-o", tmp_path / name], capsys)[0] == 0
    assert (tmp_path / "a.lwr").read_bytes() == (tmp_path / "b.lwr").read_bytes()


def test_random_token_ids_stay_inside_the_embedding(tmp_path, capsys):
    """Without --inputs, an int64 input that indexes a Gather is drawn across the gathered axis (not just
    0/1), and never out of range; `lower run` succeeds."""
    from lowering.cli import _load_inputs

    table = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["ids", "shape"], ["flat"]),
             helper.make_node("Gather", ["table", "flat"], ["y"])]
    ids_info = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 64])
    graph = helper.make_graph(nodes, "emb", [ids_info],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 4])],
                              [onnx.numpy_helper.from_array(table, "table"),
                               onnx.numpy_helper.from_array(np.array([64], np.int64), "shape")])
    path = tmp_path / "emb.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code, _, err = run_cli([path, "-o", tmp_path / "emb.lwr"], capsys)
    assert code == 0, err
    import runtime
    ids = _load_inputs(None, runtime.load(tmp_path / "emb.lwr"), seed=0)["ids"]
    assert ids.dtype == np.int64 and 2 <= ids.max() < 50 and ids.min() >= 0
    code, out, err = run_cli(["run", tmp_path / "emb.lwr"], capsys)
    assert code == 0, err


def test_run_profile_times_every_kernel(tiny_artifact, capsys, tmp_path):
    profile = tmp_path / "profile.json"
    code, stdout, _ = run_cli(["run", tiny_artifact, "--profile", 3, "--json-profile", profile], capsys)
    assert code == 0 and "profile: cpu, 3 run(s)" in stdout
    data = json.loads(profile.read_text())
    report = json.loads(__import__("runtime").load(tiny_artifact).artifact.read("report.json"))
    records = report["targets"]["cpu"]["kernels"]
    # every kernel of the report, in run order, each timed (a kernel that ran took some time)
    assert [k["kernel"] for k in data["kernels"]] == [r["name"] for r in records]
    assert all(k["ms"] > 0 for k in data["kernels"])
    assert abs(sum(k["share"] for k in data["kernels"]) - 1) < 1e-9
    conv = next(k for k in data["kernels"] if k["op"] == "lowering::FusedConv")
    assert conv["flops"] > 0 and conv["gflops"] > 0 and "conv" in conv["sources"]


def test_profile_needs_runs_and_a_profiling_target(tiny_artifact, capsys, tmp_path):
    code, _, err = run_cli(["run", tiny_artifact, "--json-profile", tmp_path / "p.json"], capsys)
    assert code == 2 and "--json-profile needs --profile" in err
    code, _, err = run_cli(["run", tiny_artifact, "--profile", 0], capsys)
    assert code == 2 and "--profile must be >= 1" in err


def test_profiled_run_gives_the_same_outputs(tiny_artifact):
    import runtime

    sess = runtime.load(tiny_artifact)
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    (plain,) = sess.run(None, {"x": x})
    rows = sess.profile({"x": x}, runs=2, warmup=0)
    assert len(rows) == len(sess._executor.kernel_names()) and all(r["ms"] >= 0 for r in rows)
    (again,) = sess.run(None, {"x": x})
    assert np.array_equal(plain, again)


def test_cpu_arch_is_recorded_and_checked(tiny_dir, capsys, tmp_path):
    out = tmp_path / "v3.lwr"
    code, _, _ = run_cli([tiny_dir / "tiny_static.onnx", "--cpu-arch", "x86-64-v3", "-o", out], capsys)
    assert code == 0
    import runtime

    requires = runtime.load(out).artifact.manifest["targets"]["cpu"]["requires"]
    assert requires["isa"] == "x86-64-v3" and "avx2" in requires["cpu_flags"]
    code, _, _ = run_cli([tiny_dir / "tiny_static.onnx", "--cpu-arch", "native", "-o", tmp_path / "n.lwr"],
                         capsys)
    assert code == 0
    code, _, err = run_cli([tiny_dir / "tiny_static.onnx", "--cpu-arch", "armv9", "-o", tmp_path / "a.lwr"],
                           capsys)
    assert code == 2 and "unknown cpu arch 'armv9'" in err and not (tmp_path / "a.lwr").exists()

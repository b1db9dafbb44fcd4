"""The custom target's executor (runtime.backends.custom) on hand-built artifacts: NPU-1 steps (tiled GEMM
programs), host steps (cpu-target libraries), the combined report, load-time validation, run-time errors,
and the CLI around it (``lower run --target custom --report/--trace``, ``lower disasm``)."""

import json
import shutil
import zipfile

import numpy as np
import pytest

import runtime
from lowering.artifact import write_artifact
from lowering.cli import main
from runtime.accel import layout
from runtime.accel.config import AccelConfig, preset
from runtime.accel.program import Program, TensorInfo, pack
from runtime.accel.simulator import simulate
from runtime.accel.workloads import tiled_gemm
from runtime.backends import executor_class
from runtime.backends.custom import CustomExecutor, CustomStepError
from runtime.errors import RuntimeLoadError, TargetUnavailableError

pytestmark = pytest.mark.unit
CFG = AccelConfig()
B = CFG.block
M, K, N, N2 = 64, 64, 64, 32


def _mk(name, m, k, offset=0, zp=0, scale=1.0):
    return TensorInfo(name, offset, [m, k], [1, -(-k // B), m, 1, B], "MK:K/32M32", "int8", scale, zp)


def gemm_program(m, n, k, a_name, c_name, *, seed=0, cfg=CFG, layer="gemm", zp=(0, 0)):
    """A tiled GEMM as a standalone Program: A [m, k] and C [m, n] in the 2-D layout, W and the ACT records
    as the constant image; compiler facts in meta like targets/custom writes them."""
    w = tiled_gemm(cfg, m, n, k, 32, 32, seed=seed, layer=lambda mt, nt: f"{layer}{nt}")
    const = k // B * m * B
    layers = sorted(set(filter(None, w.program.layers)))
    meta = {"segment": layer, "compulsory_bytes": m * k + k * n + m * n, "predicted_cycles": 1000,
            "predicted_dram_bytes": w.dram_bytes["total"],
            "layers": {x: {"op_type": "MatMul", "onnx_nodes": [f"{x}_node"], "macs": m * k * 32,
                           "compulsory_bytes": 1, "predicted_dram_bytes": 2, "predicted_cycles": 3,
                           "tiling": {"Mt": 32, "Nt": 32}, "notes": ["hand-built"]} for x in layers}}
    prog = Program(w.program.instructions, w.program.sem_init, w.program.layers, w.dram[const:w.out_offset],
                   const, len(w.dram), [_mk(a_name, m, k, 0, zp[0]), _mk(c_name, m, n, w.out_offset, zp[1])],
                   {x: [f"{x}_node"] for x in layers}, cfg.config_hash(), meta)
    return prog, w


def sig(name, dtype, shape):
    return {"name": name, "dtype": dtype, "shape": list(shape)}


def write(path, entry, files, cfg=CFG):
    files = {"custom/config.json": cfg.to_json().encode(), **files}
    s = entry["signature"]
    base = {"model": {"name": "m.onnx", "sha256": "0" * 64}, "inputs": s["inputs"], "outputs": s["outputs"],
            "targets": {"custom": entry}}
    write_artifact(path, base, files)
    return path


def two_npu_entry():
    """a --npu0--> c --npu1--> d."""
    p0, w0 = gemm_program(M, N, K, "a", "c", seed=0, layer="fc1_")
    p1, w1 = gemm_program(M, N2, N, "c", "d", seed=1, layer="fc2_")
    entry = {"kind": "custom", "format": 1, "config": "custom/config.json",
             "steps": [{"kind": "npu", "name": "npu0", "program": "custom/npu0.npu", "inputs": ["a"],
                        "outputs": ["c"]},
                       {"kind": "npu", "name": "npu1", "program": "custom/npu1.npu", "inputs": ["c"],
                        "outputs": ["d"]}],
             "inputs": ["a"], "outputs": ["d"],
             "signature": {"inputs": [sig("a", "int8", (M, K))], "outputs": [sig("d", "int8", (M, N2))]}}
    files = {"custom/npu0.npu": pack(p0), "custom/npu1.npu": pack(p1)}
    return entry, files, (p0, w0, p1, w1)


@pytest.fixture
def two_npu(tmp_path):
    entry, files, progs = two_npu_entry()
    return write(tmp_path / "two.lwr", entry, files), progs


def _expected_chain(progs, a):
    p0, w0, p1, _ = progs
    np.testing.assert_array_equal(a, w0.a)
    dram = p1.initial_dram()
    layout.write(dram, w0.expected, p1.tensors[0])
    res = simulate(CFG, p1, dram)
    return layout.read(res.dram, p1.tensors[1])


# ---- running --------------------------------------------------------------------------------------------
def test_registered_and_only_chosen_by_name(two_npu):
    path, _ = two_npu
    assert executor_class("custom") is CustomExecutor
    with pytest.raises(TargetUnavailableError, match="custom"):
        runtime.load(path)                                  # the default preference is cuda, cpu
    assert runtime.load(path, target="custom").target == "custom"
    assert runtime.load(path, targets=["cpu", "custom"]).target == "custom"


def test_two_npu_steps_give_the_chained_result(two_npu):
    path, progs = two_npu
    sess = runtime.load(path, target="custom")
    assert sess.last_report is None and sess.last_trace() is None
    a = progs[1].a
    (d,) = sess.run(None, {"a": a})
    assert d.dtype == np.int8 and d.shape == (M, N2)
    np.testing.assert_array_equal(d, _expected_chain(progs, a))
    (again,) = sess.run(["d"], {"a": a})                     # second run reuses the cached timing
    np.testing.assert_array_equal(again, d)


def test_last_report_combines_the_segments(two_npu):
    path, progs = two_npu
    sess = runtime.load(path, target="custom")
    sess.run(None, {"a": progs[1].a})
    rep = sess.last_report
    assert set(rep) == {"segments", "summary", "layers", "host", "operators", "wall"}
    assert all("wall" not in seg["report"] for seg in rep["segments"])
    assert [w["name"] for w in rep["wall"]["segments"]] == ["npu0", "npu1"]
    assert rep["wall"]["wall_s"] > 0 and rep["wall"]["host"] == [] and rep["wall"]["host_time_s"] == 0
    assert [s["name"] for s in rep["segments"]] == ["npu0", "npu1"]
    segs = [s["report"]["summary"] for s in rep["segments"]]
    s = rep["summary"]
    assert s["segments"] == 2
    assert s["cycles"] == sum(x["cycles"] for x in segs) > 0
    assert s["macs_useful"] == M * N * K + M * N2 * N == sum(x["macs_useful"] for x in segs)
    assert s["mac_util"] == pytest.approx(s["macs_useful"] / (s["cycles"] * B * B))
    assert s["time_us"] == pytest.approx(s["cycles"] / CFG.clock_mhz)
    for key in ("read_bytes", "write_bytes", "bytes_total"):
        assert s["dram"][key] == sum(x["dram"][key] for x in segs)
    assert s["dram"]["bytes_total"] == s["dram"]["read_bytes"] + s["dram"]["write_bytes"]
    assert s["dram"]["compulsory_bytes"] == (M * K + K * N + M * N) + (M * N + N * N2 + M * N2)
    assert s["energy_pj"]["total"] == pytest.approx(sum(x["energy_pj"]["total"] for x in segs))
    assert s["energy_pj"]["dram"] == pytest.approx(sum(x["energy_pj"]["dram"] for x in segs))
    assert s["energy_pj"]["total"] == pytest.approx(
        sum(v for k, v in s["energy_pj"].items() if k not in ("total", "pj_per_mac", "preset")))
    assert s["predicted_cycles"] == 2000
    # layers: every row of every segment, named by segment, with the compiler's facts echoed
    rows = sum(len(x["report"]["layers"]) for x in rep["segments"])
    assert len(rep["layers"]) == rows
    names = [r["name"] for r in rep["layers"]]
    assert "npu0/fc1_0" in names and "npu1/fc2_0" in names and "npu0/(none)" in names
    row = next(r for r in rep["layers"] if r["name"] == "npu0/fc1_0")
    assert row["segment"] == "npu0" and row["layer"] == "fc1_0"
    assert row["op_type"] == "MatMul" and row["onnx_nodes"] == ["fc1_0_node"]
    assert row["tiling"] == {"Mt": 32, "Nt": 32} and row["predicted_cycles"] == 3
    assert row["compiler_macs"] == M * K * 32 and row["macs"] == M * 32 * K      # simulated MACs kept
    assert sum(r["macs"] for r in rep["layers"]) == s["macs_useful"]
    assert rep["host"] == [] and rep["operators"] == {"npu": 3, "host": 0}   # fc1_0, fc1_1, fc2_0
    json.dumps(rep)                                          # plain JSON types


def test_report_is_deterministic_apart_from_wall(two_npu):
    path, progs = two_npu
    sess = runtime.load(path, target="custom")
    dumps = []
    for _ in range(2):
        sess.run(None, {"a": progs[1].a})
        dumps.append(json.dumps({k: v for k, v in sess.last_report.items() if k != "wall"}, sort_keys=True))
    assert dumps[0] == dumps[1]
    other = runtime.load(path, target="custom")
    other.run(None, {"a": progs[1].a})
    assert json.dumps({k: v for k, v in other.last_report.items() if k != "wall"}, sort_keys=True) == dumps[0]


def test_trace_merges_the_segments(two_npu):
    path, progs = two_npu
    sess = runtime.load(path, target="custom")
    sess.run(None, {"a": progs[1].a})
    tr = sess.last_trace()
    ev = tr["traceEvents"]
    procs = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == {1: "NPU-1 npu0", 2: "NPU-1 npu1"}
    seg0_us = sess.last_report["segments"][0]["report"]["summary"]["time_us"]
    first1 = min(e["ts"] for e in ev if e["ph"] == "X" and e["pid"] == 2)
    last0 = max(e["ts"] + e["dur"] for e in ev if e["ph"] == "X" and e["pid"] == 1)
    assert first1 >= seg0_us >= last0 - 1e-9                # sequential: npu1 starts after npu0 ends
    assert tr["otherData"]["segments"] == ["npu0", "npu1"]
    json.dumps(tr)


def test_wrong_inputs_are_rejected_by_the_session(two_npu):
    path, _ = two_npu
    sess = runtime.load(path, target="custom")
    with pytest.raises(runtime.errors.InvalidInputError, match="dtype"):
        sess.run(None, {"a": np.zeros((M, K), np.float32)})


# ---- load-time validation -------------------------------------------------------------------------------
def _load_error(tmp_path, entry, files, match, cfg=CFG, exc=RuntimeLoadError):
    path = write(tmp_path / "bad.lwr", entry, files, cfg)
    with pytest.raises(exc, match=match):
        runtime.load(path, target="custom")


def test_corrupt_program_member_names_it(tmp_path):
    entry, files, _ = two_npu_entry()
    data = bytearray(files["custom/npu1.npu"])
    data[200] ^= 0xFF
    files["custom/npu1.npu"] = bytes(data)                  # the manifest hash matches: the checksum fails
    _load_error(tmp_path, entry, files, r"step 'npu1': member 'custom/npu1\.npu'.*checksum mismatch")


def test_truncated_program_and_bad_config(tmp_path):
    entry, files, _ = two_npu_entry()
    files["custom/npu0.npu"] = files["custom/npu0.npu"][:50]
    _load_error(tmp_path, entry, files, r"custom/npu0\.npu.*truncated")
    entry, files, _ = two_npu_entry()
    path = tmp_path / "cfg.lwr"
    write(path, entry, files)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != "manifest.json"}
    members["custom/config.json"] = b'{"array_rows": 3}'
    write_artifact(path, json.loads(zipfile.ZipFile(path).read("manifest.json")), members)
    with pytest.raises(RuntimeLoadError, match=r"custom/config\.json.*not a valid NPU-1 config"):
        runtime.load(path, target="custom")


def test_program_for_another_config(tmp_path):
    entry, files, _ = two_npu_entry()
    other = CFG.replace(dram_latency_cycles=50)
    _load_error(tmp_path, entry, files, r"member 'custom/npu0\.npu'.*config hash", cfg=other)


def test_missing_member(tmp_path):
    entry, files, _ = two_npu_entry()
    entry["steps"][1]["program"] = "custom/npu9.npu"
    _load_error(tmp_path, entry, files, r"step 'npu1'.*member 'custom/npu9\.npu' is missing")


def test_missing_tensor_name(tmp_path):
    entry, files, _ = two_npu_entry()
    entry["steps"][0]["outputs"] = ["c_typo"]
    _load_error(tmp_path, entry, files, r"step 'npu0': value 'c_typo' is not in the tensor table of member "
                                        r"'custom/npu0\.npu' \(it has: a, c\)")


def test_value_read_before_it_is_produced(tmp_path):
    entry, files, _ = two_npu_entry()
    entry["steps"].reverse()
    _load_error(tmp_path, entry, files, r"step 'npu1' reads value 'c', which no earlier step")


def test_shape_disagreement_between_producer_and_consumer(tmp_path):
    entry, files, _ = two_npu_entry()
    p1, _ = gemm_program(M, N2, 32, "c", "d", seed=1)        # reads c as [64, 32]; npu0 writes [64, 64]
    files["custom/npu1.npu"] = pack(p1)
    _load_error(tmp_path, entry, files, r"step 'npu1' reads 'c' as int8\[64, 32\] but step 'npu0' gives "
                                        r"int8\[64, 64\]")


def test_quantisation_disagreement_between_npu_steps(tmp_path):
    entry, files, _ = two_npu_entry()
    p1, _ = gemm_program(M, N2, N, "c", "d", seed=1, zp=(5, 0))
    files["custom/npu1.npu"] = pack(p1)
    _load_error(tmp_path, entry, files, r"zero point 5 but step 'npu0' writes it with .*zero point 0")


def test_signature_disagreements(tmp_path):
    entry, files, _ = two_npu_entry()
    entry["signature"]["inputs"][0]["shape"] = [M, K + 1]
    _load_error(tmp_path, entry, files, r"step 'npu0' reads 'a' as int8\[64, 64\] but the session input")
    entry, files, _ = two_npu_entry()
    entry["outputs"] = ["nope"]
    _load_error(tmp_path, entry, files, r"output value 'nope' is produced by no step")
    entry, files, _ = two_npu_entry()
    entry["steps"][1]["outputs"] = ["a"]
    files["custom/npu1.npu"] = pack(gemm_program(M, K, N, "c", "a", seed=1)[0])
    _load_error(tmp_path, entry, files, r"step 'npu1' writes value 'a', already produced by the session "
                                        "input")


def test_tensor_outside_dram_and_bad_entries(tmp_path):
    entry, files, _ = two_npu_entry()
    p0, _ = gemm_program(M, N, K, "a", "c")
    p0.tensors[1] = _mk("c", M, N, offset=p0.total_dram_bytes() - 64)
    files["custom/npu0.npu"] = pack(p0)
    _load_error(tmp_path, entry, files, r"tensor 'c' ends at DRAM byte \d+, beyond the program's")
    entry, files, _ = two_npu_entry()
    entry["steps"][0]["kind"] = "gpu"
    _load_error(tmp_path, entry, files, r"step 'npu0' has unknown kind 'gpu'")
    entry, files, _ = two_npu_entry()
    entry["format"] = 2
    _load_error(tmp_path, entry, files, r"format 2 is not supported")
    entry, files, _ = two_npu_entry()
    entry["steps"] = []
    _load_error(tmp_path, entry, files, r"lists no steps")


def test_unmet_host_requirements_skip_the_target(tmp_path):
    entry, files, _ = two_npu_entry()
    entry["requires"] = {"machine": "riscv64"}
    path = write(tmp_path / "req.lwr", entry, files)
    with pytest.raises(TargetUnavailableError, match="custom: host steps: needs an riscv64 CPU"):
        runtime.load(path, target="custom")
    assert "riscv64" in CustomExecutor.check_requirements(entry)
    entry.pop("requires")
    assert CustomExecutor.check_requirements(entry) is None


# ---- run-time errors ------------------------------------------------------------------------------------
def test_a_failing_step_raises_a_named_error_and_the_session_survives(tmp_path):
    entry, files, progs = two_npu_entry()
    p1 = progs[2]
    bad = Program.from_text("LOAD buf=UB sram_line=0 dram_line=0 rows=1 row_len=1 wait=S0\nFINISH")
    p1.instructions, p1.layers = bad.instructions, bad.layers    # never signalled: deadlock
    p1.meta = {}
    files["custom/npu1.npu"] = pack(p1)
    path = write(tmp_path / "dead.lwr", entry, files)
    sess = runtime.load(path, target="custom")
    for _ in range(2):
        with pytest.raises(CustomStepError, match=r"npu step 'npu1' failed: DeadlockError: deadlock"):
            sess.run(None, {"a": progs[1].a})
        assert sess.last_report is None
    assert issubclass(CustomStepError, RuntimeError)


# ---- host steps -----------------------------------------------------------------------------------------
def _compile_cpu(tmp_path, model, name):
    """Compile an ONNX model for the cpu target; return (entry, members) relocated under custom/<name>/."""
    import onnx

    from lowering.driver import CompileOptions, compile_model

    onnx.save(model, tmp_path / f"{name}.onnx")
    out = tmp_path / f"{name}.lwr"
    compile_model(tmp_path / f"{name}.onnx", output=out, options=CompileOptions(targets=("cpu",)))
    with zipfile.ZipFile(out) as zf:
        entry = json.loads(zf.read("manifest.json"))["targets"]["cpu"]
        files = {f"custom/{name}/{k.removeprefix('cpu/')}": zf.read(k) for k in zf.namelist()
                 if k.startswith("cpu/")}
    for key in ("library", "source", "weights"):
        entry[key] = f"custom/{name}/" + entry[key].removeprefix("cpu/")
    return entry, files


def _qdq_model(op, shape, scale, in_type, out_type):
    from onnx import TensorProto, helper, numpy_helper

    types = {"float32": TensorProto.FLOAT, "int8": TensorProto.INT8}
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    g = helper.make_graph([helper.make_node(op, ["x", "s", "z"], ["y"], name=op.lower())], op,
                          [helper.make_tensor_value_info("x", types[in_type], list(shape))],
                          [helper.make_tensor_value_info("y", types[out_type], list(shape))],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def host_artifact(tmp_path_factory):
    pytest.importorskip("onnx")
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler for the host steps")
    tmp = tmp_path_factory.mktemp("custom_host")
    q_entry, q_files = _compile_cpu(tmp, _qdq_model("QuantizeLinear", (M, K), 0.05, "float32", "int8"),
                                    "host0")
    dq_entry, dq_files = _compile_cpu(tmp, _qdq_model("DequantizeLinear", (M, N), 0.25, "int8", "float32"),
                                      "host2")
    p0, w0 = gemm_program(M, N, K, "a", "c", seed=0)
    entry = {"kind": "custom", "format": 1, "config": "custom/config.json",
             "steps": [{"kind": "host", "name": "host0", "entry": q_entry, "inputs": ["x"], "outputs": ["a"],
                        "nodes": ["quantizelinear"]},
                       {"kind": "npu", "name": "npu1", "program": "custom/npu1.npu", "inputs": ["a"],
                        "outputs": ["c"]},
                       {"kind": "host", "name": "host2", "entry": dq_entry, "inputs": ["c"], "outputs": ["y"],
                        "nodes": ["dequantizelinear"]}],
             "inputs": ["x"], "outputs": ["y"],
             "signature": {"inputs": [sig("x", "float32", (M, K))], "outputs": [sig("y", "float32", (M, N))]},
             "requires": q_entry["requires"]}
    files = {"custom/npu1.npu": pack(p0), **q_files, **dq_files}
    return write(tmp / "host.lwr", entry, files), w0, entry, files


@pytest.mark.target_cpu
def test_host_npu_host(host_artifact):
    path, w0, _, _ = host_artifact
    sess = runtime.load(path, target="custom")
    x = w0.a.astype(np.float32) * 0.05                      # quantizes back to w0.a exactly
    (y,) = sess.run(None, {"x": x})
    np.testing.assert_allclose(y, w0.expected.astype(np.float32) * 0.25)
    rep = sess.last_report
    assert rep["host"] == [{"name": "host0", "inputs": ["x"], "outputs": ["a"], "operators": 1},
                           {"name": "host2", "inputs": ["c"], "outputs": ["y"], "operators": 1}]
    assert [h["name"] for h in rep["wall"]["host"]] == ["host0", "host2"]
    assert all(h["time_s"] >= 0 for h in rep["wall"]["host"])
    assert [s["name"] for s in rep["segments"]] == ["npu1"]
    assert rep["operators"] == {"npu": 2, "host": 2}
    assert rep["wall"]["host_time_s"] == pytest.approx(sum(h["time_s"] for h in rep["wall"]["host"]))
    first = json.dumps({k: v for k, v in rep.items() if k != "wall"}, sort_keys=True)
    sess.run(None, {"x": x})
    assert json.dumps({k: v for k, v in sess.last_report.items() if k != "wall"}, sort_keys=True) == first
    procs = {e["args"]["name"] for e in sess.last_trace()["traceEvents"] if e["name"] == "process_name"}
    assert procs == {"NPU-1 npu1", "host"}


@pytest.mark.target_cpu
def test_host_signature_disagreement(host_artifact, tmp_path):
    _, _, entry, files = host_artifact
    entry = json.loads(json.dumps(entry))
    entry["steps"][2]["entry"]["signature"]["inputs"][0]["dtype"] = "uint8"
    _load_error(tmp_path, entry, files, r"step 'host2' reads 'c' as uint8\[64, 64\] but step 'npu1' gives "
                                        r"int8\[64, 64\]")
    entry = json.loads(json.dumps(host_artifact[2]))
    entry["steps"][0]["inputs"] = ["x", "x"]
    _load_error(tmp_path, entry, files, r"step 'host0' names 2 inputs / 1 outputs but its host signature")


@pytest.mark.target_cpu
def test_cpu_target_keeps_no_report(tmp_path):
    pytest.importorskip("onnx")
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler")
    import onnx

    from lowering.driver import CompileOptions, compile_model

    onnx.save(_qdq_model("QuantizeLinear", (2, 3), 0.1, "float32", "int8"), tmp_path / "q.onnx")
    compile_model(tmp_path / "q.onnx", output=tmp_path / "q.lwr", options=CompileOptions(targets=("cpu",)))
    sess = runtime.load(tmp_path / "q.lwr")
    sess.run(None, {"x": np.ones((2, 3), np.float32)})
    assert sess.last_report is None and sess.last_trace() is None
    assert main(["run", str(tmp_path / "q.lwr"), "--report", str(tmp_path / "r.json")]) == 2
    assert main(["disasm", str(tmp_path / "q.lwr")]) == 2


# ---- CLI ------------------------------------------------------------------------------------------------
def test_cli_run_report_and_trace(two_npu, tmp_path, capsys):
    path, progs = two_npu
    np.savez(tmp_path / "in.npz", a=progs[1].a)
    rc = main(["run", str(path), "--target", "custom", "--inputs", str(tmp_path / "in.npz"),
               "--report", str(tmp_path / "r.json"), "--trace", str(tmp_path / "t.json"),
               "--output", str(tmp_path / "out.npz")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "target: custom" in out and "mac_util" in out and "cycles" in out and "uJ" in out
    assert "npu DRAM: read" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert [s["name"] for s in rep["segments"]] == ["npu0", "npu1"]
    assert f"{rep['summary']['cycles']:,} cycles" in out
    tr = json.loads((tmp_path / "t.json").read_text())
    assert {e["pid"] for e in tr["traceEvents"]} == {1, 2}
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_array_equal(z["d"], _expected_chain(progs, progs[1].a))


def test_cli_run_without_target_does_not_pick_custom(two_npu, capsys):
    path, _ = two_npu
    assert main(["run", str(path)]) == 2
    assert "no usable target" in capsys.readouterr().err


def test_cli_run_step_failure_is_one_line(tmp_path, capsys):
    entry, files, progs = two_npu_entry()
    p0 = progs[0]
    bad = Program.from_text("LOAD buf=UB sram_line=0 dram_line=99999 rows=1 row_len=1\nFINISH")
    p0.instructions, p0.layers, p0.meta = bad.instructions, bad.layers, {}
    files["custom/npu0.npu"] = pack(p0)
    path = write(tmp_path / "oob.lwr", entry, files)
    assert main(["run", str(path), "--target", "custom"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: custom target: npu step 'npu0' failed: OutOfBoundsError")
    assert "Traceback" not in err


def test_cli_disasm(two_npu, capsys):
    path, _ = two_npu
    assert main(["disasm", str(path)]) == 0
    out = capsys.readouterr().out
    assert "; ==== step npu0 (custom/npu0.npu), config default: a -> c" in out
    assert "; ==== step npu1 (custom/npu1.npu), config default: c -> d" in out
    assert "; tensor a: DRAM 0 shape [64, 64] -> MK:K/32M32" in out
    assert "GEMM" in out and "; fc1_0 [fc1_0_node]" in out
    assert main(["disasm", str(path), "--step", "npu1"]) == 0
    out = capsys.readouterr().out
    assert "step npu1" in out and "step npu0" not in out
    assert main(["disasm", str(path), "--step", "npu7"]) == 2
    assert "no such NPU step" in capsys.readouterr().err


def test_cli_disasm_without_custom_target(tmp_path, capsys):
    base = {"model": {"name": "m", "sha256": "0" * 64}, "inputs": [], "outputs": [],
            "targets": {"cpu": {"kind": "cpu"}}}
    write_artifact(tmp_path / "c.lwr", base, {"cpu/weights.bin": b"x"})
    assert main(["disasm", str(tmp_path / "c.lwr")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "no custom target (built: cpu)" in err
    assert main(["disasm", str(tmp_path / "missing.lwr")]) == 2


def test_cli_accel_config_option(tmp_path, capsys):
    from lowering.cli import _accel_config_option
    from lowering.errors import LoweringError

    assert _accel_config_option(None, ("cpu",)) == ()
    assert _accel_config_option("vta_like", ("custom",)) == (("accel_config", "vta_like"),)
    cfg_file = tmp_path / "npu.json"
    cfg_file.write_text(json.dumps({"preset": "gemmini_like", "clock_mhz": 500.0}))
    ((key, value),) = _accel_config_option(str(cfg_file), ("cpu", "custom"))
    assert key == "accel_config" and value == str(cfg_file.resolve())
    assert preset("gemmini_like").array_rows == 16
    with pytest.raises(LoweringError, match="not a preset .* nor a JSON file"):
        _accel_config_option("tpu_v9", ("custom",))
    with pytest.raises(LoweringError, match="--target custom"):
        _accel_config_option("default", ("cpu",))
    cfg_file.write_text('{"array_rows": 3}')
    with pytest.raises(LoweringError, match=r"--accel-config .*npu\.json"):
        _accel_config_option(str(cfg_file), ("custom",))
    assert main(["model.onnx", "--target", "cpu", "--accel-config", "default"]) == 2
    assert "--accel-config" in capsys.readouterr().err

"""NPU-1 report (ACCELERATOR.md B.7): deterministic JSON, per-layer sums, text, Chrome trace structure."""

import json

import pytest

from runtime.accel.config import AccelConfig
from runtime.accel.report import TIDS, build_report, chrome_trace, to_json, to_text, trace_json
from runtime.accel.simulator import simulate
from runtime.accel.workloads import tiled_gemm

pytestmark = pytest.mark.unit
CFG = AccelConfig()


def _run(**kw):
    w = tiled_gemm(CFG, 256, 192, 128, 64, 64, layer=lambda m, n: f"gemm{n}", **kw)
    return w, simulate(CFG, w.program, w.dram)


def test_json_is_deterministic_apart_from_wall_time():
    w, a = _run()
    _, b = _run()
    ra = build_report(CFG, w.program, a, compulsory_bytes=256 * 128 + 128 * 192 + 256 * 192)
    rb = build_report(CFG, w.program, b, compulsory_bytes=256 * 128 + 128 * 192 + 256 * 192, wall_s=123.0)
    assert to_json(ra, wall=False) == to_json(rb, wall=False)
    assert to_json(ra) != to_json(rb) and json.loads(to_json(rb))["wall"]["wall_s"] == 123.0
    text = to_json(ra, wall=False)
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=1) + "\n"      # stable, sorted keys
    s = ra["summary"]
    assert s["cycles"] == a.cycles and s["time_us"] == a.cycles / 1000
    assert s["achieved_tops"] == pytest.approx(2 * 256 * 192 * 128 / (a.cycles * 1e-9) / 1e12)
    d = s["dram"]
    actual = d["read_bytes"] + d["write_bytes"]
    assert d["ratio_to_compulsory"] == pytest.approx(actual / d["compulsory_bytes"])
    assert d["ratio_to_compulsory"] > 1
    assert ra["config_hash"] == CFG.config_hash() and ra["config"]["array_rows"] == 32
    assert set(s["energy_pj"]) >= {"mac", "ub", "wb", "acc", "pb_lut", "vpu", "dram", "static", "total",
                                   "pj_per_mac"}
    assert set(s["engines"]) == {"LD", "MX", "VP", "ST"}
    assert set(s["engines"]["MX"]) >= {"busy", "sem_wait", "idle"}


def test_per_layer_rows_sum_to_totals():
    w, r = _run()
    info = {"gemm1": {"onnx_nodes": ["Gemm_1"], "compulsory_bytes": 1}}
    rep = build_report(CFG, w.program, r, layer_info=info)
    layers, s = rep["layers"], rep["summary"]
    assert [x["name"] for x in layers] == ["gemm0", "gemm1", "gemm2", "(none)"]
    assert sum(x["macs"] for x in layers) == s["macs_useful"] == 256 * 192 * 128
    assert sum(x["dram_read_bytes"] for x in layers) == s["dram"]["read_bytes"]
    assert sum(x["dram_write_bytes"] for x in layers) == s["dram"]["write_bytes"]
    assert sum(x["energy_pj"] for x in layers) == pytest.approx(s["energy_pj"]["total"])
    assert sum(sum(x["instructions"].values()) for x in layers) == s["instructions_total"]
    g1 = layers[1]
    assert g1["onnx_nodes"] == ["Gemm_1"] and g1["ratio_to_compulsory"] == g1["dram_read_bytes"] + \
        g1["dram_write_bytes"]
    for x in layers[:3]:
        assert x["op_type"] == "GEMM" and x["bound"] == "compute"
        assert x["cycles"] == x["end_cycle"] - x["start_cycle"]
        assert x["roofline_cycles"] == x["macs"] // 1024 <= x["cycles"]
        assert x["mac_util"] == pytest.approx(x["macs"] / (x["cycles"] * 1024))
    assert layers[0]["start_cycle"] == 0 and max(x["end_cycle"] for x in layers) == s["cycles"]
    text = to_text(rep)
    assert "gemm2" in text and "mac_util" in text and "energy" in text


def _check_trace(tr):
    tr = json.loads(trace_json(tr))
    assert tr["displayTimeUnit"] == "ns"
    named = {e["tid"]: e["args"]["name"] for e in tr["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert set(named.values()) >= {"LD", "MX", "VP", "ST", "DRAM"}
    xs = [e for e in tr["traceEvents"] if e["ph"] == "X"]
    last_end: dict = {}
    for e in xs:
        assert {"name", "cat", "ts", "dur", "pid", "tid", "args"} <= set(e) and e["tid"] in named
        assert e["dur"] >= 0 and {"pc", "layer", "bytes", "macs"} <= set(e["args"])
        assert e["ts"] >= last_end.get(e["tid"], 0) - 1e-9            # monotone, non-overlapping per track
        last_end[e["tid"]] = e["ts"] + e["dur"]
    counters = [e for e in tr["traceEvents"] if e["ph"] == "C"]
    assert {c["name"] for c in counters} == {"DRAM bandwidth", "UB occupancy"}
    return xs, counters


def test_chrome_trace_structure():
    w, r = _run()
    xs, counters = _check_trace(chrome_trace(CFG, w.program, r))
    engine_events = [e for e in xs if e["tid"] != TIDS["DRAM"]]
    assert len(engine_events) == len(w.program.instructions)
    assert sorted(e["args"]["pc"] for e in engine_events) == list(range(len(w.program.instructions)))
    assert sum(e["args"]["macs"] for e in xs) == 256 * 192 * 128
    g = next(e for e in xs if e["name"] == "GEMM" and e["args"]["pc"] > 5)
    assert g["args"]["semaphores"].keys() == {"wait", "signal"} and g["cat"].startswith("gemm")
    dma = [e for e in xs if e["tid"] == TIDS["DRAM"]]
    assert len(dma) == sum(1 for i in w.program.instructions if i.op in ("LOAD", "STORE"))
    assert max(c["args"].get("GB/s", 0) for c in counters) == pytest.approx(32.0)
    ub = [c["args"]["bytes"] for c in counters if c["name"] == "UB occupancy"]
    assert ub[-1] == 0 and max(ub) > 0
    assert xs[-1]["ts"] <= r.cycles / 1000


def test_chrome_trace_coalescing():
    w, r = _run()
    full = chrome_trace(CFG, w.program, r)
    small = chrome_trace(CFG, w.program, r, coalesce_above=10)
    xs, _ = _check_trace(small)
    n_full = sum(e["ph"] == "X" for e in full["traceEvents"])
    assert len(xs) < n_full / 4
    assert sum(e["args"].get("count", 1) for e in xs) == n_full
    assert sum(e["args"]["macs"] for e in xs) == 256 * 192 * 128
    assert chrome_trace(CFG, w.program, r, coalesce_above=10 ** 6) == full

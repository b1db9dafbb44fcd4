"""examples/npu_tour.py: quantize with calibration data, lower for the custom target, run it, read the
simulator's report and trace; one command. Checked against the JSON files it wrote, read independently."""

import json
from collections import defaultdict

import numpy as np
import pytest

from .conftest import EXAMPLES, run_script

pytestmark = [pytest.mark.e2e]


def test_npu_tour(tmp_path):
    done = run_script(EXAMPLES / "npu_tour.py", "--out", tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    report = json.loads((tmp_path / "npu_report.json").read_text())
    trace = json.loads((tmp_path / "npu_trace.json").read_text())
    s = report["summary"]
    assert f"cycles {s['cycles']} ({s['time_us']:.1f} us)" in out
    assert f"DRAM bytes {s['dram']['bytes_total']} = " in out
    assert f"energy {s['energy_pj']['total'] / 1e6:.3f} uJ" in out
    # the slowest layer it names is the one with the most cycles
    slowest = max((x for x in report["layers"] if x["op_type"] != "FINISH"), key=lambda x: x["cycles"])
    assert f"{slowest['layer'][-44:]:<44} {slowest['op_type']:<8} {slowest['cycles']:>7} cycles" in out
    # per-engine time read from the trace agrees with the simulator's per-engine counters of each segment:
    # the matrix unit's instruction time is its busy cycles; the load engine's includes its DRAM waits
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name"}
    process = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"]
               if e["ph"] == "M" and e["name"] == "process_name"}
    busy = defaultdict(float)
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            busy[(process[e["pid"]], names[(e["pid"], e["tid"])])] += e["dur"]
    for segment in report["segments"]:
        engines, mhz = segment["report"]["summary"]["engines"], segment["report"]["config"]["clock_mhz"]
        key = f"NPU-1 {segment['name']}"
        assert busy[(key, "MX")] * mhz == pytest.approx(engines["MX"]["busy"], abs=1e-6)
        assert busy[(key, "LD")] * mhz == pytest.approx(engines["LD"]["busy"] + engines["LD"]["dram_wait"],
                                                        abs=1e-6)
        assert f"{key}: LD {busy[(key, 'LD')]:.3f} us, MX {busy[(key, 'MX')]:.3f} us" in out
    # the NPU and the host cpu target run the same int8 arithmetic: identical outputs
    with np.load(tmp_path / "npu_outputs.npz") as npu, np.load(tmp_path / "cpu_outputs.npz") as cpu:
        assert npu.files == cpu.files and all(np.array_equal(npu[k], cpu[k]) for k in npu.files)
    assert "NPU vs cpu max abs difference 0" in out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install 'lowering[report]'" in out
    else:
        assert (tmp_path / "npu_report.html").stat().st_size > 10_000

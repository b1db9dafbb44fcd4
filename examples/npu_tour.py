"""Quantize a model with calibration data, lower it for the simulated accelerator (target custom), run it,
and read what the simulator reports: one command.

    python examples/npu_tour.py                     # the bundled CNN, files in out/npu
    python examples/npu_tour.py --model M.onnx --calibration CAL.npz --inputs IN.npz --out DIR

It runs, and prints, the same steps as these commands (each one works on its own):

    lower M.onnx --target cpu,custom --quantize int8 --calibration CAL.npz -o DIR/model.int8.lwr
    lower run DIR/model.int8.lwr --target custom --inputs IN.npz --output DIR/npu_outputs.npz \\
        --report DIR/npu_report.json --trace DIR/npu_trace.json
    lower run DIR/model.int8.lwr --target cpu --inputs IN.npz --output DIR/cpu_outputs.npz
    lower report DIR/model.int8.lwr --run-report DIR/npu_report.json --trace DIR/npu_trace.json \\
        -o DIR/npu_report.html                      # needs matplotlib: pip install 'lowering[report]'

then reads the two JSON files the way a script of yours would: the run's totals (cycles, MAC utilisation,
DRAM traffic against the compulsory minimum, energy), the slowest layers and what bounds them, the NPU
and host outputs side by side (the same int8 arithmetic: they agree bit for bit), and, from the Chrome
trace (open it in ui.perfetto.dev or chrome://tracing), the time each engine of the accelerator was busy.
Exit status 1 if the NPU and host outputs differ.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source tree

from lowering.cli import main as lower  # noqa: E402


def step(title: str, args: list) -> None:
    """Print the command, then run it as ``lower`` would (exit on failure with its status)."""
    args = [str(a) for a in args]
    print(f"\n== {title}\n$ lower {' '.join(shlex.quote(a) for a in args)}", flush=True)
    code = lower(args)
    if code != 0:
        sys.exit(code)


def engine_busy_us(trace: dict) -> dict[str, dict[str, float]]:
    """Per trace process (an NPU segment, or the host), the microseconds each thread (engine) spent in its
    complete ("X") events: for the NPU, instruction time including DRAM waits."""
    processes, threads = {}, {}
    for e in trace["traceEvents"]:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[e["pid"]] = e["args"]["name"]
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e["pid"], e["tid"])] = e["args"]["name"]
    busy: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in trace["traceEvents"]:
        if e.get("ph") == "X":
            process = processes.get(e["pid"], str(e["pid"]))
            busy[process][threads.get((e["pid"], e["tid"]), str(e["tid"]))] += e.get("dur", 0.0)
    return {p: dict(t) for p, t in busy.items()}


def summarise(report: dict, trace: dict, top: int = 5) -> list[str]:
    s = report["summary"]
    dram, energy = s["dram"], s["energy_pj"]
    lines = [f"cycles {s['cycles']} ({s['time_us']:.1f} us), mac_util {100 * s['mac_util']:.1f}%, "
             f"useful MACs {s['macs_useful']}",
             f"DRAM bytes {dram['bytes_total']} = {dram['bytes_total'] / dram['compulsory_bytes']:.2f}x the "
             f"compulsory {dram['compulsory_bytes']} (every weight and input read once, output written once)",
             f"energy {energy['total'] / 1e6:.3f} uJ, {energy['pj_per_mac']:.2f} pJ/MAC; DRAM "
             f"{100 * energy['dram'] / energy['total']:.0f}% of it",
             f"operators on the NPU {report['operators']['npu']}, on the host {report['operators']['host']}",
             f"slowest {top} layers:"]
    layers = [layer for layer in report["layers"] if layer["op_type"] != "FINISH"]
    for layer in sorted(layers, key=lambda x: -x["cycles"])[:top]:
        moved = layer["dram_read_bytes"] + layer["dram_write_bytes"]
        lines.append(f"  {layer['layer'][-44:]:<44} {layer['op_type']:<8} {layer['cycles']:>7} cycles "
                     f"{layer['bound'] + '-bound':<13} (roofline {layer['roofline_cycles']}), mac_util "
                     f"{100 * layer['mac_util']:5.1f}%, DRAM {moved} B")
    lines.append(f"trace: {len(trace['traceEvents'])} events; busy time per engine:")
    for process, engines in engine_busy_us(trace).items():
        shown = ", ".join(f"{name} {us:.3f} us" for name, us in engines.items() if us > 0)
        lines.append(f"  {process}: {shown}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "examples" / "cnn.onnx")
    parser.add_argument("--calibration", type=Path, default=ROOT / "examples" / "cnn_calibration.npz")
    parser.add_argument("--inputs", type=Path, default=ROOT / "examples" / "cnn_input.npz")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "npu")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    artifact = out / "model.int8.lwr"
    report_json, trace_json = out / "npu_report.json", out / "npu_trace.json"
    step("1. quantize (int8, calibrated) and lower for the NPU-1 and the host cpu",
         [args.model, "--target", "cpu,custom", "--quantize", "int8", "--calibration", args.calibration,
          "-o", artifact])
    step("2. run it on the simulated NPU-1, writing the simulator's report and trace",
         ["run", artifact, "--target", "custom", "--inputs", args.inputs, "--output", out / "npu_outputs.npz",
          "--report", report_json, "--trace", trace_json])
    step("3. run the same artifact's cpu target on the same inputs",
         ["run", artifact, "--target", "cpu", "--inputs", args.inputs, "--output", out / "cpu_outputs.npz"])
    print("\n== 4. read the report and the trace")
    report, trace = json.loads(report_json.read_text()), json.loads(trace_json.read_text())
    for line in summarise(report, trace):
        print(line)
    same = True
    with np.load(out / "npu_outputs.npz") as npu, np.load(out / "cpu_outputs.npz") as cpu:
        for name in npu.files:
            diff = float(np.max(np.abs(npu[name].astype(np.float64) - cpu[name]))) if npu[name].size else 0.0
            same &= diff == 0.0
            print(f"output {name}: NPU vs cpu max abs difference {diff:g}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("\n(the HTML report needs matplotlib: pip install 'lowering[report]')")
    else:
        step("5. one HTML page with all of it (graph, passes, memory, layers, roofline, energy)",
             ["report", artifact, "--run-report", report_json, "--trace", trace_json, "-o",
              out / "npu_report.html"])
    print(f"\nopen {trace_json} in ui.perfetto.dev or chrome://tracing to see every instruction")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""``lower bench``: an artifact against ONNX Runtime on the same inputs, in the same process, interleaved.

Both sides get the same intra-op thread count (ONNX Runtime: ``intra_op_num_threads``, sequential
execution, ORT_ENABLE_ALL; the artifact: ``runtime.load(threads=N)``). After a warm-up, the sides alternate
so drifting machine load hits both alike, until each side has at least ``min_repeats`` runs and
``min_seconds`` of measurements (or ``max_repeats``). Reported: median, p90, mean and spread per side, and
the speed-up (ONNX Runtime median / artifact median; > 1 means faster) and the same ratio of the p90s (the
tail). Nothing on the artifact's side uses numpy's BLAS: every kernel runs in the library, its OpenMP
regions on exactly ``threads`` threads (``lw_run``'s thread count).

How the sides alternate (``interleave``): ``block`` (default) runs a block of about ``block_seconds`` of one
side, then of the other, and times a block's runs only after ``settle_seconds`` of untimed runs. Both
runtimes keep their idle worker threads spinning for a while after a parallel region (libgomp's
``GOMP_SPINCOUNT``, ONNX Runtime's thread-pool spinning), which is what a serving process running one of
them wants; with more than one thread, alternating every run makes each side's spinning threads take cores
from the other's next run, a contention no application running one of them sees (measured on 2 cores: up
to 2x slower runs on both sides). ``run`` alternates every run (fine at one thread).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LoweringError


@dataclass(frozen=True)
class BenchConfig:
    threads: int = 1
    warmup: int = 3
    min_repeats: int = 10
    max_repeats: int = 1000
    min_seconds: float = 2.0
    interleave: str = "block"  # "block" | "run"
    block_seconds: float = 0.25
    settle_seconds: float = 0.03

    def __post_init__(self):
        if self.interleave not in ("block", "run"):
            raise LoweringError(f"--interleave must be block or run, got {self.interleave!r}")
        if self.threads < 1:
            raise LoweringError(f"--threads must be >= 1, got {self.threads}")
        if self.min_repeats < 1 or self.max_repeats < self.min_repeats:
            raise LoweringError("--repeats must be >= 1")


def _stats(samples: list[float]) -> dict:
    ms = np.asarray(samples) * 1e3
    return {"runs": int(ms.size), "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()),
            "spread_pct": float((np.percentile(ms, 75) - np.percentile(ms, 25)) / np.median(ms) * 100)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark(session, model: Path, feed: dict, config: BenchConfig) -> dict:
    """Time ``session`` (a runtime.Session built with ``threads=config.threads``) against ONNX Runtime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        reference = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for unreadable models
        raise LoweringError(f"{model}: ONNX Runtime could not load it: {str(exc).strip()}") from None
    sides = {"lowering": lambda: session.run(None, feed), "onnxruntime": lambda: reference.run(None, feed)}
    estimate = {}
    for name, run in sides.items():
        t0 = time.perf_counter()
        for _ in range(config.warmup):
            run()
        estimate[name] = (time.perf_counter() - t0) / max(config.warmup, 1)
    samples: dict[str, list[float]] = {name: [] for name in sides}
    if config.interleave == "run":
        per_block = {name: 1 for name in sides}
        settle = {name: 0.0 for name in sides}
    else:  # equal wall time per block for both sides, at least one timed run each
        cap = max(1, config.max_repeats // 10)  # at least ten rounds before max_repeats
        per_block = {name: min(cap, max(1, int(config.block_seconds / max(t, 1e-7))))
                     for name, t in estimate.items()}
        settle = {name: config.settle_seconds for name in sides}
    started = time.perf_counter()
    while True:
        for name, run in sides.items():
            t_settle = time.perf_counter()
            while time.perf_counter() - t_settle < settle[name]:  # the other side's threads go quiet
                run()
            for _ in range(per_block[name]):
                t0 = time.perf_counter()
                run()
                samples[name].append(time.perf_counter() - t0)
        count = min(len(s) for s in samples.values())
        if count >= config.max_repeats:
            break
        if count >= config.min_repeats and time.perf_counter() - started >= 2 * config.min_seconds:
            break
    result = {name: _stats(s) for name, s in samples.items()}
    return {
        "model": str(model), "target": session.target, "threads": config.threads,
        "interleave": config.interleave,
        "inputs": {i.name: list(i.shape) for i in session.inputs},
        "lowering": result["lowering"], "onnxruntime": result["onnxruntime"],
        "speedup": result["onnxruntime"]["median_ms"] / result["lowering"]["median_ms"],
        "speedup_p90": result["onnxruntime"]["p90_ms"] / result["lowering"]["p90_ms"],
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count()},
        "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__},
    }


def format_result(result: dict) -> str:
    lines = [f"{result['model']} on {result['target']}, {result['threads']} thread(s), "
             f"{result['machine']['cpu']}"]
    for name in ("lowering", "onnxruntime"):
        s = result[name]
        lines.append(f"  {name:<12} median {s['median_ms']:9.3f} ms  p90 {s['p90_ms']:9.3f} ms  "
                     f"(IQR {s['spread_pct']:.1f}% of median, {s['runs']} runs)")
    lines.append(f"  speed-up vs ONNX Runtime: {result['speedup']:.2f}x (p90: {result['speedup_p90']:.2f}x)")
    return "\n".join(lines)


#: The rows of a simulated comparison: (label, path into the custom executor's report summary)
SIMULATED_ROWS = (
    ("cycles", ("cycles",)), ("time (us)", ("time_us",)), ("mac_util", ("mac_util",)),
    ("DRAM read bytes", ("dram", "read_bytes")), ("DRAM write bytes", ("dram", "write_bytes")),
    ("DRAM bytes", ("dram", "bytes_total")), ("compulsory bytes", ("dram", "compulsory_bytes")),
    ("DRAM / compulsory", ("dram", "ratio_to_compulsory")), ("energy (uJ)", ("energy_pj", "total")),
    ("DRAM energy (uJ)", ("energy_pj", "dram")),
)


def simulated(sessions: dict, feed: dict) -> dict:
    """Run each session (``{label: runtime.Session}``, targets with a simulator report such as ``custom``)
    once on ``feed`` and collect the report summaries side by side. Simulated numbers are deterministic:
    one run is the measurement. Energies are in pJ in the reports, converted to uJ here."""
    result: dict = {"inputs": None, "artifacts": {}}
    for label, sess in sessions.items():
        outputs = sess.run(None, feed)
        report = sess.last_report
        if report is None:
            raise LoweringError(f"{label}: target '{sess.target}' has no simulator report; "
                                f"--baseline compares custom-target artifacts")
        summary = report["summary"]
        row = {}
        for name, path in SIMULATED_ROWS:
            value = summary
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            row[name] = value / 1e6 if value is not None and "energy" in name else value
        result["artifacts"][label] = {"target": sess.target, "summary": row,
                                      "outputs": [o.tolist() for o in outputs]}
        result["inputs"] = {i.name: list(i.shape) for i in sess.inputs}
    outs = [a.pop("outputs") for a in result["artifacts"].values()]
    result["outputs_equal"] = all(o == outs[0] for o in outs)
    return result


def format_simulated(result: dict) -> str:
    labels = list(result["artifacts"])
    width = max(14, *(len(x) for x in labels))
    lines = [f"{'':<20}" + "".join(f"{x:>{width + 2}}" for x in labels)]
    for name, _ in SIMULATED_ROWS:
        cells = []
        for x in labels:
            v = result["artifacts"][x]["summary"][name]
            cells.append("-" if v is None else f"{v:,.3f}" if isinstance(v, float) else f"{v:,}")
        lines.append(f"{name:<20}" + "".join(f"{c:>{width + 2}}" for c in cells))
    lines.append(f"outputs equal: {'yes' if result['outputs_equal'] else 'NO'}")
    return "\n".join(lines)


#: relative half-width of a median's ~95% confidence interval per (IQR / median) / sqrt(runs): the
#: boxplot notch (McGill, Tukey and Larsen 1978)
_NOTCH = 1.57


def parse_margin(text: str) -> float:
    """``--max-regression``: "5%" or "5" (percent) -> 0.05."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1] if raw.endswith("%") else raw) / 100
    except ValueError:
        value = -1.0
    if not 0 <= value < 10:
        raise LoweringError(f"--max-regression {text!r}: give a percentage such as 5% (0 to 1000)")
    return value


def load_baseline(path: Path) -> dict:
    """A previous ``lower bench --json`` result, checked enough to gate on."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise LoweringError(f"{path}: cannot read the baseline ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoweringError(f"{path}: the baseline is not JSON ({exc})") from None
    for side in ("lowering", "onnxruntime"):
        s = data.get(side) if isinstance(data, dict) else None
        ok = isinstance(s, dict) and all(isinstance(s.get(k), (int, float)) for k in
                                         ("median_ms", "spread_pct", "runs"))
        if not ok or not s["median_ms"] > 0 or not s["runs"] >= 1:
            raise LoweringError(f"{path}: not a `lower bench --json` result (no usable '{side}' median_ms, "
                                "spread_pct and runs)")
    return data


def _median_uncertainty(stats: dict) -> float:
    """Relative half-width of the ~95% interval of a side's median."""
    return _NOTCH * max(float(stats["spread_pct"]), 0.0) / 100 / max(float(stats["runs"]), 1.0) ** 0.5


def regression_gate(result: dict, baseline: dict, max_regression: float) -> dict:
    """Compare a bench result with a previous one (``load_baseline``).

    The primary measure is the artifact's time relative to ONNX Runtime measured in the same run
    (``lowering median / onnxruntime median``): CI runs land on different machines, and the ratio cancels
    most of a machine's speed. ``change`` is how much that ratio grew (0.08: 8% slower relative to ONNX
    Runtime). The noise is the combined ~95% interval of the four medians (each: 1.57 x IQR / median /
    sqrt(runs), the boxplot notch), added in quadrature. The gate fails when ``change`` exceeds both the
    margin and the noise: a slowdown beyond the margin that the measurement can tell from noise. The
    absolute medians are compared too, for information (meaningful only on the same machine).
    """
    for key in ("threads", "target"):
        if key in baseline and baseline[key] != result[key]:
            raise LoweringError(f"the baseline was measured with {key} {baseline[key]!r}, this run with "
                                f"{result[key]!r}; they are not comparable")
    if "inputs" in baseline and baseline["inputs"] != result["inputs"]:
        raise LoweringError(f"the baseline's input shapes {baseline['inputs']} differ from this run's "
                            f"{result['inputs']}; they are not comparable")
    now, base = result, baseline
    rel_now = now["lowering"]["median_ms"] / now["onnxruntime"]["median_ms"]
    rel_base = base["lowering"]["median_ms"] / base["onnxruntime"]["median_ms"]
    change = rel_now / rel_base - 1
    noise = sum(_median_uncertainty(r[side]) ** 2 for r in (now, base)
                for side in ("lowering", "onnxruntime")) ** 0.5
    notes = []
    if noise > max_regression:
        notes.append(f"the measurement noise ({100 * noise:.1f}%) exceeds the margin; only slowdowns beyond "
                     "the noise fail (raise --min-seconds for a tighter gate)")
    versions = (base.get("versions") or {}).get("onnxruntime"), (now.get("versions") or {}).get("onnxruntime")
    if versions[0] and versions[0] != versions[1]:
        notes.append(f"ONNX Runtime changed ({versions[0]} -> {versions[1]}): the reference moved too")
    same_machine = (base.get("machine") or {}).get("cpu") == (now.get("machine") or {}).get("cpu")
    if not same_machine:
        notes.append("different CPU than the baseline's: the absolute times are not comparable")
    regressed = change > max_regression and change > noise
    return {
        "passed": not regressed, "max_regression": max_regression,
        "relative_to_onnxruntime": {"baseline": rel_base, "current": rel_now, "change": change},
        "noise": noise,
        "spread_pct": {"current": {s: now[s]["spread_pct"] for s in ("lowering", "onnxruntime")},
                       "baseline": {s: base[s]["spread_pct"] for s in ("lowering", "onnxruntime")}},
        "absolute": {"baseline_ms": base["lowering"]["median_ms"], "current_ms": now["lowering"]["median_ms"],
                     "change": now["lowering"]["median_ms"] / base["lowering"]["median_ms"] - 1,
                     "same_machine": same_machine},
        "notes": notes,
    }


def format_gate(gate: dict, baseline_path) -> str:
    rel, ab, sp = gate["relative_to_onnxruntime"], gate["absolute"], gate["spread_pct"]
    lines = [
        f"gate vs {baseline_path} (max regression {100 * gate['max_regression']:.1f}%):",
        f"  time relative to ONNX Runtime: {rel['baseline']:.3f} -> {rel['current']:.3f} "
        f"({100 * rel['change']:+.1f}%, noise +-{100 * gate['noise']:.1f}%)",
        f"  spreads (IQR % of median): baseline lowering {sp['baseline']['lowering']:.1f}%, onnxruntime "
        f"{sp['baseline']['onnxruntime']:.1f}%; now lowering {sp['current']['lowering']:.1f}%, onnxruntime "
        f"{sp['current']['onnxruntime']:.1f}%",
        f"  absolute median: {ab['baseline_ms']:.3f} -> {ab['current_ms']:.3f} ms ({100 * ab['change']:+.1f}%"
        + (")" if ab["same_machine"] else ", another machine)"),
        *(f"  note: {n}" for n in gate["notes"]),
        "  PASS" if gate["passed"] else
        f"  FAIL: {100 * rel['change']:.1f}% slower relative to ONNX Runtime than the baseline",
    ]
    return "\n".join(lines)

"""Executor for the custom target: a quantized model on the simulated NPU-1 accelerator (ACCELERATOR.md B),
with the layers it cannot run compiled for the host CPU (``targets/custom``).

The manifest entry (``manifest["targets"]["custom"]``)::

    {"kind": "custom", "format": 1,
     "config": "custom/config.json",              member: the AccelConfig JSON the programs are bound to
     "steps": [                                   executed in order
        {"kind": "npu", "name": "npu0", "program": "custom/npu0.npu",   member: a packed NPU-1 Program
         "inputs": [value, ...], "outputs": [value, ...]},              names in its tensor table
        {"kind": "host", "name": "host0", "entry": {<a cpu-target entry, members under custom/host0/>},
         "inputs": [...], "outputs": [...]}],     in the order of entry["signature"]
     "inputs": [value, ...], "outputs": [value, ...],   the values bound to the session inputs / outputs
     "signature": {"inputs": [{"name", "dtype", "shape"}], "outputs": [...]},
     "requires": {...}}                           host requirements (as a cpu entry's), absent without host

Values flow between steps by name as plain numpy arrays (logical shapes). An NPU step runs on a fresh DRAM
(the program's constant image), its inputs packed at their tensor-table offsets in the B.1 blocked layout
(:mod:`runtime.accel.layout`), through :func:`runtime.accel.simulator.simulate`; its outputs are unpacked
from DRAM after it. A host step runs a :class:`~.cpu.CpuExecutor` built at load.

Everything checkable is checked at load (:class:`~runtime.errors.RuntimeLoadError` naming the member or
step): members present, config valid, programs unpack against the config (format, checksum, config hash),
tensor tables well formed and inside DRAM, every step input produced before it is read, dtypes and shapes
agreeing between producer and consumer. A step failing at run time (a simulation error, a host failure)
raises :class:`CustomStepError` (a ``RuntimeError``) naming the step; the process never dies.

After each run, :attr:`CustomExecutor.last_report` holds the B.7 report of every NPU step and their totals
(see :meth:`CustomExecutor._combine`); :meth:`CustomExecutor.trace` the Chrome trace of the last run.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass

import numpy as np

from ..accel import layout
from ..accel.config import AccelConfig
from ..accel.energy import BREAKDOWN_KEYS
from ..accel.errors import AccelError
from ..accel.program import Program, unpack
from ..accel.report import build_report, chrome_trace, wall_section
from ..accel.simulator import simulate
from ..accel.timing import TimingResult
from ..errors import InvalidArtifactError, RuntimeLoadError, TargetUnavailableError
from .cpu import CpuExecutor

FORMAT = 1


class CustomStepError(RuntimeError):
    """A step of the custom target failed while running (the message names the step)."""


@dataclass
class _Value:
    """What a named value is: dtype, shape and who produces it (for load-time checks)."""

    dtype: str
    shape: tuple
    producer: str
    info: object = None          # the producing NPU tensor's TensorInfo (quantisation), if any


@dataclass
class _NpuStep:
    name: str
    member: str
    program: Program
    inputs: list
    outputs: list
    tensors: dict
    timing: TimingResult | None = None     # cached: the timing model is data-independent
    report: dict | None = None             # cached: the B.7 report (less "wall") depends on timing only


@dataclass
class _HostStep:
    name: str
    executor: CpuExecutor
    inputs: list
    outputs: list
    out_specs: list              # (dtype, shape) per output
    operators: int | None = None   # ONNX nodes it runs, when the step lists them ("nodes")


def _spec(t: dict, where: str) -> tuple[str, str, tuple]:
    try:
        return str(t["name"]), str(np.dtype(t["dtype"])), tuple(int(d) for d in t["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RuntimeLoadError(f"custom target: {where}: malformed tensor {t!r} ({exc})") from None


class CustomExecutor:
    """Runs the custom target of an artifact (NPU-1 simulation + host steps). Not thread-safe: the session
    serialises calls."""

    kind = "custom"

    @staticmethod
    def check_requirements(entry: dict) -> str | None:
        """Why this machine cannot run the host steps (None when it can). The NPU is simulated: no needs."""
        requires = entry.get("requires")
        if requires:
            reason = CpuExecutor.check_requirements({"requires": requires})
            if reason:
                return f"host steps: {reason}"
        for step in entry.get("steps", []) if isinstance(entry.get("steps"), list) else []:
            if isinstance(step, dict) and step.get("kind") == "host" and isinstance(step.get("entry"), dict):
                reason = CpuExecutor.check_requirements(step["entry"])
                if reason:
                    return f"host step {step.get('name', '?')}: {reason}"
        return None

    def __init__(self, entry: dict, read_member, threads: int | None = None):
        reason = self.check_requirements(entry)
        if reason is not None:
            raise TargetUnavailableError(f"custom target: {reason}")
        fmt = entry.get("format")
        if not isinstance(fmt, int) or fmt > FORMAT:
            raise RuntimeLoadError(f"custom target: entry format {fmt!r} is not supported (this runtime "
                                   f"reads format {FORMAT}; upgrade the runtime)")
        self._read = read_member
        self.cfg = self._load_config(entry)
        self.last_report: dict | None = None
        self._last_results: list | None = None
        sig = entry.get("signature") or {}
        in_specs = [_spec(t, "signature input") for t in sig.get("inputs", [])]
        out_specs = [_spec(t, "signature output") for t in sig.get("outputs", [])]
        self.input_names = self._names(entry, "inputs", len(in_specs))
        self.output_names = self._names(entry, "outputs", len(out_specs))
        self._in_specs = [(d, s) for _, d, s in in_specs]
        self._out_specs = [(d, s) for _, d, s in out_specs]
        values: dict[str, _Value] = {}
        for name, (dtype, shape) in zip(self.input_names, self._in_specs):
            if name in values:
                raise RuntimeLoadError(f"custom target: input value '{name}' is listed twice")
            values[name] = _Value(dtype, shape, "the session input")
        steps = entry.get("steps")
        if not isinstance(steps, list) or not steps:
            raise RuntimeLoadError("custom target: the entry lists no steps")
        self.steps: list = []
        seen: set[str] = set()
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                raise RuntimeLoadError(f"custom target: step {i} is not an object")
            name = str(step.get("name") or f"step{i}")
            if name in seen:
                raise RuntimeLoadError(f"custom target: two steps are named '{name}'")
            seen.add(name)
            kind = step.get("kind")
            if kind == "npu":
                self.steps.append(self._load_npu(name, step, values))
            elif kind == "host":
                self.steps.append(self._load_host(name, step, values, threads))
            else:
                raise RuntimeLoadError(f"custom target: step '{name}' has unknown kind {kind!r} (npu or "
                                       "host)")
        for name, (dtype, shape) in zip(self.output_names, self._out_specs):
            v = values.get(name)
            if v is None:
                raise RuntimeLoadError(f"custom target: output value '{name}' is produced by no step")
            if (v.dtype, v.shape) != (dtype, shape):
                raise RuntimeLoadError(f"custom target: output value '{name}' is {v.dtype}{list(v.shape)} "
                                       f"from {v.producer}, the signature says {dtype}{list(shape)}")
        self.operators = self._operator_counts(steps)

    # ---- load -------------------------------------------------------------------------------------------
    def _member(self, name, what: str) -> bytes:
        if not isinstance(name, str) or not name:
            raise RuntimeLoadError(f"custom target: {what}: no member named")
        try:
            return self._read(name)
        except InvalidArtifactError as exc:
            raise RuntimeLoadError(f"custom target: {what}: member '{name}' is missing ({exc})") from None

    def _load_config(self, entry: dict) -> AccelConfig:
        member = entry.get("config")
        raw = self._member(member, "accelerator config")
        try:
            return AccelConfig.from_dict(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RuntimeLoadError(f"custom target: member '{member}' is not valid JSON ({exc})") from None
        except (AccelError, TypeError, ValueError) as exc:
            raise RuntimeLoadError(f"custom target: member '{member}' is not a valid NPU-1 config ({exc})") \
                from None

    @staticmethod
    def _names(entry: dict, key: str, count: int) -> list[str]:
        names = entry.get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RuntimeLoadError(f"custom target: '{key}' is missing or not a list of value names")
        if len(names) != count:
            raise RuntimeLoadError(f"custom target: {len(names)} {key} named but the signature has {count}")
        return list(names)

    @staticmethod
    def _step_names(name: str, step: dict, key: str) -> list[str]:
        names = step.get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RuntimeLoadError(f"custom target: step '{name}': '{key}' is missing or not a list of names")
        return list(names)

    @staticmethod
    def _consume(values: dict, step: str, value: str, dtype: str, shape: tuple, info=None) -> None:
        v = values.get(value)
        if v is None:
            raise RuntimeLoadError(f"custom target: step '{step}' reads value '{value}', which no earlier "
                                   "step or session input produces")
        if (v.dtype, v.shape) != (dtype, tuple(shape)):
            raise RuntimeLoadError(f"custom target: step '{step}' reads '{value}' as {dtype}{list(shape)} "
                                   f"but {v.producer} gives {v.dtype}{list(v.shape)}")
        if info is not None and v.info is not None and (
                int(v.info.zero_point) != int(info.zero_point)
                or not np.isclose(float(v.info.scale), float(info.scale), rtol=1e-6, atol=0.0)):
            raise RuntimeLoadError(f"custom target: step '{step}' reads '{value}' with scale {info.scale:g} "
                                   f"/ zero point {info.zero_point} but {v.producer} writes it with scale "
                                   f"{v.info.scale:g} / zero point {v.info.zero_point}")

    @staticmethod
    def _produce(values: dict, step: str, value: str, dtype: str, shape: tuple, info=None) -> None:
        if value in values:
            raise RuntimeLoadError(f"custom target: step '{step}' writes value '{value}', already produced "
                                   f"by {values[value].producer}")
        values[value] = _Value(dtype, tuple(shape), f"step '{step}'", info)

    def _load_npu(self, name: str, step: dict, values: dict) -> _NpuStep:
        member = step.get("program")
        data = self._member(member, f"step '{name}'")
        try:
            program = unpack(data, self.cfg)
        except AccelError as exc:
            raise RuntimeLoadError(f"custom target: step '{name}': member '{member}': {exc}") from None
        size = program.total_dram_bytes()
        tensors = {}
        for t in program.tensors:
            try:
                info = layout.check_info(t)
            except layout.LayoutError as exc:
                raise RuntimeLoadError(f"custom target: step '{name}': member '{member}': {exc}") from None
            end = info.dram_offset + layout.nbytes(info)
            if end > size:
                raise RuntimeLoadError(f"custom target: step '{name}': member '{member}': tensor "
                                       f"'{info.name}' ends at DRAM byte {end}, beyond the program's {size} "
                                       "bytes")
            tensors[info.name] = info
        ins, outs = self._step_names(name, step, "inputs"), self._step_names(name, step, "outputs")
        for value in ins + outs:
            if value not in tensors:
                raise RuntimeLoadError(f"custom target: step '{name}': value '{value}' is not in the tensor "
                                       f"table of member '{member}' (it has: {', '.join(sorted(tensors))})")
        for value in ins:
            self._consume(values, name, value, "int8", tuple(tensors[value].shape), tensors[value])
        for value in outs:
            self._produce(values, name, value, "int8", tuple(tensors[value].shape), tensors[value])
        return _NpuStep(name, member, program, ins, outs, tensors)

    def _load_host(self, name: str, step: dict, values: dict, threads) -> _HostStep:
        entry = step.get("entry")
        if not isinstance(entry, dict):
            raise RuntimeLoadError(f"custom target: step '{name}' has no host entry")
        for key in ("library", "weights"):
            self._member(entry.get(key), f"step '{name}' ({key})")
        try:
            executor = CpuExecutor(entry, self._read, threads=threads)
        except RuntimeLoadError as exc:
            raise type(exc)(f"custom target: step '{name}': {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise RuntimeLoadError(f"custom target: step '{name}': malformed host entry ({exc})") from None
        sig = entry.get("signature") or {}
        in_specs = [_spec(t, f"step '{name}'") for t in sig.get("inputs", [])]
        out_specs = [_spec(t, f"step '{name}'") for t in sig.get("outputs", [])]
        ins, outs = self._step_names(name, step, "inputs"), self._step_names(name, step, "outputs")
        if len(ins) != len(in_specs) or len(outs) != len(out_specs):
            raise RuntimeLoadError(f"custom target: step '{name}' names {len(ins)} inputs / {len(outs)} "
                                   f"outputs but its host signature has {len(in_specs)} / {len(out_specs)}")
        for value, (_, dtype, shape) in zip(ins, in_specs):
            self._consume(values, name, value, dtype, shape)
        for value, (_, dtype, shape) in zip(outs, out_specs):
            self._produce(values, name, value, dtype, shape)
        nodes = step.get("nodes")
        return _HostStep(name, executor, ins, outs, [(d, s) for _, d, s in out_specs],
                         len(nodes) if isinstance(nodes, list) else None)

    def _operator_counts(self, steps: list) -> dict:
        npu = 0
        for s in self.steps:
            if isinstance(s, _NpuStep):
                layers = s.program.meta.get("layers")
                if not isinstance(layers, dict):
                    layers = {x for x in s.program.layers or [] if x}
                npu += len(layers)
        host = None
        hosts = [st for st in steps if st.get("kind") == "host"]
        if all(isinstance(st.get("nodes"), list) for st in hosts):
            host = sum(len(st["nodes"]) for st in hosts)
        return {"npu": npu, "host": host}

    # ---- run --------------------------------------------------------------------------------------------
    def run(self, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> None:
        """Run one inference: read ``inputs`` (signature order), fill the preallocated ``outputs``."""
        self.last_report = None
        self._last_results = None
        if len(inputs) != len(self.input_names):
            raise ValueError(f"custom target: expected {len(self.input_names)} inputs, got {len(inputs)}")
        if len(outputs) != len(self.output_names):
            raise ValueError(f"custom target: expected {len(self.output_names)} outputs, got {len(outputs)}")
        values: dict[str, np.ndarray] = {}
        for i, (name, a, (dtype, shape)) in enumerate(zip(self.input_names, inputs, self._in_specs)):
            a = np.asarray(a)
            if a.dtype != np.dtype(dtype) or tuple(a.shape) != shape:
                raise ValueError(f"custom target: input {i} ('{name}') is {a.dtype}{list(a.shape)}, expected "
                                 f"{dtype}{list(shape)}")
            values[name] = a
        results, hosts = [], []
        for step in self.steps:
            try:
                if isinstance(step, _NpuStep):
                    results.append((step, self._run_npu(step, values)))
                else:
                    hosts.append({"name": step.name, "time_s": self._run_host(step, values)})
            except Exception as exc:   # a step must fail with a message, never take the process down
                kind = "npu" if isinstance(step, _NpuStep) else "host"
                raise CustomStepError(f"custom target: {kind} step '{step.name}' failed: "
                                      f"{type(exc).__name__}: {exc}") from exc
        for i, (name, out) in enumerate(zip(self.output_names, outputs)):
            v = values[name]
            if not isinstance(out, np.ndarray) or out.shape != v.shape or out.dtype != v.dtype:
                raise ValueError(f"custom target: output {i} ('{name}') must be a {v.dtype}{list(v.shape)} "
                                 "array")
            np.copyto(out, v)
        self._last_results = results
        self.last_report = self._combine(results, hosts)

    def _run_npu(self, step: _NpuStep, values: dict) -> tuple:
        dram = step.program.initial_dram()
        for name in step.inputs:
            layout.write(dram, values[name], step.tensors[name])
        res = simulate(self.cfg, step.program, dram, timing_result=step.timing)
        if step.timing is None:
            step.timing = res.timing
        for name in step.outputs:
            values[name] = layout.read(res.dram, step.tensors[name])
        if step.report is None:
            meta = step.program.meta
            step.report = build_report(self.cfg, step.program, res, layer_info=_layer_info(meta),
                                       compulsory_bytes=meta.get("compulsory_bytes"),
                                       capacity_bound_bytes=meta.get("capacity_bound_bytes"))
            step.report.pop("wall")
        report = copy.deepcopy(step.report)   # the caller may keep or change last_report
        report["wall"] = wall_section(report["summary"]["macs_useful"], res.wall_s)
        return res, report

    def _run_host(self, step: _HostStep, values: dict) -> float:
        ins = [np.ascontiguousarray(values[n]) for n in step.inputs]
        outs = [np.empty(shape, dtype) for dtype, shape in step.out_specs]
        t0 = time.perf_counter()
        step.executor.run(ins, outs)
        elapsed = time.perf_counter() - t0
        for name, a in zip(step.outputs, outs):
            values[name] = a
        return elapsed

    # ---- reports ----------------------------------------------------------------------------------------
    def _combine(self, results: list, hosts: list) -> dict:
        """The run report: a function of the artifact and the inputs only, except ``"wall"``::

            {"segments": [{"name", "report"}],   B.7 report of each NPU step (build_report, less its "wall")
             "summary":  totals over the segments: cycles, time_us, macs_useful, mac_slots, mac_util (over
                         the total cycles), dram {read/write/burst/total bytes, compulsory_bytes (when every
                         program's meta has it), ratio_to_compulsory, best_tiling_bytes (searched layers
                         at the exhaustive search's fewest-bytes tiling), ratio_to_best_tiling},
                         energy_pj (breakdown sums, total, pj_per_mac), predicted_cycles /
                         predicted_dram_bytes (compiler meta), config
             "layers":   every layer row of every segment, "name" = "<segment>/<layer>", plus "segment"
                         and "layer"; the compiler's per-layer facts echoed (its "macs": "compiler_macs")
             "host":     [{"name", "inputs", "outputs", "operators"}] per host step
             "operators": {"npu": NPU layers, "host": host ONNX nodes (None unless steps list "nodes")}
             "wall":     host-side times, different every run: {"wall_s", "npu_wall_s", "host_time_s",
                         "host": [{"name", "time_s"}], "segments": [{"name", <build_report's "wall">}]}}
        """
        cfg = self.cfg
        segments = [{"name": step.name, "report": {k: v for k, v in rep.items() if k != "wall"}}
                    for step, (_, rep) in results]
        sums = [s["report"]["summary"] for s in segments]
        cycles = sum(s["cycles"] for s in sums)
        macs = sum(s["macs_useful"] for s in sums)
        slots = sum(s["mac_slots"] for s in sums)
        dram = {k: sum(s["dram"][k] for s in sums) for k in
                ("read_bytes", "write_bytes", "read_bytes_burst", "write_bytes_burst", "bytes_total",
                 "bytes_total_burst", "bus_busy_cycles")}
        comp = [s["dram"]["compulsory_bytes"] for s in sums]
        dram["compulsory_bytes"] = sum(comp) if comp and all(c is not None for c in comp) else None
        dram["ratio_to_compulsory"] = (dram["bytes_total"] / dram["compulsory_bytes"]
                                       if dram["compulsory_bytes"] else None)
        dram["bus_utilisation"] = dram["bus_busy_cycles"] / cycles if cycles else 0.0
        best = [s["dram"].get("best_tiling_bytes") for s in sums]
        dram["best_tiling_bytes"] = sum(b for b in best if b) if any(best) else None
        dram["ratio_to_best_tiling"] = (dram["bytes_total"] / dram["best_tiling_bytes"]
                                        if dram["best_tiling_bytes"] else None)
        energy = {k: sum(s["energy_pj"][k] for s in sums) for k in BREAKDOWN_KEYS}
        energy["pj_per_mac"] = energy["total"] / macs if macs else 0.0
        energy["preset"] = sums[0]["energy_pj"]["preset"] if sums else cfg.energy_preset
        time_us = cycles / cfg.clock_mhz
        host_s = sum(h["time_s"] for h in hosts)
        npu_s = sum(res.wall_s for _, (res, _) in results)
        summary = {
            "segments": len(segments), "cycles": cycles, "time_us": time_us,
            "macs_useful": macs, "mac_slots": slots,
            "mac_util": macs / (cycles * cfg.array_rows * cfg.array_cols) if cycles else 0.0,
            "mapping_efficiency": macs / slots if slots else 0.0,
            "achieved_tops": 2 * macs / time_us / 1e6 if cycles else 0.0,
            "peak_tops": 2 * cfg.array_rows * cfg.array_cols * cfg.clock_mhz / 1e6,
            "dram": dram, "energy_pj": energy,
            "predicted_cycles": _sum_meta(results, "predicted_cycles"),
            "predicted_dram_bytes": _sum_meta(results, "predicted_dram_bytes"),
            "config": cfg.name, "config_hash": cfg.config_hash(),
        }
        layers = []
        for seg in segments:
            for row in seg["report"]["layers"]:
                layers.append({**row, "name": f"{seg['name']}/{row['name']}", "segment": seg["name"],
                               "layer": row["name"]})
        host = [{"name": st.name, "inputs": list(st.inputs), "outputs": list(st.outputs),
                 "operators": st.operators} for st in self.steps if isinstance(st, _HostStep)]
        wall = {"wall_s": npu_s + host_s, "npu_wall_s": npu_s, "host_time_s": host_s, "host": hosts,
                "segments": [{"name": step.name, **rep.get("wall", {})} for step, (_, rep) in results]}
        return {"segments": segments, "summary": summary, "layers": layers, "host": host,
                "operators": dict(self.operators), "wall": wall}

    def trace(self, *, coalesce_above: int | None = None) -> dict | None:
        """The Chrome trace of the last run: one process per NPU step (pid 1, 2, ... in step order), laid
        end to end on the time axis in step order (host steps take their measured wall time in between, on
        a "host" process). None before the first successful run."""
        if self._last_results is None:
            return None
        by_step = {step.name: (step, res) for step, (res, _) in self._last_results}
        timed = (self.last_report or {}).get("wall", {}).get("host", [])
        host_times = {h["name"]: h["time_s"] for h in timed}
        events, offset_us, pid = [], 0.0, 0
        host_pid = len(by_step) + 1
        for step in self.steps:
            if isinstance(step, _HostStep):
                dur = host_times.get(step.name, 0.0) * 1e6
                events.append({"ph": "X", "name": step.name, "cat": "host", "pid": host_pid, "tid": 1,
                               "ts": offset_us, "dur": dur, "args": {"step": step.name}})
                offset_us += dur
                continue
            if step.name not in by_step:
                continue
            pid += 1
            _, res = by_step[step.name]
            tr = chrome_trace(self.cfg, step.program, res, coalesce_above=coalesce_above)
            for ev in tr["traceEvents"]:
                ev = dict(ev, pid=pid)
                if ev.get("ph") == "M" and ev.get("name") == "process_name":
                    ev["args"] = {"name": f"NPU-1 {step.name}"}
                elif "ts" in ev:
                    ev["ts"] = ev["ts"] + offset_us
                events.append(ev)
            offset_us += res.timing.total_cycles / self.cfg.clock_mhz
        if any(isinstance(s, _HostStep) for s in self.steps):
            events[:0] = [{"ph": "M", "name": "process_name", "pid": host_pid, "tid": 0,
                           "args": {"name": "host"}},
                          {"ph": "M", "name": "thread_name", "pid": host_pid, "tid": 1,
                           "args": {"name": "cpu"}}]
        return {"traceEvents": events, "displayTimeUnit": "ns",
                "otherData": {"config_hash": self.cfg.config_hash(),
                              "cycles": sum(r.timing.total_cycles for _, r in by_step.values()),
                              "segments": list(by_step)}}


def _sum_meta(results: list, key: str):
    vals = [step.program.meta.get(key) for step, _ in results]
    return sum(vals) if vals and all(isinstance(v, (int, float)) for v in vals) else None


def _layer_info(meta: dict) -> dict | None:
    """The compiler's per-layer facts (``meta["layers"]``) as ``build_report``'s ``layer_info``, echoed into
    the rows; its ``macs`` becomes ``compiler_macs`` so the row keeps the simulated (summable) MACs."""
    layers = meta.get("layers")
    if not isinstance(layers, dict):
        return None
    out = {}
    for name, info in layers.items():
        if isinstance(info, dict):
            info = dict(info)
            if "macs" in info:
                info["compiler_macs"] = info.pop("macs")
            out[name] = info
    return out

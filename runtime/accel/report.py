"""NPU-1 simulator report (ACCELERATOR.md B.7): machine-readable JSON, a text summary with a per-layer
table, and a Chrome trace-event timeline (catapult trace-event format; loads in chrome://tracing/Perfetto).

JSON (:func:`build_report`, :func:`to_json`): sorted keys; every number is a function of the program, the
DRAM image and the config, except the ``"wall"`` section (host wall time, simulated MAC/s, host time),
which :func:`to_json` drops with ``wall=False`` so that reports compare byte for byte (B.7.5, D.3).

Layers are the debug-table tags (``Program.layers``, else each instruction's asm comment); untagged
instructions (FINISH, setup) form the layer ``"(none)"``. Per layer: MACs, ``[start, end)`` = first issue to
last completion (layers may overlap in time when pipelined, so their cycles do not add up to the total),
``mac_util = MACs / (cycles·R·C)``, roofline cycles ``max(MACs/(R·C), burst bytes/dram_bytes_per_cycle)``
and the bound that sets it (B.5), DRAM bytes, dynamic energy (B.6; static energy is only in the total).
MACs, bytes, instruction counts and dynamic energy of the layers sum to the totals.

Trace (:func:`chrome_trace`): ``pid`` 1, tids LD/MX/VP/ST (engine occupancy: ``[issue, end of occupancy)``,
so events on one engine never overlap), DRAM (bus transfers ``[bus start, bus end)``) and FIN; ``ts``/``dur``
in µs (``cycles / clock_mhz``). Counters: ``DRAM bandwidth`` (GB/s on the bus) and ``UB occupancy``
(bytes of UB in the footprints of in-flight instructions: the simulator sees accesses, not allocations).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .config import AccelConfig
from .energy import BREAKDOWN_KEYS, energy, energy_table
from .functional import footprint
from .isa import encode_program
from .timing import count_groups, dma_cost

NO_LAYER = "(none)"
TIDS = {"LD": 1, "MX": 2, "VP": 3, "ST": 4, "DRAM": 5, "FIN": 6}


def layer_tags(program) -> list[str]:
    tags = program.layers if getattr(program, "layers", None) else [i.comment for i in program.instructions]
    return [t if t else NO_LAYER for t in tags]


def _program_hash(program) -> str:
    h = hashlib.sha256()
    words = getattr(program, "words", None)
    h.update(words if words is not None else encode_program(program.instructions))
    h.update(bytes(program.sem_init))
    return h.hexdigest()


def _ratio(a, b):
    return a / b if b else None


def build_report(cfg: AccelConfig, program, result, *, wall_s: float | None = None,
                 compulsory_bytes: int | None = None, capacity_bound_bytes: int | None = None,
                 allocated_peak_bytes: dict | None = None, npu_ops: int | None = None,
                 host_ops: int | None = None, host_time_s: float | None = None,
                 artifact_hash: str | None = None,
                 layer_info: dict | None = None, energy_preset: str | None = None) -> dict:
    """The B.7 report of one simulation (``result``: a :class:`~.simulator.SimResult` with timing).
    Optional caller facts: compulsory / capacity-bound DRAM bytes (C.3), compiler-allocated SRAM peaks,
    NPU / host operator counts and host time, and ``layer_info[name]`` (``onnx_nodes``, ``op_type``,
    ``compulsory_bytes``, ``tiling``...), echoed into that layer's row."""
    t = result.timing
    c = t.counters
    table = energy_table(cfg, energy_preset)
    cyc = t.total_cycles
    time_us = cyc / cfg.clock_mhz
    d = c["dram"]
    actual = d["read_bytes"] + d["write_bytes"]
    bound = max(compulsory_bytes or 0, capacity_bound_bytes or 0)
    e = energy(cfg, c, table=table)
    summary = {
        "cycles": cyc, "time_us": time_us,
        "macs_useful": c["macs_useful"], "mac_slots": c["mac_slots"], "mac_util": c["mac_util"],
        "mapping_efficiency": c["mapping_efficiency"], "mx_active": c["mx_active"],
        "achieved_tops": 2 * c["macs_useful"] / time_us / 1e6 if cyc else 0.0,
        "peak_tops": 2 * cfg.array_rows * cfg.array_cols * cfg.clock_mhz / 1e6,
        "dram": {**d, "bytes_total": actual,
                 "bytes_total_burst": d["read_bytes_burst"] + d["write_bytes_burst"],
                 "bus_utilisation": c["dram_bw_util"],
                 "compulsory_bytes": compulsory_bytes,
                 "ratio_to_compulsory": _ratio(actual, compulsory_bytes),
                 "capacity_bound_bytes": capacity_bound_bytes, "ratio_to_bound": _ratio(actual, bound)},
        "sram_high_water_bytes": c["sram_high_water_bytes"],
        "sram_allocated_peak_bytes": allocated_peak_bytes,
        "sram_read_bytes": c["sram_read_bytes"], "sram_write_bytes": c["sram_write_bytes"],
        "energy_pj": e, "energy_table": table.to_dict(),
        "engines": c["engines"], "instructions": c["instructions"],
        "instructions_total": len(program.instructions),
        "semaphore_wait_cycles": c["semaphore_wait_cycles"],
        "vpu_ops": c["vpu_ops"], "vpu_energy_ops": c["vpu_energy_ops"],
        "operators": {"npu": npu_ops, "host": host_ops},
    }
    layers = _layers(cfg, program, t, table, layer_info or {})
    summary["dram"]["best_tiling_bytes"] = best_tiling_bytes(layers)
    summary["dram"]["ratio_to_best_tiling"] = _ratio(actual, summary["dram"]["best_tiling_bytes"])
    rep = {
        "simulator": {"name": "NPU-1", "version": _version()},
        "config": cfg.to_dict(), "config_hash": cfg.config_hash(),
        "artifact_hash": artifact_hash or _program_hash(program),
        "summary": summary,
        "layers": layers,
    }
    rep["wall"] = wall_section(c["macs_useful"], result.wall_s if wall_s is None else wall_s, host_time_s)
    return rep


def best_tiling_bytes(layers: list[dict]) -> int | None:
    """DRAM bytes of the whole program had every searched layer used the tiling with the fewest bytes that
    the compiler's exhaustive search found (its row's ``tiling.best_exhaustive_bytes``), the other layers
    (elementwise, pooling: no tiling choice) as they ran. None without compiler facts for any layer."""
    total, searched = 0, False
    for row in layers:
        best = (row.get("tiling") or {}).get("best_exhaustive_bytes")
        if best:
            total, searched = total + int(best), True
        else:
            total += row["dram_read_bytes"] + row["dram_write_bytes"]
    return total if searched else None


def wall_section(macs: int, wall_s: float, host_time_s: float | None = None) -> dict:
    """The report's ``"wall"`` section: host seconds, simulated MAC/s, host-op time (not deterministic)."""
    return {"wall_s": wall_s, "simulated_macs_per_s": macs / wall_s if wall_s else None,
            "host_time_s": host_time_s}


def _version():
    from .simulator import SIMULATOR_VERSION
    return SIMULATOR_VERSION


def _layers(cfg, program, t, table, info) -> list[dict]:
    tags = layer_tags(program)
    groups = count_groups(cfg, program.instructions, tags)
    names = list(groups)
    idx = {n: i for i, n in enumerate(names)}
    li = np.fromiter((idx[x] for x in tags), np.int64, len(tags))
    start = np.full(len(names), np.iinfo(np.int64).max)
    end = np.zeros(len(names), np.int64)
    np.minimum.at(start, li, t.issue)
    np.maximum.at(end, li, t.done)
    rc = cfg.array_rows * cfg.array_cols
    rows = []
    for i, name in enumerate(names):
        g = groups[name]
        cycles = int(end[i] - start[i])
        burst = g["dram"]["read_bytes_burst"] + g["dram"]["write_bytes_burst"]
        compute, memory = g["macs_useful"] / rc, burst / cfg.dram_bytes_per_cycle
        e = energy(cfg, g, cycles=0, table=table)
        ins = g["instructions"]
        row = {
            "name": name, "op_type": "GEMM" if "GEMM" in ins else max(ins, key=ins.get),
            "instructions": ins, "macs": g["macs_useful"], "mac_slots": g["mac_slots"],
            "start_cycle": int(start[i]), "end_cycle": int(end[i]), "cycles": cycles,
            "mac_util": g["macs_useful"] / (cycles * rc) if cycles else 0.0,
            "roofline_cycles": int(np.ceil(max(compute, memory))),
            "bound": "compute" if compute >= memory else "memory",
            "dram_read_bytes": g["dram"]["read_bytes"], "dram_write_bytes": g["dram"]["write_bytes"],
            "dram_bytes_burst": burst, "sram_high_water_bytes": g["sram_high_water_bytes"],
            "energy_pj": e["total"], "energy_breakdown_pj": {k: e[k] for k in BREAKDOWN_KEYS if k != "total"},
        }
        extra = info.get(name, {})
        row.update(extra)
        if "compulsory_bytes" in extra:
            row["ratio_to_compulsory"] = _ratio(row["dram_read_bytes"] + row["dram_write_bytes"],
                                                extra["compulsory_bytes"])
        rows.append(row)
    return rows


def to_json(report: dict, *, wall: bool = True, indent: int | None = 1) -> str:
    """Stable JSON (sorted keys). ``wall=False`` drops the non-deterministic ``"wall"`` section."""
    rep = report if wall else {k: v for k, v in report.items() if k != "wall"}
    return json.dumps(rep, sort_keys=True, indent=indent) + "\n"


# ---- text ------------------------------------------------------------------------------------------------
def _fmt_bytes(n):
    return "-" if n is None else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def to_text(report: dict, max_layers: int | None = None) -> str:
    """A readable summary and the per-layer table."""
    s, cfg = report["summary"], report["config"]
    d, e = s["dram"], s["energy_pj"]
    w = report.get("wall", {})
    out = [f"NPU-1 simulator {report['simulator']['version']}  config {cfg['name']} "
           f"({cfg['array_rows']}x{cfg['array_cols']} @ {cfg['clock_mhz']:g} MHz, "
           f"hash {report['config_hash'][:12]})"
           f"  artifact {report['artifact_hash'][:12]}"]
    if w.get("wall_s"):
        out.append(f"wall {w['wall_s']:.3f} s, {w['simulated_macs_per_s'] / 1e9:.2f} G simulated MAC/s")
    out += [
        f"cycles {s['cycles']:,} ({s['time_us']:.1f} us)  MACs {s['macs_useful']:,} useful / "
        f"{s['mac_slots']:,} "
        f"issued  mac_util {100 * s['mac_util']:.1f}%  mapping {100 * s['mapping_efficiency']:.1f}%  "
        f"mx_active {100 * s['mx_active']:.1f}%  {s['achieved_tops']:.3f} of {s['peak_tops']:.3f} TOPS",
        f"DRAM read {_fmt_bytes(d['read_bytes'])} (burst {_fmt_bytes(d['read_bytes_burst'])})  write "
        f"{_fmt_bytes(d['write_bytes'])} (burst {_fmt_bytes(d['write_bytes_burst'])})  bus "
        f"{100 * d['bus_utilisation']:.1f}%  compulsory {_fmt_bytes(d['compulsory_bytes'])}"
        + (f"  actual/compulsory {d['ratio_to_compulsory']:.3f}" if d["ratio_to_compulsory"] else ""),
        *([f"DRAM with the chosen tilings {_fmt_bytes(d['bytes_total'])}, with the exhaustive search's "
           f"fewest-bytes tilings {_fmt_bytes(d['best_tiling_bytes'])} (chosen/best "
           f"{d['ratio_to_best_tiling']:.3f})"] if d.get("best_tiling_bytes") else []),
        "SRAM high water: " + "  ".join(f"{k} {_fmt_bytes(v)}"
                                        for k, v in s["sram_high_water_bytes"].items()),
        f"energy ({e['preset']}) {e['total'] / 1e6:.3f} uJ, {e['pj_per_mac']:.3f} pJ/MAC: "
        + "  ".join(f"{k} {100 * e[k] / (e['total'] or 1):.1f}%" for k in BREAKDOWN_KEYS[:-1]),
        "engines (busy/sem wait/idle cycles): " + "  ".join(
            f"{q} {v['busy']:,}/{v['sem_wait']:,}/{v['idle']:,}" for q, v in s["engines"].items()),
        "instructions: " + " ".join(f"{k} {v}" for k, v in s["instructions"].items()),
    ]
    ops = s["operators"]
    if ops["npu"] is not None or ops["host"] is not None:
        out.append(f"operators: NPU {ops['npu']}  host {ops['host']}")
    hdr = (f"{'layer':<24} {'op':<6} {'MACs':>13} {'start':>10} {'end':>10} {'cycles':>10} {'util':>6} "
           f"{'bound':>7} {'roofline':>10} {'DRAM rd':>11} {'DRAM wr':>11} {'energy uJ':>10}")
    out += ["", hdr, "-" * len(hdr)]
    layers = report["layers"] if max_layers is None else report["layers"][:max_layers]
    for r in layers:
        out.append(f"{r['name'][:24]:<24} {r['op_type'][:6]:<6} {r['macs']:>13,} {r['start_cycle']:>10,} "
                   f"{r['end_cycle']:>10,} {r['cycles']:>10,} {100 * r['mac_util']:>5.1f}% {r['bound']:>7} "
                   f"{r['roofline_cycles']:>10,} {_fmt_bytes(r['dram_read_bytes']):>11} "
                   f"{_fmt_bytes(r['dram_write_bytes']):>11} {r['energy_pj'] / 1e6:>10.3f}")
    return "\n".join(out) + "\n"


# ---- Chrome trace ----------------------------------------------------------------------------------------
def _sems(ins):
    return {"wait": ",".join(f"S{s}" for s in sorted(ins.wait)),
            "signal": ",".join(f"S{s}" for s in sorted(ins.signal))}


def chrome_trace(cfg: AccelConfig, program, result, *, coalesce_above: int | None = None) -> dict:
    """The B.7.4 timeline. With ``coalesce_above`` set and more instructions than that, consecutive events
    of one layer on one track merge into one event (``args.count`` instructions)."""
    t = result.timing
    instrs = program.instructions
    tags = layer_tags(program)
    us = 1.0 / cfg.clock_mhz
    ev = [{"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "NPU-1"}}]
    for name, tid in TIDS.items():
        ev.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": tid, "args": {"name": name}})
        ev.append({"ph": "M", "name": "thread_sort_index", "pid": 1, "tid": tid, "args": {"sort_index": tid}})
    tracks: dict[int, list] = {tid: [] for tid in TIDS.values()}
    bw, ub = [], []
    for pc, ins in enumerate(instrs):
        i0, busy, fin = int(t.issue[pc]), int(t.busy_end[pc]), int(t.done[pc])
        nbytes, macs = 0, 0
        if ins.op in ("LOAD", "STORE"):
            nbytes, rounded, bus = dma_cost(cfg, ins)
            b0 = int(t.bus_start[pc])
            tracks[TIDS["DRAM"]].append((b0, busy, pc, ins.op, tags[pc], nbytes, 0, ins))
            if bus:
                bw.append((b0, rounded / bus * cfg.clock_mhz / 1e3))
                bw.append((busy, 0.0))
        elif ins.op == "GEMM":
            f = ins.fields
            macs = f["m_inner"] * f["m_outer"] * f["k_valid"] * cfg.k_granule * f["n_valid"] * cfg.n_granule
        tracks[TIDS[t.engine[pc]]].append((i0, busy, pc, ins.op, tags[pc], nbytes, macs, ins))
        ub_b = sum(hi - lo for buf, lo, hi, _ in footprint(cfg, ins) if buf == "UB") * cfg.line_bytes
        if ub_b and fin > i0:
            ub += [(i0, ub_b), (fin, -ub_b)]
    coalesce = coalesce_above is not None and len(instrs) > coalesce_above
    for tid, items in tracks.items():
        items.sort(key=lambda x: (x[0], x[2]))
        for run in (_runs(items) if coalesce else ([x] for x in items)):
            first, last = run[0], run[-1]
            args = {"pc": first[2], "layer": first[4], "bytes": sum(x[5] for x in run),
                    "macs": sum(x[6] for x in run)}
            if len(run) == 1:
                ins = first[7]
                args.update(semaphores=_sems(ins), issue_cycle=first[0], done_cycle=int(t.done[first[2]]))
                name = ins.op
            else:
                ops = {x[3] for x in run}
                name = ops.pop() if len(ops) == 1 else first[4]
                args.update(count=len(run), pc_last=last[2])
            ev.append({"ph": "X", "name": name, "cat": first[4], "pid": 1, "tid": tid, "ts": first[0] * us,
                       "dur": (max(x[1] for x in run) - first[0]) * us, "args": args})
    ev += _counter("DRAM bandwidth", "GB/s", bw, us, absolute=True)
    ev += _counter("UB occupancy", "bytes", ub, us, absolute=False)
    return {"traceEvents": ev, "displayTimeUnit": "ns",
            "otherData": {"config_hash": cfg.config_hash(), "cycles": t.total_cycles}}


def _runs(items):
    run = []
    for x in items:
        if run and x[4] != run[-1][4]:
            yield run
            run = []
        run.append(x)
    if run:
        yield run


def _counter(name, key, points, us, *, absolute):
    """C events at each change: ``absolute`` points are (cycle, value); else (cycle, delta) summed."""
    out, level = [], 0.0
    points = sorted(points, key=(lambda p: (p[0], p[1] != 0)) if absolute else (lambda p: p[0]))
    i = 0
    while i < len(points):
        cyc = points[i][0]
        while i < len(points) and points[i][0] == cyc:
            level = points[i][1] if absolute else level + points[i][1]
            i += 1
        out.append({"ph": "C", "name": name, "pid": 1, "tid": 0, "ts": cyc * us, "args": {key: level}})
    return out


def trace_json(trace: dict) -> str:
    return json.dumps(trace, sort_keys=True, separators=(",", ":")) + "\n"

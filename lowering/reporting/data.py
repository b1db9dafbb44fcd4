"""What the HTML report shows, computed from an artifact's ``report.json`` and a custom-target run report
(``lower run --target custom --report R.json``), with no plotting library: the rows of the NPU-1 per-layer
table, the roofline coordinates of every layer, the fusion map (which ONNX nodes went into which kernel) and
the memory plan's live bytes per step. Plain dicts and lists, so tests check them against numpy."""

from __future__ import annotations

import math

ENERGY_PARTS = ("mac", "ub", "wb", "acc", "pb_lut", "vpu", "dram", "static")


def kernel_sources(kernel: dict) -> list[str]:
    """The ONNX nodes fused into a kernel record (cpu/cuda kernels say ``sources``, NPU layers
    ``onnx_nodes``)."""
    return list(kernel.get("sources") or kernel.get("onnx_nodes") or [])


def kernel_op(kernel: dict) -> str:
    return str(kernel.get("op") or kernel.get("op_type") or "?")


def fusion_map(kernels: list[dict], source_nodes: list[tuple[str, str]] | None = None) -> dict:
    """Before and after: ``before`` lists the source graph's nodes as ``(name, op, kernel index or None)``;
    ``after`` lists the kernels as ``(name, op, placement)``. With ``source_nodes`` (the source model's
    ``(name, op)`` in graph order) every node appears, ``None`` marking one no kernel names (folded into a
    constant, removed, or absorbed without a record); without it, the nodes the kernels name, in kernel
    order (their op unknown: ``?``)."""
    owner: dict[str, int] = {}
    for index, k in enumerate(kernels):
        for name in kernel_sources(k):
            owner.setdefault(name, index)
    if source_nodes is None:
        before = [(name, "?", index) for name, index in owner.items()]
    else:
        before = [(name, op, owner.get(name)) for name, op in source_nodes]
    after = [(str(k.get("name", "?")), kernel_op(k), str(k.get("target", ""))) for k in kernels]
    named = {name for name, _, _ in before}
    return {"before": before, "after": after,
            "unmatched_sources": sorted(n for n in owner if n not in named)}


def live_bytes(plan: dict) -> list[int]:
    """Bytes of the memory plan's buffers live at each step (a buffer with ``live [a, b]`` occupies steps
    a..b inclusive)."""
    buffers = plan.get("buffers") or []
    if not buffers:
        return []
    steps = max(b["live"][1] for b in buffers) + 1
    totals = [0] * steps
    for b in buffers:
        for step in range(b["live"][0], b["live"][1] + 1):
            totals[step] += b["size"]
    return totals


def _tiling_text(tiling: dict | None) -> str:
    if not tiling:
        return ""
    keys = [k for k in ("Mt", "Nt", "Kt", "Ho_t") if k in tiling]
    text = " ".join(f"{k}={tiling[k]}" for k in keys)
    extra = [str(tiling[k]) for k in ("order", "residency") if tiling.get(k)]
    return (text + (" " + "/".join(extra) if extra else "")).strip()


def npu_layers(config: dict, run_report: dict | None = None, kernels: list[dict] | None = None) -> list[dict]:
    """The NPU-1 per-layer rows: simulated, from a run report's ``layers`` (the FINISH pseudo-layers that
    close each program are left out), or predicted by the compiler's cost model, from the artifact's
    kernel records of the custom target (``target == "npu"``), when there is no run report."""
    macs_per_cycle = config["array_rows"] * config["array_cols"]
    bandwidth = float(config["dram_bytes_per_cycle"])
    rows = []
    if run_report is not None:
        for layer in run_report.get("layers", []):
            if layer.get("op_type") == "FINISH" or (not layer.get("macs") and not layer.get("cycles")):
                continue
            read, write = layer.get("dram_read_bytes", 0), layer.get("dram_write_bytes", 0)
            rows.append({
                "name": layer.get("layer") or layer.get("name", "?"), "segment": layer.get("segment", ""),
                "op": layer.get("op_type", "?"), "onnx_nodes": list(layer.get("onnx_nodes", [])),
                "macs": layer.get("macs", 0), "cycles": layer.get("cycles", 0),
                "start": layer.get("start_cycle"), "end": layer.get("end_cycle"),
                "read": read, "write": write, "dram": read + write,
                "compulsory": layer.get("compulsory_bytes"), "bound": layer.get("bound", ""),
                "roofline_cycles": layer.get("roofline_cycles"), "mac_util": layer.get("mac_util", 0.0),
                "energy_pj": layer.get("energy_pj"),
                "energy": dict(layer.get("energy_breakdown_pj") or {}),
                "sram_ub": (layer.get("sram_high_water_bytes") or {}).get("UB"),
                "tiling": _tiling_text(layer.get("tiling")), "output": (layer.get("geometry") or {}).get(
                    "output"), "source": "simulated"})
        return rows
    clock: dict[str, int] = {}
    for k in kernels or []:
        if k.get("target") != "npu":
            continue
        segment = str(k.get("segment", ""))
        macs, cycles = k.get("macs", 0), k.get("predicted_cycles", 0)
        dram = k.get("predicted_dram_bytes", 0)
        start = clock.get(segment, 0)
        clock[segment] = start + cycles
        compute, memory = macs / macs_per_cycle, dram / bandwidth
        rows.append({
            "name": str(k.get("name", "?")), "segment": segment, "op": kernel_op(k),
            "onnx_nodes": kernel_sources(k), "macs": macs, "cycles": cycles, "start": start,
            "end": start + cycles, "read": None, "write": None, "dram": dram,
            "compulsory": k.get("compulsory_bytes"), "bound": "compute" if compute >= memory else "memory",
            "roofline_cycles": math.ceil(max(compute, memory)),
            "mac_util": macs / (cycles * macs_per_cycle) if cycles else 0.0, "energy_pj": None,
            "energy": {}, "sram_ub": None, "tiling": _tiling_text(k.get("tiling")),
            "output": (k.get("geometry") or {}).get("output"), "source": "predicted"})
    return rows


def roofline(config: dict, layers: list[dict]) -> dict:
    """Roofline coordinates of every layer against the NPU-1's roofs. One op is a multiply or an add, so a
    MAC is 2 ops; the compute roof is ``2 * array_rows * array_cols`` ops/cycle and the DRAM roof
    ``dram_bytes_per_cycle * intensity``. A layer without MACs (vector-unit work: elementwise, pooling) is
    placed with one op per output element against the vector unit's roof (``vpu_lanes`` ops/cycle). A
    layer that moves no DRAM bytes (its operands stay on chip) has infinite intensity: ``intensity`` is
    ``inf`` and the plot puts it at the right edge."""
    peak = 2.0 * config["array_rows"] * config["array_cols"]
    bandwidth = float(config["dram_bytes_per_cycle"])
    points = []
    for index, layer in enumerate(layers):
        if layer["cycles"] <= 0:
            continue
        if layer["macs"]:
            ops, kind = 2.0 * layer["macs"], "mac"
        else:
            ops, kind = float(math.prod(layer.get("output") or [0])), "vector"
            if ops <= 0:
                continue
        intensity = ops / layer["dram"] if layer["dram"] else math.inf
        achieved = ops / layer["cycles"]
        roof = peak if kind == "mac" else float(config.get("vpu_lanes", 0) or 0)
        attainable = min(roof, bandwidth * intensity)
        points.append({"name": layer["name"], "index": index, "kind": kind, "ops": ops,
                       "intensity": intensity,
                       "ops_per_cycle": achieved, "attainable": attainable,
                       "of_roof": achieved / attainable if attainable else 0.0,
                       "gops": achieved * float(config.get("clock_mhz", 1000.0)) / 1e3})
    return {"peak_ops_per_cycle": peak, "vector_ops_per_cycle": float(config.get("vpu_lanes", 0) or 0),
            "dram_bytes_per_cycle": bandwidth, "ridge": peak / bandwidth,
            "clock_mhz": float(config.get("clock_mhz", 1000.0)), "points": points}


def energy_totals(layers: list[dict], summary: dict | None = None) -> dict[str, float]:
    """The energy breakdown in pJ by component: the run summary's when given (it includes what no layer
    owns), else the sum over layers."""
    if summary and summary.get("energy_pj"):
        return {p: float(summary["energy_pj"].get(p, 0.0)) for p in ENERGY_PARTS}
    return {p: float(sum(layer["energy"].get(p, 0.0) for layer in layers)) for p in ENERGY_PARTS}

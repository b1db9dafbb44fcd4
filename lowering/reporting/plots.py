"""The HTML report's plots: static SVG drawn by matplotlib (no pyplot, no global state), inlined into the
page. Text stays text (``svg.fonttype: none``) and the SVG ids are salted per plot, so the plots of one page
never share an id and the same input draws the same bytes."""

from __future__ import annotations

import io
import math
import re

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .data import ENERGY_PARTS

COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")
ENERGY_COLOURS = dict(zip(ENERGY_PARTS, COLOURS))
MAX_ROWS_DRAWN = 300


def _svg(fig: Figure, salt: str) -> str:
    """The figure as an SVG element for inlining: no XML prolog, DOCTYPE or metadata block."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return text.replace("<svg ", f'<svg class="plot" data-plot="{salt}" role="img" ', 1)


def _short(text: str, width: int = 44) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _op_colours(ops) -> dict[str, str]:
    return {op: COLOURS[i % len(COLOURS)] for i, op in enumerate(sorted(set(ops)))}


def fusion_map(fusion: dict, salt: str) -> str | None:
    """Before (the source graph's nodes, left) and after (the kernels, right), a line from each node to the
    kernel it went into; nodes without a kernel are grey. ``None`` when too large to draw readably."""
    before, after = fusion["before"], fusion["after"]
    rows = max(len(before), len(after))
    if not rows or rows > MAX_ROWS_DRAWN:
        return None
    colours = _op_colours(op for _, op, _ in after)
    fig = Figure(figsize=(10, 0.8 + 0.2 * rows))
    ax = fig.add_subplot()
    y_before = [rows - 1 - i * (rows - 1) / max(len(before) - 1, 1) for i in range(len(before))]
    y_after = [rows - 1 - j * (rows - 1) / max(len(after) - 1, 1) for j in range(len(after))]
    for (name, op, owner), y in zip(before, y_before):
        colour = colours[after[owner][1]] if owner is not None else "#bbbbbb"
        if owner is not None:
            ax.plot([0, 1], [y, y_after[owner]], color=colour, linewidth=0.8, alpha=0.7)
        ax.plot([0], [y], marker="o", markersize=4, color=colour)
        label = _short(name) + (f"  [{op}]" if op != "?" else "")
        ax.text(-0.03, y, label, ha="right", va="center", fontsize=7,
                color="#333333" if owner is not None else "#999999")
    for (name, op, placement), y in zip(after, y_after):
        ax.plot([1], [y], marker="s", markersize=5, color=colours[op])
        where = f" ({placement})" if placement else ""
        ax.text(1.03, y, f"{op}{where}  {_short(name, 36)}", ha="left", va="center", fontsize=7)
    ax.set_xlim(-1.2, 2.2)
    ax.set_ylim(-0.8, rows - 0.2)
    ax.text(0, rows - 0.1, f"before: {len(before)} ONNX nodes", ha="center", va="bottom", fontsize=9,
            weight="bold")
    ax.text(1, rows - 0.1, f"after: {len(after)} kernels", ha="center", va="bottom", fontsize=9,
            weight="bold")
    ax.axis("off")
    return _svg(fig, salt)


def passes(passes: list[dict], salt: str) -> str | None:
    """Bytes moved (bars) and node count (line) after each pass."""
    if not passes:
        return None
    fig = Figure(figsize=(10, 3.2))
    ax = fig.add_subplot()
    names = ["(import)"] + [p["name"] for p in passes]
    moved = [passes[0]["bytes_moved_before"]] + [p["bytes_moved_after"] for p in passes]
    nodes = [passes[0]["nodes_before"]] + [p["nodes_after"] for p in passes]
    x = list(range(len(names)))
    ax.bar(x, [m / 1024 for m in moved], color=["#bbbbbb"] + [COLOURS[0] if p["modified"] else "#a0b8d0"
                                                             for p in passes])
    ax.set_ylabel("bytes moved (KiB)")
    ax.set_xticks(x, names, rotation=40, ha="right", fontsize=7)
    twin = ax.twinx()
    twin.plot(x, nodes, color=COLOURS[1], marker="o", markersize=3)
    twin.set_ylabel("graph nodes", color=COLOURS[1])
    twin.set_ylim(bottom=0)
    ax.set_title("after each pass (dark bars: the pass changed the graph)", fontsize=9)
    return _svg(fig, salt)


def memory_timeline(plan: dict, live: list[int], salt: str) -> str | None:
    """Every buffer of the memory plan as a rectangle (live steps across, arena offset up), the bytes live
    at each step, the arena size and the lower bound."""
    buffers = plan.get("buffers") or []
    if not buffers:
        return None
    fig = Figure(figsize=(10, 3.6))
    ax = fig.add_subplot()
    for i, b in enumerate(buffers):
        start, end = b["live"]
        ax.add_patch(Rectangle((start - 0.45, b["offset"] / 1024), end - start + 0.9, b["size"] / 1024,
                               facecolor=COLOURS[i % len(COLOURS)], edgecolor="white", linewidth=0.5,
                               alpha=0.85))
    steps = len(live)
    ax.step(range(steps), [v / 1024 for v in live], where="mid", color="black", linewidth=1,
            label="bytes live at the step")
    arena = plan.get("arena_bytes", 0) / 1024
    ax.axhline(arena, color=COLOURS[3], linestyle="--", linewidth=1, label=f"arena {arena:.1f} KiB")
    bound = plan.get("lower_bound_bytes")
    if bound:
        ax.axhline(bound / 1024, color=COLOURS[2], linestyle=":", linewidth=1,
                   label=f"lower bound {bound / 1024:.1f} KiB")
    ax.set_xlim(-0.6, steps - 0.4)
    ax.set_ylim(0, max(arena, max(live) / 1024) * 1.12 or 1)
    ax.set_xlabel("step (kernel index)")
    ax.set_ylabel("arena offset (KiB)")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"{len(buffers)} buffers: live range across, offset in the arena up", fontsize=9)
    return _svg(fig, salt)


def roofline(roof: dict, title: str, salt: str) -> str | None:
    """Log-log roofline: arithmetic intensity (ops per DRAM byte) against achieved ops/cycle (GOP/s on the
    right), the compute roof, the DRAM roof and the vector unit's roof; one point per layer."""
    points = roof["points"]
    if not points:
        return None
    peak, bandwidth = roof["peak_ops_per_cycle"], roof["dram_bytes_per_cycle"]
    finite = [p["intensity"] for p in points if math.isfinite(p["intensity"])]
    lo = min(finite + [roof["ridge"]]) / 4
    hi = max(finite + [roof["ridge"]]) * 8
    fig = Figure(figsize=(10, 4.6))
    ax = fig.add_subplot()
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(peak, bandwidth * x) for x in xs], color="black", linewidth=1.5,
            label=f"NPU-1 roof: {peak:g} ops/cycle compute, {bandwidth:g} B/cycle DRAM")
    vector = roof["vector_ops_per_cycle"]
    if vector and any(p["kind"] == "vector" for p in points):
        ax.plot(xs, [min(vector, bandwidth * x) for x in xs], color="#888888", linestyle="--",
                linewidth=1, label=f"vector unit roof: {vector:g} ops/cycle")
    ax.axvline(roof["ridge"], color="#cccccc", linestyle=":", linewidth=1)
    for p in points:
        x = p["intensity"] if math.isfinite(p["intensity"]) else hi / 1.5
        marker = ("o" if p["kind"] == "mac" else "D") if math.isfinite(p["intensity"]) else ">"
        ax.plot([x], [p["ops_per_cycle"]], marker=marker, markersize=7, linestyle="none",
                color=COLOURS[p["index"] % len(COLOURS)],
                label=f"{_short(p['name'], 48)} ({100 * p['of_roof']:.0f}% of its roof)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    low = min(p["ops_per_cycle"] for p in points)
    ax.set_ylim(min(low / 3, bandwidth * lo), peak * 3)
    ax.set_xlabel("arithmetic intensity (ops per DRAM byte; > at the edge: no DRAM traffic)")
    ax.set_ylabel("achieved ops/cycle")
    scale = roof["clock_mhz"] / 1e3
    right = ax.secondary_yaxis("right", functions=(lambda v: v * scale, lambda v: v / scale))
    right.set_ylabel(f"GOP/s at {roof['clock_mhz']:g} MHz")
    ax.grid(True, which="major", color="#eeeeee")
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.12, 0.5), frameon=False)
    ax.set_title(title, fontsize=9)
    return _svg(fig, salt)


def energy(layers: list[dict], totals: dict[str, float], salt: str) -> str | None:
    """Energy by component: the whole run (top bar) and every layer, stacked, in µJ."""
    if not any(totals.values()):
        return None
    rows = [("total", totals)] + [(layer["name"], layer["energy"]) for layer in layers if layer["energy"]]
    fig = Figure(figsize=(10, 1.2 + 0.3 * len(rows)))
    ax = fig.add_subplot()
    labels = [_short(name, 40) for name, _ in rows]
    y = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    for part in ENERGY_PARTS:
        widths = [parts.get(part, 0.0) / 1e6 for _, parts in rows]
        if not any(widths):
            continue
        ax.barh(y, widths, left=left, color=ENERGY_COLOURS[part], label=part, height=0.7)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("energy (µJ)")
    ax.legend(fontsize=7, ncol=len(ENERGY_PARTS), loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    return _svg(fig, salt)


def npu_timeline(layers: list[dict], salt: str) -> str | None:
    """The NPU-1 layers across cycles, one row per segment (start to end cycle of each layer)."""
    timed = [(i, layer) for i, layer in enumerate(layers)
             if layer.get("start") is not None and layer.get("end") is not None]
    if not timed:
        return None
    segments = list(dict.fromkeys(layer["segment"] for _, layer in timed))
    fig = Figure(figsize=(10, 0.9 + 0.45 * len(segments)))
    ax = fig.add_subplot()
    for i, layer in timed:
        row = len(segments) - 1 - segments.index(layer["segment"])
        ax.broken_barh([(layer["start"], max(layer["end"] - layer["start"], 1))], (row - 0.35, 0.7),
                       facecolors=COLOURS[i % len(COLOURS)], edgecolor="white")
    ax.set_yticks(range(len(segments)), segments[::-1], fontsize=8)
    ax.set_xlabel("cycle")
    ax.set_title("layers over time (colours as in the roofline)", fontsize=9)
    return _svg(fig, salt)

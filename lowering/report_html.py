"""``lower report OUT.lwr -o report.html`` and ``lower run ... --report report.html``: one self-contained HTML
page about an artifact (and a run of it): the graph before and after optimisation (which ONNX nodes went into
each kernel), what every pass changed and the bytes it moved, the memory plan as a timeline of live buffers,
and for the custom target the NPU-1 per-layer table, a roofline of every layer against the accelerator's
compute and DRAM roofs, the energy breakdown and a link to the Perfetto trace.

Self-contained: inline CSS, plots inlined as SVG (drawn by matplotlib, the optional extra
``lowering[report]``), no script, nothing fetched from the network.

What "before" shows: the artifact does not store the source model. ``report.json`` records the source's node
and op counts and, per kernel, the names of the ONNX nodes fused into it; the page draws those. Given the
source model (``lower report --model MODEL.onnx``), every source node is drawn with its op, nodes that no
kernel names (folded into constants or removed) in grey.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from pathlib import Path

import click

from .errors import LoweringError

INSTALL_HINT = "pip install 'lowering[report]' (or pip install 'matplotlib>=3.7')"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
  background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:1em 2em 4em}
h1{font-size:1.6em;margin:.6em 0 .2em}h2{margin-top:2em;border-bottom:2px solid #4e79a7;padding-bottom:.2em}
h3{margin-top:1.4em}nav a{margin-right:1em}code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{background:#f0f0f0;padding:.8em;overflow-x:auto}
table{border-collapse:collapse;margin:.6em 0;font-size:12.5px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 7px;vertical-align:top;text-align:left}
th{background:#eef2f7}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.wide{overflow-x:auto;max-width:100%}
tr:nth-child(even) td{background:#f7f9fb}.note{color:#666;font-size:.92em}
.cards{display:flex;flex-wrap:wrap;gap:.7em;margin:.8em 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5em .9em;min-width:9em}
.card b{display:block;font-size:1.25em}.card span{color:#666;font-size:.85em}
svg.plot{max-width:100%;height:auto;display:block;margin:.6em 0;background:#fff}
details summary{cursor:pointer;color:#4e79a7}.small{font-size:.85em}
"""


# The page fetches nothing and runs no script; the browser enforces it.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'none'"


def require_matplotlib() -> None:
    """Raise a one-line :class:`LoweringError` saying how to install the plotting extra when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LoweringError(f"an HTML report needs matplotlib: {INSTALL_HINT}") from None


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _n(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{int(round(value)):,}"


def _kib(value) -> str:
    return "-" if value is None else f"{value / 1024:,.1f} KiB"


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """An HTML table; cells are already-escaped HTML, columns in ``numeric`` right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cards(items: list[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>'
                                           for k, v in items) + "</div>"


def _plot(svg: str | None, missing: str) -> str:
    return svg if svg is not None else f'<p class="note">{_e(missing)}</p>'


def _names(names: list[str], shown: int = 6) -> str:
    items = [f"<code>{_e(n)}</code>" for n in names]
    if len(items) <= shown:
        return "<br>".join(items)
    return ("<br>".join(items[:shown]) + f"<details><summary>{len(items) - shown} more</summary>"
            + "<br>".join(items[shown:]) + "</details>")


class _Ids:
    """Unique, deterministic salts for the plots of one page."""

    def __init__(self):
        self.used: dict[str, int] = {}

    def __call__(self, name: str) -> str:
        slug = "".join(c if c.isalnum() else "-" for c in name)
        self.used[slug] = self.used.get(slug, 0) + 1
        return slug if self.used[slug] == 1 else f"{slug}-{self.used[slug]}"


# ---------------------------------------------------------------------------------------------- the page


def load_run_report(path: Path) -> dict:
    """A ``lower run --target custom --report R.json`` file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LoweringError(f"--run-report {path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list) or "summary" not in data:
        raise LoweringError(f"--run-report {path}: not a custom-target run report (no 'layers' and "
                            "'summary'; write one with lower run OUT.lwr --target custom --report R.json)")
    return data


def _source_nodes(model: Path) -> tuple[list[tuple[str, str]], str]:
    from .onnx.importer import load_model_proto

    try:
        proto = load_model_proto(model)
    except LoweringError as exc:
        raise LoweringError(f"--model {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable model is the user's file at fault
        raise LoweringError(f"--model {model}: cannot read it as an ONNX model ({exc})") from None
    nodes = [(n.name or f"{n.op_type}_{i}", (f"{n.domain}::" if n.domain not in ("", "ai.onnx") else "")
              + n.op_type) for i, n in enumerate(proto.graph.node)]
    return nodes, hashlib.sha256(model.read_bytes()).hexdigest()


def build_page(artifact_path: Path, model: Path | None = None, run_report: dict | None = None,
               run_target: str | None = None, trace_href: str | None = None) -> str:
    """The HTML page for ``artifact_path`` (and, for the custom target, ``run_report``: a run's simulator
    report; ``trace_href``: the Perfetto trace written beside it)."""
    require_matplotlib()
    from runtime.artifact import open_artifact

    from .reporting import data, plots

    artifact = open_artifact(artifact_path)
    manifest = artifact.manifest
    members = manifest.get("members", {})
    report = json.loads(artifact.read("report.json")) if "report.json" in members else {}
    ids = _Ids()
    model_name = manifest.get("model", {}).get("name", Path(artifact_path).name)
    source = None
    model_note = ""
    if model is not None:
        nodes, digest = _source_nodes(Path(model))
        source = nodes
        if digest != manifest.get("model", {}).get("sha256"):
            model_note = (f" Note: {model} is not the model this artifact was built from (its SHA-256 "
                          "differs), so some nodes may not match.")
    targets = report.get("targets", {})
    if run_report is not None and "custom" not in targets:
        raise LoweringError(f"{artifact_path}: a run report is for the custom target, which this artifact "
                            f"does not have (targets: {', '.join(targets) or 'none'})")
    nav = [("overview", "Overview")] + [(f"target-{t}", f"target {t}") for t in targets]
    if "custom" in targets:
        nav.append(("npu", "NPU-1"))
    if "quantization" in report:
        nav.append(("quantization", "Quantization"))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>lowering report: {_e(model_name)}</title><style>{CSS}</style></head><body><main>",
           f"<h1>{_e(model_name)} <span class=\"note\">lowering report</span></h1>",
           "<nav>" + "".join(f'<a href="#{i}">{_e(t)}</a>' for i, t in nav) + "</nav>"]
    out += _overview(artifact_path, manifest, report)
    for name, entry in targets.items():
        out += _target_section(name, entry, report, source, model_note, ids, data, plots)
    if "custom" in targets:
        out += _npu_section(artifact, manifest, targets["custom"], run_report, run_target, trace_href, ids,
                            data, plots)
    if "quantization" in report:
        from .quantize import format_report

        out += ['<h2 id="quantization">Quantization</h2>',
                f"<pre>{_e(format_report(report['quantization']))}</pre>"]
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def _overview(path, manifest: dict, report: dict) -> list[str]:
    src = report.get("source", {})
    targets = manifest.get("targets", {})
    sig = [[_e(kind[:-1]), f"<code>{_e(t['name'])}</code>", _e(t.get("dtype")), _e(t.get("shape"))]
           for kind in ("inputs", "outputs") for t in manifest.get(kind, [])]
    size = sum(m.get("size", 0) for m in manifest.get("members", {}).values())
    producer = manifest.get("producer", {})
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(src.get("ops", {}).items()))
    return ['<h2 id="overview">Overview</h2>',
            f'<p>Artifact <code>{_e(Path(path).name)}</code>, {_e(manifest.get("format"))} '
            f'v{_e(manifest.get("format_version"))} by {_e(producer.get("name"))} '
            f'{_e(producer.get("version"))}'
            f'; model sha256 <code>{_e(manifest.get("model", {}).get("sha256", "")[:16])}…</code>.</p>',
            _cards([("ONNX nodes in the source", _n(src.get("nodes"))),
                    ("targets", ", ".join(targets) or "none"),
                    ("members", _n(len(manifest.get("members", {})))),
                    ("artifact bytes", _kib(size))]),
            _table(["", "name", "dtype", "shape"], sig),
            f'<p class="small">Source ops: {_e(ops) or "-"}</p>']


def _target_section(name, entry, report, source, model_note, ids, data, plots) -> list[str]:
    kernels = entry.get("kernels", [])
    fusion = data.fusion_map(kernels, source)
    stored = ("the source model given with --model (every node, in graph order; grey: no kernel names it)"
              if source is not None else
              "the ONNX nodes the kernels name (report.json; the artifact does not store the source model: "
              "pass --model MODEL.onnx to draw all of its nodes with their ops)")
    if source is not None and any(op == "Constant" for _, op in source):
        stored += ("; its Constant nodes become constants on import, so it lists more nodes than the import "
                   "counted")
    out = [f'<h2 id="target-{_e(name)}">Target {_e(name)}</h2>',
           "<h3>Graph before and after optimisation</h3>",
           f'<p class="note">{report.get("source", {}).get("nodes", "?")} ONNX nodes became {len(kernels)} '
           f"kernels. Before: {_e(stored)}.{_e(model_note)}</p>",
           _plot(plots.fusion_map(fusion, ids(f"fusion-{name}")),
                 f"({max(len(fusion['before']), len(fusion['after']))} rows: too many to draw; the table "
                 "below lists them)")]
    if fusion["unmatched_sources"]:
        out.append(f'<p class="note">Kernels name {len(fusion["unmatched_sources"])} node(s) the given model '
                   f'does not have, e.g. <code>{_e(fusion["unmatched_sources"][0])}</code>.</p>')
    rows = []
    for i, k in enumerate(kernels):
        where = "/".join(str(k[f]) for f in ("target", "segment") if k.get(f)) or name
        work = (f"{_n(k['macs'])} MACs" if k.get("macs") else f"{_n(k.get('flops'))} FLOPs" if k.get("flops")
                else "-")
        moved = (f"r {_kib(k.get('bytes_read'))}<br>w {_kib(k.get('bytes_written'))}"
                 if "bytes_read" in k else f"DRAM {_kib(k.get('predicted_dram_bytes'))} (predicted)"
                 if "predicted_dram_bytes" in k else "-")
        rows.append([str(i), f"<code>{_e(k.get('name', '?'))}</code>", _e(data.kernel_op(k)), _e(where),
                     _names(data.kernel_sources(k)), moved, _e(work)])
    out.append(_table(["#", "kernel", "op", "runs on", "ONNX nodes fused into it", "bytes", "work"], rows,
                      {0, 5, 6}))
    passes = entry.get("passes", [])
    out += ["<h3>Passes</h3>", _plot(plots.passes(passes, ids(f"passes-{name}")), "(no passes recorded)")]
    prow = []
    for p in passes:
        changes = p.get("changes", [])
        listed = ("<details><summary>" + _e(f"{len(changes)} change(s)") + "</summary><ul>"
                  + "".join(f"<li>{_e(c)}</li>" for c in changes) + "</ul></details>") if changes else ""
        delta = p["bytes_moved_after"] - p["bytes_moved_before"]
        prow.append([f"<code>{_e(p['name'])}</code>", "changed" if p.get("modified") else "no change",
                     f"{p['nodes_before']} → {p['nodes_after']}",
                     f"{_kib(p['bytes_moved_before'])} → {_kib(p['bytes_moved_after'])}",
                     ("" if not delta else f"{'+' if delta > 0 else '−'}{_kib(abs(delta))}"), listed])
    out.append(_table(["pass", "", "nodes", "bytes moved", "Δ bytes", "what changed"], prow, {2, 3, 4}))
    plan = entry.get("memory_plan")
    out.append("<h3>Memory plan</h3>")
    if plan:
        out += [_cards([("arena", _kib(plan.get("arena_bytes"))), ("naive (sum of buffers)",
                                                                   _kib(plan.get("naive_bytes"))),
                        ("lower bound (most bytes live at once)", _kib(plan.get("lower_bound_bytes"))),
                        ("buffers", _n(len(plan.get("buffers", []))))]),
                _plot(plots.memory_timeline(plan, data.live_bytes(plan), ids(f"memory-{name}")),
                      "(no buffers)")]
        brow = [[f"<code>{_e(b['value'])}</code>", _n(b["offset"]), _n(b["size"]),
                 f"{b['live'][0]}..{b['live'][1]}"] for b in plan.get("buffers", [])]
        out.append("<details><summary>the buffers</summary>"
                   + _table(["value", "offset", "bytes", "live steps"], brow, {1, 2}) + "</details>")
    else:
        out.append('<p class="note">No memory plan recorded for this target.</p>')
    return out


def _npu_config(artifact, entry: dict, run_report: dict | None) -> dict:
    if run_report:
        for seg in run_report.get("segments", []):
            config = (seg.get("report") or {}).get("config")
            if config:
                return config
    member = entry.get("config")
    if member and member in artifact.manifest.get("members", {}):
        return json.loads(artifact.read(member))
    raise LoweringError(f"{artifact.path}: custom target without an accelerator config member")


def _npu_section(artifact, manifest, report_entry, run_report, run_target, trace_href, ids, data,
                 plots) -> list[str]:
    config = _npu_config(artifact, manifest["targets"].get("custom", {}), run_report)
    layers = data.npu_layers(config, run_report, report_entry.get("kernels", []))
    simulated = run_report is not None
    out = ['<h2 id="npu">NPU-1 (target custom)</h2>',
           f'<p class="note">Accelerator config <code>{_e(config.get("name", "?"))}</code>: '
           f'{config["array_rows"]}x{config["array_cols"]} MAC array at {config.get("clock_mhz", "?")} MHz, '
           f'DRAM {config["dram_bytes_per_cycle"]} B/cycle, UB {_kib(config.get("ub_bytes"))}, '
           f'WB {_kib(config.get("wb_bytes"))}. '
           + (f"Numbers from a simulated run ({_e(run_target or 'custom')})." if simulated else
              "No run report: cycles and DRAM bytes are the compiler's predictions; for simulated numbers "
              "and energy, <code>lower run OUT.lwr --target custom --report report.html</code> (or "
              "<code>lower report OUT.lwr --run-report R.json</code>).") + "</p>"]
    if simulated:
        s = run_report["summary"]
        dram, energy = s.get("dram", {}), s.get("energy_pj", {})
        host = (run_report.get("wall") or {}).get("host") or []
        ops = run_report.get("operators") or {}
        comp = dram.get("compulsory_bytes")
        out.append(_cards([
            ("cycles", _n(s.get("cycles"))), ("simulated time", f"{s.get('time_us', 0):,.1f} µs"),
            ("MAC utilisation", f"{100 * s.get('mac_util', 0):.1f}%"),
            ("useful MACs", _n(s.get("macs_useful"))),
            ("achieved / peak TOPS", f"{s.get('achieved_tops', 0):.3f} / {s.get('peak_tops', 0):g}"),
            ("DRAM bytes (read + write)", _n(dram.get("bytes_total"))),
            ("x compulsory", f"{dram['bytes_total'] / comp:.2f}x" if comp else "-"),
            ("energy", f"{energy.get('total', 0) / 1e6:,.3f} µJ"),
            ("pJ per MAC", f"{energy.get('pj_per_mac', 0):.2f}"),
            ("operators npu / host", f"{ops.get('npu', '-')} / {ops.get('host', '-')}"),
            ("host time", f"{sum(h.get('time_s', 0) for h in host) * 1e3:.3f} ms")]))
    if trace_href:
        out.append(f'<p>Timeline trace (Chrome trace-event JSON): <a href="{_e(trace_href)}">{_e(trace_href)}'
                   "</a>. Open it in Perfetto (ui.perfetto.dev, “Open trace file”) or chrome://tracing.</p>")
    roof = data.roofline(config, layers)
    out += ["<h3>Roofline</h3>",
            '<p class="note">One point per layer: ops (2 per MAC) per DRAM byte across, achieved ops per '
            f"cycle up; roofs from the config: {roof['peak_ops_per_cycle']:g} ops/cycle compute, "
            f"{roof['dram_bytes_per_cycle']:g} B/cycle DRAM (ridge at {roof['ridge']:g} ops/B). "
            f"{'Simulated' if simulated else 'Predicted'} cycles and DRAM bytes.</p>",
            _plot(plots.roofline(roof, f"{'simulated' if simulated else 'predicted'} layers, config "
                                 f"{config.get('name', '?')}", ids("roofline")), "(no NPU layers)")]
    out += ["<h3>Layers</h3>", _plot(plots.npu_timeline(layers, ids("npu-timeline")), "(no timed layers)")]
    points = {p["name"]: p for p in roof["points"]}
    rows = []
    for layer in layers:
        p = points.get(layer["name"])
        dram = (f"{_n(layer['read'])} / {_n(layer['write'])}" if layer["read"] is not None
                else f"{_n(layer['dram'])} (total)")
        ratio = f"{layer['dram'] / layer['compulsory']:.2f}x" if layer.get("compulsory") else "-"
        rows.append([f"<code>{_e(layer['name'])}</code><br><span class=\"small\">{_e(layer['segment'])}"
                     "</span>", _e(layer["op"]), _names(layer["onnx_nodes"], 3), _n(layer["macs"]),
                     f"{_n(layer['start'])}–{_n(layer['end'])}", _n(layer["cycles"]),
                     f"{100 * layer['mac_util']:.1f}%",
                     f"{_e(layer['bound'])}<br>{_n(layer['roofline_cycles'])}",
                     dram, _n(layer["compulsory"]), ratio,
                     f"{p['intensity']:.1f}" if p else "-", f"{p['gops']:.1f}" if p else "-",
                     _kib(layer["sram_ub"]), f"{layer['energy_pj'] / 1e6:.3f}" if layer["energy_pj"] else "-",
                     _e(layer["tiling"])])
    out.append(_table(["layer", "op", "ONNX nodes", "MACs", "cycles start–end", "cycles", "mac_util",
                       "bound / roofline cycles", "DRAM read / write B", "compulsory B", "ratio",
                       "ops/B", "GOP/s", "UB peak", "energy µJ", "tiling"], rows,
                      {3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14}))
    if simulated:
        host = {h.get("name"): h for h in (run_report.get("wall") or {}).get("host") or []}
        hrows = [[f"<code>{_e(h.get('name'))}</code>", _n(h.get("operators")),
                  _e(", ".join(h.get("inputs", []))), _e(", ".join(h.get("outputs", []))),
                  f"{host.get(h.get('name'), {}).get('time_s', 0) * 1e3:.3f}"]
                 for h in run_report.get("host") or []]
        if hrows:
            out += ["<h3>Host steps</h3>",
                    _table(["step", "operators", "inputs", "outputs", "ms"], hrows, {1, 4})]
        totals = data.energy_totals(layers, run_report.get("summary"))
        erows = [[_e(part), f"{value / 1e6:,.3f}", f"{100 * value / (sum(totals.values()) or 1):.1f}%"]
                 for part, value in totals.items()]
        out += ["<h3>Energy</h3>",
                '<p class="note">Preset '
                f'{_e(run_report["summary"].get("energy_pj", {}).get("preset", "?"))}: '
                "action counts x energy per action (ACCELERATOR.md B.6).</p>",
                _plot(plots.energy(layers, totals, ids("energy")), "(no energy recorded)"),
                _table(["component", "µJ", "share"], erows, {1, 2})]
    return out


def write_page(path: Path, page: str) -> None:
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise LoweringError(f"{path}: cannot write ({exc.strerror or exc})") from None


def trace_link(report_path: Path, trace_path: Path | None) -> str | None:
    """The trace file's address relative to the page's folder (the two usually sit side by side)."""
    if trace_path is None:
        return None
    return Path(os.path.relpath(Path(trace_path).resolve(), Path(report_path).resolve().parent)).as_posix()


def write_run_page(path: Path, artifact: Path, run_report: dict, run_target: str,
                   trace_path: Path | None = None) -> None:
    """``lower run ... --report report.html``: the artifact's page with the run's simulator report."""
    write_page(path, build_page(artifact, run_report=run_report, run_target=run_target,
                                trace_href=trace_link(path, trace_path)))


@click.command("report")
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML page (default: ARTIFACT with .html).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="The source ONNX model, to draw every node of the graph before optimisation (the "
                   "artifact stores only the names of the nodes fused into each kernel).")
@click.option("--run-report", "run_report", type=click.Path(dir_okay=False, path_type=Path),
              help="A custom-target run report (lower run OUT.lwr --target custom --report R.json): "
                   "simulated cycles, DRAM bytes and energy instead of the compiler's predictions.")
@click.option("--trace", "trace", type=click.Path(dir_okay=False, path_type=Path),
              help="The run's trace (lower run ... --trace T.json), linked from the page.")
def report_command(artifact, output, model, run_report, trace):
    """Write one self-contained HTML page about ARTIFACT: the graph before and after optimisation, the
    passes and the bytes they moved, the memory plan, and for the custom target the NPU-1 layers, a
    roofline of every layer and (with --run-report) the energy. Needs matplotlib (pip install
    'lowering[report]')."""
    require_matplotlib()
    if output is None:
        output = artifact.with_suffix(".html")
    if output.suffix.lower() not in (".html", ".htm"):
        raise LoweringError(f"-o {output}: the report is HTML; give a path ending in .html")
    if trace is not None and not trace.is_file():
        raise LoweringError(f"--trace {trace}: no such file")
    if model is not None and not model.is_file():
        raise LoweringError(f"--model {model}: no such file")
    run = load_run_report(run_report) if run_report is not None else None
    write_page(output, build_page(artifact, model=model, run_report=run,
                                  trace_href=trace_link(output, trace)))
    click.echo(f"wrote {output}")

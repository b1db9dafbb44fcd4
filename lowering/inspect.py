"""``lower inspect``: a readable account of an artifact (manifest, targets, passes, kernels, memory)."""

from __future__ import annotations

import json

from runtime.artifact import open_artifact


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def describe(path, as_json: bool = False) -> str:
    artifact = open_artifact(path)
    manifest = artifact.manifest
    report = json.loads(artifact.read("report.json")) if "report.json" in manifest["members"] else {}
    if as_json:
        return json.dumps({"manifest": manifest, "report": report}, indent=2, sort_keys=True)
    lines = [f"artifact {artifact.path}",
             f"  format {manifest['format']} v{manifest['format_version']}, produced by "
             f"{manifest['producer']['name']} {manifest['producer']['version']}",
             f"  model {manifest['model']['name']} (sha256 {manifest['model']['sha256'][:16]}...)"]
    for kind in ("inputs", "outputs"):
        for t in manifest[kind]:
            lines.append(f"  {kind[:-1]} {t['name']}: {t['dtype']}{t['shape']}")
    lines.append("members:")
    for name, meta in sorted(manifest["members"].items()):
        lines.append(f"  {name:<24} {meta['size']:>10} B  sha256 {meta['sha256'][:16]}...")
    for name, entry in manifest["targets"].items():
        lines.append(f"target {name}: " + ", ".join(
            f"{k}={v}" for k, v in sorted(entry.items()) if not isinstance(v, (dict, list))))
        if entry.get("requires"):
            lines.append(f"  requires {json.dumps(entry['requires'], sort_keys=True)}")
        lines += _describe_report(report.get("targets", {}).get(name, {}))
    if "quantization" in report:
        from .quantize import format_report

        table = format_report(report["quantization"]).splitlines()
        lines += ["quantization:"] + ["  " + line for line in table]
    return "\n".join(lines)


def _describe_report(rep: dict) -> list[str]:
    lines = ["  passes:"]
    for p in rep.get("passes", []):
        lines.append(f"    {p['name']:<22} {'changed' if p['modified'] else 'no change':<9} "
                     f"nodes {p['nodes_before']:>4} -> {p['nodes_after']:<4} bytes moved "
                     f"{_kib(p['bytes_moved_before'])} -> {_kib(p['bytes_moved_after'])}")
        for change in p["changes"][:8]:
            lines.append(f"      - {change}")
        if len(p["changes"]) > 8:
            lines.append(f"      - ... {len(p['changes']) - 8} more")
    kernels = rep.get("kernels", [])
    lines.append(f"  kernels ({len(kernels)}):")
    for k in kernels:
        sources = ", ".join(k.get("sources", []))
        lines.append(f"    {k.get('name', '?'):<28} {k.get('op', '?'):<28} "
                     f"r {_kib(k.get('bytes_read', 0)):>10} w {_kib(k.get('bytes_written', 0)):>10}"
                     f"  <- {sources}")
    plan = rep.get("memory_plan")
    if plan:
        lines.append(f"  memory plan: arena {_kib(plan['arena_bytes'])}, naive sum "
                     f"{_kib(plan['naive_bytes'])}, lower bound (most bytes live at once) "
                     f"{_kib(plan['lower_bound_bytes'])}, {len(plan['buffers'])} buffers")
        for b in plan["buffers"]:
            lines.append(f"    {b['value']:<32} offset {b['offset']:>9} size {b['size']:>9} "
                         f"live steps {b['live'][0]}..{b['live'][1]}")
    return lines

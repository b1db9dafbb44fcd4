"""``lower merge``: one artifact from artifacts of the same model built on different machines.

A CI matrix builds each target where its toolchain lives (cuda on one runner, cpu on another); merging
their artifacts gives the artifact a single ``lower --target cpu,cuda`` would have written (byte for byte,
when the inputs are given in that target order). Rules:

- every input is fully verified first (``runtime.artifact.open_artifact``: hashes, names, format);
- they must come from the same source model (``model.sha256``), the same producer version, the same
  compile options apart from the target list, and have the same input/output signature; otherwise the
  merge is refused with one line naming the first field that differs;
- a target present in several inputs must be byte-identical in each (its manifest entry and every member
  under ``<target>/``), otherwise refused;
- the result: the targets in order of first appearance, each target's members and manifest entry,
  ``report.json`` the first input's with the union of the per-target sections, ``graph.onnx`` and the
  other shared members the first input's (other shared members must be identical);
- written like every artifact: atomically and deterministically (same inputs in the same order, same bytes).
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.artifact import FORMAT_VERSION, open_artifact

from .artifact import write_artifact
from .errors import LoweringError

#: members every artifact has that belong to no single target
REPORT, GRAPH = "report.json", "graph.onnx"


def _owner(member: str, targets) -> str | None:
    head = member.split("/", 1)[0]
    return head if "/" in member and head in targets else None


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def _first_difference(a, b, prefix: str) -> str | None:
    """The dotted path of the first differing field of two JSON values (None when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{prefix}.{key}"
            found = _first_difference(a[key], b[key], f"{prefix}.{key}")
            if found:
                return found
        return None
    return None if a == b else prefix


def _lookup(value, path: str):
    for key in path.split(".")[1:]:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def merge_artifacts(paths: list, output, log=lambda message: None) -> dict:
    """Merge the artifacts at ``paths`` into ``output``. Returns the written manifest."""
    if not paths:
        raise LoweringError("merge: no input artifacts")
    arts = [open_artifact(p) for p in paths]
    first = arts[0]
    for art in arts:
        version = art.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise LoweringError(f"merge: {art.path}: artifact format version {version}; this lowering writes "
                                f"version {FORMAT_VERSION} (rebuild it)")
    ref = first.manifest
    ref_options = {k: v for k, v in (ref.get("options") or {}).items() if k != "targets"}
    for art in arts[1:]:
        m = art.manifest
        options = {k: v for k, v in (m.get("options") or {}).items() if k != "targets"}
        for what, a, b, kind in (
            ("model", {"sha256": (ref.get("model") or {}).get("sha256")},
             {"sha256": (m.get("model") or {}).get("sha256")}, "a different source model"),
            ("producer", ref.get("producer"), m.get("producer"), "a different lowering version"),
            ("options", ref_options, options, "different compile options"),
            ("inputs", ref["inputs"], m["inputs"], "a different input signature"),
            ("outputs", ref["outputs"], m["outputs"], "a different output signature"),
        ):
            field = _first_difference(a, b, what)
            if field:
                raise LoweringError(
                    f"merge: {art.path} was built with {kind} than {first.path} ({field}: "
                    f"{_short(_lookup(b, field))} vs {_short(_lookup(a, field))})")
    order: list[str] = []
    owner: dict[str, object] = {}  # target -> the artifact it is taken from
    for art in arts:
        for name in (art.manifest.get("options") or {}).get("targets") or sorted(art.targets):
            if name in art.targets and name not in owner:
                owner[name] = art
                order.append(name)
        for name in sorted(art.targets):  # targets the options do not list (hand-made artifacts)
            if name not in owner:
                owner[name] = art
                order.append(name)
    for art in arts:
        for name in art.targets:
            src = owner[name]
            if src is art:
                continue
            differs = _target_difference(src, art, name)
            if differs:
                raise LoweringError(f"merge: target {name} is in both {src.path} and {art.path} but they "
                                    f"differ ({differs}); merge only one of them")
    files: dict[str, bytes] = {}
    for name in order:
        src = owner[name]
        for member in src.member_names():
            if _owner(member, src.targets) == name:
                files[member] = src.read(member)
    shared_seen: dict[str, object] = {}
    for art in arts:
        for member in art.member_names():
            if member in (REPORT, GRAPH) or _owner(member, art.targets) is not None:
                continue
            if member in shared_seen and shared_seen[member].read(member) != art.read(member):
                raise LoweringError(f"merge: member '{member}' differs between "
                                    f"{shared_seen[member].path} and "
                                    f"{art.path}")
            if member not in files:
                files[member] = art.read(member)
                shared_seen[member] = art
    if GRAPH in first.member_names():
        files[GRAPH] = first.read(GRAPH)
    reports = [_report(art) for art in arts]
    report = dict(reports[0])
    report["targets"] = {name: reports[arts.index(owner[name])].get("targets", {}).get(name)
                         for name in order if name in reports[arts.index(owner[name])].get("targets", {})}
    files[REPORT] = json.dumps(report, indent=2, sort_keys=True).encode() + b"\n"
    base = {k: v for k, v in ref.items() if k not in ("format", "format_version", "producer", "members")}
    base["targets"] = {name: owner[name].targets[name] for name in order}
    base["options"] = {**(ref.get("options") or {}), "targets": order}
    for art in arts:
        log(f"merge: {art.path}: {', '.join(n for n in order if owner[n] is art) or 'nothing new'}")
    return write_artifact(output, base, files, producer=ref.get("producer"))


def _report(art) -> dict:
    if REPORT not in art.member_names():
        return {}
    try:
        report = json.loads(art.read(REPORT))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoweringError(f"merge: {art.path}: {REPORT} is not valid JSON ({exc})") from None
    if not isinstance(report, dict):
        raise LoweringError(f"merge: {art.path}: {REPORT} is not a JSON object")
    return report


def _target_difference(a, b, name: str) -> str | None:
    if a.targets[name] != b.targets[name]:
        return f"manifest {_first_difference(a.targets[name], b.targets[name], 'targets.' + name)}"
    ma = {m for m in a.member_names() if _owner(m, a.targets) == name}
    mb = {m for m in b.member_names() if _owner(m, b.targets) == name}
    if ma != mb:
        return f"members {', '.join(sorted(ma ^ mb))}"
    for member in sorted(ma):
        if a.read(member) != b.read(member):
            return f"member {member}"
    return None


def describe(manifest: dict, path: Path) -> str:
    return f"wrote {path} (targets: {', '.join(manifest['targets'])})"

"""Rewrite the generated blocks of README.md: the CLI commands, the speed table and the conformance totals.

    python docs/make_readme_tables.py                      # rewrite README.md's generated blocks
    python docs/make_readme_tables.py --check              # exit 1 when README.md is stale
    python docs/make_readme_tables.py --bench-json /tmp/zoo/bench_zoo.json
                                   # a new bench_zoo run: copy it to docs/results/bench_zoo.json, rewrite

A generated block sits between two marker comments, and only its inside is rewritten::

    <!-- generated:bench (any text up to the end of the comment) -->
    ...
    <!-- end generated:bench -->

Blocks and their sources:

- ``cli``: one row per ``lower`` command, its first help sentence, linking to ``docs/cli.md`` (itself
  generated from ``--help`` by ``docs/make_cli_md.py``).
- ``bench``: the speed table, from ``docs/results/bench_zoo.json`` (what ``examples/bench_zoo.py OUTDIR``
  writes to ``OUTDIR/bench_zoo.json``: one ``lowering.bench.benchmark`` result per model and thread
  count, plus ``name``).
- ``conformance``: the totals of ``docs/conformance.md`` (written by ``python -m tests.conformance.run``),
  with the failures by stage and the ops missing most often.

``tests/examples/test_readme.py`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BENCH_JSON = ROOT / "docs" / "results" / "bench_zoo.json"
CONFORMANCE_MD = ROOT / "docs" / "conformance.md"
BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w-]+)\b[^>]*-->\n)(?P<body>.*?)"
                   r"(<!-- end generated:(?P=name) -->)", re.DOTALL)


class SourceError(Exception):
    """A source file is missing or not in the format expected; the message names it."""


# ------------------------------------------------------------------------------------------------- cli


def cli_block() -> str:
    sys.path.insert(0, str(ROOT))
    import click

    from lowering.cli import cli

    top = click.Context(cli, info_name="lower", **cli.context_settings)
    lines = ["| command | what it does |", "|---|---|"]
    for name in cli.list_commands(top):
        command = cli.get_command(top, name)
        summary = _first_sentence(command.help or "")
        lines.append(f"| [`lower {name}`](docs/cli.md#lower-{name}) | {summary} |")
    return "\n".join(lines)


def _first_sentence(text: str) -> str:
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", paragraph)
    sentence = paragraph[:match.start()] if match else paragraph
    if len(sentence) > 100:  # too long for a table cell: drop asides, then a list after a colon
        sentence = re.sub(r"\s*\([^()]*\)", "", sentence)
    if len(sentence) > 100 and ": " in sentence:
        sentence = sentence.split(": ")[0]
    return sentence.replace("|", "\\|") + "."


# ----------------------------------------------------------------------------------------------- bench


def bench_block(path: Path) -> str:
    results = _load_bench(path)
    lines = ["| model | threads | lowering (ms) | ONNX Runtime (ms) | speed-up | p90 speed-up |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        p90 = r.get("speedup_p90")
        lines.append(f"| {r['name']} | {r['threads']} | {_ms(r['lowering']['median_ms'])} | "
                     f"{_ms(r['onnxruntime']['median_ms'])} | {r['speedup']:.2f}x | "
                     f"{'' if p90 is None else f'{p90:.2f}x'} |")
    threads = sorted({r["threads"] for r in results})
    for t in threads:
        ups = [r["speedup"] for r in results if r["threads"] == t]
        lines.append(f"| **geometric mean** | {t} | | | **{_geomean(ups):.2f}x** | |")
    names = list(dict.fromkeys(r["name"] for r in results))
    faster = [n for n in names if all(r["speedup"] > 1 for r in results if r["name"] == n)]
    slower = [n for n in names if all(r["speedup"] < 1 for r in results if r["name"] == n)]
    mixed = [n for n in names if n not in faster and n not in slower]
    summary = []
    for label, group in (("faster than ONNX Runtime at every thread count", faster),
                         ("slower at every thread count", slower), ("faster at some thread counts", mixed)):
        if group:
            summary.append(f"{label}: {', '.join(group)}")
    lines += ["", _wrap(_capitalize("; ".join(summary)) + ".")]
    caption = _bench_caption(results)
    if caption:
        lines += ["", _wrap(caption)]
    return "\n".join(lines)


def _load_bench(path: Path) -> list[dict]:
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: cannot read the benchmark results ({exc})") from None
    if not isinstance(results, list) or not results:
        raise SourceError(f"{path}: expected a non-empty list of results (examples/bench_zoo.py's format)")
    for i, r in enumerate(results):
        try:
            float(r["lowering"]["median_ms"]), float(r["onnxruntime"]["median_ms"]), float(r["speedup"])
            str(r["name"]), int(r["threads"])
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{path}: result {i} lacks name, threads, speedup or a side's "
                              "median_ms") from None
    return results


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _bench_caption(results: list[dict]) -> str:
    """Where the numbers come from, as far as the results record it (the same for every result, or
    nothing is said)."""
    def common(key):
        values = {json.dumps(r.get(key), sort_keys=True) for r in results}
        return json.loads(values.pop()) if len(values) == 1 else None

    parts = []
    versions = common("versions") or {}
    if versions.get("onnxruntime"):
        parts.append(f"ONNX Runtime {versions['onnxruntime']}")
    machine = common("machine") or {}
    if machine.get("cpu") or machine.get("cores"):
        cpu = machine.get("cpu") or "a CPU"
        parts.append(f"{cpu}, {machine['cores']} cores" if machine.get("cores") else cpu)
    runs = [r["lowering"].get("runs") for r in results]
    if all(isinstance(n, int) for n in runs):
        span = f"{min(runs)}" if min(runs) == max(runs) else f"{min(runs)} to {max(runs)}"
        parts.append(f"{span} timed runs per side")
    note = common("note")
    text = "Measured with " + "; ".join(parts) + "." if parts else ""
    return f"{text} {note}".strip() if note else text


# ----------------------------------------------------------------------------------------- conformance


def conformance_block(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the conformance table ({exc})") from None
    totals = _section(path, text, "Totals")
    table = [line for line in totals.splitlines() if line.startswith("|")]
    if len(table) < 3:
        raise SourceError(f"{path}: the Totals section has no table")
    lines = list(table)
    failures = next((body for title, body in _sections(text) if title.startswith("Failures")), None)
    if failures is not None:
        lines += ["", _wrap(_failure_summary(failures))]
    ops = next((body for title, body in _sections(text) if title.startswith("Missing ops")), None)
    if ops is not None:
        ranked = re.findall(r"^\| ([\w.:]+) \| (\d+) \|$", ops, re.MULTILINE)
        if ranked:
            top = ", ".join(f"{op} ({count})" for op, count in ranked[:8])
            lines += ["", _wrap(f"The missing ops failing the most tests: {top}.")]
    return "\n".join(lines)


def _failure_summary(failures: str) -> str:
    """One paragraph from a "Failures" section: by stage, then by kind of refusal."""
    line = re.search(r"^Stages: (.*)\.$", failures, re.MULTILINE)
    stages = {stage: int(n) for stage, n in re.findall(r"(\w+) (\d+)", line.group(1) if line else "")}
    counts = [(int(n), error) for n, error in re.findall(r"^\| (\d+) \| \w+ \| (.*?) \| ", failures,
                                                         re.MULTILINE)]
    total = sum(n for n, _ in counts)
    if not total:
        return "No test failed."
    missing = sum(n for n, e in counts if "unsupported ops" in e or "is not supported by the" in e)
    constant = sum(n for n, e in counts if re.search(r"must be (a |compile-time )*constants?\b", e))
    wrong = stages.get("mismatch", 0)
    ran = stages.get("run", 0)
    kinds = (f"{missing} name an op the compiler or the target does not have, {constant} an operand the "
             "target needs constant that the test feeds at run time (axes, scales, sizes)"
             + (f", {ran} stop at run time on an operand that contradicts the compiled shapes" if ran else "")
             + f", {total - missing - constant - ran - wrong} another refusal (an attribute, a dtype, a "
             "shape)"
             + (f", {wrong} give results outside the test's tolerance" if wrong else ""))
    if set(stages) == {"compile"}:
        return (f"No test gives a wrong result or crashes: all {total} failures are compile-time refusals "
                f"naming the op or operand at fault. {_capitalize(kinds)}.")
    shown = ", ".join(f"{stage} {n}" for stage, n in stages.items()) or "not recorded"
    return f"Failures by stage: {shown}. Of the {total} failures, {kinds}."


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=110, break_long_words=False, break_on_hyphens=False)


def _sections(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^## (.*)$", text, flags=re.MULTILINE)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def _section(path: Path, text: str, title: str) -> str:
    for name, body in _sections(text):
        if name == title:
            return body
    raise SourceError(f"{path}: no '## {title}' section")


# ---------------------------------------------------------------------------------------------- readme


def render(readme: str, bench_json: Path, conformance: Path) -> str:
    makers = {"cli": cli_block, "bench": lambda: bench_block(bench_json),
              "conformance": lambda: conformance_block(conformance)}
    seen = set()

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in makers:
            raise SourceError(f"README: unknown generated block '{name}' (known: {', '.join(makers)})")
        seen.add(name)
        return match.group(1) + makers[name]().rstrip("\n") + "\n" + match.group(4)

    text = BLOCK.sub(replace, readme)
    missing = sorted(set(makers) - seen)
    if missing:
        raise SourceError(f"README: no generated block for {', '.join(missing)} (markers "
                          f"'<!-- generated:NAME -->' ... '<!-- end generated:NAME -->')")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale; write nothing")
    parser.add_argument("--bench-json", type=Path, default=BENCH_JSON,
                        help="bench_zoo.json to tabulate (default docs/results/bench_zoo.json); another "
                             "file is copied there first (not with --check)")
    parser.add_argument("--conformance", type=Path, default=CONFORMANCE_MD,
                        help="the conformance table (default docs/conformance.md)")
    parser.add_argument("--readme", type=Path, default=README, help="the README to rewrite or check")
    args = parser.parse_args(argv)
    try:
        current = args.readme.read_text()
        text = render(current, args.bench_json, args.conformance)
    except (OSError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if current != text:
            print(f"{args.readme} is stale: run python docs/make_readme_tables.py", file=sys.stderr)
            return 1
        print(f"{args.readme} is current")
        return 0
    if args.bench_json.resolve() != BENCH_JSON.resolve():
        BENCH_JSON.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.bench_json, BENCH_JSON)
        print(f"copied {args.bench_json} to {BENCH_JSON.relative_to(ROOT)}")
    if text != current:
        args.readme.write_text(text)
        print(f"wrote {args.readme}")
    else:
        print(f"{args.readme} is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The README: its two commands come first, its generated blocks (docs/make_readme_tables.py: the command
table from --help, the speed table from docs/results/bench_zoo.json, the conformance totals from
docs/conformance.md) are current, and its links lead to files that exist. After changing a help text, a
result file or the conformance table: python docs/make_readme_tables.py."""

import importlib.util
import json
import re

import pytest

from .conftest import ROOT, run_script

pytestmark = [pytest.mark.unit]

README = ROOT / "README.md"
SCRIPT = ROOT / "docs" / "make_readme_tables.py"


def _tables():
    spec = importlib.util.spec_from_file_location("make_readme_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_are_current():
    done = run_script(SCRIPT, "--check")
    assert done.returncode == 0, done.stderr + " (run: python docs/make_readme_tables.py)"


def test_the_two_commands_come_first():
    text = README.read_text()
    headings = re.findall(r"^## (.*)$", text, re.MULTILINE)
    assert headings[0] == "The two commands", headings[:3]
    intro = text.split("\n## ", 1)[0]
    assert len(intro.splitlines()) <= 10, "keep the 'what it is' paragraph short"
    first = text.split("\n## ", 2)[1]
    assert "make demo" in first and "make test" in first


def test_check_fails_on_a_stale_table(tmp_path):
    tables = _tables()
    stale = tmp_path / "README.md"
    stale.write_text(README.read_text().replace("| **geometric mean** |", "| **geomean** |", 1))
    assert tables.main(["--check", "--readme", str(stale)]) == 1
    results = json.loads((ROOT / "docs" / "results" / "bench_zoo.json").read_text())
    results[0]["speedup"] *= 2
    changed = tmp_path / "bench_zoo.json"
    changed.write_text(json.dumps(results))
    assert tables.main(["--check", "--bench-json", str(changed)]) == 1


def test_bench_block_from_results(tmp_path):
    def result(name, threads, ours, theirs):
        return {"name": name, "threads": threads, "lowering": {"median_ms": ours, "runs": 40},
                "onnxruntime": {"median_ms": theirs, "runs": 40}, "speedup": theirs / ours,
                "speedup_p90": 1.0, "versions": {"onnxruntime": "9.9"}, "machine": {"cpu": "X", "cores": 4}}

    path = tmp_path / "bench_zoo.json"
    results = [result("a", 1, 2.0, 4.0), result("b", 1, 0.5, 0.25), result("a", 2, 1.0, 1.0)]
    path.write_text(json.dumps(results))
    block = _tables().bench_block(path)
    assert "| a | 1 | 2.00 | 4.00 | 2.00x | 1.00x |" in block
    assert "| b | 1 | 0.500 | 0.250 | 0.50x | 1.00x |" in block
    assert "| **geometric mean** | 1 | | | **1.00x** | |" in block
    assert "| **geometric mean** | 2 | | | **1.00x** | |" in block
    prose = " ".join(block.split())
    assert "Slower at every thread count: b" in prose and "faster at some thread counts: a" in prose
    assert "ONNX Runtime 9.9; X, 4 cores; 40 timed runs per side" in prose


def test_errors_name_the_source(tmp_path):
    tables = _tables()
    bad = tmp_path / "bench_zoo.json"
    bad.write_text(json.dumps([{"name": "a"}]))
    with pytest.raises(tables.SourceError, match="result 0 lacks"):
        tables.bench_block(bad)
    with pytest.raises(tables.SourceError, match="no generated block for bench"):
        tables.render("no markers\n", bad, ROOT / "docs" / "conformance.md")


@pytest.mark.parametrize("doc", ["README.md", "docs/artifact.md", "docs/accelerator.md", "docs/extending.md",
                                 "docs/examples.md", "docs/report.md", "examples/README.md"])
def test_links_lead_to_files(doc):
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{doc}: link to {target}, which does not exist"

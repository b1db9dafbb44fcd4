"""`lower report OUT.lwr -o report.html` and `lower run ... --report report.html`: one self-contained page.
Checked on a real artifact (the example CNN, int8, custom target): the HTML parses, has every section and
plot, references nothing on the network, names every kernel and every ONNX node fused into it, and the
numbers it plots agree with an independent numpy computation from the JSON reports."""

import json
import re
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from lowering.reporting import data
from runtime.artifact import open_artifact

from .conftest import EXAMPLES, lower

pytestmark = [pytest.mark.e2e]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
RUN_PLOTS = ["fusion-custom", "passes-custom", "memory-custom", "roofline", "npu-timeline", "energy"]


class _Checker(HTMLParser):
    """Every element closed in order (void elements aside), plus what the tests look at."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.ids, self.plots, self.hrefs, self.tags = [], [], set(), [], [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "id" in attrs and tag not in ("path", "g", "clipPath", "clippath", "rect", "use", "text"):
            self.ids.add(attrs["id"])
        if tag == "svg" and attrs.get("class") == "plot":
            self.plots.append(attrs.get("data-plot"))
        if tag == "a":
            self.hrefs.append(attrs.get("href"))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()


def parse(text: str) -> _Checker:
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.errors == [] and checker.stack == [], (checker.errors[:5], checker.stack)
    return checker


def assert_self_contained(text: str) -> None:
    assert not re.search(r"""(?:src|href|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", text, re.I)
    assert "@import" not in text and "<script" not in text.lower() and "<link" not in text.lower()
    assert "<iframe" not in text.lower() and "<img" not in text.lower()


def test_report_page_has_every_section_and_plot(npu_run):
    text = npu_run.html.read_text()
    page = parse(text)
    assert {"overview", "target-custom", "npu", "quantization"} <= page.ids
    assert page.plots == RUN_PLOTS
    for heading in ("Graph before and after optimisation", "Passes", "Memory plan", "Roofline", "Layers",
                    "Energy", "Host steps"):
        assert f">{heading}<" in text
    assert_self_contained(text)
    assert "trace.json" in page.hrefs
    # every plot is an SVG with drawn content, no empty figure
    for svg in re.findall(r'<svg class="plot".*?</svg>', text, re.S):
        assert len(re.findall(r"<(?:path|use|rect|text)\b", svg)) > 10


def test_report_names_every_kernel_and_fused_node(npu_run):
    text = npu_run.html.read_text()
    report = json.loads(open_artifact(npu_run.artifact).read("report.json"))
    kernels = report["targets"]["custom"]["kernels"]
    assert kernels
    import html

    for k in kernels:
        assert html.escape(k["name"]) in text
        for node in data.kernel_sources(k):
            assert html.escape(node) in text, node
    for p in report["targets"]["custom"]["passes"]:
        assert f"<code>{html.escape(p['name'])}</code>" in text


def test_roofline_points_match_numpy(npu_run):
    run = json.loads(npu_run.run_json.read_text())
    config = run["segments"][0]["report"]["config"]
    layers = data.npu_layers(config, run)
    real = [layer for layer in run["layers"] if layer["op_type"] != "FINISH"]
    assert [row["name"] for row in layers] == [layer["layer"] for layer in real]
    macs = np.array([layer["macs"] for layer in real], dtype=np.float64)
    cycles = np.array([layer["cycles"] for layer in real], dtype=np.float64)
    dram = np.array([layer["dram_read_bytes"] + layer["dram_write_bytes"] for layer in real], np.float64)
    roof = data.roofline(config, layers)
    assert roof["peak_ops_per_cycle"] == 2 * config["array_rows"] * config["array_cols"]
    assert roof["dram_bytes_per_cycle"] == config["dram_bytes_per_cycle"]
    got = {p["name"]: p for p in roof["points"]}
    assert len(got) == len(real)  # every NPU layer of this model has MACs
    with np.errstate(divide="ignore"):
        intensity = np.where(dram > 0, 2 * macs / dram, np.inf)
    achieved = 2 * macs / cycles
    for i, layer in enumerate(real):
        p = got[layer["layer"]]
        np.testing.assert_allclose(p["intensity"], intensity[i], rtol=1e-12)
        np.testing.assert_allclose(p["ops_per_cycle"], achieved[i], rtol=1e-12)
        attainable = min(roof["peak_ops_per_cycle"], config["dram_bytes_per_cycle"] * intensity[i])
        assert p["ops_per_cycle"] <= attainable * (1 + 1e-9), layer["layer"]  # nothing beats the roof
        # the simulator's own bound agrees with which roof the layer sits under
        memory_bound = dram[i] / config["dram_bytes_per_cycle"] > macs[i] / (config["array_rows"] *
                                                                              config["array_cols"])
        assert (layer["bound"] == "memory") == memory_bound, layer["layer"]
    # each layer is plotted: its name is in the roofline's legend
    text = npu_run.html.read_text()
    svg = re.search(r'<svg class="plot" data-plot="roofline".*?</svg>', text, re.S).group(0)
    for layer in real:
        assert layer["layer"][-30:] in svg


def test_energy_and_memory_plot_data_match_numpy(npu_run):
    run = json.loads(npu_run.run_json.read_text())
    config = run["segments"][0]["report"]["config"]
    layers = data.npu_layers(config, run)
    totals = data.energy_totals(layers, run["summary"])
    parts = np.array([sum(layer["energy_breakdown_pj"].get(p, 0.0) for layer in run["layers"])
                      for p in data.ENERGY_PARTS])
    np.testing.assert_allclose(list(totals.values()), parts, rtol=1e-6)
    np.testing.assert_allclose(sum(totals.values()), run["summary"]["energy_pj"]["total"], rtol=1e-9)
    plan = json.loads(open_artifact(npu_run.artifact).read("report.json"))["targets"]["custom"]["memory_plan"]
    steps = max(b["live"][1] for b in plan["buffers"]) + 1
    live = np.zeros(steps, dtype=np.int64)
    for b in plan["buffers"]:
        live[b["live"][0]:b["live"][1] + 1] += b["size"]
    assert data.live_bytes(plan) == live.tolist()
    assert live.max() == plan["lower_bound_bytes"]  # the plan's lower bound: most bytes live at once


def test_lower_run_writes_html_with_trace_link(npu_run, capsys):
    out = npu_run.dir / "run"
    out.mkdir(exist_ok=True)
    page, trace = out / "r.html", out / "traces" / "t.json"
    trace.parent.mkdir(exist_ok=True)
    assert lower("run", npu_run.artifact, "--target", "custom", "--inputs", EXAMPLES / "cnn_input.npz",
                 "--report", page, "--trace", trace) == 0
    text = page.read_text()
    checker = parse(text)
    assert checker.plots == RUN_PLOTS
    assert "traces/t.json" in checker.hrefs and trace.is_file()
    assert_self_contained(text)
    assert f"wrote {page}" in capsys.readouterr().out
    # a .json path keeps today's JSON report
    assert lower("run", npu_run.artifact, "--target", "custom", "--report", out / "r.json") == 0
    assert "layers" in json.loads((out / "r.json").read_text())


def test_report_without_a_run_shows_the_compilers_predictions(npu_run):
    page = npu_run.dir / "predicted.html"
    assert lower("report", npu_run.artifact, "-o", page, "--model", EXAMPLES / "cnn.onnx") == 0
    text = page.read_text()
    checker = parse(text)
    assert checker.plots == ["fusion-custom", "passes-custom", "memory-custom", "roofline", "npu-timeline"]
    assert "compiler&#x27;s predictions" in text or "compiler's predictions" in text
    assert ">Energy<" not in text
    # --model: every node of the source model is drawn by name in the before column
    svg = re.search(r'<svg class="plot" data-plot="fusion-custom".*?</svg>', text, re.S).group(0)
    import onnx

    nodes = onnx.load(str(EXAMPLES / "cnn.onnx")).graph.node
    assert f"before: {len(nodes)} ONNX nodes" in svg
    for node in nodes:
        assert node.name[-30:] in svg, node.name
    assert "not the model this artifact was built from" not in text  # the manifest's hash is the source's


def test_report_says_when_model_is_not_the_source(npu_run, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="only_relu")], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    page = tmp_path / "other.html"
    assert lower("report", npu_run.artifact, "-o", page, "--model", tmp_path / "other.onnx") == 0
    text = page.read_text()
    assert "not the model this artifact was built from" in text
    assert "the given model does not have" in text and "only_relu" in text


def test_default_output_path_is_the_artifact_with_html(npu_run, tmp_path, capsys):
    artifact = tmp_path / "a.lwr"
    artifact.write_bytes(npu_run.artifact.read_bytes())
    assert lower("report", artifact) == 0
    assert (tmp_path / "a.html").is_file()
    assert f"wrote {tmp_path / 'a.html'}" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (lambda r: ["report", r.artifact, "-o", r.dir / "x.txt"], ["-o", "x.txt", ".html"]),
    (lambda r: ["report", r.artifact, "-o", r.dir / "x.html", "--run-report", r.trace], ["--run-report",
                                                                                         "trace.json"]),
    (lambda r: ["report", r.artifact, "-o", r.dir / "x.html", "--run-report", r.dir / "nope.json"],
     ["--run-report", "nope.json"]),
    (lambda r: ["report", r.dir / "missing.lwr"], ["missing.lwr"]),
    (lambda r: ["report", r.artifact, "--trace", r.dir / "gone.json"], ["--trace", "gone.json"]),
    (lambda r: ["report", r.artifact, "-o", r.dir / "x.html", "--model", r.run_json],
     ["--model", "run.json"]),
    (lambda r: ["run", r.artifact, "--target", "cpu", "--report", r.dir / "x.html"], ["cnn.int8.lwr", "cpu"]),
])
def test_mistakes_are_one_line_errors(npu_run, capsys, args, words):
    assert lower(*args(npu_run)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


def test_without_matplotlib_the_command_says_how_to_install_it(npu_run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    for args in (["report", npu_run.artifact, "-o", npu_run.dir / "y.html"],
                 ["run", npu_run.artifact, "--target", "custom", "--report", npu_run.dir / "y.html"]):
        assert lower(*args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "pip install 'lowering[report]'" in err, err
    assert not (npu_run.dir / "y.html").exists()


def test_the_page_is_deterministic(npu_run, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    for page in (a, b):
        assert lower("report", npu_run.artifact, "-o", page, "--run-report", npu_run.run_json) == 0
    assert a.read_bytes() == b.read_bytes()

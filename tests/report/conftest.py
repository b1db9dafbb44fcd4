"""One real artifact for the report tests: the bundled example CNN quantized to int8 and lowered for the
custom target (NPU-1 segments and host segments), run once on the simulator with a JSON report and a trace."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from lowering.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def lower(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="session")
def npu_run(tmp_path_factory):
    pytest.importorskip("matplotlib", reason="the HTML report needs pip install 'lowering[report]'")
    d = tmp_path_factory.mktemp("report")
    artifact = d / "cnn.int8.lwr"
    assert lower(EXAMPLES / "cnn.onnx", "--target", "custom", "--quantize", "int8", "--calibration",
                 EXAMPLES / "cnn_calibration.npz", "-o", artifact) == 0
    run_json, trace = d / "run.json", d / "trace.json"
    assert lower("run", artifact, "--target", "custom", "--inputs", EXAMPLES / "cnn_input.npz", "--report",
                 run_json, "--trace", trace) == 0
    html = d / "report.html"
    assert lower("report", artifact, "-o", html, "--run-report", run_json, "--trace", trace) == 0
    return SimpleNamespace(dir=d, artifact=artifact, run_json=run_json, trace=trace, html=html)


def chromium() -> str | None:
    """The system's Chromium (Debian: ``apt-get install chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None

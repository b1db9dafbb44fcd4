"""`make demo`, the README's first command: its recipe (read from the Makefile, so the test follows it)
run line by line into a temporary folder: lower the bundled CNN for every target it names, run, verify
against ONNX Runtime, run the application, quantize for the custom target and compare with the host."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = [pytest.mark.e2e]


def demo_recipe() -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    body = re.search(r"^demo:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M)
    assert body, "no demo target in the Makefile"
    return [" ".join(line.split()) for line in body.group(1).splitlines() if line.strip()]


def test_make_demo_recipe_runs(tmp_path):
    lines = demo_recipe()
    assert any("verify" in line for line in lines) and any("custom" in line for line in lines)
    bin_dir = shlex.quote(str(Path(sys.executable).parent))
    for line in lines:
        command = line.replace("$(BIN)", bin_dir).replace("$(OUT)", shlex.quote(str(tmp_path)))
        assert "$(" not in command, command
        done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{line}\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
    assert (tmp_path / "cnn_npu_report.json").is_file() and (tmp_path / "cnn_npu_trace.json").is_file()

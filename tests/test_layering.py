"""Dependency direction: the runtime never imports the compiler or onnx; protobuf stays at the border."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]
COMPILER = ("lowering", "passes", "targets", "onnx")


def _imported_top_levels(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(','.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return set(out.stdout.strip().splitlines()[-1].split(","))


def test_importing_runtime_does_not_import_the_compiler():
    loaded = _imported_top_levels("import runtime")
    assert not loaded & set(COMPILER), loaded & set(COMPILER)


def test_runtime_sources_never_import_the_compiler():
    pattern = re.compile(r"^\s*(from|import)\s+(lowering|passes|targets|onnx)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "runtime").rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []


def test_only_the_onnx_border_imports_onnx():
    pattern = re.compile(r"^\s*(from|import)\s+onnx\b(?!runtime)", re.M)
    allowed = {"lowering/onnx/importer.py", "lowering/onnx/exporter.py", "lowering/onnx/backend.py",
               "lowering/onnx/expand.py", "lowering/onnx/control_flow.py"}
    offenders = []
    for folder in ("lowering", "passes", "targets", "runtime"):
        for p in (ROOT / folder).rglob("*.py"):
            rel = str(p.relative_to(ROOT))
            if rel not in allowed and pattern.search(p.read_text()):
                offenders.append(rel)
    assert offenders == []


def test_importing_the_ir_does_not_import_the_driver_or_targets():
    loaded = _imported_top_levels("import lowering.ir, lowering.passmanager")
    assert "targets" not in loaded and "onnx" not in loaded

"""Shared pieces of the example tests: the repository's paths, running an example script in a fresh
interpreter, and the bundled CNN compiled once for the cpu target."""

import subprocess
import sys
from pathlib import Path

import pytest

from lowering.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
COMPILER = ("lowering", "passes", "targets", "onnx")

# Run a script with the compiler made unimportable: what "only the runtime installed" means for an
# application. Any `import lowering` (or passes, targets, onnx) raises ImportError.
RUNTIME_ONLY = f"""
import runpy, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {COMPILER!r}:
            raise ImportError(f"{{name}}: the compiler is not installed (runtime-only test)")
        return None
sys.meta_path.insert(0, _Block())
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def run_script(*args, timeout=600, runtime_only=False, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable] + (["-c", RUNTIME_ONLY] if runtime_only else []) + [str(a) for a in args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def cnn_cpu(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("examples") / "cnn.lwr"
    assert main([str(EXAMPLES / "cnn.onnx"), "--target", "cpu", "-o", str(out)]) == 0
    return out


def onnxruntime_outputs(model: Path, feed: dict) -> list:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"]).run(None, feed)

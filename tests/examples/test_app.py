"""examples/app.py and examples/ci/serve.py: applications over the runtime alone. Each runs in a fresh
interpreter where importing the compiler (lowering, passes, targets, onnx) raises, and its predictions are
checked against ONNX Runtime on the source model."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from .conftest import EXAMPLES, ROOT, RUNTIME_ONLY, onnxruntime_outputs, run_script

pytestmark = [pytest.mark.e2e]


def _reference_logits():
    with np.load(EXAMPLES / "cnn_input.npz") as data:
        feed = {"input": data["input"]}
    return feed, onnxruntime_outputs(EXAMPLES / "cnn.onnx", feed)[0]


def test_app_classifies_with_the_runtime_alone(cnn_cpu):
    done = run_script(EXAMPLES / "app.py", cnn_cpu, EXAMPLES / "cnn_input.npz", runtime_only=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "compiler modules loaded by the application: none" in done.stdout
    _, logits = _reference_logits()
    top = np.argsort(-logits[0])[:3]
    line = next(x for x in done.stdout.splitlines() if x.startswith("top-3 classes:"))
    classes = [int(part.split(" (")[0]) for part in line.split(":", 1)[1].split(",")]
    values = [float(part.split("(")[1].rstrip(")")) for part in line.split(":", 1)[1].split(",")]
    assert classes == top.tolist()
    np.testing.assert_allclose(values, logits[0, top], atol=2e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_answers_predictions_over_http(cnn_cpu):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", RUNTIME_ONLY, str(EXAMPLES / "ci" / "serve.py"),
                               str(cnn_cpu), "--port", str(port), "--sessions", "2"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if _request(base + "/healthz") == (200, {"ok": True}):
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
            assert server.poll() is None, server.stderr.read()
        status, signature = _request(base + "/v1/model")
        assert status == 200 and signature["target"] == "cpu"
        feed, logits = _reference_logits()
        status, body = _request(base + "/v1/infer", {"inputs": {"input": feed["input"].tolist()}})
        assert status == 200
        np.testing.assert_allclose(np.array(body["outputs"]["logits"], np.float32), logits, rtol=1e-4,
                                   atol=1e-4)
        status, body = _request(base + "/v1/infer", {"inputs": {"input": [[1.0, 2.0]]}})
        assert status == 400 and "\n" not in body["error"] and "input" in body["error"]
        assert server.poll() is None  # a bad request does not stop the server
    finally:
        server.terminate()
        server.wait(timeout=30)

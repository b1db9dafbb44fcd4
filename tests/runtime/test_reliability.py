"""The runtime under load and faults: logged target choice, one session shared by threads, no leaks."""

import gc
import logging
import os
import threading

import numpy as np
import onnx
import pytest

import runtime
from runtime.errors import TargetUnavailableError

pytestmark = pytest.mark.target_cpu


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from lowering.cli import main
    from tests.e2e.conftest import make_tiny_cnn

    d = tmp_path_factory.mktemp("reliability")
    onnx.save(make_tiny_cnn(seed=4, batch=2), d / "tiny.onnx")
    assert main([str(d / "tiny.onnx"), "--target", "cpu", "-o", str(d / "tiny.lwr")]) == 0
    return d / "tiny.lwr"


def feeds(count, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(count)]


def test_load_logs_each_skipped_target_and_the_choice(artifact, caplog, monkeypatch):
    with caplog.at_level(logging.INFO, logger="lowering.runtime"):
        sess = runtime.load(artifact)
    messages = [r.getMessage() for r in caplog.records if r.name == "lowering.runtime"]
    assert sess.target == "cpu"
    assert any("skipped target cuda: not built into this artifact" in m for m in messages), messages
    assert any(m.endswith("running target cpu") for m in messages)
    caplog.clear()
    from runtime.backends.cpu import CpuExecutor

    monkeypatch.setattr(CpuExecutor, "check_requirements", staticmethod(lambda entry: "needs a unicorn CPU"))
    with caplog.at_level(logging.INFO, logger="lowering.runtime"), pytest.raises(TargetUnavailableError,
                                                                                   match="unicorn"):
        runtime.load(artifact, targets=["custom", "cpu"])
    messages = [r.getMessage() for r in caplog.records if r.name == "lowering.runtime"]
    assert [m.split("skipped target ")[1] for m in messages] == [
        "custom: not built into this artifact", "cpu: needs a unicorn CPU"]


def test_one_session_from_eight_threads_matches_serial_runs(artifact):
    sess = runtime.load(artifact, threads=1)
    inputs = feeds(32)
    expected = [sess.run(None, f)[0] for f in inputs]
    results: dict[int, list] = {}
    errors = []
    barrier = threading.Barrier(8)

    def worker(t):
        try:
            barrier.wait()
            for _ in range(5):
                for i in range(t, len(inputs), 8):
                    results.setdefault(i, []).append(sess.run(["y"], inputs[i])[0])
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == list(range(len(inputs)))
    for i, outs in results.items():
        assert len(outs) == 5
        for out in outs:
            np.testing.assert_array_equal(out, expected[i])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)")
def test_no_memory_growth_over_runs_and_loads(artifact):
    sess = runtime.load(artifact, threads=1)
    (x,) = feeds(1)
    for _ in range(200):  # warm up: allocator pools, OpenMP, lazily built tables
        sess.run(None, x)
    gc.collect()
    before = rss_bytes()
    for _ in range(10_000):
        sess.run(None, x)
    gc.collect()
    runs_growth = rss_bytes() - before
    del sess
    for _ in range(10):
        runtime.load(artifact, threads=1).run(None, x)
    gc.collect()
    before = rss_bytes()
    for _ in range(200):
        s = runtime.load(artifact, threads=1)
        s.run(None, x)
        del s
    gc.collect()
    loads_growth = rss_bytes() - before
    # each run allocates its outputs (80 bytes) and each load reads the artifact (~100 KB): a leak of either
    # would show as 10,000 x or 200 x that (the counts); the bounds leave room for allocator noise
    assert runs_growth < 4 * 2**20, runs_growth
    assert loads_growth < 8 * 2**20, loads_growth


def test_cpu_target_bounds_openmp_spinning_unless_the_user_set_it(artifact):
    """libgomp reads GOMP_SPINCOUNT once, when it loads: the runtime sets its default before loading the
    library (runtime/backends/cpu.py: idle threads spinning for a millisecond made 2-thread runs wait a time
    slice at every barrier when another process shared the cores), and keeps a value the user chose. Checked
    in fresh interpreters, since this one may have loaded libgomp already."""
    import subprocess
    import sys

    from runtime.backends.cpu import GOMP_SPINCOUNT

    probe = (
        "import os, sys, runtime; s = runtime.load(sys.argv[1], threads=2); "
        "s.run(None, {'x': __import__('numpy').zeros((2, 3, 8, 8), 'float32')}); "
        "print(os.environ['GOMP_SPINCOUNT'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    for given, expected in ((None, GOMP_SPINCOUNT), ("12345", "12345")):
        if given is not None:
            env["GOMP_SPINCOUNT"] = given
        out = subprocess.run([sys.executable, "-c", probe, str(artifact)], env=env, capture_output=True,
                             text=True, check=True, cwd=os.path.dirname(os.path.dirname(runtime.__file__)))
        assert out.stdout.strip() == expected

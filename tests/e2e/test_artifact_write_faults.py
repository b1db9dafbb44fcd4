"""Writing an artifact where the disk is full or the folder is not writable: a one-line error naming the
file (exit 2 from ``lower``), no temporary file left behind, and an artifact already at that path kept as
it was. The same faults cost the build cache only its entry. Faults are injected at each step of the
write (a write that runs out of room half-way, fsync, rename), and for real with RLIMIT_FSIZE in a child
``lower merge`` (the kernel fails the write with EFBIG, as it fails it with ENOSPC on a full disk)."""

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import lowering.artifact as artifact_module
import lowering.cache as cache_module
from lowering.artifact import write_artifact
from lowering.cache import BuildCache
from lowering.cli import main
from lowering.errors import LoweringError
from runtime.artifact import open_artifact

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BASE = {"model": {"name": "m.onnx", "sha256": "0" * 64}, "inputs": [], "outputs": [], "targets": {}}
FILES = {"cpu/weights.bin": bytes(range(256)) * 64, "report.json": b"{}\n"}
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDisk:
    """A file that takes ``room`` more bytes, writes part of the next chunk, then fails with ENOSPC."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            self._f.write(bytes(data[: self._room]))
            self._room = 0
            raise ENOSPC
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _full_disk_after(monkeypatch, module, room: int) -> None:
    real = os.fdopen
    monkeypatch.setattr(module.os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k), room))


def _raise_enospc(*args, **kwargs):
    raise ENOSPC


@pytest.mark.parametrize("fault", ["write at the start", "write half-way", "fsync", "rename"])
def test_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch, fault):
    path = tmp_path / "a.lwr"
    write_artifact(path, BASE, {"cpu/weights.bin": b"old"})  # a previous build's artifact
    before = path.read_bytes()
    if fault.startswith("write"):
        room = 0 if "start" in fault else sum(map(len, FILES.values())) // 2
        _full_disk_after(monkeypatch, artifact_module, room)
    elif fault == "fsync":
        monkeypatch.setattr(artifact_module.os, "fsync", _raise_enospc)
    else:
        monkeypatch.setattr(artifact_module.os, "replace", _raise_enospc)
    with pytest.raises(LoweringError) as info:
        write_artifact(path, BASE, FILES)
    monkeypatch.undo()
    assert str(info.value) == f"cannot write the artifact {path}: No space left on device"
    assert [p.name for p in tmp_path.iterdir()] == ["a.lwr"]  # no temporary file
    assert path.read_bytes() == before  # the old artifact is intact and still loads
    assert open_artifact(path).read("cpu/weights.bin") == b"old"
    # with room again, the same write succeeds
    write_artifact(path, BASE, FILES)
    assert open_artifact(path).read("cpu/weights.bin") == FILES["cpu/weights.bin"]


def test_unwritable_output_folder_is_a_one_line_error(tiny_artifact, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(LoweringError) as info:
        write_artifact(blocker / "a.lwr", BASE, FILES)
    assert str(info.value) == f"cannot write the artifact {blocker}/a.lwr: {blocker} is a file, not a folder"
    # through `lower merge` (the same writer): exit 2, one line
    code = main(["merge", str(tiny_artifact), "-o", str(blocker / "sub" / "m.lwr")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: cannot write the artifact {blocker}/sub/m.lwr: {blocker} is a file, not a folder\n"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(LoweringError, match="Permission denied"):
            write_artifact(locked / "a.lwr", BASE, FILES)
        assert list(locked.iterdir()) == []


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_lower_with_a_real_write_failure(tiny_artifact, tmp_path):
    """A child ``lower merge`` (it only reads and writes artifacts: no compiler runs) whose file size limit
    is half the artifact: the kernel fails the write midway."""
    size = tiny_artifact.stat().st_size
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.lwr").write_bytes(b"previous")
    command = [sys.executable, "-m", "lowering.cli", "merge", str(tiny_artifact), "-o", str(out / "m.lwr")]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size(size // 2))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: cannot write the artifact {out / 'm.lwr'}: File too large\n"
    assert [p.name for p in out.iterdir()] == ["m.lwr"] and (out / "m.lwr").read_bytes() == b"previous"
    # without the limit the same command writes the artifact, and it loads
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert open_artifact(out / "m.lwr").manifest == open_artifact(tiny_artifact).manifest


def test_full_disk_costs_the_cache_only_its_entry(tmp_path, monkeypatch):
    logged = []
    cache = BuildCache(tmp_path, log=logged.append)
    key = "ab" * 32
    _full_disk_after(monkeypatch, cache_module, 100)
    cache.put(key, {"n": 1}, {"blob": bytes(4096)})
    monkeypatch.undo()
    assert "cache: cannot store" in logged[0] and "No space left on device" in logged[0]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []  # no entry, no temporary file
    assert cache.get(key) is None
    cache.put(key, {"n": 1}, {"blob": bytes(4096)})
    assert cache.get(key) == ({"n": 1}, {"blob": bytes(4096)})

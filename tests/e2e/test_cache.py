"""The build cache (--cache-dir, --no-cache) and parallel target builds (--jobs)."""

import io
import threading
import zipfile

import pytest

from lowering.cache import BuildCache, default_cache_dir
from lowering.cli import main

pytestmark = pytest.mark.e2e


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def entries(cache):
    return sorted(cache.rglob("*.entry"))


def _have_nvcc() -> bool:
    from targets.cuda.build import find_nvcc

    return find_nvcc() is not None


def test_cache_hit_is_byte_identical_and_corruption_is_rebuilt(tiny_dir, tmp_path, capsys):
    model, cache = tiny_dir / "tiny_static.onnx", tmp_path / "cache"
    # fresh build into the cache, and a build that neither reads nor writes it
    code, _, err = run_cli([model, "-o", tmp_path / "miss.lwr", "--cache-dir", cache, "-v"], capsys)
    assert code == 0 and "cache hit" not in err and "pass fuse_epilogue" in err
    assert len(entries(cache)) == 1
    code, _, _ = run_cli([model, "-o", tmp_path / "plain.lwr", "--no-cache"], capsys)
    assert code == 0 and len(entries(cache)) == 1
    # the hit: nothing rebuilt (no cc phase), same bytes
    code, stdout, err = run_cli([model, "-o", tmp_path / "hit.lwr", "--cache-dir", cache, "-v"], capsys)
    assert code == 0 and "target cpu: cache hit" in err and "phase cpu cc" not in err
    assert "(cached) pass fuse_epilogue" in err and "cpu: 5 ONNX nodes -> " in stdout
    reference = (tmp_path / "plain.lwr").read_bytes()
    assert (tmp_path / "miss.lwr").read_bytes() == reference == (tmp_path / "hit.lwr").read_bytes()
    # damage the entry (a flipped byte inside a blob): ignored, rebuilt, rewritten
    (entry,) = entries(cache)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    code, _, err = run_cli([model, "-o", tmp_path / "again.lwr", "--cache-dir", cache, "-v"], capsys)
    assert code == 0 and "corrupted entry" in err and "phase cpu cc" in err
    assert (tmp_path / "again.lwr").read_bytes() == reference
    assert BuildCache(cache).get(entry.stem) is not None  # the rebuild replaced it with a good entry


def test_cache_key_covers_model_options_toolchain_and_sources(tiny_dir, monkeypatch):
    from lowering import cache as cache_module
    from lowering.driver import CompileOptions, _target_key

    base = CompileOptions(targets=("cpu",))
    key = _target_key("cpu", "m" * 64, "tiny.onnx", base)
    assert key == _target_key("cpu", "m" * 64, "tiny.onnx", CompileOptions(targets=("cpu", "cuda")))
    different = [
        _target_key("cpu", "n" * 64, "tiny.onnx", base),
        _target_key("cpu", "m" * 64, "other.onnx", base),
        _target_key("cpu", "m" * 64, "tiny.onnx", CompileOptions(targets=("cpu",), isa="x86-64-v2")),
        _target_key("cpu", "m" * 64, "tiny.onnx", CompileOptions(targets=("cpu",), shapes=(("x", (1, 2)),))),
        _target_key("cpu", "m" * 64, "tiny.onnx", CompileOptions(targets=("cpu",),
                                                                 disabled_passes=frozenset({"dce"}))),
    ]
    monkeypatch.setattr(cache_module, "_tool_version", lambda argv: "gcc 99.0")
    different.append(_target_key("cpu", "m" * 64, "tiny.onnx", base))
    monkeypatch.setattr(cache_module, "package_source_hash", lambda packages=(): "edited")
    different.append(_target_key("cpu", "m" * 64, "tiny.onnx", base))
    assert len({key, *different}) == len(different) + 1


def test_cache_entries_are_atomic_and_concurrent_writers_are_safe(tmp_path):
    cache = BuildCache(tmp_path)
    key = "ab" * 32
    blobs = {"file/cpu/model.so": bytes(range(256)) * 200, "graph.onnx": b"g"}
    errors = []

    def writer(i):
        try:
            for _ in range(20):
                cache.put(key, {"n": 1}, blobs)
                hit = cache.get(key)
                assert hit == ({"n": 1}, blobs)  # never a half-written entry
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in (tmp_path / "v1" / "ab").iterdir()] == [f"{key}.entry"]  # no temp files left
    # a killed writer leaves at most a temporary file, which is never read
    (tmp_path / "v1" / "ab" / f".{key[:16]}.xyz.tmp").write_bytes(b"partial")
    assert cache.get(key) == ({"n": 1}, blobs)
    # an entry stored under the wrong key, truncated, or not a zip at all, is a miss
    other = "cd" * 32
    (tmp_path / "v1" / "cd").mkdir()
    good = (tmp_path / "v1" / "ab" / f"{key}.entry").read_bytes()
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        assert zf.namelist() == ["meta.json", "blobs/file/cpu/model.so", "blobs/graph.onnx"]
    (tmp_path / "v1" / "cd" / f"{other}.entry").write_bytes(good)
    logged = []
    assert BuildCache(tmp_path, log=logged.append).get(other) is None and "corrupted" in logged[0]
    (tmp_path / "v1" / "cd" / f"{other}.entry").write_bytes(b"junk")
    assert cache.get(other) is None
    (tmp_path / "v1" / "ab" / f"{key}.entry").write_bytes(good[: len(good) // 2])
    assert cache.get(key) is None


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("LOWERING_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lowering"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "lowering"
    monkeypatch.setenv("LOWERING_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"


def test_bad_cache_and_jobs_options(tiny_dir, tmp_path, capsys):
    model = tiny_dir / "tiny_static.onnx"
    code, _, err = run_cli([model, "-o", tmp_path / "o.lwr", "--jobs", "0"], capsys)
    assert code == 2 and "--jobs" in err
    code, _, err = run_cli([model, "-o", tmp_path / "o.lwr", "--no-cache", "--cache-dir", tmp_path], capsys)
    assert code == 2 and "--no-cache" in err
    # an unusable cache folder only costs the cache, never the build
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    logged = []
    unusable = BuildCache(blocker / "sub", log=logged.append)
    unusable.put("ab" * 32, {}, {"x": b"1"})
    assert unusable.get("ab" * 32) is None and "cache: cannot store" in logged[0]


@pytest.mark.skipif(not _have_nvcc(), reason="needs nvcc for a second quick target (no GPU needed)")
def test_parallel_build_is_byte_identical_with_progress_on_a_terminal(tiny_dir, tmp_path, capsys,
                                                                     monkeypatch):
    model = tiny_dir / "tiny_static.onnx"
    code, _, err = run_cli([model, "--target", "cpu,cuda", "-o", tmp_path / "serial.lwr", "--no-cache"],
                           capsys)
    assert code == 0 and "[1/2]" not in err  # not a terminal: no progress lines

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    monkeypatch.setattr("sys.stderr", stream)
    code = main([str(model), "--target", "cpu,cuda", "-o", str(tmp_path / "parallel.lwr"), "--no-cache",
                 "--jobs", "2"])
    assert code == 0
    assert (tmp_path / "parallel.lwr").read_bytes() == (tmp_path / "serial.lwr").read_bytes()
    lines = stream.getvalue().splitlines()
    assert sorted(line.split("] ")[1].split(":")[0] for line in lines) == ["cpu", "cuda"]
    assert {line.split("]")[0] for line in lines} == {"[1/2", "[2/2"}

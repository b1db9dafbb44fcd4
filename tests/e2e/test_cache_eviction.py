"""The build cache's size bound (least recently used entries evicted after a store) and ``lower cache``
(--info, --clear, --max-bytes, --json)."""

import json
import os
import time

import pytest

from lowering.cache import DEFAULT_MAX_BYTES, BuildCache, parse_size
from lowering.cli import main

pytestmark = pytest.mark.e2e

BLOB = bytes(range(256)) * 40  # ~10 KiB per entry


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def keys(cache_root):
    return sorted(p.stem for p in cache_root.rglob("*.entry"))


def age(path, seconds):
    """Make a file look last used ``seconds`` ago."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_parse_size():
    assert parse_size("4096") == 4096
    assert parse_size("500M") == 500 << 20
    assert parse_size("2g") == 2 << 30
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size("10kb") == 10 << 10
    assert parse_size("0") == 0
    for bad in ("", "abc", "-1", "5X", "1e9"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)


def test_least_recently_used_entries_are_evicted_after_a_store(tmp_path, monkeypatch):
    monkeypatch.delenv("LOWERING_CACHE_MAX_BYTES", raising=False)
    logged = []
    cache = BuildCache(tmp_path, log=logged.append, max_bytes=35_000)  # room for three entries
    names = [c * 64 for c in "abcd"]
    for i, key in enumerate(names[:3]):
        cache.put(key, {"i": i}, {"blob": BLOB})
        age(cache._path(key), 100 - i)  # a stored first, then b, then c
    assert keys(tmp_path) == names[:3] and not logged
    assert cache.get(names[0]) is not None  # a hit: a becomes the most recently used
    cache.put(names[3], {"i": 3}, {"blob": BLOB})  # over the bound: b, the least recently used, goes
    assert keys(tmp_path) == [names[0], names[2], names[3]]
    assert "evicted 1 least recently used entries" in logged[-1]
    assert cache.get(names[1]) is None and cache.get(names[0]) == ({"i": 0}, {"blob": BLOB})
    # a bound smaller than one entry keeps the entry just stored, never an empty cache after a store
    tiny = BuildCache(tmp_path, max_bytes=1)
    tiny.put("e" * 64, {}, {"blob": BLOB})
    assert keys(tmp_path) == ["e" * 64]
    # no bound (0): nothing is evicted
    unbounded = BuildCache(tmp_path, max_bytes=0)
    for key in names:
        unbounded.put(key, {}, {"blob": BLOB})
    assert len(keys(tmp_path)) == 5


def test_trim_deletes_stale_temporary_files_but_not_a_build_writing_now(tmp_path):
    cache = BuildCache(tmp_path, max_bytes=1 << 30)
    cache.put("ab" * 32, {}, {"blob": BLOB})
    shard = tmp_path / "v1" / "ab"
    killed, writing = shard / ".abababab.1.tmp", shard / ".abababab.2.tmp"
    killed.write_bytes(b"partial")
    writing.write_bytes(b"partial")
    age(killed, 2 * 3600)
    stats = cache.stats()
    assert (stats.entries, stats.temporary) == (1, 2) and stats.bytes == cache._path("ab" * 32).stat().st_size
    cache.put("cd" * 32, {}, {"blob": BLOB})
    assert not killed.exists() and writing.exists()
    assert cache.stats().entries == 2


def test_lower_cache_info_clear_and_max_bytes(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LOWERING_CACHE_MAX_BYTES", raising=False)
    root = tmp_path / "cache"
    monkeypatch.setenv("LOWERING_CACHE_DIR", str(root))
    code, out, _ = run_cli(["cache"], capsys)
    assert code == 0 and f"location: {root} (does not exist yet)" in out and "entries: 0 (0 B)" in out
    assert "size bound: 5.0 GiB (default)" in out
    # two builds of different models: two entries, and what --info and --json say agrees with the folder
    for name in ("tiny_static.onnx", "tiny_other_weights.onnx"):
        shape = ["--shape", "x=2x3x8x8"] if "other" in name else []
        args = [tiny_dir / name, "-o", tmp_path / "o.lwr", *shape]
        assert run_cli(args, capsys)[0] == 0
    files = sorted(root.rglob("*.entry"))
    total = sum(p.stat().st_size for p in files)
    assert len(files) == 2
    code, out, _ = run_cli(["cache", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info == {"location": str(root), "entries": 2, "bytes": total,
                                  "max_bytes": DEFAULT_MAX_BYTES, "max_bytes_from": "default",
                                  "temporary_files": 0}
    # --max-bytes: recorded in the folder, the older entry evicted now, and later builds honour it
    oldest, newest = sorted(files, key=lambda p: p.stat().st_mtime)
    age(oldest, 60)
    code, out, _ = run_cli(["cache", "--max-bytes", str(newest.stat().st_size), "--info"], capsys)
    assert code == 0 and "evicted 1 entries" in out and "entries: 1" in out
    assert "config.json" in out and sorted(root.rglob("*.entry")) == [newest]
    assert BuildCache(root).max_bytes == newest.stat().st_size
    monkeypatch.setenv("LOWERING_CACHE_MAX_BYTES", "3G")  # the environment wins over the folder's setting
    assert BuildCache(root).max_bytes == 3 << 30
    code, out, _ = run_cli(["cache", "--max-bytes", "1G"], capsys)
    assert code == 0 and "LOWERING_CACHE_MAX_BYTES=3G overrides it" in out
    monkeypatch.setenv("LOWERING_CACHE_MAX_BYTES", "lots")
    code, out, err = run_cli([tiny_dir / "tiny_static.onnx", "-o", tmp_path / "p.lwr"], capsys)
    assert code == 2 and err.startswith("error: LOWERING_CACHE_MAX_BYTES: 'lots' is not a size")
    monkeypatch.delenv("LOWERING_CACHE_MAX_BYTES")
    # --clear deletes the cache's files only: a file of the user's in the same folder stays
    (root / "notes.txt").write_text("mine")
    (root / "v1" / "zz").mkdir()
    (root / "v1" / "zz" / ".zzzz.123.tmp").write_bytes(b"killed build")
    code, out, _ = run_cli(["cache", "--clear", "--cache-dir", root], capsys)
    assert code == 0 and "deleted 1 entries" in out
    assert sorted(p.name for p in root.rglob("*")) == ["config.json", "notes.txt"]
    code, out, _ = run_cli(["cache", "--cache-dir", root, "--json"], capsys)
    assert json.loads(out)["entries"] == 0


def test_lower_cache_mistakes_are_one_line_errors(tmp_path, capsys):
    code, _, err = run_cli(["cache", "--max-bytes", "plenty", "--cache-dir", tmp_path], capsys)
    assert code == 2 and err == "error: --max-bytes: 'plenty' is not a size (e.g. 4096, 500M, 2G)\n"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["cache", "--cache-dir", blocker], capsys)
    assert code == 2 and err == f"error: cache folder {blocker} is a file, not a folder\n"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        code, _, err = run_cli(["cache", "--cache-dir", locked, "--max-bytes", "1G"], capsys)
        assert code == 2 and err.startswith(f"error: cannot record the size bound in {locked}")


def test_a_damaged_config_is_ignored_with_a_message(tmp_path, monkeypatch):
    monkeypatch.delenv("LOWERING_CACHE_MAX_BYTES", raising=False)
    logged = []
    (tmp_path / "config.json").write_text('{"max_bytes": "lots"}')
    cache = BuildCache(tmp_path, log=logged.append)
    assert (cache.max_bytes, cache.max_bytes_from) == (DEFAULT_MAX_BYTES, "default")
    assert "cache: ignoring" in logged[0] and "config.json" in logged[0]
    (tmp_path / "config.json").write_text("{")
    assert BuildCache(tmp_path).max_bytes == DEFAULT_MAX_BYTES
    cache.set_max_bytes(123)
    assert BuildCache(tmp_path).max_bytes == 123 and json.loads((tmp_path / "config.json").read_text()) == {
        "max_bytes": 123}

"""The artifact container: verified before anything loads; written atomically and deterministically."""

import hashlib
import json
import zipfile

import pytest

from lowering.artifact import write_artifact
from runtime.artifact import FORMAT_VERSION, open_artifact
from runtime.errors import InvalidArtifactError

pytestmark = pytest.mark.unit

BASE = {"model": {"name": "m.onnx", "sha256": "0" * 64}, "inputs": [], "outputs": [],
        "targets": {"cpu": {"kind": "cpu"}}}
FILES = {"cpu/weights.bin": bytes(range(256)) * 4, "report.json": b"{}\n"}


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "a.lwr"
    write_artifact(path, BASE, FILES)
    return path


def test_round_trip(artifact):
    a = open_artifact(artifact)
    assert a.read("cpu/weights.bin") == FILES["cpu/weights.bin"]
    assert a.manifest["format_version"] == FORMAT_VERSION
    assert a.member_names() == sorted(FILES)


def test_members_are_stored_uncompressed(artifact):
    with zipfile.ZipFile(artifact) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_byte_identical_for_identical_inputs(tmp_path):
    write_artifact(tmp_path / "a.lwr", BASE, FILES)
    write_artifact(tmp_path / "b.lwr", BASE, dict(reversed(list(FILES.items()))))
    assert (tmp_path / "a.lwr").read_bytes() == (tmp_path / "b.lwr").read_bytes()


def test_truncated_is_refused(artifact):
    data = artifact.read_bytes()
    artifact.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidArtifactError, match="truncated|not a zip|corrupted"):
        open_artifact(artifact)


def test_bit_flip_in_a_member_is_refused(artifact):
    data = bytearray(artifact.read_bytes())
    offset = data.find(bytes(range(16)))
    data[offset + 3] ^= 0x10
    artifact.write_bytes(bytes(data))
    with pytest.raises(InvalidArtifactError, match="weights.bin"):
        open_artifact(artifact)


def _rewrite(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.mark.parametrize("name, message", [("../evil.so", "escapes"), ("cpu/extra.bin", "unexpected")])
def test_added_or_escaping_member_is_refused(artifact, name, message):
    members = _members(artifact)
    members[name] = b"x"
    _rewrite(artifact, members)
    with pytest.raises(InvalidArtifactError, match=message):
        open_artifact(artifact)


def test_newer_format_version_is_refused(artifact):
    members = _members(artifact)
    manifest = json.loads(members["manifest.json"])
    manifest["format_version"] = FORMAT_VERSION + 1
    members["manifest.json"] = json.dumps(manifest).encode()
    _rewrite(artifact, members)
    with pytest.raises(InvalidArtifactError, match="newer"):
        open_artifact(artifact)


def test_manifest_that_lies_about_size_is_refused(artifact):
    members = _members(artifact)
    manifest = json.loads(members["manifest.json"])
    manifest["members"]["report.json"]["size"] += 1
    members["manifest.json"] = json.dumps(manifest).encode()
    _rewrite(artifact, members)
    with pytest.raises(InvalidArtifactError, match="report.json"):
        open_artifact(artifact)


def test_not_an_artifact(tmp_path):
    path = tmp_path / "x.lwr"
    path.write_bytes(b"hello")
    with pytest.raises(InvalidArtifactError, match="not a zip|truncated"):
        open_artifact(path)
    with pytest.raises(InvalidArtifactError, match="no such file"):
        open_artifact(tmp_path / "missing.lwr")


def test_interrupted_write_leaves_no_artifact(tmp_path, monkeypatch):
    path = tmp_path / "a.lwr"

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        write_artifact(path, BASE, FILES)
    assert list(tmp_path.iterdir()) == []


def test_manifest_hashes_match_members(artifact):
    a = open_artifact(artifact)
    for name, meta in a.manifest["members"].items():
        assert hashlib.sha256(a.read(name)).hexdigest() == meta["sha256"]

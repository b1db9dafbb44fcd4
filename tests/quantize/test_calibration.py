"""The calibration data reader: stacked .npz files, folders, batch sizes, dtypes, streaming, bad input."""

from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest

from lowering.errors import LoweringError
from lowering.quantize.calibration import CalibrationData, InputSpec

pytestmark = pytest.mark.unit

X = InputSpec("x", np.dtype(np.float32), (1, 3, 4, 4))
X_B2 = InputSpec("x", np.dtype(np.float32), (2, 3, 4, 4))
X_DYN = InputSpec("x", np.dtype(np.float32), (None, 3, 4, 4))
Y = InputSpec("y", np.dtype(np.float32), (1, 2))


def samples(n, seed=0, shape=(3, 4, 4), dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n,) + shape).astype(dtype)


def feeds(path, inputs, **kw):
    return list(CalibrationData.open(path, inputs).batches(**kw))


def test_stacked_npz_is_fed_one_sample_at_a_time(tmp_path):
    x = samples(5)
    np.savez(tmp_path / "c.npz", x=x)
    data = CalibrationData.open(tmp_path / "c.npz", [X])
    assert data.samples == 5 and data.batch == 1
    got = list(data.batches())
    assert len(got) == 5 and all(f["x"].shape == (1, 3, 4, 4) and f["x"].dtype == np.float32 for f in got)
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in got]), x)
    assert data.sha256 is not None and len(data.sha256) == 64


def test_folder_is_read_in_sorted_order(tmp_path):
    x = samples(7)
    np.savez(tmp_path / "b.npz", x=x[2:6])
    np.savez(tmp_path / "a.npz", x=x[:2])
    np.save(tmp_path / "c.npy", x[6:])  # a .npy stands for the only input
    (tmp_path / "notes.txt").write_text("ignored")
    got = feeds(tmp_path, [X])
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in got]), x)


def test_folder_of_one_npy_per_input_of_a_multi_input_model(tmp_path):
    """``DIR/x.npy`` and ``DIR/y.npy``: the arrays a .npz keyed by input name would hold; the digest is
    that of the same samples in a .npz, and a wrong array is named by its input."""
    x, y = samples(4), samples(4, seed=1, shape=(2,))
    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "x.npy", x)
    np.save(tmp_path / "dir" / "y.npy", np.asfortranarray(y))
    np.savez(tmp_path / "same.npz", x=x, y=y)
    got = feeds(tmp_path / "dir", [X, Y])
    assert len(got) == 4
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in got]), x)
    np.testing.assert_array_equal(np.concatenate([f["y"] for f in got]), y)
    digests = []
    for path in (tmp_path / "dir", tmp_path / "same.npz"):
        data = CalibrationData.open(path, [X, Y])
        list(data.batches())
        digests.append(data.sha256)
    assert digests[0] == digests[1]
    np.save(tmp_path / "dir" / "y.npy", samples(3, shape=(2,)))
    with pytest.raises(LoweringError, match="inputs hold different numbers of samples"):
        CalibrationData.open(tmp_path / "dir", [X, Y])
    np.save(tmp_path / "dir" / "y.npy", samples(4, shape=(3,)))
    with pytest.raises(LoweringError, match="input 'y' has shape"):
        CalibrationData.open(tmp_path / "dir", [X, Y])


def test_digest_depends_on_samples_not_files(tmp_path):
    x = samples(6)
    np.savez(tmp_path / "one.npz", x=x)
    (tmp_path / "split").mkdir()
    np.savez_compressed(tmp_path / "split" / "0.npz", x=x[:3])
    np.savez(tmp_path / "split" / "1.npz", x=x[3:])
    digests = []
    for path in (tmp_path / "one.npz", tmp_path / "split"):
        data = CalibrationData.open(path, [X])
        list(data.batches())
        digests.append(data.sha256)
    assert digests[0] == digests[1]
    np.savez(tmp_path / "other.npz", x=samples(6, seed=1))
    other = CalibrationData.open(tmp_path / "other.npz", [X])
    list(other.batches())
    assert other.sha256 != digests[0]


def test_model_batch_two_is_fed_two_samples(tmp_path):
    x = samples(6)
    np.savez(tmp_path / "c.npz", x=x)
    got = feeds(tmp_path / "c.npz", [X_B2])
    assert [f["x"].shape for f in got] == [(2, 3, 4, 4)] * 3
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in got]), x)


def test_symbolic_batch_is_fed_one_sample(tmp_path):
    np.savez(tmp_path / "c.npz", x=samples(3))
    assert [f["x"].shape for f in feeds(tmp_path / "c.npz", [X_DYN])] == [(1, 3, 4, 4)] * 3


def test_two_inputs_and_limit(tmp_path):
    x, y = samples(4), samples(4, shape=(2,))
    np.savez(tmp_path / "c.npz", y=y, x=x)
    got = feeds(tmp_path / "c.npz", [X, Y], limit=3)
    assert len(got) == 3
    np.testing.assert_array_equal(np.concatenate([f["y"] for f in got]), y[:3])


def test_compressed_fortran_and_big_endian_arrays(tmp_path):
    x = samples(4)
    np.savez_compressed(tmp_path / "z.npz", x=x)
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds(tmp_path / "z.npz", [X])]), x)
    np.savez(tmp_path / "f.npz", x=np.asfortranarray(x))
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds(tmp_path / "f.npz", [X])]), x)
    np.savez(tmp_path / "be.npz", x=x.astype(">f4"))
    got = feeds(tmp_path / "be.npz", [X])
    assert got[0]["x"].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in got]), x)


def test_exact_dtype_widening_is_accepted(tmp_path):
    x16 = samples(3, dtype=np.float16)
    np.savez(tmp_path / "h.npz", x=x16)
    got = feeds(tmp_path / "h.npz", [X])
    assert got[0]["x"].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in got]), x16.astype(np.float32))
    x64 = samples(3).astype(np.float64)  # float64 values that are exactly float32
    np.savez(tmp_path / "d.npz", x=x64)
    assert feeds(tmp_path / "d.npz", [X])[0]["x"].dtype == np.float32
    ids = InputSpec("ids", np.dtype(np.int64), (1, 5))
    np.savez(tmp_path / "i.npz", ids=np.arange(10, dtype=np.int32).reshape(2, 5))
    assert feeds(tmp_path / "i.npz", [ids])[0]["ids"].dtype == np.int64


def test_streaming_reads_one_batch_at_a_time(tmp_path):
    big = samples(4000)  # 768 KB; one batch is 192 bytes
    np.savez(tmp_path / "big.npz", x=big)
    np.savez_compressed(tmp_path / "bigz.npz", x=big)
    for name in ("big.npz", "bigz.npz"):
        data = CalibrationData.open(tmp_path / name, [X])
        tracemalloc.start()
        count = sum(1 for _ in data.batches())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == 4000 and peak < big.nbytes / 4, (name, peak, big.nbytes)


def _write(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


BAD = [
    ("missing", lambda p: _write(p, "m.npz", z=samples(2)), [X],
     ["m.npz", "missing input 'x'", "(N, 3, 4, 4)"]),
    ("missing_second", lambda p: _write(p, "m2.npz", x=samples(2)), [X, Y],
     ["missing input 'y'", "holds: x"]),
    ("unknown", lambda p: _write(p, "u.npz", x=samples(2), extra=samples(2)), [X],
     ["u.npz", "unknown input 'extra'", "inputs: x"]),
    ("shape", lambda p: _write(p, "s.npz", x=samples(2, shape=(3, 4, 5))), [X],
     ["s.npz", "'x'", "(2, 3, 4, 5)", "expected (N, 3, 4, 4)"]),
    ("rank", lambda p: _write(p, "r.npz", x=samples(2, shape=(3, 4))), [X], ["'x'", "(2, 3, 4)", "expected"]),
    ("dtype", lambda p: _write(p, "t.npz", x=np.zeros((2, 3, 4, 4), np.int64)), [X],
     ["t.npz", "'x'", "int64", "expected float32"]),
    ("float64_inexact", lambda p: _write(p, "d.npz", x=np.full((2, 3, 4, 4), 0.1)), [X],
     ["d.npz", "'x'", "float64", "expected float32", "sample 0"]),
    ("nan", lambda p: _write(p, "n.npz", x=np.where(np.arange(96).reshape(2, 3, 4, 4) == 60, np.nan,
                                                    1.0).astype(np.float32)), [X],
     ["n.npz", "'x'", "sample 1", "NaN"]),
    ("inf", lambda p: _write(p, "i.npz", x=np.full((2, 3, 4, 4), np.inf, np.float32)), [X],
     ["i.npz", "'x'", "sample 0", "Inf"]),
    ("zero", lambda p: _write(p, "0.npz", x=samples(0)), [X], ["0.npz", "no calibration samples"]),
    ("batch", lambda p: _write(p, "b.npz", x=samples(3)), [X_B2], ["b.npz", "3 samples", "batch size 2"]),
    ("counts", lambda p: _write(p, "c.npz", x=samples(3), y=samples(2, shape=(2,))), [X, Y],
     ["c.npz", "x: 3", "y: 2"]),
    ("pickled", lambda p: _write(p, "o.npz", x=np.array([{"a": 1}, None], dtype=object)), [X],
     ["o.npz", "'x'", "pickled"]),
    ("junk", lambda p: (p / "j.npz").write_bytes(b"not a zip" * 50) and p / "j.npz", [X],
     ["j.npz", "cannot read as .npz"]),
    ("npy_two_inputs", lambda p: np.save(p / "a.npy", samples(2)) or p / "a.npy", [X, Y],
     ["a.npy", "2 inputs"]),
    ("nowhere", lambda p: p / "nowhere.npz", [X], ["nowhere.npz", "no such file or folder"]),
    ("empty_folder", lambda p: (p / "e").mkdir() or p / "e", [X], ["no .npz or .npy files"]),
]


@pytest.mark.parametrize("make, inputs, needles", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_calibration_data(tmp_path, make, inputs, needles):
    path = make(tmp_path)
    with pytest.raises(LoweringError) as info:
        feeds(path, inputs)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_truncated_member_is_a_one_line_error(tmp_path):
    path = _write(tmp_path, "t.npz", x=samples(4))
    with zipfile.ZipFile(path) as zf:
        raw = zf.read("x.npy")
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as zf:
        zf.writestr("x.npy", raw[:-100])
    with pytest.raises(LoweringError, match=r"short\.npz: cannot read calibration data"):
        feeds(tmp_path / "short.npz", [X])

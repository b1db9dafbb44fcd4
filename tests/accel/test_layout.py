"""Host <-> DRAM tensor layouts (ACCELERATOR.md B.1, runtime.accel.layout): NC/32HW32 and MK:K/32M32."""

import numpy as np
import pytest

from runtime.accel import layout
from runtime.accel.program import TensorInfo

pytestmark = pytest.mark.unit


def _info4(shape, zp=0, block=32, offset=0, name="t"):
    n, c, h, w = shape
    padded = [n, -(-c // block), h, w, block]
    return TensorInfo(name, offset, list(shape), padded, "NC/32HW32", "int8", 0.5, zp)


def _info2(shape, zp=0, block=32, offset=0, name="m"):
    m, k = shape
    padded = [1, -(-k // block), m, 1, block]
    return TensorInfo(name, offset, list(shape), padded, "MK:K/32M32", "int8", 0.5, zp)


def _reference_4d(a, block, zp):
    """Element by element: byte (n, cb, y, x, j) holds channel cb*B + j, or zp past C."""
    n, c, h, w = a.shape
    cb = -(-c // block)
    out = np.full((n, cb, h, w, block), zp, np.int8)
    for i in range(n):
        for ch in range(c):
            out[i, ch // block, :, :, ch % block] = a[i, ch]
    return out.tobytes()


@pytest.mark.parametrize("shape,block", [((1, 3, 4, 5), 32), ((2, 64, 3, 3), 32), ((1, 40, 2, 7), 16),
                                         ((1, 32, 1, 1), 32), ((3, 1, 1, 2), 8)])
def test_4d_matches_the_element_by_element_definition(shape, block):
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, shape).astype(np.int8)
    info = _info4(shape, zp=-7, block=block)
    data = layout.pack(a, info)
    assert data == _reference_4d(a, block, -7)
    assert len(data) == layout.nbytes(info) == int(np.prod(info.padded_shape))
    back = layout.unpack(data, info)
    assert back.dtype == np.int8 and back.flags.c_contiguous
    np.testing.assert_array_equal(back, a)


@pytest.mark.parametrize("shape,block", [((64, 64), 32), ((5, 40), 32), ((7, 16), 16)])
def test_2d_is_the_4d_layout_of_its_transpose(shape, block):
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, shape).astype(np.int8)
    m, k = shape
    info = _info2(shape, zp=3, block=block)
    data = layout.pack(a, info)
    assert data == _reference_4d(a.T.reshape(1, k, m, 1), block, 3)
    # [K/B][M][B]: byte (kb, row, j) is a[row, kb*B + j]
    blocked = np.frombuffer(data, np.int8).reshape(-(-k // block), m, block)
    assert blocked[0, m - 1, 1] == a[m - 1, 1]
    np.testing.assert_array_equal(layout.unpack(data, info), a)


def test_2d_matches_the_gemm_workload_operand_layout():
    from runtime.accel.config import AccelConfig
    from runtime.accel.workloads import tiled_gemm

    w = tiled_gemm(AccelConfig(), 64, 64, 64, 32, 32)
    info = _info2((64, 64))
    assert layout.pack(w.a, info) == w.dram[:64 * 64]
    c_info = _info2((64, 64), offset=w.out_offset)
    np.testing.assert_array_equal(layout.unpack(np.frombuffer(w.dram, np.uint8)[w.out_offset:], c_info),
                                  w.output(np.frombuffer(w.dram, np.uint8)))


def test_write_and_read_at_the_offset():
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (1, 33, 2, 2)).astype(np.int8)
    info = _info4(a.shape, zp=1, offset=96)
    dram = np.zeros(96 + layout.nbytes(info) + 32, np.uint8)
    layout.write(dram, a, info)
    assert not dram[:96].any() and not dram[-32:].any()
    np.testing.assert_array_equal(layout.read(dram, info), a)
    # padded channels hold the zero point
    blocked = dram[96:96 + layout.nbytes(info)].view(np.int8).reshape(1, 2, 2, 2, 32)
    assert (blocked[:, 1, :, :, 1:] == 1).all()


def test_info_as_a_dict_is_accepted():
    a = np.arange(6, dtype=np.int8).reshape(2, 3)
    d = vars(_info2((2, 3)))
    np.testing.assert_array_equal(layout.unpack(layout.pack(a, d), d), a)


@pytest.mark.parametrize("array,msg", [
    (np.zeros((1, 3, 4, 5), np.uint8), "dtype is uint8, expected int8"),
    (np.zeros((1, 3, 4, 5), np.float32), "dtype is float32"),
    (np.zeros((1, 3, 5, 4), np.int8), r"shape is \[1, 3, 5, 4\], expected \[1, 3, 4, 5\]"),
    (np.zeros((3, 4, 5), np.int8), "shape is"),
])
def test_pack_rejects_wrong_dtype_or_shape(array, msg):
    with pytest.raises(layout.LayoutError, match=msg):
        layout.pack(array, _info4((1, 3, 4, 5)))


def test_bad_table_entries_are_named():
    good = _info4((1, 3, 4, 5), name="act")
    bad = [
        (TensorInfo("act", 0, [1, 3, 4, 5], [1, 2, 4, 5, 32], "NC/32HW32"), "padded_shape"),
        (TensorInfo("act", 0, [1, 3, 4, 5], [1, 1, 4, 5, 32], "NHWC"), "unknown layout"),
        (TensorInfo("act", 0, [1, 3, 4, 5], [1, 1, 4, 5, 32], "NC/32HW32", "uint8"), "int8"),
        (TensorInfo("act", 0, [3, 4, 5], [1, 1, 4, 5, 32], "NC/32HW32"), "4-D"),
        (TensorInfo("act", 0, [1, 3, 4, 5], [1, 1, 4, 5, 32], "MK:K/32M32"), "2-D"),
        (TensorInfo("act", 0, [1, 3, 4, 5], [1, 1, 4, 5, 32], "NC/32HW32", zero_point=200), "zero_point"),
        (TensorInfo("act", -32, [1, 3, 4, 5], [1, 1, 4, 5, 32], "NC/32HW32"), "negative"),
    ]
    for info, msg in bad:
        with pytest.raises(layout.LayoutError, match=f"'act'.*{msg}"):
            layout.check_info(info)
    layout.check_info(good)


def test_unpack_rejects_a_short_buffer_and_read_rejects_out_of_range():
    info = _info4((1, 3, 4, 5), offset=64)
    with pytest.raises(layout.LayoutError, match="buffer holds 10 bytes, the tensor needs 640"):
        layout.unpack(bytes(10), info)
    with pytest.raises(layout.LayoutError, match=r"DRAM bytes \[64, 704\) exceed the DRAM of 700"):
        layout.read(np.zeros(700, np.uint8), info)
    with pytest.raises(layout.LayoutError, match="exceed"):
        layout.write(np.zeros(700, np.uint8), np.zeros((1, 3, 4, 5), np.int8), info)


def test_layout_error_is_a_value_error():
    assert issubclass(layout.LayoutError, ValueError)

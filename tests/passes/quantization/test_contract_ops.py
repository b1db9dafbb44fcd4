"""The reference semantics of the integer ops (lowering/reference/quantized_ops.py) against the independent
Python-integer implementation of the contract in ``contract_numpy.py``, on random data: per-channel
multipliers, round-half-up ties of negative values, int32 wrap-around, zero-point padding, int8 and
uint8, clamps and lookup tables."""

import numpy as np
import pytest

from lowering.ir import DType, TensorType
from lowering.opinfo import DOMAIN
from lowering.reference import run_graph
from tests.helpers.graphs import GraphBuilder

from . import contract_numpy as ref

pytestmark = pytest.mark.unit
RNG = np.random.default_rng(7)
INT_TYPES = {np.int8: DType.INT8, np.uint8: DType.UINT8}


def _random(dtype, shape):
    lo, hi = ref.QRANGE[np.dtype(dtype)]
    return RNG.integers(lo, hi + 1, shape).astype(dtype)


def _run(op, inputs, attrs, out_dtype, out_shape):
    """Evaluate one lowering-domain node through the reference interpreter."""
    b = GraphBuilder()
    values = []
    feeds = {}
    for i, array in enumerate(inputs):
        if array is None:
            values.append(None)
        elif i == 0 or op in ("QAdd", "QMul"):
            values.append(b.input(f"in{i}", array.shape, array.dtype))
            feeds[values[-1].name] = array
        else:
            values.append(b.const(array, f"c{i}"))
    out_type = TensorType(INT_TYPES[out_dtype], tuple(out_shape))
    b.output(b.op(op, values, attrs, domain=DOMAIN, out_type=out_type), "y")
    return run_graph(b.graph, feeds)["y"]


def _multipliers(n):
    pairs = [ref.encode_multiplier(r) for r in RNG.uniform(1e-4, 0.02, n)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


@pytest.mark.parametrize("x_dtype,out_dtype", [(np.int8, np.int8), (np.uint8, np.uint8), (np.uint8, np.int8)])
@pytest.mark.parametrize("per_channel", [True, False])
def test_qconv(x_dtype, out_dtype, per_channel):
    x = _random(x_dtype, (2, 4, 6, 5))
    w = _random(np.int8, (6, 2, 3, 3))  # group 2
    bias = RNG.integers(-5000, 5000, 6).astype(np.int32)
    mult, shift = _multipliers(6 if per_channel else 1)
    lo, hi = ref.QRANGE[np.dtype(out_dtype)]
    x_zp = 3 if x_dtype == np.int8 else 131
    out_zp = -7 if out_dtype == np.int8 else 120
    common = dict(x_zp=x_zp, w_zp=0, out_zp=out_zp, multiplier=mult, shift=shift, clamp=(lo + 20, hi - 10),
                  out_dtype=out_dtype, strides=(2, 1), pads=(1, 2, 0, 1), dilations=(1, 2), group=2)
    want = ref.qconv(x, w, bias, **common)
    attrs = dict(group=2, kernel_shape=(3, 3), strides=(2, 1), pads=(1, 2, 0, 1), dilations=(1, 2),
                 x_zero_point=x_zp, w_zero_point=0, out_zero_point=out_zp, multiplier=mult, shift=shift,
                 clamp_min=lo + 20, clamp_max=hi - 10)
    got = _run("QConv", [x, w, bias], attrs, out_dtype, want.shape)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == out_dtype


def test_qconv_pads_with_the_zero_point_and_wraps_the_accumulator():
    """40000 products of 255*255 overflow int32: the accumulator wraps like hardware's."""
    x = np.full((1, 40000, 1, 1), 255, np.uint8)
    x[0, :5, 0, 0] = [0, 1, 2, 3, 4]
    w = np.full((2, 40000, 1, 1), 255, np.uint8)
    common = dict(x_zp=0, w_zp=0, out_zp=0, multiplier=(1 << 30,), shift=(40,), clamp=(0, 255),
                  out_dtype=np.uint8, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1))
    want = ref.qconv(x, w, None, **common)
    attrs = dict(kernel_shape=(1, 1), strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), x_zero_point=0,
                 w_zero_point=0, out_zero_point=0, multiplier=(1 << 30,), shift=(40,), clamp_min=0,
                 clamp_max=255)
    np.testing.assert_array_equal(_run("QConv", [x, w], attrs, np.uint8, want.shape), want)
    exact = int(x.astype(np.int64).sum() * 255)
    assert exact > 2**31  # it did overflow, and the wrapped result differs from the exact one
    assert want[0, 0, 0, 0] != min(255, ref.rounding_shift(exact, 1 << 30, 40))
    # padding holds the zero point: a 3x3 conv of a constant image equal to its zero point is 0 + bias
    x = np.full((1, 1, 4, 4), 77, np.uint8)
    w = _random(np.int8, (1, 1, 3, 3))
    attrs.update(kernel_shape=(3, 3), pads=(1, 1, 1, 1), x_zero_point=77, multiplier=(1 << 30,), shift=(31,))
    got = _run("QConv", [x, w, np.array([-3], np.int32)], attrs, np.uint8, (1, 1, 4, 4))
    np.testing.assert_array_equal(got, np.full((1, 1, 4, 4), 0, np.uint8))  # -1.5 -> -1, clamped at 0


@pytest.mark.parametrize("t,expected", [(-3, -1), (-1, 0), (1, 1), (3, 2), (-5, -2), (5, 3), (-4, -2)])
def test_requantize_rounds_half_up_for_negative_ties(t, expected):
    """real multiplier 0.5 (M = 2^30, shift 31): t/2 rounds half toward +inf, also below zero."""
    assert ref.rounding_shift(t, 1 << 30, 31) == expected
    a = np.array([[t + 10]], np.int8)
    attrs = dict(a_zero_point=10, b_zero_point=0, out_zero_point=0, multiplier=(1 << 30,), shift=(31,),
                 clamp_min=-128, clamp_max=127)
    got = _run("QMatMul", [a, np.ones((1, 1), np.int8)], attrs, np.int8, (1, 1))
    assert int(got[0, 0]) == expected


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_qmatmul_batched_per_column_with_bias_clamp_and_lut(dtype):
    a = _random(dtype, (2, 3, 7))
    b = _random(np.int8, (7, 5))
    bias = RNG.integers(-3000, 3000, 5).astype(np.int32)
    mult, shift = _multipliers(5)
    lo, hi = ref.QRANGE[np.dtype(dtype)]
    table = RNG.integers(lo, hi + 1, 256)
    zp = 5 if dtype == np.int8 else 128
    want = ref.qmatmul(a, b, bias, a_zp=zp, b_zp=0, out_zp=zp, multiplier=mult, shift=shift,
                       clamp=(zp, hi), out_dtype=dtype, lut=table)
    attrs = dict(a_zero_point=zp, b_zero_point=0, out_zero_point=zp, multiplier=mult, shift=shift,
                 clamp_min=zp, clamp_max=hi, lut=tuple(int(v) for v in table))
    np.testing.assert_array_equal(_run("QMatMul", [a, b, bias], attrs, dtype, want.shape), want)


def test_qmatmul_wraps_the_accumulator():
    a = np.full((1, 40000), 127, np.int8)
    b = np.full((40000, 1), -128, np.int8)
    attrs = dict(a_zero_point=-128, b_zero_point=127, out_zero_point=0, multiplier=(1 << 30,), shift=(50,),
                 clamp_min=-128, clamp_max=127)
    want = ref.qmatmul(a, b, None, a_zp=-128, b_zp=127, out_zp=0, multiplier=(1 << 30,), shift=(50,),
                       clamp=(-128, 127), out_dtype=np.int8)
    np.testing.assert_array_equal(_run("QMatMul", [a, b], attrs, np.int8, (1, 1)), want)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("subtract", [False, True])
def test_qadd_broadcast(dtype, subtract):
    a, b = _random(dtype, (2, 3, 4)), _random(dtype, (3, 1))
    ma, sh = ref.encode_multiplier(0.7)
    mb = int(np.floor(0.45 * 2**sh + 0.5)) * (-1 if subtract else 1)
    lo, hi = ref.QRANGE[np.dtype(dtype)]
    zps = (3, -9, 1) if dtype == np.int8 else (128, 100, 90)
    kw = dict(a_zp=zps[0], b_zp=zps[1], a_mult=ma, b_mult=mb, shift=sh, out_zp=zps[2], clamp=(lo + 1, hi),
              out_dtype=dtype)
    want = ref.qadd(a, b, **kw)
    attrs = dict(a_zero_point=zps[0], b_zero_point=zps[1], a_multiplier=ma, b_multiplier=mb, shift=sh,
                 out_zero_point=zps[2], clamp_min=lo + 1, clamp_max=hi)
    np.testing.assert_array_equal(_run("QAdd", [a, b], attrs, dtype, want.shape), want)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_qmul(dtype):
    a, b = _random(dtype, (2, 5)), _random(dtype, (2, 5))
    m, sh = ref.encode_multiplier(0.0123)
    lo, hi = ref.QRANGE[np.dtype(dtype)]
    zp = 0 if dtype == np.int8 else 128
    want = ref.qmul(a, b, a_zp=zp, b_zp=zp + 1, multiplier=m, shift=sh, out_zp=zp, clamp=(lo, hi),
                    out_dtype=dtype)
    attrs = dict(a_zero_point=zp, b_zero_point=zp + 1, multiplier=(m,), shift=(sh,), out_zero_point=zp,
                 clamp_min=lo, clamp_max=hi)
    np.testing.assert_array_equal(_run("QMul", [a, b], attrs, dtype, want.shape), want)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_qaverage_pool_window_and_global(dtype):
    x = _random(dtype, (1, 3, 7, 6))
    lo, hi = ref.QRANGE[np.dtype(dtype)]
    zx = 7 if dtype == np.int8 else 140
    m, sh = ref.encode_multiplier(1.1 / 9)
    kw = dict(x_zp=zx, out_zp=zx - 2, multiplier=m, shift=sh, clamp=(lo, hi), out_dtype=dtype)
    want = ref.qaverage_pool(x, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 0), **kw)
    attrs = dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 0), count_include_pad=1, x_zero_point=zx,
                 out_zero_point=zx - 2, multiplier=(m,), shift=(sh,), clamp_min=lo, clamp_max=hi)
    attrs["global"] = 0
    np.testing.assert_array_equal(_run("QAveragePool", [x], attrs, dtype, want.shape), want)
    m, sh = ref.encode_multiplier(0.9 / 42)
    kw.update(multiplier=m, shift=sh)
    want = ref.qaverage_pool(x, kernel=(7, 6), strides=(1, 1), pads=(0, 0, 0, 0), **kw)
    attrs = {"global": 1, "x_zero_point": zx, "out_zero_point": zx - 2, "multiplier": (m,), "shift": (sh,),
             "clamp_min": lo, "clamp_max": hi}
    np.testing.assert_array_equal(_run("QAveragePool", [x], attrs, dtype, want.shape), want)


@pytest.mark.parametrize("extra, out_shape, message", [
    ({"dilations": (2, 2)}, (1, 1, 3, 3), r"QAveragePool with dilations \(2, 2\) is not implemented"),
    # 5 wide, kernel 2, stride 2, ceil_mode: 3 windows, the last one covers column 4 and a missing column 5
    ({"ceil_mode": 1}, (1, 1, 3, 3), "ceil_mode windows run past the padded input along spatial axis 0"),
])
def test_qaverage_pool_refuses_what_the_contract_does_not_define(extra, out_shape, message):
    """Dilated windows and ceil_mode windows that overhang the padded input are refused with the node's
    name (the reference used to sum undilated, truncated windows silently)."""
    from lowering.reference import ReferenceError

    attrs = dict(kernel_shape=(2, 2), strides=(2, 2), x_zero_point=0, out_zero_point=0, multiplier=(1 << 30,),
                 shift=(32,), clamp_min=-128, clamp_max=127, **extra)
    attrs["global"] = 0
    with pytest.raises(ReferenceError, match=message):
        _run("QAveragePool", [_random(np.int8, (1, 1, 5, 5))], attrs, np.int8, out_shape)


@pytest.mark.parametrize("in_dtype,out_dtype", [(np.int8, np.int8), (np.uint8, np.int8), (np.int8, np.uint8)])
def test_qlut(in_dtype, out_dtype):
    x = _random(in_dtype, (3, 17))
    x.reshape(-1)[:2] = ref.QRANGE[np.dtype(in_dtype)]  # both ends of the table
    lo, hi = ref.QRANGE[np.dtype(out_dtype)]
    table = RNG.integers(lo, hi + 1, 256)
    got = _run("QLut", [x], {"lut": tuple(int(v) for v in table)}, out_dtype, x.shape)
    np.testing.assert_array_equal(got, ref.qlut(x, table, out_dtype))

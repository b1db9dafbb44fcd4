"""VPU lowerings of the custom target (targets/custom/vpu.py) on the NPU-1 simulator, bit-exact against the
reference interpreter: QAdd (incl. Sub-like negative multiplier), QMul, clamp, LUT, QLut, MaxPool and
QAveragePool (global and windowed), channel counts that are not multiples of 32, multi-chunk streams,
predicted DRAM bytes == simulated bytes and the cycle estimate."""

from __future__ import annotations

import numpy as np
import pytest

from lowering.quantized import quantize_multiplier
from lowering.reference import evaluate_node
from runtime.accel.config import PRESETS, AccelConfig
from runtime.accel.simulator import simulate
from targets.custom import vpu
from targets.custom.builder import SEM_INIT, ProgramBuilder
from tests.targets.cpu_harness import GraphMaker

CFG = AccelConfig()
B = CFG.block


# ---- blocked layout helpers (B.1) ----------------------------------------------------------------------
def _as4(shape):
    return tuple(shape) if len(shape) == 4 else (1, shape[1], shape[0], 1)


def pack(x: np.ndarray, zp: int, B: int = B) -> bytes:
    """[N][C][H][W] (or [M][K] as (1, K, M, 1)) int8 -> [N][C/B][H][W][B], padded channels = zp."""
    x4 = x.T.reshape(_as4(x.shape)) if x.ndim == 2 else x
    n, c, h, w = x4.shape
    cb = -(-c // B)
    full = np.full((n, cb * B, h, w), zp, np.int8)
    full[:, :c] = x4
    return full.reshape(n, cb, B, h, w).transpose(0, 1, 3, 4, 2).tobytes()


def unpack(raw: np.ndarray, shape, B: int = B) -> np.ndarray:
    n, c, h, w = _as4(shape)
    cb = -(-c // B)
    x = np.asarray(raw).view(np.int8).reshape(n, cb, h, w, B).transpose(0, 1, 4, 2, 3)
    x = x.reshape(n, cb * B, h, w)[:, :c]
    return x.reshape(c, shape[0]).T if len(shape) == 2 else x


# ---- running one node as one layer -----------------------------------------------------------------------
def _zero_points(node) -> list[int]:
    names = {"QAdd": ("a_zero_point", "b_zero_point"), "QMul": ("a_zero_point", "b_zero_point"),
             "QAveragePool": ("x_zero_point",)}.get(node.op, ())
    return [int(node.attr(n, 0)) for n in names] or [5]


def run_node(node, arrays, lower, cfg=CFG, **kw):
    """Lower ``node`` into one layer, simulate it (hazard checker on) and return (got, expected, stats,
    simulation result)."""
    expected = evaluate_node(node, arrays)[0]
    b = ProgramBuilder(cfg)
    zps = _zero_points(node)
    ins = [b.tensor(f"in{i}", a.shape, zps[min(i, len(zps) - 1)], 1.0) for i, a in enumerate(arrays)]
    y = b.tensor("y", expected.shape, int(node.attr("out_zero_point", zps[0])), 1.0)
    b.seal_tensors()
    stats = b.begin_layer("layer", [node.name], node.op)
    lower(b, node, *ins, y, stats, **kw)
    program = b.finish()
    _check_semaphores_balanced(program)
    dram = program.initial_dram()
    for t, a in zip(ins, arrays):
        raw = np.frombuffer(pack(a, t.zero_point, b.B), np.uint8)
        dram[t.dram_line * b.B:t.dram_line * b.B + raw.size] = raw
    res = simulate(cfg, program.pack(), dram)
    got = unpack(res.dram[y.dram_line * b.B:y.dram_line * b.B + y.nbytes], expected.shape, b.B)
    return got, expected, stats, res


def _check_semaphores_balanced(program):
    net = [0] * 8
    for ins in program.instructions:
        for s in ins.signal:
            net[s] += 1
        for s in ins.wait:
            net[s] -= 1
    assert net == [0] * 8, f"semaphores do not return to {SEM_INIT}: net {net}"


def check(node, arrays, lower, cycles_tol=None, **kw):
    got, expected, stats, res = run_node(node, arrays, lower, **kw)
    np.testing.assert_array_equal(got, expected)
    dram = res.counters["dram"]
    assert stats.predicted_dram_bytes == dram["read_bytes"] + dram["write_bytes"]
    assert stats.macs == 0 and stats.compulsory_bytes > 0
    if cycles_tol is not None:
        assert abs(stats.predicted_cycles - res.cycles) <= cycles_tol * res.cycles, \
            (stats.predicted_cycles, res.cycles)
    return stats, res


# ---- node builders -----------------------------------------------------------------------------------
def _lut(seed=1):
    return np.random.default_rng(seed).integers(-128, 128, 256).tolist()


def qadd(shape, ra=0.7, rb=0.45, sub=False, clamp=(-128, 127), lut=None, shift=31):
    m = GraphMaker(seed=0)
    a, b = m.qinput(*shape), m.qinput(*shape)
    attrs = dict(a_zero_point=-3, b_zero_point=7, a_multiplier=round(ra * 2**shift),
                 b_multiplier=round(rb * 2**shift) * (-1 if sub else 1), shift=shift, out_zero_point=2,
                 clamp_min=clamp[0], clamp_max=clamp[1])
    if lut is not None:
        attrs["lut"] = lut
    y = m.node("QAdd", a, b, domain="lowering", out_dtype=np.int8, **attrs)
    return y.producer, [m.feeds[a.name], m.feeds[b.name]]


def qmul(shape, real=0.011, clamp=(-128, 127), lut=None):
    m = GraphMaker(seed=3)
    a, b = m.qinput(*shape), m.qinput(*shape)
    mult, shift = quantize_multiplier(real)
    attrs = dict(a_zero_point=4, b_zero_point=-9, multiplier=[mult], shift=[shift], out_zero_point=-6,
                 clamp_min=clamp[0], clamp_max=clamp[1])
    if lut is not None:
        attrs["lut"] = lut
    y = m.node("QMul", a, b, domain="lowering", out_dtype=np.int8, **attrs)
    return y.producer, [m.feeds[a.name], m.feeds[b.name]]


def maxpool(shape, **attrs):
    m = GraphMaker(seed=4)
    x = m.qinput(*shape)
    return m.node("MaxPool", x, **attrs).producer, [m.feeds[x.name]]


def qavgpool(shape, count, **attrs):
    m = GraphMaker(seed=5)
    x = m.qinput(*shape)
    mult, shift = quantize_multiplier(0.8 / count)
    y = m.node("QAveragePool", x, domain="lowering", out_dtype=np.int8, x_zero_point=-11, out_zero_point=3,
               multiplier=[mult], shift=[shift], clamp_min=-100, clamp_max=127, **attrs)
    return y.producer, [m.feeds[x.name]]


def qlut(shape):
    m = GraphMaker(seed=6)
    x = m.qinput(*shape)
    return m.node("QLut", x, domain="lowering", out_dtype=np.int8, lut=_lut(7)).producer, [m.feeds[x.name]]


# ---- element-wise -------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [3, 24, 64, 72])
def test_qadd_channels(c):
    node, arrays = qadd((1, c, 9, 7))
    assert vpu.unsupported_reason(node) is None
    check(node, arrays, vpu.lower_qadd)


def test_qadd_sub_clamp_lut_several_chunks():
    node, arrays = qadd((1, 72, 10, 11), sub=True, clamp=(2, 90), lut=_lut())
    stats, res = check(node, arrays, vpu.lower_qadd, chunk_lines=64)
    assert stats.tiling["op"] == "SUB" and stats.tiling["chunks"] == 6 and stats.tiling["lut"]
    assert res.counters["instructions"]["EWISE"] == 6


def test_qadd_2d_matrix():
    node, arrays = qadd((50, 40), ra=1.3, rb=0.2, shift=30)
    check(node, arrays, vpu.lower_qadd)


@pytest.mark.parametrize("c", [3, 64])
def test_qmul(c):
    node, arrays = qmul((1, c, 6, 5))
    check(node, arrays, vpu.lower_qmul)


def test_qmul_clamp_lut_chunks():
    node, arrays = qmul((1, 24, 16, 16), real=0.02, clamp=(-6, 60), lut=_lut(2))
    check(node, arrays, vpu.lower_qmul, chunk_lines=100)


@pytest.mark.parametrize("c", [3, 72])
def test_qlut(c):
    node, arrays = qlut((1, c, 5, 6))
    assert vpu.unsupported_reason(node) is None
    check(node, arrays, vpu.lower_qlut)


def test_large_qadd_streams_and_predicts():
    node, arrays = qadd((1, 64, 112, 112), lut=_lut(3))
    stats, res = check(node, arrays, vpu.lower_qadd, cycles_tol=0.05)
    assert stats.tiling["chunks"] > 2
    assert stats.compulsory_bytes == 3 * 64 * 112 * 112 + 32 + 256


# ---- pooling -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [3, 24, 64, 72])
def test_maxpool_2x2_s2(c):
    node, arrays = maxpool((1, c, 8, 10), kernel_shape=[2, 2], strides=[2, 2])
    assert vpu.unsupported_reason(node) is None
    check(node, arrays, vpu.lower_maxpool)


@pytest.mark.parametrize("c", [3, 72])
def test_maxpool_3x3_s2_pad1(c):
    node, arrays = maxpool((1, c, 13, 12), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    check(node, arrays, vpu.lower_maxpool)


def test_maxpool_ceil_mode_overhang():
    node, arrays = maxpool((1, 40, 8, 9), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    assert node.output.type.shape == (1, 40, 4, 4)
    check(node, arrays, vpu.lower_maxpool)


def test_large_maxpool_tiles_rows():
    node, arrays = maxpool((1, 64, 112, 112), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    stats, _ = check(node, arrays, vpu.lower_maxpool, cycles_tol=0.05)
    assert stats.tiling["out_rows_per_tile"] < 56 and stats.tiling["chunks"] > 2
    assert stats.compulsory_bytes <= stats.predicted_dram_bytes <= 1.05 * stats.compulsory_bytes


@pytest.mark.parametrize("c", [24, 64, 72])
def test_qavgpool_global_7x7(c):
    node, arrays = qavgpool((1, c, 7, 7), 49, **{"global": 1})
    assert vpu.unsupported_reason(node) is None
    check(node, arrays, vpu.lower_qavgpool)


def test_qavgpool_global_many_planes_and_odd_grid():
    check(*qavgpool((1, 512, 7, 7), 49, **{"global": 1}), vpu.lower_qavgpool)
    check(*qavgpool((1, 3, 2, 16), 32, **{"global": 1}), vpu.lower_qavgpool)   # read as a 4x8 grid


def test_qavgpool_windowed():
    check(*qavgpool((1, 24, 9, 10), 9, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
          vpu.lower_qavgpool)
    check(*qavgpool((1, 72, 8, 8), 4, kernel_shape=[2, 2], strides=[2, 2]), vpu.lower_qavgpool)


@pytest.mark.parametrize("seed", range(12))
def test_random_pool_geometries(seed):
    """Random kernels, strides, pads and ceil_mode: whatever the VPU accepts must be exact."""
    rng = np.random.default_rng(seed)
    accepted = 0
    for _ in range(4):
        k = [int(v) for v in rng.integers(1, 6, 2)]
        attrs = dict(kernel_shape=k, strides=[int(v) for v in rng.integers(1, 4, 2)],
                     pads=[int(rng.integers(0, k[0])), int(rng.integers(0, k[1])),
                           int(rng.integers(0, k[0])), int(rng.integers(0, k[1]))],
                     ceil_mode=int(rng.integers(0, 2)))
        shape = (1, int(rng.integers(1, 80)), int(rng.integers(k[0], 20)), int(rng.integers(k[1], 20)))
        node, arrays = maxpool(shape, **attrs)
        if vpu.unsupported_reason(node) is None:
            check(node, arrays, vpu.lower_maxpool)
            accepted += 1
        attrs["ceil_mode"] = 0
        node, arrays = qavgpool(shape, k[0] * k[1], **attrs)
        if vpu.unsupported_reason(node) is None:
            check(node, arrays, vpu.lower_qavgpool)
            accepted += 1
    assert accepted >= 4


def test_qadd_same_tensor_twice_and_tiny_global_pools():
    m = GraphMaker()
    x = m.qinput(1, 33, 5, 5)
    y = m.node("QAdd", x, x, domain="lowering", out_dtype=np.int8, a_zero_point=1, b_zero_point=1,
               a_multiplier=1 << 29, b_multiplier=-(1 << 28), shift=30, out_zero_point=0, clamp_min=-128,
               clamp_max=127)
    check(y.producer, [m.feeds[x.name]] * 2, vpu.lower_qadd)
    for hw, count in (((1, 1), 1), ((8, 8), 64), ((3, 5), 15)):
        check(*qavgpool((1, 40) + hw, count, **{"global": 1}), vpu.lower_qavgpool)


# ---- other configurations, layer chaining -------------------------------------------------------------
@pytest.mark.parametrize("preset", ["vta_like", "tpu_v1_like"])
def test_other_presets(preset):
    cfg = PRESETS[preset]
    for (node, arrays), lower in [(qadd((1, 40, 30, 30), lut=_lut(3)), vpu.lower_qadd),
                                  (qlut((1, 24, 33, 17)), vpu.lower_qlut),
                                  (maxpool((1, 20, 60, 60), kernel_shape=[3, 3], strides=[2, 2],
                                           pads=[1, 1, 1, 1]), vpu.lower_maxpool),
                                  (qavgpool((1, 100, 7, 7), 49, **{"global": 1}), vpu.lower_qavgpool)]:
        got, expected, stats, res = run_node(node, arrays, lower, cfg=cfg)
        np.testing.assert_array_equal(got, expected)
        dram = res.counters["dram"]
        assert stats.predicted_dram_bytes == dram["read_bytes"] + dram["write_bytes"]
        assert abs(stats.predicted_cycles - res.cycles) <= 0.05 * res.cycles


def test_two_layers_in_one_program():
    """QAdd then MaxPool of its output: the second layer's fences and the restored semaphores."""
    add, (xa, xb) = qadd((1, 40, 12, 12), clamp=(2, 127))
    t_add = evaluate_node(add, [xa, xb])[0]
    m = GraphMaker()
    x = m.qinput(*t_add.shape)
    pool = m.node("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]).producer
    want = evaluate_node(pool, [t_add])[0]
    b = ProgramBuilder(CFG)
    a_t, b_t = b.tensor("a", xa.shape, -3, 1.0), b.tensor("b", xb.shape, 7, 1.0)
    mid, out = b.tensor("mid", t_add.shape, 2, 1.0), b.tensor("out", want.shape, 2, 1.0)
    b.seal_tensors()
    vpu.lower_qadd(b, add, a_t, b_t, mid, b.begin_layer("add"), chunk_lines=50)
    vpu.lower_maxpool(b, pool, mid, out, b.begin_layer("pool"))
    program = b.finish()
    dram = program.initial_dram()
    for t, arr in ((a_t, xa), (b_t, xb)):
        raw = np.frombuffer(pack(arr, t.zero_point), np.uint8)
        dram[t.dram_line * B:t.dram_line * B + raw.size] = raw
    res = simulate(CFG, program.pack(), dram)
    got = unpack(res.dram[out.dram_line * B:out.dram_line * B + out.nbytes], want.shape)
    np.testing.assert_array_equal(got, want)


# ---- what stays on the host ------------------------------------------------------------------------------
def test_unsupported_reasons():
    m = GraphMaker()
    a, b = m.qinput(1, 8, 4, 4), m.qinput(1, 8, 1, 1)
    y = m.node("QAdd", a, b, domain="lowering", out_dtype=np.int8, a_zero_point=0, b_zero_point=0,
               a_multiplier=1 << 30, b_multiplier=1 << 30, shift=31, out_zero_point=0, clamp_min=-128,
               clamp_max=127)
    assert "broadcast" in vpu.unsupported_reason(y.producer)
    node, _ = qavgpool((1, 8, 14, 14), 196, **{"global": 1})
    assert "two passes" in vpu.unsupported_reason(node)
    node, _ = maxpool((1, 8, 20, 20), kernel_shape=[3, 3], dilations=[2, 2])
    assert "dilated" in vpu.unsupported_reason(node)
    node, _ = maxpool((1, 8, 20, 20), kernel_shape=[9, 9])
    assert "8x8" in vpu.unsupported_reason(node)
    node, _ = maxpool((1, 8, 20, 20), kernel_shape=[2, 2], strides=[5, 5])
    assert "strides" in vpu.unsupported_reason(node)
    m = GraphMaker()
    x = m.qinput(1, 8, 4, 4, dtype=np.uint8)
    y = m.node("QLut", x, domain="lowering", out_dtype=np.uint8, lut=list(range(256)))
    assert "int8" in vpu.unsupported_reason(y.producer)

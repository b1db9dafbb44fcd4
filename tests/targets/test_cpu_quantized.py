"""The cpu target's integer kernels against the reference interpreter: every result bit-identical.

The ops are those of ``lowering.quantized`` (QConv, QMatMul, QAdd, QMul, QAveragePool, QLut) plus
QuantizeLinear / DequantizeLinear and the data-movement ops on int8 / uint8 tensors. Inputs are random int8
/ uint8 data, requantisation parameters come from ``quantize_multiplier`` (per channel and per tensor), and
every output must equal ``run_graph``'s exactly. The int8 GEMM families are built for each code path: AVX-512
VNNI (when this CPU has it), AVX-512BW and AVX2 16-bit multiply-adds, and plain C (``-DLW_PORTABLE_C``).
"""

from __future__ import annotations

import shlex

import numpy as np
import pytest

from lowering.ir import Attr, DType, Node, TensorType, Value
from lowering.opinfo import DOMAIN
from lowering.quantized import quantize_multiplier, quantize_multipliers
from runtime.backends.cpu import cpu_flags
from targets.cpu.build import find_compiler
from targets.cpu.target import CpuTarget

from .cpu_harness import GraphMaker, build_cpu, check_against_reference, check_exactly

pytestmark = pytest.mark.target_cpu

HAVE_VNNI = "avx512_vnni" in (cpu_flags() or set()) and "avx512bw" in (cpu_flags() or set())
HAVE_V4 = "avx512bw" in (cpu_flags() or set())
HAVE_V3 = "avx2" in (cpu_flags() or set())

# (isa option, extra compiler define): every int8 GEMM code path the target can select
GEMM_PATHS = [
    pytest.param(
        "x86-64-v4-vnni", None, id="vnni", marks=pytest.mark.skipif(not HAVE_VNNI, reason="no VNNI")
    ),
    pytest.param(
        "x86-64-v4", None, id="avx512bw", marks=pytest.mark.skipif(not HAVE_V4, reason="no AVX-512")
    ),
    pytest.param("x86-64-v3", None, id="avx2", marks=pytest.mark.skipif(not HAVE_V3, reason="no AVX2")),
    pytest.param(
        "x86-64-v3",
        "-DLW_PORTABLE_C",
        id="portable-c",
        marks=pytest.mark.skipif(not HAVE_V3, reason="no AVX2"),
    ),
]


def build_options(isa: str, define: str | None) -> dict:
    options = {"isa": isa}
    if define:
        options["cc"] = shlex.join(find_compiler({}) + [define])
    return options


def q(m: GraphMaker, op: str, *inputs, out_dtype=np.int8, **attrs):
    return m.node(op, *inputs, domain=DOMAIN, out_dtype=out_dtype, **attrs)


def qrange(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def requant_attrs(
    m: GraphMaker,
    channels: int,
    real: float,
    out_dtype=np.int8,
    per_channel=True,
    relu=False,
    lut=False,
    zero_point=None,
) -> dict:
    """Random but valid requantisation attributes around the real multiplier ``real``."""
    lo, hi = qrange(out_dtype)
    count = channels if per_channel else 1
    mult, shift = quantize_multipliers(real * m.rng.uniform(0.5, 2.0, count))
    zp = int(m.rng.integers(lo // 2, hi // 2 + 1)) if zero_point is None else zero_point
    attrs = {
        "multiplier": mult,
        "shift": shift,
        "out_zero_point": zp,
        "clamp_min": zp if relu else lo,
        "clamp_max": hi,
    }
    if lut:
        attrs["lut"] = tuple(int(v) for v in m.rng.integers(lo, hi, 256, endpoint=True))
    return attrs


def weights(m: GraphMaker, *shape: int, dtype=np.int8):
    lo, hi = qrange(dtype)
    return m.const(m.rng.integers(max(lo, -127), hi, shape, endpoint=True).astype(dtype))


def bias(m: GraphMaker, n: int, spread: int = 20000):
    return m.const(m.rng.integers(-spread, spread, n).astype(np.int32))


# --- QConv ------------------------------------------------------------------------------------------

# (input shape, input dtype, weight shape, weight dtype, conv attrs, options)
QCONV_CASES = [
    ((1, 8, 10, 10), np.int8, (16, 8, 3, 3), np.int8, {"pads": (1, 1, 1, 1)}, {}),
    ((2, 3, 17, 13), np.uint8, (7, 3, 3, 3), np.int8, {"strides": (2, 2)}, {"per_channel": False}),
    (
        (1, 4, 12, 12),
        np.int8,
        (8, 4, 3, 3),
        np.int8,
        {"dilations": (2, 2), "pads": (2, 2, 2, 2)},
        {"relu": True},
    ),
    ((1, 8, 9, 9), np.uint8, (12, 4, 3, 3), np.int8, {"group": 2, "pads": (1, 0, 1, 2)}, {"lut": True}),
    ((1, 6, 11, 11), np.int8, (6, 1, 3, 3), np.int8, {"group": 6, "pads": (1, 1, 1, 1)}, {}),  # depthwise
    (
        (2, 4, 12, 12),
        np.uint8,
        (8, 1, 5, 5),
        np.int8,
        {"group": 4, "strides": (2, 2), "auto_pad": "SAME_UPPER"},
        {"relu": True},
    ),  # depthwise, channel multiplier 2, stride 2
    (
        (1, 5, 8, 8),
        np.int8,
        (5, 1, 3, 3),
        np.int8,
        {"group": 5, "dilations": (2, 2), "auto_pad": "SAME_LOWER", "strides": (1, 3)},
        {"lut": True},
    ),
    ((1, 64, 9, 9), np.int8, (70, 64, 1, 1), np.int8, {}, {}),  # pointwise
    ((1, 16, 9, 9), np.uint8, (8, 16, 1, 1), np.int8, {"strides": (2, 2)}, {"per_channel": False}),
    ((1, 64, 7, 7), np.int8, (13, 64, 3, 3), np.int8, {"pads": (1, 1, 1, 1)}, {}),  # K = 576
    ((1, 3, 20), np.uint8, (4, 3, 5), np.int8, {"pads": (2, 1), "strides": (2,)}, {}),  # 1-D
    ((1, 2, 31), np.int8, (4, 1, 3), np.int8, {"group": 2, "dilations": (3,)}, {}),  # 1-D depthwise
    (
        (1, 3, 15, 15),
        np.uint8,
        (9, 3, 7, 7),
        np.int8,
        {"strides": (2, 2), "pads": (3, 3, 3, 3)},
        {"relu": True},
    ),
    ((1, 4, 5, 40), np.int8, (4, 1, 3, 3), np.int8, {"group": 4, "pads": (1, 1, 1, 1)}, {}),
    ((2, 8, 20, 24), np.int8, (24, 8, 3, 3), np.int8, {"pads": (1, 1, 1, 1)}, {}),  # many column panels
    ((1, 6, 12, 30), np.uint8, (5, 6, 3, 3), np.uint8, {"pads": (0, 1, 2, 1)}, {"w_zero_point": 128}),
    ((1, 8, 9, 9), np.int8, (8, 8, 3, 3), np.int8, {"pads": (1, 1, 1, 1)}, {"w_zero_point": 5}),
    ((1, 6, 7, 7), np.uint8, (6, 1, 3, 3), np.uint8, {"group": 6, "strides": (2, 2)}, {"w_zero_point": 130}),
    ((1, 12, 6, 6), np.int8, (6, 4, 2, 2), np.int8, {"group": 3, "strides": (2, 2)}, {"w_zero_point": -3}),
    # stride 1 with output rows narrower than input rows: one masked load per output-row segment
    ((1, 4, 9, 20), np.int8, (6, 4, 3, 3), np.int8, {"dilations": (2, 2), "pads": (0, 1, 0, 1)}, {}),
    (
        (1, 4, 14, 14),
        np.uint8,
        (6, 4, 3, 3),
        np.int8,
        {"strides": (3, 3), "pads": (1, 1, 1, 1)},
        {},
    ),  # stride 3
    ((1, 256, 5, 5), np.uint8, (20, 256, 3, 3), np.int8, {"pads": (1, 1, 1, 1)}, {}),  # K = 2304
]


def qconv_graph(seed: int = 0) -> GraphMaker:
    m = GraphMaker("qconv", seed=seed)
    outs = []
    for i, (xs, xdt, ws, wdt, attrs, opts) in enumerate(QCONV_CASES):
        opts = dict(opts)
        wzp = opts.pop("w_zero_point", 0)
        out_dtype = (np.int8, np.uint8)[i % 2]
        lo, hi = qrange(xdt)
        zx = int(m.rng.integers(lo, hi, endpoint=True)) if i % 3 else (lo if xdt == np.uint8 else 0)
        k = ws[1] * int(np.prod(ws[2:]))
        real = 0.004 / np.sqrt(k)
        b = bias(m, ws[0]) if i % 4 != 1 else None
        outs.append(
            q(
                m,
                "QConv",
                m.qinput(*xs, dtype=xdt),
                weights(m, *ws, dtype=wdt),
                b,
                out_dtype=out_dtype,
                x_zero_point=zx,
                w_zero_point=wzp,
                **attrs,
                **requant_attrs(m, ws[0], real, out_dtype, **opts),
            )
        )
    return m.output(*outs)


@pytest.mark.parametrize("isa, define", GEMM_PATHS)
def test_qconv_variants(isa, define):
    m = qconv_graph()
    built = check_against_reference(m, threads=1, **build_options(isa, define))
    assert built.build.manifest["requires"]["isa"] == isa
    assert ("avx512_vnni" in built.build.manifest["requires"]["cpu_flags"]) == (isa == "x86-64-v4-vnni")
    single = built.run(m.feeds, threads=1)
    for threads in (2, 3):  # the fused and unfused im2col schedules give the same bytes
        for name, value in built.run(m.feeds, threads=threads).items():
            np.testing.assert_array_equal(value, single[name], err_msg=f"{name} with {threads} threads")


# --- QMatMul ----------------------------------------------------------------------------------------


def qmatmul_graph(seed: int = 0) -> GraphMaker:
    m = GraphMaker("qmatmul", seed=seed)
    outs = []

    def mm(a, b, n, k, bias_value=None, out_dtype=np.int8, za=None, zb=0, **opts):
        lo, hi = qrange(m._env[id(a)].dtype)
        za = int(m.rng.integers(lo, hi, endpoint=True)) if za is None else za
        attrs = requant_attrs(m, n, 0.004 / np.sqrt(k), out_dtype, **opts)
        outs.append(
            q(m, "QMatMul", a, b, bias_value, out_dtype=out_dtype, a_zero_point=za, b_zero_point=zb, **attrs)
        )

    mm(m.qinput(8, 20), weights(m, 20, 30), 30, 20, bias(m, 30))
    mm(m.qinput(2, 5, 40, dtype=np.uint8), weights(m, 40, 70), 70, 40, None, np.uint8, per_channel=False)
    mm(m.qinput(3, 33, 64), weights(m, 64, 17), 17, 64, bias(m, 17), relu=True, lut=True)
    mm(m.qinput(1, 3000, dtype=np.uint8), weights(m, 3000, 50), 50, 3000, bias(m, 50), np.uint8)  # large K
    mm(m.qinput(5, 7), weights(m, 7, 3, dtype=np.uint8), 3, 7, None, zb=100)  # uint8 B, both zero points
    # runtime x runtime (attention-like), batched and broadcast, uint8 operands
    mm(m.qinput(2, 3, 6, 16), m.qinput(2, 3, 16, 5), 5, 16, per_channel=False)
    mm(
        m.qinput(2, 1, 6, 16, dtype=np.uint8),
        m.qinput(1, 3, 16, 5, dtype=np.uint8),
        5,
        16,
        None,
        np.uint8,
        per_channel=False,
        zb=128,
    )
    mm(m.qinput(4, 6, 16), weights(m, 4, 16, 5), 5, 16, bias(m, 5), zb=-2, per_channel=False)
    mm(weights(m, 6, 16, dtype=np.uint8), m.qinput(3, 16, 5), 5, 16, None, zb=3, per_channel=False)  # const A
    mm(m.qinput(16), weights(m, 16, 5), 5, 16, bias(m, 5))  # 1-D A
    mm(m.qinput(3, 6, 16, dtype=np.uint8), m.qinput(16), 1, 16, None, per_channel=False)  # 1-D B
    mm(
        m.qinput(70, 300, dtype=np.uint8),
        m.qinput(300, 90),
        90,
        300,
        None,
        np.uint8,
        per_channel=False,
        zb=-7,
    )
    return m.output(*outs)


@pytest.mark.parametrize("isa, define", GEMM_PATHS)
def test_qmatmul_variants(isa, define):
    m = qmatmul_graph()
    built = check_against_reference(m, threads=2, **build_options(isa, define))
    one = built.run(m.feeds, threads=1)
    for name, value in built.run(m.feeds, threads=3).items():
        np.testing.assert_array_equal(value, one[name], err_msg=name)


def test_int32_wraparound_is_the_references():
    """Accumulators past int32 wrap exactly as the reference's wrap_int32 (the kernels sum modulo 2^32)."""
    m = GraphMaker("wrap")
    k = 70000
    a = m.qinput(2, k, dtype=np.uint8, low=250)
    b = m.const(np.full((k, 16), -128, np.int8))
    mult, shift = quantize_multiplier(0.5)
    attrs = {
        "multiplier": (mult,),
        "shift": (shift,),
        "out_zero_point": 0,
        "clamp_min": -128,
        "clamp_max": 127,
    }
    y = q(m, "QMatMul", a, b, None, a_zero_point=0, b_zero_point=0, **attrs)
    # x = 255, w = -128 everywhere: the exact sum -2.28e9 wraps to a positive int32
    c = q(
        m,
        "QConv",
        m.qinput(1, k // 9, 3, 3, dtype=np.uint8, low=255),
        m.const(np.full((4, k // 9, 3, 3), -128, np.int8)),
        None,
        x_zero_point=0,
        w_zero_point=0,
        **attrs,
    )
    check_against_reference(m.output(y, c))


# --- rounding ties -----------------------------------------------------------------------------------


def test_rounding_ties_round_half_up():
    """t * M / 2^shift lands on exact halves (positive and negative): the kernels round half up like the
    reference's (t * M + 2^(shift-1)) >> shift."""
    m = GraphMaker("ties")
    half = {"multiplier": (1 << 30,), "shift": (33,)}  # t / 8: ties at t = 4 mod 8
    attrs = dict(half, out_zero_point=0, clamp_min=-128, clamp_max=127)
    x = m.qinput(1, 4, 6, 6, low=-8, high=8)
    w = m.const(m.rng.integers(-3, 4, (8, 4, 3, 3)).astype(np.int8))
    outs = [
        q(m, "QConv", x, w, None, pads=(1, 1, 1, 1), x_zero_point=0, w_zero_point=0, **attrs),
        q(
            m,
            "QConv",
            x,
            m.const(np.full((4, 1, 3, 3), 4, np.int8)),
            m.const(np.arange(4, dtype=np.int32)),
            group=4,
            x_zero_point=1,
            w_zero_point=0,
            **attrs,
        ),
        q(
            m,
            "QMatMul",
            m.qinput(9, 12, low=-8, high=8),
            m.const(np.eye(12, 7, dtype=np.int8) * 4),
            None,
            a_zero_point=0,
            b_zero_point=0,
            **attrs,
        ),  # t = 4 * a: ties at odd a, both signs
        q(
            m,
            "QAdd",
            m.qinput(3, 40, low=-50, high=50),
            m.qinput(3, 40, low=-50, high=50),
            a_multiplier=1,
            b_multiplier=1,
            shift=1,
            a_zero_point=0,
            b_zero_point=0,
            out_zero_point=0,
            clamp_min=-128,
            clamp_max=127,
        ),  # (a + b + 1) >> 1
        q(
            m,
            "QMul",
            m.qinput(3, 40, low=-11, high=11),
            m.qinput(3, 40, low=-11, high=11),
            multiplier=(1 << 30,),
            shift=(31,),
            a_zero_point=0,
            b_zero_point=0,
            out_zero_point=0,
            clamp_min=-128,
            clamp_max=127,
        ),
        q(
            m,
            "QAveragePool",
            m.qinput(1, 3, 4, 4, low=-9, high=9),
            kernel_shape=(2, 2),
            strides=(2, 2),
            x_zero_point=0,
            multiplier=(1 << 30,),
            shift=(32,),
            out_zero_point=0,
            clamp_min=-128,
            clamp_max=127,
        ),
    ]
    check_against_reference(m.output(*outs))
    a = m.feeds[m.graph.inputs[1].name].astype(np.int64)  # the QMatMul ties: odd a of both signs
    assert ((a > 0) & (a % 2 == 1)).any() and ((a < 0) & (a % 2 == 1)).any()


# --- elementwise, LUT, pooling ----------------------------------------------------------------------


def test_qadd_qmul_qlut_broadcasting():
    m = GraphMaker("qelementwise")
    outs = []
    shapes = [
        ((2, 3, 4, 5), (2, 3, 4, 5)),
        ((2, 3, 4, 5), (3, 1, 1)),
        ((1, 3, 1, 5), (2, 1, 4, 1)),
        ((4, 70000), (70000,)),
        ((6,), (1,)),
    ]
    for i, (sa, sb) in enumerate(shapes):
        da, db = (np.int8, np.uint8)[i % 2], (np.int8, np.uint8)[(i // 2) % 2]
        out_dtype = (np.uint8, np.int8)[i % 2]
        a, b = m.qinput(*sa, dtype=da), m.qinput(*sb, dtype=db)
        lo, hi = qrange(out_dtype)
        sh = 28 + i % 3  # one shift, two multipliers (real = M / 2^shift), as the folding pass encodes QAdd
        ma = round((0.3 + 0.1 * i) * 2**sh)
        mb = round(0.7 * 2**sh) * (-1 if i == 2 else 1)  # i == 2: a subtraction (negative multiplier)
        zo = int(m.rng.integers(lo, hi))
        outs.append(
            q(
                m,
                "QAdd",
                a,
                b,
                out_dtype=out_dtype,
                a_zero_point=int(m.rng.integers(*qrange(da))),
                b_zero_point=int(m.rng.integers(*qrange(db))),
                a_multiplier=ma,
                b_multiplier=mb,
                shift=sh,
                out_zero_point=zo,
                clamp_min=zo if i == 3 else lo,
                clamp_max=hi,
                **({"lut": tuple(int(v) for v in m.rng.integers(lo, hi, 256))} if i == 1 else {}),
            )
        )
        mult, shift = quantize_multiplier(0.01 * (i + 1))
        outs.append(
            q(
                m,
                "QMul",
                a,
                b,
                out_dtype=out_dtype,
                a_zero_point=int(m.rng.integers(*qrange(da))),
                b_zero_point=int(m.rng.integers(*qrange(db))),
                multiplier=(mult,),
                shift=(shift,),
                out_zero_point=zo,
                clamp_min=lo,
                clamp_max=hi - 3 * i,
                **({"lut": tuple(int(v) for v in m.rng.integers(lo, hi, 256))} if i == 4 else {}),
            )
        )
    for dx, dy in ((np.int8, np.int8), (np.uint8, np.int8), (np.int8, np.uint8), (np.uint8, np.uint8)):
        lo, hi = qrange(dy)
        table = tuple(int(v) for v in m.rng.integers(lo, hi, 256, endpoint=True))
        outs.append(q(m, "QLut", m.qinput(3, 7, 11, dtype=dx), out_dtype=dy, lut=table))
    check_against_reference(m.output(*outs))


QPOOL_CASES = [  # (input shape, attrs)
    ((1, 3, 8, 8), {"kernel_shape": (2, 2), "strides": (2, 2)}),
    ((2, 4, 9, 9), {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
    ((1, 2, 7, 300), {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}),
    ((1, 3, 17), {"kernel_shape": (3,), "strides": (2,)}),
    ((1, 2, 10, 10), {"kernel_shape": (3, 2), "strides": (1, 2), "pads": (0, 1, 2, 1)}),
    ((2, 5, 7, 6), {"global": 1}),
    ((1, 8, 56, 56), {"global": 1}),
    ((1, 4, 9), {"global": 1}),
]


def test_qaverage_pool():
    m = GraphMaker("qpool")
    outs = []
    for i, (shape, attrs) in enumerate(QPOOL_CASES):
        dx, dy = (np.int8, np.uint8)[i % 2], (np.uint8, np.int8)[(i // 2) % 2]
        count = np.prod(shape[2:]) if attrs.get("global") else np.prod(attrs["kernel_shape"])
        mult, shift = quantize_multiplier(0.9 / count)
        lo, hi = qrange(dy)
        zo = int(m.rng.integers(lo, hi))
        outs.append(
            q(
                m,
                "QAveragePool",
                m.qinput(*shape, dtype=dx),
                out_dtype=dy,
                x_zero_point=int(m.rng.integers(*qrange(dx))),
                multiplier=(mult,),
                shift=(shift,),
                out_zero_point=zo,
                clamp_min=zo if i % 3 == 0 else lo,
                clamp_max=hi,
                **attrs,
            )
        )
    check_against_reference(m.output(*outs))


# --- QuantizeLinear / DequantizeLinear ----------------------------------------------------------------


def test_quantize_dequantize_linear():
    m = GraphMaker("qdq")
    x = m.input(2, 3, 4, 5)
    m.feeds[x.name] *= 40
    data = m.feeds[x.name]
    data[0, 0, 0, :] = [0.125, -0.125, 0.375, -0.375, 2.625]  # exact ties at scale 0.25: half to even
    data[0, 0, 1, :] = [1e9, -1e9, 3e12, -0.0, 0.0]  # saturation
    data[1, 2, 3, :] = [60.0, -60.0, 1e-30, -1e-30, 127.5]
    outs = []
    cases = [
        (np.int8, 1, False),
        (np.uint8, 1, True),
        (np.int8, -1, True),
        (np.uint8, 0, True),
        (np.int8, 2, True),
    ]
    for dtype, axis, per_axis in cases:
        size = data.shape[axis] if per_axis else 1
        scale = np.float32(0.25) * m.rng.choice([1.0, 0.5, 2.0, 0.3, 0.07], size).astype(np.float32)
        if not per_axis:
            scale = np.asarray(np.float32(0.25))
        lo, hi = qrange(dtype)
        zp = m.rng.integers(lo // 2, hi // 2, size).astype(dtype)
        zp = zp.reshape(()) if not per_axis else zp
        s, z = m.const(scale.astype(np.float32)), m.const(zp)
        qv = m.node("QuantizeLinear", x, s, z, axis=axis)
        outs += [qv, m.node("DequantizeLinear", qv, s, z, axis=axis)]
    # no zero point (uint8 by default), an int32 input, an int8 input without zero point
    outs.append(m.node("QuantizeLinear", x, m.const(np.float32(0.5))))
    outs.append(
        m.node(
            "DequantizeLinear",
            m.qinput(3, 7, dtype=np.int32),
            m.const(np.float32(1e-3)),
            m.const(np.int32(-77)),
        )
    )
    outs.append(
        m.node(
            "DequantizeLinear",
            m.qinput(3, 7, dtype=np.int32, low=-(1 << 31), high=(1 << 31) - 1),
            m.const(np.array([0.1, 0.2, 0.3], np.float32)),
            m.const(np.array([5, -6, 7], np.int32)),
            axis=0,
        )
    )
    outs.append(m.node("DequantizeLinear", m.qinput(4, 5), m.const(np.float32(0.02))))
    check_exactly(m.output(*outs))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # the reference typing the outputs
def test_quantize_non_finite_saturates_like_onnxruntime():
    """+inf saturates to qmax, -inf and NaN give qmin (what ONNX Runtime does; the reference's float -> int64
    cast is undefined there, so this is checked against the values, not run_graph)."""
    m = GraphMaker("qnan")
    x = m.input(6)
    m.feeds[x.name][:] = [np.inf, -np.inf, np.nan, 1e30, -1e30, 0.125]
    outs = [
        m.node("QuantizeLinear", x, m.const(np.float32(0.25)), m.const(zp))
        for zp in (np.int8(-3), np.int8(3), np.uint8(100))
    ]
    got = build_cpu(m.output(*outs).graph).run(m.feeds)
    want = [[127, -128, -128, 127, -128, -3], [127, -128, -128, 127, -128, 3], [255, 0, 0, 255, 0, 100]]
    for (name, value), expected in zip(got.items(), want):
        np.testing.assert_array_equal(value, np.array(expected, value.dtype), err_msg=name)


# --- data movement on integer tensors ---------------------------------------------------------------


def test_int8_data_movement_and_views():
    m = GraphMaker("int8_data")
    outs = []
    for dtype in (np.int8, np.uint8):
        x = m.qinput(2, 3, 9, 10, dtype=dtype)
        outs += [
            m.node("MaxPool", x, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
            m.node("MaxPool", x, kernel_shape=(2, 3), dilations=(2, 1), ceil_mode=1, strides=(2, 2)),
            m.node("MaxPool", m.qinput(1, 2, 17, dtype=dtype), kernel_shape=(4,), strides=(3,)),
            m.node("GlobalMaxPool", x),
            m.node("Transpose", x, perm=(0, 2, 3, 1)),
            m.node("Transpose", x, perm=(3, 2, 1, 0)),
            m.node(
                "Concat",
                x,
                m.qinput(2, 3, 2, 10, dtype=dtype),
                m.const(np.ones((2, 3, 1, 10), dtype)),
                axis=2,
            ),
            m.node(
                "Copy",
                m.node("Unsqueeze", m.node("Flatten", x, axis=2), m.const(np.array([0], np.int64))),
                domain=DOMAIN,
            ),
        ]
        flat = m.node(
            "Reshape", m.node("Transpose", x, perm=(1, 0, 2, 3)), m.const(np.array([3, -1], np.int64))
        )
        squeezed = m.node(
            "Squeeze",
            m.node("Unsqueeze", flat, m.const(np.array([1], np.int64))),
            m.const(np.array([1], np.int64)),
        )
        outs.append(m.node("Copy", squeezed, domain=DOMAIN))  # a graph output is never a view
    outs.append(m.node("Concat", m.qinput(4, 2, dtype=np.int32), m.qinput(4, 3, dtype=np.int32), axis=-1))
    check_against_reference(m.output(*outs))


# --- a small quantized network ------------------------------------------------------------------------


def qnet_graph(seed: int = 3) -> GraphMaker:
    """Quantize -> QConv(relu) -> depthwise QConv -> QAdd residual -> MaxPool -> QConv(lut) -> global
    QAveragePool -> Flatten -> QMatMul -> DequantizeLinear, as the folding pass produces it."""
    m = GraphMaker("qnet", seed=seed)
    x = m.input(1, 3, 16, 16)
    s_in = m.const(np.float32(0.03))
    z_in = m.const(np.int8(-5))
    xq = m.node("QuantizeLinear", x, s_in, z_in)
    relu = requant_attrs(m, 16, 0.002, relu=True, zero_point=-20)
    c1 = q(
        m,
        "QConv",
        xq,
        weights(m, 16, 3, 3, 3),
        bias(m, 16, 500),
        pads=(1, 1, 1, 1),
        x_zero_point=-5,
        w_zero_point=0,
        **relu,
    )
    dw = q(
        m,
        "QConv",
        c1,
        weights(m, 16, 1, 3, 3),
        bias(m, 16, 500),
        group=16,
        pads=(1, 1, 1, 1),
        x_zero_point=-20,
        w_zero_point=0,
        **requant_attrs(m, 16, 0.003, zero_point=3),
    )
    ma, sh = quantize_multiplier(0.6)
    mb, _ = quantize_multiplier(0.6)
    add = q(
        m,
        "QAdd",
        c1,
        dw,
        a_zero_point=-20,
        b_zero_point=3,
        a_multiplier=ma,
        b_multiplier=mb,
        shift=sh,
        out_zero_point=-10,
        clamp_min=-10,
        clamp_max=127,
    )
    pool = m.node("MaxPool", add, kernel_shape=(2, 2), strides=(2, 2))
    c2 = q(
        m,
        "QConv",
        pool,
        weights(m, 32, 16, 3, 3),
        None,
        pads=(1, 1, 1, 1),
        x_zero_point=-10,
        w_zero_point=0,
        **requant_attrs(m, 32, 0.0015, lut=True, zero_point=0),
    )
    mult, shift = quantize_multiplier(0.8 / 64)
    gap = q(
        m,
        "QAveragePool",
        c2,
        **{"global": 1},
        x_zero_point=0,
        multiplier=(mult,),
        shift=(shift,),
        out_zero_point=1,
        clamp_min=-128,
        clamp_max=127,
    )
    flat = m.node("Flatten", gap)
    fc = q(
        m,
        "QMatMul",
        flat,
        weights(m, 32, 10),
        bias(m, 10, 2000),
        a_zero_point=1,
        b_zero_point=0,
        **requant_attrs(m, 10, 0.01, zero_point=0),
    )
    y = m.node("DequantizeLinear", fc, m.const(np.float32(0.1)), m.const(np.int8(0)))
    return m.output(y, c2)


@pytest.mark.parametrize("isa, define", GEMM_PATHS[:1] + GEMM_PATHS[2:3])
def test_small_quantized_network(isa, define):
    m = qnet_graph()
    check_exactly(m, **build_options(isa, define))


def test_with_the_project_memory_planner():
    plan_memory = pytest.importorskip("passes.memory.plan_memory")
    check_against_reference(qnet_graph(), planner=plan_memory.plan)


# --- ISA selection and requirements -------------------------------------------------------------------


def test_vnni_is_required_only_by_graphs_with_an_int8_gemm():
    if not HAVE_VNNI:
        pytest.skip("this CPU has no AVX-512 VNNI")
    float_model = GraphMaker("float")
    float_model.output(float_model.node("Relu", float_model.input(4, 4)))
    built = build_cpu(float_model.graph)
    assert built.build.manifest["requires"]["isa"] == "x86-64-v4"
    assert "avx512_vnni" not in built.build.manifest["requires"]["cpu_flags"]
    built = build_cpu(qnet_graph().graph)
    manifest = built.build.manifest
    assert (
        manifest["requires"]["isa"] == "x86-64-v4-vnni" and "avx512_vnni" in manifest["requires"]["cpu_flags"]
    )
    assert "-mavx512vnni" in manifest["build_flags"] and manifest["blocking"]["vnni"] is True
    assert b"LW_VNNI 1" in built.build.files["cpu/model.c"]


def test_portable_build_does_not_need_vnni():
    built = build_cpu(qnet_graph().graph, isa="x86-64-v3")
    assert "avx512_vnni" not in built.build.manifest["requires"]["cpu_flags"]
    assert b"LW_VNNI 0" in built.build.files["cpu/model.c"]


# --- unsupported nodes ------------------------------------------------------------------------------


def _t(name: str, dtype: DType, *shape: int) -> Value:
    return Value(name, TensorType(dtype, shape))


I8, U8, I32, F32 = DType.INT8, DType.UINT8, DType.INT32, DType.FLOAT32
GOOD = {"multiplier": (1 << 30,), "shift": (31,), "out_zero_point": 0, "clamp_min": -128, "clamp_max": 127}


def _qnode(op: str, inputs, out, **attrs) -> Node:
    merged = dict(GOOD, **attrs)
    attrs = {k: Attr.infer(v) for k, v in merged.items() if v is not None}
    return Node(op, inputs, [out], domain=DOMAIN, attrs=attrs)


def _wconst(*shape, dtype=np.int8):
    return Value("w", const=np.zeros(shape, dtype))


@pytest.mark.parametrize(
    "make_node, reason",
    [
        (
            lambda: _qnode(
                "QConv", [_t("x", I8, 1, 2, 4, 4), _t("w", I8, 2, 2, 1, 1)], _t("o", I8, 1, 2, 4, 4)
            ),
            "QConv weights must be a constant",
        ),
        (
            lambda: _qnode("QConv", [_t("x", F32, 1, 2, 4, 4), _wconst(2, 2, 1, 1)], _t("o", I8, 1, 2, 4, 4)),
            "input 0 'x' is float32; the cpu QConv takes int8 or uint8",
        ),
        (
            lambda: _qnode(
                "QConv",
                [_t("x", I8, 1, 2, 4, 4), _wconst(2, 2, 1, 1), _t("b", I32, 2)],
                _t("o", I8, 1, 2, 4, 4),
            ),
            "QConv bias must be a constant",
        ),
        (
            lambda: _qnode(
                "QConv", [_t("x", I8, 1, 2, 4, 4), _wconst(2, 2, 1, 1)], _t("o", I8, 1, 2, 4, 4), shift=(0,)
            ),
            "shift 0 is outside [1, 62]",
        ),
        (
            lambda: _qnode("QConv", [_t("x", I8, 1, 2, 4, 4), _wconst(2, 2, 1, 1)], _t("o", U8, 1, 2, 4, 4)),
            "clamp [-128, 127] is not inside the uint8 range",
        ),
        (
            lambda: _qnode(
                "QConv",
                [_t("x", I8, 1, 2, 4, 4), _wconst(2, 2, 1, 1)],
                _t("o", I8, 1, 2, 4, 4),
                multiplier=(1, 2, 3),
                shift=(3, 3, 3),
            ),
            "3 multipliers; expected 1 or 2",
        ),
        (
            lambda: _qnode(
                "QConv",
                [_t("x", U8, 1, 2, 4, 4), _wconst(2, 2, 1, 1)],
                _t("o", I8, 1, 2, 4, 4),
                x_zero_point=-1,
            ),
            "x_zero_point -1 is not a uint8 value",
        ),
        (
            lambda: _qnode("QMatMul", [_t("a", I8, 3, 4), _wconst(4, 5)], _t("o", I8, 3, 5), lut=(1, 2)),
            "lut has 2 entries; expected 256",
        ),
        (
            lambda: _qnode("QMatMul", [_t("a", I8, 3, 4), _wconst(4, 5)], _t("o", I8, 3, 5), clamp_max=None),
            "needs clamp_min and clamp_max",
        ),
        (lambda: _qnode("QLut", [_t("x", I8, 3)], _t("o", I8, 3), lut=(0,) * 10), "256-entry lut"),
        (
            lambda: _qnode(
                "QAveragePool",
                [_t("x", I8, 1, 1, 5, 5)],
                _t("o", I8, 1, 1, 3, 3),
                kernel_shape=(2, 2),
                strides=(2, 2),
                ceil_mode=1,
            ),
            "windows must lie inside the padded input",
        ),
        (
            lambda: _qnode(
                "QAveragePool",
                [_t("x", I8, 1, 1, 5, 5)],
                _t("o", I8, 1, 1, 3, 3),
                kernel_shape=(2, 2),
                dilations=(2, 2),
            ),
            "dilated QAveragePool",
        ),
        (
            lambda: Node("QuantizeLinear", [_t("x", F32, 2, 3), _t("s", F32, 2)], [_t("o", U8, 2, 3)]),
            "QuantizeLinear has 2 scales (shape (2,)) for an axis of size 3",
        ),
        (
            lambda: Node(
                "DequantizeLinear",
                [_t("x", DType.INT64, 3), Value("s", const=np.float32(1))],
                [_t("o", F32, 3)],
            ),
            "input 0 'x' is int64; the cpu DequantizeLinear takes int8 or uint8 or int16 or uint16 or int32",
        ),
        (
            lambda: Node("Conv", [_t("x", I8, 1, 1, 4, 4), _wconst(1, 1, 1, 1)], [_t("o", I8, 1, 1, 4, 4)]),
            "input 0 'x' is int8; the cpu target computes float32 tensors only for Conv",
        ),
        (
            lambda: Node(
                "AveragePool",
                [_t("x", I8, 1, 1, 4, 4)],
                [_t("o", I8, 1, 1, 2, 2)],
                attrs={"kernel_shape": Attr.infer((2, 2))},
            ),
            "float32 tensors only for AveragePool",
        ),
        (
            lambda: Node(
                "MaxPool",
                [_t("x", I32, 1, 1, 4, 4)],
                [_t("o", I32, 1, 1, 2, 2)],
                attrs={"kernel_shape": Attr.infer((2, 2))},
            ),
            "the cpu MaxPool takes float32, int8 or uint8",
        ),
        (
            lambda: Node(
                "Concat", [_t("a", I8, 2), _t("b", U8, 2)], [_t("o", I8, 4)], attrs={"axis": Attr.infer(0)}
            ),
            "input 1 'b' is uint8 but input 0 is int8",
        ),
    ],
)
def test_unsupported_reasons(make_node, reason):
    assert reason in (CpuTarget().unsupported_reason(make_node()) or "")


def test_supported_quantized_nodes_have_no_reason():
    for maker in (qconv_graph(), qmatmul_graph(), qnet_graph()):
        assert [CpuTarget().unsupported_reason(n) for n in maker.graph.nodes] == [None] * len(
            maker.graph.nodes
        )

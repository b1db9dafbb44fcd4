"""The cpu target: every supported op against the reference interpreter, plus build properties.

Each test builds one graph holding many independent cases (one compile per family keeps the file fast);
a mismatch names the failing output, whose name carries the node that produced it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from lowering.errors import LoweringError
from lowering.ir import Attr, DType, Node, TensorType, Value
from lowering.opinfo import DOMAIN
from runtime.backends.cpu import CpuExecutor
from runtime.errors import RuntimeLoadError, TargetUnavailableError
from targets.cpu.target import CpuTarget

from .cpu_harness import GraphMaker, build_cpu, check_against_reference

pytestmark = pytest.mark.target_cpu


def fused(m: GraphMaker, op: str, *inputs, **attrs):
    return m.node(op, *inputs, domain=DOMAIN, **attrs)


# --- convolution ------------------------------------------------------------------------------------

CONV_CASES = [  # (input shape, weight shape, attrs)
    ((1, 8, 10, 10), (16, 8, 3, 3), {"pads": (1, 1, 1, 1)}),
    ((2, 3, 17, 13), (7, 3, 3, 3), {"strides": (2, 2)}),
    ((1, 4, 12, 12), (8, 4, 3, 3), {"dilations": (2, 2), "pads": (2, 2, 2, 2)}),
    ((1, 8, 9, 9), (12, 4, 3, 3), {"group": 2, "pads": (1, 0, 1, 2)}),
    ((1, 6, 11, 11), (6, 1, 3, 3), {"group": 6, "pads": (1, 1, 1, 1)}),
    ((2, 4, 12, 12), (8, 1, 5, 5), {"group": 4, "strides": (2, 2), "auto_pad": "SAME_UPPER"}),
    (
        (1, 5, 8, 8),
        (5, 1, 3, 3),
        {"group": 5, "dilations": (2, 2), "auto_pad": "SAME_LOWER", "strides": (1, 2)},
    ),
    ((1, 64, 9, 9), (70, 64, 1, 1), {}),
    ((1, 16, 9, 9), (8, 16, 1, 1), {"strides": (2, 2)}),
    ((1, 64, 7, 7), (13, 64, 3, 3), {"pads": (1, 1, 1, 1)}),  # K = 576 > KC: blocked accumulation
    ((1, 3, 20), (4, 3, 5), {"pads": (2, 1), "strides": (2,)}),  # 1-D
    ((1, 2, 31), (4, 1, 3), {"group": 2, "dilations": (3,)}),  # 1-D depthwise, channel multiplier 2
    ((1, 3, 15, 15), (9, 3, 7, 7), {"strides": (2, 2), "pads": (3, 3, 3, 3)}),
    ((1, 4, 5, 40), (4, 1, 3, 3), {"group": 4, "pads": (1, 1, 1, 1)}),  # depthwise, vectorized interior
    ((1, 3, 7, 45), (6, 1, 3, 3), {"group": 3, "dilations": (2, 2), "pads": (2, 2, 2, 2)}),
    ((2, 8, 20, 24), (24, 8, 3, 3), {"pads": (1, 1, 1, 1)}),  # many column panels: im2col fused into GEMM
    ((1, 6, 12, 30), (5, 6, 3, 3), {"pads": (0, 1, 2, 1)}),  # shifted-copy im2col, asymmetric pads
]


def test_conv_variants():
    m = GraphMaker("conv")
    outs = []
    for i, (xs, ws, attrs) in enumerate(CONV_CASES):
        bias = m.weight(ws[0]) if i % 3 != 2 else None
        outs.append(m.node("Conv", m.input(*xs), m.weight(*ws), bias, **attrs))
    built = check_against_reference(m.output(*outs), threads=1)
    # other thread counts take other paths (im2col fused per task or all first); results must not change
    single = built.run(m.feeds, threads=1)
    for threads in (3, 8):
        for name, value in built.run(m.feeds, threads=threads).items():
            np.testing.assert_array_equal(value, single[name], err_msg=f"{name} with {threads} threads")


def test_fused_conv_epilogues():
    m = GraphMaker("fused_conv")
    x = m.input(2, 8, 9, 9)
    acts = [
        ("Relu", ()),
        ("LeakyRelu", (0.1,)),
        ("Clip", (-0.5, 0.7)),
        ("Sigmoid", ()),
        ("Tanh", ()),
        ("", ()),
    ]
    outs = []
    for i, (act, params) in enumerate(acts):
        res = [m.input(2, 16, 9, 9), m.input(1, 16, 1, 1), None][i % 3]
        epilogue = {"activation": act, "activation_params": params}
        outs.append(
            fused(m, "FusedConv", x, m.weight(16, 8, 3, 3), m.weight(16), res, pads=(1, 1, 1, 1), **epilogue)
        )
    relu = {"activation": "Relu", "activation_params": ()}
    dw = fused(
        m,
        "FusedConv",
        x,
        m.weight(8, 1, 3, 3),
        m.weight(8),
        m.input(2, 8, 5, 5),
        group=8,
        strides=(2, 2),
        pads=(1, 1, 1, 1),
        **relu,
    )
    clip = {"activation": "Clip", "activation_params": (0.0, 6.0)}
    pointwise = fused(m, "FusedConv", x, m.weight(4, 8, 1, 1), None, None, **clip)
    check_against_reference(m.output(*outs, dw, pointwise))


# --- GEMM and MatMul --------------------------------------------------------------------------------


def test_gemm_variants():
    m = GraphMaker("gemm")
    outs = []
    a, at = m.input(5, 7), m.input(7, 5)
    for trans_a in (0, 1):
        for trans_b in (0, 1):
            b = m.weight(*((9, 7) if trans_b else (7, 9)))
            outs.append(m.node("Gemm", at if trans_a else a, b, m.weight(9), transA=trans_a, transB=trans_b))
    outs.append(m.node("Gemm", a, m.input(9, 7), m.input(5, 1), transB=1, alpha=0.5, beta=2.0))
    outs.append(m.node("Gemm", a, m.weight(7, 9), m.weight(5, 9), beta=-1.0))
    outs.append(m.node("Gemm", a, m.weight(7, 9), m.const(np.float32(0.25))))
    outs.append(m.node("Gemm", m.input(1, 300), m.weight(70, 300), None, transB=1))
    outs.append(m.node("Gemm", m.weight(7, 6), a, None, transA=1, transB=1))
    relu, leaky = (
        {"activation": "Relu", "activation_params": ()},
        {"activation": "LeakyRelu", "activation_params": (0.2,)},
    )
    tanh = {"activation": "Tanh", "activation_params": ()}
    outs += [
        fused(m, "FusedGemm", m.input(33, 40), m.weight(40, 70), m.weight(70), m.input(33, 70), **relu),
        fused(m, "FusedGemm", a, m.weight(9, 7), None, m.input(1, 9), transB=1, alpha=2.0, **leaky),
        fused(m, "FusedGemm", m.input(3, 600), m.weight(600, 130), m.weight(130), None, **tanh),
    ]
    check_against_reference(m.output(*outs))


def test_matmul_variants():
    m = GraphMaker("matmul")
    outs = [
        m.node("MatMul", m.input(8, 20), m.weight(20, 30)),
        m.node("MatMul", m.input(2, 5, 20), m.weight(20, 70)),
        m.node("MatMul", m.input(2, 3, 6, 16), m.input(2, 3, 16, 5)),
        m.node("MatMul", m.input(2, 1, 6, 16), m.input(1, 3, 16, 5)),
        m.node("MatMul", m.input(4, 6, 16), m.weight(4, 16, 5)),
        m.node("MatMul", m.weight(6, 16), m.input(3, 16, 5)),
        m.node("MatMul", m.input(16), m.weight(16, 5)),
        m.node("MatMul", m.input(3, 6, 16), m.input(16)),
        m.node("MatMul", m.input(70, 300), m.input(300, 90)),
    ]
    check_against_reference(m.output(*outs))


# --- elementwise ------------------------------------------------------------------------------------


def test_single_elementwise_ops():
    m = GraphMaker("elementwise")
    x, y, pos = m.input(2, 3, 4, 5), m.input(2, 3, 4, 5), m.input(2, 3, 4, 5, positive=True)
    outs = [m.node(op, x, y) for op in ("Add", "Sub", "Mul")] + [m.node("Div", x, pos)]
    outs += [m.node(op, x) for op in ("Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp")]
    outs += [m.node("Sqrt", pos), m.node("LeakyRelu", x, alpha=0.3)]
    outs += [
        m.node("Clip", x, m.const(np.float32(-0.5)), m.const(np.float32(0.5))),
        m.node("Clip", x, None, m.const(np.float32(0.2))),
        m.node("Clip", x),
    ]
    check_against_reference(m.output(*outs))


def test_broadcasting_elementwise():
    m = GraphMaker("broadcast")
    x = m.input(2, 3, 4, 5)
    outs = [
        m.node("Add", x, m.input(3, 1, 1)),
        m.node("Mul", x, m.input(5)),
        m.node("Sub", m.input(1, 3, 1, 5), x),
        m.node("Div", x, m.const(np.float32(4.0))),
        m.node("Add", m.input(4, 1), m.input(1, 6)),
        m.node("Mul", m.input(2, 1, 4, 1), m.input(1, 3, 1, 5)),
        m.node("Add", m.input(1), m.input(1)),
        m.node("Add", x, x),
        m.node("Mul", m.input(3, 70000), m.weight(70000)),  # chunked parallel rows
        m.node("Add", m.input(64, 1024), m.input(64, 1)),  # parallel, broadcast scalar per row
    ]
    check_against_reference(m.output(*outs))


def test_fused_elementwise_bodies():
    m = GraphMaker("fused_elementwise")
    x, b, s = m.input(2, 8, 6, 6), m.input(1, 8, 1, 1), m.input(6)
    # r3 = x + b; r4 = Clip(r3, 0, 6); r5 = r4 * s; r6 = LeakyRelu(r5, 0.1); r7 = r6 - x
    one = fused(
        m,
        "FusedElementwise",
        x,
        b,
        s,
        body_ops=("Add", "Clip", "Mul", "LeakyRelu", "Sub"),
        body_args=(0, 1, 3, 4, 2, 5, 6, 0),
        body_params=(0.0, 6.0, 0.1),
    )
    # r2 = Sigmoid(x); r3 = r2 * c; r4 = Exp(r3); r5 = Abs(r4); r6 = Sqrt(r5); r7 = Tanh(r6); r8 = Neg(r7)
    chain = ("Sigmoid", "Mul", "Exp", "Abs", "Sqrt", "Tanh", "Neg")
    two = fused(
        m,
        "FusedElementwise",
        x,
        m.const(np.float32(0.5)),
        body_ops=chain,
        body_args=(0, 2, 1, 3, 4, 5, 6, 7),
        body_params=(),
    )
    three = fused(
        m,
        "FusedElementwise",
        m.input(4, 1),
        m.input(1, 5),
        body_ops=("Div", "Relu", "Identity"),
        body_args=(0, 1, 2, 3),
        body_params=(),
    )
    check_against_reference(m.output(one, two, three))


# --- normalization, pooling, softmax ----------------------------------------------------------------


def test_batchnorm():
    m = GraphMaker("batchnorm")
    params = [
        m.weight(6),
        m.weight(6),
        m.weight(6),
        m.const(np.abs(m.rng.standard_normal(6)).astype(np.float32)),
    ]
    outs = [
        m.node("BatchNormalization", m.input(2, 6, 5, 7), *params, epsilon=1e-3),
        m.node("BatchNormalization", m.input(3, 6), *params),
    ]
    check_against_reference(m.output(*outs))


def pool(kernel, **attrs):
    return {"kernel_shape": kernel, **attrs}


POOL_CASES = [  # (op, input shape, attrs)
    ("MaxPool", (1, 3, 9, 9), pool((3, 3), strides=(2, 2))),
    ("MaxPool", (2, 2, 10, 11), pool((3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=1)),
    ("MaxPool", (1, 2, 12, 12), pool((2, 3), dilations=(2, 2), pads=(0, 1, 1, 0))),
    ("MaxPool", (1, 3, 8, 8), pool((3, 3), auto_pad="SAME_UPPER")),
    ("MaxPool", (1, 3, 17), pool((4,), strides=(3,), ceil_mode=1)),
    ("MaxPool", (1, 2, 9, 40), pool((3, 3), strides=(1, 1), pads=(1, 1, 1, 1))),
    ("AveragePool", (1, 3, 9, 9), pool((3, 3), strides=(2, 2), pads=(1, 1, 1, 1))),
    ("AveragePool", (1, 3, 9, 9), pool((3, 3), strides=(2, 2), pads=(1, 1, 1, 1), count_include_pad=1)),
    (
        "AveragePool",
        (2, 2, 10, 11),
        pool((3, 3), strides=(2, 2), ceil_mode=1, pads=(1, 0, 0, 1), count_include_pad=1),
    ),
    ("AveragePool", (1, 2, 10, 10), pool((2, 2), strides=(2, 2), ceil_mode=1)),
    ("AveragePool", (1, 3, 16), pool((3,), pads=(1, 1), auto_pad="NOTSET")),
    ("AveragePool", (1, 2, 11, 13), pool((3, 2), strides=(3, 3), pads=(1, 1, 0, 1), count_include_pad=1)),
]


def test_pooling():
    m = GraphMaker("pool")
    outs = [m.node(op, m.input(*shape), **attrs) for op, shape, attrs in POOL_CASES]
    x = m.input(2, 5, 7, 6)
    outs += [
        m.node("GlobalAveragePool", x),
        m.node("GlobalMaxPool", x),
        m.node("GlobalAveragePool", m.input(1, 4, 9)),
    ]
    check_against_reference(m.output(*outs))


def test_softmax_and_reduce_mean_axes():
    m = GraphMaker("softmax")
    x = m.input(2, 3, 4, 5)
    outs = [m.node("Softmax", x, axis=axis) for axis in (-1, 0, 1, 2)]
    outs.append(m.node("Softmax", m.input(4, 1000)))
    for axes, keep in (((2, 3), 1), ((-1,), 0), ((0, 1), 1), ((1,), 1)):
        outs.append(m.node("ReduceMean", x, m.const(np.array(axes, np.int64)), keepdims=keep))
    outs.append(m.node("ReduceMean", x, keepdims=0))
    check_against_reference(m.output(*outs))


# --- data movement and views ------------------------------------------------------------------------


def test_transpose_concat_copy_and_views():
    m = GraphMaker("data")
    x = m.input(2, 3, 4, 5)
    outs = [
        m.node("Transpose", x, perm=perm) for perm in ((0, 2, 3, 1), (3, 2, 1, 0), (0, 1, 3, 2), (1, 0, 2, 3))
    ]
    outs.append(m.node("Transpose", m.input(6, 1, 7)))
    outs += [
        m.node("Concat", x, m.input(2, 3, 2, 5), m.weight(2, 3, 1, 5), axis=2),
        m.node("Concat", m.input(4, 2), m.input(4, 3), axis=-1),
        m.node("Concat", m.input(1, 5), m.input(2, 5), axis=0),
    ]
    flat = m.node("Flatten", m.node("Relu", x), axis=2)  # a view of an arena tensor
    shaped = m.node("Reshape", flat, m.const(np.array([6, 20], np.int64)))
    unsq = m.node("Unsqueeze", m.node("Identity", shaped), m.const(np.array([0], np.int64)))
    outs.append(m.node("Add", m.node("Squeeze", unsq, m.const(np.array([0], np.int64))), m.input(20)))
    outs.append(fused(m, "Copy", m.node("Reshape", x, m.const(np.array([6, 20], np.int64)))))  # view of input
    outs.append(m.node("Relu", m.node("Reshape", m.weight(4, 5), m.const(np.array([20], np.int64)))))
    check_against_reference(m.output(*outs))


def test_graph_output_read_by_later_nodes_and_small_network():
    m = GraphMaker("network")
    x = m.input(1, 3, 16, 16)
    c1 = fused(
        m,
        "FusedConv",
        x,
        m.weight(8, 3, 3, 3),
        m.weight(8),
        None,
        pads=(1, 1, 1, 1),
        strides=(2, 2),
        activation="Relu",
        activation_params=(),
    )
    p = m.node("MaxPool", c1, kernel_shape=(2, 2), strides=(2, 2))
    c2 = fused(
        m,
        "FusedConv",
        p,
        m.weight(8, 8, 3, 3),
        m.weight(8),
        p,
        pads=(1, 1, 1, 1),
        activation="Relu",
        activation_params=(),
    )
    g = m.node("Flatten", m.node("GlobalAveragePool", c2))
    logits = m.node("Gemm", g, m.weight(10, 8), m.weight(10), transB=1)
    check_against_reference(m.output(c2, logits, m.node("Softmax", logits)))


# --- build properties -------------------------------------------------------------------------------


def _small_model() -> GraphMaker:
    m = GraphMaker("small")
    x = m.input(2, 16, 20, 20)
    c = fused(
        m,
        "FusedConv",
        x,
        m.weight(32, 16, 3, 3),
        m.weight(32),
        None,
        pads=(1, 1, 1, 1),
        activation="Relu",
        activation_params=(),
    )
    d = m.node("Conv", c, m.weight(32, 1, 3, 3), None, group=32, pads=(1, 1, 1, 1))
    f = m.node("Flatten", m.node("GlobalAveragePool", d))
    return m.output(m.node("Gemm", f, m.weight(100, 32), m.weight(100), transB=1), d)


def test_two_builds_are_byte_identical():
    first, second = build_cpu(_small_model().graph), build_cpu(_small_model().graph)
    assert first.build.manifest == second.build.manifest
    assert {k: hashlib.sha256(v).hexdigest() for k, v in first.build.files.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in second.build.files.items()
    }
    assert set(first.build.files) == {"cpu/model.so", "cpu/model.c", "cpu/weights.bin"}
    assert b"/tmp" not in first.build.files["cpu/model.so"]
    kernel = first.build.kernels[0]
    assert kernel["op"] == "lowering::FusedConv" and kernel["flops"] == 2 * 2 * 32 * 400 * 16 * 9
    assert {"name", "node", "sources", "bytes_read", "bytes_written"} <= set(kernel)


def test_thread_counts_give_identical_results():
    m = _small_model()
    built = check_against_reference(m, threads=1)
    one, two = built.run(m.feeds, threads=1), built.run(m.feeds, threads=2)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name])


def test_portable_isa_override():
    m = _small_model()
    built = check_against_reference(m, isa="x86-64-v3")
    assert built.build.manifest["requires"]["isa"] == "x86-64-v3"
    assert "-march=x86-64-v3" in built.build.manifest["build_flags"]
    assert "avx512f" not in built.build.manifest["requires"]["cpu_flags"]


def test_with_the_project_memory_planner():
    plan_memory = pytest.importorskip("passes.memory.plan_memory")
    check_against_reference(_small_model(), planner=plan_memory.plan)


def test_missing_compiler_is_a_lowering_error(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    with pytest.raises(LoweringError, match="no C compiler was found.*apt-get install gcc"):
        build_cpu(_small_model().graph)


def test_compiler_failure_is_a_lowering_error():
    with pytest.raises(LoweringError, match="the C compiler failed"):
        build_cpu(_small_model().graph, cc="false")


def test_unknown_isa_is_a_lowering_error():
    with pytest.raises(LoweringError, match="unknown cpu arch 'x86-64-v9'"):
        build_cpu(_small_model().graph, isa="x86-64-v9")


# --- unsupported nodes ------------------------------------------------------------------------------


def _typed(name: str, dtype: DType, *shape: int) -> Value:
    return Value(name, TensorType(dtype, shape))


F32, I64 = DType.FLOAT32, DType.INT64


def _axes_attr(*axes: int) -> dict:
    return {"axes": Attr.infer(axes)}


@pytest.mark.parametrize(
    "make_node, reason",
    [
        (
            lambda: Node("NonZero", [_typed("d", F32, 4, 4)], [_typed("o", I64, 2, 16)]),
            "NonZero is not supported by the cpu target",
        ),
        (
            lambda: Node("Add", [_typed("a", I64, 3), _typed("b", F32, 3)], [_typed("o", I64, 3)]),
            "Add operands must have one element type",
        ),
        (
            lambda: Node("Resize",
                         [_typed("x", F32, 1, 1, 4, 4), _typed("roi", F32, 0), _typed("scales", F32, 4)],
                         [_typed("o", F32, 1, 1, 8, 8)]),
            "Resize scales (input 2 'scales') must be a constant",
        ),
        (
            lambda: Node("ReduceMean", [_typed("x", F32, 2, 3, 4), _typed("axes", DType.INT32, 1)],
                         [_typed("o", F32, 2)]),
            "ReduceMean axes (input 1 'axes') must be int64",
        ),
        (
            lambda: Node(
                "Conv",
                [_typed("x", F32, 1, 1, 4, 4, 4), Value("w", const=np.zeros((1, 1, 1, 1, 1), np.float32))],
                [_typed("o", F32, 1, 1, 4, 4, 4)],
            ),
            "only 1-D and 2-D convolutions",
        ),
        (
            lambda: Node(
                "Conv",
                [_typed("x", F32, 1, 1, 2, 2, 2, 2), _typed("w", F32, 1, 1, 1, 1, 1, 1)],
                [_typed("o", F32, 1, 1, 2, 2, 2, 2)],
            ),
            "only 1-D, 2-D and 3-D convolutions",
        ),
        (
            lambda: Node(
                "FusedElementwise",
                [_typed("x", F32, 3)],
                [_typed("o", F32, 3)],
                domain=DOMAIN,
                attrs={"body_ops": Attr.infer(("Hardmax",))},
            ),
            "body op Hardmax is not supported",
        ),
        (
            lambda: Node(  # (MaxPool's Indices output is computed: tests/targets/test_cpu_nn_ops.py)
                "AveragePool",
                [_typed("x", F32, 1, 1, 4, 4)],
                [_typed("o", F32, 1, 1, 2, 2), _used("idx")],
                attrs={"kernel_shape": Attr.infer((2, 2))},
            ),
            "only output 0 is computed",
        ),
    ],
)
def test_unsupported_reasons(make_node, reason):
    assert reason in (CpuTarget().unsupported_reason(make_node()) or "")


def _used(name: str) -> Value:
    v = _typed(name, I64, 1, 1, 2, 2)
    Node("Identity", [v], [_typed(name + "_use", I64, 1, 1, 2, 2)])
    return v


def test_supported_nodes_have_no_reason():
    m = _small_model()
    assert [CpuTarget().unsupported_reason(n) for n in m.graph.nodes] == [None] * len(m.graph.nodes)


# --- the executor's checks --------------------------------------------------------------------------


def test_executor_refuses_missing_cpu_flags_before_loading():
    entry = {"requires": {"machine": "x86_64", "isa": "x86-64-v9", "cpu_flags": ["sse2", "made_up_flag"]}}
    reason = CpuExecutor.check_requirements(entry)
    if reason is not None and "made_up_flag" not in reason:
        pytest.skip(f"not an x86-64 machine: {reason}")
    assert "needs CPU flags made_up_flag" in reason and "this CPU lacks them" in reason
    with pytest.raises(TargetUnavailableError, match="made_up_flag"):
        CpuExecutor(entry, lambda path: b"")


def test_executor_validates_the_library_against_the_manifest():
    built = build_cpu(_small_model().graph)
    entry = dict(built.build.manifest, arena_bytes=built.build.manifest["arena_bytes"] + 64)
    with pytest.raises(RuntimeLoadError, match="arena bytes"):
        CpuExecutor(entry, lambda path: built.build.files[path])
    executor = built.executor()
    with pytest.raises(ValueError, match="input 0 must be a C-contiguous array"):
        executor.run(
            [np.zeros((2, 16, 20, 19), np.float32)],
            [np.zeros((2, 100), np.float32), np.zeros((2, 32, 20, 20), np.float32)],
        )

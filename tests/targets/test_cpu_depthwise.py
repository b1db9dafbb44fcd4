"""The AVX-512 depthwise conv over phase grids (LW_DEPTHWISE2D_G in kernels_conv.c), in both forms: flattened
vectors (small planes, strided rows, other kernels) and bands of output rows (3x3 with rows wider than a
vector). Planes that take one chunk and several (a last partial one), output vectors per chunk that end
every way the vector blocks can (8, a partial 8, 4, 2), bands of 1 to 4 rows and 1 or 2 vectors, strides 1
and 2 (vector staging; stride 2 stages both column phases from one pair of loads) and 3 (scalar staging),
rows too wide for the load-mask table, dilations, asymmetric and wide pads, channel multipliers and channel
counts that are not multiples of the vector width, every epilogue, NaN and infinities, 1 to 3 threads;
checked against ONNX Runtime and the reference interpreter. The fallbacks to lw_depthwise2d (more than 64
taps, a chunk wider than its vector table) run too.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowering.opinfo import DOMAIN
from lowering.reference import run_graph
from targets.cpu.build import choose_isa
from targets.cpu.emit_linear import (
    DWG_BAND,
    conv_geometry,
    conv_transposed,
    depthwise_bands,
    depthwise_grid_plan,
)

from .cpu_harness import GraphMaker, build_cpu, check_against_reference

pytestmark = pytest.mark.target_cpu

AVX512 = choose_isa().vec == 16
needs_avx512 = pytest.mark.skipif(not AVX512, reason="the grid depthwise kernel is AVX-512 only")

P1 = {"pads": (1, 1, 1, 1)}
CASES = [  # (input shape, weight shape, attrs)
    ((1, 17, 7, 7), (17, 1, 3, 3), P1),  # MobileNetV2's 7x7: 4 vectors (one 4-vector block), 17 channels
    ((1, 33, 14, 14), (33, 1, 3, 3), P1),  # 14 vectors: an 8-vector block and a partial one
    ((1, 5, 14, 14), (5, 1, 3, 3), {"strides": (2, 2), **P1}),  # stride 2 on an even plane
    ((1, 3, 5, 5), (3, 1, 3, 3), P1),  # 3 vectors: a 4-vector block, one dropped
    ((1, 3, 9, 15), (3, 1, 3, 3), P1),  # 10 vectors: 8 and a 2-vector block
    ((1, 4, 1, 1), (4, 1, 3, 3), P1),  # 1x1 plane, all padding: one vector, 1 valid lane
    ((1, 2, 70, 70), (2, 1, 3, 3), P1),  # bands: 9 chunks of 8 rows, the last one and a half band
    ((1, 3, 7, 17), (3, 1, 3, 3), P1),  # bands: one chunk, a band of 3 rows; 2 vectors per row
    ((1, 2, 13, 33), (2, 1, 3, 3), P1),  # bands: 3 vectors per row (a pair and a single)
    ((1, 2, 13, 40), (2, 1, 3, 3), {"dilations": (1, 2), "pads": (1, 2, 1, 2)}),  # bands, dilated columns
    ((1, 2, 10, 50), (2, 1, 3, 3), {"strides": (1, 2), **P1}),  # bands over 2 column phases
    ((1, 2, 20, 70), (2, 1, 3, 3), {"strides": (2, 2), **P1}),  # flattened, stride 2, 3 vectors per row
    ((1, 2, 100, 100), (2, 1, 3, 3), {"strides": (2, 2), **P1}),  # 4 phases over several chunks
    ((1, 3, 15, 47), (3, 1, 3, 3), {"strides": (2, 2), **P1}),  # odd sizes, stride 2, 2 row vectors
    ((1, 3, 14, 14), (3, 1, 3, 3), {"strides": (2, 2), "pads": (0, 0, 1, 1)}),  # asymmetric pads
    ((1, 2, 17, 40), (2, 1, 3, 3), {"strides": (3, 3), **P1}),  # stride 3: scalar staging
    ((1, 2, 12, 37), (2, 1, 3, 3), {"strides": (1, 2)}),  # unpadded, stride 2 columns only
    ((1, 2, 21, 19), (2, 1, 3, 3), {"strides": (2, 1), **P1}),  # stride 2 rows only
    ((1, 2, 16, 36), (2, 1, 3, 3), {"dilations": (2, 3), "pads": (2, 3, 2, 3)}),
    ((1, 2, 20, 20), (2, 1, 5, 5), {"pads": (2, 2, 2, 2)}),  # 5x5
    ((1, 2, 23, 23), (2, 1, 5, 5), {"strides": (2, 2), "pads": (2, 1, 2, 1)}),
    ((1, 2, 9, 30), (2, 1, 1, 7), {"pads": (0, 3, 0, 3)}),  # 1x7
    ((1, 2, 30, 9), (2, 1, 7, 1), {"pads": (3, 0, 3, 0)}),  # 7x1
    ((1, 2, 6, 6), (2, 1, 3, 3), {"pads": (4, 4, 4, 4)}),  # pads wider than the kernel
    ((1, 3, 10, 18), (6, 1, 3, 3), P1),  # channel multiplier 2
    ((2, 3, 12, 12), (9, 1, 3, 3), {"strides": (2, 2), **P1}),  # batch 2, multiplier 3
    ((1, 2, 1100), (2, 1, 3), {"pads": (1, 1)}),  # 1-D, 69 vectors per grid row: scalar staging
    ((1, 2, 2100), (2, 1, 3), {"strides": (2,), "pads": (1, 1)}),  # the same with 2 column phases
    ((1, 2, 41), (2, 1, 3), {"strides": (2,), "dilations": (2,), "pads": (1, 2)}),  # 1-D, stride 2
    ((1, 2, 12, 12), (2, 1, 9, 9), {"pads": (4, 4, 4, 4)}),  # 81 taps: lw_depthwise2d
    ((1, 2, 17000), (2, 1, 3), {"pads": (1, 1)}),  # one row wider than a chunk's table: lw_depthwise2d
]


def _graph(cases=CASES) -> GraphMaker:
    m = GraphMaker("depthwise_grid")
    outs = []
    for xs, ws, attrs in cases:
        outs.append(m.node("Conv", m.input(*xs), m.weight(*ws), m.weight(ws[0]), group=xs[1], **attrs))
    return m.output(*outs)


def _onnxruntime(m: GraphMaker, threads: int) -> dict[str, np.ndarray]:
    """ONNX Runtime's outputs for a graph of plain ONNX ops, keyed like Built.run's."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node(n.op, [v.name if v is not None else "" for v in n.inputs],
                         [v.name for v in n.outputs], **{k: a.value for k, a in n.attrs.items()})
        for n in m.graph.nodes
    ]
    inits = [numpy_helper.from_array(v.const, v.name) for v in m.graph.constants()]

    def info(v):
        return helper.make_tensor_value_info(v.name, onnx.TensorProto.FLOAT, v.type.shape)

    model = helper.make_model(
        helper.make_graph(nodes, "depthwise", [info(v) for v in m.graph.inputs],
                          [info(v) for v in m.graph.outputs], inits),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    results = session.run(None, {v.name: m.feeds[v.name] for v in m.graph.inputs})
    return dict(zip(m.graph.output_names, results))


def test_cases_cover_the_grid_kernel_and_its_fallbacks():
    graph = _graph().graph
    plans = [depthwise_grid_plan(conv_geometry(n)[0]) for n in graph.nodes]
    assert plans[-2:] == [None, None]  # 81 taps; a 17000-wide row
    chunks = {True: set(), False: set()}  # by depthwise_bands: chunks per plane
    for node, plan in zip(graph.nodes[:-2], plans[:-2]):
        g = conv_geometry(node)[0]
        assert plan is not None, node.name
        if depthwise_bands(g):
            assert plan[0] % DWG_BAND == 0
        chunks[depthwise_bands(g)].add(-(-g["OH"] // plan[0]))
    for bands in (True, False):
        assert max(chunks[bands]) > 1 and min(chunks[bands]) == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_depthwise_matches_onnxruntime(threads):
    m = _graph()
    got = build_cpu(m.graph).run(m.feeds, threads)
    want = _onnxruntime(m, threads)
    for name, expected in want.items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-5, err_msg=name)


@needs_avx512
def test_avx512_builds_emit_the_grid_kernel():
    m = _graph(CASES[:1] + CASES[-2:])
    source = build_cpu(m.graph).build.files["cpu/model.c"].decode()
    assert source.count("LW_DEPTHWISE2D_G(ctx") == 1
    assert source.count("lw_depthwise2d(ctx") == 2
    older = build_cpu(_graph(CASES[:1]).graph, isa="x86-64-v3").build.files["cpu/model.c"].decode()
    assert "LW_DEPTHWISE2D_G(ctx" not in older and "lw_depthwise2d(ctx" in older


def test_depthwise_epilogues():
    m = GraphMaker("depthwise_grid_epilogues")
    outs = []
    for shape, strides in (((1, 19, 14, 14), (1, 1)), ((1, 19, 7, 7), (1, 1)), ((1, 19, 15, 29), (2, 2)),
                           ((1, 5, 9, 33), (1, 1))):
        x = m.input(*shape)
        w = m.weight(shape[1], 1, 3, 3)
        out_shape = (1, shape[1], (shape[2] - 1) // strides[0] + 1, (shape[3] - 1) // strides[1] + 1)
        full = m.input(*out_shape)
        per_channel = m.input(1, shape[1], 1, 1)
        for bias, res, act, params in (
            (True, None, "Clip", (0.0, 6.0)),
            (True, full, "Relu", ()),
            (False, per_channel, "LeakyRelu", (0.1,)),
            (True, full, "Sigmoid", ()),
            (True, None, "Tanh", ()),
            (True, per_channel, "Gelu", ()),
            (False, None, "", ()),
            (True, full, "Clip", (-0.5, 0.25)),
        ):
            outs.append(
                m.node(
                    "FusedConv", x, w, m.weight(shape[1]) if bias else None, res, domain=DOMAIN,
                    group=shape[1], strides=strides, pads=(1, 1, 1, 1), activation=act,
                    activation_params=params,
                )
            )
    check_against_reference(m.output(*outs), threads=2)


def test_nan_and_infinity_propagate_through_relu_and_clip():
    m = GraphMaker("depthwise_grid_nan")
    x = m.input(1, 3, 7, 7)
    m.feeds[x.name][0, 0, 3, 3] = np.nan
    m.feeds[x.name][0, 1, 0, 0] = np.inf
    m.feeds[x.name][0, 2, 6, 6] = -np.inf
    w = m.const(np.abs(m.rng.standard_normal((3, 1, 3, 3))).astype(np.float32) + 0.1)
    outs = [
        m.node("FusedConv", x, w, None, domain=DOMAIN, group=3, pads=(1, 1, 1, 1), activation=act,
               activation_params=params)
        for act, params in (("Relu", ()), ("Clip", (0.0, 6.0)))
    ]
    m.output(*outs)
    got = build_cpu(m.graph).run(m.feeds, 1)
    want = run_graph(m.graph, m.feeds)
    for name, value in got.items():
        assert np.isnan(value[0, 0, 2:5, 2:5]).all(), name  # every window that holds the NaN
        assert np.isinf(want[name][0, 1, 0, 0]) or want[name][0, 1, 0, 0] == 6.0
        np.testing.assert_allclose(value, want[name], rtol=1e-4, atol=1e-5, err_msg=name)  # NaN == NaN


def test_results_do_not_depend_on_thread_count():
    m = GraphMaker("depthwise_grid_threads")
    x = m.input(2, 37, 29, 45)
    outs = [
        m.node("Conv", x, m.weight(37, 1, 3, 3), m.weight(37), group=37, pads=(1, 1, 1, 1)),
        m.node("Conv", x, m.weight(74, 1, 3, 3), None, group=37, strides=(2, 2), pads=(1, 1, 1, 1)),
        m.node("Conv", m.input(1, 70, 7, 7), m.weight(70, 1, 3, 3), m.weight(70), group=70, **P1),
    ]
    built = build_cpu(m.output(*outs).graph)
    results = [built.run(m.feeds, threads) for threads in (1, 2, 3)]
    for other in results[1:]:
        for name, value in results[0].items():
            np.testing.assert_array_equal(other[name], value, err_msg=name)


# The transposed conv GEMM of small planes (lw_conv2d_t) computes a last channel panel of one or two vectors
# of real channels (of LW_CT_NV = 3) with only those: MobileNetV2's 160-channel projections (3 x 48 + 16).
TRANSPOSED_TAIL_CASES = [  # (input shape, weight shape, attrs)
    ((1, 160, 7, 7), (160, 160, 1, 1), {}),  # 3 panels and 16 channels
    ((1, 200, 7, 7), (80, 200, 1, 1), {}),  # a panel and 32 channels, K = 200: two K blocks
    ((1, 300, 5, 10), (160, 300, 1, 1), {}),  # P = 50: 7 tiles and a 1-position one, 3 K blocks
    ((1, 32, 7, 7), (160, 32, 3, 3), {"pads": (1, 1, 1, 1)}),  # im2col, K = 288
    ((2, 144, 7, 7), (176, 144, 1, 1), {}),  # batch 2, 3 panels and 32 channels
]


@pytest.mark.parametrize("threads,isa", [(1, None), (2, None), (2, "x86-64-v3")])
def test_transposed_conv_partial_last_panel(threads, isa):
    m = GraphMaker("conv_t_tail")
    outs = []
    for xs, ws, attrs in TRANSPOSED_TAIL_CASES:
        outs.append(m.node("Conv", m.input(*xs), m.weight(*ws, scale=0.1), m.weight(ws[0]), **attrs))
    m.output(*outs)
    vec = choose_isa(isa).vec  # AVX2: panels of 24 channels, the last of 8 or 16
    for node in m.graph.nodes:
        assert conv_transposed(conv_geometry(node)[0], vec), node.name
    got = build_cpu(m.graph, **({"isa": isa} if isa else {})).run(m.feeds, threads)
    for name, expected in _onnxruntime(m, threads).items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-4, err_msg=name)


def test_transposed_conv_partial_last_panel_epilogues():
    m = GraphMaker("conv_t_tail_epilogues")
    x = m.input(1, 160, 7, 7)
    w = m.weight(160, 160, 1, 1, scale=0.1)
    full, per_channel = m.input(1, 160, 7, 7), m.input(1, 160, 1, 1)
    outs = [
        m.node("FusedConv", x, w, m.weight(160), res, domain=DOMAIN, activation=act, activation_params=params)
        for res, act, params in ((None, "Clip", (0.0, 6.0)), (full, "Relu", ()), (per_channel, "Sigmoid", ()))
    ]
    check_against_reference(m.output(*outs), threads=2)

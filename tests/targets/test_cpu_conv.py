"""The cpu target's fp32 convolutions (kernels_conv.c): the direct depthwise kernel's blocking, staging and
epilogue over strides, dilations, pads, channel multipliers and plane sizes around the vector and block
widths; the conv GEMM (pointwise convs read in place, im2col panels) and the transposed conv GEMM of small
planes around their tile widths, K blocks and epilogues; at every ISA level the build supports, and
results that do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowering.opinfo import DOMAIN
from targets.cpu.emit_linear import conv_direct, conv_geometry, conv_in_place, conv_ksplit, conv_transposed

from .cpu_harness import (
    GraphMaker,
    add_conv_epilogues,
    assert_thread_count_independent,
    build_cpu,
    check_against_reference,
    conv_epilogue_graph,
    conv_graph,
)

pytestmark = pytest.mark.target_cpu

DEPTHWISE_CASES = [  # (input shape, weight shape, attrs)
    ((1, 4, 1, 1), (4, 1, 3, 3), {"group": 4, "pads": (1, 1, 1, 1)}),  # 1x1 plane: all padding
    ((1, 3, 9, 15), (3, 1, 3, 3), {"group": 3, "pads": (1, 1, 1, 1)}),  # one partial vector, 8-row blocks
    ((1, 3, 11, 16), (3, 1, 3, 3), {"group": 3, "pads": (1, 1, 1, 1)}),  # exactly one vector
    ((1, 2, 13, 17), (2, 1, 3, 3), {"group": 2, "pads": (1, 1, 1, 1)}),  # one vector and one lane
    ((1, 2, 19, 33), (2, 1, 3, 3), {"group": 2, "pads": (1, 1, 1, 1)}),  # 3 vectors: 4-vector blocks
    ((1, 2, 10, 65), (2, 1, 3, 3), {"group": 2, "pads": (1, 1, 1, 1)}),  # 5 vectors: 8-vector blocks
    ((1, 2, 21, 130), (2, 1, 3, 3), {"group": 2, "pads": (1, 1, 1, 1)}),  # 2 blocks, several row chunks
    ((1, 4, 28, 28), (4, 1, 3, 3), {"group": 4, "strides": (2, 2), "pads": (1, 1, 1, 1)}),
    ((1, 3, 15, 47), (3, 1, 3, 3), {"group": 3, "strides": (2, 2), "pads": (1, 1, 1, 1)}),  # odd, stride 2
    ((1, 3, 14, 14), (3, 1, 3, 3), {"group": 3, "strides": (2, 2), "pads": (0, 0, 1, 1)}),  # asymmetric pad
    ((1, 2, 17, 40), (2, 1, 3, 3), {"group": 2, "strides": (3, 3), "pads": (1, 1, 1, 1)}),  # stride 3
    ((1, 2, 12, 37), (2, 1, 3, 3), {"group": 2, "strides": (1, 2)}),  # no padding, stride 2 columns only
    ((1, 2, 16, 36), (2, 1, 3, 3), {"group": 2, "dilations": (2, 3), "pads": (2, 3, 2, 3)}),
    ((1, 2, 20, 20), (2, 1, 5, 5), {"group": 2, "pads": (2, 2, 2, 2)}),  # 5x5
    ((1, 2, 23, 23), (2, 1, 5, 5), {"group": 2, "strides": (2, 2), "pads": (2, 1, 2, 1)}),
    ((1, 2, 9, 30), (2, 1, 1, 7), {"group": 2, "pads": (0, 3, 0, 3)}),  # 1x7
    ((1, 2, 30, 9), (2, 1, 7, 1), {"group": 2, "pads": (3, 0, 3, 0)}),  # 7x1
    ((1, 3, 10, 18), (6, 1, 3, 3), {"group": 3, "pads": (1, 1, 1, 1)}),  # channel multiplier 2
    ((2, 3, 12, 12), (9, 1, 3, 3), {"group": 3, "strides": (2, 2), "pads": (1, 1, 1, 1)}),  # batch 2, mult 3
    ((1, 2, 6, 6), (2, 1, 3, 3), {"group": 2, "pads": (4, 4, 4, 4)}),  # pads wider than the kernel
    ((1, 2, 50), (2, 1, 5), {"group": 2, "pads": (2, 2)}),  # 1-D
    ((1, 2, 41), (2, 1, 3), {"group": 2, "strides": (2,), "dilations": (2,), "pads": (1, 2)}),
]


def _depthwise_graph() -> GraphMaker:
    m = GraphMaker("depthwise")
    outs = []
    for xs, ws, attrs in DEPTHWISE_CASES:
        bias = m.weight(ws[0])
        outs.append(m.node("Conv", m.input(*xs), m.weight(*ws), bias, **attrs))
    return m.output(*outs)


@pytest.mark.parametrize("isa", [None, "x86-64-v3", "x86-64-v2"])
def test_depthwise_geometries(isa):
    check_against_reference(_depthwise_graph(), threads=2, **({"isa": isa} if isa else {}))


def test_depthwise_epilogues():
    m = GraphMaker("depthwise_epilogues")
    outs = []
    x = m.input(1, 8, 13, 37)
    w = m.weight(8, 1, 3, 3)
    full = m.input(1, 8, 13, 37)
    per_channel = m.input(1, 8, 1, 1)
    for res, act, params in (
        (None, "Clip", (0.0, 6.0)),
        (full, "Relu", ()),
        (per_channel, "LeakyRelu", (0.1,)),
        (full, "Sigmoid", ()),
        (None, "Tanh", ()),
        (None, "", ()),
    ):
        outs.append(
            m.node(
                "FusedConv", x, w, m.weight(8), res, domain=DOMAIN, group=8, pads=(1, 1, 1, 1),
                activation=act, activation_params=params,
            )
        )
    # a stride-2 depthwise with a residual of its (smaller) output's shape
    outs.append(
        m.node(
            "FusedConv", x, w, None, m.input(1, 8, 7, 19), domain=DOMAIN, group=8, strides=(2, 2),
            pads=(1, 1, 1, 1), activation="Clip", activation_params=(-1.0, 1.0),
        )
    )
    check_against_reference(m.output(*outs))


def test_depthwise_results_do_not_depend_on_thread_count():
    m = GraphMaker("depthwise_threads")
    x = m.input(2, 24, 29, 45)
    outs = [
        m.node("Conv", x, m.weight(24, 1, 3, 3), m.weight(24), group=24, pads=(1, 1, 1, 1)),
        m.node("Conv", x, m.weight(48, 1, 3, 3), None, group=24, strides=(2, 2), pads=(1, 1, 1, 1)),
    ]
    built = build_cpu(m.output(*outs).graph)
    results = [built.run(m.feeds, threads) for threads in (1, 2, 3)]
    for other in results[1:]:
        for name, value in results[0].items():
            np.testing.assert_array_equal(other[name], value, err_msg=name)


def test_pointwise_and_small_spatial_convs():
    m = GraphMaker("conv_shapes")
    outs = []
    for xs, ws, attrs in (
        ((1, 16, 23, 23), (24, 16, 1, 1), {}),  # 1x1, P = 529: partial column panel
        ((1, 40, 7, 7), (36, 40, 1, 1), {}),  # 1x1, P = 49
        ((1, 64, 7, 7), (20, 64, 3, 3), {"pads": (1, 1, 1, 1)}),  # 3x3 on a 7x7 plane
        ((1, 32, 14, 14), (12, 32, 3, 3), {"strides": (2, 2), "pads": (1, 1, 1, 1)}),
        ((1, 3, 31, 31), (10, 3, 7, 7), {"strides": (2, 2), "pads": (3, 3, 3, 3)}),  # stem-like, C = 3
        ((1, 24, 9, 11), (24, 24, 1, 1), {"strides": (2, 2)}),  # strided 1x1
    ):
        outs.append(m.node("Conv", m.input(*xs), m.weight(*ws), m.weight(ws[0]), **attrs))
    check_against_reference(m.output(*outs), threads=2)


# (input shape, weight shape, attrs): the in-place pointwise path (tiles of 3 vectors, a masked last one), the
# im2col path and the transposed path (conv_transposed), each around its tile widths and K blocks
GEMM_CASES = [
    ((1, 16, 9, 9), (24, 16, 1, 1), {}),  # P = 81: one full tile of 48 and a masked 33
    ((1, 8, 4, 4), (20, 8, 1, 1), {}),  # P = 16: a single vector, 20 rows (a partial row panel)
    ((1, 8, 3, 5), (7, 8, 1, 1), {}),  # P = 15: one masked vector only
    ((2, 300, 10, 10), (40, 300, 1, 1), {}),  # K = 300: two K blocks, batch 2
    ((1, 144, 14, 14), (24, 144, 1, 1), {}),  # K = 144: B rows prefetched (LW_CV_PFK), a 4-column last tile
    ((1, 12, 10, 10), (18, 4, 1, 1), {"group": 3}),  # grouped pointwise
    ((1, 8, 12, 12), (12, 4, 3, 3), {"group": 2, "pads": (1, 1, 1, 1)}),  # grouped 3x3 (im2col)
    ((1, 40, 6, 6), (32, 40, 3, 3), {"pads": (1, 1, 1, 1)}),  # K = 360, im2col over two K blocks
    ((1, 160, 7, 7), (96, 160, 1, 1), {}),  # transposed, in place, P = 49
    ((1, 300, 5, 10), (40, 300, 1, 1), {}),  # transposed, P = 50: a tile of one position, 40 of 48 channels
    ((1, 64, 7, 7), (48, 64, 3, 3), {"pads": (1, 1, 1, 1)}),  # transposed, masked im2col, K = 576
    ((1, 32, 9, 8), (48, 32, 3, 3), {"pads": (1, 2, 1, 0)}),  # transposed, asymmetric pads, P = 72 > 64: no
    ((1, 32, 7, 7), (48, 32, 3, 3), {"dilations": (2, 2), "pads": (2, 2, 2, 2)}),  # transposed, dilated
    ((1, 32, 28, 28), (96, 32, 3, 3), {"strides": (2, 2), "pads": (1, 1, 1, 1)}),  # transposed, P = 196
    ((1, 48, 13, 13), (48, 48, 3, 3), {"strides": (2, 2), "pads": (1, 1, 1, 1)}),  # transposed, stride-2 rows
    ((1, 256, 14, 14), (48, 256, 1, 1), {"strides": (2, 2)}),  # transposed strided 1x1 (im2col)
    ((1, 600, 14, 14), (96, 600, 1, 1), {}),  # transposed in place, P = 196: two position blocks
    ((1, 20, 50), (48, 20, 7), {"pads": (3, 3)}),  # 1-D, transposed
    # im2col on AVX-512 too (the direct conv, lw_conv2d_d, takes the other spatial convs there: see
    # test_cpu_conv_direct.py): grid rows narrower than 4 columns, kernels of more than 64 taps
    ((1, 8, 6, 1), (12, 8, 3, 3), {"pads": (1, 1, 1, 1)}),
    ((1, 4, 12, 12), (8, 4, 9, 9), {"pads": (1, 1, 1, 1)}),
]


def _gemm_graph(activation: str = "", params=()) -> GraphMaker:
    return conv_graph("conv_gemm", GEMM_CASES, activation, params)


@pytest.mark.parametrize("vec", [16, 8])
def test_gemm_cases_cover_every_path(vec):
    graph = _gemm_graph().graph
    paths = set()
    for node in graph.nodes:
        g, _ = conv_geometry(node)
        path = "transposed" if conv_transposed(g, vec) else "direct" if conv_direct(g, vec) else "gemm"
        paths.add((path, conv_in_place(g)))
    expected = {("gemm", True), ("gemm", False), ("transposed", True), ("transposed", False)}
    assert paths == expected | ({("direct", False)} if vec == 16 else set())


@pytest.mark.parametrize("isa", [None, "x86-64-v3", "x86-64-v2"])
def test_conv_gemm_geometries(isa):
    check_against_reference(_gemm_graph(), threads=2, **({"isa": isa} if isa else {}))


def test_conv_gemm_epilogue_activation():
    check_against_reference(_gemm_graph("Clip", (0.0, 6.0)))


def test_conv_gemm_epilogues():
    m = GraphMaker("conv_gemm_epilogues")
    outs = []
    for xs, ws, attrs in (
        ((1, 24, 11, 11), (40, 24, 1, 1), {}),  # in place
        ((1, 24, 11, 11), (40, 24, 3, 3), {"pads": (1, 1, 1, 1)}),  # im2col
        ((1, 200, 7, 7), (96, 200, 1, 1), {}),  # transposed
        ((1, 24, 7, 7), (48, 24, 3, 3), {"pads": (1, 1, 1, 1)}),  # transposed, im2col
    ):
        x = m.input(*xs)
        outs += add_conv_epilogues(m, x, ws, attrs, (xs[0], ws[0], xs[2], xs[3]))
    check_against_reference(m.output(*outs), threads=2)


def test_conv_gemm_results_do_not_depend_on_thread_count():
    assert_thread_count_independent(_gemm_graph(), (1, 2, 3))


# K in two halves (conv_ksplit): split over the threads at even thread counts, combined with the epilogue
KSPLIT_CASES = [
    ((1, 288, 9, 9), (48, 288, 1, 1), {}),  # P = 81: a full tile and a masked one, K halves of 144
    ((2, 320, 18, 18), (64, 320, 1, 1), {}),  # batch 2, halves of 160 (K above LW_CV_KC), P = 324
    ((1, 257, 12, 12), (20, 257, 1, 1), {}),  # odd K (halves 129 + 128), a partial row panel
]


def test_ksplit_cases_are_ksplit():
    for node in conv_epilogue_graph("ksplit", KSPLIT_CASES).graph.nodes:
        g = conv_geometry(node)[0]
        assert conv_ksplit(g) and not conv_transposed(g, 16), node.name


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_ksplit_epilogues(threads):
    check_against_reference(conv_epilogue_graph("ksplit", KSPLIT_CASES, weight_scale=0.1), threads=threads)


def test_ksplit_results_do_not_depend_on_thread_count():
    graph = conv_epilogue_graph("ksplit", KSPLIT_CASES, weight_scale=0.1)
    assert_thread_count_independent(graph, (1, 2, 3, 4))

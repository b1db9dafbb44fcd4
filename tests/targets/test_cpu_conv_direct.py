"""The cpu target's direct convolution over phase grids (lw_conv2d_d in kernels_conv.c): strides 1 to 3 in
each axis, dilations, symmetric and asymmetric pads, kernels from 1x1 (strided) to the 7x7/2 stem, groups,
batches, planes whose rows are narrower than a vector (one vector spans several output rows) and grids whose
vector count leaves tiles of one, two and three vectors; every epilogue (bias, residual per position and per
channel, activations, alpha-free FusedConv without bias), strided convs whose taps read only some phase
planes (the others are not written and keep stale workspace data), and results that do not depend on the
thread count (1 to 4 threads: even static and dynamic task splits). Compared with the reference interpreter
(an independent numpy convolution)."""

from __future__ import annotations

import numpy as np
import pytest

from lowering.opinfo import DOMAIN
from targets.cpu import emit_linear
from targets.cpu.emit_linear import conv_direct, conv_geometry, conv_transposed, direct_grid

from .cpu_harness import (
    GraphMaker,
    assert_thread_count_independent,
    check_against_reference,
    conv_epilogue_graph,
    conv_graph,
)

pytestmark = pytest.mark.target_cpu


@pytest.fixture(autouse=True)
def _direct_only(monkeypatch):
    """Most cases here would run as Winograd or lw_conv2d_dt (their own test files): keep them on
    lw_conv2d_d, which still runs the strided 1x1 convs and whatever the others do not take."""
    monkeypatch.setattr(emit_linear, "conv_winograd", lambda g, vec: False)
    monkeypatch.setattr(emit_linear, "conv_direct_t", lambda g, vec: False)

P1 = (1, 1, 1, 1)
DIRECT_CASES = [  # (input shape, weight shape, attrs)
    ((1, 16, 20, 20), (24, 16, 3, 3), {"pads": P1}),  # Wq 22: 440 positions, 28 vectors (tiles of 3 and 2)
    ((1, 8, 9, 14), (20, 8, 3, 3), {"pads": P1}),  # 20 channels: a partial row panel; Wq 16
    ((1, 5, 4, 5), (8, 5, 3, 3), {"pads": P1}),  # Wq 7 < 16: a vector spans three output rows
    ((1, 4, 6, 2), (8, 4, 3, 3), {"pads": P1}),  # OW 2, Wq 4: four rows per vector
    ((2, 6, 11, 13), (10, 6, 3, 3), {"pads": (0, 2, 1, 0)}),  # batch 2, asymmetric pads
    ((1, 3, 37, 41), (16, 3, 7, 7), {"strides": (2, 2), "pads": (3, 3, 3, 3)}),  # stem-like, 4 phases
    ((1, 3, 30, 30), (32, 3, 3, 3), {"strides": (2, 2), "pads": P1}),  # MobileNet stem-like
    ((1, 12, 17, 23), (16, 12, 3, 3), {"strides": (2, 2), "pads": P1}),  # odd planes, stride 2
    ((1, 6, 16, 25), (8, 6, 5, 5), {"strides": (3, 3), "pads": (2, 1, 2, 1)}),  # stride 3: 9 phases
    ((1, 6, 15, 22), (8, 6, 3, 3), {"strides": (1, 2), "pads": P1}),  # stride 2 columns only
    ((1, 6, 19, 19), (8, 6, 3, 3), {"dilations": (2, 2), "pads": (2, 2, 2, 2)}),  # dilated
    ((1, 6, 21, 21), (8, 6, 3, 3), {"dilations": (2, 3), "strides": (2, 2), "pads": (1, 3, 2, 1)}),
    ((1, 16, 18, 18), (24, 16, 1, 1), {"strides": (2, 2)}),  # strided 1x1: one tap, one phase used
    ((1, 8, 12, 12), (12, 4, 3, 3), {"group": 2, "pads": P1}),  # grouped
    ((1, 300, 9, 10), (16, 300, 3, 3), {"pads": P1}),  # K = 2700
    ((1, 6, 40), (8, 6, 5), {"pads": (2, 2)}),  # 1-D
    ((1, 6, 41), (8, 6, 3), {"strides": (2,), "pads": (1, 0)}),  # 1-D, stride 2
    ((2, 8, 17, 20), (12, 8, 1, 1), {"strides": (3, 2), "pads": (1, 0, 0, 1)}),  # one of 6 phases, padded
    ((1, 6, 20, 23), (8, 6, 3, 3), {"strides": (3, 3), "dilations": (3, 3), "pads": P1}),  # 1 of 9 phases
    ((1, 4, 40, 40), (8, 4, 1, 1), {"strides": (9, 9)}),  # 81 phases: past the 64 the used-phase mask holds
]


def _graph(cases, activation: str = "", params=()) -> GraphMaker:
    return conv_graph("conv_direct", cases, activation, params)


def test_cases_run_direct():
    for node in _graph(DIRECT_CASES).graph.nodes:
        g, _ = conv_geometry(node)
        assert conv_direct(g, 16) and not conv_transposed(g, 16), node.name
        assert not conv_direct(g, 8) and not conv_direct(g, 4)  # AVX2 and SSE keep im2col
    # narrower grids (more output runs per vector than lw_dc_segs holds) and longer kernels stay on im2col
    narrow = dict(conv_geometry(_graph([((1, 4, 6, 1), (8, 4, 3, 3), {"pads": P1})]).graph.nodes[0])[0])
    assert direct_grid(narrow)[0] == 3 and not conv_direct(narrow, 16)
    big = dict(conv_geometry(_graph([((1, 2, 20, 20), (8, 2, 9, 9), {})]).graph.nodes[0])[0])
    assert not conv_direct(big, 16)


def test_direct_geometries():
    check_against_reference(_graph(DIRECT_CASES), threads=2)


def test_direct_geometries_single_thread_clip():
    check_against_reference(_graph(DIRECT_CASES, "Clip", (0.0, 6.0)), threads=1)


def test_direct_epilogues():
    cases = (
        ((1, 12, 13, 11), (20, 12, 3, 3), {"pads": P1}),
        ((2, 6, 15, 17), (16, 6, 3, 3), {"strides": (2, 2), "pads": P1}),
        ((1, 5, 4, 5), (8, 5, 3, 3), {"pads": P1}),  # several output rows per vector
    )
    check_against_reference(conv_epilogue_graph("conv_direct_epilogues", cases), threads=2)


def test_direct_unused_phases_hold_stale_workspace():
    """A strided conv writes only the phase planes its taps read; the others keep whatever the previous
    kernel left in the shared workspace (here a grid of huge values), which must reach no output."""
    m = GraphMaker("conv_direct_stale")
    huge = m.node("Mul", m.input(1, 16, 18, 18), m.const(np.float32(1e30)))
    first = m.node("Conv", huge, m.weight(8, 16, 3, 3, scale=1e-8), None, pads=P1, strides=(2, 2))
    x = m.input(1, 16, 18, 18)
    res = m.input(1, 24, 9, 9)
    second = m.node("FusedConv", x, m.weight(24, 16, 1, 1), m.weight(24), res, domain=DOMAIN,
                    activation="Relu", strides=(2, 2))
    third = m.node("Conv", first, m.weight(24, 8, 3, 3), None, pads=P1, strides=(3, 3), dilations=(3, 3))
    check_against_reference(m.output(second, third), threads=2)


def test_direct_results_do_not_depend_on_thread_count():
    assert_thread_count_independent(_graph(DIRECT_CASES))

"""The cpu target's transposed direct convolution (lw_conv2d_dt in kernels_conv.c: phase grids as lw_conv2d_d,
grid positions broadcast, output channels in the vector lanes, tiles of up to 14 positions within an output
row, channel blocks with partial sums between them, a 16x16 register transpose before the epilogue). Cases:
rows that split into equal and unequal tiles (OW 56, 20, 17, 9), output channels that fill a 32-channel
panel partly (16, 24, 40), channel counts that leave a partial channel block (20, 300), strides, dilations,
asymmetric pads, groups, batches, 1-D; every epilogue; results independent of the thread count. Compared
with the reference interpreter (an independent numpy convolution)."""

from __future__ import annotations

import pytest

from targets.cpu import emit_linear
from targets.cpu.emit_linear import conv_direct_t, conv_geometry, conv_transposed

from .cpu_harness import (
    GraphMaker,
    assert_thread_count_independent,
    check_against_reference,
    conv_epilogue_graph,
    conv_graph,
)

pytestmark = pytest.mark.target_cpu


@pytest.fixture(autouse=True)
def _no_winograd(monkeypatch):
    """The 3x3 stride-1 cases here would run as Winograd (test_cpu_conv_winograd.py): keep them direct."""
    monkeypatch.setattr(emit_linear, "conv_winograd", lambda g, vec: False)

P1 = (1, 1, 1, 1)
CASES = [  # (input shape, weight shape, attrs)
    ((1, 16, 56, 20), (32, 16, 3, 3), {"pads": P1}),  # OW 20: two tiles of 10 per row
    ((1, 20, 12, 17), (24, 20, 3, 3), {"pads": P1}),  # OW 17 (9 + 8); 24 channels: a partial panel
    ((1, 16, 9, 9), (40, 16, 3, 3), {"pads": P1}),  # 81 positions, rows of 9; 40 = 32 + 8 channels
    ((1, 32, 30, 30), (16, 32, 3, 3), {"pads": P1}),  # a single half-filled panel
    ((2, 16, 15, 19), (32, 16, 3, 3), {"pads": (0, 2, 1, 0)}),  # batch 2, asymmetric pads
    ((1, 24, 29, 31), (32, 24, 3, 3), {"strides": (2, 2), "pads": P1}),  # stride 2, odd planes
    ((1, 16, 21, 40), (32, 16, 5, 5), {"strides": (1, 2), "pads": (2, 2, 2, 2)}),  # stride 2 columns only
    ((1, 16, 22, 22), (32, 16, 3, 3), {"dilations": (2, 2), "pads": (2, 2, 2, 2)}),  # dilated
    ((1, 32, 16, 16), (32, 16, 3, 3), {"group": 2, "pads": P1}),  # two groups of 16 channels
    ((1, 300, 9, 10), (32, 300, 3, 3), {"pads": P1}),  # K 2700: 19 channel blocks, the last partial
    ((1, 16, 100), (32, 16, 5), {"pads": (2, 2)}),  # 1-D
    ((1, 16, 60, 60), (32, 16, 3, 3), {"pads": P1}),  # 240 tiles: several blocks of 32 tiles per task
    ((1, 3, 45, 41), (64, 3, 7, 7), {"strides": (2, 2), "pads": (3, 3, 3, 3)}),  # ResNet-like stem, K 147
    ((1, 3, 30, 30), (32, 3, 3, 3), {"strides": (2, 2), "pads": P1}),  # MobileNet-like stem, K 27
]


def _graph(cases, activation: str = "", params=()) -> GraphMaker:
    return conv_graph("conv_direct_t", cases, activation, params, fan_in_scale=True)


def test_cases_run_direct_transposed():
    for node in _graph(CASES).graph.nodes:
        g, _ = conv_geometry(node)
        assert conv_direct_t(g, 16) and not conv_transposed(g, 16), node.name
        assert not conv_direct_t(g, 8) and not conv_direct_t(g, 4)  # AVX2 and SSE keep im2col
    # depthwise and pointwise convs and small planes take other kernels
    for xs, ws, attrs in (
        ((1, 16, 20, 20), (16, 1, 3, 3), {"group": 16, "pads": P1}),
        ((1, 16, 20, 20), (32, 16, 1, 1), {}),
        ((1, 64, 7, 7), (64, 64, 3, 3), {"pads": P1}),
    ):
        g, _ = conv_geometry(_graph([(xs, ws, attrs)]).graph.nodes[0])
        assert not conv_direct_t(g, 16), (xs, ws)


def test_direct_t_geometries():
    check_against_reference(_graph(CASES), threads=2)


def test_direct_t_geometries_single_thread_clip():
    check_against_reference(_graph(CASES, "Clip", (0.0, 6.0)), threads=1)


def test_direct_t_epilogues():
    cases = (
        ((1, 16, 13, 19), (40, 16, 3, 3), {"pads": P1}),
        ((2, 16, 15, 17), (32, 16, 3, 3), {"strides": (2, 2), "pads": P1}),
    )
    check_against_reference(conv_epilogue_graph("conv_direct_t_epilogues", cases), threads=2)


def test_direct_t_results_do_not_depend_on_thread_count():
    assert_thread_count_independent(_graph(CASES))

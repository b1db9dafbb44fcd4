"""The cpu target's Winograd F(2x2, 3x3) convolution (lw_conv2d_wino in kernels_conv.c: the phase grids of a
virtual 4x4 stride-2 conv over the 2x2 output tiles, the input transform per block of grid positions, 16
GEMMs against the weights transformed at compile time, the output transform with the epilogue). Cases: even
and odd output planes (clipped last tile row and column), valid and asymmetric pads, output channel counts
that fill the 8-row panels partly, channel counts from 16 to 300, batches, planes from 9x9 to 60x60 (one to
many blocks per thread); every epilogue; results independent of the thread count; which convs take it.
Compared with the reference interpreter (an independent numpy convolution) and with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from targets.cpu.emit_linear import conv_geometry, conv_winograd, winograd_weights

from .cpu_harness import (
    GraphMaker,
    assert_thread_count_independent,
    check_against_reference,
    conv_epilogue_graph,
    conv_graph,
)

pytestmark = pytest.mark.target_cpu

P1 = (1, 1, 1, 1)
CASES = [  # (input shape, weight shape, attrs)
    ((1, 16, 56, 56), (64, 16, 3, 3), {"pads": P1}),  # ResNet-like: 28 x 28 tiles, many blocks
    ((1, 17, 13, 11), (20, 17, 3, 3), {"pads": P1}),  # odd plane: the last tile row and column clipped
    ((1, 16, 9, 9), (8, 16, 3, 3), {"pads": P1}),  # 81 positions (25 tiles), one panel of 8
    ((1, 24, 16, 20), (12, 24, 3, 3), {}),  # valid: 14 x 18 out; 12 = 8 + 4 channels
    ((2, 16, 15, 19), (32, 16, 3, 3), {"pads": (0, 2, 1, 0)}),  # batch 2, asymmetric pads
    ((1, 300, 10, 10), (24, 300, 3, 3), {"pads": P1}),  # long K
    ((1, 32, 60, 60), (16, 32, 3, 3), {"pads": P1}),  # 900 tiles
    ((1, 16, 70, 1), (16, 16, 3, 3), {"pads": P1}),  # one output column: a tile row of one half-used tile
    ((1, 16, 3, 41), (16, 16, 3, 3), {"pads": (1, 0, 1, 0)}),  # 3 x 39 out: the last tile row half-used
]


def _graph(cases, activation: str = "", params=()) -> GraphMaker:
    return conv_graph("conv_winograd", cases, activation, params, fan_in_scale=True)


def test_which_convs_run_winograd():
    for node in _graph(CASES).graph.nodes:
        g, _ = conv_geometry(node)
        assert conv_winograd(g, 16), node.name
        assert not conv_winograd(g, 8) and not conv_winograd(g, 4)  # AVX-512 only
    for xs, ws, attrs in (
        ((1, 16, 20, 20), (16, 16, 3, 3), {"strides": (2, 2), "pads": P1}),  # strided
        ((1, 16, 20, 20), (16, 16, 3, 3), {"dilations": (2, 2), "pads": (2, 2, 2, 2)}),  # dilated
        ((1, 32, 20, 20), (16, 16, 3, 3), {"group": 2, "pads": P1}),  # grouped
        ((1, 16, 20, 20), (16, 16, 5, 5), {"pads": (2, 2, 2, 2)}),  # 5x5
        ((1, 8, 20, 20), (16, 8, 3, 3), {"pads": P1}),  # too few input channels
        ((1, 64, 7, 7), (64, 64, 3, 3), {"pads": P1}),  # 49 positions: transposed GEMM
        ((1, 256, 56, 56), (256, 256, 3, 3), {"pads": P1}),  # 4 MiB of U read by 66 blocks (VGG-like)
        ((1, 512, 28, 28), (512, 512, 3, 3), {"pads": P1}),  # 16 MiB of U
    ):
        g, _ = conv_geometry(_graph([(xs, ws, attrs)]).graph.nodes[0])
        assert not conv_winograd(g, 16), (xs, ws, attrs)


def test_large_weights_run_winograd_only_over_few_blocks():
    """ResNet's 256@14 (4 MiB of transformed weights, 2 blocks) keeps Winograd; 512@14 (16 MiB) does not,
    nor 300@14 (5.8 MiB); 128 x 256 channels (2 MiB) do at any size."""
    for ws, expected in (((256, 256, 3, 3), True), ((512, 512, 3, 3), False), ((300, 300, 3, 3), False),
                         ((256, 128, 3, 3), True)):
        g, _ = conv_geometry(_graph([((1, ws[1], 14, 14), ws, {"pads": P1})]).graph.nodes[0])
        assert conv_winograd(g, 16) is expected, ws


def test_weight_transform_is_lavins_g():
    """U = G w G^T: a weight of ones everywhere gives the 4x4 of G 1 G^T (1, 1.5, 0.5, 1 on each axis)."""
    u = winograd_weights(np.ones((8, 1, 3, 3), np.float32)).reshape(16, 1, 1, 8)
    axis = np.array([1.0, 1.5, 0.5, 1.0])
    np.testing.assert_allclose(u[:, 0, 0, 0], np.outer(axis, axis).reshape(-1))


def test_winograd_geometries():
    check_against_reference(_graph(CASES), threads=2)


def test_winograd_geometries_single_thread_clip():
    check_against_reference(_graph(CASES, "Clip", (0.0, 6.0)), threads=1)


def test_winograd_epilogues():
    cases = (
        ((1, 16, 13, 19), (20, 16, 3, 3), {"pads": P1}),
        ((2, 16, 12, 12), (16, 16, 3, 3), {"pads": P1}),
    )
    maker = conv_epilogue_graph("conv_winograd_epilogues", cases, weight_scale=0.1)
    check_against_reference(maker, threads=2)


def test_winograd_results_do_not_depend_on_thread_count():
    assert_thread_count_independent(_graph(CASES))

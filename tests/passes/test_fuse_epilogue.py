"""FuseEpilogues: Conv/Gemm/MatMul become fused ops that absorb bias adds, a residual add, an activation."""

import numpy as np
import pytest

from lowering.opinfo import DOMAIN, FLOAT_MAX
from passes.fusion.fuse_epilogue import FuseEpilogues
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

pytestmark = pytest.mark.unit
RNG = np.random.default_rng(2)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _conv(b, x, name="conv", bias=True, channels=4):
    inputs = [x, b.const(_rand(channels, x.type.shape[1], 3, 3), "w")]
    inputs += [b.const(_rand(channels), "b")] if bias else []
    return b.op("Conv", inputs, {"pads": (1, 1, 1, 1), "strides": (1, 1)}, name=name)


def _ops(graph):
    return [n.qualified_op for n in graph.nodes]


def test_canonicalizes_a_lone_conv_keeping_its_attributes():
    b = GraphBuilder()
    b.output(_conv(b, b.input("x", (1, 3, 5, 5))))
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    node = g.nodes[0]
    assert _ops(g) == [f"{DOMAIN}::FusedConv"]
    assert node.attr("pads") == (1, 1, 1, 1) and node.attr("strides") == (1, 1)
    assert node.attr("activation") == "" and node.attr("activation_params") == ()


def test_resnet_block_fuses_bias_residual_and_relu():
    b = GraphBuilder()
    x = b.input("x", (2, 4, 5, 5))
    conv = _conv(b, x)
    biased = b.op("Add", [b.const(_rand(1, 4, 1, 1)), conv], name="bias_add")
    summed = b.op("Add", [biased, x], name="residual_add")
    b.output(b.op("Relu", [summed], name="relu"))
    g = assert_parity(b, [FuseEpilogues()], rtol=1e-5, atol=1e-5, expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedConv"]
    node = g.nodes[0]
    assert node.name == "conv" and node.output.name == "relu_out"
    assert node.meta.sources == ("conv", "bias_add", "residual_add", "relu")
    assert node.input(3) is x and node.input(2).const.shape == (4,)
    assert node.attr("activation") == "Relu"


def test_residual_without_bias_leaves_the_bias_slot_empty():
    b = GraphBuilder()
    x = b.input("x", (1, 4, 3, 3))
    b.output(b.op("Add", [x, _conv(b, x, bias=False)]))
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    assert g.nodes[0].inputs[2] is None and g.nodes[0].inputs[3] is x


def test_residual_computed_after_the_conv_keeps_topological_order():
    b = GraphBuilder()
    x = b.input("x", (1, 4, 3, 3))
    conv = _conv(b, x)
    late = b.op("Sigmoid", [x], name="late")  # defined after the Conv, before the Add
    b.output(b.op("Add", [conv, late], name="add"))
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    assert [n.name for n in g.nodes] == ["late", "conv"]
    assert g.nodes[1].input(3) is late


@pytest.mark.parametrize("bias_shape", [(4, 1, 1), (1, 4, 1, 1), (1,), ()])
def test_per_channel_bias_shapes(bias_shape):
    b = GraphBuilder()
    conv = _conv(b, b.input("x", (1, 3, 3, 3)))
    b.output(b.op("Add", [conv, b.const(_rand(*bias_shape))]))
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    assert len(g.nodes) == 1 and g.nodes[0].input(2).const.shape == (4,)


def test_constant_that_is_not_a_per_channel_bias_stays_an_add():
    b = GraphBuilder()
    conv = _conv(b, b.input("x", (1, 3, 4, 4)))  # output [1,4,4,4]: a [4] constant adds along W
    b.output(b.op("Add", [conv, b.const(_rand(4))], name="add"))
    messages = []
    g = assert_parity(b, [FuseEpilogues()], log=messages.append, expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedConv", "Add"]
    assert any("'add'" in m and "not a per-channel bias" in m for m in messages)


def test_gemm_bias_folds_beta_and_activation_params_are_kept():
    b = GraphBuilder()
    a = b.input("a", (3, 4))
    gemm = b.op("Gemm", [a, b.const(_rand(5, 4)), b.const(_rand(5))], {"transB": 1, "beta": 0.5}, name="fc")
    biased = b.op("Add", [gemm, b.const(_rand(1, 5))])
    b.output(b.op("LeakyRelu", [biased], {"alpha": 0.2}, name="act"))
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    node = g.nodes[0]
    assert _ops(g) == [f"{DOMAIN}::FusedGemm"]
    assert node.attr("beta") == 1.0 and node.attr("transB") == 1 and node.attr("alpha") == 1.0
    assert node.attr("activation") == "LeakyRelu" and node.attr("activation_params") == pytest.approx((0.2,))


def test_matmul_of_matrices_becomes_gemm_with_clip():
    b = GraphBuilder()
    a, w = b.input("a", (3, 4)), b.input("w", (4, 5))
    mm = b.op("MatMul", [a, w], name="mm")
    b.output(b.op("Clip", [mm, b.const(np.float32(0.0))], name="clip"))
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedGemm"]
    assert g.nodes[0].attr("activation_params") == (0.0, FLOAT_MAX)


def test_transformer_linear_layer_becomes_one_fused_matmul():
    """[B,S,K] x W[K,N] + b[N] -> Gelu: the MatMul, bias Add and activation are one FusedMatMul."""
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4))
    mm = b.op("MatMul", [x, b.const(_rand(4, 5))], name="fc")
    biased = b.op("Add", [b.const(_rand(1, 1, 5)), mm], name="bias")
    b.output(b.op("Gelu", [biased], {"approximate": "tanh"}, name="gelu"))
    g = assert_parity(b, [FuseEpilogues()], rtol=1e-5, atol=1e-5, expect_modified=True)
    node = g.nodes[0]
    assert _ops(g) == [f"{DOMAIN}::FusedMatMul"] and node.meta.sources == ("fc", "bias", "gelu")
    assert node.input(2).const.shape == (5,) and node.input(3) is None
    assert node.attr("transA") == 0 and node.attr("transB") == 0 and node.attr("alpha") == 1.0
    assert node.attr("activation") == "Gelu" and node.attr("activation_params") == (1.0,)


def test_batched_matmul_takes_a_residual_but_not_a_broadcasting_add():
    b = GraphBuilder()
    q, k = b.input("q", (2, 3, 4, 6)), b.input("k", (1, 3, 6, 4))
    r = b.input("r", (2, 3, 4, 4))
    scores = b.op("Add", [b.op("MatMul", [q, k], name="mm"), r], name="res")
    mask = b.input("mask", (2, 1, 1, 4))
    b.output(b.op("Add", [scores, mask], name="mask_add"))
    messages = []
    g = assert_parity(b, [FuseEpilogues()], log=messages.append, expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedMatMul", "Add"]
    assert g.nodes[0].input(3) is r
    assert any("'mask_add'" in m and "already has a residual" in m for m in messages)


def test_matmul_with_a_vector_operand_stays_a_matmul():
    b = GraphBuilder()
    b.output(b.op("Relu", [b.op("MatMul", [b.input("a", (2, 3, 4)), b.const(_rand(4))])]))
    assert_parity(b, [FuseEpilogues()], expect_modified=False)


def test_multi_use_output_is_not_fused():
    b = GraphBuilder()
    conv = _conv(b, b.input("x", (1, 3, 3, 3)))
    b.output(b.op("Mul", [conv, b.op("Sigmoid", [conv])]))  # SiLU: the Conv output has two uses
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedConv", "Sigmoid", "Mul"]


def test_graph_output_is_not_fused_away():
    b = GraphBuilder()
    conv = _conv(b, b.input("x", (1, 3, 3, 3)))
    b.output(conv)
    b.output(b.op("Relu", [conv]))
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedConv", "Relu"]


def test_nothing_is_absorbed_after_the_activation_and_only_one_residual():
    b = GraphBuilder()
    x, r = b.input("x", (1, 4, 3, 3)), b.input("r", (1, 4, 3, 3))
    first = b.op("Add", [_conv(b, x), x], name="first")
    second = b.op("Add", [first, r], name="second")
    b.output(b.op("Add", [b.op("Relu", [_conv(b, x, name="conv2")]), r], name="after_relu"))
    b.output(second)
    messages = []
    g = assert_parity(b, [FuseEpilogues()], log=messages.append, expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedConv", "Add", f"{DOMAIN}::FusedConv", "Add"]
    assert any("'second'" in m and "already has a residual" in m for m in messages)


def test_clip_with_runtime_bounds_is_not_absorbed():
    b = GraphBuilder()
    lo = b.input("lo", ())
    b.output(b.op("Clip", [_conv(b, b.input("x", (1, 3, 3, 3))), lo], name="clip"))
    messages = []
    g = assert_parity(b, [FuseEpilogues()], log=messages.append, expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedConv", "Clip"]
    assert any("parameters are not constants" in m for m in messages)


def test_is_idempotent():
    b = GraphBuilder()
    x = b.input("x", (1, 4, 3, 3))
    b.output(b.op("Relu", [b.op("Add", [_conv(b, x), x])]))
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    assert_parity(g, [FuseEpilogues()], expect_modified=False)


def test_gpt2_activation_and_residual_fuse_through_a_rows_reshape():
    """GPT-2's exporter: Gemm on [B*S, C] -> Reshape [B, S, C] -> Gelu, and Reshape -> residual Add. The
    Reshape only regroups rows, so the Gelu / Add go into the Gemm's epilogue and the Reshape moves after
    it (the residual is viewed in the Gemm's shape by a Reshape in front)."""
    b = GraphBuilder()
    x, r = b.input("x", (6, 4)), b.input("r", (2, 3, 5))
    shape = b.const(np.array([2, 3, 5], np.int64), "shape")
    fc = b.op("Gemm", [x, b.const(_rand(4, 5)), b.const(_rand(5))], name="fc")
    act = b.op("Gelu", [b.op("Reshape", [fc, shape], name="view")], {"approximate": "tanh"}, name="gelu")
    proj = b.op("Gemm", [b.op("Reshape", [act, b.const(np.array([6, 5], np.int64))]), b.const(_rand(5, 5))],
                name="proj")
    b.output(b.op("Add", [r, b.op("Reshape", [proj, shape], name="view2")], name="residual"))
    g = assert_parity(b, [FuseEpilogues()], rtol=1e-5, atol=1e-5, expect_modified=True)
    gemm = f"{DOMAIN}::FusedGemm"
    assert _ops(g) == [gemm, "Reshape", "Reshape", "Reshape", gemm, "Reshape"]
    fc_node, proj_node = g.nodes[0], g.nodes[4]
    assert fc_node.attr("activation") == "Gelu" and fc_node.meta.sources == ("fc", "gelu")
    assert fc_node.output.type.shape == (6, 5) and g.nodes[1].output.name == "gelu_out"
    assert proj_node.input(3).producer is g.nodes[3] and g.nodes[3].input(0) is r
    assert g.nodes[5].output.name == "residual_out" and g.outputs[0] is g.nodes[5].output


def test_reshape_that_changes_the_last_axis_stops_the_fusion():
    b = GraphBuilder()
    fc = b.op("Gemm", [b.input("x", (6, 4)), b.const(_rand(4, 6))], name="fc")
    view = b.op("Reshape", [fc, b.const(np.array([6, 2, 3], np.int64))], name="view")
    b.output(b.op("Relu", [view], name="relu"))
    g = assert_parity(b, [FuseEpilogues()], expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedGemm", "Reshape", "Relu"]

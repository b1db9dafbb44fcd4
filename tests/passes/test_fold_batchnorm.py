"""FoldBatchNorm: into Conv/Gemm/MatMul weights when it can, else Mul+Add; never with runtime params."""

import numpy as np
import pytest

from passes.fusion.fold_batchnorm import FoldBatchNorm
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

pytestmark = pytest.mark.unit
RNG = np.random.default_rng(1)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _bn(b, x, channels, name="bn", params=None):
    params = params or [b.const(_rand(channels), "scale"), b.const(_rand(channels), "bias"),
                        b.const(_rand(channels), "mean"), b.const(RNG.uniform(0.5, 2, channels), "var")]
    return b.op("BatchNormalization", [x] + params, {"epsilon": 1e-3}, name=name)


@pytest.mark.parametrize("with_bias", [True, False])
def test_folds_into_conv(with_bias):
    b = GraphBuilder()
    x = b.input("x", (2, 3, 6, 6))
    inputs = [x, b.const(_rand(4, 3, 3, 3), "w")] + ([b.const(_rand(4), "b")] if with_bias else [])
    conv = b.op("Conv", inputs, {"pads": (1, 1, 1, 1)}, name="conv")
    b.output(_bn(b, conv, 4))
    g = assert_parity(b, [FoldBatchNorm()], rtol=1e-4, atol=1e-5, expect_modified=True)
    assert [n.op for n in g.nodes] == ["Conv"]
    node = g.nodes[0]
    assert node.name == "conv" and node.meta.sources == ("conv", "bn")
    assert node.output.name == "bn_out" and node.attr("pads") == (1, 1, 1, 1)
    assert node.input(1).type == inputs[1].type and node.input(2).const.shape == (4,)


def test_folds_into_grouped_conv():
    b = GraphBuilder()
    x = b.input("x", (1, 4, 5, 5))
    conv = b.op("Conv", [x, b.const(_rand(4, 1, 3, 3))], {"group": 4}, name="conv")
    b.output(_bn(b, conv, 4))
    g = assert_parity(b, [FoldBatchNorm()], rtol=1e-4, atol=1e-5, expect_modified=True)
    assert [n.op for n in g.nodes] == ["Conv"]


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (3, 5)])
def test_folds_into_gemm(trans_b, c_shape):
    b = GraphBuilder()
    a = b.input("a", (3, 4))
    weights = b.const(_rand(5, 4) if trans_b else _rand(4, 5), "w")
    inputs = [a, weights] + ([b.const(_rand(*c_shape), "c")] if c_shape else [])
    gemm = b.op("Gemm", inputs, {"transB": trans_b, "alpha": 0.5, "beta": 2.0}, name="gemm")
    b.output(_bn(b, gemm, 5))
    g = assert_parity(b, [FoldBatchNorm()], rtol=1e-4, atol=1e-5, expect_modified=True)
    assert [n.op for n in g.nodes] == ["Gemm"]
    assert g.nodes[0].attr("beta", 1.0) == 1.0 and g.nodes[0].attr("alpha") == 0.5


def test_folds_into_matmul_with_constant_matrix_as_gemm():
    b = GraphBuilder()
    a = b.input("a", (3, 4))
    b.output(_bn(b, b.op("MatMul", [a, b.const(_rand(4, 5))], name="mm"), 5))
    g = assert_parity(b, [FoldBatchNorm()], rtol=1e-4, atol=1e-5, expect_modified=True)
    assert [n.op for n in g.nodes] == ["Gemm"]
    assert g.nodes[0].meta.sources == ("mm", "bn")


def test_lowers_to_mul_add_when_the_conv_output_has_another_use():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    conv = b.op("Conv", [x, b.const(_rand(4, 3, 1, 1))], name="conv")
    b.output(_bn(b, conv, 4))
    b.output(conv)
    messages = []
    g = assert_parity(b, [FoldBatchNorm()], log=messages.append, expect_modified=True)
    assert [n.op for n in g.nodes] == ["Conv", "Mul", "Add"]
    assert g.nodes[1].input(1).const.shape == (4, 1, 1)
    assert g.nodes[2].output.name == "bn_out" and g.nodes[2].meta.sources == ("bn",)
    assert any("has other uses or is a graph output" in m for m in messages)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (1, 3, 2, 2, 2)])
def test_lowers_to_mul_add_after_other_ops(shape):
    b = GraphBuilder()
    x = b.input("x", shape)
    b.output(_bn(b, b.op("Relu", [x]), 3))
    g = assert_parity(b, [FoldBatchNorm()], expect_modified=True)
    assert [n.op for n in g.nodes] == ["Relu", "Mul", "Add"]


def test_lowers_to_mul_add_when_conv_weights_are_not_constant():
    b = GraphBuilder()
    x, w = b.input("x", (1, 2, 4, 4)), b.input("w", (3, 2, 1, 1))
    b.output(_bn(b, b.op("Conv", [x, w]), 3))
    messages = []
    g = assert_parity(b, [FoldBatchNorm()], log=messages.append, expect_modified=True)
    assert [n.op for n in g.nodes] == ["Conv", "Mul", "Add"]
    assert any("weights or bias are not constants" in m for m in messages)


def test_keeps_batchnorm_with_runtime_parameters():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    scale = b.input("scale", (3,))
    conv = b.op("Conv", [x, b.const(_rand(3, 3, 1, 1))])
    params = [scale, b.const(_rand(3)), b.const(_rand(3)), b.const(np.ones(3, np.float32))]
    b.output(_bn(b, conv, 3, params=params))
    messages = []
    assert_parity(b, [FoldBatchNorm()], log=messages.append, expect_modified=False)
    assert any("are not all constants" in m for m in messages)

"""fuse_transformer: each pattern in both exporters' spellings, checked by the reference before and after;
and the negative cases, with the reason the pass logs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from passes.fusion.fuse_transformer import FuseTransformerPatterns
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

F32_MIN = float(np.finfo(np.float32).min)
RNG = np.random.default_rng(0)


def weights(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def fused(b: GraphBuilder, **kwargs):
    logs: list[str] = []
    graph = assert_parity(b, [FuseTransformerPatterns()], rtol=1e-4, atol=1e-5, log=logs.append, **kwargs)
    return graph.op_counts(), logs


# --- LayerNorm --------------------------------------------------------------------------------------

def layernorm(b, x, *, opset18=False, square="Pow", divide="Div", eps_first=False, affine=True):
    def mean(v):
        if opset18:
            return b.op("ReduceMean", [v, b.const(np.array([-1], np.int64))])
        return b.op("ReduceMean", [v], {"axes": (-1,)})
    d = b.op("Sub", [x, mean(x)])
    sq = b.op("Pow", [d, b.const(2.0)]) if square == "Pow" else b.op("Mul", [d, d])
    var = mean(sq)
    eps = b.const(1e-5)
    std = b.op("Sqrt", [b.op("Add", [eps, var] if eps_first else [var, eps])])
    if divide == "Div":
        y = b.op("Div", [d, std])
    else:
        y = b.op("Mul", [b.op("Reciprocal", [std]), d])
    if affine:
        y = b.op("Add", [b.op("Mul", [y, b.const(weights(32) + 1)]), b.const(weights(32))])
    return y


@pytest.mark.parametrize("variant", [
    {}, {"opset18": True}, {"square": "Mul"}, {"eps_first": True}, {"affine": False},
])
def test_decomposed_layernorm_is_fused(variant):
    b = GraphBuilder()
    b.output(layernorm(b, b.input("x", (2, 5, 32)), **variant))
    counts, _ = fused(b)
    assert counts == {"LayerNormalization": 1}


def test_layernorm_with_reciprocal():
    b = GraphBuilder()
    b.output(layernorm(b, b.input("x", (4, 32)), divide="Reciprocal"))
    assert fused(b)[0] == {"LayerNormalization": 1}


def test_layernorm_with_a_shared_intermediate_is_left_alone():
    b = GraphBuilder()
    x = b.input("x", (2, 32))
    y = layernorm(b, x)
    b.output(y)
    var_node = next(n for n in b.graph.nodes if n.op == "Sqrt")
    b.output(var_node.output, "std")  # the std is a graph output too
    counts, logs = fused(b, expect_modified=False)
    assert "LayerNormalization" not in counts
    assert any("also used outside the pattern" in line for line in logs)


# --- GELU -------------------------------------------------------------------------------------------

def erf_gelu(b, x, form):
    inner = (b.op("Div", [x, b.const(math.sqrt(2))]) if form != "mul_inv"
             else b.op("Mul", [b.const(1 / math.sqrt(2)), x]))
    one_plus = b.op("Add", [b.op("Erf", [inner]), b.const(1.0)])
    if form == "legacy":  # (x * (1 + erf)) * 0.5
        return b.op("Mul", [b.op("Mul", [x, one_plus]), b.const(0.5)])
    if form == "dynamo":  # x * (0.5 * (1 + erf))
        return b.op("Mul", [x, b.op("Mul", [b.const(0.5), one_plus])])
    return b.op("Mul", [b.op("Mul", [x, b.const(0.5)]), one_plus])  # (0.5 x) * (1 + erf)


def tanh_gelu(b, x, cube):
    if cube == "Pow":
        x3 = b.op("Pow", [x, b.const(3.0)])
    else:
        x3 = b.op("Mul", [x, b.op("Mul", [x, x])])
    inner = b.op("Add", [x, b.op("Mul", [x3, b.const(0.044715)])])
    t = b.op("Tanh", [b.op("Mul", [inner, b.const(math.sqrt(2 / math.pi))])])
    return b.op("Mul", [b.op("Mul", [x, b.const(0.5)]), b.op("Add", [t, b.const(1.0)])])


@pytest.mark.parametrize("form", ["legacy", "dynamo", "half_first", "mul_inv"])
def test_erf_gelu_is_fused(form):
    b = GraphBuilder()
    x = b.op("Add", [b.input("x", (3, 40)), b.const(0.1)])  # x is computed, as after a Linear
    b.output(erf_gelu(b, x, form))
    counts, _ = fused(b)
    assert counts == {"Add": 1, "Gelu": 1}
    assert next(n for n in b.graph.nodes if n.op == "Gelu").attr("approximate") == "none"


@pytest.mark.parametrize("cube", ["Pow", "Mul"])
def test_tanh_gelu_is_fused(cube):
    b = GraphBuilder()
    b.output(tanh_gelu(b, b.input("x", (2, 8, 24)), cube))
    counts, _ = fused(b)
    assert counts == {"Gelu": 1}
    assert next(n for n in b.graph.nodes if n.op == "Gelu").attr("approximate") == "tanh"


def test_gelu_with_a_wrong_constant_is_left_alone():
    b = GraphBuilder()
    x = b.input("x", (4, 16))
    one_plus = b.op("Add", [b.op("Erf", [b.op("Div", [x, b.const(1.5)])]), b.const(1.0)])
    b.output(b.op("Mul", [b.op("Mul", [x, one_plus]), b.const(0.5)]))
    counts, logs = fused(b, expect_modified=False)
    assert "Gelu" not in counts
    assert any("x / sqrt 2" in line for line in logs)


# --- attention --------------------------------------------------------------------------------------

B, H, S, D = 1, 2, 8, 16


def heads(b, name):
    """A [B, S, H*D] activation split into heads as HuggingFace does: [B, H, S, D] (and K^T)."""
    x = b.op("Add", [b.input(name, (B, S, H * D)), b.const(0.0)])
    x = b.op("Reshape", [x, b.const(np.array([B, S, H, D], np.int64))])
    return x


def qkv(b):
    q = b.op("Transpose", [heads(b, "q")], {"perm": (0, 2, 1, 3)})
    kt = b.op("Transpose", [heads(b, "k")], {"perm": (0, 2, 3, 1)})
    v = b.op("Transpose", [heads(b, "v")], {"perm": (0, 2, 1, 3)})
    return q, kt, v


def test_bert_attention_is_fused():
    b = GraphBuilder()
    q, kt, v = qkv(b)
    mask = b.input("mask", (B, 1, 1, S))
    scores = b.op("Add", [mask, b.op("Div", [b.op("MatMul", [q, kt]), b.const(math.sqrt(D))])])
    b.output(b.op("MatMul", [b.op("Softmax", [scores], {"axis": -1}), v]))
    counts, _ = fused(b)
    assert counts["lowering::Attention"] == 1 and "Softmax" not in counts and "MatMul" not in counts
    node = next(n for n in b.graph.nodes if n.op == "Attention")
    assert node.attr("k_transposed") == 1 and node.attr("scale") == pytest.approx(D ** -0.5)


def test_gpt2_causal_attention_is_fused():
    b = GraphBuilder()
    q, kt, v = qkv(b)
    causal = b.const(np.tril(np.ones((S, S), bool)).reshape(1, 1, S, S))
    w = b.op("Div", [b.op("MatMul", [q, kt]), b.const(math.sqrt(D))])
    w = b.op("Where", [causal, w, b.const(F32_MIN)])
    b.output(b.op("MatMul", [b.op("Softmax", [w], {"axis": -1}), v]))
    counts, _ = fused(b)
    assert counts["lowering::Attention"] == 1 and "Where" not in counts
    node = next(n for n in b.graph.nodes if n.op == "Attention")
    assert node.attr("causal") == 1 and len(node.inputs) == 3


def test_sdpa_attention_with_bool_mask_and_nan_guard_is_fused():
    """scaled_dot_product_attention with a bool mask, as both exporters write it: both operands scaled by
    sqrt(scale), the mask turned into 0/-inf, the product Softmax'ed and guarded against NaN rows."""
    b = GraphBuilder()
    q, kt, v = qkv(b)
    allowed = b.input("allowed", (B, 1, S, S), dtype=np.bool_)
    c = b.const(np.array([D ** -0.25], np.float32))
    scores = b.op("MatMul", [b.op("Mul", [q, c]), b.op("Mul", [kt, c])])
    additive = b.op("Where", [allowed, b.const(0.0), b.const(-np.inf)])
    p = b.op("Softmax", [b.op("Add", [scores, additive])], {"axis": -1})
    guarded = b.op("Where", [b.op("IsNaN", [p]), b.const(0.0), p])
    b.output(b.op("MatMul", [guarded, v]))
    counts, _ = fused(b, seed=3)
    assert counts["lowering::Attention"] == 1 and "IsNaN" not in counts and "Softmax" not in counts
    node = next(n for n in b.graph.nodes if n.op == "Attention")
    assert node.attr("nan_to_zero") == 1 and node.attr("scale") == pytest.approx(D ** -0.5, rel=1e-6)


def test_where_bool_mask_that_is_not_causal_stays_an_input():
    b = GraphBuilder()
    q, kt, v = qkv(b)
    allowed = b.input("allowed", (B, H, S, S), dtype=np.bool_)
    w = b.op("Where", [allowed, b.op("MatMul", [q, kt]), b.const(-np.inf)])
    b.output(b.op("MatMul", [b.op("Softmax", [w], {"axis": -1}), v]))
    counts, _ = fused(b, seed=1)
    node = next(n for n in b.graph.nodes if n.op == "Attention")
    assert node.attr("causal") == 0 and node.input(4) is not None and node.attr("nan_to_zero") == 0


def test_attention_whose_probabilities_are_used_twice_is_left_alone():
    b = GraphBuilder()
    q, kt, v = qkv(b)
    p = b.op("Softmax", [b.op("MatMul", [q, kt])], {"axis": -1})
    b.output(b.op("MatMul", [p, v]))
    b.output(p, "probs")  # attention weights returned (output_attentions=True)
    counts, logs = fused(b, expect_modified=False)
    assert "lowering::Attention" not in counts
    assert any("a graph output" in line for line in logs)

"""fuse_transformer's qkv-split fold: GPT-2's fused projection ``Split -> Reshape -> Transpose`` into Q, K
and V becomes ``q_slice`` / ``k_slice`` / ``v_slice`` (and ``*_perm``) of one head view, checked by the
reference before and after; and the cases it must leave alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from passes.fusion.fuse_transformer import FuseTransformerPatterns
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

B, H, S, D = 2, 3, 9, 8
E = H * D
F32_MIN = float(np.finfo(np.float32).min)
RNG = np.random.default_rng(0)


def fused(b: GraphBuilder, **kwargs):
    logs: list[str] = []
    graph = assert_parity(b, [FuseTransformerPatterns()], rtol=1e-4, atol=1e-5, log=logs.append, **kwargs)
    return graph, logs


def qkv_projection(b: GraphBuilder, sizes=(E, E, E)):
    """x [B, S, E] @ W [E, sum(sizes)] + bias, Split along the features (GPT-2's c_attn)."""
    x = b.input("x", (B, S, E))
    w = b.const(RNG.standard_normal((E, sum(sizes))).astype(np.float32) * 0.3)
    y = b.op("Add", [b.op("MatMul", [x, w]), b.const(RNG.standard_normal(sum(sizes)).astype(np.float32))])
    return b.op("Split", [y, b.const(np.array(sizes, np.int64))], {"axis": 2}, outputs=3)


def gpt2_attention(b: GraphBuilder, parts, head_shape=(B, S, H, D), k_perm=(0, 2, 3, 1),
                   qv_perm=(0, 2, 1, 3)):
    def heads(part, perm):
        return b.op("Transpose", [b.op("Reshape", [part, b.const(np.array(head_shape, np.int64))])],
                    {"perm": perm})
    q, kt, v = heads(parts[0], qv_perm), heads(parts[1], k_perm), heads(parts[2], qv_perm)
    w = b.op("Div", [b.op("MatMul", [q, kt]), b.const(math.sqrt(D))])
    w = b.op("Where", [b.const(np.tril(np.ones((S, S), bool)).reshape(1, 1, S, S)), w, b.const(F32_MIN)])
    y = b.op("MatMul", [b.op("Softmax", [w], {"axis": -1}), v])
    merged = b.op("Transpose", [y], {"perm": qv_perm})
    return b.op("Reshape", [merged, b.const(np.array([B, S, E], np.int64))])


def attention_node(graph):
    return next(n for n in graph.nodes if n.op == "Attention")


def test_gpt2_qkv_split_is_folded_into_the_attention():
    b = GraphBuilder()
    b.output(gpt2_attention(b, qkv_projection(b)))
    graph, _ = fused(b)
    counts = graph.op_counts()
    assert "Split" not in counts and counts["Transpose"] == 1  # only the head merge after the attention
    node = attention_node(graph)
    view = node.input(0)
    assert node.input(1) is view and node.input(2) is view and view.type.shape == (B, S, 3 * H, D)
    assert view.producer.op == "Reshape"
    assert [list(node.attr(f"{n}_slice")) for n in "qkv"] == [[2, 0, H], [2, H, 2 * H], [2, 2 * H, 3 * H]]
    assert list(node.attr("q_perm")) == [0, 2, 1, 3] and list(node.attr("k_perm")) == [0, 2, 3, 1]
    assert node.attr("causal") == 1


def test_fold_under_sdpa_scaling():
    """scaled_dot_product_attention's spelling: Q and K^T each multiplied by sqrt(scale) before the
    MatMul (the Muls read the head views and join the fused group)."""
    b = GraphBuilder()
    parts = qkv_projection(b)

    def heads(part, perm):
        return b.op("Transpose", [b.op("Reshape", [part, b.const(np.array([B, S, H, D], np.int64))])],
                    {"perm": perm})
    root = b.const(D ** -0.25)
    q = b.op("Mul", [heads(parts[0], (0, 2, 1, 3)), root])
    kt = b.op("Mul", [heads(parts[1], (0, 2, 3, 1)), root])
    w = b.op("MatMul", [q, kt])
    b.output(b.op("MatMul", [b.op("Softmax", [w], {"axis": -1}), heads(parts[2], (0, 2, 1, 3))]))
    graph, _ = fused(b)
    counts = graph.op_counts()
    assert "Split" not in counts and "Transpose" not in counts and "Mul" not in counts
    node = attention_node(graph)
    assert list(node.attr("v_slice")) == [2, 2 * H, 3 * H]
    assert node.attr("scale") == pytest.approx(D ** -0.5)


def test_split_with_an_output_read_elsewhere_is_left_alone():
    b = GraphBuilder()
    parts = qkv_projection(b)
    b.output(gpt2_attention(b, parts))
    b.output(parts[2], "v_too")  # the V part is a graph output too (a KV cache's present value)
    graph, _ = fused(b)
    counts = graph.op_counts()
    assert counts["lowering::Attention"] == 1 and counts["Split"] == 1
    assert attention_node(graph).attr("q_slice") is None


def test_a_view_that_does_not_keep_the_rows_is_left_alone():
    """Heads reshaped [B, H, S, D] straight from the [B, S, E] parts (a different tensor than the split of
    the rows): no slice of one view expresses it."""
    b = GraphBuilder()
    b.output(gpt2_attention(b, qkv_projection(b), head_shape=(B, H, S, D), k_perm=(0, 1, 3, 2),
                            qv_perm=(0, 1, 2, 3)))
    graph, _ = fused(b)
    assert graph.op_counts()["Split"] == 1
    assert attention_node(graph).attr("k_slice") is None

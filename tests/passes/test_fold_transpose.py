"""FoldTranspose: transpose pairs cancel or compose; last-two-axes transposes fold into GEMM operand flags."""

import numpy as np
import pytest

from lowering.opinfo import DOMAIN
from passes.fusion.fold_transpose import FoldTranspose, swaps_last_two
from passes.fusion.fuse_epilogue import FuseEpilogues
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

pytestmark = pytest.mark.unit
RNG = np.random.default_rng(5)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _ops(graph):
    return [n.qualified_op for n in graph.nodes]


def test_inverse_pair_cancels():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4, 5))
    t = b.op("Transpose", [b.op("Transpose", [x], {"perm": (0, 2, 3, 1)})], {"perm": (0, 3, 1, 2)})
    b.output(b.op("Relu", [t], name="relu"))
    g = assert_parity(b, [FoldTranspose()], expect_modified=True)
    assert _ops(g) == ["Relu"] and g.nodes[0].input(0) is x


def test_default_perms_reverse_and_cancel():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4))
    b.output(b.op("Neg", [b.op("Transpose", [b.op("Transpose", [x])])]))
    g = assert_parity(b, [FoldTranspose()], expect_modified=True)
    assert _ops(g) == ["Neg"]


def test_non_inverse_pair_composes_into_one_transpose():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4, 5))
    inner = b.op("Transpose", [x], {"perm": (0, 2, 1, 3)}, name="split_heads")
    b.output(b.op("Transpose", [inner], {"perm": (0, 1, 3, 2)}, name="key_t"))
    g = assert_parity(b, [FoldTranspose()], expect_modified=True)
    assert _ops(g) == ["Transpose"]
    node = g.nodes[0]
    assert node.name == "key_t" and node.input(0) is x and node.attr("perm") == (0, 2, 3, 1)


def test_inner_transpose_with_another_reader_is_kept():
    b = GraphBuilder()
    x = b.input("x", (3, 4))
    inner = b.op("Transpose", [x], name="t1")
    b.output(b.op("Relu", [b.op("Transpose", [inner], name="t2")]))
    b.output(b.op("Neg", [inner]))
    g = assert_parity(b, [FoldTranspose()], expect_modified=True)
    assert _ops(g) == ["Transpose", "Relu", "Neg"] and g.nodes[1].input(0) is x


def test_pair_ending_at_a_graph_output_is_kept():
    b = GraphBuilder()
    x = b.input("x", (3, 4))
    b.output(b.op("Transpose", [b.op("Transpose", [x])]))
    assert_parity(b, [FoldTranspose()], expect_modified=False)


def test_key_transpose_folds_into_batched_matmul_trans_b():
    """q @ k^T with k^T = Transpose(k, (0,1,3,2)): the product reads k directly with transB."""
    b = GraphBuilder()
    q, k = b.input("q", (2, 3, 5, 4)), b.input("k", (2, 3, 5, 4))
    kt = b.op("Transpose", [k], {"perm": (0, 1, 3, 2)}, name="kt")
    b.output(b.op("Mul", [b.op("MatMul", [q, kt], name="scores"), b.const(np.float32(0.5))]))
    g = assert_parity(b, [FuseEpilogues(), FoldTranspose()], expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedMatMul", "Mul"]
    node = g.nodes[0]
    assert node.input(1) is k and node.attr("transB") == 1 and node.attr("transA") == 0


def test_gemm_operands_flip_existing_flags():
    b = GraphBuilder()
    a, w = b.input("a", (4, 3)), b.input("w", (5, 4))
    gemm = b.op("Gemm", [b.op("Transpose", [a]), w, b.const(_rand(5))], {"transB": 1}, name="fc")
    b.output(b.op("Gemm", [gemm, b.op("Transpose", [w], name="wt")], {"transB": 1}, name="fc2"))
    g = assert_parity(b, [FuseEpilogues(), FoldTranspose()], expect_modified=True)
    assert _ops(g) == [f"{DOMAIN}::FusedGemm", f"{DOMAIN}::FusedGemm"]
    first, second = g.nodes
    assert first.input(0) is a and first.attr("transA") == 1 and first.attr("transB") == 1
    assert second.input(1) is w and second.attr("transB") == 0


def test_other_permutations_are_not_folded_into_a_matmul():
    b = GraphBuilder()
    x = b.input("x", (2, 4, 3, 5))
    heads = b.op("Transpose", [x], {"perm": (0, 2, 1, 3)})  # [2,3,4,5]: moves a batch axis
    b.output(b.op("MatMul", [heads, b.const(_rand(5, 6))]))
    g = assert_parity(b, [FuseEpilogues(), FoldTranspose()], expect_modified=True)
    assert _ops(g) == ["Transpose", f"{DOMAIN}::FusedMatMul"]
    assert g.nodes[1].attr("transA") == 0


def test_swaps_last_two():
    assert swaps_last_two((1, 0)) and swaps_last_two((0, 1, 3, 2))
    assert not swaps_last_two((0, 1)) and not swaps_last_two((1, 0, 2)) and not swaps_last_two((0,))


def test_is_idempotent():
    b = GraphBuilder()
    q, k = b.input("q", (3, 5, 4)), b.input("k", (3, 5, 4))
    b.output(b.op("MatMul", [q, b.op("Transpose", [k], {"perm": (0, 2, 1)})]))
    g = assert_parity(b, [FuseEpilogues(), FoldTranspose()], expect_modified=True)
    assert_parity(g, [FoldTranspose()], expect_modified=False)


def test_head_split_and_merge_transposes_fold_into_attention():
    """Reshape -> Transpose(0, 2, 1, 3) in front of Q and V, (0, 2, 3, 1) in front of K^T, and
    Transpose(0, 2, 1, 3) -> Reshape after: the transposes become the Attention's layouts."""
    b = GraphBuilder()
    heads = np.array([1, 5, 2, 4], np.int64)
    q, k, v = (b.op("Reshape", [b.input(n, (1, 5, 8)), b.const(heads)], name=f"{n}_view") for n in "qkv")
    qt = b.op("Transpose", [q], {"perm": (0, 2, 1, 3)}, name="qt")
    kt = b.op("Transpose", [k], {"perm": (0, 2, 3, 1)}, name="kt")
    vt = b.op("Transpose", [v], {"perm": (0, 2, 1, 3)}, name="vt")
    y = b.op("Attention", [qt, kt, vt], {"k_transposed": 1, "scale": 0.5}, name="attn", domain=DOMAIN)
    merged = b.op("Transpose", [y], {"perm": (0, 2, 1, 3)}, name="merge")
    b.output(b.op("Reshape", [merged, b.const(np.array([1, 5, 8], np.int64))], name="out"))
    g = assert_parity(b, [FoldTranspose()], expect_modified=True)
    assert _ops(g) == ["Reshape", "Reshape", "Reshape", f"{DOMAIN}::Attention", "Reshape"]
    attn = g.nodes[3]
    assert attn.attr("q_perm") == (0, 2, 1, 3) and attn.attr("k_perm") == (0, 2, 3, 1)
    assert attn.attr("v_perm") == (0, 2, 1, 3) and attn.attr("y_perm") == (0, 2, 1, 3)
    assert attn.output.type.shape == (1, 5, 2, 4) and attn.meta.sources == ("attn", "merge")


def test_attention_layout_that_moves_the_head_size_is_not_folded():
    b = GraphBuilder()
    q = b.op("Transpose", [b.input("q", (1, 2, 4, 6))], {"perm": (0, 1, 3, 2)}, name="qt")
    k, v = b.input("k", (1, 2, 6, 4)), b.input("v", (1, 2, 6, 4))
    b.output(b.op("Attention", [q, k, v], {"scale": 0.5}, name="attn", domain=DOMAIN))
    assert_parity(b, [FoldTranspose()], expect_modified=False)

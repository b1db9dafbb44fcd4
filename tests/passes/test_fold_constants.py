"""FoldConstants: all-constant nodes become constants; the size rule keeps huge tensors out of the weights."""

import numpy as np
import pytest

from passes.cleanup.fold_constants import MAX_GROWTH_BYTES, FoldConstants
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

pytestmark = pytest.mark.unit


def test_folds_a_constant_chain_in_one_run_and_keeps_names():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    w = b.const(np.arange(6, dtype=np.float32).reshape(3, 2), "w")
    wt = b.op("Transpose", [w], {"perm": (1, 0)}, name="wt")
    scaled = b.op("Mul", [wt, b.const(2.0)], name="scale")
    b.output(b.op("Add", [x, scaled], name="add"))
    g = assert_parity(b, [FoldConstants()], expect_modified=True)
    assert [n.op for n in g.nodes] == ["Add"]
    folded = g.nodes[0].input(1)
    assert folded.is_const and folded.name == "scale_out"
    np.testing.assert_array_equal(folded.const, np.arange(6, dtype=np.float32).reshape(3, 2).T * 2)


def test_scalar_results_stay_scalars():
    b = GraphBuilder()
    x = b.input("x", (2,), np.int64)
    picked = b.op("Gather", [b.const(np.array([5, 7], np.int64)), b.const(np.array(1, np.int64))])
    b.output(b.op("Add", [x, b.op("Unsqueeze", [picked, b.const(np.array([0], np.int64))])]))
    g = assert_parity(b, [FoldConstants()], expect_modified=True)
    assert g.nodes[0].input(1).const.shape == (1,)


def test_a_folded_graph_output_becomes_a_constant_output():
    b = GraphBuilder()
    x = b.input("x", (2,))
    b.output(b.op("Relu", [x]))
    b.output(b.op("Neg", [b.const(np.ones(2, np.float32))], name="neg"), name="constant_out")
    g = assert_parity(b, [FoldConstants()], expect_modified=True)
    assert g.output_names == ["relu_out", "constant_out"]
    assert g.outputs[1].is_const and g.outputs[1].name == "neg_out"


def test_does_not_fold_nodes_with_a_runtime_input():
    b = GraphBuilder()
    x = b.input("x", (2,))
    b.output(b.op("Add", [x, b.const(np.ones(2, np.float32))]))
    assert_parity(b, [FoldConstants()], expect_modified=False)


def test_size_rule_keeps_huge_broadcasts_but_folds_same_size_weights():
    b = GraphBuilder()
    x = b.input("x", (512, 1024))
    big = b.op("ConstantOfShape", [b.const(np.array([512, 1024], np.int64))],
               {"value": np.array([1.0], np.float32)}, name="fill")
    weight = b.const(np.ones((1024, 512), np.float32), "weight")  # 2 MiB, transposed in place
    transposed = b.op("Transpose", [weight], {"perm": (1, 0)}, name="transpose")
    b.output(b.op("Add", [b.op("Mul", [x, big]), transposed]))
    messages = []
    g = assert_parity(b, [FoldConstants()], log=messages.append, expect_modified=True)
    assert [n.op for n in g.nodes] == ["ConstantOfShape", "Mul", "Add"]
    assert any(f"over {MAX_GROWTH_BYTES} bytes" in m and "'fill'" in m for m in messages)

"""EliminateDeadCode: nodes that reach no graph output go; everything else stays."""

import numpy as np
import pytest

from passes.cleanup.dce import EliminateDeadCode
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

pytestmark = pytest.mark.unit


def test_removes_a_dead_chain_and_keeps_the_live_one():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    dead = b.op("Exp", [b.op("Neg", [x], name="neg")], name="exp")
    b.op("Sqrt", [dead], name="sqrt")
    b.output(b.op("Relu", [x], name="relu"))
    g = assert_parity(b, [EliminateDeadCode()], expect_modified=True)
    assert [n.name for n in g.nodes] == ["relu"]


def test_keeps_a_multi_output_node_with_one_live_output():
    b = GraphBuilder()
    x = b.input("x", (1, 1, 4, 4))
    pooled, _ = b.op("MaxPool", [x], {"kernel_shape": (2, 2)}, outputs=2, name="pool")
    b.output(pooled)
    assert_parity(b, [EliminateDeadCode()], expect_modified=False)


def test_keeps_unused_graph_inputs_and_constant_outputs():
    b = GraphBuilder()
    b.input("unused", (3,))
    x = b.input("x", (3,))
    b.output(b.op("Abs", [x]))
    b.output(b.const(np.arange(3, dtype=np.float32), "table"))
    g = assert_parity(b, [EliminateDeadCode()], expect_modified=False)
    assert [v.name for v in g.inputs] == ["unused", "x"]

"""FoldShapes: Shape/Size of static types become constants; no-op ops disappear (not at the signature)."""

import numpy as np
import pytest

from lowering.passmanager import FixedPoint
from passes.cleanup.dce import EliminateDeadCode
from passes.cleanup.fold_constants import FoldConstants
from passes.cleanup.fold_shapes import FoldShapes
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

pytestmark = pytest.mark.unit


def _simplify():
    return FixedPoint([FoldShapes(), FoldConstants(), EliminateDeadCode()], name="simplify")


def _i64(values):
    return np.array(values, np.int64)


def test_exporter_shape_chain_folds_to_a_constant_reshape():
    b = GraphBuilder()
    x = b.input("x", (2, 8, 4, 4))
    batch = b.op("Gather", [b.op("Shape", [x], name="shape"), b.const(_i64(0))], {"axis": 0})
    spec = b.op("Concat", [b.op("Unsqueeze", [batch, b.const(_i64([0]))]), b.const(_i64([-1]))], {"axis": 0})
    b.output(b.op("Reshape", [x, spec], name="flatten"))
    g = assert_parity(b, [_simplify()], expect_modified=True)
    assert [n.op for n in g.nodes] == ["Reshape"]
    np.testing.assert_array_equal(g.nodes[0].input(1).const, [2, -1])


def test_shape_start_end_and_size():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 5))
    dims = b.op("Shape", [x], {"start": 1, "end": -1}, name="shape")
    count = b.op("Size", [x], name="size")
    b.output(b.op("Add", [dims, b.op("Unsqueeze", [count, b.const(_i64([0]))])]))
    g = assert_parity(b, [FoldShapes()], expect_modified=True)
    assert [n.op for n in g.nodes] == ["Unsqueeze", "Add"]
    np.testing.assert_array_equal(g.nodes[1].input(0).const, [3])
    assert g.nodes[0].input(0).const.shape == ()


@pytest.mark.parametrize("op, inputs, attrs", [
    ("Identity", [], {}),
    ("Reshape", [_i64([2, 3])], {}),
    ("Flatten", [], {"axis": 1}),
    ("Squeeze", [], {}),
    ("Cast", [], {"to": 1}),
    ("Transpose", [], {"perm": (0, 1)}),
    ("Expand", [_i64([1, 3])], {}),
])
def test_removes_no_ops(op, inputs, attrs):
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    noop = b.op(op, [b.op("Relu", [x], name="relu")] + [b.const(a) for a in inputs], attrs, name="noop")
    b.output(b.op("Neg", [noop], name="neg"))
    g = assert_parity(b, [FoldShapes()], expect_modified=True)
    assert [n.op for n in g.nodes] == ["Relu", "Neg"]


@pytest.mark.parametrize("op, attrs", [("Transpose", {"perm": (1, 0)}), ("Transpose", {}),
                                       ("Cast", {"to": 11})])
def test_keeps_ops_that_change_something(op, attrs):
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    b.output(b.op(op, [b.op("Relu", [x])], attrs))
    assert_parity(b, [FoldShapes()], expect_modified=False)


def test_no_op_output_may_move_to_its_input_unless_that_is_in_the_signature():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    relu = b.op("Relu", [x], name="relu")
    b.output(b.op("Identity", [x], name="of_input"), name="copy_of_x")
    b.output(relu, name="relu")
    b.output(b.op("Identity", [relu], name="of_output"), name="copy_of_relu")
    hidden = b.op("Neg", [x], name="neg")
    b.output(b.op("Identity", [hidden], name="of_hidden"), name="negated")
    messages = []
    g = assert_parity(b, [FoldShapes()], log=messages.append, expect_modified=True)
    assert [n.name for n in g.nodes] == ["relu", "of_input", "of_output", "neg"]
    assert g.output_names == ["copy_of_x", "relu", "copy_of_relu", "negated"]
    assert g.outputs[3].name == "neg_out"
    assert any("'of_input'" in m and "graph input" in m for m in messages)
    assert any("'of_output'" in m and "both graph outputs" in m for m in messages)

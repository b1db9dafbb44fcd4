"""FuseElementwise: single-use elementwise trees become one FusedElementwise with a typed register body."""

import numpy as np
import pytest

from lowering.ir import Attr, AttrKind, DType
from lowering.opinfo import DOMAIN
from passes.fusion.fuse_elementwise import FuseElementwise
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

pytestmark = pytest.mark.unit
FUSED = f"{DOMAIN}::FusedElementwise"


def _ops(graph):
    return [n.qualified_op for n in graph.nodes]


def _body(node):
    return node.attr("body_ops"), node.attr("body_args"), node.attr("body_params")


def test_chain_becomes_one_node_with_the_documented_body():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4, 4))
    scale, shift = b.const(np.full((3, 1, 1), 2.0), "scale"), b.const(np.ones((3, 1, 1)), "shift")
    scaled = b.op("Mul", [x, scale], name="mul")
    shifted = b.op("Add", [scaled, shift], name="add")
    b.output(b.op("LeakyRelu", [shifted], {"alpha": 0.1}, name="act"))
    g = assert_parity(b, [FuseElementwise()], expect_modified=True)
    assert _ops(g) == [FUSED]
    node = g.nodes[0]
    assert node.inputs == (x, scale, shift)
    ops, args, params = _body(node)
    assert ops == ("Mul", "Add", "LeakyRelu") and args == (0, 1, 3, 2, 4)
    assert params == pytest.approx((0.1,))
    assert node.name == "act" and node.output.name == "act_out"
    assert node.meta.sources == ("mul", "add", "act")


def test_tree_with_repeated_input_lists_it_once():
    b = GraphBuilder()
    x, y = b.input("x", (4, 1)), b.input("y", (1, 5))
    silu = b.op("Mul", [x, b.op("Sigmoid", [x])])  # x is read twice
    clipped = b.op("Clip", [y, b.const(np.float32(-0.5)), b.const(np.float32(0.5))])
    b.output(b.op("Sub", [silu, b.op("Tanh", [clipped])], name="sub"))
    g = assert_parity(b, [FuseElementwise()], expect_modified=True)
    assert _ops(g) == [FUSED]
    node = g.nodes[0]
    assert node.inputs == (x, y) and node.output.type.shape == (4, 5)
    ops, args, params = _body(node)
    assert ops == ("Sigmoid", "Mul", "Clip", "Tanh", "Sub")
    assert args == (0, 0, 2, 1, 4, 3, 5)
    assert params == (-0.5, 0.5)


def test_lone_op_is_left_alone():
    b = GraphBuilder()
    b.output(b.op("Relu", [b.input("x", (3,))]))
    assert_parity(b, [FuseElementwise()], expect_modified=False)


def test_multi_use_intermediate_splits_the_groups():
    b = GraphBuilder()
    x = b.input("x", (3,))
    shared = b.op("Exp", [b.op("Neg", [x])], name="shared")
    b.output(b.op("Abs", [b.op("Add", [shared, x])]))
    b.output(b.op("Sqrt", [b.op("Abs", [shared])]))
    g = assert_parity(b, [FuseElementwise()], expect_modified=True)
    assert _ops(g) == [FUSED] * 3
    assert g.nodes[0].output.name == "shared_out"


def test_graph_output_intermediate_is_not_fused_away():
    b = GraphBuilder()
    x = b.input("x", (3,))
    middle = b.op("Tanh", [b.op("Neg", [x])], name="middle")
    b.output(middle)
    b.output(b.op("Exp", [middle]))
    g = assert_parity(b, [FuseElementwise()], expect_modified=True)
    assert _ops(g) == [FUSED, "Exp"]
    assert g.outputs[0] is g.nodes[0].output


def test_integer_and_float64_ops_fuse():
    b = GraphBuilder()
    x = b.input("x", (3,), np.int64)
    b.output(b.op("Mul", [b.op("Add", [x, b.const(np.array(1, np.int64))]), x]))
    g = assert_parity(b, [FuseElementwise()], expect_modified=True)
    assert _ops(g) == [FUSED] and g.nodes[0].output.type.dtype is DType.INT64
    b = GraphBuilder()
    x = b.input("x", (3,), np.float64)
    b.output(b.op("Relu", [b.op("Neg", [x])]))
    g = assert_parity(b, [FuseElementwise()], expect_modified=True)
    assert _ops(g) == [FUSED] and g.nodes[0].output.type.dtype is DType.FLOAT64


def test_mask_chain_fuses_with_typed_registers():
    """Where(Equal(mask, 0), -inf, Add(scores, bias)): int64 and bool registers inside one float loop."""
    b = GraphBuilder()
    scores, mask = b.input("scores", (2, 4, 8)), b.input("mask", (2, 1, 8), np.int64)
    is_pad = b.op("Equal", [mask, b.const(np.array(0, np.int64))])
    biased = b.op("Add", [scores, b.const(np.linspace(-1, 1, 8, dtype=np.float32))])
    b.output(b.op("Where", [is_pad, b.const(np.float32(-np.inf)), biased], name="masked"))
    inputs = {"scores": np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32),
              "mask": np.random.default_rng(1).integers(0, 2, (2, 1, 8))}
    g = assert_parity(b, [FuseElementwise()], inputs=inputs, expect_modified=True)
    assert _ops(g) == [FUSED]
    ops, args, params = _body(g.nodes[0])
    assert ops == ("Equal", "Add", "Where") and args == (0, 1, 2, 3, 5, 4, 6) and params == ()
    assert [v.name for v in g.nodes[0].inputs][:1] == ["mask"]


def test_cast_and_comparison_parameters_travel_in_the_body():
    b = GraphBuilder()
    x = b.input("x", (4, 5))
    nan = b.op("IsNaN", [x])
    inf = b.op("IsInf", [x], {"detect_negative": 0})
    flag = b.op("Cast", [b.op("Or", [nan, inf])], {"to": 1})
    b.output(b.op("Mul", [flag, b.op("Pow", [x, b.const(np.float32(2))])]))
    inputs = {"x": np.array([[np.nan, np.inf, -3, 0, 2]] * 4, np.float32)}
    g = assert_parity(b, [FuseElementwise()], inputs=inputs, expect_modified=True)
    ops, _, params = _body(g.nodes[0])
    assert ops == ("IsNaN", "IsInf", "Or", "Cast", "Pow", "Mul") and params == (1.0, 0.0, 1.0)


def test_variadic_min_max_and_mistyped_nodes_stay_alone():
    b = GraphBuilder()
    x, y, z = b.input("x", (3,)), b.input("y", (3,)), b.input("z", (3,))
    b.output(b.op("Neg", [b.op("Max", [x, y, z])]))
    assert_parity(b, [FuseElementwise()], expect_modified=False)
    b = GraphBuilder()
    x = b.input("x", (3,))
    b.output(b.op("Neg", [b.op("Max", [x, b.op("Abs", [x])])]))
    g = assert_parity(b, [FuseElementwise()], expect_modified=True)
    assert _body(g.nodes[0])[0] == ("Abs", "Max", "Neg")


def test_clip_with_runtime_bounds_is_not_fused():
    b = GraphBuilder()
    x, lo = b.input("x", (3,)), b.input("lo", ())
    b.output(b.op("Clip", [b.op("Neg", [x]), lo]))
    assert_parity(b, [FuseElementwise()], expect_modified=False)


def test_absorbs_ops_after_an_existing_fused_node_and_is_idempotent():
    b = GraphBuilder()
    x, y = b.input("x", (2, 3)), b.input("y", (2, 3))
    body = {"body_ops": ("Mul", "Sigmoid"), "body_args": (0, 0, 1), "body_params": Attr(AttrKind.FLOATS, ())}
    fused = b.op("FusedElementwise", [x], body, domain=DOMAIN, name="square_sigmoid", out_type=x.type)
    b.output(b.op("Relu", [b.op("Add", [y, fused])], name="relu"))
    g = assert_parity(b, [FuseElementwise()], expect_modified=True)
    assert _ops(g) == [FUSED]
    ops, args, _ = _body(g.nodes[0])
    assert g.nodes[0].inputs == (x, y)
    assert ops == ("Mul", "Sigmoid", "Add", "Relu") and args == (0, 0, 2, 1, 3, 4)
    assert_parity(g, [FuseElementwise()], expect_modified=False)

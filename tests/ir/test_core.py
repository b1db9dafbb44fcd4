"""The graph IR: use tracking, safe removal, the verifier's messages, the stable printer."""

import numpy as np
import pytest

from lowering.ir import Attr, AttrKind, DType, Graph, IRError, Node, TensorType, Value, print_graph, verify

pytestmark = pytest.mark.unit
T = TensorType(DType.FLOAT32, (2, 3))


def _graph():
    g = Graph(name="g")
    x = Value("x", T)
    g.inputs.append(x)
    a, b = Value("a", T), Value("b", T)
    g.append(Node("Relu", [x], [a], name="r1"))
    g.append(Node("Add", [a, a], [b], name="add"))
    g.outputs.append(b)
    g.output_names.append("y")
    return g, x, a, b


def test_uses_are_tracked_and_replaced():
    g, x, a, b = _graph()
    assert [(u.node.name, u.index) for u in a.uses()] == [("add", 0), ("add", 1)]
    a.replace_all_uses_with(x)
    assert a.uses() == () and len(x.uses()) == 3
    verify(g)


def test_replacing_a_graph_output_updates_the_graph_but_keeps_the_user_visible_name():
    g, x, a, b = _graph()
    b.replace_all_uses_with(a)
    assert g.outputs == [a] and g.output_names == ["y"]


def test_safe_remove_refuses_used_nodes_and_leaves_the_graph_unchanged():
    g, x, a, b = _graph()
    before = print_graph(g)
    with pytest.raises(ValueError, match="used by node 'add'"):
        g.remove(g.nodes[0])
    assert print_graph(g) == before
    with pytest.raises(ValueError, match="graph output"):
        g.remove(g.nodes[1])
    g.outputs[0] = a
    g.remove(g.nodes[1])
    assert a.uses() == () and len(g.nodes) == 1
    verify(g)


def test_verify_names_use_before_definition():
    g, x, a, b = _graph()
    g.nodes.reverse()
    with pytest.raises(IRError, match="node 'add' .*'a' is used before it is defined"):
        verify(g)


def test_verify_names_missing_types_and_duplicate_names():
    g, x, a, b = _graph()
    a.type = None
    with pytest.raises(IRError, match="'a' has no type"):
        verify(g)
    g, x, a, b = _graph()
    b.name = "a"
    with pytest.raises(IRError, match="name 'a' defined twice"):
        verify(g)


def test_attributes_are_typed():
    assert Attr.infer(3).kind is AttrKind.INT
    assert Attr.infer(0.5).kind is AttrKind.FLOAT
    assert Attr.infer([1, 2]).kind is AttrKind.INTS
    assert Attr.infer((1.0, 2)).kind is AttrKind.FLOATS
    assert Attr.infer(["a"]).kind is AttrKind.STRINGS
    with pytest.raises(TypeError):
        Attr(AttrKind.INT, 1.5)


def test_printer_is_stable_and_hides_constant_data():
    g, x, a, b = _graph()
    c = g.constant(np.ones((2, 3), np.float32), "ones")
    g.nodes[1].replace_input(1, c)
    g.nodes[1].set_attr("alpha", 0.1)
    text = print_graph(g)
    assert text == print_graph(g)
    assert "const %ones: float32[2,3]" in text
    assert "%b: float32[2,3] = Add(%a, %ones) {alpha=0.1}" in text
    assert "output y = %b" in text

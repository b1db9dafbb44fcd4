"""Memory planning: no two simultaneously live tensors share bytes; reuse beats the naive sum."""

import numpy as np
import pytest

from lowering.ir import DType, Graph, Node, TensorType, Value, verify
from lowering.memory import storage_roots
from lowering.passmanager import PassContext
from passes.memory.materialize_outputs import MaterializeOutputs
from passes.memory.plan_memory import plan

pytestmark = pytest.mark.unit
F32 = DType.FLOAT32


def _chain(length: int, shape=(1, 64)) -> Graph:
    g = Graph(name="chain")
    x = Value("x", TensorType(F32, shape))
    g.inputs.append(x)
    cur = x
    for i in range(length):
        out = Value(f"v{i}", TensorType(F32, shape))
        g.append(Node("Relu", [cur], [out], name=f"relu{i}"))
        cur = out
    g.outputs.append(cur)
    g.output_names.append("y")
    return g


def _check_no_overlap(p):
    for a in p.buffers:
        for b in p.buffers:
            if a is b or a.last < b.first or b.last < a.first:
                continue
            assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)


def test_chain_reuses_two_buffers():
    p = plan(_chain(6))
    _check_no_overlap(p)
    assert len(p.buffers) == 5  # the last value is the graph output, in the caller's buffer
    assert p.arena_size == 2 * 256
    assert p.naive_size == 5 * 256
    assert p.lower_bound == 2 * 256


def test_views_share_their_source_buffer():
    g = _chain(2, shape=(2, 32))
    mid = g.nodes[0].output
    flat = Value("flat", TensorType(F32, (64,)))
    g.insert_after(g.nodes[0], Node("Flatten", [mid], [flat], name="flatten"))
    out = Value("z", TensorType(F32, (64,)))
    g.append(Node("Relu", [flat], [out], name="relu_z"))
    g.outputs[0] = out
    verify(g)
    p = plan(g)
    assert p.offsets["flat"] == p.offsets["v0"]
    assert storage_roots(g)[id(flat)] is mid
    # v0 must stay live until its view is read by the last node
    (buf,) = [b for b in p.buffers if b.value == "v0"]
    assert buf.last == len(g.nodes) - 1
    _check_no_overlap(p)


def test_arena_between_lower_bound_and_naive_on_a_diamond():
    g = Graph(name="diamond")
    x = Value("x", TensorType(F32, (1, 1000)))
    g.inputs.append(x)
    a = Value("a", TensorType(F32, (1, 1000)))
    b = Value("b", TensorType(F32, (1, 10)))
    c = Value("c", TensorType(F32, (1, 1000)))
    d = Value("d", TensorType(F32, (1, 1000)))
    g.append(Node("Relu", [x], [a], name="n0"))
    g.append(Node("Relu", [a], [c], name="n1"))
    g.append(Node("Relu", [a], [d], name="n2"))
    g.append(Node("Add", [c, d], [b], name="n3"))
    g.outputs.append(b)
    g.output_names.append("b")
    p = plan(g)
    _check_no_overlap(p)
    assert p.lower_bound <= p.arena_size <= p.naive_size


def test_materialize_outputs_copies_aliasing_outputs():
    g = _chain(1)
    g.outputs.append(g.inputs[0])  # an input returned as an output
    g.output_names.append("x_out")
    g.outputs.append(g.outputs[0])  # the same value twice
    g.output_names.append("y_again")
    result = MaterializeOutputs().run(g, PassContext())
    verify(g)
    assert result.modified and len(result.changes) == 2
    assert [n.op for n in g.nodes].count("Copy") == 2
    assert len({id(v) for v in g.outputs}) == 3
    from lowering.reference import run_graph

    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    out = run_graph(g, {"x": x})
    np.testing.assert_array_equal(out["x_out"], x)
    np.testing.assert_array_equal(out["y_again"], np.maximum(x, 0))

"""Importer gaps the node suite showed: models at opsets after 21, and CastLike."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, defs, helper

from lowering.errors import LoweringError
from lowering.onnx.importer import MAX_OPSET, NEW_OPS, NEWER_OPSETS, NEWEST_OPSET, import_model
from lowering.reference.interpreter import run_graph

pytestmark = pytest.mark.unit


def _signature(schema):
    return ({n: (a.type, a.default_value.SerializeToString()) for n, a in schema.attributes.items()},
            [(i.name, i.option) for i in schema.inputs], [(o.name, o.option) for o in schema.outputs])


def _type_params(schema):
    return {t.type_param_str: set(t.allowed_type_strs) for t in schema.type_constraints}


#: Ops whose revision after MAX_OPSET only dropped element types (opset 28: the integer ones).
NARROWED = frozenset({"ReduceLogSum", "ReduceLogSumExp"})


@pytest.mark.parametrize("op", sorted(NEWER_OPSETS))
def test_newer_opset_table_matches_onnx_defs(op):
    """Every revision after MAX_OPSET of a listed op keeps its inputs and outputs, adds only the listed
    attributes, and only widens the element types (each type its opset-21 form took is still accepted)."""
    old = defs.get_schema(op, MAX_OPSET)
    old_attrs, old_ins, old_outs = _signature(old)
    old_types = set().union(*_type_params(old).values())
    revised = False
    for version in range(MAX_OPSET + 1, NEWEST_OPSET + 1):
        new = defs.get_schema(op, version)
        if new.since_version != version:
            continue
        revised = True
        attrs, ins, outs = _signature(new)
        assert ins == old_ins and outs == old_outs
        assert set(attrs) - set(old_attrs) <= set(NEWER_OPSETS[op])
        assert all(attrs[a] == old_attrs[a] for a in old_attrs)
        new_types = set().union(*_type_params(new).values())
        if op in NARROWED:  # the revision dropped types: what it still takes means what it meant
            assert "tensor(float)" in new_types and new_types <= old_types | {"tensor(bfloat16)"}
        else:
            assert old_types <= new_types
    assert revised  # the table lists only ops that were revised


def test_every_op_revised_after_21_that_the_reference_runs_is_judged():
    """A new revision of an op the compiler supports must be added to NEWER_OPSETS (if only its types
    changed) or stay refused: this lists the revised ops the table does not cover."""
    from lowering.reference.ops import REGISTRY

    revised = {s.name for s in defs.get_all_schemas_with_history()
               if s.domain == "" and MAX_OPSET < s.since_version <= NEWEST_OPSET}
    assert sorted((revised & set(REGISTRY)) - set(NEWER_OPSETS) - set(NEW_OPS)) == []


@pytest.mark.parametrize("op", sorted(NEW_OPS))
def test_new_ops_are_at_their_only_definition(op):
    """An op introduced after MAX_OPSET imports at the definition the reference implements, which must be
    its first and (up to NEWEST_OPSET) only one."""
    versions = {defs.get_schema(op, v).since_version for v in range(NEW_OPS[op], NEWEST_OPSET + 1)}
    assert versions == {NEW_OPS[op]} and NEW_OPS[op] > MAX_OPSET
    with pytest.raises(defs.SchemaError):
        defs.get_schema(op, MAX_OPSET)


def _model(nodes, inputs, outputs, opset):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_a_model_at_a_newer_opset_imports_and_runs():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])
    model = _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                   [x], [y], opset=NEWEST_OPSET)
    graph = import_model(model)
    assert graph.opset == MAX_OPSET
    data = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out = run_graph(graph, {"x": data})
    np.testing.assert_array_equal(next(iter(out.values())), [[[[5, 7], [13, 15]]]])


def test_a_new_attribute_changing_the_meaning_is_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.INT8, [4])
    node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], precision=TensorProto.FLOAT16)
    model = _model([helper.make_node("Constant", [], ["s"], value_float=0.5), node], [x], [y], opset=23)
    with pytest.raises(LoweringError, match=r"QuantizeLinear .*precision"):
        import_model(model)


def test_newer_than_newest_is_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [x],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], opset=NEWEST_OPSET)
    model.opset_import[0].version = NEWEST_OPSET + 1
    with pytest.raises(LoweringError, match=f"opset {NEWEST_OPSET + 1} is newer"):
        import_model(model)


def test_castlike_imports_as_a_cast_to_the_second_inputs_type():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    like = helper.make_tensor_value_info("like", TensorProto.INT32, [1])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [3])
    model = _model([helper.make_node("CastLike", ["x", "like"], ["y"])], [x, like], [y], opset=21)
    onnx.checker.check_model(model)
    graph = import_model(model)
    assert [n.op for n in graph.nodes] == ["Cast"]
    out = run_graph(graph, {"x": np.array([1.5, -2.7, 3.0], np.float32), "like": np.zeros(1, np.int32)})
    got = next(iter(out.values()))
    assert got.dtype == np.int32 and got.tolist() == [1, -2, 3]


def test_a_model_without_standard_ops_names_them_as_unsupported():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml")], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("ai.onnx.ml", 1)])
    with pytest.raises(LoweringError, match=r"unsupported ops: ai.onnx.ml::Binarizer"):
        import_model(model)

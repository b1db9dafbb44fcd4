"""The reference semantics of the indexing and data-movement ops agree with ONNX Runtime.

Every case of ``data_op_models`` is imported (no passes) and run with the reference interpreter; the
constant-folding pass evaluates nodes with the same functions, so this also pins down what folding
produces. Out-of-range gather indices must be refused, as ONNX Runtime refuses them.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowering.ir import Node, TensorType, Value
from lowering.onnx.importer import import_model
from lowering.passmanager import PassContext, PassManager
from lowering.reference import ReferenceError, evaluate_node, run_graph
from passes.cleanup.fold_constants import FoldConstants
from passes.cleanup.fold_shapes import FoldShapes
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

from .data_op_models import ALL_CASES, Case, In, assert_matches, f32, i64, ort_outputs

pytestmark = pytest.mark.unit


def reference_outputs(case: Case) -> list[np.ndarray]:
    graph = import_model(case.model(), name=case.id)
    outs = run_graph(graph, case.feeds())
    return [outs[name] for name in graph.output_names]


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_reference_matches_onnxruntime(case):
    assert_matches(case, reference_outputs(case), ort_outputs(case))


@pytest.mark.parametrize("op, axis, index", [("Gather", 0, 5), ("Gather", 1, -4), ("GatherElements", 0, 5)])
def test_out_of_range_indices_are_refused(op, axis, index):
    x = Value("x", TensorType.of(np.zeros((5, 3), np.float32)))
    node = Node(op, [x, Value("i")], [Value("y")], name="g")
    node.set_attr("axis", axis)
    indices = np.full((1, 3), index, np.int64) if op == "GatherElements" else np.array([0, index], np.int64)
    with pytest.raises(ReferenceError, match="out of range|out of bounds"):
        evaluate_node(node, [np.zeros((5, 3), np.float32), indices])


def test_split_num_outputs_uneven_and_topk_unsorted():
    cases = [
        Case("split_uneven", "Split", [In("x", f32(2, 10))], {"axis": 1, "num_outputs": 4},
             outputs=[np.float32] * 4, opset=18),
        Case("topk_unsorted", "TopK", [In("x", f32(3, 12)), In("k", i64(5), True)], {"sorted": 0},
             outputs=[np.float32, np.int64], unordered=True),
    ]
    for case in cases:
        assert_matches(case, reference_outputs(case), ort_outputs(case))


# --- folding ------------------------------------------------------------------------------------------

def _all_constant(case: Case) -> Case:
    inputs = [None if i is None else In(i.name, i.data, True) for i in case.inputs]
    return Case(case.id, case.op, inputs, case.attrs, case.outputs, case.opset, case.unordered)


FOLD_CASES = [c for c in ALL_CASES if c.id.endswith(("_0", "_i64", "_bool", "_up", "sizes"))
              or c.op in ("Split", "TopK", "GatherND", "Pad")]


@pytest.mark.parametrize("case", FOLD_CASES, ids=lambda c: c.id)
def test_constant_folding_matches_onnxruntime(case):
    """With every input constant the simplification folds the node away; the constants are ONNX Runtime's."""
    case = _all_constant(case)
    graph = import_model(case.model(), name=case.id)
    PassManager([FoldShapes(), FoldConstants()]).run(graph, PassContext(verify_each=True))
    assert not graph.nodes, f"{case.id}: not folded: {[n.label for n in graph.nodes]}"
    assert_matches(case, [v.const for v in graph.outputs], ort_outputs(case))


def test_noop_slice_pad_tile_are_removed():
    b = GraphBuilder(opset=18)
    x = b.input("x", (2, 5, 4))
    big = np.iinfo(np.int64).max
    full = b.op("Slice", [x, b.const(i64(0, -5)), b.const(i64(big, 4)), b.const(i64(0, -1))], name="full")
    rev = b.op("Slice", [full, b.const(i64(-1)), b.const(i64(-big)), b.const(i64(2)), b.const(i64(-1))],
               name="reversed")
    flat = b.op("Pad", [rev, b.const(i64(0, 0, 0, 0, 0, 0))], name="zero_pad")
    shifted = b.op("Pad", [flat, b.const(i64(0, 0, 1, 0, 0, -1))], name="shift")
    b.output(b.op("Tile", [shifted, b.const(i64(1, 1, 1))], name="tile1"))
    graph = assert_parity(b, [FoldShapes()], expect_modified=True)
    assert [n.name for n in graph.nodes] == ["reversed", "shift"]

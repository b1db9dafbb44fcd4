"""If, Loop and Scan unrolled at import (``lowering/onnx/control_flow.py``).

Models built with onnx.helper, compiled for the cpu target and compared with ONNX Runtime: Scan with
two states, reversed input and output directions and non-zero axes; Loop with a constant trip count, scan
outputs and a condition its body computes from constants; If with a constant and with a run-time
condition (computed both ways and selected); If nested in a Loop. The unrolled graph holds no control
flow, and what cannot be unrolled is refused in one line naming the node.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lowering.errors import LoweringError
from lowering.onnx import control_flow
from lowering.onnx.backend import CpuBackend
from lowering.onnx.importer import import_model

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _vi(name: str, elem: int, shape: list[int] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           opset: int = 17, full_check: bool = True) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=full_check)
    return model


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(
        name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape, array.reshape(-1).tolist()))


def _compare(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)
    got = list(CpuBackend.run_model(model, [feeds[i.name] for i in model.graph.input]))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    ops = import_model(model, name="m").op_counts()
    assert not set(ops) & control_flow.CONTROL_FLOW, ops
    return want


def _rng_feeds(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


# ------------------------------------------------------------------------------------------------ Scan


@pytest.mark.target_cpu
def test_scan_two_states_reverse_directions_and_axes_match_onnxruntime():
    # states: a running sum [2] and a running product-ish [2]; scan inputs: x [2, 4] scanned along axis 1
    # (reversed), w [4, 2] along axis 0 (forward); outputs: the sum stacked along axis 1, reversed, and
    # tanh(prod) along axis 0
    body = helper.make_graph(
        [helper.make_node("Add", ["sum_in", "x_t"], ["sum_out"]),
         helper.make_node("Mul", ["prod_in", "w_t"], ["m"]),
         helper.make_node("Add", ["m", "bias"], ["prod_out"]),  # 'bias' is an outer-scope value
         helper.make_node("Identity", ["sum_out"], ["y_t"]),
         helper.make_node("Tanh", ["prod_out"], ["z_t"])],
        "body",
        [_vi("sum_in", F, [2]), _vi("prod_in", F, [2]), _vi("x_t", F, [2]), _vi("w_t", F, [2])],
        [_vi("sum_out", F, [2]), _vi("prod_out", F, [2]), _vi("y_t", F, [2]), _vi("z_t", F, [2])])
    scan = helper.make_node(
        "Scan", ["s0", "p0", "x", "w"], ["s", "p", "y", "z"], name="scan", body=body, num_scan_inputs=2,
        scan_input_axes=[1, 0], scan_input_directions=[1, 0], scan_output_axes=[1, -2],
        scan_output_directions=[1, 0])
    model = _model(
        [_const("bias", np.array([0.5, -0.25], np.float32)), scan],
        [_vi("s0", F, [2]), _vi("p0", F, [2]), _vi("x", F, [2, 4]), _vi("w", F, [4, 2])],
        [_vi("s", F, [2]), _vi("p", F, [2]), _vi("y", F, [2, 4]), _vi("z", F, [4, 2])])
    feeds = _rng_feeds({"s0": [2], "p0": [2], "x": [2, 4], "w": [4, 2]})
    want = _compare(model, feeds)
    np.testing.assert_allclose(want[0], feeds["s0"] + feeds["x"].sum(axis=1), rtol=1e-5)  # the test's test


# ------------------------------------------------------------------------------------------------ Loop


def _loop_body(extra: list[onnx.NodeProto], cond_out: str) -> onnx.GraphProto:
    """acc_out = acc_in * 0.5 + x * i; scan output: acc_out + 1."""
    return helper.make_graph(
        [helper.make_node("Cast", ["i"], ["i_f"], to=F),
         helper.make_node("Mul", ["x", "i_f"], ["xi"]),  # 'x' is the outer graph's input
         helper.make_node("Mul", ["acc_in", "half"], ["decayed"]),
         helper.make_node("Add", ["decayed", "xi"], ["acc_out"]),
         helper.make_node("Add", ["acc_out", "one"], ["scan_out"]), *extra],
        "body", [_vi("i", I64, []), _vi("cond_in", B, []), _vi("acc_in", F, [3])],
        [_vi(cond_out, B, []), _vi("acc_out", F, [3]), _vi("scan_out", F, [3])],
        initializer=[helper.make_tensor("half", F, [], [0.5]), helper.make_tensor("one", F, [], [1.0])])


@pytest.mark.target_cpu
def test_loop_with_constant_trip_count_and_scan_outputs_matches_onnxruntime():
    body = _loop_body([helper.make_node("Identity", ["cond_in"], ["cond_out"])], "cond_out")
    model = _model(
        [_const("M", np.array(4, np.int64)), _const("c", np.array(True)),
         helper.make_node("Loop", ["M", "c", "acc0"], ["acc", "scans"], name="loop", body=body)],
        [_vi("x", F, [3]), _vi("acc0", F, [3])], [_vi("acc", F, [3]), _vi("scans", F, [4, 3])])
    _compare(model, _rng_feeds({"x": [3], "acc0": [3]}))


@pytest.mark.target_cpu
def test_loop_stops_when_the_condition_its_body_computes_turns_false():
    # trip count 10, no condition input; the body's condition is i < 2: iterations 0, 1, 2 run
    extra = [_const("two", np.array(2, np.int64)), helper.make_node("Less", ["i", "two"], ["keep"])]
    body = _loop_body(extra, "keep")
    model = _model(
        [_const("M", np.array(10, np.int64)),
         helper.make_node("Loop", ["M", "", "acc0"], ["acc", "scans"], name="loop", body=body)],
        [_vi("x", F, [3]), _vi("acc0", F, [3])], [_vi("acc", F, [3]), _vi("scans", F, [3, 3])])
    want = _compare(model, _rng_feeds({"x": [3], "acc0": [3]}))
    assert want[1].shape == (3, 3)


@pytest.mark.target_cpu
def test_loop_trip_count_folded_from_a_static_shape():
    # M = Shape(x)[0] * 2: computable at compile time from x's static shape
    body = _loop_body([helper.make_node("Identity", ["cond_in"], ["cond_out"])], "cond_out")
    model = _model(
        [helper.make_node("Shape", ["x"], ["shape"], start=0, end=1),
         _const("two", np.array([2], np.int64)), helper.make_node("Mul", ["shape", "two"], ["M1"]),
         helper.make_node("Squeeze", ["M1"], ["M"]),
         helper.make_node("Loop", ["M", "", "acc0"], ["acc", "scans"], name="loop", body=body)],
        [_vi("x", F, [3]), _vi("acc0", F, [3])], [_vi("acc", F, [3]), _vi("scans", F, [6, 3])])
    _compare(model, _rng_feeds({"x": [3], "acc0": [3]}))


# -------------------------------------------------------------------------------------------------- If


def _branches(out_shape: list[int]) -> tuple[onnx.GraphProto, onnx.GraphProto]:
    then_branch = helper.make_graph([helper.make_node("Mul", ["a", "b"], ["t"])], "then", [],
                                    [_vi("t", F, out_shape)])
    else_branch = helper.make_graph([helper.make_node("Sub", ["a", "b"], ["e0"]),
                                     helper.make_node("Relu", ["e0"], ["e"])], "else", [],
                                    [_vi("e", F, out_shape)])
    return then_branch, else_branch


@pytest.mark.target_cpu
@pytest.mark.parametrize("value", [True, False])
def test_if_with_a_constant_condition_inlines_the_taken_branch(value):
    then_branch, else_branch = _branches([2, 3])
    model = _model(
        [_const("c", np.array(value)),
         helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch)],
        [_vi("a", F, [2, 3]), _vi("b", F, [2, 3])], [_vi("y", F, [2, 3])])
    _compare(model, _rng_feeds({"a": [2, 3], "b": [2, 3]}))
    ops = import_model(model, name="m").op_counts()
    assert ("Mul" in ops) == value and ("Relu" in ops) != value and "Where" not in ops


@pytest.mark.target_cpu
@pytest.mark.parametrize("cond_shape", [[], [1]])
@pytest.mark.parametrize("value", [True, False])
def test_if_with_a_run_time_condition_computes_both_and_selects(cond_shape, value):
    then_branch, else_branch = _branches([2, 3])
    model = _model(
        [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch)],
        [_vi("c", B, cond_shape), _vi("a", F, [2, 3]), _vi("b", F, [2, 3])], [_vi("y", F, [2, 3])])
    feeds = _rng_feeds({"a": [2, 3], "b": [2, 3]}, seed=3)
    feeds["c"] = np.full(cond_shape, value)
    _compare(model, feeds)
    assert "Where" in import_model(model, name="m").op_counts()


@pytest.mark.target_cpu
@pytest.mark.parametrize("flag", [True, False])
def test_if_nested_in_a_loop(flag):
    # per iteration: an If on i % 2 == 0 (folded per iteration) holding an If on the run-time 'flag'
    inner_then = helper.make_graph([helper.make_node("Add", ["acc_in", "x"], ["it"])], "it", [],
                                   [_vi("it", F, [3])])
    inner_else = helper.make_graph([helper.make_node("Sub", ["acc_in", "x"], ["ie"])], "ie", [],
                                   [_vi("ie", F, [3])])
    even = helper.make_graph(
        [helper.make_node("If", ["flag"], ["ev"], name="inner", then_branch=inner_then,
                          else_branch=inner_else)],
        "even", [], [_vi("ev", F, [3])])
    odd = helper.make_graph([helper.make_node("Mul", ["acc_in", "x"], ["od"])], "odd", [],
                            [_vi("od", F, [3])])
    body = helper.make_graph(
        [_const("two", np.array(2, np.int64)), _const("zero", np.array(0, np.int64)),
         helper.make_node("Mod", ["i", "two"], ["r"]), helper.make_node("Equal", ["r", "zero"], ["is_even"]),
         helper.make_node("If", ["is_even"], ["acc_out"], name="parity", then_branch=even, else_branch=odd),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["acc_out"], ["scan_out"])],
        "body", [_vi("i", I64, []), _vi("cond_in", B, []), _vi("acc_in", F, [3])],
        [_vi("cond_out", B, []), _vi("acc_out", F, [3]), _vi("scan_out", F, [3])])
    model = _model(
        [_const("M", np.array(5, np.int64)),
         helper.make_node("Loop", ["M", "", "acc0"], ["acc", "scans"], name="loop", body=body)],
        [_vi("flag", B, []), _vi("x", F, [3]), _vi("acc0", F, [3])],
        [_vi("acc", F, [3]), _vi("scans", F, [5, 3])])
    feeds = _rng_feeds({"x": [3], "acc0": [3]}, seed=5)
    feeds["flag"] = np.array(flag)
    _compare(model, feeds)
    ops = import_model(model, name="m").op_counts()
    assert ops.get("Where") == 3  # the parity Ifs folded (3 even iterations); the flag Ifs selected


# ------------------------------------------------------------------------------------------- refusals


def _refused(model: onnx.ModelProto, pattern: str) -> None:
    with pytest.raises(LoweringError, match=pattern) as info:
        import_model(model, name="m")
    assert "\n" not in str(info.value)


def test_loop_with_a_run_time_trip_count_is_refused_naming_the_node_and_input():
    body = _loop_body([helper.make_node("Identity", ["cond_in"], ["cond_out"])], "cond_out")
    model = _model([helper.make_node("Loop", ["M", "", "acc0"], ["acc", "scans"], name="loop", body=body)],
                   [_vi("M", I64, []), _vi("x", F, [3]), _vi("acc0", F, [3])],
                   [_vi("acc", F, [3]), _vi("scans", F, [None, 3])])
    _refused(model, r"^m: Loop 'loop': trip count depends on input 'M'; only loops with a trip count known "
                    r"at compile time are unrolled$")


def test_loop_with_a_run_time_condition_is_refused():
    extra = [helper.make_node("ReduceSum", ["acc_out"], ["total"], keepdims=0),
             _const("limit", np.array(3.0, np.float32)),
             helper.make_node("Less", ["total", "limit"], ["keep"])]
    body = _loop_body(extra, "keep")
    model = _model([_const("M", np.array(4, np.int64)),
                    helper.make_node("Loop", ["M", "", "acc0"], ["acc", "scans"], name="loop", body=body)],
                   [_vi("x", F, [3]), _vi("acc0", F, [3])], [_vi("acc", F, [3]), _vi("scans", F, [None, 3])])
    _refused(model, r"^m: Loop 'loop': the condition its body computes at iteration 0 depends on input")


def test_too_many_iterations_are_refused_naming_the_node_and_count():
    body = _loop_body([helper.make_node("Identity", ["cond_in"], ["cond_out"])], "cond_out")
    model = _model([_const("M", np.array(5000, np.int64)),
                    helper.make_node("Loop", ["M", "", "acc0"], ["acc", "scans"], name="big", body=body)],
                   [_vi("x", F, [3]), _vi("acc0", F, [3])], [_vi("acc", F, [3]), _vi("scans", F, [None, 3])])
    _refused(model, rf"Loop 'big': 5000 iterations; at most {control_flow.MAX_ITERATIONS} are unrolled")


def test_run_time_if_whose_branches_disagree_is_refused():
    then_branch = helper.make_graph([helper.make_node("Identity", ["a"], ["t"])], "then", [],
                                    [_vi("t", F, [2, 3])])
    else_branch = helper.make_graph([helper.make_node("ReduceSum", ["a"], ["e"], keepdims=0)], "else", [],
                                    [_vi("e", F, [])])
    model = _model(
        [helper.make_node("If", ["c"], ["y"], name="pick", then_branch=then_branch, else_branch=else_branch)],
        [_vi("c", B, []), _vi("a", F, [2, 3])], [_vi("y", F, [2, 3])], full_check=False)
    _refused(model, r"^m: If 'pick': its condition is only known at run time and its branches give "
                    r"output 0 as float\[2,3\] and float\[\]")


@pytest.mark.target_cpu
def test_scan_of_opset_8_with_a_batch_axis_matches_onnxruntime():
    # opset 8: every input and output has a batch axis 0, the sequence axis is 1; no sequence_lens
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Sigmoid", ["s_out"], ["y_t"])],
        "body", [_vi("s_in", F, [2]), _vi("x_t", F, [2])], [_vi("s_out", F, [2]), _vi("y_t", F, [2])])
    scan = helper.make_node("Scan", ["", "s0", "x"], ["s", "y"], name="scan8", body=body, num_scan_inputs=1,
                            directions=[1])
    model = _model([scan], [_vi("s0", F, [3, 2]), _vi("x", F, [3, 4, 2])],
                   [_vi("s", F, [3, 2]), _vi("y", F, [3, 4, 2])], opset=8)
    _compare(model, _rng_feeds({"s0": [3, 2], "x": [3, 4, 2]}, seed=7))


@pytest.mark.target_cpu
def test_scan_nested_in_a_loop_over_a_value_the_loop_body_computes():
    # the Scan's input is made in the Loop body: its length is known only after the Loop is unrolled
    # (a second pass, after shape inference)
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["acc", "row"], ["acc2"]), helper.make_node("Identity", ["acc2"], ["out"])],
        "scan_body", [_vi("acc", F, [3]), _vi("row", F, [3])], [_vi("acc2", F, [3]), _vi("out", F, [3])])
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["i_f"], to=F), helper.make_node("Mul", ["x", "i_f"], ["xi"]),
         helper.make_node("Scan", ["v_in", "xi"], ["v_out", "rows"], name="inner", body=scan_body,
                          num_scan_inputs=1),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [_vi("i", I64, []), _vi("cond_in", B, []), _vi("v_in", F, [3])],
        [_vi("cond_out", B, []), _vi("v_out", F, [3]), _vi("rows", F, [2, 3])])
    model = _model(
        [_const("M", np.array(3, np.int64)),
         helper.make_node("Loop", ["M", "", "v0"], ["v", "all_rows"], name="loop", body=body)],
        [_vi("x", F, [2, 3]), _vi("v0", F, [3])], [_vi("v", F, [3]), _vi("all_rows", F, [3, 2, 3])])
    _compare(model, _rng_feeds({"x": [2, 3], "v0": [3]}, seed=9))


def test_an_unrolled_model_over_the_node_limit_is_refused_naming_the_node(monkeypatch):
    monkeypatch.setattr(control_flow, "MAX_NODES", 50)
    body = _loop_body([helper.make_node("Identity", ["cond_in"], ["cond_out"])], "cond_out")
    model = _model([_const("M", np.array(20, np.int64)),
                    helper.make_node("Loop", ["M", "", "acc0"], ["acc", "scans"], name="wide", body=body)],
                   [_vi("x", F, [3]), _vi("acc0", F, [3])], [_vi("acc", F, [3]), _vi("scans", F, [20, 3])])
    _refused(model, r"^m: Loop 'wide': unrolled, the model would have more than 50 nodes")

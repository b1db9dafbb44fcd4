"""The cpu target's neural-network ops against ONNX Runtime: ConvTranspose, 3-D and Lp pooling, MaxPool's
Indices output, LRN, Col2Im, MaxUnpool, ReverseSequence, Det, bool ReduceMax/ReduceMin, and training-mode
BatchNormalization (against the ONNX reference evaluator: ONNX Runtime's inference build has no training
mode).

Each family is one compiled model holding all its cases (each lowering compiles C), run at 1 and 2
threads. The reference interpreter is checked on the same cases, and the run-time operand checks (a
block shape, an index or a length that contradicts the compiled model) fail the run with a status.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from lowering.ir import DType, TensorType, Value
from lowering.onnx.importer import import_model
from lowering.reference import run_graph
from targets.cpu.target import CpuTarget
from tests.reference import data_op_models as cases_
from tests.reference.data_op_models import Case, In, assert_matches, f32, i64

from .test_cpu_index import _node, combined_model, compile_cpu, run_build

pytestmark = pytest.mark.target_cpu

RNG = np.random.default_rng(77)
OPSET = 18


def _case(id_, op, inputs, attrs=None, outputs=None):
    return Case(id_, op, inputs, attrs or {}, outputs=outputs, opset=OPSET)


def conv_transpose_cases() -> list[Case]:
    return [
        _case("ct_1d", "ConvTranspose", [In("x", f32(2, 3, 7)), In("w", f32(3, 4, 3))], {"strides": [2]}),
        _case("ct_2d_pads", "ConvTranspose", [In("x", f32(1, 4, 5, 6)), In("w", f32(4, 3, 3, 2), True),
                                              In("b", f32(3), True)],
              {"strides": [3, 2], "pads": [1, 0, 2, 1], "output_padding": [1, 1]}),
        _case("ct_2d_dil_group", "ConvTranspose", [In("x", f32(2, 6, 4, 5)), In("w", f32(6, 2, 3, 3)),
                                                   In("b", f32(6))],
              {"group": 3, "dilations": [2, 1], "strides": [1, 2]}),
        _case("ct_2d_output_shape", "ConvTranspose",
              [In("x", f32(1, 2, 3, 3)), In("w", f32(2, 2, 3, 3), True)],
              {"strides": [3, 2], "output_shape": [10, 8]}),
        _case("ct_2d_same_upper", "ConvTranspose",
              [In("x", f32(1, 2, 4, 4)), In("w", f32(2, 1, 2, 2), True)],
              {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
        _case("ct_3d", "ConvTranspose", [In("x", f32(1, 2, 3, 4, 5)), In("w", f32(2, 3, 2, 3, 2), True)],
              {"strides": [1, 2, 2], "pads": [0, 1, 0, 1, 0, 1]}),
        _case("ct_big", "ConvTranspose", [In("x", f32(2, 16, 20, 20)), In("w", f32(16, 8, 4, 4), True),
                                          In("b", f32(8), True)], {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ]


def pool_cases() -> list[Case]:
    x3 = f32(2, 3, 9, 8, 10)
    return [
        _case("max3d", "MaxPool", [In("x", x3)], {"kernel_shape": [3, 2, 3], "strides": [2, 1, 2],
                                                  "pads": [1, 0, 1, 1, 1, 0]}),
        _case("max3d_ceil_dil", "MaxPool", [In("x", x3)], {"kernel_shape": [2, 2, 3], "strides": [3, 2, 2],
                                                           "dilations": [2, 1, 2], "ceil_mode": 1}),
        _case("avg3d", "AveragePool", [In("x", x3)], {"kernel_shape": [3, 3, 2], "strides": [2, 2, 2],
                                                      "pads": [1, 1, 0, 1, 1, 1]}),
        _case("avg3d_incl_ceil", "AveragePool", [In("x", x3)],
              {"kernel_shape": [3, 3, 3], "strides": [2, 2, 2], "pads": [1, 1, 1, 1, 1, 1],
               "count_include_pad": 1, "ceil_mode": 1}),
        _case("lp1d", "LpPool", [In("x", f32(2, 3, 17))], {"kernel_shape": [3], "strides": [2], "p": 1}),
        _case("lp2d", "LpPool", [In("x", f32(1, 4, 11, 12))], {"kernel_shape": [3, 2], "pads": [1, 1, 1, 0],
                                                              "strides": [2, 2]}),
        _case("lp2d_p3_dil", "LpPool", [In("x", f32(1, 2, 9, 9))], {"kernel_shape": [2, 2], "p": 3,
                                                                   "dilations": [2, 2]}),
        _case("lp3d", "LpPool", [In("x", f32(1, 2, 6, 7, 8))],
              {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
        _case("argmax1d", "MaxPool", [In("x", f32(2, 3, 15))], {"kernel_shape": [3], "strides": [2],
                                                                "pads": [1, 1]},
              outputs=[np.float32, np.int64]),
        _case("argmax2d", "MaxPool", [In("x", f32(2, 3, 10, 9))], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                                   "pads": [1, 1, 1, 1]},
              outputs=[np.float32, np.int64]),
        _case("argmax2d_col", "MaxPool", [In("x", f32(1, 2, 7, 6))],
              {"kernel_shape": [2, 2], "strides": [2, 2], "storage_order": 1},
              outputs=[np.float32, np.int64]),
        _case("argmax3d", "MaxPool", [In("x", f32(1, 2, 5, 6, 7))], {"kernel_shape": [2, 3, 2],
                                                                     "strides": [1, 2, 2]},
              outputs=[np.float32, np.int64]),
    ]


def misc_cases() -> list[Case]:
    unpool_x = f32(2, 3, 3, 4)
    # indices of a real 2x2/2 max pooling of a [2, 3, 6, 8] tensor (unique, inside the unpooled shape)
    pooled = onnx_maxpool_indices(f32(2, 3, 6, 8))
    lens = np.array([3, 0, 5, 1], np.int64)
    return [
        _case("lrn4d", "LRN", [In("x", f32(2, 7, 4, 5))],
              {"size": 3, "alpha": 1e-2, "beta": 0.6, "bias": 1.5}),
        _case("lrn_wide", "LRN", [In("x", f32(1, 6, 3, 3))], {"size": 5}),
        _case("col2im_2d", "Col2Im", [In("x", f32(2, 2 * 6, 20)), In("img", i64(5, 6), True),
                                      In("blk", i64(2, 3), True)], {"strides": [1, 1], "pads": [0, 1, 0, 0]}),
        _case("col2im_strided", "Col2Im", [In("x", f32(1, 3 * 4, 9)), In("img", i64(7, 7), True),
                                           In("blk", i64(2, 2), True)],
              {"strides": [3, 3], "dilations": [2, 1], "pads": [1, 0, 1, 2]}),
        _case("unpool", "MaxUnpool", [In("x", unpool_x), In("i", pooled)], {"kernel_shape": [2, 2],
                                                                            "strides": [2, 2]}),
        _case("revseq_time", "ReverseSequence", [In("x", f32(5, 4, 3)), In("l", lens)],
              {"batch_axis": 1, "time_axis": 0}),
        _case("revseq_batch_i64", "ReverseSequence", [In("x", cases_.ints(4, 6, 2)), In("l", lens)],
              {"batch_axis": 0, "time_axis": 1}),
        _case("det2d", "Det", [In("x", f32(4, 4))]),
        _case("det_batch", "Det", [In("x", f32(3, 2, 5, 5))]),
        _case("det_singular", "Det", [In("x", np.array([[1, 2, 3], [2, 4, 6], [0, 1, 0]], np.float32))]),
    ]


def bool_reduce_cases() -> list[Case]:
    """ReduceMax (any) and ReduceMin (all) of bool tensors (opset 20; run-time axes: the node tests)."""
    return [
        Case("reducemax_bool", "ReduceMax", [In("x", RNG.random((3, 4, 5)) < 0.2), In("a", i64(1), True)],
             opset=20),
        Case("reducemin_bool", "ReduceMin", [In("x", RNG.random((3, 4, 5)) < 0.8), In("a", i64(0, 2), True)],
             {"keepdims": 0}, opset=20),
        Case("reducemin_bool_all", "ReduceMin", [In("x", RNG.random((4, 3)) < 0.9)], opset=20),
    ]


def onnx_maxpool_indices(x: np.ndarray) -> np.ndarray:
    """The Indices output of a 2x2 stride-2 MaxPool of ``x`` (flat positions into x)."""
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    k = win.argmax(axis=-1)
    rows = np.arange(h // 2)[:, None] * 2 + k // 2
    cols = np.arange(w // 2)[None, :] * 2 + k % 2
    return ((np.arange(n * c).reshape(n, c, 1, 1) * h + rows) * w + cols).astype(np.int64)


FAMILIES = {"conv_transpose": conv_transpose_cases, "pool": pool_cases, "misc": misc_cases,
            "bool_reduce": bool_reduce_cases}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_reference_matches_onnxruntime(family):
    for case in FAMILIES[family]():
        graph = import_model(case.model(), name=case.id)
        outs = run_graph(graph, case.feeds())
        got = [outs[name] for name in graph.output_names]
        assert_matches(case, got, cases_.ort_outputs(case), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cpu_matches_onnxruntime(family):
    cases = FAMILIES[family]()
    model, feeds, names = combined_model(cases)
    graph, build = compile_cpu(model)
    computed = {k["op"] for k in build.kernels}
    assert {c.op for c in cases} <= computed, f"not compiled as kernels: {({c.op for c in cases}) - computed}"
    want = dict(zip(names, cases_.ort_outputs_of(model, feeds)))
    for threads in (1, 2):
        got = run_build(graph, build, feeds, threads)
        for case in cases:
            outs = [n for n in names if n.startswith(f"{case.id}.")]
            assert_matches(case, [got[n] for n in outs], [want[n] for n in outs], rtol=1e-4, atol=1e-5)


def test_conv_transpose_direct_loop_nest_matches_onnxruntime(monkeypatch):
    """The loop nest ConvTranspose falls back to when the GEMM's column buffer would be too large."""
    from targets.cpu import emit_nn

    monkeypatch.setattr(emit_nn, "MAX_COLUMN_BYTES", 0)
    cases = conv_transpose_cases()
    model, feeds, names = combined_model(cases)
    graph, build = compile_cpu(model)
    source = build.files["cpu/model.c"].decode()
    assert "lw_conv_transpose_direct(ctx->nt" in source and "lw_conv_transpose(ctx->nt" not in source
    want = dict(zip(names, cases_.ort_outputs_of(model, feeds)))
    for threads in (1, 2):
        got = run_build(graph, build, feeds, threads)
        for case in cases:
            outs = [n for n in names if n.startswith(f"{case.id}.")]
            assert_matches(case, [got[n] for n in outs], [want[n] for n in outs], rtol=1e-4, atol=1e-5)


# --- training-mode BatchNormalization ----------------------------------------------------------------


def _batchnorm_training_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 3, 5, 6])
    params = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [3]) for n in ("s", "b", "m", "v")]
    outs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 3, 5, 6])] + [
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [3]) for n in ("rm", "rv")]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"],
                            training_mode=1, epsilon=1e-3, momentum=0.8)
    model = helper.make_model(helper.make_graph([node], "bn", [x] + params, outs),
                              opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    feeds = {"x": f32(4, 3, 5, 6) * 3 + 1, "s": f32(3), "b": f32(3), "m": f32(3),
             "v": RNG.random(3).astype(np.float32) + 0.5}
    return model, feeds


def test_batchnorm_training_matches_the_onnx_reference():
    model, feeds = _batchnorm_training_model()
    want = ReferenceEvaluator(model).run(None, feeds)
    graph = import_model(model, name="bn")
    ref = run_graph(graph, feeds)
    graph, build = compile_cpu(model)
    for threads in (1, 2):
        got = run_build(graph, build, feeds, threads)
        for name, w in zip(("y", "rm", "rv"), want):
            np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(ref[name], w, rtol=1e-5, atol=1e-6, err_msg=name)


# --- run-time operands -------------------------------------------------------------------------------


def _single(case: Case):
    model, feeds, names = combined_model([case])
    graph, build = compile_cpu(model)
    return graph, build, feeds, names


def test_runtime_operands_are_checked():
    """A run-time Col2Im block shape is read when the model runs (and must fit the input's shape); a
    MaxUnpool index outside the unpooled shape and a ReverseSequence length outside [0, T] fail the run
    (ONNX Runtime fails them too), and the next good run succeeds."""
    f = onnx.TensorProto.FLOAT
    node = helper.make_node("Col2Im", ["x", "img", "blk"], ["y"], pads=[0, 1, 0, 0])
    model = helper.make_model(helper.make_graph(
        [node], "col", [helper.make_tensor_value_info("x", f, [1, 12, 20]),
                        helper.make_tensor_value_info("blk", onnx.TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", f, [1, 2, 5, 6])],
        initializer=[onnx.numpy_helper.from_array(i64(5, 6), "img")]),
        opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    feeds = {"x": f32(1, 12, 20), "blk": i64(2, 3)}
    graph, build = compile_cpu(model)
    good = run_build(graph, build, feeds, 1)
    np.testing.assert_allclose(good["y"], cases_.ort_outputs_of(model, feeds)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="status 4"):
        run_build(graph, build, {**feeds, "blk": i64(3, 2)}, 1)

    indices = i64(0, 3, 9, 15).reshape(1, 1, 2, 2)
    unpool = _case("up", "MaxUnpool", [In("x", f32(1, 1, 2, 2)), In("i", indices)],
                   {"kernel_shape": [2, 2], "strides": [2, 2]})
    graph, build, feeds, names = _single(unpool)
    with pytest.raises(RuntimeError, match="status 3"):
        run_build(graph, build, {**feeds, "up.i": i64(0, 3, 9, 16).reshape(1, 1, 2, 2)}, 2)
    np.testing.assert_array_equal(run_build(graph, build, feeds, 2)[names[0]], cases_.ort_outputs(unpool)[0])

    rev = _case("rev", "ReverseSequence", [In("x", f32(3, 2)), In("l", i64(3, 1))], {"batch_axis": 1,
                                                                                    "time_axis": 0})
    graph, build, feeds, names = _single(rev)
    with pytest.raises(RuntimeError, match="status 4"):
        run_build(graph, build, {**feeds, "rev.l": i64(4, 1)}, 1)


# --- refusals ------------------------------------------------------------------------------------------


def test_unsupported_cases_give_reasons():
    from lowering.ir import Graph

    target = CpuTarget()
    x = Value("x", TensorType(DType.FLOAT32, (1, 2, 4, 4)))
    w = Value("w", TensorType(DType.FLOAT32, (2, 3, 3, 3)))
    x6 = Value("x6", TensorType(DType.FLOAT32, (1, 1, 2, 2, 2, 2)))
    q = Value("q", TensorType(DType.INT8, (1, 1, 4, 4, 4)))
    const = lambda a: Value("c", const=np.asarray(a))  # noqa: E731
    reasons = {
        "the cpu target takes 1-D to 3-D": _node("ConvTranspose", [x6, x6]),
        "kernel_shape [2, 2] differs from the weights' [3, 3]": _node(
            "ConvTranspose", [x, w], {"kernel_shape": [2, 2]}, TensorType(DType.FLOAT32, (1, 3, 6, 6))),
        "ConvTranspose output 'y' has shape [1, 2, 4, 4], not [1, 3, 6, 6]": _node("ConvTranspose", [x, w]),
        "only 1-D, 2-D and 3-D pooling": _node("MaxPool", [x6], {"kernel_shape": [1, 1, 1, 1]}),
        "MaxPool with 3-D windows is computed for float32 tensors only": _node(
            "MaxPool", [q], {"kernel_shape": [2, 2, 2]}, TensorType(DType.INT8, (1, 1, 3, 3, 3))),
        "Col2Im over 4 spatial axes": _node(
            "Col2Im", [Value("c2", TensorType(DType.FLOAT32, (1, 16, 1))), const(i64(2, 2, 2, 2)),
                       const(i64(2, 2, 2, 2))], out_type=TensorType(DType.FLOAT32, (1, 1, 2, 2, 2, 2))),
        "Col2Im image_shape [3, 3] differs from the output's [2, 2]": _node(
            "Col2Im", [Value("c3", TensorType(DType.FLOAT32, (1, 4, 1))), const(i64(3, 3)), const(i64(2, 2))],
            out_type=TensorType(DType.FLOAT32, (1, 1, 2, 2))),
        "Det takes square matrices": _node("Det", [Value("m", TensorType(DType.FLOAT32, (2, 3)))],
                                           out_type=TensorType(DType.FLOAT32, ())),
        "MaxUnpool indices (input 1) must be int64": _node("MaxUnpool", [x, x], {"kernel_shape": [2, 2]}),
        "ReverseSequence needs rank 2 or more and batch_axis, time_axis being 0 and 1": _node(
            "ReverseSequence", [x, Value("l", TensorType(DType.INT64, (2,)))], {"batch_axis": 2}),
    }
    for expected, node in reasons.items():
        reason = target.unsupported_reason(node)
        assert reason is not None and expected in reason, (expected, reason)
    # MaxPool's Indices output of an int8 tensor (the graph reads it)
    g = Graph("g")
    node = _node("MaxPool", [Value("q4", TensorType(DType.INT8, (1, 1, 4, 4)))], {"kernel_shape": [2, 2]},
                 TensorType(DType.INT8, (1, 1, 3, 3)), outputs=2)
    g.inputs.append(node.input(0))
    g.append(node)
    g.outputs.extend(node.outputs)
    reason = target.unsupported_reason(node)
    assert reason is not None and "with the Indices output is computed for float32 tensors only" in reason


def test_cuda_and_custom_targets_refuse_the_new_ops():
    """Neither has kernels for these ops: each says why in one line (the partition then runs them on the
    host cpu target)."""
    from targets.cuda.target import CudaTarget
    from targets.custom.target import CustomTarget

    x = Value("x", TensorType(DType.FLOAT32, (1, 2, 4, 4)))
    w = Value("w", TensorType(DType.FLOAT32, (2, 3, 3, 3)))
    nodes = (_node("ConvTranspose", [x, w], out_type=TensorType(DType.FLOAT32, (1, 3, 6, 6))),
             _node("LRN", [x], {"size": 3}), _node("LpPool", [x], {"kernel_shape": [2, 2]}),
             _node("MaxPool", [Value("x5", TensorType(DType.FLOAT32, (1, 1, 4, 4, 4)))],
                   {"kernel_shape": [2, 2, 2]}, TensorType(DType.FLOAT32, (1, 1, 3, 3, 3))))
    for target in (CudaTarget(), CustomTarget()):
        for node in nodes:
            reason = target.unsupported_reason(node)
            assert reason is not None and "\n" not in reason, (target.name, node.op)

"""The reference semantics of the ops added for ONNX conformance (issue 8) agree with ONNX Runtime, and for
ops newer than ONNX Runtime's opsets here (or whose newest definitions changed: BitShift on signed integers,
SpaceToDepth CRD) with ``onnx.reference`` -- an independent implementation; the reference interpreter never
calls it.

``CASES`` (opset 21) and ``NEWER_CASES`` are shared with ``tests/targets/test_ops_conformance_cpu.py``,
which compiles the same models for the cpu target.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from .test_ops_math import (
    RNG,
    MathCase,
    assert_same,
    const,
    f32,
    ort_run,
    reference_outputs,
    special,
)
from .test_ops_math import math_model as _typed_model

pytestmark = pytest.mark.unit


def ints(*shape, low=-100, high=100, dtype=np.int32):
    return RNG.integers(low, high, shape).astype(dtype)


SP = special(3, 4, 5)
UNIT = (RNG.random((3, 4, 5)) * 1.98 - 0.99).astype(np.float32)  # inside (-1, 1)
ABOVE_ONE = (np.abs(f32(3, 4, 5)) + np.float32(1)).astype(np.float32)
WIDE = f32(3, 4, 5, scale=6)  # softplus/exp-based ops over a wide range
X4 = f32(2, 6, 3, 4)
ZERO_COLUMN = f32(3, 4)
ZERO_COLUMN[:, 2] = 0
SCATTER_DATA = f32(3, 5)
TARGETS = np.array([[1, 4], [0, 1], [2, 3], [4, 4]], np.int64)[:3]
WEIGHTS = np.abs(f32(5)) + np.float32(0.1)

UNARY = [
    *[MathCase(f"{op.lower()}", op, [data]) for op, data in (
        ("Cos", WIDE), ("Sin", WIDE), ("Tan", UNIT), ("Acos", UNIT), ("Asin", UNIT), ("Atan", WIDE),
        ("Cosh", UNIT * 4), ("Sinh", UNIT * 4), ("Acosh", ABOVE_ONE), ("Asinh", WIDE), ("Atanh", UNIT),
        ("Softplus", WIDE), ("Softsign", SP), ("HardSwish", WIDE), ("Mish", WIDE), ("Elu", WIDE),
        ("Selu", WIDE), ("HardSigmoid", WIDE), ("ThresholdedRelu", WIDE), ("Shrink", WIDE), ("Celu", WIDE))],
    MathCase("elu_alpha", "Elu", [WIDE], {"alpha": 0.5}),
    MathCase("celu_alpha", "Celu", [WIDE], {"alpha": 2.0}),
    MathCase("selu_params", "Selu", [WIDE], {"alpha": 1.5, "gamma": 2.0}),
    MathCase("hardsigmoid_params", "HardSigmoid", [WIDE], {"alpha": 0.3, "beta": 0.4}),
    MathCase("thresholdedrelu_alpha", "ThresholdedRelu", [WIDE], {"alpha": 0.3}),
    MathCase("shrink_params", "Shrink", [WIDE], {"bias": 0.2, "lambd": 0.6}),
    MathCase("prelu_channel", "PRelu", [X4, const(f32(6, 1, 1))]),
    MathCase("prelu_full", "PRelu", [SP, f32(3, 4, 5)]),
    MathCase("sum3", "Sum", [SP, f32(5), f32(4, 1)]),
    MathCase("sum1", "Sum", [SP]),
    MathCase("mean3", "Mean", [SP, f32(5), f32(4, 1)]),
    MathCase("mean1", "Mean", [SP]),
]

BITWISE = [
    *[MathCase(f"{op.lower()}_{np.dtype(t).name}", op, [ints(3, 4, dtype=t, low=lo, high=hi),
                                                      ints(4, dtype=t, low=lo, high=hi)])
      for op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor")
      for t, lo, hi in ((np.int32, -1000, 1000), (np.uint8, 0, 256), (np.int64, -99, 99))],
    MathCase("bitwisenot_int8", "BitwiseNot", [ints(3, 4, dtype=np.int8)]),
    MathCase("bitwisenot_uint8", "BitwiseNot", [ints(3, 4, low=0, high=256, dtype=np.uint8)]),
    MathCase("bitshift_left_u8", "BitShift", [ints(3, 4, low=0, high=256, dtype=np.uint8),
                                              ints(3, 4, low=0, high=8, dtype=np.uint8)],
             {"direction": "LEFT"}),
    MathCase("bitshift_right_u8", "BitShift", [ints(3, 4, low=0, high=256, dtype=np.uint8),
                                               ints(4, low=0, high=8, dtype=np.uint8)],
             {"direction": "RIGHT"}),
]

REDUCTIONS = [
    *[MathCase(f"{op.lower()}_{name}", op, [data, *axes], attrs)
      for op, data in (("ReduceL1", X4), ("ReduceL2", X4), ("ReduceProd", X4 * np.float32(0.5) + 1),
                       ("ReduceSumSquare", X4), ("ReduceLogSum", np.abs(X4) + np.float32(0.1)),
                       ("ReduceLogSumExp", X4 * np.float32(30)))
      for name, axes, attrs in (
          ("axes13", [const(np.array([1, 3]))], {"keepdims": 0}),
          ("last", [const(np.array([-1]))], {}),
          ("all", [], {}),
          ("runtime_axes", [np.array([0, 2])], {"keepdims": 1}),
          ("runtime_one_axis", [np.array([-3])], {"keepdims": 0}))],
    MathCase("reducesum_runtime_axes", "ReduceSum", [X4, np.array([3, 1])], {"keepdims": 0}),
    MathCase("reducemax_runtime_axes", "ReduceMax", [X4, np.array([0])]),
    MathCase("reducemean_runtime_axes", "ReduceMean", [X4, np.array([1, 2, 3])]),
    MathCase("reducemin_empty_axes_noop", "ReduceMin", [X4, np.zeros(0, np.int64)],
             {"noop_with_empty_axes": 1}),
    MathCase("reducel2_empty_axes_all", "ReduceL2", [X4, np.zeros(0, np.int64)]),
]

STRUCTURED = [
    MathCase("hardmax_axis1", "Hardmax", [np.round(X4 * 2)], {"axis": 1}),
    MathCase("hardmax_last", "Hardmax", [X4]),
    MathCase("lpnorm_l1_zero_column", "LpNormalization", [ZERO_COLUMN], {"axis": 0, "p": 1}),
    MathCase("lpnorm_l2", "LpNormalization", [X4], {"axis": 1}),
    MathCase("instancenorm", "InstanceNormalization", [X4 * 3 + 1, f32(6), f32(6)], {"epsilon": 1e-3}),
    MathCase("groupnorm", "GroupNormalization", [X4 * 3 + 1, f32(6), f32(6)], {"num_groups": 3}),
    MathCase("onehot_axis0", "OneHot", [RNG.integers(-4, 4, (2, 3)).astype(np.int64), const(np.int64(4)),
                                        const(np.array([-1.5, 2.5], np.float32))], {"axis": 0}),
    MathCase("eyelike", "EyeLike", [f32(4, 6)], {"k": -1}),
    MathCase("eyelike_int", "EyeLike", [ints(5, 3)], {"k": 2, "dtype": TensorProto.INT64}),
    MathCase("scatter_elements_add", "ScatterElements",
             [SCATTER_DATA, np.array([[1, -1, 1], [0, 2, 0]], np.int64), f32(2, 3)],
             {"axis": 0, "reduction": "add"}),
    MathCase("scatter_elements_none", "ScatterElements",
             [SCATTER_DATA, np.array([[4, 0], [2, -1], [1, 3]], np.int64), f32(3, 2)], {"axis": 1}),
    MathCase("scatter_nd_slices_mul", "ScatterND",
             [f32(4, 3, 2), np.array([[2], [0], [2]], np.int64), f32(3, 3, 2)], {"reduction": "mul"}),
    MathCase("scatter_nd_elements", "ScatterND",
             [f32(4, 3), np.array([[1, 2], [3, 0]], np.int64), f32(2)]),
    MathCase("scatter_nd_max", "ScatterND",
             [f32(4, 3), np.array([[1], [1]], np.int64), f32(2, 3)], {"reduction": "max"}),
    MathCase("dropout_inference", "Dropout", [X4, const(np.float32(0.3))]),
    MathCase("depthtospace_crd", "DepthToSpace", [f32(2, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"}),
    MathCase("depthtospace_dcr", "DepthToSpace", [f32(1, 18, 2, 2)], {"blocksize": 3}),
    MathCase("spacetodepth", "SpaceToDepth", [f32(2, 3, 4, 6)], {"blocksize": 2}),
    MathCase("cumsum_runtime_axis", "CumSum", [X4, np.array(-2, np.int64)], {"exclusive": 1}),
    MathCase("nll_none_ignore", "NegativeLogLikelihoodLoss", [f32(3, 5, 2), TARGETS],
             {"reduction": "none", "ignore_index": 1}),
    MathCase("nll_mean_weight", "NegativeLogLikelihoodLoss", [f32(3, 5, 2), TARGETS, const(WEIGHTS)]),
    MathCase("nll_sum_2d", "NegativeLogLikelihoodLoss", [f32(3, 5), TARGETS[:, 0].astype(np.int32).copy()],
             {"reduction": "sum"}),
    MathCase("sce_mean_weight_ignore", "SoftmaxCrossEntropyLoss", [f32(3, 5, 2), TARGETS, WEIGHTS],
             {"ignore_index": 4}),
    MathCase("sce_none", "SoftmaxCrossEntropyLoss", [f32(3, 5, 2, 2), RNG.integers(0, 5, (3, 2, 2))],
             {"reduction": "none"}),
    MathCase("clip_runtime_bounds", "Clip", [SP, np.array(-0.5, np.float32), np.array(0.7, np.float32)]),
    MathCase("clip_runtime_upper_only", "Clip", [SP, None, np.array(0.2, np.float32)]),
    MathCase("clip_int32_const", "Clip", [ints(3, 4), const(np.int32(-20)), const(np.int32(30))]),
    MathCase("trilu_runtime_k", "Trilu", [f32(2, 4, 5), np.array(-1, np.int64)], {"upper": 0}),
]

CASES = [MathCase(c.id, c.op, c.inputs, c.attrs, opset=21) for c in UNARY + BITWISE + REDUCTIONS + STRUCTURED]

#: ops (or definitions) newer than ONNX Runtime's here: checked against onnx.reference
NEWER_CASES = [
    MathCase("bitshift_left_i8", "BitShift", [np.array([1, -1, 64, -128, 3, 5], np.int8),
                                              np.array([1, 3, 1, 1, -1, 8], np.int8)], {"direction": "LEFT"},
             opset=28),
    MathCase("bitshift_right_i32", "BitShift", [ints(3, 4, low=-1000, high=1000),
                                                ints(3, 4, low=-2, high=34)],
             {"direction": "RIGHT"}, opset=28),
    MathCase("bitshift_left_i64", "BitShift", [ints(3, 4, low=-1000, high=1000, dtype=np.int64),
                                               ints(4, low=-2, high=66, dtype=np.int64)],
             {"direction": "LEFT"}, opset=28),
    MathCase("onehot_int32", "OneHot", [RNG.integers(0, 6, (5,)).astype(np.int32), const(np.float32(5)),
                                        const(np.array([0, 7], np.int64))], opset=21),
    MathCase("rmsnorm_axis1", "RMSNormalization", [X4, f32(3, 4)], {"axis": 2, "epsilon": 1e-2}, opset=23),
    MathCase("rmsnorm_default", "RMSNormalization", [X4, const(f32(4))], opset=23),
    MathCase("swish", "Swish", [WIDE], {"alpha": 0.7}, opset=24),
    MathCase("cumprod_exclusive_reverse", "CumProd", [f32(3, 4), np.array(1, np.int64)],
             {"exclusive": 1, "reverse": 1}, opset=26),
    MathCase("cumprod_int32", "CumProd", [ints(2, 5, low=-3, high=4), np.array(0, np.int32)], opset=26),
    MathCase("spacetodepth_crd", "SpaceToDepth", [f32(1, 2, 4, 6)], {"blocksize": 2, "mode": "CRD"},
             opset=28),
    MathCase("bitcast_f32_i32", "BitCast", [SP], {"to": TensorProto.INT32}, opset=26),
]


def math_model(cases: list[MathCase], opset: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``test_ops_math.math_model``, with outputs ONNX shape inference cannot type (Reduce* of run-time axes,
    GroupNormalization) typed from an ``onnx.reference`` run, as an exporter would declare them."""
    try:
        return _typed_model(cases, opset)
    except onnx.checker.ValidationError:
        pass
    nodes, inputs, inits, feeds = [], [], [], {}
    for case in cases:
        names = []
        for k, operand in enumerate(case.inputs):
            name = f"{case.id}_{k}" if operand is not None else ""
            names.append(name)
            if operand is None:
                continue
            if isinstance(operand, tuple):
                inits.append(numpy_helper.from_array(operand[1], name))
            else:
                feeds[name] = operand
                elem = helper.np_dtype_to_tensor_dtype(operand.dtype)
                inputs.append(helper.make_tensor_value_info(name, elem, operand.shape))
        nodes.append(helper.make_node(case.op, names, [case.id], name=case.id, **case.attrs))
    untyped = [helper.make_empty_tensor_value_info(c.id) for c in cases]
    graph = helper.make_graph(nodes, "math", inputs, untyped, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    outputs = onnx_reference_run(model, feeds)
    del model.graph.output[:]
    for case in cases:
        elem = helper.np_dtype_to_tensor_dtype(outputs[case.id].dtype)
        model.graph.output.append(helper.make_tensor_value_info(case.id, elem, outputs[case.id].shape))
    onnx.checker.check_model(model)
    return model, feeds


def onnx_reference_run(model, feeds) -> dict[str, np.ndarray]:
    names = [o.name for o in model.graph.output]
    with np.errstate(all="ignore"):
        return dict(zip(names, ReferenceEvaluator(model).run(names, feeds)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_reference_matches_onnxruntime(case):
    model, feeds = math_model([case], case.opset)
    assert_same(reference_outputs(model, feeds), ort_run(model, feeds), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", NEWER_CASES, ids=lambda c: c.id)
def test_reference_matches_onnx_reference(case):
    model, feeds = math_model([case], case.opset)
    assert_same(reference_outputs(model, feeds), onnx_reference_run(model, feeds), rtol=2e-5, atol=2e-6)


def test_training_dropout_is_refused_and_zero_ratio_is_identity():
    x = f32(3, 4)
    random = MathCase("dropout_training", "Dropout", [x, const(np.float32(0.5)), const(np.bool_(True))])
    model, feeds = math_model([random], 21)
    with pytest.raises(Exception, match="Dropout in training mode"):
        reference_outputs(model, feeds)
    zero = MathCase("dropout_zero", "Dropout", [x, const(np.float32(0.0)), const(np.bool_(True))])
    model, feeds = math_model([zero], 21)
    np.testing.assert_array_equal(reference_outputs(model, feeds)["dropout_zero"], x)

"""The reference semantics of the math, comparison, logical and reduction ops agree with ONNX Runtime.

Each ``MathCase`` is one ONNX node on seeded data with the awkward values each op has (NaN and infinities
for IsNaN/Max/Where, negative numbers for Log/Sqrt/Pow, halves for Round, ties for ArgMax, negative
integers for Div). ``math_model`` puts any number of cases into one model; ``tests/targets/test_cpu_math.py``
compiles the same cases for the cpu target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowering.onnx.importer import import_model
from lowering.reference import run_graph

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(2024)
NAN, INF = np.float32(np.nan), np.float32(np.inf)


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def special(*shape):
    """Normal data with NaN, +-inf, +-0 and exact halves sprinkled in."""
    x = f32(*shape, scale=2.0).reshape(-1)
    x[: 8] = [NAN, INF, -INF, 0.0, -0.0, 0.5, -2.5, 3.5]
    return RNG.permutation(x).reshape(shape)


def i64(*shape, low=-9, high=9):
    return RNG.integers(low, high, shape).astype(np.int64)


def bools(*shape):
    return RNG.random(shape) < 0.5


@dataclass
class MathCase:
    id: str
    op: str
    #: operands; a ("const", array) pair is an initializer, None an absent optional input
    inputs: list
    attrs: dict = field(default_factory=dict)
    opset: int = 18


def const(array) -> tuple[str, np.ndarray]:
    return ("const", np.asarray(array))


def math_model(cases: list[MathCase], opset: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One model computing every case (output ``<id>``); returns it and its feeds."""
    nodes, inputs, inits, feeds = [], [], [], {}
    for case in cases:
        names = []
        for k, operand in enumerate(case.inputs):
            if operand is None:
                names.append("")
                continue
            name = f"{case.id}_{k}"
            names.append(name)
            if isinstance(operand, tuple):
                inits.append(numpy_helper.from_array(operand[1], name))
            else:
                feeds[name] = operand
                elem = helper.np_dtype_to_tensor_dtype(operand.dtype)
                inputs.append(helper.make_tensor_value_info(name, elem, operand.shape))
        nodes.append(helper.make_node(case.op, names, [case.id], name=case.id, **case.attrs))
    outputs = [helper.make_empty_tensor_value_info(case.id) for case in cases]
    graph = helper.make_graph(nodes, "math", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output}
    for out in model.graph.output:
        out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(model)
    return model, feeds


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session.run(names, feeds)))


def assert_same(got: dict, want: dict, rtol=1e-5, atol=1e-6) -> None:
    """Same keys, dtypes and shapes; exact for integers and bools, close (NaN where NaN) for floats."""
    for name, expected in want.items():
        actual = np.asarray(got[name])
        assert actual.dtype == expected.dtype, f"{name}: {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{name}: {actual.shape} != {expected.shape}"
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=name)


SP = special(3, 4, 5)
ROW = f32(5)
POS = np.abs(f32(3, 4, 5)) + np.float32(0.1)
INTS = i64(3, 4, 5)
DIVISORS = np.where(i64(4, 5) == 0, 3, i64(4, 5))
TIES = RNG.integers(0, 3, (3, 4, 5)).astype(np.float32)  # many equal values: first/last index matter

ELEMENTWISE = [
    *[MathCase(f"{op.lower()}_special", op, [SP]) for op in
      ("Erf", "Reciprocal", "Log", "Sqrt", "Exp", "Neg", "Abs", "Floor", "Ceil", "Round", "Sign",
       "Sigmoid", "Tanh")],
    MathCase("isnan", "IsNaN", [SP]),
    MathCase("isinf", "IsInf", [SP]),
    MathCase("isinf_negative", "IsInf", [SP], {"detect_positive": 0}),
    MathCase("not", "Not", [bools(3, 4)]),
    MathCase("pow_square", "Pow", [SP, const(np.float32(2))]),
    MathCase("pow_cube_int", "Pow", [SP, const(np.int64(3))]),
    MathCase("pow_half", "Pow", [SP, const(np.float32(0.5))]),
    MathCase("pow_general", "Pow", [POS, f32(4, 5)]),
    MathCase("pow_negative_base", "Pow", [SP, const(np.float32(1.5))]),
    MathCase("max_variadic_nan", "Max", [SP, ROW, f32(4, 1)]),
    MathCase("min_variadic_nan", "Min", [SP, ROW, f32(4, 1)]),
    MathCase("max_one", "Max", [SP]),
    MathCase("max_int", "Max", [INTS, i64(5)]),
    MathCase("add_int64", "Add", [INTS, i64(4, 5)]),
    MathCase("mul_int32", "Mul", [INTS.astype(np.int32), const(np.int32(-3))]),
    MathCase("sub_int64", "Sub", [INTS, i64(1, 5)]),
    MathCase("div_int64_truncates", "Div", [INTS, DIVISORS]),
    MathCase("div_int32", "Div", [INTS.astype(np.int32), DIVISORS.astype(np.int32)]),
    MathCase("mod_int", "Mod", [INTS, DIVISORS]),
    MathCase("mod_float", "Mod", [f32(3, 4, 5, scale=5), const(np.float32(1.5))], {"fmod": 1}),
    *[MathCase(f"{op.lower()}_float", op, [SP, ROW]) for op in
      ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")],
    *[MathCase(f"{op.lower()}_int64", op, [INTS, i64(4, 1)]) for op in
      ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")],
    MathCase("less_int32", "Less", [INTS.astype(np.int32), const(np.int32(0))]),
    MathCase("equal_bool", "Equal", [bools(3, 4), bools(4)]),
    *[MathCase(op.lower(), op, [bools(3, 4), bools(1, 4)]) for op in ("And", "Or", "Xor")],
    MathCase("where_float", "Where", [bools(4, 5), SP, const(np.float32(-np.inf))]),
    MathCase("where_broadcast", "Where", [bools(4, 1), f32(3, 1, 5), f32(4, 5)]),
    MathCase("where_int64", "Where", [bools(3, 4, 5), INTS, const(np.int64(-1))]),
]

CASTS = [
    MathCase("cast_f_i64", "Cast", [f32(3, 4, scale=40)], {"to": TensorProto.INT64}),
    MathCase("cast_f_i32", "Cast", [f32(3, 4, scale=40)], {"to": TensorProto.INT32}),
    MathCase("cast_f_i8", "Cast", [f32(3, 4, scale=40)], {"to": TensorProto.INT8}),
    MathCase("cast_f_u8", "Cast", [np.abs(f32(3, 4, scale=40))], {"to": TensorProto.UINT8}),
    MathCase("cast_f_bool", "Cast", [SP], {"to": TensorProto.BOOL}),
    MathCase("cast_bool_f", "Cast", [bools(3, 4)], {"to": TensorProto.FLOAT}),
    MathCase("cast_bool_i64", "Cast", [bools(3, 4)], {"to": TensorProto.INT64}),
    MathCase("cast_i64_f", "Cast", [INTS], {"to": TensorProto.FLOAT}),
    MathCase("cast_i64_i32", "Cast", [INTS], {"to": TensorProto.INT32}),
    MathCase("cast_i64_bool", "Cast", [INTS], {"to": TensorProto.BOOL}),
    MathCase("cast_u8_f", "Cast", [RNG.integers(0, 256, (3, 4)).astype(np.uint8)], {"to": TensorProto.FLOAT}),
    MathCase("cast_i32_i8", "Cast", [i64(3, 4, low=-100, high=100).astype(np.int32)],
             {"to": TensorProto.INT8}),
    MathCase("cast_f_f", "Cast", [SP], {"to": TensorProto.FLOAT}),
]

X4 = f32(2, 3, 4, 5)
REDUCTIONS = [
    MathCase("reducesum_axes_input", "ReduceSum", [X4, const(np.array([1, 3]))], {"keepdims": 0}),
    MathCase("reducesum_all", "ReduceSum", [X4]),
    MathCase("reducesum_noop", "ReduceSum", [X4, const(np.zeros(0, np.int64))], {"noop_with_empty_axes": 1}),
    MathCase("reducemean_last", "ReduceMean", [X4, const(np.array([-1]))]),
    MathCase("reducemean_0_2", "ReduceMean", [X4, const(np.array([0, 2]))], {"keepdims": 0}),
    MathCase("reducemax_1_2", "ReduceMax", [X4, const(np.array([1, 2]))]),
    MathCase("reducemin_0_3", "ReduceMin", [X4, const(np.array([0, -1]))], {"keepdims": 0}),
    MathCase("reducemax_all", "ReduceMax", [X4], {"keepdims": 0}),
    MathCase("argmax_ties_first", "ArgMax", [TIES], {"axis": 1}),
    MathCase("argmax_ties_last", "ArgMax", [TIES], {"axis": -1, "select_last_index": 1, "keepdims": 0}),
    MathCase("argmin_ties", "ArgMin", [TIES], {"axis": 0, "keepdims": 0}),
    MathCase("argmin_last", "ArgMin", [TIES], {"axis": 2, "select_last_index": 1}),
    MathCase("cumsum_axis1", "CumSum", [X4, const(np.int64(1))]),
    MathCase("cumsum_exclusive_reverse", "CumSum", [X4, const(np.int32(-1))], {"exclusive": 1, "reverse": 1}),
    MathCase("cumsum_int64_exclusive", "CumSum", [INTS, const(np.int64(2))], {"exclusive": 1}),
    MathCase("cumsum_reverse", "CumSum", [INTS.astype(np.int32), const(np.int64(0))], {"reverse": 1}),
    *[MathCase(f"{op.lower()}_axis{axis}", op, [X4 * np.float32(4)], {"axis": axis})
      for op in ("Softmax", "LogSoftmax") for axis in (-1, 1, 0)],
]

#: opset 13: Reduce* other than ReduceSum take their axes as an attribute
OPSET13 = [
    MathCase("reducemean_attr", "ReduceMean", [X4], {"axes": [1, 2], "keepdims": 0}, opset=13),
    MathCase("reducemax_attr", "ReduceMax", [X4], {"axes": [0, 3]}, opset=13),
    MathCase("reducemin_attr_all", "ReduceMin", [X4], {}, opset=13),
    MathCase("reducesum_13", "ReduceSum", [X4, const(np.array([2]))], opset=13),
]

ALL_CASES = ELEMENTWISE + CASTS + REDUCTIONS + OPSET13


def reference_outputs(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    graph = import_model(model)
    return run_graph(graph, feeds)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_reference_matches_onnxruntime(case):
    model, feeds = math_model([case], case.opset)
    assert_same(reference_outputs(model, feeds), ort_run(model, feeds))


def test_opset11_softmax_is_upgraded_with_its_2d_semantics():
    """Softmax before opset 13 normalizes over all axes from ``axis`` on (coerced to 2-D); the importer
    upgrades the model and must keep that meaning."""
    x = f32(2, 3, 4)
    case = MathCase("softmax11", "Softmax", [x], {"axis": 1})
    model, feeds = math_model([case], 11)
    got = reference_outputs(model, feeds)["softmax11"]
    flat = x.reshape(2, 12).astype(np.float64)
    want = np.exp(flat - flat.max(1, keepdims=True))
    np.testing.assert_allclose(got, (want / want.sum(1, keepdims=True)).reshape(2, 3, 4), rtol=1e-5)

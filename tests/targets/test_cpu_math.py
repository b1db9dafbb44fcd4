"""The math, comparison, logical and reduction ops on the cpu target.

Against ONNX Runtime: every case of ``tests/reference/test_ops_math.py`` compiled through the whole
pipeline (one model per opset, so one gcc run each), and fused typed chains (an attention mask, a decomposed
GELU and LayerNorm). Against the reference (``cpu_harness``): multi-pass reductions, variadic Min/Max, Mod,
bool Where, and the reasons unsupported nodes give.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from lowering.driver import CompileOptions, compile_model
from lowering.ir import DType, Node, TensorType, Value
from lowering.opinfo import DOMAIN
from targets.cpu.target import CpuTarget
from tests.reference.test_ops_math import (
    ALL_CASES,
    assert_same,
    f32,
    i64,
    math_model,
    ort_run,
    special,
)

from .cpu_harness import GraphMaker, check_against_reference

pytestmark = pytest.mark.target_cpu


def compiled_run(model: onnx.ModelProto, feeds: dict, tmp_path, name: str) -> tuple[dict, dict]:
    """The outputs of the compiled cpu artifact, and the ops its graph ended with."""
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    result = compile_model(path, output=tmp_path / f"{name}.lwr",
                           options=CompileOptions(targets=("cpu",), verify_each=True))
    outputs = runtime.load(tmp_path / f"{name}.lwr").run(None, feeds)
    return dict(zip([o.name for o in model.graph.output], outputs)), result.report["targets"]["cpu"]["ops"]


@pytest.mark.parametrize("opset", [18, 13])
def test_every_case_matches_onnxruntime(tmp_path, opset):
    cases = [c for c in ALL_CASES if c.opset == opset]
    model, feeds = math_model(cases, opset)
    # erf, exp and tanh are polynomial approximations: a few ulp; sums in another order
    got, _ = compiled_run(model, feeds, tmp_path, f"math{opset}")
    assert_same(got, ort_run(model, feeds), rtol=2e-5, atol=2e-6)


def _fused_model() -> tuple[onnx.ModelProto, dict]:
    """Typed chains the elementwise fusion turns into single loops."""
    x = special(2, 8, 16)
    scores = f32(2, 4, 8, 8)
    mask = (np.random.default_rng(5).random((2, 1, 1, 8)) < 0.7).astype(np.int64)
    ln = f32(2, 8, 16)
    nodes = [
        # HF-style additive mask: (1 - mask) * -1e4 as float, added to the scores; and the boolean form
        helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mask_f"], ["inverted"]),
        helper.make_node("Mul", ["inverted", "big_negative"], ["additive"]),
        helper.make_node("Add", ["scores", "additive"], ["masked_add"]),
        helper.make_node("Equal", ["mask", "zero_i"], ["is_pad"]),
        helper.make_node("Where", ["is_pad", "minus_inf", "scores"], ["masked_where"]),
        helper.make_node("Softmax", ["masked_where"], ["probs"], axis=-1),
        # NaN scrubbing and a clamp through Min/Max
        helper.make_node("IsNaN", ["x"], ["nan"]),
        helper.make_node("Where", ["nan", "zero_f", "x"], ["clean"]),
        helper.make_node("Max", ["clean", "minus_two"], ["lo"]),
        helper.make_node("Min", ["lo", "two"], ["clamped"]),
        # decomposed erf GELU: x * 0.5 * (1 + erf(x / sqrt 2)) and the tanh form with Pow(x, 3)
        helper.make_node("Div", ["ln", "sqrt2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["erf1"]),
        helper.make_node("Mul", ["ln", "erf1"], ["xerf"]),
        helper.make_node("Mul", ["xerf", "half"], ["gelu"]),
        helper.make_node("Pow", ["ln", "three"], ["cube"]),
        helper.make_node("Mul", ["cube", "c044"], ["cube_scaled"]),
        helper.make_node("Add", ["ln", "cube_scaled"], ["inner"]),
        helper.make_node("Mul", ["inner", "sqrt2pi"], ["inner2"]),
        helper.make_node("Tanh", ["inner2"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["t1"]),
        helper.make_node("Mul", ["ln", "half"], ["halfx"]),
        helper.make_node("Mul", ["halfx", "t1"], ["gelu_tanh"]),
        # decomposed LayerNorm: (x - mean) / sqrt(mean((x - mean)^2) + eps)
        helper.make_node("ReduceMean", ["ln", "last"], ["mean"]),
        helper.make_node("Sub", ["ln", "mean"], ["centered"]),
        helper.make_node("Pow", ["centered", "two"], ["squared"]),
        helper.make_node("ReduceMean", ["squared", "last"], ["variance"]),
        helper.make_node("Add", ["variance", "eps"], ["variance_eps"]),
        helper.make_node("Sqrt", ["variance_eps"], ["std"]),
        helper.make_node("Div", ["centered", "std"], ["normalized"]),
        # integer position ids from a mask: cumsum(mask) * mask - 1
        helper.make_node("Squeeze", ["mask", "squeeze_axes"], ["mask2"]),
        helper.make_node("CumSum", ["mask2", "last"], ["positions"]),
        helper.make_node("Mul", ["positions", "mask2"], ["kept"]),
        helper.make_node("Sub", ["kept", "one_i"], ["position_ids"]),
        # float math no pattern claims: round(erf(|x|^1.5) / sqrt(|x| + 1) * 8) + log(x^2 + 1)
        helper.make_node("Abs", ["ln"], ["magnitude"]),
        helper.make_node("Pow", ["magnitude", "one_half"], ["power"]),
        helper.make_node("Erf", ["power"], ["erf_power"]),
        helper.make_node("Add", ["magnitude", "one"], ["magnitude1"]),
        helper.make_node("Sqrt", ["magnitude1"], ["root"]),
        helper.make_node("Reciprocal", ["root"], ["inverse_root"]),
        helper.make_node("Mul", ["erf_power", "inverse_root"], ["ratio"]),
        helper.make_node("Mul", ["ratio", "eight"], ["ratio8"]),
        helper.make_node("Round", ["ratio8"], ["rounded"]),
        helper.make_node("Pow", ["ln", "two"], ["square"]),
        helper.make_node("Add", ["square", "one"], ["square1"]),
        helper.make_node("Log", ["square1"], ["log"]),
        helper.make_node("Add", ["rounded", "log"], ["math"]),
    ]
    scalars = {
        "one": np.float32(1), "big_negative": np.float32(-1e4), "zero_i": np.int64(0),
        "minus_inf": np.float32(-np.inf), "zero_f": np.float32(0), "minus_two": np.float32(-2),
        "two": np.float32(2), "sqrt2": np.float32(np.sqrt(2)), "half": np.float32(0.5),
        "three": np.float32(3), "c044": np.float32(0.044715), "sqrt2pi": np.float32(np.sqrt(2 / np.pi)),
        "last": np.array([-1], np.int64), "eps": np.float32(1e-5), "squeeze_axes": np.array([1, 2]),
        "one_i": np.int64(1), "one_half": np.float32(1.5), "eight": np.float32(8),
    }
    feeds = {"x": x, "scores": scores, "mask": mask, "ln": ln}
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    outs = ["masked_add", "probs", "clamped", "gelu", "gelu_tanh", "normalized", "position_ids", "math"]
    initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in scalars.items()]
    graph = helper.make_graph(nodes, "fused", inputs, [helper.make_empty_tensor_value_info(o) for o in outs],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.output}
    for out in model.graph.output:
        out.CopyFrom(inferred[out.name])
    return model, feeds


def test_fused_typed_chains_match_onnxruntime(tmp_path):
    model, feeds = _fused_model()
    got, ops = compiled_run(model, feeds, tmp_path, "fused")
    assert_same(got, ort_run(model, feeds), rtol=2e-5, atol=5e-6)
    # the mask, NaN-scrubbing, math and position-id chains each became one loop
    assert ops[f"{DOMAIN}::FusedElementwise"] == 5
    assert not {"Cast", "Equal", "Where", "IsNaN", "Max", "Pow", "Erf", "Mul"} & set(ops)


def test_reductions_multi_pass_and_variadic_against_reference():
    m = GraphMaker("reduce", seed=3)
    x = m.input(3, 5, 4, 6, 7)
    outs = []
    for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"):
        for axes, keep in (([0, 2, 4], 1), ([1, 3], 0), ([0, 1, 2, 3, 4], 0), ([-2], 1)):
            outs.append(m.node(op, x, m.const(np.array(axes, np.int64)), keepdims=keep))
    outs.append(m.node("ReduceMax", x, m.const(np.zeros(0, np.int64)), noop_with_empty_axes=1))
    big = m.input(4, 70000)  # long rows: parallel, vector partial sums
    outs += [m.node("ReduceSum", big, m.const(np.array([1])), keepdims=0),
             m.node("Softmax", big, axis=1), m.node("LogSoftmax", big, axis=0),
             m.node("ArgMax", big, axis=1, keepdims=0), m.node("ArgMin", big, axis=0)]
    a, b, c = m.input(4, 1, 6), m.input(5, 1), m.input(6)
    outs += [m.node("Max", a, b, c), m.node("Min", a, b, c), m.node("Max", c)]
    check_against_reference(m.output(*outs), threads=2)


def test_typed_elementwise_against_reference():
    m = GraphMaker("typed", seed=4)
    cond = m.node("Greater", m.input(4, 6), m.const(np.float32(0)))
    other = m.node("Less", m.input(6), m.const(np.float32(0.3)))
    ints, divisors = m.const(i64(4, 6, low=-50, high=50)), m.const(np.array([3, -4, 5, -7, 2, -1]))
    outs = [
        m.node("Where", cond, other, m.node("Not", other)),  # bool operands
        m.node("Mod", ints, divisors), m.node("Mod", ints, divisors, fmod=1),
        m.node("Mod", m.input(4, 6), m.const(np.float32(0.7)), fmod=1),
        m.node("Xor", cond, other),
        m.node("Abs", m.node("Neg", ints)), m.node("Sign", ints),
        m.node("IsInf", m.const(special(4, 6)), detect_negative=0),
    ]
    check_against_reference(m.output(*outs))


def _typed(name: str, dtype: DType, *shape: int) -> Value:
    return Value(name, TensorType(dtype, shape))


F32, I64, I32, BOOL, F16 = DType.FLOAT32, DType.INT64, DType.INT32, DType.BOOL, DType.FLOAT16


@pytest.mark.parametrize("make_node, reason", [
    (lambda: Node("Add", [_typed("a", I64, 3), _typed("b", F32, 3)], [_typed("o", I64, 3)]),
     "Add operands must have one element type, not (int64, float32)"),
    (lambda: Node("Sqrt", [_typed("a", I64, 3)], [_typed("o", I64, 3)]), "Sqrt does not take int64 operands"),
    (lambda: Node("Where", [_typed("c", F32, 3), _typed("a", F32, 3), _typed("b", F32, 3)],
                  [_typed("o", F32, 3)]), "Where takes a bool condition"),
    (lambda: Node("IsNaN", [_typed("a", I64, 3)], [_typed("o", BOOL, 3)]),
     "IsNaN does not take int64 operands"),
    (lambda: Node("Mod", [_typed("a", F32, 3), _typed("b", I64, 3)], [_typed("o", F32, 3)],
                  attrs={"fmod": _attr(1)}), "Mod operands must have one element type"),
    (lambda: Node("ReduceSum", [_typed("x", F32, 2, 3), _typed("axes", I32, 1)], [_typed("o", F32, 2)]),
     "ReduceSum axes (input 1 'axes') must be int64"),
    (lambda: Node("CumSum", [_typed("x", F32, 2, 3), _typed("axis", F32)], [_typed("o", F32, 2, 3)]),
     "CumSum's axis must be one int32 or int64 value"),
    (lambda: Node("ArgMax", [_typed("x", I64, 2, 3)], [_typed("o", I64, 3)]),
     "ArgMax takes a float32 tensor to int64 indices, not int64"),
    (lambda: Node("FusedElementwise", [_typed("x", F32, 3)], [_typed("o", F32, 3)], domain=DOMAIN,
                  attrs={"body_ops": _attr(("IsNaN",)), "body_args": _attr((0,))}),
     "the body computes bool but the output 'o' is float32"),
    (lambda: Node("FusedElementwise", [_typed("x", F32, 3)], [_typed("o", F32, 3)], domain=DOMAIN,
                  attrs={"body_ops": _attr(("Hardmax",))}), "body op Hardmax is not supported"),
])
def test_unsupported_reasons(make_node, reason):
    assert reason in (CpuTarget().unsupported_reason(make_node()) or "")


def _attr(value):
    from lowering.ir import Attr

    return Attr.infer(value)


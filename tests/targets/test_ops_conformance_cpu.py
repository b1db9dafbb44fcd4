"""The ops added for ONNX conformance (issue 8) on the cpu target, through the whole pipeline.

Every case of ``tests/reference/test_ops_conformance.py`` in one model per opset (one gcc run each),
against ONNX Runtime (opset 21) or ``onnx.reference`` (newer ops), on the machine's ISA and on the portable
x86-64-v2 build. Run-time operands the compiled shapes depend on (Reduce* axes, Range bounds,
ConstantOfShape's shape, OneHot's depth, a Dropout's training flag) fail the run when they contradict them.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import runtime
from lowering.driver import CompileOptions, compile_model
from lowering.errors import LoweringError
from tests.reference.test_ops_conformance import CASES, NEWER_CASES, math_model, onnx_reference_run
from tests.reference.test_ops_math import MathCase, assert_same, const, f32, ort_run

pytestmark = pytest.mark.target_cpu


def compiled(model: onnx.ModelProto, tmp_path, name: str, isa: str | None = None):
    """The loaded cpu artifact of ``model`` and the ops its graph ended with."""
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    result = compile_model(path, output=tmp_path / f"{name}.lwr",
                           options=CompileOptions(targets=("cpu",), verify_each=True, isa=isa))
    return runtime.load(tmp_path / f"{name}.lwr"), result.report["targets"]["cpu"]["ops"]


def run(session, model, feeds) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in model.graph.output], session.run(None, feeds)))


@pytest.mark.parametrize("isa", [None, "x86-64-v2"])
def test_every_case_matches_onnxruntime(tmp_path, isa):
    model, feeds = math_model(CASES, 21)
    session, _ = compiled(model, tmp_path, "conformance21", isa)
    # sin/cos/exp-based ops are libm or polynomial approximations: a few ulp; sums in another order
    assert_same(run(session, model, feeds), ort_run(model, feeds), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("isa", [None, "x86-64-v2"])
def test_newer_ops_match_onnx_reference(tmp_path, isa):
    for opset in sorted({c.opset for c in NEWER_CASES}):
        cases = [c for c in NEWER_CASES if c.opset == opset]
        model, feeds = math_model(cases, opset)
        session, _ = compiled(model, tmp_path, f"newer{opset}", isa)
        assert_same(run(session, model, feeds), onnx_reference_run(model, feeds), rtol=2e-5, atol=2e-6)


def test_new_activations_fuse_into_one_loop(tmp_path):
    """Elu -> Softplus -> PRelu -> Sin -> HardSigmoid: one fused elementwise loop."""
    x, slope = f32(4, 8, 16), f32(8, 1)
    nodes = [helper.make_node("Elu", ["x"], ["e"], alpha=0.7), helper.make_node("Softplus", ["e"], ["s"]),
             helper.make_node("PRelu", ["s", "slope"], ["p"]), helper.make_node("Sin", ["p"], ["q"]),
             helper.make_node("HardSigmoid", ["q"], ["y"], alpha=0.3, beta=0.45)]
    graph = helper.make_graph(nodes, "chain", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
        helper.make_tensor_value_info("slope", TensorProto.FLOAT, slope.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 8
    feeds = {"x": x * 3, "slope": slope}
    session, ops = compiled(model, tmp_path, "chain")
    assert ops == {"lowering::FusedElementwise": 1}
    assert_same(run(session, model, feeds), ort_run(model, feeds), rtol=2e-5, atol=2e-6)


def _declared(case: MathCase, out_shape, out_type=TensorProto.FLOAT, opset: int = 21) -> tuple:
    """A one-node model with its output declared as ``out_shape``, and its feeds."""
    names, inputs, inits, feeds = [], [], [], {}
    for k, operand in enumerate(case.inputs):
        name = f"in{k}"
        names.append(name)
        if isinstance(operand, tuple):
            inits.append(onnx.numpy_helper.from_array(operand[1], name))
        else:
            feeds[name] = operand
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(operand.dtype),
                                                        operand.shape))
    graph = helper.make_graph([helper.make_node(case.op, names, ["y"], **case.attrs)], case.id, inputs,
                              [helper.make_tensor_value_info("y", out_type, out_shape)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), feeds


def test_runtime_operands_that_contradict_the_compiled_shapes_fail_the_run(tmp_path):
    x = f32(2, 3, 4)
    model, feeds = _declared(MathCase("r", "ReduceL1", [x, np.array([1])], {"keepdims": 0}), (2, 4))
    session, _ = compiled(model, tmp_path, "reduce")
    want = np.abs(x).sum(axis=1)
    np.testing.assert_allclose(session.run(None, feeds)[0], want, rtol=1e-6)
    np.testing.assert_allclose(session.run(None, {**feeds, "in1": np.array([-2])})[0], want, rtol=1e-6)
    for axes in ([2], [0], [3], [-4]):  # another output shape, or out of range
        with pytest.raises(RuntimeError, match="status 4"):
            session.run(None, {**feeds, "in1": np.array(axes)})

    start, limit, delta = np.float32(1), np.float32(2.5), np.float32(0.25)
    model, feeds = _declared(MathCase("range", "Range", [start, limit, delta]), (6,))
    session, _ = compiled(model, tmp_path, "range")
    np.testing.assert_allclose(session.run(None, feeds)[0], np.arange(1, 2.5, 0.25, dtype=np.float32))
    with pytest.raises(RuntimeError, match="status 4"):
        session.run(None, {**feeds, "in1": np.float32(3)})

    shape = np.array([2, 3], np.int64)
    model, feeds = _declared(MathCase("cos", "ConstantOfShape", [shape],
                                      {"value": onnx.numpy_helper.from_array(np.array([7], np.int32))}),
                             (2, 3), TensorProto.INT32)
    session, _ = compiled(model, tmp_path, "constantofshape")
    np.testing.assert_array_equal(session.run(None, feeds)[0], np.full((2, 3), 7, np.int32))
    with pytest.raises(RuntimeError, match="status 4"):
        session.run(None, {"in0": np.array([3, 2], np.int64)})

    model, feeds = _declared(MathCase("dropout", "Dropout", [x, np.float32(0.5), np.bool_(False)]), x.shape)
    session, _ = compiled(model, tmp_path, "dropout")
    np.testing.assert_array_equal(session.run(None, feeds)[0], x)
    zero_ratio = {**feeds, "in1": np.float32(0), "in2": np.bool_(True)}
    np.testing.assert_array_equal(session.run(None, zero_ratio)[0], x)
    with pytest.raises(RuntimeError, match="status 4"):
        session.run(None, {**feeds, "in2": np.bool_(True)})


def test_unsupported_forms_name_the_node(tmp_path):
    x = f32(3, 4)
    training = MathCase("d", "Dropout", [x, const(np.float32(0.5)), const(np.bool_(True))])
    model, _ = _declared(training, x.shape)
    with pytest.raises(LoweringError, match=r"Dropout.*training mode"):
        compiled(model, tmp_path, "training")
    model, _ = _declared(MathCase("lp", "LpNormalization", [x], {"p": 3}), x.shape)
    with pytest.raises(LoweringError, match="p=3"):
        compiled(model, tmp_path, "lp3")


def test_new_float_ops_on_the_cuda_emulator():
    """The cuda target shares the cpu target's float expression table: the new activations and PRelu
    must build and compute there too (emulated; through nvcc -Werror as well where it is installed)."""
    from tests.cuda.harness import GraphMaker, check_emulated

    m = GraphMaker("conformance_activations")
    x = m.input(2, 3, 4, 5)
    unit = m.node("Tanh", x)  # inside (-1, 1) for the inverse trigonometric ops
    above = m.node("Add", m.node("Abs", x), m.const(np.float32(1.0)))
    outs = [m.node(op, x) for op in ("Cos", "Sin", "Atan", "Asinh", "Softplus", "Softsign", "HardSwish",
                                     "Mish", "Elu", "Selu", "Celu", "ThresholdedRelu", "HardSigmoid",
                                     "Shrink")]
    outs += [m.node(op, unit) for op in ("Tan", "Acos", "Asin", "Atanh", "Cosh", "Sinh")]
    outs += [m.node("Acosh", above), m.node("Elu", x, alpha=0.5), m.node("Shrink", x, bias=0.1, lambd=0.2),
             m.node("PRelu", x, m.input(3, 1, 1))]
    check_emulated(m.output(*outs))

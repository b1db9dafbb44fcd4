"""ONNX Runtime's dynamically quantized models (``quantize_dynamic``) through the whole cpu path.

``quantize_dynamic`` turns MatMul/Gemm into DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scale)
-> Add(bias) and Conv into the same with ConvInteger. The project's pipeline keeps the integer ops as they
are (fusing only the float Mul/Add/Relu tail), and the cpu target runs DynamicQuantizeLinear, the int8 GEMM
with runtime zero points and int32 output, Cast and the float epilogue.

Tolerance: DynamicQuantizeLinear is bit-exact with ONNX Runtime and the integer accumulators are exact, so
what differs is float rounding in the epilogue (scale products, bias adds, Softmax's exp), a few ulps per
layer; a last-ulp difference can move a later DynamicQuantizeLinear's range and so one quantization step
of one value, which stays far below 1e-5 of the output range in these models (measured ~2e-7). Against
the reference interpreter on the post-pipeline graph the artifact agrees to float rounding as well.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import QuantType, quantize_dynamic

import runtime
from lowering.driver import CompileOptions, compile_model, load_onnx
from lowering.passmanager import PassContext, PassManager
from lowering.reference import run_graph
from passes.pipeline import default_passes
from tests.zoo.fixtures import zoo  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.target_cpu]

REL_TOL = 1e-5  # of the largest output magnitude (see the module docstring)


@pytest.mark.parametrize("weight_type", [QuantType.QInt8, QuantType.QUInt8], ids=["qint8", "quint8"])
@pytest.mark.parametrize("name, integer_ops", [
    ("mlp", {"MatMulInteger"}),
    ("small_cnn", {"MatMulInteger", "ConvInteger"}),
])
def test_dynamic_quantized_model_on_cpu(zoo, tmp_path, name, integer_ops, weight_type):  # noqa: F811
    fp32 = zoo.get(name, "legacy", 17)
    model_path = tmp_path / "m.dyn.onnx"
    quantize_dynamic(str(fp32), str(model_path), weight_type=weight_type)
    ops = {n.op_type for n in onnx.load(str(model_path)).graph.node}
    assert {"DynamicQuantizeLinear", *integer_ops} <= ops, ops

    result = compile_model(model_path, output=tmp_path / "m.lwr", options=CompileOptions(verify_each=True))
    kernels = {k["op"] for k in result.report["targets"]["cpu"]["kernels"]}
    # the Cast of the integer accumulator fuses into the float epilogue that follows it
    assert {"DynamicQuantizeLinear", "lowering::FusedElementwise", *integer_ops} <= kernels, kernels

    sess = runtime.load(tmp_path / "m.lwr")
    graph = load_onnx(model_path)  # the graph the artifact was built from
    PassManager(default_passes()).run(graph, PassContext(verify_each=True))
    ref = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    input_name = ref.get_inputs()[0].name
    shape = tuple(ref.get_inputs()[0].shape)
    worst = worst_ref = 0.0
    equal = total = 0
    for seed in range(6):
        x = (np.random.default_rng(100 + seed).standard_normal(shape) * (1 + seed)).astype(np.float32)
        got = sess.run(None, {input_name: x})[0]
        want = ref.run(None, {input_name: x})[0]
        interp = run_graph(graph, {input_name: x})[graph.output_names[0]]
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
        span = float(np.abs(want).max())
        err = float(np.abs(got - want).max()) / span
        err_ref = float(np.abs(got - interp).max()) / span
        assert err <= REL_TOL, f"seed {seed}: max |cpu - ORT| / max |ORT| = {err:.3g}"
        assert err_ref <= REL_TOL, f"seed {seed}: max |cpu - reference| / max |ORT| = {err_ref:.3g}"
        worst, worst_ref = max(worst, err), max(worst_ref, err_ref)
        equal += int((got == want).sum())
        total += got.size
    print(f"{name} {weight_type.name}: max rel error vs ONNX Runtime {worst:.3g}, "
          f"vs reference {worst_ref:.3g}; {equal}/{total} outputs exactly equal to ONNX Runtime "
          f"({100 * equal / total:.1f}%)")

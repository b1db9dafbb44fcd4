"""Quantized models through the whole cpu path: quantize (ONNX Runtime's calibrators, QDQ) -> fold into
integer ops -> integer C kernels. The artifact must equal the reference interpreter bit for bit (the
integer path is the reference the accelerator is checked against) and agree with ONNX Runtime running
the same QDQ model within one output quantization step; the exactly-equal fraction is printed."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import runtime
from lowering.driver import CompileOptions, compile_model, load_onnx
from lowering.passmanager import PassContext, PassManager
from lowering.quantize import QuantizeConfig, quantize_model
from lowering.quantize.progress import no_progress
from lowering.reference import run_graph
from passes.pipeline import default_passes
from tests.zoo.fixtures import zoo  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.target_cpu]


def _output_step(qdq_path) -> float:
    """The scale of the QuantizeLinear feeding the model output's final DequantizeLinear."""
    model = onnx.load(str(qdq_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = model.graph.output[0].name
    producer = next(n for n in model.graph.node if out in n.output)
    assert producer.op_type == "DequantizeLinear", producer.op_type
    return float(inits[producer.input[1]])


@pytest.mark.parametrize("name, method, activation", [
    ("resnet_style", "minmax", "int8"), ("mobilenet_style", "percentile", "int8"),
    ("small_cnn", "minmax", "uint8"), ("grouped_concat", "entropy", "int8")])
def test_quantized_model_on_cpu(zoo, tmp_path, name, method, activation):  # noqa: F811
    fp32 = zoo.get(name, "legacy", 17)
    shape = tuple(d.dim_value for d in onnx.load(str(fp32)).graph.input[0].type.tensor_type.shape.dim)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((16,) + shape[1:]).astype(np.float32))
    qdq = tmp_path / "m.int8.onnx"
    quantize_model(fp32, tmp_path / "cal.npz", qdq, QuantizeConfig(method=method, activation_type=activation),
                   progress=no_progress)
    compile_model(qdq, output=tmp_path / "m.lwr", options=CompileOptions(verify_each=True))
    sess = runtime.load(tmp_path / "m.lwr")
    graph = load_onnx(qdq)  # the folded integer graph the artifact was built from
    PassManager(default_passes()).run(graph, PassContext(verify_each=True))
    ref = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"])
    step = _output_step(qdq)
    fp32_ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    equal = total = 0
    for seed in range(4):  # inputs not used for calibration
        x = np.random.default_rng(1000 + seed).standard_normal(shape).astype(np.float32)
        got = sess.run(None, {"x": x})[0]
        want = ref.run(None, {"x": x})[0]
        full = fp32_ref.run(None, {"x": x})[0].reshape(-1).astype(np.float64)
        flat = got.reshape(-1).astype(np.float64)
        assert flat @ full / (np.linalg.norm(flat) * np.linalg.norm(full)) >= 0.99  # cosine vs fp32
        np.testing.assert_array_equal(got, run_graph(graph, {"x": x})[graph.output_names[0]])
        np.testing.assert_allclose(got, want, rtol=0, atol=1.01 * step)
        equal += int((got == want).sum())
        total += got.size
    print(f"{name}: {equal}/{total} outputs exactly equal to ONNX Runtime ({100 * equal / total:.1f}%)")
    kernels = [k["op"] for k in compile_model(qdq, output=tmp_path / "again.lwr").report["targets"]["cpu"]
               ["kernels"]]
    assert not {"lowering::FusedConv", "lowering::FusedGemm", "Conv", "Gemm"} & set(kernels), kernels

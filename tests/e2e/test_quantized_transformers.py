"""A BERT-style encoder (the zoo's ``bert_tiny``: random weights, token-id and attention-mask inputs) through
the whole int8 cpu path: quantize (ONNX Runtime's calibrators, QDQ) -> fold into integer ops -> integer C
kernels, with LayerNormalization, Softmax and the GELU's Erf left float between DequantizeLinear and
QuantizeLinear.

Checked on inputs not used for calibration:

- the artifact equals the reference interpreter bit for bit;
- it agrees with ONNX Runtime running the same QDQ model within one quantization step of each output
  (every output of the QDQ model comes from a DequantizeLinear: the policy quantizes LayerNormalization's
  output, so BERT's last hidden state has a step too); the exactly-equal fraction is printed;
- its outputs have cosine similarity >= 0.99 with the fp32 model's.
"""

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

LAYERS = 2  # of the zoo's bert_tiny
CALIBRATION_SEEDS, HELD_OUT_SEEDS = range(100, 132), range(1000, 1004)


def _feeds(name: str, seeds) -> list[dict]:
    from tests.zoo.export import example_inputs

    return [example_inputs(name, seed=s) for s in seeds]


def _output_steps(qdq_path) -> dict[str, float]:
    """Per model output, the scale of the DequantizeLinear producing it."""
    model = onnx.load(str(qdq_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    steps = {}
    for out in model.graph.output:
        producer = next(n for n in model.graph.node if out.name in n.output)
        assert producer.op_type == "DequantizeLinear", (out.name, producer.op_type)
        steps[out.name] = float(inits[producer.input[1]])
    return steps


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module", params=[("legacy", 17), ("dynamo", 18)], ids=["legacy17", "dynamo18"])
def quantized_bert(request, zoo, tmp_path_factory):  # noqa: F811
    """(fp32 model, QDQ model, artifact, quantization report, build report, folded graph)."""
    exporter, opset = request.param
    tmp = tmp_path_factory.mktemp(f"qbert_{exporter}")
    fp32 = zoo.get("bert_tiny", exporter, opset)
    feeds = _feeds("bert_tiny", CALIBRATION_SEEDS)  # integer token ids and masks, stacked on axis 0
    np.savez(tmp / "cal.npz", **{k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
    qdq = tmp / "bert.int8.onnx"
    result = quantize_model(fp32, tmp / "cal.npz", qdq, QuantizeConfig(), progress=no_progress)
    built = compile_model(qdq, output=tmp / "bert.int8.lwr", options=CompileOptions(verify_each=True))
    graph = load_onnx(qdq)  # the folded integer graph the artifact was built from
    PassManager(default_passes()).run(graph, PassContext(verify_each=True))
    return fp32, qdq, tmp / "bert.int8.lwr", result.report, built.report, graph


def test_quantized_bert_matches_reference_onnxruntime_and_fp32(quantized_bert):
    fp32, qdq, artifact, _, _, graph = quantized_bert
    sess, two_threads = runtime.load(artifact), runtime.load(artifact, threads=2)
    ref = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"])
    full = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    names = [o.name for o in ref.get_outputs()]
    steps = _output_steps(qdq)
    equal = {n: 0 for n in names}
    total = {n: 0 for n in names}
    for feed in _feeds("bert_tiny", HELD_OUT_SEEDS):  # inputs not used for calibration
        got, want, fp = sess.run(None, feed), ref.run(None, feed), full.run(None, feed)
        interpreted = run_graph(graph, feed)
        for g, g2 in zip(got, two_threads.run(None, feed)):
            np.testing.assert_array_equal(g, g2)  # the integer kernels split work, never the arithmetic
        for name, g, w, f in zip(names, got, want, fp):
            np.testing.assert_array_equal(g, interpreted[name])  # artifact == reference, bit for bit
            np.testing.assert_allclose(g, w, rtol=0, atol=1.01 * steps[name])  # within 1 output step
            assert _cosine(g, f) >= 0.99, name
            equal[name] += int((g == w).sum())
            total[name] += g.size
    for name in names:
        print(f"bert_tiny {name}: {equal[name]}/{total[name]} values exactly equal to ONNX Runtime "
              f"({100 * equal[name] / total[name]:.1f}%), step {steps[name]:.4g}")


def test_quantized_bert_runs_integer_kernels(quantized_bert):
    """Every MatMul is integer, the two activation-by-activation ones per layer (Q.K^T, P.V) included;
    the embedding Gather reads an int8 table; LayerNorm, Softmax and the mask's Add stay float, each with
    its reason in the quantization report."""
    _, _, _, qreport, report, graph = quantized_bert
    ops = report["targets"]["cpu"]["ops"]
    assert ops["lowering::QMatMul"] == 6 * LAYERS + 2 * LAYERS + 1  # q,k,v,out,2 FFN; QK^T, PV; pooler
    assert "MatMul" not in ops and "Gemm" not in ops and "lowering::FusedGemm" not in ops
    assert ops["LayerNormalization"] == 2 * LAYERS + 1 and ops["Softmax"] == LAYERS
    two_activations = [n for n in graph if n.op == "QMatMul" and not n.input(1).is_const]
    assert len(two_activations) == 2 * LAYERS
    tables = [n.input(0) for n in graph if n.op == "Gather" and n.input(0).is_const]
    assert tables and all(t.const.dtype == np.int8 for t in tables)  # the word embeddings, quantized
    assert any(f["op"] == "Softmax" and "no integer kernel" in f["reason"] for f in qreport["float_ops"])
    mask_adds = [f for f in qreport["float_ops"] if f["op"] == "Add"]
    assert len(mask_adds) == LAYERS and all("would erase one input" in f["reason"] for f in mask_adds)


def _source_scale(producers: dict, inits: dict, tensor: str) -> float | None:
    """The scale of the DequantizeLinear a float tensor is computed from, through float ops with one
    computed input (a Div by a constant), or None."""
    node = producers.get(tensor)
    while node is not None and node.op_type != "DequantizeLinear":
        computed = [i for i in node.input if i in producers and producers[i].op_type != "Constant"]
        if len(computed) != 1:
            return None
        node = producers[computed[0]]
    return None if node is None else float(inits[node.input[1]])


def test_attention_scores_survive_the_mask(quantized_bert):
    """Softmax's input is ``scores + mask`` added in float, the scores dequantized at their own step: int8
    at the step the additive mask (finfo.min) forces on the sum (~1e36) would round every score to the
    same code, and softmax would attend uniformly (the quantizer leaves that Add float)."""
    _, qdq, _, _, _, _ = quantized_bert
    model = onnx.load(str(qdq))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == LAYERS
    for softmax in softmaxes:
        add = producers[softmax.input[0]]
        assert add.op_type == "Add", add.op_type
        scales = [_source_scale(producers, inits, i) for i in add.input]
        assert min(s for s in scales if s is not None) < 0.1, scales  # the scores' own step
        assert max(s for s in scales if s is not None) > 1e30, scales  # the mask's (int8 codes 0, -255)

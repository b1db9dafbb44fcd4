"""quantize_model: QDQ models ONNX Runtime runs, the quantization policy, the report, bounded calibration."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from lowering.errors import LoweringError
from lowering.quantize import METHODS, QuantizeConfig, format_report, quantize_model

from .conftest import cosines, run_ort

pytestmark = pytest.mark.unit

REPORT_KEYS = {"version", "onnxruntime", "config", "calibration", "evaluation", "layers", "model",
               "quantized_ops", "folded_activations", "float_ops", "qdq_model"}
LAYER_KEYS = {"name", "op", "weight", "bias", "input", "output", "sqnr_db"}


@pytest.fixture(scope="module")
def quantized(zoo_models, tmp_path_factory):
    """(model, method) -> (QDQ path, report), each quantized once per module."""
    d = tmp_path_factory.mktemp("qdq")
    cache = {}

    def get(name, method="minmax", **config):
        key = (name, method, tuple(sorted(config.items())))
        if key not in cache:
            model, cal, _ = zoo_models[name]
            suffix = "_".join(f"{k}{v}" for k, v in sorted(config.items()))
            out = d / f"{name}.{method}{suffix}.onnx"
            result = quantize_model(model, cal, out, QuantizeConfig(method=method, **config))
            cache[key] = (out, result.report)
        return cache[key]

    return get


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["resnet_style", "mobilenet_style"])
def test_each_method_keeps_output_cosine(quantized, zoo_models, name, method):
    path, report = quantized(name, method)
    model, _, held_out = zoo_models[name]
    cos = cosines(run_ort(model, held_out), run_ort(path, held_out))
    assert cos.min() >= 0.99, (name, method, cos.min())
    assert report["model"]["cosine_min"] >= 0.99


def _nodes(path):
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    return model, inits, producer


def _axis(node):
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


@pytest.mark.parametrize("name", ["resnet_style", "mobilenet_style"])
def test_policy_per_channel_weights_per_tensor_activations_int32_bias(quantized, name):
    path, _ = quantized(name)
    model, inits, producer = _nodes(path)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        x_dq, w_dq, b_dq = (producer[i] for i in conv.input)
        assert {x_dq.op_type, w_dq.op_type, b_dq.op_type} == {"DequantizeLinear"}
        w_q, w_scale, w_zp = (inits[i] for i in w_dq.input)
        assert w_q.dtype == np.int8 and _axis(w_dq) == 0
        assert w_scale.shape == (w_q.shape[0],) and np.all(w_zp == 0)  # symmetric, per output channel
        assert inits[b_dq.input[0]].dtype == np.int32
        x_scale, x_zp = inits[x_dq.input[1]], inits[x_dq.input[2]]
        assert x_scale.size == 1 and x_zp.dtype == np.int8  # per tensor, int8 (asymmetric)
        np.testing.assert_allclose(inits[b_dq.input[1]], x_scale * w_scale, rtol=1e-6)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    w_dq = producer[gemm.input[1]]
    assert inits[w_dq.input[1]].size == inits[w_dq.input[0]].shape[0] and _axis(w_dq) == 0


def test_inputs_and_outputs_keep_names_and_float_dtype(quantized, zoo_models):
    path, _ = quantized("resnet_style")
    fp32 = ort.InferenceSession(str(zoo_models["resnet_style"][0]))
    qdq = ort.InferenceSession(str(path))
    for a, b in ((fp32.get_inputs(), qdq.get_inputs()), (fp32.get_outputs(), qdq.get_outputs())):
        assert [(i.name, i.type, i.shape) for i in a] == [(i.name, i.type, i.shape) for i in b]
    assert qdq.get_inputs()[0].type == "tensor(float)" and qdq.get_outputs()[0].type == "tensor(float)"


def test_per_tensor_weights_and_uint8_activations(quantized):
    path, report = quantized("resnet_style", per_channel=False, activation_type="uint8")
    model, inits, producer = _nodes(path)
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            w_dq = producer[node.input[1]]
            assert inits[w_dq.input[1]].size == 1 and inits[w_dq.input[0]].dtype == np.int8
            assert inits[producer[node.input[0]].input[2]].dtype == np.uint8
    assert all(layer["weight"]["axis"] is None and layer["weight"]["channels"] == 1
               for layer in report["layers"])
    assert report["config"]["per_channel"] is False and report["config"]["activation_type"] == "uint8"
    assert report["model"]["cosine_min"] >= 0.99


def test_report_keys_scales_and_sqnr(quantized):
    path, report = quantized("resnet_style")
    assert set(report) == REPORT_KEYS
    assert report["config"] == QuantizeConfig().to_json()
    assert report["calibration"]["samples"] == 32 and report["calibration"]["batch"] == 1
    assert len(report["calibration"]["sha256"]) == 64
    assert report["evaluation"]["samples"] == 32
    assert "first 32 calibration samples" in report["evaluation"]["source"]
    convs = sum(1 for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")
    assert [row["op"] for row in report["layers"]].count("Conv") == convs
    for row in report["layers"]:
        assert set(row) == LAYER_KEYS
        w = row["weight"]
        assert w["axis"] == 0 and w["symmetric"] and 0 < w["scale_min"] <= w["scale_max"]
        assert row["bias"]["dtype"] == "int32"
        assert row["input"]["scale"] > 0 and -128 <= row["input"]["zero_point"] <= 127
        assert row["output"]["scale"] > 0
        assert math.isfinite(row["sqnr_db"]) and row["sqnr_db"] > 10, row
    (out,) = report["model"]["outputs"]
    assert out["name"] == "y" and out["top1_agreement"] >= 0.9 and math.isfinite(out["sqnr_db"])
    assert report["quantized_ops"]["Conv"] == convs and report["float_ops"] == []
    assert {a["op"] for a in report["folded_activations"]} == {"Relu"}
    # JSON-safe, and stable when written with sorted keys
    text = json.dumps(report, sort_keys=True)
    assert json.loads(text) == report
    assert "SQNR" in format_report(report)


def test_same_inputs_same_bytes(zoo_models, tmp_path):
    model, cal, _ = zoo_models["mobilenet_style"]
    a = quantize_model(model, cal, tmp_path / "a.onnx")
    b = quantize_model(model, cal, tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert a.report == b.report


def test_chunked_minmax_calibration_matches_one_pass(zoo_models, tmp_path):
    """Calibration folds each chunk into a running range: one batch per chunk gives the same model."""
    model, cal, _ = zoo_models["resnet_style"]
    whole = quantize_model(model, cal, tmp_path / "whole.onnx")
    tiny_budget = quantize_model(model, cal, tmp_path / "chunked.onnx", QuantizeConfig(memory_budget=1))
    assert whole.report["calibration"]["chunk_batches"] > 1
    assert tiny_budget.report["calibration"]["chunk_batches"] == 1
    assert (tmp_path / "whole.onnx").read_bytes() == (tmp_path / "chunked.onnx").read_bytes()


def test_histogram_calibration_holds_one_chunk_at_a_time(zoo_models, tmp_path, monkeypatch):
    """ORT's histogram calibrator keeps every output of a collect_data call; calls are bounded chunks."""
    from onnxruntime.quantization.calibrate import HistogramCalibrater

    sizes = []
    original = HistogramCalibrater.collect_data

    def spy(self, reader):
        runs = []
        inner = reader.get_next
        reader.get_next = lambda: (lambda item: (runs.append(1), item)[1] if item else item)(inner())
        original(self, reader)
        sizes.append(len(runs))

    monkeypatch.setattr(HistogramCalibrater, "collect_data", spy)
    model, cal, held_out = zoo_models["mobilenet_style"]
    budget = 3 * 200_000  # a few batches of mobilenet_style's calibrated tensors
    result = quantize_model(model, cal, tmp_path / "p.onnx", QuantizeConfig(method="percentile",
                                                                             memory_budget=budget))
    chunk = result.report["calibration"]["chunk_batches"]
    assert 1 <= chunk < 32 and max(sizes) <= chunk and sum(sizes) == 32 and len(sizes) > 1
    cos = cosines(run_ort(model, held_out), run_ort(tmp_path / "p.onnx", held_out))
    assert cos.min() >= 0.99


def test_calibration_memory_does_not_grow_with_the_data_set(zoo, tmp_path):
    """300 samples whose calibrated tensors total ~240 MB go through a 4 MiB budget in a few MiB."""
    import tracemalloc

    model = zoo.get("resnet_style")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "warm.npz", x=rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((300, 3, 32, 32)).astype(np.float32))
    config = QuantizeConfig(method="percentile", memory_budget=4 << 20, report_samples=4)
    quantize_model(model, tmp_path / "warm.npz", tmp_path / "w.onnx", config)  # imports, caches
    tracemalloc.start()
    try:
        report = quantize_model(model, tmp_path / "cal.npz", tmp_path / "q.onnx", config).report
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    chunk = report["calibration"]["chunk_batches"]
    total = 300 * config.memory_budget / (chunk + 1)  # what collecting everything at once would hold
    assert total > 128 << 20 and peak < 32 << 20, (chunk, total, peak)


def test_static_batch_two_and_symbolic_batch(tiny, tmp_path):
    r2 = quantize_model(tiny / "cnn_b2.onnx", tiny / "cnn_cal.npz", tmp_path / "b2.onnx")
    assert r2.report["calibration"]["batch"] == 2 and r2.report["evaluation"]["samples"] == 8
    rd = quantize_model(tiny / "cnn_dyn.onnx", tiny / "cnn_cal.npz", tmp_path / "dyn.onnx")
    assert rd.report["calibration"]["batch"] == 1
    sess = ort.InferenceSession(str(tmp_path / "dyn.onnx"))
    assert sess.get_inputs()[0].shape[0] == "N"  # the symbolic batch survives
    x = np.random.default_rng(5).standard_normal((3, 3, 8, 8)).astype(np.float32)
    assert sess.run(None, {"x": x})[0].shape == (3, 5)


def test_two_inputs_and_an_op_that_stays_float(tiny, tmp_path):
    result = quantize_model(tiny / "two.onnx", tiny / "two_cal.npz", tmp_path / "two.onnx")
    report = result.report
    assert [f["op"] for f in report["float_ops"]] == ["Softmax"]
    assert "no integer kernel" in report["float_ops"][0]["reason"]
    assert report["quantized_ops"] == {"Add": 1, "Conv": 1}
    assert [row["name"] for row in report["layers"]] == ["conv"]
    assert "stayed float: Softmax x1" in format_report(report)


def test_model_with_nothing_to_quantize_gets_a_report(tiny, tmp_path):
    result = quantize_model(tiny / "float_only.onnx", tiny / "float_only_cal.npz", tmp_path / "f.onnx")
    report = result.report
    assert report["layers"] == [] and report["quantized_ops"] == {}
    assert [f["op"] for f in report["float_ops"]] == ["Exp", "Softmax"]
    assert report["model"]["cosine_min"] == pytest.approx(1.0)
    x = np.random.default_rng(0).standard_normal((1, 6)).astype(np.float32)
    np.testing.assert_allclose(ort.InferenceSession(str(tmp_path / "f.onnx")).run(None, {"x": x})[0],
                               ort.InferenceSession(str(tiny / "float_only.onnx")).run(None, {"x": x})[0],
                               rtol=1e-6)


@pytest.mark.parametrize("opset", [17, 18])
def test_only_a_spatial_reduce_mean_is_quantized(tiny, tmp_path, opset):
    report = quantize_model(tiny / f"means{opset}.onnx", tiny / "means_cal.npz", tmp_path / "m.onnx").report
    assert report["quantized_ops"] == {"Conv": 2, "ReduceMean": 1}
    (stayed,) = report["float_ops"]
    assert stayed["node"] == "cmean" and "spatial" in stayed["reason"]


def test_softmax_model_from_the_zoo(zoo, tmp_path):
    from .conftest import zoo_inputs

    np.savez(tmp_path / "cal.npz", x=zoo_inputs("mlp", range(16)))
    report = quantize_model(zoo.get("mlp"), tmp_path / "cal.npz", tmp_path / "mlp.onnx").report
    assert [f["op"] for f in report["float_ops"]] == ["Softmax"]
    assert [row["op"] for row in report["layers"]] == ["Gemm", "Gemm", "Gemm"]


def test_config_is_validated():
    with pytest.raises(LoweringError, match="unknown calibration method 'kl'"):
        QuantizeConfig(method="kl")
    with pytest.raises(LoweringError, match="percentile must be in"):
        QuantizeConfig(percentile=0)
    with pytest.raises(LoweringError, match="activation type"):
        QuantizeConfig(activation_type="int4")
    assert QuantizeConfig(method="percentile").to_json()["percentile"] == 99.999
    assert QuantizeConfig(percentile=99.0).to_json() == QuantizeConfig().to_json()  # unused percentile


def test_failure_leaves_no_output(tiny, tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.full((2, 3, 8, 8), np.nan, np.float32))
    with pytest.raises(LoweringError, match="NaN"):
        quantize_model(tiny / "cnn.onnx", tmp_path / "bad.npz", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(LoweringError, match="overwrite the model"):
        quantize_model(tiny / "cnn.onnx", tiny / "cnn_cal.npz", tiny / "cnn.onnx")


def test_progress_bar_only_on_a_terminal(tiny, tmp_path, monkeypatch):
    import io

    from lowering.quantize.progress import terminal_progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((io.StringIO(), False), (Tty(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        quantize_model(tiny / "cnn.onnx", tiny / "cnn_cal.npz", tmp_path / "p.onnx",
                       progress=terminal_progress)
        assert ("calibrating (minmax)" in stream.getvalue()) is shown


def _masked_attention(mask_value: float) -> onnx.ModelProto:
    """softmax(x @ w + (1 - m) * mask_value): attention scores plus BERT's additive mask."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((8, 8)).astype(np.float32), "w")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    big = numpy_helper.from_array(np.array(mask_value, np.float32), "big")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"], name="scores"),
             helper.make_node("Sub", ["one", "m"], ["inv"], name="invert"),
             helper.make_node("Mul", ["inv", "big"], ["mask"], name="mask"),
             helper.make_node("Add", ["s", "mask"], ["masked"], name="add_mask"),
             helper.make_node("Softmax", ["masked"], ["y"], name="softmax", axis=-1)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8]) for n in ("x", "m")]
    graph = helper.make_graph(nodes, "attention", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
                              initializer=[w, one, big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("mask_value", [float(np.finfo(np.float32).min), -10000.0])
def test_an_additive_mask_add_stays_float_so_the_scores_survive(tmp_path, mask_value):
    """Quantizing ``scores + mask`` at the step the mask forces (~1e36, or ~40 for -10000) rounds every
    score to one code; the quantizer leaves that Add float, and the probabilities stay close to fp32's."""
    onnx.save(_masked_attention(mask_value), tmp_path / "att.onnx")
    rng = np.random.default_rng(0)

    def feeds(n):
        m = np.ones((n, 4, 8), np.float32)
        m[..., 6:] = 0
        return {"x": rng.standard_normal((n, 4, 8)).astype(np.float32), "m": m}

    np.savez(tmp_path / "cal.npz", **feeds(8))
    report = quantize_model(tmp_path / "att.onnx", tmp_path / "cal.npz", tmp_path / "q.onnx").report
    (add,) = [f for f in report["float_ops"] if f["op"] == "Add"]
    assert add["node"] == "add_mask" and "would erase one input" in add["reason"]
    assert add["detail"].startswith("input 's' spans")
    feed = {k: v[:1] for k, v in feeds(1).items()}
    got = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, feed)[0]
    want = ort.InferenceSession(str(tmp_path / "att.onnx")).run(None, feed)[0]
    assert cosines(got, want).min() > 0.99 and np.all(got[..., 6:] == 0)


def test_generated_calibration_draws_token_ids_within_the_embedding_table(zoo, tmp_path):
    """Without data, BERT's token ids are drawn within its word-embedding table (found through the
    Gather on the initializer) and its attention mask in [0, 2): calibration sees finite values (a mask of
    2 or more would overflow ``(1 - mask) * finfo.min`` to +inf) and the warning says what was drawn."""
    from lowering.quantize.generated import table_bounds

    bert = zoo.get("bert_tiny", "legacy", 17)
    assert table_bounds(onnx.load(str(bert))) == {"input_ids": 100}
    messages = []
    report = quantize_model(bert, None, tmp_path / "b.onnx", warn=messages.append).report
    (message,) = messages
    assert "input_ids integers in [0, 100) (its Gather table)" in message
    assert "attention_mask integers in [0, 2)" in message and "floats" not in message
    assert report["calibration"]["generated"] and report["model"]["cosine_min"] > 0.99

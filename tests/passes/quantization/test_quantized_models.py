"""Models quantized by other tools, end to end through the default pipeline, against ONNX Runtime running
the same quantized model: ONNX Runtime's ``quantize_static`` in QDQ and QOperator format, and a PyTorch
PT2E (torchao) model exported with the dynamo exporter.

After the pipeline every Conv/Gemm/MatMul is an integer op; the outputs agree with ONNX Runtime within
one quantization step at >= 99% of the elements (the integer ops requantize in fixed point, ONNX Runtime
in float32; the exact fractions are in the notes of each case).
"""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from lowering.onnx.importer import import_model, load_model_proto
from lowering.opinfo import DOMAIN
from lowering.passmanager import PassContext, PassManager
from lowering.reference import run_graph
from passes.pipeline import default_passes
from tests.zoo.fixtures import zoo  # noqa: F401  (a pytest fixture)

pytestmark = pytest.mark.e2e
DATA = Path(__file__).parent / "data"
FLOAT_LINEAR = {"Conv", "Gemm", "MatMul", f"{DOMAIN}::FusedConv", f"{DOMAIN}::FusedGemm"}
CALIBRATION_SEEDS, TEST_SEEDS = range(4), range(100, 108)


def _quantize(cache, name: str, tmp: Path, fmt: str = "QDQ", activations: str = "QInt8",
              per_channel: bool = True) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from tests.zoo.export import example_input

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter([{"x": example_input(name, seed=s)} for s in CALIBRATION_SEEDS])

        def get_next(self):
            return next(self.samples, None)

    out = tmp / f"{name}_{fmt}_{activations}_{'pc' if per_channel else 'pt'}.onnx"
    quantize_static(str(cache.get(name)), str(out), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=per_channel, activation_type=getattr(QuantType, activations),
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return out


def _compile(path: Path):
    graph = import_model(load_model_proto(path), name=path.name)
    out = graph.outputs[0].producer
    assert out.op == "DequantizeLinear", "the quantized model's output comes from a DequantizeLinear"
    step = float(out.input(1).const.reshape(-1)[0])
    messages = []
    PassManager(default_passes()).run(graph, PassContext(verify_each=True, log=messages.append))
    return graph, step, messages


def _agreement(path: Path, graph, step: float, inputs) -> tuple[float, float, float]:
    """(fraction within one step, fraction exactly equal, max steps apart) against ONNX Runtime."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = graph.inputs[0].name
    diffs = []
    for x in inputs:
        want = session.run(None, {name: x})[0]
        got = run_graph(graph, {name: x})[graph.output_names[0]]
        diffs.append(np.abs(got.astype(np.float64) - want.astype(np.float64)).reshape(-1) / step)
    d = np.concatenate(diffs)
    return float(np.mean(d <= 1 + 1e-3)), float(np.mean(d < 1e-3)), float(d.max())


def _check(path: Path, name: str, expect_float: set[str]):
    from tests.zoo.export import example_input

    graph, step, messages = _compile(path)
    ops = set(graph.op_counts())
    assert not ops & FLOAT_LINEAR, f"float linear ops left: {ops & FLOAT_LINEAR}\n" + "\n".join(messages)
    stayed = {op for op in ops if not op.startswith(DOMAIN)}
    assert stayed == expect_float, (stayed, "\n".join(m for m in messages if "stays float" in m))
    within, exact, worst = _agreement(path, graph, step, [example_input(name, seed=s) for s in TEST_SEEDS])
    assert within >= 0.99, f"{name}: only {within:.4f} within one step (exact {exact:.4f}, max {worst})"
    return graph, exact


BOUNDARY = {"QuantizeLinear", "DequantizeLinear"}


@pytest.mark.parametrize("name,expect_float", [
    ("resnet_style", BOUNDARY | {"Flatten"}),  # int8 Flatten between the pool and the Gemm
    ("mobilenet_style", BOUNDARY | {"Flatten"}),
    ("mlp", BOUNDARY | {"Softmax"}),  # no integer softmax: DQ -> Softmax -> Q stays float
    ("small_cnn", BOUNDARY | {"MaxPool", "Flatten"}),
    ("activations", BOUNDARY | {"Flatten"}),  # LeakyRelu/Tanh/Sigmoid become tables
])
def test_onnxruntime_qdq_models(zoo, tmp_path, name, expect_float):  # noqa: F811
    _check(_quantize(zoo, name, tmp_path), name, expect_float)


def test_onnxruntime_qdq_uint8_activations_per_tensor_weights(zoo, tmp_path):  # noqa: F811
    path = _quantize(zoo, "resnet_style", tmp_path, activations="QUInt8", per_channel=False)
    graph, _ = _check(path, "resnet_style", BOUNDARY | {"Flatten"})
    conv = next(n for n in graph.nodes if n.op == "QConv")
    assert conv.input(0).type.dtype.value == "uint8" and len(conv.attr("multiplier")) == 1


@pytest.mark.parametrize("name", ["resnet_style", "activations"])
def test_onnxruntime_qoperator_models(zoo, tmp_path, name):  # noqa: F811
    """QLinearConv, com.microsoft QLinearAdd/QGemm/QLinearGlobalAveragePool (resnet), QLinearLeakyRelu,
    QLinearSigmoid, QLinearMul (activations); the Tanh that ONNX Runtime left float between a
    DequantizeLinear and a QuantizeLinear becomes a table too."""
    _check(_quantize(zoo, name, tmp_path, fmt="QOperator"), name, BOUNDARY | {"Flatten"})


def test_pytorch_pt2e_model():
    """A small CNN quantized with PyTorch PT2E (torchao, XNNPACK quantizer, per-channel) and exported by
    the dynamo exporter; ``make_pt2e_model.py`` regenerates the file. Float biases, explicit Relu after
    Conv and Add, ReduceMean for the global pool."""
    path = DATA / "pt2e_small_cnn.onnx"
    rng = np.random.default_rng(5)
    graph, step, messages = _compile(path)
    ops = set(graph.op_counts())
    assert not ops & FLOAT_LINEAR, "\n".join(messages)
    assert {op for op in ops if not op.startswith(DOMAIN)} == BOUNDARY | {"MaxPool", "Reshape"}
    inputs = [rng.standard_normal(graph.inputs[0].type.shape).astype(np.float32) for _ in range(16)]
    within, exact, worst = _agreement(path, graph, step, inputs)
    assert within >= 0.99, (within, exact, worst)


def test_pytorch_pt2e_export_end_to_end(tmp_path):
    """The same, exported now (needs torchao, which torch 2.13's PT2E quantization moved to)."""
    pytest.importorskip("torchao")
    from .make_pt2e_model import export_pt2e_small_cnn

    path = export_pt2e_small_cnn(tmp_path / "pt2e.onnx")
    graph, step, _ = _compile(path)
    assert not set(graph.op_counts()) & FLOAT_LINEAR

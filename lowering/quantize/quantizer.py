"""Post-training static quantization through ONNX Runtime's quantizer, with streamed calibration.

    model.onnx --quant_pre_process--> pre.onnx --calibrate (streamed)--> tensor ranges
               --quantize_static (QDQ, ranges from the cache file)--> model.int8.onnx --> report

ONNX Runtime's ``onnxruntime.quantization`` does the work: ``quant_pre_process`` (symbolic and ONNX shape
inference plus ORT's basic graph optimizations, so that every activation has a type and a shape and
foldable BatchNorms are folded), ``create_calibrator`` (MinMax / Percentile / Entropy), and
``quantize_static`` in ``QuantFormat.QDQ``.

Bounded memory. ``quantize_static`` hands the whole data reader to the calibrator's ``collect_data``,
which keeps per run *every* calibrated intermediate tensor (Percentile/Entropy:
``HistogramCalibrater.intermediate_outputs``) or the ReduceMin/ReduceMax pair of each (MinMax) until the
reader is exhausted: memory grows with the calibration set. (Its ``CalibMaxIntermediateOutputs`` option
does not help: in ORT 1.31 ``MinMaxCalibrater.collect_data`` clears the collected outputs at that count
without folding them into the range; measured: five batches with the option at 2 give the fifth batch's
range alone, and a multiple of it fails with "No data is collected".)
So this module drives the calibrator itself: it feeds the data in chunks of batches, one
``collect_data`` call per chunk. MinMax folds each chunk into a running min/max (``merge_range``: exact,
the same result as one pass); the histogram calibrators fold each chunk into their running histograms
(``HistogramCollector.merge_histogram``). A chunk is as many batches as fit in
``QuantizeConfig.memory_budget`` (the bytes one batch's calibrated tensors take are measured on the first
batch). The ranges are then written with ``save_tensors_data`` and passed to ``quantize_static`` through
its ``calibration_cache_path``, so it does not calibrate again.

Batch dimension: ORT's calibrators reduce over every axis (MinMax: ReduceMin/ReduceMax without axes) or
flatten (histograms), so the batch size fed does not change the ranges; the model is fed at its own batch
size (one sample per run when the batch dimension is symbolic). The histogram calibrators do depend
slightly on how data is chunked (the first chunk sets the bin width), so their ranges are deterministic
for a given data set and memory budget.

The output model keeps the input and output names and dtypes (float in, float out: a QuantizeLinear after
each input, a DequantizeLinear before each output); this is checked.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LoweringError
from .calibration import CalibrationData, InputSpec
from .policy import QUANTIZED_OPS, QuantizeConfig, is_spatial_mean
from .progress import Progress, terminal_progress

#: Entropy: ORT's defaults (128 bins, 128 quantized bins) leave the KL search a single candidate (the
#: full range); 512 bins give it 193 candidates at a bearable cost.
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 512, 128
PERCENTILE_BINS = 2048
#: Most batches fed to one collect_data call (bounds MinMax's per-run bookkeeping too).
MAX_CHUNK_BATCHES = 1024
#: An Add stays float when an input spans fewer output steps than this (see :func:`_erased_input`).
ERASED_STEPS = 4
ERASED_REASON = ("int8 would erase one input: the other's range dwarfs it (an additive attention mask "
                 "next to the scores); the Add runs in float")

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint64)": np.uint64, "tensor(uint32)": np.uint32,
    "tensor(uint16)": np.uint16, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


@dataclass
class QuantizeResult:
    path: Path
    report: dict


def quantize_model(model, calibration, output, config: QuantizeConfig | None = None, *,
                   progress: Progress = terminal_progress,
                   log=lambda message: None, warn=None) -> QuantizeResult:
    """Quantize the ONNX file ``model`` with the calibration data ``calibration`` into ``output``.

    ``calibration`` None: calibrate on generated random inputs (:mod:`.generated`), with one ``warn``
    line saying so. Returns the written path and the report (see :mod:`lowering.quantize.report`). The
    output is written atomically; on any error nothing is left at ``output``.
    """
    from ..onnx.importer import load_model_proto
    from .report import build_report

    config = config or QuantizeConfig()
    model, output = Path(model), Path(output)
    load_model_proto(model)  # a missing, unreadable or invalid model fails here, naming the file
    if output.exists() and output.resolve() == model.resolve():
        raise LoweringError(f"{output}: the output would overwrite the model; choose another -o")
    with _quiet(), tempfile.TemporaryDirectory(prefix="lowering-quantize-") as tmp_name:
        tmp = Path(tmp_name)
        pre = tmp / "model.pre.onnx"
        _preprocess(model, pre)
        inputs = input_specs(pre, shown=model)
        if calibration is None:
            from .generated import generate_calibration
            from .generated import warn as default_warn

            calibration = tmp / "generated.npz"
            (warn or default_warn)(generate_calibration(load_model_proto(pre), inputs, calibration))
            generated = True
        else:
            generated = False
        data = CalibrationData.open(calibration, inputs)
        log(f"calibration: {data.samples} samples in {len(data.files)} file(s), {data.batch} per run")
        ranges, chunk = _calibrate(pre, data, config, tmp, progress)
        qdq = tmp / "model.qdq.onnx"
        excluded = _excluded_nodes(pre, ranges)
        _quantize(pre, qdq, ranges, config, tmp, list(excluded))
        _check_signature(model, qdq)
        log(f"quantized: measuring the report on the first {config.report_samples} samples")
        report = build_report(pre, qdq, data, config, chunk_batches=chunk, excluded=excluded)
        report["calibration"]["generated"] = generated
        _write_atomically(qdq.read_bytes(), output)
    return QuantizeResult(output, report)


def input_specs(model_path: Path, shown: Path | None = None) -> list[InputSpec]:
    """The model's inputs as ONNX Runtime sees them (initializers excluded). ``shown`` names the user's
    model in errors when ``model_path`` is an intermediate file."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types (Fail, InvalidGraph, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoweringError(f"{shown or model_path}: ONNX Runtime, which calibrates and checks the quantized "
                            f"model, cannot load it: {first}") from None
    specs = []
    for i in sess.get_inputs():
        if i.type not in _ORT_DTYPES:
            raise LoweringError(f"input '{i.name}' has type {i.type}, which calibration data cannot feed")
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (i.shape or ()))
        specs.append(InputSpec(i.name, np.dtype(_ORT_DTYPES[i.type]), shape))
    return specs


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer prints progress to stdout, warnings through the root logger, and its sessions log
    warnings (such as unused initializers) through ORT's default logger."""
    import onnxruntime as ort

    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        ort.set_default_logger_severity(2)  # ORT's default: warnings
        logging.disable(logging.NOTSET)


def _excluded_nodes(pre: Path, ranges) -> dict[str, dict]:
    """Nodes of a quantized op type that the policy keeps float, with ``{"reason": ..., "detail"?: ...}``:
    ReduceMeans that are not global pools, and Adds that int8 would make lose one input
    (:func:`_erased_input`)."""
    from onnxruntime.quantization.onnx_model import ONNXModel

    from ..onnx.importer import load_model_proto

    model = ONNXModel(load_model_proto(pre))
    excluded = {}
    for node in model.nodes():
        if node.op_type == "Add":
            reason = _erased_input(model, node, ranges)
            if reason is not None:
                excluded[node.name] = reason
        if node.op_type != "ReduceMean":
            continue
        axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = model.get_constant_value(node.input[1])
            axes = None if value is None else [int(a) for a in value.reshape(-1)]
        ttype = model.get_tensor_type(node.input[0])
        rank = len(ttype.shape.dim) if ttype is not None and ttype.HasField("shape") else None
        if not is_spatial_mean(axes, rank):
            excluded[node.name] = {"reason": "no integer kernel (only a mean over every spatial axis, a "
                                             "global average pool, is quantized)"}
    return excluded


def _span(ranges, name: str) -> tuple[float, float] | None:
    if not name or name not in ranges:
        return None
    lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in ranges[name].range_value)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def _erased_input(model, node, ranges) -> dict | None:
    """Why an ``Add`` of two activations stays float: one input's calibrated range spans fewer than
    :data:`ERASED_STEPS` steps of the output's int8 range, so quantizing the output would round that input
    away. This is the additive attention mask (``(1 - mask) * finfo.min``, or ``* -10000``) added to the
    attention scores: at the output scale the mask forces (~1e36 per step), every score rounds to the same
    code and softmax attends uniformly. Float, the Add keeps the scores exact and the mask's -inf effect."""
    if len(node.input) != 2 or any(model.get_constant_value(i) is not None for i in node.input):
        return None
    out = _span(ranges, node.output[0])
    spans = [_span(ranges, i) for i in node.input]
    if out is None or None in spans:
        return None
    step = (out[1] - out[0]) / 255.0
    for name, (lo, hi) in zip(node.input, spans):
        if 0.0 < hi - lo < ERASED_STEPS * step:
            return {"reason": ERASED_REASON,
                    "detail": f"input '{name}' spans [{lo:.3g}, {hi:.3g}], fewer than {ERASED_STEPS} "
                              f"steps of the output's [{out[0]:.3g}, {out[1]:.3g}]"}
    return None


def _preprocess(model: Path, out: Path) -> None:
    """``quant_pre_process``; symbolic shape inference is dropped when it cannot handle the model."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    attempts = ({}, {"skip_symbolic_shape": True}, {"skip_symbolic_shape": True, "skip_optimization": True})
    last = None
    for kwargs in attempts:
        try:
            quant_pre_process(str(model), str(out), **kwargs)
            return
        except Exception as exc:  # ORT raises plain Exceptions of many kinds here
            last = exc
    first = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
    raise LoweringError(f"{model}: ONNX Runtime's quantization pre-processing failed: {first}")


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


def _calibrator_options(config: QuantizeConfig) -> dict:
    """Two-sided ranges for asymmetric activations (ORT's Percentile default is symmetric, on |x|)."""
    if config.method == "minmax":
        return {"symmetric": False, "moving_average": False}
    if config.method == "percentile":
        return {"symmetric": False, "percentile": config.percentile, "num_bins": PERCENTILE_BINS}
    return {"symmetric": False, "num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}


class _Chunk:
    """A CalibrationDataReader over the next ``count`` feeds of a shared iterator."""

    def __init__(self, feeds, count: int):
        self.feeds, self.left = feeds, count

    def get_next(self):
        if self.left == 0:
            return None
        self.left -= 1
        return next(self.feeds, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _calibrate(pre: Path, data: CalibrationData, config: QuantizeConfig, tmp: Path, progress: Progress):
    from onnxruntime.quantization import create_calibrator

    calibrator = create_calibrator(pre, list(QUANTIZED_OPS),
                                   augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=_method(config.method),
                                   extra_options=_calibrator_options(config))
    with progress(data.samples, f"calibrating ({config.method})") as update:
        feeds = data.batches(progress=update)
        first = next(feeds)
        per_batch = sum(a.nbytes for a in calibrator.infer_session.run(None, first))
        chunk = int(max(1, min(MAX_CHUNK_BATCHES, config.memory_budget // max(per_batch, 1))))
        feeds = itertools.chain([first], feeds)
        while True:
            head = next(feeds, None)
            if head is None:
                break
            feeds = itertools.chain([head], feeds)
            calibrator.collect_data(_Chunk(feeds, chunk))
    ranges = calibrator.compute_data()
    del calibrator
    return ranges, chunk


def _quantize(pre: Path, qdq: Path, ranges, config: QuantizeConfig, tmp: Path, excluded: list[str]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    cache = tmp / "ranges.json"
    save_tensors_data(ranges, cache)
    activation = QuantType.QInt8 if config.activation_type == "int8" else QuantType.QUInt8
    try:
        quantize_static(
            str(pre), str(qdq), None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=excluded,
            per_channel=config.per_channel,
            reduce_range=False,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            calibrate_method=_method(config.method),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            calibration_cache_path=str(cache),
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoweringError(f"ONNX Runtime's quantize_static failed: {first}") from None


def _check_signature(model: Path, qdq: Path) -> None:
    import onnxruntime as ort

    def signature(path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return ([(i.name, i.type) for i in sess.get_inputs()], [(o.name, o.type) for o in sess.get_outputs()])

    want, got = signature(model), signature(qdq)
    if want != got:
        raise LoweringError(f"{model}: the quantized model's inputs/outputs {got} differ from the model's "
                            f"{want}")


def _write_atomically(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

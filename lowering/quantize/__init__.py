"""Post-training static int8 quantization: calibrate an fp32 ONNX model and write a QDQ ONNX model.

    lower quantize MODEL.onnx [--calibration DATA] -o MODEL.int8.onnx [--method minmax|percentile|entropy]

- :mod:`.calibration`: the calibration data (a stacked ``.npz``, a folder of them, or a folder of one
  ``<input>.npy`` per input), validated from the array headers and streamed one batch at a time.
- :mod:`.generated`: seeded random samples shaped from the model's inputs when no data is given (token
  ids within their embedding table), with a warning that the accuracy on real inputs is unknown.
- :mod:`.quantizer`: ONNX Runtime's ``quant_pre_process``, calibrators and ``quantize_static`` (QDQ
  format), with calibration fed in memory-bounded chunks.
- :mod:`.report`: per-layer scales and SQNR, model output cosine / top-1 agreement, the ops left float
  (the JSON schema is in that module's docstring).
- :mod:`.policy`: the quantized op list and :class:`QuantizeConfig`.

Importing this package imports neither onnx nor onnxruntime; :func:`quantize_model` does.
"""

from __future__ import annotations

from .policy import METHODS, QUANTIZED_OPS, QuantizeConfig


def quantize_model(model, calibration, output, config=None, **kwargs):
    """See :func:`lowering.quantize.quantizer.quantize_model`."""
    from .quantizer import quantize_model as run

    return run(model, calibration, output, config, **kwargs)


def format_report(report: dict) -> str:
    from .report import format_report as fmt

    return fmt(report)


__all__ = ["METHODS", "QUANTIZED_OPS", "QuantizeConfig", "format_report", "quantize_model"]

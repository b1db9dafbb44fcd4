"""Export the zoo's torch models to ONNX with either torch exporter, quietly.

What torch 2.13 (with onnxscript 0.7) does, found by exporting every zoo model at opsets 9..23:

- ``legacy`` (TorchScript, ``dynamo=False``): writes exactly the requested opset; 9 through 23 all work
  for every zoo model. ``AdaptiveAvgPool2d(1)`` becomes ``GlobalAveragePool``.
- ``dynamo`` (``torch.export`` + onnxscript): only has implementations for opset >= 18; 18 through 23 are
  produced natively. Asked for less, it exports at 18 and converts down with the ONNX version converter;
  when that fails it *silently keeps opset 18* (a warning in the log). It fails for every zoo model at 13
  (no down-adapter from Relu-14 / Add-14), for BatchNormalization-15 below 15, and below 18 for any graph
  holding an opset-18 ``ReduceMean`` with its axes as an input (every ``AdaptiveAvgPool2d(1)``/``mean``
  lowers to one). So: mlp, pooling and shapes go down to 14, arith to 15, small_cnn and batchnorm to 16,
  the models with a global pool not below 18. Below 18 is best avoided.
  Its optimizer folds eval-mode Conv->BatchNorm (so does the legacy exporter's eval peephole pass: only
  BatchNorm not right after a Conv reaches the ONNX graph, see the ``batchnorm`` model). It writes the
  weights to a side ``<file>.data`` unless ``external_data=False``.

:func:`export` therefore checks the opset it got and raises :class:`OpsetMismatch` when it differs from
the one asked for (``strict_opset=False`` accepts the exporter's choice).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import onnx
import torch

from .models import MODELS

EXPORTERS = ("legacy", "dynamo")
#: Opsets each exporter produces as asked for every zoo model (see the module docstring).
NATIVE_OPSETS = {"legacy": range(9, 24), "dynamo": range(18, 24)}
INPUT_NAME, OUTPUT_NAME, BATCH_SYMBOL = "x", "y", "batch"


class OpsetMismatch(RuntimeError):
    """The exporter wrote a different opset from the one asked for."""


@contextlib.contextmanager
def quiet():
    """Silence torch's export chatter: stdout progress lines, warnings and ``torch.onnx`` logging."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript",
                                              "torch._dynamo", "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export(
    name: str,
    path: str | os.PathLike,
    exporter: str = "legacy",
    opset: int = 17,
    batch: int = 1,
    dynamic_batch: bool = False,
    external_data: bool = False,
    strict_opset: bool = True,
) -> Path:
    """Export zoo model ``name`` to ``path`` and return the path.

    The graph has one input ``x`` and one output ``y``. ``batch`` replaces the model's example batch size.
    ``dynamic_batch`` makes dimension 0 of the input symbolic (named ``batch``), so importing the file needs
    a shape binding; the dynamo exporter traces it with a batch of at least 2 (torch.export specialises
    size-1 dimensions). ``external_data`` (dynamo only) keeps the weights in a side file ``<path>.data``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, not {exporter!r}")
    if external_data and exporter != "dynamo":
        raise ValueError("external_data is only offered by the dynamo exporter")
    module, shape = MODELS[name]()
    if dynamic_batch and exporter == "dynamo":
        batch = max(batch, 2)
    shape = (batch,) + tuple(shape[1:])
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    if exporter == "legacy":
        kwargs.update(dynamo=False, do_constant_folding=True)
        if dynamic_batch:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: BATCH_SYMBOL}, OUTPUT_NAME: {0: BATCH_SYMBOL}}
    else:
        kwargs.update(dynamo=True, external_data=external_data, verbose=False)
        if dynamic_batch:
            kwargs["dynamic_shapes"] = {"x": {0: torch.export.Dim(BATCH_SYMBOL)}}
    with quiet(), torch.no_grad():
        torch.onnx.export(module, (example,), str(path), **kwargs)
    got = _opset_of(onnx.load(str(path), load_external_data=False))
    if strict_opset and got != opset:
        raise OpsetMismatch(f"{exporter} exporter asked for opset {opset} wrote opset {got} ({name})")
    return path


def _opset_of(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def example_input(name: str, batch: int | None = None, seed: int = 0):
    """A seeded float32 numpy input for zoo model ``name`` (``batch`` overrides the example batch)."""
    import numpy as np

    _, shape = MODELS[name]()
    if batch is not None:
        shape = (batch,) + tuple(shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

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

import numpy as np
import onnx
import torch

from .models import MODELS, InputSpec, input_specs

EXPORTERS = ("legacy", "dynamo")
#: Opsets each exporter produces as asked for every zoo model (see the module docstring).
NATIVE_OPSETS = {"legacy": range(9, 24), "dynamo": range(18, 24)}
OUTPUT_NAME, BATCH_SYMBOL = "y", "batch"


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

    The graph's inputs are named as :func:`~tests.zoo.models.input_specs` says (one input ``x`` for the
    CNNs; ``input_ids``, ``attention_mask``... for the transformers), its outputs as the module's
    ``output_names`` (default one output ``y``). ``batch`` replaces the model's example batch size.
    ``dynamic_batch`` makes dimension 0 of every input symbolic (named ``batch``), so importing the file
    needs a shape binding; the dynamo exporter traces it with a batch of at least 2 (torch.export
    specialises size-1 dimensions). ``external_data`` (dynamo only) keeps the weights in a side file
    ``<path>.data``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, not {exporter!r}")
    if external_data and exporter != "dynamo":
        raise ValueError("external_data is only offered by the dynamo exporter")
    module, _ = MODELS[name]()
    specs = input_specs(name)
    if dynamic_batch and exporter == "dynamo":
        batch = max(batch, 2)
    examples = example_inputs(name, batch)
    args = tuple(torch.from_numpy(examples[spec.name]) for spec in specs)
    inputs = [spec.name for spec in specs]
    outputs = list(getattr(module, "output_names", (OUTPUT_NAME,)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {"input_names": inputs, "output_names": outputs, "opset_version": opset}
    if exporter == "legacy":
        kwargs.update(dynamo=False, do_constant_folding=True)
        if dynamic_batch:
            kwargs["dynamic_axes"] = {n: {0: BATCH_SYMBOL} for n in inputs + outputs}
    else:
        kwargs.update(dynamo=True, external_data=external_data, verbose=False)
        if dynamic_batch:
            dim = torch.export.Dim(BATCH_SYMBOL)
            kwargs["dynamic_shapes"] = {n: {0: dim} for n in inputs}
    with quiet(), torch.no_grad():
        torch.onnx.export(module, args, str(path), **kwargs)
    got = _opset_of(onnx.load(str(path), load_external_data=False))
    if strict_opset and got != opset:
        raise OpsetMismatch(f"{exporter} exporter asked for opset {opset} wrote opset {got} ({name})")
    return path


def _opset_of(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def example_input(name: str, batch: int | None = None, seed: int = 0):
    """A seeded float32 numpy input for zoo model ``name``, which takes one (``batch`` overrides the
    example batch)."""
    specs = input_specs(name)
    if len(specs) != 1:
        raise ValueError(f"zoo model {name!r} has {len(specs)} inputs; use example_inputs")
    return example_inputs(name, batch, seed)[specs[0].name]


def example_inputs(name: str, batch: int | None = None, seed: int = 0) -> dict:
    """Seeded numpy inputs for zoo model ``name``, keyed by input name (see ``InputSpec.kind``)."""
    rng = np.random.default_rng(seed)
    return {spec.name: _draw(rng, spec, batch) for spec in input_specs(name)}


def _draw(rng, spec: InputSpec, batch: int | None):
    shape = spec.shape if batch is None else (batch,) + tuple(spec.shape[1:])
    if spec.kind == "ids":
        return rng.integers(0, spec.high, shape).astype(spec.dtype)
    if spec.kind == "mask":
        mask = np.ones(shape, spec.dtype)
        mask[..., shape[-1] - spec.high:] = 0
        return mask
    return rng.standard_normal(shape).astype(spec.dtype)

"""lowering: an ONNX model compiler for cpu, cuda and a simulated inference accelerator.

Kept light on purpose: importing ``lowering.ir`` from a pass must not drag in the driver or targets.
The public API is :func:`load_onnx` and :func:`compile` (imported lazily).
"""

__version__ = "0.1.0"


def load_onnx(path, shapes=None):
    """Load an ONNX file into the graph IR (see :mod:`lowering.onnx.importer`)."""
    from .driver import load_onnx as _load

    return _load(path, shapes)


def compile(model, targets=("cpu",), output=None, **options):  # noqa: A001 - public API name
    """Compile an ONNX file or IR graph for ``targets`` and write the artifact to ``output``."""
    from .driver import compile_model

    return compile_model(model, targets=targets, output=output, **options)

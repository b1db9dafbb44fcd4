"""Generated calibration inputs, for a quantization run given no calibration data (DESIGN.md section 5:
"generated inputs with a warning").

:data:`GENERATED_SAMPLES` seeded samples shaped from the model's inputs, drawn the way ``lower run`` draws
inputs (:mod:`lowering.inputs`): floats standard normal, bools fair coins; an integer input that is
(perhaps through reshapes and casts) the indices of a ``Gather`` on an initializer (token ids into an
embedding table) is drawn within the table's gathered axis, other integers (attention masks, token types,
flags) in ``[0, 2)``. (Small, because such inputs are usually masks: BERT's ``(1 - mask) * finfo.min``
overflows to +inf for a mask value of 2 or more, and calibration then measures infinities.)

The ranges come from random data, not the data the model will see, so the int8 accuracy on real inputs
is unknown: the caller warns (one line) and the report records ``calibration.generated``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import LoweringError
from ..inputs import INDEX_PRESERVING, random_input
from .calibration import InputSpec

GENERATED_SAMPLES = 32
SEED = 0


def warn(message: str) -> None:
    """The one warning line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def table_bounds(model) -> dict[str, int]:
    """For each integer graph input of the ONNX ``model`` that indexes a ``Gather`` on an initializer
    (perhaps through :data:`~lowering.inputs.INDEX_PRESERVING` ops), the size of the gathered axis (the
    smallest when it indexes several)."""
    graph = model.graph
    tables = {i.name: tuple(i.dims) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    bounds: dict[str, int] = {}
    for graph_input in graph.input:
        pending, seen = [graph_input.name], set()
        while pending:
            for node, index in consumers.get(pending.pop(), []):
                if node.op_type in INDEX_PRESERVING and index == 0 and id(node) not in seen:
                    seen.add(id(node))
                    pending.append(node.output[0])
                elif node.op_type == "Gather" and index == 1 and node.input[0] in tables:
                    dims = tables[node.input[0]]
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % max(len(dims), 1)
                    if dims:
                        size = int(dims[axis])
                        bounds[graph_input.name] = min(bounds.get(graph_input.name, size), size)
    return bounds


def generate_calibration(model, inputs: list[InputSpec], path: Path,
                         samples: int = GENERATED_SAMPLES) -> str:
    """Write seeded calibration samples for ``inputs`` (the ONNX ``model``'s) to the ``.npz`` at ``path``;
    return a one-line description of what was drawn. A fixed batch B gets a multiple of B samples."""
    bounds = table_bounds(model)
    for spec in inputs:
        symbolic = [i for i, d in enumerate(spec.shape) if d is None and i > 0]
        if symbolic:
            raise LoweringError(f"input '{spec.name}' has a symbolic dimension (axis {symbolic[0]}), so no "
                                "calibration inputs can be generated for it; give --calibration DATA")
    batch = inputs[0].batch if inputs else 1
    count = -(-samples // batch) * batch
    rng = np.random.default_rng(SEED)
    arrays, drawn = {}, []
    for spec in inputs:
        shape = (count,) + tuple(spec.shape[1:])
        arrays[spec.name] = random_input(rng, spec.dtype, shape, bounds.get(spec.name))
        if spec.dtype.kind in "iu":
            high = max(1, bounds.get(spec.name) or 2)
            why = " (its Gather table)" if spec.name in bounds else ""
            drawn.append(f"{spec.name} integers in [0, {high}){why}")
    np.savez(path, **arrays)
    floats = ["floats standard normal"] if any(spec.dtype.kind == "f" for spec in inputs) else []
    kinds = "; ".join(floats + drawn)
    return (f"no calibration data: calibrating on {count} generated random samples ({kinds}); the int8 "
            "accuracy on real inputs is unknown (give --calibration DATA)")

"""The ONNX backend node tests (``onnx.backend.test``, built in memory) and how one is run and judged.

A test passes when the backend's outputs match the expected ones the way ``onnx.backend.test.BackendTest``
checks them (``Runner.assert_similar_outputs``: count, shape, dtype, then allclose with the test's rtol/atol).
Anything else is a failure with a *stage* (``compile``: ``prepare`` raised, e.g. an unsupported op;
``run``: the compiled model raised; ``mismatch``: wrong outputs; the runner adds ``crash`` and ``timeout``)
and the error's first line, which the report groups failures by.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass

import numpy as np

#: ONNX Runtime's own backend on this machine's versions (onnx 1.23, onnxruntime 1.31): node tests passed
#: of those the suite builds, for comparison in the report.
ONNXRUNTIME_PASSED, ONNXRUNTIME_TOTAL = 1345, 1884


@functools.lru_cache(maxsize=1)
def node_cases() -> dict:
    """Every node test case, by name (``test_abs``...): ``.model``, ``.data_sets``, ``.rtol``, ``.atol``."""
    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return {case.name: case for case in load_node_model_tests()}


@dataclass
class Outcome:
    name: str
    status: str  # "passed" | "failed"
    stage: str = ""  # compile | run | mismatch | crash | timeout
    error: str = ""  # the error's first line (type name included)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "stage": self.stage, "error": self.error,
                "seconds": round(self.seconds, 3)}


def first_line(exc: BaseException) -> str:
    """The error's first non-empty line, with its type; for output mismatches the line that says what
    differs (count, shape, dtype or values)."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(exc, AssertionError):
        if "ACTUAL: dtype" in text:
            actual = re.search(r"ACTUAL: dtype\('?([\w<>]+)'?\)", text)
            desired = re.search(r"DESIRED: dtype\('?([\w<>]+)'?\)", text)
            if actual and desired:
                return f"output dtype {actual.group(1)}, expected {desired.group(1)}"
        for line in lines:
            if "incorrect shape" in line:
                return line
        for line in lines:
            if line.startswith(("Not equal to tolerance", "Arrays are not equal", "Items are not equal")):
                return line
    head = lines[0] if lines else ""
    return f"{type(exc).__name__}: {head}" if head else type(exc).__name__


def constant_inputs_model(model, inputs):
    """The model with its inputs bound to ``inputs`` as initializers (no graph inputs left)."""
    import onnx
    from onnx import numpy_helper

    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    initialized = {t.name for t in bound.graph.initializer}
    graph_inputs = [i for i in bound.graph.input if i.name not in initialized]
    for info, array in zip(graph_inputs, inputs):
        if isinstance(array, np.generic):  # a 0-d input the test data holds as a numpy scalar
            array = np.asarray(array)
        if not isinstance(array, np.ndarray):
            raise TypeError(f"input '{info.name}' is not a tensor")
        bound.graph.initializer.append(numpy_helper.from_array(array, info.name))
    return bound


def run_case(case, backend, constant_inputs: bool = False) -> Outcome:
    """Compile ``case.model`` with ``backend`` and check every data set (or, with ``constant_inputs``,
    compile the model once per data set with its inputs bound as constants). Never raises."""
    import time

    from onnx.backend.test.runner import Runner, _normalize_tensor

    start = time.perf_counter()
    stage = "compile"
    rep = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for inputs, expected in case.data_sets:
                inputs = [_normalize_tensor(x) for x in inputs]
                expected = [_normalize_tensor(x) for x in expected]
                stage = "compile"
                if constant_inputs:
                    if rep is not None:
                        rep.close()
                    rep = backend.prepare(constant_inputs_model(case.model, inputs))
                    inputs = []
                elif rep is None:
                    rep = backend.prepare(case.model)
                stage = "run"
                got = rep.run(inputs)
                stage = "mismatch"
                Runner.assert_similar_outputs(expected, list(got), rtol=case.rtol, atol=case.atol)
        return Outcome(case.name, "passed", seconds=time.perf_counter() - start)
    except Exception as exc:  # every failure is a result, never a crash of the caller
        if stage == "mismatch" and not isinstance(exc, AssertionError | TypeError):
            stage = "run"
        return Outcome(case.name, "failed", stage, first_line(exc), time.perf_counter() - start)
    finally:
        if rep is not None:
            rep.close()

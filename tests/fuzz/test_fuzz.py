"""Bounded fuzzing in the normal test run (``LOWERING_FUZZ_CASES`` scales it; ``python -m tests.fuzz`` runs a
campaign): mutated models into ``lower`` end in exit 0, or 2 with one error line; damaged artifacts into
``runtime.load`` load or raise RuntimeLoadError; a model ``lower`` builds must run in ONNX Runtime too.
Every problem is printed with its case number and seed."""

import os

import onnx
import pytest

from .mutators import base_model, fuzz_artifacts, fuzz_models

pytestmark = pytest.mark.e2e

SCALE = float(os.environ.get("LOWERING_FUZZ_CASES", "1"))
#: every model ``lower`` builds must be one ONNX Runtime runs (the importer refuses inconsistent
#: Conv/Reshape shapes: see test_regressions.py)
ORT_ORACLE = True


def test_mutated_models_into_lower(tmp_path):
    problems = []
    counts = fuzz_models(int(150 * SCALE), seed=7, workdir=tmp_path, log=problems.append,
                         ort_oracle=ORT_ORACLE)
    assert not problems, "\n".join(problems)
    assert counts["refused"] > 0 and counts["ok"] > 0  # the mutations reach both outcomes


def test_damaged_artifacts_into_runtime_load(tmp_path):
    from lowering.cli import main

    onnx.save(base_model(3), tmp_path / "m.onnx")
    assert main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.lwr")]) == 0
    problems = []
    counts = fuzz_artifacts(int(300 * SCALE), seed=11, artifact=tmp_path / "m.lwr",
                            workdir=tmp_path / "cases", log=problems.append)
    assert not problems, "\n".join(problems)
    assert counts["refused"] > 0 and counts["loaded"] > 0

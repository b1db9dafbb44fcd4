"""ONNX border: external-data models import; the exported graph re-imports with the same semantics."""

import numpy as np
import onnx
import pytest

from lowering.onnx.exporter import export_graph
from lowering.onnx.importer import import_model, load_model_proto
from lowering.reference import run_graph
from tests.e2e.conftest import make_tiny_cnn

pytestmark = pytest.mark.unit


def test_external_data_model_loads(tmp_path):
    model = make_tiny_cnn(batch=1)
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    graph = import_model(load_model_proto(path), name="ext.onnx")
    w = next(v for v in graph.constants() if v.name == "w")
    assert w.const.shape == (4, 3, 3, 3)


def test_export_then_import_preserves_results(tmp_path):
    graph = import_model(make_tiny_cnn(batch=1), name="tiny")
    path = tmp_path / "exported.onnx"
    onnx.save(export_graph(graph), path)
    again = import_model(load_model_proto(path), name="exported")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_graph(again, {"x": x})["y"], run_graph(graph, {"x": x})["y"],
                               rtol=1e-6, atol=1e-6)

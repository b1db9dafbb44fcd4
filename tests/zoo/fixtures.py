"""Pytest fixtures over the zoo: each exported ONNX file is made once per test session.

Use from a test module outside ``tests/zoo`` by importing the fixture::

    from tests.zoo.fixtures import zoo  # noqa: F401  (a pytest fixture)

    def test_something(zoo):
        path = zoo.get("resnet_style", "legacy", 17)

Importing this module does not import torch; the ``zoo`` fixture skips the test when torch (the
``[torch]`` extra) is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest


class ZooCache:
    """Exports zoo models on demand into ``root``, each (model, exporter, opset, options) once."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._paths: dict[tuple, Path] = {}

    def get(self, name: str, exporter: str = "legacy", opset: int = 17, *, dynamic_batch: bool = False,
            external_data: bool = False) -> Path:
        from .export import export

        if exporter == "dynamo":
            pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript: "
                                                     "pip install -e .[torch]")
        key = (name, exporter, opset, dynamic_batch, external_data)
        if key not in self._paths:
            suffix = ("_dyn" if dynamic_batch else "") + ("_ext" if external_data else "")
            target = self.root / f"{name}_{exporter}_op{opset}{suffix}" / "model.onnx"
            self._paths[key] = export(name, target, exporter, opset, dynamic_batch=dynamic_batch,
                                      external_data=external_data)
        return self._paths[key]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> ZooCache:
    """The session's :class:`ZooCache` (skips the test when torch is not installed)."""
    pytest.importorskip("torch", reason="the model zoo needs torch: pip install -e .[torch]")
    return ZooCache(tmp_path_factory.mktemp("zoo"))

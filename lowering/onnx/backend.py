"""``onnx.backend.base.Backend`` for the lowering targets (cpu by default).

``prepare(model)`` compiles the ONNX model with the compiler (import, passes, target build) into a
temporary artifact and loads it with ``runtime.load``; ``BackendRep.run(inputs)`` runs it and returns the
outputs in the model's output order. This is what ``onnx.backend.test.BackendTest`` drives (see
``tests/conformance``)::

    from lowering.onnx.backend import CpuBackend
    (y,) = CpuBackend.run_model(model, [x])

A model whose inputs have symbolic dimensions is compiled on its first ``run``, with the dimensions bound
from the arrays given (a compiler specialises shapes), and again whenever a later run brings other shapes.
Errors are the compiler's own (``LoweringError``: one line naming the op, node or tensor at fault).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.backend.base as base

from ..driver import CompileOptions, compile_model
from ..errors import LoweringError
from .importer import MAX_OPSET

#: ``prepare``/``run_model`` keyword arguments the backend reads; anything else is refused.
_OPTIONS = ("target", "threads", "disabled_passes", "isa")


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _is_static(value_info: onnx.ValueInfoProto) -> bool:
    tt = value_info.type.tensor_type
    return value_info.type.HasField("tensor_type") and tt.HasField("shape") and all(
        d.HasField("dim_value") for d in tt.shape.dim)


class LoweringBackendRep(base.BackendRep):
    """A compiled model: its artifact (in a temporary folder owned by this object) and runtime session."""

    def __init__(self, model: onnx.ModelProto, target: str = "cpu", threads: int | None = 1,
                 disabled_passes=(), isa: str | None = None):
        self._model = model
        self._target = target
        self._threads = threads
        self._disabled = frozenset(disabled_passes)
        self._isa = isa
        self._dir = Path(tempfile.mkdtemp(prefix="lowering-backend-"))
        self.input_names = [i.name for i in _graph_inputs(model)]
        self.output_names = [o.name for o in model.graph.output]
        self._static = all(_is_static(i) for i in _graph_inputs(model))
        self._sessions: dict[tuple, Any] = {}
        self._model_path = self._dir / "model.onnx"
        self._model_path.write_bytes(model.SerializeToString())
        if self._static:
            self._session(())

    @property
    def session(self):
        """The runtime session of the statically shaped model (None until a symbolic one has run)."""
        return next(iter(self._sessions.values()), None)

    def _session(self, shapes: tuple):
        session = self._sessions.get(shapes)
        if session is None:
            import runtime

            options = CompileOptions(targets=(self._target,), shapes=shapes,
                                     disabled_passes=self._disabled, isa=self._isa)
            out = self._dir / f"model{len(self._sessions)}.lwr"
            compile_model(self._model_path, output=out, options=options)
            session = runtime.load(out, target=self._target, threads=self._threads)
            self._sessions[shapes] = session
        return session

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if kwargs:
            raise TypeError(f"run() got unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if isinstance(inputs, dict):
            feed = {name: np.asarray(inputs[name]) for name in self.input_names if name in inputs}
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) != len(self.input_names):
                raise LoweringError(f"the model has {len(self.input_names)} input(s) "
                                    f"({', '.join(self.input_names)}), {len(inputs)} given")
            feed = {name: np.asarray(a) for name, a in zip(self.input_names, inputs)}
        shapes = () if self._static else tuple((n, tuple(a.shape)) for n, a in feed.items())
        session = self._session(shapes)
        wanted = {i.name for i in session.inputs}  # inputs nothing reads may have been removed
        results = session.run(None, {n: a for n, a in feed.items() if n in wanted})
        by_name = dict(zip((o.name for o in session.outputs), results))
        return tuple(by_name[name] for name in self.output_names)

    def close(self) -> None:
        self._sessions.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self):
        self.close()


class LoweringBackend(base.Backend):
    """The onnx backend API over the compiler and the runtime. ``prepare`` keyword arguments: ``target``
    (default the class's), ``threads`` (default 1), ``disabled_passes``, ``isa``."""

    target = "cpu"
    devices = ("CPU",)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> LoweringBackendRep:
        if not cls.supports_device(device):
            raise LoweringError(f"the {cls.target} target does not run on device '{device}'")
        unknown = sorted(set(kwargs) - set(_OPTIONS))
        if unknown:
            raise TypeError(f"prepare() got unexpected keyword argument(s): {', '.join(unknown)}")
        options = {"target": cls.target, "threads": 1, **kwargs}
        if isinstance(model, (str, bytes, Path)) and not isinstance(model, bytes):
            model = onnx.load(str(model))
        elif isinstance(model, bytes):
            model = onnx.load_from_string(model)
        return LoweringBackendRep(model, **options)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
        rep = cls.prepare(model, device, **kwargs)
        try:
            return rep.run(inputs)
        finally:
            rep.close()

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU", outputs_info=None,
                 **kwargs: Any):
        """Run one node on ``inputs`` (arrays, in the node's input order): wraps it in a model typed from
        the inputs, with output types from ONNX shape inference."""
        opset = kwargs.pop("opset_version", None)
        arrays = [np.asarray(a) for a in inputs]
        names = [n for n in node.input if n]
        graph_inputs = [onnx.helper.make_tensor_value_info(
            n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in zip(names, arrays)]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n]
        graph = onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
        opsets = [onnx.helper.make_opsetid(node.domain or "", opset or MAX_OPSET)]
        model = onnx.helper.make_model(graph, opset_imports=opsets)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        return cls.run_model(model, arrays, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.split(":")[0].upper() in cls.devices


class CpuBackend(LoweringBackend):
    """The cpu target (generated C in a shared library) as an ONNX backend."""

    target = "cpu"


prepare = CpuBackend.prepare
run_model = CpuBackend.run_model
run_node = CpuBackend.run_node
supports_device = CpuBackend.supports_device

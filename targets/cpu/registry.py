"""The cpu target's per-op lowering registry and the context its emitters write C through.

An op lowering is data: which op it handles, which leading inputs are float32 tensors, an optional check
that explains why a particular node cannot be lowered, and an emitter that returns the C body of the node's
kernel. Emitters never see ONNX protobufs; they read the graph IR, ask :class:`EmitContext` where each
value lives (caller buffer, weights blob, arena) and put prepacked constants in the weights blob.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lowering.errors import LoweringError
from lowering.ir import DType, Graph, Node, Value
from lowering.memory import storage_roots

from .build import IsaLevel
from .pack import ALIGN, WeightsBlob


@dataclass
class KernelCode:
    """What an emitter returns: the statements of the kernel function and what it costs."""

    body: str
    flops: int = 0
    workspace: int = 0  # scratch bytes the kernel uses at ctx->ws


Emitter = Callable[["EmitContext", Node], KernelCode]
Check = Callable[[Node], "str | None"]


@dataclass(frozen=True)
class OpLowering:
    emit: Emitter
    check: Check | None = None
    #: how many leading inputs are float32 tensors (None: all of them)
    data_inputs: int | None = None


LOWERINGS: dict[str, OpLowering] = {}


def register(*ops: str, check: Check | None = None, data_inputs: int | None = None):
    """Register an emitter for ops given by qualified name ("Conv", "lowering::FusedConv")."""

    def wrap(fn: Emitter) -> Emitter:
        for op in ops:
            LOWERINGS[op] = OpLowering(fn, check, data_inputs)
        return fn

    return wrap


def align(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def numel(shape) -> int:
    return math.prod(shape)


def c_float(x: float) -> str:
    """An exact C float literal."""
    x = float(np.float32(x))
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    return f"{x.hex()}f" if x >= 0 else f"(-{(-x).hex()}f)"


def c_longs(values) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


@dataclass
class EmitContext:
    """Where values live, and the weights blob constants go into."""

    graph: Graph
    isa: IsaLevel
    blob: WeightsBlob
    offsets: dict[str, int]
    _roots: dict[int, Value] = field(init=False)
    _inputs: dict[int, int] = field(init=False)
    _outputs: dict[int, int] = field(init=False)

    def __post_init__(self):
        self._roots = storage_roots(self.graph)
        self._inputs = {id(v): i for i, v in enumerate(self.graph.inputs)}
        self._outputs = {id(v): i for i, v in enumerate(self.graph.outputs)}

    def ptr(self, value: Value) -> str:
        """A C expression (``const float *``) for reading ``value``."""
        root = self._roots.get(id(value), value)
        if root.is_const:
            return self.weights(root.const)
        if id(root) in self._inputs:
            return f"((const float *)ctx->in[{self._inputs[id(root)]}])"
        if id(root) in self._outputs:
            return f"((const float *)ctx->out[{self._outputs[id(root)]}])"
        return f"((const float *)(ctx->arena + {self._offset(root)}))"

    def out(self, value: Value) -> str:
        """A C expression (``float *``) for writing the node output ``value``."""
        root = self._roots.get(id(value), value)
        if root.is_const or id(root) in self._inputs:
            raise LoweringError(f"cpu target: output '{value.name}' aliases a constant or graph input")
        return self._writable(root)

    def _writable(self, root: Value) -> str:
        if id(root) in self._outputs:
            return f"((float *)ctx->out[{self._outputs[id(root)]}])"
        return f"((float *)(ctx->arena + {self._offset(root)}))"

    def _offset(self, root: Value) -> int:
        offset = self.offsets.get(root.name)
        if offset is None:
            raise LoweringError(f"cpu target: the memory plan has no arena offset for value '{root.name}'")
        return offset

    def weights(self, array: np.ndarray) -> str:
        """Store ``array`` (float32) in the weights blob; a C expression pointing at it."""
        return f"((const float *)(ctx->w + {self.blob.add(array)}))"

    def opt_ptr(self, value: Value | None) -> str:
        return "NULL" if value is None else self.ptr(value)


def float_type_reason(node: Node, lowering: OpLowering) -> str | None:
    """Why ``node`` has a tensor the cpu target cannot hold (it computes float32 only)."""
    inputs = node.inputs if lowering.data_inputs is None else node.inputs[: lowering.data_inputs]
    for i, v in enumerate(inputs):
        if v is not None and (v.type is None or v.type.dtype is not DType.FLOAT32):
            kind = v.type.dtype.value if v.type is not None else "untyped"
            return f"input {i} '{v.name}' is {kind}; the cpu target computes float32 tensors only"
    out = node.outputs[0]
    if out.type is None or out.type.dtype is not DType.FLOAT32:
        kind = out.type.dtype.value if out.type is not None else "untyped"
        return f"output '{out.name}' is {kind}; the cpu target computes float32 tensors only"
    graph_outputs = {id(v) for v in node.graph.outputs} if node.graph is not None else set()
    for index, extra in enumerate(node.outputs[1:], start=1):
        if extra is not None and (extra.uses() or id(extra) in graph_outputs):
            return f"output '{extra.name}' (output {index}) is used; only output 0 is computed"
    return None

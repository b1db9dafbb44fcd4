"""The cuda target's per-op lowering registry and the context its emitters write kernels through.

An op lowering is an emitter (graph IR node -> :class:`KernelCode`: the body of one ``extern "C"
__global__`` kernel and its launch geometry) and an optional check that explains why a node cannot be
lowered. Emitters never see ONNX; they ask :class:`CudaEmitContext` for a kernel parameter per tensor they
read or write. Each parameter is a pointer, and the context records where it points as a launch-plan
argument (the runtime turns each into a device pointer):

    {"kind": "arena",   "offset": BYTES, "dtype": "float32", "access": "read" | "write"}
    {"kind": "weights", "offset": BYTES, ...}     (constants, in cuda/weights.bin)
    {"kind": "input",   "index": I, ...}          (graph input I, in its own device buffer)
    {"kind": "output",  "index": I, ...}          (graph output I, in its own device buffer)

Every index the generated code computes fits in a 32-bit ``int``: ``index_reason`` refuses larger tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lowering.errors import LoweringError
from lowering.ir import DType, Graph, Node, Value
from lowering.memory import storage_roots
from targets.cpu.pack import WeightsBlob

#: threads per block of the 1-D element-wise launches
BLOCK = 256
#: the largest element count (and so index) a kernel handles with 32-bit indices
MAX_INDEX = 2**31 - 1
#: grid limits of y and z (x may go to 2^31 - 1)
MAX_GRID_YZ = 65535


@dataclass
class KernelCode:
    """What an emitter returns: the kernel body (the parameters come from the context) and its launch."""

    body: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    flops: int = 0
    #: file-scope declarations the kernel needs (``__constant__`` index tables), emitted before it
    prelude: str = ""


Emitter = Callable[["CudaEmitContext", Node], KernelCode]
Check = Callable[[Node], "str | None"]


@dataclass(frozen=True)
class CudaLowering:
    emit: Emitter
    check: Check | None = None
    #: how many leading inputs are float32 data tensors (None: all of them)
    data_inputs: int | None = None
    #: how many outputs the emitter writes (the rest must be unused)
    outputs: int = 1


LOWERINGS: dict[str, CudaLowering] = {}


def register(*ops: str, check: Check | None = None, data_inputs: int | None = None, outputs: int = 1):
    """Register an emitter for ops given by qualified name ("Conv", "lowering::FusedConv")."""

    def wrap(fn: Emitter) -> Emitter:
        for op in ops:
            LOWERINGS[op] = CudaLowering(fn, check, data_inputs, outputs)
        return fn

    return wrap


def numel(shape) -> int:
    return math.prod(shape)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def c_float(x: float) -> str:
    """An exact C float literal that nvcc and g++ both read (no NAN/INFINITY macros: no host headers)."""
    x = float(np.float32(x))
    if math.isnan(x):
        return "__int_as_float(0x7fc00000)"
    if math.isinf(x):
        return "lw_inf()" if x > 0 else "(-lw_inf())"
    return f"{x.hex()}f" if x >= 0 else f"(-{(-x).hex()}f)"


def c_ints(values) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def linear_launch(count: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Grid and block of a 1-D launch of ``count`` threads."""
    if count > MAX_INDEX:
        raise LoweringError(f"cuda target: {count} threads exceed 32-bit indexing")
    return (max(1, cdiv(count, BLOCK)), 1, 1), (BLOCK, 1, 1)


def index_reason(node: Node) -> str | None:
    """Why a tensor of ``node`` is too large for the kernels' 32-bit indices (None when none is)."""
    for v in list(node.inputs) + list(node.outputs):
        if v is not None and v.type is not None and numel(v.type.shape) > MAX_INDEX:
            return f"'{v.name}' has {numel(v.type.shape)} elements; the cuda kernels index with 32 bits"
    return None


def float_reason(node: Node, lowering: CudaLowering) -> str | None:
    """Why a data input or output 0 of ``node`` is not float32 (the only type of this slice), or an extra
    output the kernel does not compute is used."""
    inputs = node.inputs if lowering.data_inputs is None else node.inputs[: lowering.data_inputs]
    for i, v in enumerate(list(inputs) + [node.outputs[0]]):
        if v is None:
            continue
        role = f"input {i} '{v.name}'" if i < len(inputs) else f"output '{v.name}'"
        if v.type is None:
            return f"{role} has no static type"
        if v.type.dtype is not DType.FLOAT32:
            return f"{role} is {v.type.dtype.value}; the cuda target computes float32 tensors only"
    graph_outputs = {id(v) for v in node.graph.outputs} if node.graph is not None else set()
    for index, extra in enumerate(node.outputs[lowering.outputs:], start=lowering.outputs):
        if extra is not None and (extra.uses() or id(extra) in graph_outputs):
            return f"output '{extra.name}' (output {index}) is used; only output 0 is computed"
    return None


@dataclass
class CudaEmitContext:
    """Where values live, the weights blob constants go into, and the parameters of the current kernel."""

    graph: Graph
    blob: WeightsBlob
    offsets: dict[str, int]
    #: (C declaration, plan argument) of each parameter of the kernel being emitted
    params: list[tuple[str, dict]] = field(default_factory=list)
    #: the name of the kernel being emitted (file-scope tables it needs are prefixed with it)
    kernel_name: str = ""
    _roots: dict[int, Value] = field(init=False)
    _inputs: dict[int, int] = field(init=False)
    _outputs: dict[int, int] = field(init=False)

    def __post_init__(self):
        self._roots = storage_roots(self.graph)
        self._inputs = {id(v): i for i, v in enumerate(self.graph.inputs)}
        self._outputs = {id(v): i for i, v in enumerate(self.graph.outputs)}

    def begin_kernel(self, name: str) -> None:
        self.params = []
        self.kernel_name = name

    def _param(self, name: str, ctype: str, arg: dict) -> str:
        if any(p[0].endswith(f" {name}") for p in self.params):
            raise LoweringError(f"cuda target: kernel parameter '{name}' declared twice")
        self.params.append((f"{ctype} {name}", arg))
        return name

    def read(self, value: Value, name: str) -> str:
        """A ``const float *name`` parameter pointing at ``value``; returns ``name``."""
        root = self._roots.get(id(value), value)
        if root.is_const:
            return self.weights(root.const, name)
        if id(root) in self._inputs:
            arg = {"kind": "input", "index": self._inputs[id(root)]}
        elif id(root) in self._outputs:
            arg = {"kind": "output", "index": self._outputs[id(root)]}
        else:
            arg = {"kind": "arena", "offset": self._offset(root)}
        return self._param(name, "const float *", {**arg, "dtype": "float32", "access": "read"})

    def write(self, value: Value, name: str = "y") -> str:
        """A ``float *name`` parameter for writing the node output ``value``; returns ``name``."""
        root = self._roots.get(id(value), value)
        if root.is_const or id(root) in self._inputs:
            raise LoweringError(f"cuda target: output '{value.name}' aliases a constant or graph input")
        if id(root) in self._outputs:
            arg = {"kind": "output", "index": self._outputs[id(root)]}
        else:
            arg = {"kind": "arena", "offset": self._offset(root)}
        return self._param(name, "float *", {**arg, "dtype": "float32", "access": "write"})

    def weights(self, array: np.ndarray, name: str) -> str:
        """Store ``array`` as float32 in the weights blob; a ``const float *name`` parameter for it."""
        data = np.asarray(array)
        if data.dtype != np.float32 and not np.can_cast(data.dtype, np.float32, casting="same_kind"):
            raise LoweringError(f"cuda target: cannot store a {data.dtype} constant as float32")
        arg = {"kind": "weights", "offset": self.blob.add(data, np.float32), "dtype": "float32",
               "access": "read"}
        return self._param(name, "const float *", arg)

    def _offset(self, root: Value) -> int:
        offset = self.offsets.get(root.name)
        if offset is None:
            raise LoweringError(f"cuda target: the memory plan has no arena offset for value '{root.name}'")
        return offset

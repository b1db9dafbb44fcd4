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


FLOAT_ONLY = (DType.FLOAT32,)
#: element types the dtype-agnostic data-movement kernels accept
BYTE_TYPES = (DType.FLOAT32, DType.INT8, DType.UINT8)
ANY_STORED = (DType.FLOAT32, DType.INT8, DType.UINT8, DType.INT32)
QUANT_TYPES = (DType.INT8, DType.UINT8)
#: the element types the type-generic kernels (data movement, fills, scatters, gathers) take: real C types,
#: so a kernel that writes a value (EyeLike's 1, a Pad or fill value) writes it right (bool is stored one
#: byte per element, as numpy does)
ALL_TYPES = (DType.FLOAT32, DType.INT8, DType.UINT8, DType.INT32, DType.INT64, DType.BOOL, DType.INT16,
             DType.UINT16, DType.UINT32, DType.UINT64, DType.FLOAT64)
#: 16-bit floats are stored as their bit patterns (uint16_t): the kernels that only move elements (by element
#: size) take them too; any other kernel gets them through casts to float32 (passes/cleanup/legalize_types)
HALF_TYPES = (DType.FLOAT16, DType.BFLOAT16)
MOVE_OPS = frozenset({"Transpose", "Concat", "Slice", "Expand", "Tile", "Split", "Gather", "GatherElements",
                      "GatherND", "Pad", "Trilu", "SpaceToDepth", "DepthToSpace", "Dropout",
                      "lowering::Copy"})


@dataclass(frozen=True)
class OpLowering:
    emit: Emitter
    check: Check | None = None
    #: how many leading inputs are data tensors (None: all of them)
    data_inputs: int | None = None
    #: element types the data inputs and output 0 may have (all the same one); None: ``check`` types the node
    dtypes: tuple[DType, ...] | None = FLOAT_ONLY
    #: how many outputs the emitter writes (the rest must be unused)
    outputs: int = 1


LOWERINGS: dict[str, OpLowering] = {}


def register(
    *ops: str,
    check: Check | None = None,
    data_inputs: int | None = None,
    dtypes: tuple[DType, ...] | None = FLOAT_ONLY,
    outputs: int = 1,
):
    """Register an emitter for ops given by qualified name ("Conv", "lowering::FusedConv")."""

    def wrap(fn: Emitter) -> Emitter:
        for op in ops:
            LOWERINGS[op] = OpLowering(fn, check, data_inputs, dtypes, outputs)
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


def c_double(x: float) -> str:
    """An exact C double literal."""
    x = float(x)
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    return x.hex() if x >= 0 else f"(-{(-x).hex()})"


def c_longs(values) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def batch_index(lines: list[str], count: int, tables: dict[str, list[int]]) -> dict[str, str]:
    """C expressions (in the batch loop variable ``i``) for the operand each batch item reads: ``i``, a
    constant, or a lookup in a ``static const long NAME_index[]`` table appended to ``lines``."""
    index = {}
    for name, table in tables.items():
        table = [int(t) for t in table]
        if table == list(range(count)):
            index[name] = "i"
        elif len(set(table)) == 1:
            index[name] = str(table[0])
        else:
            lines.append(f"static const long {name}_index[{count}] = {c_longs(table)};")
            index[name] = f"{name}_index[i]"
    return index


#: the C element type of each storable dtype
C_TYPES = {
    DType.FLOAT32: "float",
    DType.INT8: "int8_t",
    DType.UINT8: "uint8_t",
    DType.INT32: "int32_t",
    DType.INT64: "int64_t",
    DType.BOOL: "uint8_t",
    DType.INT16: "int16_t",
    DType.UINT16: "uint16_t",
    DType.UINT32: "uint32_t",
    DType.UINT64: "uint64_t",
    DType.FLOAT64: "double",
    DType.FLOAT16: "uint16_t",  # the bit pattern; computed in float (lw_h2f / lw_f2h in kernels_common.h)
    DType.BFLOAT16: "uint16_t",  # likewise (lw_bf2f / lw_f2bf)
}


def c_type(value: Value) -> str:
    return C_TYPES[value.type.dtype] if value.type is not None else "float"


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

    def ptr(self, value: Value, ctype: str | None = None) -> str:
        """A C expression (``const T *``; T is the value's element type unless ``ctype`` is given) for
        reading ``value``."""
        ctype = ctype or c_type(value)
        root = self._roots.get(id(value), value)
        if root.is_const:
            return self.weights(root.const, c_type(value) if value.type is not None else "float", ctype)
        if id(root) in self._inputs:
            return f"((const {ctype} *)ctx->in[{self._inputs[id(root)]}])"
        if id(root) in self._outputs:
            return f"((const {ctype} *)ctx->out[{self._outputs[id(root)]}])"
        return f"((const {ctype} *)(ctx->arena + {self._offset(root)}))"

    def out(self, value: Value, ctype: str | None = None) -> str:
        """A C expression (``T *``) for writing the node output ``value``."""
        root = self._roots.get(id(value), value)
        if root.is_const or id(root) in self._inputs:
            raise LoweringError(f"cpu target: output '{value.name}' aliases a constant or graph input")
        return self._writable(root, ctype or c_type(value))

    def _writable(self, root: Value, ctype: str = "float") -> str:
        if id(root) in self._outputs:
            return f"(({ctype} *)ctx->out[{self._outputs[id(root)]}])"
        return f"(({ctype} *)(ctx->arena + {self._offset(root)}))"

    def _offset(self, root: Value) -> int:
        offset = self.offsets.get(root.name)
        if offset is None:
            raise LoweringError(f"cpu target: the memory plan has no arena offset for value '{root.name}'")
        return offset

    def weights(self, array: np.ndarray, ctype: str = "float", pointer: str | None = None) -> str:
        """Store ``array`` as ``ctype`` elements in the weights blob; a C expression (``const pointer *``,
        default ``ctype``) pointing at it."""
        dtype = NUMPY_OF_C[ctype]
        data = np.asarray(array)
        if data.dtype in (DType.FLOAT16.numpy, DType.BFLOAT16.numpy) and dtype == np.uint16:
            data = data.view(np.uint16)  # a 16-bit float constant: its bit pattern
        if data.dtype != dtype and not np.can_cast(data.dtype, dtype, casting="same_kind"):
            raise LoweringError(f"cpu target: cannot store a {data.dtype} constant as {ctype}")
        return f"((const {pointer or ctype} *)(ctx->w + {self.blob.add(data, dtype)}))"

    def opt_ptr(self, value: Value | None) -> str:
        return "NULL" if value is None else self.ptr(value)


NUMPY_OF_C = {
    "float": np.float32,
    "int8_t": np.int8,
    "uint8_t": np.uint8,
    "int32_t": np.int32,
    "int64_t": np.int64,
    "int16_t": np.int16,
    "uint16_t": np.uint16,
    "uint32_t": np.uint32,
    "uint64_t": np.uint64,
    "double": np.float64,
}


def _kinds(dtypes: tuple[DType, ...]) -> str:
    names = [d.value for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def type_reason(node: Node, lowering: OpLowering) -> str | None:
    """Why ``node`` has a tensor the cpu target cannot hold for this op (element types, extra outputs)."""
    if lowering.dtypes is not None:
        allowed = lowering.dtypes
        if node.qualified_op in MOVE_OPS and allowed == ALL_TYPES:
            allowed = allowed + HALF_TYPES
        if allowed == FLOAT_ONLY:
            what = f"the cpu target computes float32 tensors only for {node.op}"
        else:
            what = f"the cpu {node.op} takes {_kinds(allowed)} tensors"
        inputs = node.inputs if lowering.data_inputs is None else node.inputs[: lowering.data_inputs]
        first = None
        for i, v in enumerate(list(inputs) + [node.outputs[0]]):
            if v is None:
                continue
            role = f"input {i} '{v.name}'" if i < len(inputs) else f"output '{v.name}'"
            if v.type is None or v.type.dtype not in allowed:
                kind = v.type.dtype.value if v.type is not None else "untyped"
                return f"{role} is {kind}; {what}"
            if first is None:
                first = v.type.dtype
            elif v.type.dtype is not first:
                return f"{role} is {v.type.dtype.value} but input 0 is {first.value}; they must match"
    graph_outputs = {id(v) for v in node.graph.outputs} if node.graph is not None else set()
    for index, extra in enumerate(node.outputs[lowering.outputs:], start=lowering.outputs):
        if extra is not None and (extra.uses() or id(extra) in graph_outputs):
            n = lowering.outputs
            computed = "only output 0 is" if n == 1 else f"only outputs 0..{n - 1} are"
            return f"output '{extra.name}' (output {index}) is used; {computed} computed"
    return None

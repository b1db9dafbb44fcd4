"""The mutable, use-tracked graph IR (in the style of onnx-ir and torch.fx).

A :class:`Graph` owns an ordered list of :class:`Node` s. Each node consumes :class:`Value` s and produces
new ones. Every value knows its producer and its uses; only this module edits use-lists, through
``Node.replace_input``, ``Value.replace_all_uses_with`` and ``Graph.remove``.

Constants (ONNX initializers and folded results) are values with ``const`` set and no producer.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .types import TensorType


class AttrKind(enum.Enum):
    INT = "int"
    FLOAT = "float"
    STRING = "string"
    INTS = "ints"
    FLOATS = "floats"
    STRINGS = "strings"
    TENSOR = "tensor"


_KIND_CHECKS = {
    AttrKind.INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
    AttrKind.FLOAT: lambda v: isinstance(v, float),
    AttrKind.STRING: lambda v: isinstance(v, str),
    AttrKind.INTS: lambda v: isinstance(v, tuple) and all(isinstance(x, int) for x in v),
    AttrKind.FLOATS: lambda v: isinstance(v, tuple) and all(isinstance(x, float) for x in v),
    AttrKind.STRINGS: lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
    AttrKind.TENSOR: lambda v: isinstance(v, np.ndarray),
}


@dataclass(frozen=True)
class Attr:
    """A typed node attribute."""

    kind: AttrKind
    value: object

    def __post_init__(self):
        if not _KIND_CHECKS[self.kind](self.value):
            raise TypeError(f"attribute value {self.value!r} is not of kind {self.kind.value}")

    @staticmethod
    def infer(value) -> Attr:
        """Build an attribute from a plain Python value, choosing its kind from the value's type."""
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            return Attr(AttrKind.INT, value)
        if isinstance(value, float):
            return Attr(AttrKind.FLOAT, value)
        if isinstance(value, str):
            return Attr(AttrKind.STRING, value)
        if isinstance(value, np.ndarray):
            return Attr(AttrKind.TENSOR, value)
        if isinstance(value, (list, tuple)):
            items = tuple(value)
            if all(isinstance(x, str) for x in items) and items:
                return Attr(AttrKind.STRINGS, items)
            if all(isinstance(x, (int, np.integer)) for x in items):
                return Attr(AttrKind.INTS, tuple(int(x) for x in items))
            return Attr(AttrKind.FLOATS, tuple(float(x) for x in items))
        raise TypeError(f"cannot make an attribute from {type(value).__name__}")


@dataclass
class NodeMeta:
    """Declared per-node metadata, carried through rewrites.

    ``sources`` names the original ONNX nodes this node computes (fusion passes merge them), so
    ``inspect`` can show which source nodes went into each kernel.
    """

    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Use:
    node: Node
    index: int


class Value:
    """An SSA value: a graph input, a constant, or a node output."""

    def __init__(self, name: str, type: TensorType | None = None, const: np.ndarray | None = None):
        self.name = name
        self.type = type if type is not None or const is None else TensorType.of(const)
        self.const = const
        self.producer: Node | None = None
        self.output_index = 0
        self._uses: list[Use] = []

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def uses(self) -> tuple[Use, ...]:
        return tuple(self._uses)

    def users(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for use in self._uses:
            seen.setdefault(id(use.node), use.node)
        return list(seen.values())

    def replace_all_uses_with(self, other: Value, graph: Graph | None = None) -> None:
        """Point every use (and graph output slot) of this value at ``other``."""
        if graph is None:
            nodes = [self.producer] + [u.node for u in self._uses]
            graph = next((n.graph for n in nodes if n is not None and n.graph is not None), None)
        for use in self.uses():
            use.node.replace_input(use.index, other)
        if graph is not None:
            graph.outputs = [other if v is self else v for v in graph.outputs]

    def __repr__(self) -> str:
        return f"%{self.name}:{self.type}"


class Node:
    """An operation. ``domain`` is "" for standard ONNX ops and "lowering" for the project's fused ops."""

    def __init__(
        self,
        op: str,
        inputs: Iterable[Value | None],
        outputs: Iterable[Value],
        attrs: dict[str, Attr] | None = None,
        name: str = "",
        domain: str = "",
        meta: NodeMeta | None = None,
    ):
        self.op = op
        self.domain = domain
        self.name = name
        self.attrs: dict[str, Attr] = dict(attrs or {})
        self.meta = meta or NodeMeta(sources=(name,) if name else ())
        self.graph: Graph | None = None
        self._inputs: list[Value | None] = []
        for v in inputs:
            self._inputs.append(v)
            if v is not None:
                v._uses.append(Use(self, len(self._inputs) - 1))
        self.outputs: list[Value] = list(outputs)
        for i, out in enumerate(self.outputs):
            out.producer = self
            out.output_index = i

    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return tuple(self._inputs)

    def input(self, i: int) -> Value | None:
        return self._inputs[i] if i < len(self._inputs) else None

    @property
    def output(self) -> Value:
        return self.outputs[0]

    def attr(self, name: str, default=None):
        a = self.attrs.get(name)
        return default if a is None else a.value

    def set_attr(self, name: str, value) -> None:
        self.attrs[name] = Attr.infer(value)

    def replace_input(self, index: int, value: Value | None) -> None:
        old = self._inputs[index]
        if old is not None:
            old._uses.remove(Use(self, index))
        self._inputs[index] = value
        if value is not None:
            value._uses.append(Use(self, index))

    def append_input(self, value: Value | None) -> None:
        self._inputs.append(None)
        self.replace_input(len(self._inputs) - 1, value)

    def _detach(self) -> None:
        for i in range(len(self._inputs)):
            self.replace_input(i, None)

    @property
    def label(self) -> str:
        """How errors name this node: its name and op."""
        return f"node '{self.name or '<unnamed>'}' ({self.qualified_op})"

    @property
    def qualified_op(self) -> str:
        return f"{self.domain}::{self.op}" if self.domain else self.op

    def __repr__(self) -> str:
        return f"<Node {self.label}>"


@dataclass
class Graph:
    """A model's graph: ordered nodes, graph inputs and outputs, and named constants."""

    name: str = "graph"
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    opset: int = 17
    #: The names the model's users see for its outputs, fixed at import. ``outputs[i]`` may be renamed
    #: or replaced by passes; ``output_names[i]`` never changes.
    output_names: list[str] = field(default_factory=list)
    #: Set by the memory-planning pass (a ``lowering.memory.MemoryPlan``); read by targets.
    memory_plan: object | None = None
    _names: set[str] = field(default_factory=set, repr=False)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes))

    def unique_name(self, hint: str) -> str:
        """A value or node name not used yet in this graph."""
        base = hint or "v"
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def reserve_name(self, name: str) -> None:
        self._names.add(name)

    def constant(self, array: np.ndarray, hint: str = "const") -> Value:
        """A new constant value (not tied to any node)."""
        return Value(self.unique_name(hint), const=np.asarray(array, order="C"))

    def append(self, node: Node) -> Node:
        node.graph = self
        self.nodes.append(node)
        return node

    def insert_before(self, anchor: Node, node: Node) -> Node:
        node.graph = self
        self.nodes.insert(self.nodes.index(anchor), node)
        return node

    def insert_after(self, anchor: Node, node: Node) -> Node:
        node.graph = self
        self.nodes.insert(self.nodes.index(anchor) + 1, node)
        return node

    def remove(self, nodes: Node | Iterable[Node], safe: bool = True) -> None:
        """Remove nodes. With ``safe``, refuse (leaving the graph unchanged) if an output is still used
        by a node that is not also being removed, or is a graph output."""
        group = [nodes] if isinstance(nodes, Node) else list(nodes)
        ids = {id(n) for n in group}
        if safe:
            outputs = {id(v) for v in self.outputs}
            for n in group:
                for out in n.outputs:
                    if id(out) in outputs:
                        raise ValueError(f"cannot remove {n.label}: {out.name} is a graph output")
                    for use in out.uses():
                        if id(use.node) not in ids:
                            raise ValueError(
                                f"cannot remove {n.label}: {out.name} is used by {use.node.label}"
                            )
        for n in group:
            n._detach()
            n.graph = None
        self.nodes = [n for n in self.nodes if id(n) not in ids]

    def values(self) -> list[Value]:
        """Every value reachable in the graph: inputs, constants used, node outputs (deterministic order)."""
        seen: dict[int, Value] = {}
        for v in self.inputs:
            seen.setdefault(id(v), v)
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    seen.setdefault(id(v), v)
            for v in n.outputs:
                seen.setdefault(id(v), v)
        for v in self.outputs:
            seen.setdefault(id(v), v)
        return list(seen.values())

    def constants(self) -> list[Value]:
        return [v for v in self.values() if v.is_const]

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.qualified_op] = counts.get(n.qualified_op, 0) + 1
        return dict(sorted(counts.items()))

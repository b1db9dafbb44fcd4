"""The graph IR: types, use-tracked graph, verifier, stable printer."""

from .core import Attr, AttrKind, Graph, Node, NodeMeta, Use, Value
from .printer import print_graph
from .types import DType, TensorType
from .verify import IRError, verify

__all__ = [
    "Attr", "AttrKind", "DType", "Graph", "IRError", "Node", "NodeMeta", "TensorType", "Use", "Value",
    "print_graph", "verify",
]

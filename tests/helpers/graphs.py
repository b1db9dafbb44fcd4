"""A small builder of graph IR for tests: inputs, constants, ops (output types from the reference), outputs.

    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    y = b.op("Conv", [x, b.const(w)], {"pads": (1, 1, 1, 1)}, name="conv")
    b.output(b.op("Relu", [y]))
    graph = b.graph

Output types come from evaluating each op with the reference interpreter on example data (ones for
inputs, the constant data for constants), unless ``out_type`` is given (``FusedElementwise`` needs it).
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Attr, DType, Graph, Node, TensorType, Value
from lowering.reference import evaluate_node


class GraphBuilder:
    def __init__(self, name: str = "test", opset: int = 17):
        self.graph = Graph(name=name, opset=opset)
        self._examples: dict[int, np.ndarray] = {}

    def input(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> Value:
        value = Value(self.graph.unique_name(name), TensorType(DType.from_numpy(dtype), tuple(shape)))
        self.graph.inputs.append(value)
        self._examples[id(value)] = np.ones(shape, dtype)
        return value

    def const(self, array, name: str = "c", dtype=None) -> Value:
        """A constant; Python floats and float64 arrays become float32 unless ``dtype`` says otherwise.
        (Built directly rather than with ``Graph.constant``, which turns 0-d arrays into shape [1].)"""
        array = np.asarray(array, dtype=dtype)
        if dtype is None and array.dtype == np.float64:
            array = array.astype(np.float32)
        return Value(self.graph.unique_name(name), const=np.asarray(array, order="C"))

    def op(self, op: str, inputs: list[Value | None], attrs: dict | None = None, name: str | None = None,
           domain: str = "", outputs: int = 1, out_type: TensorType | None = None) -> Value | list[Value]:
        """Append a node; return its output (or outputs when ``outputs > 1``)."""
        node_name = self.graph.unique_name(name or op.lower())
        converted = {k: v if isinstance(v, Attr) else Attr.infer(v) for k, v in (attrs or {}).items()}
        values = [Value(self.graph.unique_name(f"{node_name}_out" if i == 0 else f"{node_name}_out{i}"))
                  for i in range(outputs)]
        if out_type is not None:  # before evaluating: FusedElementwise reads its output type
            values[0].type = out_type
        node = self.graph.append(Node(op, inputs, values, converted, name=node_name, domain=domain))
        examples = [None if v is None else (v.const if v.is_const else self._examples[id(v)])
                    for v in inputs]
        with np.errstate(all="ignore"):
            results = evaluate_node(node, examples)
        for value, result in zip(values, results):
            if result is None:  # an optional output the reference does not compute (MaxPool indices)
                value.type = TensorType(DType.INT64, values[0].type.shape)
                continue
            self._examples[id(value)] = result
            value.type = out_type if out_type is not None else TensorType.of(np.asarray(result))
        return values[0] if outputs == 1 else values

    def output(self, value: Value, name: str | None = None) -> Value:
        self.graph.outputs.append(value)
        self.graph.output_names.append(name or value.name)
        return value

"""Graph IR -> ONNX ModelProto: the optimized graph, for inspection in Netron and for round trips.

Fused ops keep their ``lowering`` domain; standard ops export as themselves. A name that is not text (the
bytes protobuf hands back for a string field of a damaged model that is not valid UTF-8) is refused with a
LoweringError naming the node or tensor, never a UnicodeDecodeError from deep inside ``onnx.helper``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import LoweringError
from ..ir import AttrKind, Graph

_TO_ONNX = {
    "float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16,
    "float64": onnx.TensorProto.DOUBLE, "int8": onnx.TensorProto.INT8, "uint8": onnx.TensorProto.UINT8,
    "int32": onnx.TensorProto.INT32, "int64": onnx.TensorProto.INT64, "bool": onnx.TensorProto.BOOL,
    "int16": onnx.TensorProto.INT16, "uint16": onnx.TensorProto.UINT16, "uint32": onnx.TensorProto.UINT32,
    "uint64": onnx.TensorProto.UINT64, "bfloat16": onnx.TensorProto.BFLOAT16,
}


def _check_text(graph: Graph) -> None:
    """Every name the ModelProto will hold must be ``str`` (see the module docstring)."""
    def check(value, what: str) -> None:
        if not isinstance(value, str):
            shown = bytes(value[:40]) if isinstance(value, (bytes, bytearray)) else value
            raise LoweringError(f"{graph.name if isinstance(graph.name, str) else 'model'}: {what} {shown!r} "
                                "is not valid UTF-8 text (a damaged model?)")

    check(graph.name, "the graph name")
    for v in list(graph.inputs) + list(graph.constants()):
        check(v.name, "tensor name")
    for name in graph.output_names:
        check(name, "output name")
    for i, node in enumerate(graph.nodes):
        check(node.name, f"the name of node {i} ({node.op if isinstance(node.op, str) else '?'})")
        check(node.op, f"the op type of node {i}")
        check(node.domain or "", f"the domain of node {i}")
        for v in list(node.inputs) + list(node.outputs):
            if v is not None:
                check(v.name, f"a tensor name of node {i} ({node.op})")
        for key, attr in node.attrs.items():
            check(key, f"an attribute name of node {i} ({node.op})")
            if attr.kind is AttrKind.STRING:
                check(attr.value, f"attribute '{key}' of node {i} ({node.op})")
            elif attr.kind is AttrKind.STRINGS:
                for item in attr.value:
                    check(item, f"attribute '{key}' of node {i} ({node.op})")
        for source in node.meta.sources:
            check(source, f"a source node name of node {i} ({node.op})")


def _value_info(name, type_):
    return helper.make_tensor_value_info(name, _TO_ONNX[type_.dtype.value], list(type_.shape))


def _attribute(name, attr):
    if attr.kind is AttrKind.TENSOR:
        return helper.make_attribute(name, numpy_helper.from_array(np.asarray(attr.value)))
    if attr.kind in (AttrKind.INTS, AttrKind.FLOATS, AttrKind.STRINGS):
        return helper.make_attribute(name, list(attr.value), attr_type=getattr(
            onnx.AttributeProto, attr.kind.name))
    return helper.make_attribute(name, attr.value)


def export_graph(graph: Graph) -> onnx.ModelProto:
    """Build a ModelProto for ``graph`` (constants become initializers)."""
    _check_text(graph)
    nodes, initializers = [], []
    for v in sorted(graph.constants(), key=lambda v: v.name):
        initializers.append(numpy_helper.from_array(np.asarray(v.const), v.name))
    for node in graph.nodes:
        proto = helper.make_node(
            node.op, [v.name if v is not None else "" for v in node.inputs],
            [v.name for v in node.outputs], name=node.name, domain=node.domain or None)
        proto.attribute.extend(_attribute(k, a) for k, a in sorted(node.attrs.items()))
        if node.meta.sources and node.meta.sources != (node.name,):
            proto.doc_string = "sources: " + ", ".join(node.meta.sources)
        nodes.append(proto)
    outputs = []
    for name, v in zip(graph.output_names, graph.outputs):
        if v.name != name:
            nodes.append(helper.make_node("Identity", [v.name], [name], name=f"output_{name}"))
        outputs.append(_value_info(name, v.type))
    value_info = [_value_info(v.name, v.type) for n in graph.nodes for v in n.outputs
                  if v.type is not None and v.name not in graph.output_names]
    g = helper.make_graph(nodes, graph.name, [_value_info(v.name, v.type) for v in graph.inputs],
                          outputs, initializer=initializers, value_info=value_info)
    opsets = [helper.make_opsetid("", graph.opset)]
    for domain in sorted({n.domain for n in graph.nodes if n.domain not in ("", "ai.onnx")}):
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(g, opset_imports=opsets, producer_name="lowering")
    model.ir_version = min(model.ir_version, 10)
    return model


def export_bytes(graph: Graph) -> bytes:
    return export_graph(graph).SerializeToString(deterministic=True)

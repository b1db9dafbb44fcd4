"""A stable text form of the graph IR: deterministic, for golden files, ``--print-after`` and dumps."""

from __future__ import annotations

import numpy as np

from .core import Attr, AttrKind, Graph


def _format_attr(attr: Attr) -> str:
    if attr.kind is AttrKind.TENSOR:
        arr = attr.value
        return f"tensor<{arr.dtype}{list(arr.shape)}>"
    if attr.kind is AttrKind.FLOAT:
        return str(np.float32(attr.value))
    if attr.kind is AttrKind.FLOATS:
        return "[" + ", ".join(str(np.float32(x)) for x in attr.value) + "]"
    if attr.kind in (AttrKind.INTS, AttrKind.STRINGS):
        return "[" + ", ".join(repr(x) for x in attr.value) + "]"
    return repr(attr.value)


def print_graph(graph: Graph) -> str:
    """Render ``graph`` as text. Constants print as their type only (data is never dumped)."""
    lines = [f"graph {graph.name} (opset {graph.opset}) {{"]
    for v in graph.inputs:
        lines.append(f"  input %{v.name}: {v.type}")
    consts = sorted({id(v): v for v in graph.constants()}.values(), key=lambda v: v.name)
    for v in consts:
        lines.append(f"  const %{v.name}: {v.type}")
    for node in graph.nodes:
        outs = ", ".join(f"%{v.name}: {v.type}" for v in node.outputs)
        ins = ", ".join("_" if v is None else f"%{v.name}" for v in node.inputs)
        attrs = ", ".join(f"{k}={_format_attr(a)}" for k, a in sorted(node.attrs.items()))
        attrs = f" {{{attrs}}}" if attrs else ""
        lines.append(f"  {outs} = {node.qualified_op}({ins}){attrs}")
    for name, v in zip(graph.output_names, graph.outputs):
        lines.append(f"  output {name} = %{v.name}")
    lines.append("}")
    return "\n".join(lines) + "\n"

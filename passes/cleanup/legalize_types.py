"""Type legalization for a target that computes in float32: a float16 or float64 node the target has no
kernel for runs in float32 between Casts, the way ONNX Runtime's CPU provider runs float16 nodes
(InsertCastTransformer, then RemoveDuplicateCastTransformer)::

    y:f16 = Softmax(x:f16)   ->   x32 = Cast<to=FLOAT>(x)   y32 = Softmax(x32)   y:f16 = Cast<to=FLOAT16>(y32)

Which nodes: those with a float16 or float64 input or output that the target cannot run as they are
(``native(node)``, the target's own check, is false). Elementwise ops, Cast and the kernels that only move
elements run float16/float64 natively on the cpu target and are left alone; MatMul, Conv, reductions,
Softmax, normalizations... are legalized. The node's float16/float64 inputs are cast to float32 (a constant
is converted at compile time; one Cast per value, shared by its consumers), each used float16/float64
output becomes a float32 value followed by a Cast back to its type, and an attribute naming the output type
(``dtype``, ConstantOfShape's ``value``) says float32. A Cast(float32 -> T) whose users are all Cast(T ->
float32), both inserted here, is then bypassed: exact for float64; for float16 the rounding between two
float32 ops is skipped, as ONNX Runtime skips it.

Why not everywhere: the kernels are float32; computing float16 in float32 is more accurate than float16
and what ONNX Runtime does, but float64 computed in float32 loses precision, so the pass warns (one line on
stderr, like the quantizer's warnings) with the number of nodes and their ops, and lists each in its
changes (``lower inspect``). A node the target cannot run even in float32 is still rewritten; the
partitioner then names it with the float32 reason.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable

import numpy as np

from lowering.ir import Attr, AttrKind, DType, Graph, Node, TensorType, Value
from lowering.opinfo import ONNX_DTYPE_CODES
from lowering.passmanager import Pass, PassContext, PassResult

#: element types computed in float32 by this pass
LEGALIZED = (DType.FLOAT16, DType.FLOAT64, DType.BFLOAT16)
_CODES = {dtype: code for code, dtype in ONNX_DTYPE_CODES.items()}
#: ops whose output type is an attribute (ONNX type code)
_DTYPE_ATTRS = ("dtype",)


def _wide(v: Value | None) -> bool:
    return v is not None and v.type is not None and v.type.dtype in LEGALIZED


class LegalizeTypes(Pass):
    """Run float16/float64 nodes the target has no kernel for in float32, between Casts."""

    name = "legalize_types"

    def __init__(self, native: Callable[[Node], bool], target: str = "cpu"):
        self.native = native
        self.target = target

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes: list[str] = []
        casts: dict[int, Value] = {}  # id(value) -> its float32 version (a Cast output or a constant)
        inserted: set[int] = set()  # ids of the Cast nodes this pass made
        lost: Counter[str] = Counter()
        graph_outputs = {id(v) for v in graph.outputs}
        for node in list(graph.nodes):
            values = list(node.inputs) + list(node.outputs)
            if not any(_wide(v) for v in values) or self.native(node):
                continue
            kinds = sorted({v.type.dtype.value for v in values if _wide(v)})
            if DType.FLOAT64.value in kinds:
                lost[node.qualified_op] += 1
            for i, v in enumerate(node.inputs):
                if _wide(v):
                    node.replace_input(i, self._float32(graph, node, v, casts, inserted))
            for i, out in enumerate(list(node.outputs)):
                if not _wide(out):
                    continue
                if not out.uses() and id(out) not in graph_outputs:
                    out.type = TensorType(DType.FLOAT32, out.type.shape)
                    continue
                wide = Value(graph.unique_name(f"{out.name}_f32"), TensorType(DType.FLOAT32, out.type.shape))
                node.outputs[i] = wide
                wide.producer, wide.output_index = node, i
                cast = Node("Cast", [wide], [out], {"to": Attr(AttrKind.INT, _CODES[out.type.dtype])},
                            name=graph.unique_name(f"{node.name}_to_{out.type.dtype.value}"))
                graph.insert_after(node, cast)
                inserted.add(id(cast))
            self._retype_attrs(node)
            changes.append(f"{node.qualified_op} '{node.name}' ({'/'.join(kinds)}) computed in float32")
        removed = self._drop_round_trips(graph, inserted)
        if removed:
            changes.append(f"removed {removed} float32 -> float16/float64 -> float32 cast pair(s)")
        if lost:
            ops = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(lost.items()))
            print(f"warning: {sum(lost.values())} float64 node(s) computed in float32 on the {self.target} "
                  f"target (precision lost): {ops}", file=sys.stderr)
        return PassResult(bool(changes), changes)

    @staticmethod
    def _float32(graph: Graph, user: Node, v: Value, casts: dict[int, Value], inserted: set[int]) -> Value:
        """The float32 version of ``v`` (made once): a converted constant, or a Cast before ``user``."""
        done = casts.get(id(v))
        if done is not None:
            return done
        if v.is_const:
            with np.errstate(all="ignore"):
                done = graph.constant(v.const.astype(np.float32), hint=f"{v.name}_f32")
        else:
            done = Value(graph.unique_name(f"{v.name}_f32"), TensorType(DType.FLOAT32, v.type.shape))
            cast = Node("Cast", [v], [done], {"to": Attr(AttrKind.INT, 1)},
                        name=graph.unique_name(f"{v.name}_to_float32"))
            graph.insert_before(user, cast)
            inserted.add(id(cast))
        casts[id(v)] = done
        return done

    @staticmethod
    def _retype_attrs(node: Node) -> None:
        """Attributes that name the output type now name float32."""
        for name in _DTYPE_ATTRS:
            code = node.attr(name)
            if isinstance(code, int) and ONNX_DTYPE_CODES.get(code) in LEGALIZED:
                node.set_attr(name, 1)
        value = node.attr("value") if node.op == "ConstantOfShape" else None
        if isinstance(value, np.ndarray) and value.dtype in {t.numpy for t in LEGALIZED}:
            node.attrs["value"] = Attr(AttrKind.TENSOR, value.astype(np.float32))

    @staticmethod
    def _drop_round_trips(graph: Graph, inserted: set[int]) -> int:
        """Bypass inserted Cast(float32 -> T) -> Cast(T -> float32) pairs; remove what becomes unused."""
        removed = 0
        graph_outputs = {id(v) for v in graph.outputs}
        for node in list(graph.nodes):
            if id(node) not in inserted or node.attr("to") == 1:
                continue
            source, narrow = node.input(0), node.output
            for user in narrow.users():
                if id(user) in inserted and user.attr("to") == 1:
                    user.output.replace_all_uses_with(source, graph)
                    graph.remove(user)
                    removed += 1
            if not narrow.uses() and id(narrow) not in graph_outputs:
                graph.remove(node)
        return removed

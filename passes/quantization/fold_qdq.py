"""FoldQDQ: fold ``DequantizeLinear -> float op -> QuantizeLinear`` into the integer ops of
``lowering.quantized`` (the contract the reference, the cpu target and the accelerator share).

    Q(Relu(Conv(DQ(x), DQ(w), DQ(b))))      ->  lowering::QConv(x, w, b){multiplier, shift, clamp_min=zo}
    Q(Gemm(DQ(a), DQ(w), c)) / Q(MatMul..)  ->  lowering::QMatMul(a, w', c_int32)
    Q(Add(DQ(a), DQ(b))) / Sub              ->  lowering::QAdd(a, b)
    Q(Mul(DQ(a), DQ(b)))                    ->  lowering::QMul(a, b)
    Q(GlobalAveragePool(DQ(x)))             ->  lowering::QAveragePool(x){global=1}
    Q(Sigmoid(DQ(x)))                       ->  lowering::QLut(x){lut}
    Q(MaxPool(DQ(x))), equal parameters     ->  MaxPool(x)   (int8/uint8; likewise Reshape, Concat, ...)

A group is anchored at a per-tensor int8/uint8 QuantizeLinear whose float input has no other use. Walking
up from it: an optional ``Relu``/``Clip`` (with constant bounds) becomes the output clamp; for
Conv/Gemm/MatMul an optional ``Add`` of a constant becomes part of the bias; then the op itself, whose
tensor inputs must be DequantizeLinear outputs (per-tensor activations; constant weights per tensor or
per output channel, through an optional Transpose). Details per op are in ``rewrites.py``:

- requantization ``M, shift`` = ``quantize_multiplier(s_in * s_w[n] / s_out)`` (per output channel when
  the weights are), a Gemm's ``alpha`` folded in, its ``beta`` in the bias;
- the bias becomes int32 at the accumulator scale ``s_in * s_w[n]``: ONNX Runtime's int32 bias behind a
  DequantizeLinear with that scale is kept exactly, a float bias is ``round(b / (s_in s_w[n]))``;
- weights keep their integer data (transposed to ``[K, N]`` for a Gemm with ``transB``);
- an elementwise op of one tensor (``UNARY_OPS``, or ``Add/Sub/Mul/Div`` by a scalar constant) and a
  bare ``Q(DQ(x))`` become a 256-entry ``QLut`` (dequantize each code, apply f in float64, requantize
  rounding half to even, clamp);
- data-movement ops run on the integers; an input with other parameters than the output first goes
  through a requantization ``QLut`` (exact: the float path requantizes every element the same way).

Then every elementwise region computed from one int8/uint8 tensor alone (a GELU's DQ, Div, Erf, Q, QAdd,
QMul, QMul) becomes one ``QLut`` holding the reference's evaluation of the region on every code
(``tables.py``: exact). Finally a ``QLut`` whose input is the only use of a QConv/QMatMul/QAdd/QMul of the
same output type becomes that op's ``lut`` epilogue, and DequantizeLinear (and Transpose) nodes left
without uses are removed.

The integer ops requantize in fixed point (round half up), the float path in float32 (round half to
even): results agree within one quantization step. Whatever does not fold stays float between its
DequantizeLinear and QuantizeLinear (the targets run those as standalone ops); the reason is logged.
"""

from __future__ import annotations

from lowering.ir import Attr, Graph, Node
from lowering.opinfo import BINARY_OPS, DOMAIN, UNARY_OPS
from lowering.passmanager import Pass, PassContext, PassResult

from ..fusion.rewriting import merged_meta, replace_group, sole_use
from .qparams import QUANTIZED_DTYPES, activation_clamp, is_op, qparams
from .rewrites import (
    MOVE_OPS,
    Match,
    Rewrite,
    fold_add,
    fold_conv,
    fold_lut,
    fold_matmul,
    fold_move,
    fold_mul,
    fold_pool,
)
from .tables import collapse_tables

LINEAR_OPS = frozenset({"Conv", "Gemm", "MatMul"})
LUT_OPS = frozenset(UNARY_OPS) | BINARY_OPS
#: Ops a following Relu/Clip folds into (as the clamp; for tables, into the table).
CLAMPED_OPS = LINEAR_OPS | {"Add", "Sub", "Mul", "GlobalAveragePool", "AveragePool"} | LUT_OPS
#: Integer ops whose requantization can take a following QLut as their ``lut`` epilogue.
LUT_EPILOGUE_OPS = frozenset({"QConv", "QMatMul", "QAdd", "QMul"})


def _standard(node: Node | None) -> bool:
    return node is not None and not node.domain


def _bias_add_source(graph: Graph, add: Node) -> Node | None:
    """The Conv/Gemm/MatMul of ``Add(linear_op, constant)``, when its output has no other use."""
    if not is_op(add, "Add") or len(add.inputs) != 2:
        return None
    consts = [v for v in add.inputs if v is not None and v.is_const]
    others = [v for v in add.inputs if v is not None and not v.is_const]
    if len(consts) != 1 or len(others) != 1:
        return None
    source = others[0].producer
    if _standard(source) and source.op in LINEAR_OPS and sole_use(graph, others[0]) is not None:
        return source
    return None


def _fold(graph: Graph, m: Match) -> Rewrite | str:
    op = m.core.op
    tensors = [v for v in m.core.inputs if v is not None and not v.is_const]
    if op == "Conv":
        return fold_conv(graph, m)
    if op in ("Gemm", "MatMul"):
        return fold_matmul(graph, m)
    if op in ("Add", "Sub") and len(tensors) == 2:
        return fold_add(graph, m)
    if op == "Mul" and len(tensors) == 2:
        return fold_mul(graph, m)
    if op in ("GlobalAveragePool", "AveragePool"):
        return fold_pool(graph, m)
    if op in MOVE_OPS:
        return fold_move(graph, m)
    if op in LUT_OPS or op == "DequantizeLinear":
        return fold_lut(graph, m)
    return f"no integer op computes {op}"


class FoldQDQ(Pass):
    """Rewrite DequantizeLinear -> op -> QuantizeLinear groups into the integer ops of the contract."""

    name = "fold_qdq"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes = []
        for q in graph:
            if q.graph is not graph or not is_op(q, "QuantizeLinear"):
                continue
            found = self._match(graph, q)
            if found is None:
                continue
            rewrite = found if isinstance(found, str) else _fold(graph, found)
            if isinstance(rewrite, str):
                what = q.input(0).producer
                ctx.log(f"{self.name}: {what.label} stays float between DequantizeLinear and "
                        f"QuantizeLinear '{q.name}': {rewrite}")
                continue
            self._apply(graph, found, rewrite)
            absorbed = "".join(f" + {n.op}" for n in (found.bias_add, found.act) if n is not None)
            changes.append(f"{found.core.op} '{found.core.name}'{absorbed} -> "
                           f"{rewrite.node.qualified_op} ({found.out.dtype.name})")
        changes += collapse_tables(graph)
        changes += self._fuse_tables(graph)
        return PassResult(bool(changes), changes)

    def _match(self, graph: Graph, q: Node) -> Match | str | None:
        """The group ending at ``q``; None when there is none (``q`` quantizes a graph input), or why it
        cannot fold."""
        core = q.input(0).producer
        if not _standard(core):
            return None
        out = qparams(q)
        if isinstance(out, str):
            return f"the QuantizeLinear: {out}"
        if not out.per_tensor or out.dtype.name not in QUANTIZED_DTYPES:
            return f"the output is quantized as {out.describe()}, not per-tensor int8/uint8"
        if sole_use(graph, q.input(0)) is None:
            return "its float output has other uses than the QuantizeLinear"
        act = bias_add = None
        if core.op in ("Relu", "Clip"):
            inner = core.input(0).producer
            if _standard(inner) and inner.op in CLAMPED_OPS and sole_use(graph, core.input(0)) is not None:
                act, core = core, inner
        linear = _bias_add_source(graph, core)
        if linear is not None:
            bias_add, core = core, linear
        clamp = activation_clamp(act, out)
        if isinstance(clamp, str):
            return clamp
        return Match(q, core, out, clamp, act, bias_add)

    def _apply(self, graph: Graph, m: Match, rewrite: Rewrite) -> None:
        feeding = {id(v.producer): v.producer for n in m.group for v in n.inputs
                   if v is not None and v.producer is not None}
        replace_group(graph, m.group, rewrite.node)
        for node in rewrite.before:
            graph.insert_before(rewrite.node, node)
        self._remove_unused(graph, list(feeding.values()))

    def _remove_unused(self, graph: Graph, candidates: list[Node]) -> None:
        """Remove the DequantizeLinear (and weight Transpose) nodes that fed a folded group and have no
        use left, and then whatever of the same kind fed those."""
        outputs = {id(v) for v in graph.outputs}
        while candidates:
            node = candidates.pop()
            if node.graph is not graph or node.domain or node.op not in ("DequantizeLinear", "Transpose"):
                continue
            if any(out.uses() or id(out) in outputs for out in node.outputs):
                continue
            candidates += [v.producer for v in node.inputs if v is not None and v.producer is not None]
            graph.remove(node)

    def _fuse_tables(self, graph: Graph) -> list[str]:
        """``QLut(QConv(...))`` -> ``QConv(...){lut}`` (likewise QMatMul, QAdd, QMul)."""
        changes = []
        for lut in graph:
            if lut.graph is not graph or lut.domain != DOMAIN or lut.op != "QLut":
                continue
            source = lut.input(0).producer
            if (source is None or source.domain != DOMAIN or source.op not in LUT_EPILOGUE_OPS
                    or source.attr("lut") or sole_use(graph, lut.input(0)) is None
                    or lut.output.type.dtype != lut.input(0).type.dtype):
                continue
            attrs = dict(source.attrs)
            attrs["lut"] = Attr.infer(lut.attr("lut"))
            fused = Node(source.op, source.inputs, [lut.output], attrs, name=source.name, domain=DOMAIN,
                         meta=merged_meta([source, lut]))
            replace_group(graph, [source, lut], fused)
            changes.append(f"QLut '{lut.name}' -> lut epilogue of {source.op} '{source.name}'")
        return changes

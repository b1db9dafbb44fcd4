"""Transpose folding: ``Transpose(Transpose(x, p), q) -> x`` and ``FusedMatMul(Transpose(a), b) -> transA``.

Exporters emit transposes that cost a full copy each and do no arithmetic: ``x.transpose(1, 2)`` undone a
few ops later, ``k.transpose(-1, -2)`` feeding ``q @ k^T``, ``Gemm`` weights stored ``[N, K]``. Two rewrites:

1. A ``Transpose`` of a ``Transpose`` composes into one permutation ``r[i] = p[q[i]]``: when that is the
   identity, the outer transpose's uses read ``x`` directly; otherwise the outer one becomes a single
   ``Transpose(x, r)`` (the inner one dies if nothing else reads it).
2. A ``Transpose`` that only swaps the last two axes, read as input A or B of ``lowering::FusedGemm`` or
   ``lowering::FusedMatMul``, is folded into that operand's layout: the fused node reads the transpose's
   input and its ``transA`` / ``transB`` flips. The GEMM reads a transposed operand at no cost (a runtime A
   is read in place through its strides, B is packed anyway; a constant is transposed when it is packed).

3. A ``Transpose`` of rank 4 read as Q, K or V by ``lowering::Attention`` becomes the node's ``q_perm`` /
   ``k_perm`` / ``v_perm`` (it computes with ``np.transpose(input, perm)``), and a ``Transpose`` that is
   the only reader of its output becomes ``y_perm`` (it writes ``np.transpose(result, perm)``): the
   exporters' head split ``Reshape -> Transpose(0, 2, 1, 3)`` (``(0, 2, 3, 1)`` for K^T) in front and head
   merge ``Transpose(0, 2, 1, 3) -> Reshape`` after, so the kernel reads Q, K and V through strides from
   the projections' [B, S, H, D] layout and writes [B, S, H, Dv] (the Reshapes are views). A layout is
   folded only when the head-size axis stays the innermost one (for K, the head size or the keys).

It runs after ``fuse_epilogue`` (whose fused ops carry the flags) and after the transformer fusions (which
match ``MatMul(Q, Transpose(K))`` themselves and must see it). Transposes whose output is a graph output
are kept; transposes left without uses are removed.
"""

from __future__ import annotations

from lowering.ir import Attr, Graph, Node, Value
from lowering.opinfo import DOMAIN
from lowering.passmanager import Pass, PassContext, PassResult

from .rewriting import merged_meta, replace_group, sole_use

#: fused ops whose inputs 0 and 1 are GEMM operands with a ``transA`` / ``transB`` flag
GEMM_OPS = frozenset({f"{DOMAIN}::FusedGemm", f"{DOMAIN}::FusedMatMul"})
TRANS_FLAGS = ("transA", "transB")
ATTENTION = f"{DOMAIN}::Attention"
IDENTITY4 = (0, 1, 2, 3)


def permutation(node: Node) -> tuple[int, ...] | None:
    """The perm of a Transpose (ONNX default: reverse the axes), or None when its input rank is unknown."""
    rank = node.input(0).type.rank if node.input(0).type is not None else None
    perm = node.attr("perm", None)
    if perm is None:
        return tuple(reversed(range(rank))) if rank is not None else None
    return tuple(int(p) % len(perm) for p in perm)


def swaps_last_two(perm: tuple[int, ...]) -> bool:
    r = len(perm)
    return r >= 2 and perm == tuple(range(r - 2)) + (r - 1, r - 2)


def _transpose_producer(value: Value | None) -> Node | None:
    node = value.producer if value is not None else None
    return node if node is not None and not node.domain and node.op == "Transpose" else None


class FoldTranspose(Pass):
    """Cancel or compose Transpose pairs; fold last-two-axes transposes into GEMM operand layouts."""

    name = "fold_transpose"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes: list[str] = []
        for node in list(graph.nodes):
            if node.graph is not graph:
                continue
            if not node.domain and node.op == "Transpose":
                changes += self._compose(graph, node)
            elif node.qualified_op in GEMM_OPS:
                changes += self._fold_operands(node)
            elif node.qualified_op == ATTENTION:
                changes += self._fold_attention(graph, node)
        changes += self._remove_unused(graph)
        return PassResult(bool(changes), changes)

    @staticmethod
    def _remove_unused(graph: Graph) -> list[str]:
        """Remove transposes nothing reads any more (repeatedly: a cancelled pair frees the inner one)."""
        changes = []
        while True:
            dead = [n for n in graph.nodes if n.op == "Transpose" and not n.domain and not n.output.uses()
                    and not any(n.output is v for v in graph.outputs)]
            if not dead:
                return changes
            graph.remove(dead)
            changes += [f"removed unused Transpose '{n.name}'" for n in dead]

    def _compose(self, graph: Graph, outer: Node) -> list[str]:
        inner = _transpose_producer(outer.input(0))
        if inner is None:
            return []
        p, q = permutation(inner), permutation(outer)
        if p is None or q is None or len(p) != len(q):
            return []
        composed = tuple(p[i] for i in q)
        source = inner.input(0)
        if composed == tuple(range(len(composed))):
            if any(outer.output is v for v in graph.outputs):
                return []
            outer.output.replace_all_uses_with(source, graph)
            return [f"cancelled Transpose '{inner.name}' -> Transpose '{outer.name}' (identity)"]
        outer.replace_input(0, source)
        outer.set_attr("perm", composed)
        return [f"composed Transpose '{inner.name}' into Transpose '{outer.name}' (perm {list(composed)})"]

    def _fold_operands(self, node: Node) -> list[str]:
        changes = []
        for index, flag in enumerate(TRANS_FLAGS):
            transpose = _transpose_producer(node.input(index))
            if transpose is None:
                continue
            perm = permutation(transpose)
            if perm is None or not swaps_last_two(perm):
                continue
            node.replace_input(index, transpose.input(0))
            node.set_attr(flag, 0 if node.attr(flag, 0) else 1)
            changes.append(f"folded Transpose '{transpose.name}' into {node.qualified_op} '{node.name}' "
                           f"({flag})")
        return changes

    @staticmethod
    def _fold_attention(graph: Graph, node: Node) -> list[str]:
        changes = []
        for index, name in enumerate(("q_perm", "k_perm", "v_perm")):
            if node.attr("qkv"[index] + "_slice", None) is not None:
                continue  # the slice is along an axis of the input as it is: a transpose under it stays
            transpose = _transpose_producer(node.input(index))
            perm = permutation(transpose) if transpose is not None else None
            if perm is None or len(perm) != 4:
                continue
            current = _attr_perm(node, name)
            composed = tuple(perm[c] for c in current)  # transpose(transpose(x, perm), current)
            inner = (2, 3) if index == 1 else (3,)  # K: rows of K or of K^T
            if not any(composed[a] == 3 for a in inner):
                continue
            node.replace_input(index, transpose.input(0))
            node.set_attr(name, composed)
            changes.append(f"folded Transpose '{transpose.name}' into {ATTENTION} '{node.name}' ({name})")
        use = sole_use(graph, node.output)
        after = use.node if use is not None else None
        transpose = after if after is not None and not after.domain and after.op == "Transpose" else None
        perm = permutation(transpose) if transpose is not None else None
        if perm is None or len(perm) != 4:
            return changes
        current = _attr_perm(node, "y_perm")
        composed = tuple(current[p] for p in perm)  # transpose(transpose(y, current), perm)
        if composed[3] != 3:
            return changes
        attrs = dict(node.attrs)
        attrs["y_perm"] = Attr.infer(composed)
        fused = Node(node.op, node.inputs, [transpose.output], attrs, name=node.name, domain=node.domain,
                     meta=merged_meta([node, transpose]))
        replace_group(graph, [node, transpose], fused)
        changes.append(f"folded Transpose '{transpose.name}' into {ATTENTION} '{node.name}' (y_perm)")
        return changes


def _attr_perm(node: Node, name: str) -> tuple[int, ...]:
    perm = node.attr(name, None)
    return IDENTITY4 if perm is None else tuple(int(p) for p in perm)

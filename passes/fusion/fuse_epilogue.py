"""Epilogue fusion: ``Relu(Add(Conv(x, W, b), r)) -> lowering::FusedConv(x, W, b, r){activation=Relu}``.

First every ``Conv`` becomes ``lowering::FusedConv(X, W, B?, R?)`` (all Conv attributes kept, plus
``activation=""`` and ``activation_params=()``), every float ``Gemm`` becomes ``lowering::FusedGemm(A, B,
C?, R?)``, every float ``MatMul`` of two rank-2 operands becomes a ``FusedGemm`` too and every other float
``MatMul`` of operands of rank >= 2 (a transformer's ``[B,S,K] x [K,N]`` linear layer, a batched
``[B,H,S,D] x [B,H,D,S]`` product) becomes ``lowering::FusedMatMul(A, B, C?, R?){transA, transB, alpha}``
(numpy broadcasting over the batch axes; ``trans*`` swap an operand's last two axes, which
``fold_transpose`` uses). Then, while the fused node's output has exactly one use and is not a graph output,
its consumer is absorbed:

1. ``Add`` of a constant that broadcasts as a bias (per output channel for conv: after left-padding its
   shape with ones to the output's rank, every dimension is 1 except axis 1, which is 1 or C, e.g.
   ``[C,1,1]``, ``[1,C,1,1]`` or a scalar; per column for gemm and matmul: ``[N]``, ``[1,N]``, ``[1,1,N]``
   or a scalar) is summed into the bias input (the existing bias must then be constant; a gemm's ``beta``
   is folded in);
2. ``Add`` of a non-constant tensor of exactly the output's type becomes the residual ``R`` (one only);
3. one activation in ``EPILOGUE_ACTIVATIONS`` with constant parameters sets ``activation`` and
   ``activation_params``; nothing is absorbed after it (``act(y) + r`` is not ``act(y + r)``).

Adds (bias or residual) are only absorbed before the activation, which is the order the fused ops compute:
``act(conv + B + R)``. The fused node replaces the absorbed one at its position, so a residual computed
after the Conv but before the Add is still defined before its reader. The fused node keeps the Conv's name,
takes over the last absorbed node's output value (its name and graph-output slot), and its
``meta.sources`` lists every source node it computes.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Attr, AttrKind, DType, Graph, Node, Value
from lowering.opinfo import DOMAIN, EPILOGUE_ACTIVATIONS, activation_params
from lowering.passmanager import Pass, PassContext, PassResult

from .rewriting import merged_meta, new_constant, replace_group, sole_use

FLOAT_TYPES = frozenset({DType.FLOAT32, DType.FLOAT16, DType.FLOAT64})
FUSED_OPS = frozenset({"FusedConv", "FusedGemm", "FusedMatMul"})
BIAS_INPUT, RESIDUAL_INPUT = 2, 3
GEMM_DEFAULTS = {"transA": 0, "transB": 0, "alpha": 1.0, "beta": 1.0}
MATMUL_DEFAULTS = {"transA": 0, "transB": 0, "alpha": 1.0}


def _matmul_ranks(node: Node) -> tuple[int, ...] | None:
    ranks = tuple(v.type.rank if v is not None and v.type is not None else -1 for v in node.inputs)
    return ranks if len(ranks) == 2 and min(ranks) >= 2 else None


def _canonical(node: Node) -> Node | None:
    """The FusedConv/FusedGemm/FusedMatMul equivalent of a standard Conv/Gemm/MatMul, or None."""
    if node.domain or node.output.type is None or node.output.type.dtype not in FLOAT_TYPES:
        return None
    ranks = _matmul_ranks(node) if node.op == "MatMul" else None
    # attributes explicit: targets need not know defaults
    if node.op == "Conv":
        op, attrs = "FusedConv", dict(node.attrs)
    elif node.op == "Gemm" or ranks == (2, 2):
        op, attrs = "FusedGemm", {k: Attr.infer(node.attr(k, d)) for k, d in GEMM_DEFAULTS.items()}
    elif ranks is not None:
        op, attrs = "FusedMatMul", {k: Attr.infer(d) for k, d in MATMUL_DEFAULTS.items()}
    else:
        return None
    attrs["activation"] = Attr(AttrKind.STRING, "")
    attrs["activation_params"] = Attr(AttrKind.FLOATS, ())
    return Node(op, node.inputs, [node.output], attrs, name=node.name, domain=DOMAIN, meta=node.meta)


def _bias_vector(fused: Node, const: np.ndarray) -> np.ndarray | None:
    """``const`` as a per-channel (conv) / per-column (gemm) vector, or None if it is not one."""
    shape = fused.output.type.shape
    while const.ndim > len(shape) and const.shape[0] == 1:  # [1, 1, N] after a Reshape of a [M, N] GEMM
        const = const[0]
    if const.ndim > len(shape):
        return None
    padded = (1,) * (len(shape) - const.ndim) + const.shape
    axis = 1 if fused.op == "FusedConv" else len(shape) - 1
    if any(d != 1 for i, d in enumerate(padded) if i != axis) or padded[axis] not in (1, shape[axis]):
        return None
    return np.broadcast_to(const.reshape(-1), (shape[axis],)).astype(np.float64)


def _regroups_rows(fused: Node, reshape: Node) -> bool:
    """Whether ``reshape`` of a GEMM's output only regroups its leading (row) axes, keeping the last: the
    memory layout and the per-column bias are unchanged, so an Add or activation after the Reshape can be
    computed before it (in the GEMM's epilogue) and the Reshape moved after."""
    if fused.op == "FusedConv" or reshape.output.type is None or fused.output.type is None:
        return False
    before, after = fused.output.type.shape, reshape.output.type.shape
    return (len(before) >= 1 and len(after) >= 1 and before[-1] == after[-1]
            and reshape.output.type.dtype is fused.output.type.dtype)


class FuseEpilogues(Pass):
    """Canonicalize Conv/Gemm/MatMul to fused ops and absorb bias adds, residual adds and an activation."""

    name = "fuse_epilogue"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes = []
        for node in graph:
            fused = _canonical(node)
            if fused is not None:
                replace_group(graph, [node], fused)
                changes.append(f"{node.op} '{node.name}' -> {fused.qualified_op}")
        for node in graph:
            if node.graph is graph and node.domain == DOMAIN and node.op in FUSED_OPS:
                changes += self._absorb_consumers(graph, node, ctx)
        return PassResult(bool(changes), changes)

    def _absorb_consumers(self, graph: Graph, fused: Node, ctx: PassContext) -> list[str]:
        changes = []
        while not fused.attr("activation", ""):
            use = sole_use(graph, fused.output)
            if use is None or use.node.domain:
                break
            consumer, reshape = use.node, None
            if consumer.op == "Reshape" and use.index == 0 and _regroups_rows(fused, consumer):
                # GPT-2's exporter: Gemm on [B*S, C] -> Reshape to [B, S, C] -> Gelu / residual Add
                after = sole_use(graph, consumer.output)
                if after is None or after.node.domain or after.node.op not in ("Add", *EPILOGUE_ACTIVATIONS):
                    break
                reshape, use, consumer = consumer, after, after.node
            if consumer.op == "Add":
                other = consumer.input(1 - use.index)
                rewrite = self._absorb_add(graph, fused, other, consumer, reshape)
            elif consumer.op in EPILOGUE_ACTIVATIONS and use.index == 0:
                rewrite = self._absorb_activation(fused, consumer, reshape)
            else:
                break
            if isinstance(rewrite, str):
                ctx.log(f"{self.name}: {consumer.label} not fused into {fused.label}: {rewrite}")
                break
            kind, inputs, attrs = rewrite
            while inputs and inputs[-1] is None:
                inputs.pop()
            group = [fused, consumer] if reshape is None else [fused, reshape, consumer]
            if reshape is None:
                node = Node(fused.op, inputs, [consumer.output], attrs, name=fused.name, domain=fused.domain,
                            meta=merged_meta(group))
                replace_group(graph, group, node)
            else:
                node = self._swap_reshape(graph, fused, reshape, consumer, inputs, attrs)
                kind += " through a Reshape"
            fused = node
            changes.append(f"fused {consumer.op} '{consumer.name}' ({kind}) into {fused.qualified_op} "
                           f"'{fused.name}'")
        return changes

    @staticmethod
    def _swap_reshape(graph: Graph, fused: Node, reshape: Node, consumer: Node, inputs: list, attrs: dict):
        """``consumer(Reshape(fused))`` -> ``Reshape(fused')``: the fused node (now computing ``consumer``
        in its own shape) writes a new value, and the Reshape, a free view, gives it the consumer's shape
        and takes over the consumer's output value. A residual in the consumer's shape was viewed in the
        fused node's shape by ``_absorb_add`` (a Reshape inserted before the fused node)."""
        mid = Value(graph.unique_name(f"{fused.name}_out"), type=fused.output.type)
        node = Node(fused.op, inputs, [mid], attrs, name=fused.name, domain=fused.domain,
                    meta=merged_meta([fused, consumer]))
        view = Node("Reshape", [mid, reshape.input(1)], [consumer.output], dict(reshape.attrs),
                    name=reshape.name, meta=reshape.meta)
        residual = inputs[RESIDUAL_INPUT] if len(inputs) > RESIDUAL_INPUT else None
        group = [fused, reshape, consumer]
        last = max(group, key=graph.nodes.index)
        if residual is not None and residual.producer is not None and residual.producer.graph is None:
            graph.insert_before(last, residual.producer)  # the residual's view, made by _absorb_add
        graph.insert_before(last, node)
        graph.insert_before(last, view)
        graph.remove(group, safe=False)
        return node

    def _absorb_add(self, graph: Graph, fused: Node, other: Value, add: Node, reshape: Node | None = None):
        """``(kind, inputs, attrs)`` of the fused node with ``add`` taken in, or why it cannot be. With
        ``reshape`` (between the fused node and the Add), the Add is in the Reshape's output shape."""
        seen = reshape.output.type if reshape is not None else fused.output.type
        if add.output.type != seen:
            return f"the Add broadcasts the output from {seen} to {add.output.type}"
        inputs = list(fused.inputs) + [None] * (4 - len(fused.inputs))
        attrs = dict(fused.attrs)
        if other.is_const:
            vector = _bias_vector(fused, other.const)
            if vector is None:
                return f"the constant {other.type} is not a per-channel bias"
            bias = inputs[BIAS_INPUT]
            if bias is not None and not bias.is_const:
                return "the existing bias is not a constant"
            total = vector
            if bias is not None:
                scale = fused.attr("beta", 1.0) if fused.op == "FusedGemm" else 1.0
                total = bias.const.astype(np.float64) * scale + vector
            if fused.op == "FusedGemm":
                attrs["beta"] = Attr(AttrKind.FLOAT, 1.0)
            hint = bias.name if bias is not None else fused.name + "_bias"
            inputs[BIAS_INPUT] = new_constant(graph, total.astype(fused.output.type.dtype.numpy), hint)
            return "bias", inputs, attrs
        if inputs[RESIDUAL_INPUT] is not None:
            return "the fused node already has a residual input"
        if other.type != seen:
            return f"the residual {other.type} does not have the output's type {seen}"
        if reshape is not None:  # view the residual in the fused node's shape (inserted by _swap_reshape)
            shape = new_constant(graph, np.asarray(fused.output.type.shape, np.int64), f"{fused.name}_shape")
            other = Node("Reshape", [other, shape], [Value(graph.unique_name(f"{other.name}_rows"),
                                                           type=fused.output.type)],
                         name=graph.unique_name(f"{add.name}_residual_view")).output
        inputs[RESIDUAL_INPUT] = other
        return "residual", inputs, attrs

    def _absorb_activation(self, fused: Node, act: Node, reshape: Node | None = None):
        """``(kind, inputs, attrs)`` of the fused node with ``act`` as its activation, or why not."""
        params = activation_params(act)
        if params is None:
            return f"the {act.op} parameters are not constants"
        if act.output.type != (reshape.output.type if reshape is not None else fused.output.type):
            return f"the {act.op} changes the type to {act.output.type}"
        attrs = dict(fused.attrs)
        attrs["activation"] = Attr(AttrKind.STRING, act.op)
        attrs["activation_params"] = Attr(AttrKind.FLOATS, tuple(float(p) for p in params))
        return "activation", list(fused.inputs), attrs

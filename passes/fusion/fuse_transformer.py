"""Transformer fusions: decomposed LayerNorm, spelled-out GELU and attention chains become single ops.

    Add(Mul(Div(Sub(x, ReduceMean(x)), Sqrt(Add(ReduceMean(Pow(Sub(..), 2)), eps))), g), b)
        -> LayerNormalization(x, g, b){axis=-1, epsilon=eps}
    Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)                  -> Gelu(x){approximate="none"}
    Mul(Mul(x, 0.5), Add(Tanh(Mul(Add(x, Mul(Pow(x, 3), 0.044715)), sqrt(2/pi))), 1))
                                                                   -> Gelu(x){approximate="tanh"}
    MatMul(Softmax(Add(Where(m, Div(MatMul(q, kT), c), fill), mask)), v)
        -> lowering::Attention(q, kT, v, mask, m){scale=1/c, k_transposed=1, mask_fill=fill}

Both torch exporters' spellings are matched: the legacy exporter's LayerNorm below opset 17 (``Pow`` 2,
``Div`` by the ``Sqrt``; ``Mul`` by itself and ``Reciprocal`` + ``Mul`` too), GELU with its Mul operands
in any order and ``Div`` by sqrt 2 or ``Mul`` by 1/sqrt 2, attention scaled after the MatMul (``Div`` or
``Mul``) or before it on both operands (``scaled_dot_product_attention``), masked by an additive float
mask, a ``Where`` with a bool mask, or both, and the IsNaN -> Where guard after the Softmax that some
exports add. A constant bool mask that is the causal triangle becomes ``causal=1`` (no mask input).
Q, K and V that are the head views of one Split (GPT-2's fused q/k/v projection: ``Split -> Reshape ->
Transpose`` each) are read in place as ``q_slice`` / ``k_slice`` / ``v_slice`` of one view of the Split's
input (:func:`fold_qkv_split`): the Split's copy and the transposes are gone.

A rewrite fires only when every matched intermediate value is used inside the match alone (and is not a
graph output), and every constant is what the pattern needs; otherwise the chain stays as it is and the
pass logs why. It runs after ``simplify`` (the exporters' shape arithmetic must have folded into constant
scales) and before ``reduce_mean_to_pool`` (which would turn a rank-3 LayerNorm mean into a pool) and the
epilogue fusion (which then takes a ``Gelu`` as a GEMM's activation).
"""

from __future__ import annotations

import math

import numpy as np

from lowering.ir import Attr, AttrKind, DType, Graph, Node, TensorType, Value
from lowering.opinfo import DOMAIN
from lowering.passmanager import Pass, PassContext, PassResult

from .rewriting import is_graph_output, merged_meta, new_constant, replace_group

SQRT2 = math.sqrt(2.0)
TANH_GELU_SCALE = math.sqrt(2.0 / math.pi)
TANH_GELU_CUBIC = 0.044715


class NoMatch(Exception):
    """The chain at a candidate node is not (or cannot become) the pattern; the message says why."""


# --- matching helpers -------------------------------------------------------------------------------

def _float32(value: Value) -> bool:
    return value.type is not None and value.type.dtype is DType.FLOAT32


def scalar(value: Value | None) -> float | None:
    """The value of a one-element constant, else None."""
    if value is None or not value.is_const or value.const.size != 1:
        return None
    return float(value.const.reshape(-1)[0])


def is_scalar(value: Value | None, expected: float, rtol: float = 1e-5) -> bool:
    got = scalar(value)
    return got is not None and abs(got - expected) <= rtol * abs(expected)


def only_user(value: Value, op: str) -> Node | None:
    """The node reading ``value`` when that is its only reader and a standard ``op``."""
    users = value.users()
    if len(users) == 1 and users[0].op == op and not users[0].domain:
        return users[0]
    return None


def made_by(value: Value | None, *ops: str) -> Node | None:
    """The standard node of one of ``ops`` producing ``value``, or None."""
    node = value.producer if value is not None else None
    if node is not None and not node.domain and node.op in ops:
        return node
    return None


def other_operand(node: Node, value: Value) -> Value:
    """The operand of a binary ``node`` that is not ``value`` (``value`` itself for ``op(value, value)``)."""
    a, b = node.input(0), node.input(1)
    return b if a is value else a


def require(condition: bool, reason: str) -> None:
    if not condition:
        raise NoMatch(reason)


def check_private(graph: Graph, group: list[Node], result: Value) -> None:
    """Every value ``group`` computes, but ``result``, must be read only inside the group."""
    ids = {id(n) for n in group}
    for node in group:
        for out in node.outputs:
            if out is result:
                continue
            outside = [u.node for u in out.uses() if id(u.node) not in ids]
            require(not outside and not is_graph_output(graph, out),
                    f"'{out.name}' is also used outside the pattern"
                    + (f" (by {outside[0].label})" if outside else " (a graph output)"))


def reduce_last_axis(node: Node) -> bool:
    """Whether a ReduceMean averages exactly the last axis with keepdims."""
    rank = node.input(0).type.rank
    axes_input = node.input(1)
    if axes_input is not None:
        if not axes_input.is_const:
            return False
        axes = [int(a) for a in axes_input.const.reshape(-1)]
    else:
        axes = list(node.attr("axes", ()))
    return rank > 0 and [a % rank for a in axes] == [rank - 1] and node.attr("keepdims", 1) == 1


# --- LayerNorm --------------------------------------------------------------------------------------

def match_layernorm(graph: Graph, mean: Node):
    """From the first ReduceMean: ``(group, x, result, scale, bias, eps)``."""
    require(reduce_last_axis(mean), "the ReduceMean is not over the last axis with keepdims")
    x = mean.input(0)
    require(_float32(x), "not float32")
    sub = only_user(mean.output, "Sub")
    require(sub is not None and sub.input(0) is x and sub.input(1) is mean.output, "no Sub(x, mean)")
    d = sub.output
    users = d.users()
    square = next((u for u in users if (u.op == "Pow" and u.input(0) is d and is_scalar(u.input(1), 2.0))
                   or (u.op == "Mul" and u.input(0) is d and u.input(1) is d)), None)
    require(square is not None and len(users) == 2, "no Pow(x - mean, 2) beside one normalising node")
    normalize = next(u for u in users if u is not square)
    var = only_user(square.output, "ReduceMean")
    require(var is not None and reduce_last_axis(var), "no ReduceMean of the square over the last axis")
    add_eps = only_user(var.output, "Add")
    require(add_eps is not None, "no Add of epsilon")
    eps = scalar(other_operand(add_eps, var.output))
    require(eps is not None and eps >= 0, "epsilon is not a non-negative scalar constant")
    sqrt = only_user(add_eps.output, "Sqrt")
    require(sqrt is not None, "no Sqrt of the variance")
    group = [mean, sub, square, var, add_eps, sqrt]
    if normalize.op == "Div" and normalize.input(0) is d and normalize.input(1) is sqrt.output:
        group.append(normalize)
    else:
        recip = only_user(sqrt.output, "Reciprocal")
        require(recip is not None and normalize.op == "Mul" and other_operand(normalize, d) is recip.output,
                "no Div(x - mean, std) or Mul(x - mean, Reciprocal(std))")
        group += [recip, normalize]
    result, scale, bias = normalize.output, None, None
    cols = x.type.shape[-1]
    for op in ("Mul", "Add"):
        nxt = only_user(result, op)
        param = other_operand(nxt, result) if nxt is not None else None
        if param is None or not param.is_const or not _broadcasts_to_row(param, cols):
            break
        if nxt.output.type != x.type:
            break
        group.append(nxt)
        result = nxt.output
        if op == "Mul":
            scale = param
        else:
            bias = param
    check_private(graph, group, result)
    return group, x, result, scale, bias, eps


def _broadcasts_to_row(value: Value, cols: int) -> bool:
    shape = value.type.shape
    return all(d == 1 for d in shape[:-1]) and (not shape or shape[-1] in (1, cols))


def _row(graph: Graph, value: Value | None, cols: int, fill: float, hint: str) -> Value:
    array = np.full(cols, fill, np.float32) if value is None else \
        np.broadcast_to(value.const.astype(np.float32).reshape(-1), (cols,))
    return new_constant(graph, np.ascontiguousarray(array), hint)


def fuse_layernorm(graph: Graph, mean: Node) -> str:
    group, x, result, scale, bias, eps = match_layernorm(graph, mean)
    cols = x.type.shape[-1]
    name = graph.unique_name(f"{mean.name}_layernorm")
    inputs = [x, _row(graph, scale, cols, 1.0, f"{name}_scale")]
    if bias is not None:
        inputs.append(_row(graph, bias, cols, 0.0, f"{name}_bias"))
    node = Node("LayerNormalization", inputs, [result],
                {"axis": Attr(AttrKind.INT, -1), "epsilon": Attr(AttrKind.FLOAT, eps)},
                name=name, meta=merged_meta(group))
    replace_group(graph, group, node)
    return f"LayerNorm at '{mean.name}' ({len(group)} nodes) -> LayerNormalization '{name}'"


# --- GELU -------------------------------------------------------------------------------------------

def match_half_product(graph: Graph, x: Value, a: Node) -> tuple[list[Node], Value]:
    """``0.5 * x * a.output`` as two Muls in any order and grouping: ``(nodes, result)``."""
    first = only_user(a.output, "Mul")
    require(first is not None, "the (1 + ...) term is not multiplied")
    other = other_operand(first, a.output)
    if other is x or is_scalar(other, 0.5):
        second = only_user(first.output, "Mul")
        require(second is not None, "the product is not multiplied further")
        want_x = other is not x
        last = other_operand(second, first.output)
        require(last is x if want_x else is_scalar(last, 0.5), "the product is not 0.5 * x * (1 + ...)")
        return [first, second], second.output
    half = made_by(other, "Mul")
    require(half is not None and {id(half.input(0)), id(half.input(1))} >= {id(x)}
            and is_scalar(other_operand(half, x), 0.5), "the product is not 0.5 * x * (1 + ...)")
    return [half, first], first.output


def match_plus_one(value: Value) -> Node:
    add = only_user(value, "Add")
    require(add is not None and is_scalar(other_operand(add, value), 1.0), "no Add(..., 1)")
    return add


def match_erf_gelu(graph: Graph, erf: Node):
    scaled = made_by(erf.input(0), "Div", "Mul")
    require(scaled is not None, "the Erf input is not x / sqrt 2")
    if scaled.op == "Div":
        x = scaled.input(0)
        require(is_scalar(scaled.input(1), SQRT2), "the Erf input is not x / sqrt 2")
    else:
        x = next((v for v in scaled.inputs if is_scalar(other_operand(scaled, v), 1 / SQRT2)), None)
        require(x is not None, "the Erf input is not x * (1 / sqrt 2)")
    add = match_plus_one(erf.output)
    tail, result = match_half_product(graph, x, add)
    return [scaled, erf, add] + tail, x, result


def _cube_of(value: Value) -> tuple[list[Node], Value] | None:
    """``x`` and the nodes when ``value`` is ``Pow(x, 3)`` or ``x * (x * x)`` (either grouping)."""
    pow_ = made_by(value, "Pow")
    if pow_ is not None and is_scalar(pow_.input(1), 3.0):
        return [pow_], pow_.input(0)
    outer = made_by(value, "Mul")
    if outer is None:
        return None
    for inner_value in outer.inputs:
        inner = made_by(inner_value, "Mul")
        x = other_operand(outer, inner_value)
        if inner is not None and inner.input(0) is x and inner.input(1) is x:
            return [inner, outer], x
    return None


def match_tanh_gelu(graph: Graph, tanh: Node):
    scaled = made_by(tanh.input(0), "Mul")
    require(scaled is not None, "the Tanh input is not a product")
    inner = next((v for v in scaled.inputs if is_scalar(other_operand(scaled, v), TANH_GELU_SCALE)), None)
    add = made_by(inner, "Add")
    require(add is not None, "the Tanh input is not sqrt(2/pi) * (x + 0.044715 x^3)")
    for x in add.inputs:
        cubic = made_by(other_operand(add, x), "Mul")
        if cubic is None:
            continue
        for cube_value in cubic.inputs:
            cube = _cube_of(cube_value)
            coefficient = other_operand(cubic, cube_value)
            if cube is not None and cube[1] is x and is_scalar(coefficient, TANH_GELU_CUBIC):
                plus_one = match_plus_one(tanh.output)
                tail, result = match_half_product(graph, x, plus_one)
                return cube[0] + [cubic, add, scaled, tanh, plus_one] + tail, x, result
    raise NoMatch("the Tanh input is not sqrt(2/pi) * (x + 0.044715 x^3)")


def fuse_gelu(graph: Graph, anchor: Node) -> str:
    matcher, approximate = (match_erf_gelu, "none") if anchor.op == "Erf" else (match_tanh_gelu, "tanh")
    group, x, result = matcher(graph, anchor)
    require(_float32(x) and result.type == x.type, "not a float32 GELU of x's shape")
    check_private(graph, group, result)
    name = graph.unique_name(f"{anchor.name}_gelu")
    node = Node("Gelu", [x], [result], {"approximate": Attr(AttrKind.STRING, approximate)}, name=name,
                meta=merged_meta(group))
    replace_group(graph, group, node)
    return f"GELU ({approximate}) at '{anchor.name}' ({len(group)} nodes) -> Gelu '{name}'"


# --- attention --------------------------------------------------------------------------------------

def _scaled_operand(graph: Graph, value: Value, group: list[Node]) -> tuple[Value, float]:
    """``value`` = ``v * c`` (a private Mul by a scalar constant) -> ``(v, c)``; else ``(value, 1)``."""
    mul = made_by(value, "Mul")
    if mul is not None and len(value.uses()) == 1 and not is_graph_output(graph, value):
        for operand in mul.inputs:
            c = scalar(other_operand(mul, operand))
            if c is not None and operand.type == value.type:
                group.append(mul)
                return operand, c
    return value, 1.0


def match_attention(graph: Graph, softmax: Node):
    """From the Softmax: ``(group, inputs, attrs, result)``."""
    rank = softmax.input(0).type.rank
    require(rank == 4 and softmax.attr("axis", -1) % rank == 3, "not a last-axis Softmax of rank-4 scores")
    group, attrs = [softmax], {"scale": 1.0, "k_transposed": 1, "causal": 0, "nan_to_zero": 0}
    probs = softmax.output
    guard = _match_nan_guard(probs)
    if guard is not None:
        group += guard
        probs = guard[-1].output
        attrs["nan_to_zero"] = 1
    out = only_user(probs, "MatMul")
    require(out is not None and out.input(0) is probs, "the probabilities do not feed MatMul(p, v)")
    v = out.input(1)
    group.append(out)
    scores, mask, bool_mask = softmax.input(0), None, None
    add = made_by(scores, "Add")
    if add is not None:
        inner = next((s for s in add.inputs if _leads_to_scores(s)), None)
        require(inner is not None, "the Softmax input is an Add of no scores")
        mask = other_operand(add, inner)
        require(_float32(mask) and _broadcasts(mask, scores.type.shape),
                "the additive mask is not float32 or does not broadcast to the scores")
        group.append(add)
        scores = inner
    where = made_by(scores, "Where")
    if where is not None:
        attrs["mask_fill"] = scalar(where.input(2))
        require(attrs["mask_fill"] is not None, "the Where's fill is not a scalar constant")
        bool_mask, scores = where.input(0), where.input(1)
        group.append(where)
    scale_node = made_by(scores, "Div", "Mul")
    if scale_node is not None:
        c = scalar(scale_node.input(1)) if scale_node.op == "Div" else next(
            (scalar(s) for s in scale_node.inputs if scalar(s) is not None), None)
        require(c is not None and c != 0, "the scores are scaled by no scalar constant")
        attrs["scale"] = 1.0 / c if scale_node.op == "Div" else c
        group.append(scale_node)
        scores = next(s for s in scale_node.inputs if not s.is_const) if scale_node.op == "Mul" \
            else scale_node.input(0)
    qk = made_by(scores, "MatMul")
    require(qk is not None, "the scores are not a MatMul")
    group.append(qk)
    q, q_scale = _scaled_operand(graph, qk.input(0), group)
    kt, k_scale = _scaled_operand(graph, qk.input(1), group)
    attrs["scale"] *= q_scale * k_scale
    for value, what in ((q, "Q"), (kt, "K^T"), (v, "V")):
        require(_float32(value) and value.type.rank == 4, f"{what} is not a float32 rank-4 tensor")
    (b, h, sq, d), (sk, dv) = q.type.shape, (kt.type.shape[3], v.type.shape[3])
    require(kt.type.shape == (b, h, d, sk) and v.type.shape == (b, h, sk, dv),
            f"Q {list(q.type.shape)}, K^T {list(kt.type.shape)} and V {list(v.type.shape)} do not agree "
            "(no broadcasting)")
    if bool_mask is not None:
        require(_broadcasts(bool_mask, (b, h, sq, sk)),
                "the Where condition does not broadcast to the scores")
        bool_mask = _causal_or_mask(bool_mask, attrs, (b, h, sq, sk))
    check_private(graph, group, out.output)
    return group, [q, kt, v, mask, bool_mask], attrs, out.output


def _leads_to_scores(value: Value) -> bool:
    """Whether ``value`` is a MatMul's output, perhaps through a scalar scaling and a mask ``Where``."""
    for _ in range(3):
        node = made_by(value, "Where", "Mul", "Div", "MatMul")
        if node is None or node.op == "MatMul":
            return node is not None
        if node.op == "Where":
            value = node.input(1)
        elif node.op == "Div" or scalar(node.input(1)) is not None:
            value = node.input(0)
        elif scalar(node.input(0)) is not None:
            value = node.input(1)
        else:
            return False
    return False


def _broadcasts(value: Value, shape: tuple[int, ...]) -> bool:
    try:
        return value.type.rank <= len(shape) and np.broadcast_shapes(value.type.shape, shape) == shape
    except ValueError:
        return False


def _match_nan_guard(probs: Value) -> list[Node] | None:
    """``Where(IsNaN(p), 0, p)`` after the Softmax: its two nodes, or None."""
    users = probs.users()
    isnan = next((u for u in users if u.op == "IsNaN"), None)
    where = next((u for u in users if u.op == "Where"), None)
    if len(users) != 2 or isnan is None or where is None:
        return None
    if where.input(0) is not isnan.output or scalar(where.input(1)) != 0.0:
        return None
    return [isnan, where] if where.input(2) is probs else None


def _causal_or_mask(bool_mask: Value, attrs: dict, scores_shape: tuple[int, ...]) -> Value | None:
    """A constant causal triangle becomes ``causal=1`` (None returned): exact when no row is fully masked
    (Sq <= Sk), since a masked score then adds exactly 0 to the softmax whatever the fill."""
    sq, sk = scores_shape[-2:]
    if bool_mask.is_const and sq <= sk:
        full = np.broadcast_to(bool_mask.const, scores_shape)
        if np.array_equal(full, np.broadcast_to(np.tril(np.ones((sq, sk), bool), sk - sq), scores_shape)):
            attrs["causal"] = 1
            return None
    require(bool_mask.type.dtype is DType.BOOL, "the Where condition is not bool")
    return bool_mask


def fuse_attention(graph: Graph, softmax: Node) -> str:
    group, inputs, attrs, result = match_attention(graph, softmax)
    split_note = fold_qkv_split(graph, group, inputs, attrs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    name = graph.unique_name(f"{softmax.name}_attention")
    node = Node("Attention", inputs, [result], {k: Attr.infer(v) for k, v in attrs.items()}, name=name,
                domain=DOMAIN, meta=merged_meta(group))
    replace_group(graph, group, node)
    kinds = "causal " if attrs["causal"] else ""
    return (f"{kinds}attention at '{softmax.name}' ({len(group)} nodes) -> {node.qualified_op} '{name}'"
            + split_note)


# --- Q, K and V sliced from one projection ------------------------------------------------------------

QKV = "qkv"


def _only_read_by(graph: Graph, value: Value, readers: set[int]) -> bool:
    return not is_graph_output(graph, value) and all(id(u.node) in readers for u in value.uses())


def _split_offsets(split: Node) -> list[int]:
    """Where each output of a Split starts along its axis (from the outputs' inferred shapes)."""
    axis = split.attr("axis", 0) % split.input(0).type.rank
    starts, at = [], 0
    for out in split.outputs:
        starts.append(at)
        at += out.type.shape[axis]
    return starts


def _sliced_operand(graph: Graph, value: Value, index: int, readers: set[int]):
    """``value`` = ``[Transpose](Reshape(Split(x)[j]))`` with private intermediates, the Reshape a view
    that keeps the dims before the split axis and splits the rest as ``[m, *r]``: ``(chain, split, view
    shape, perm, slice)`` such that ``value`` is ``transpose(reshape(x, view)[..., lo:hi (axis), ...],
    perm)``; else None (with why)."""
    if not _only_read_by(graph, value, readers):
        return None, f"'{value.name}' is also read outside the attention"
    chain: list[Node] = []
    transpose = made_by(value, "Transpose")
    perm: tuple[int, ...] = (0, 1, 2, 3)
    src = value
    if transpose is not None:
        perm = tuple(int(p) % 4 for p in transpose.attr("perm", (3, 2, 1, 0)))
        src = transpose.input(0)
        chain.append(transpose)
        if not _only_read_by(graph, src, {id(transpose)}):
            return None, f"'{src.name}' is also read elsewhere"
    reshape = made_by(src, "Reshape")
    split = made_by(reshape.input(0), "Split") if reshape is not None else None
    if split is None:
        return None, "not a Reshape of a Split output"
    chain.insert(0, reshape)
    part = reshape.input(0)
    if not _only_read_by(graph, part, {id(reshape)}) or src.type.rank != 4:
        return None, f"'{part.name}' is read elsewhere or its view is not rank 4"
    inner = (2, 3) if index == 1 else (3,)  # the head size innermost (K: or the keys)
    if not any(perm[a] == 3 for a in inner):
        return None, "the head size would not be contiguous"
    x_shape, view = split.input(0).type.shape, src.type.shape
    axis = split.attr("axis", 0) % len(x_shape)
    j = next(i for i, out in enumerate(split.outputs) if out is part)
    tail = int(np.prod(x_shape[axis + 1:], dtype=np.int64))
    start, size = _split_offsets(split)[j] * tail, part.type.shape[axis] * tail  # in elements of a row
    rest = int(np.prod(view[axis + 1:], dtype=np.int64)) if axis < 3 else 0
    if (axis >= 3 or tuple(view[:axis]) != tuple(x_shape[:axis]) or rest == 0
            or start % rest or size % rest or x_shape[axis] * tail % rest):
        return None, f"the view {list(view)} does not keep the split's rows"
    full = tuple(view[:axis]) + (x_shape[axis] * tail // rest,) + tuple(view[axis + 1:])
    return (chain, split, full, perm, (axis, start // rest, (start + size) // rest)), ""


def fold_qkv_split(graph: Graph, group: list[Node], inputs: list, attrs: dict) -> str:
    """Q, K and V that are head views of the parts of one Split (GPT-2's fused ``c_attn`` projection,
    ``Split -> Reshape -> Transpose`` each) become slices of one view of the Split's input: the attention
    reads them in place through ``q_slice`` / ``k_slice`` / ``v_slice`` ``[axis, start, stop]`` and the
    Transposes' ``*_perm``, and the Split (a copy of the projection) is gone. Only a Split whose every
    output is one of this attention's operands is folded. Returns a note for the change line."""
    readers = {id(n) for n in group}
    found = {}
    for index in range(3):
        folded, _ = _sliced_operand(graph, inputs[index], index, readers)
        if folded is not None:
            found[index] = folded
    splits = {id(f[1]): f[1] for f in found.values()}
    notes = []
    for split in splits.values():
        mine = {i: f for i, f in found.items() if f[1] is split}
        parts = {id(found[i][0][0].input(0)) for i in mine}
        views = {f[2] for f in mine.values()}
        x = split.input(0)
        if len(parts) != len(split.outputs) or len(views) != 1 or (
                made_by(x, "Transpose") is not None and tuple(x.type.shape) == next(iter(views))):
            continue
        chains = [n for f in mine.values() for n in f[0]]
        if len({id(n) for n in chains + group}) != len(chains) + len(group):
            continue  # an operand read twice (Q is K): its chain would be removed twice
        view_shape = next(iter(views))
        view = Value(graph.unique_name(f"{split.name}_heads"), TensorType(x.type.dtype, view_shape))
        shape = new_constant(graph, np.asarray(view_shape, np.int64), f"{split.name}_heads_shape")
        reshape = Node("Reshape", [x, shape], [view], name=graph.unique_name(f"{split.name}_heads"),
                       meta=split.meta)
        graph.insert_before(split, reshape)
        for i, (chain, _, _, perm, bounds) in mine.items():
            inputs[i] = view
            if perm != (0, 1, 2, 3):
                attrs[f"{QKV[i]}_perm"] = list(perm)
            attrs[f"{QKV[i]}_slice"] = list(bounds)
            group.extend(chain)
        group.append(split)
        notes.append(f"'{split.name}'")
    return f" (Q, K, V sliced from the split {', '.join(notes)})" if notes else ""


#: anchor op -> rewrite; each returns a change line or raises NoMatch
FUSIONS = {"ReduceMean": fuse_layernorm, "Erf": fuse_gelu, "Tanh": fuse_gelu, "Softmax": fuse_attention}


class FuseTransformerPatterns(Pass):
    """Rewrite decomposed LayerNorm, spelled-out GELU and attention chains into single ops."""

    name = "fuse_transformer"

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        changes = []
        for node in graph:
            fusion = FUSIONS.get(node.op)
            if fusion is None or node.domain or node.graph is not graph:
                continue
            try:
                changes.append(fusion(graph, node))
            except NoMatch as exc:
                ctx.log(f"{self.name}: {node.label} not fused: {exc}")
        return PassResult(bool(changes), changes)

"""The integer op each ``DequantizeLinear -> float op -> QuantizeLinear`` group becomes (``fold_qdq``).

Every builder takes a :class:`Match` and returns a :class:`Rewrite` (the new node, which takes over the
QuantizeLinear's output value, and any helper nodes that must come before it) or a string saying why the
group stays float. Builders never edit the graph; the pass applies what they return.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lowering.ir import Attr, AttrKind, Graph, Node, TensorType, Value
from lowering.opinfo import DOMAIN, window_geometry
from lowering.reference import evaluate_node

from ..fusion.rewriting import merged_meta, new_constant
from .qparams import (
    QParams,
    Weight,
    activation_input,
    add_multipliers,
    channel_scales,
    constant_weight,
    dequantized,
    multipliers,
    requantize_table,
    uniform_zero_point,
)

INT32 = np.iinfo(np.int32)


@dataclass
class Match:
    """A float op between dequantized inputs and one QuantizeLinear, with what it absorbs on the way."""

    q: Node  # the QuantizeLinear; its output value is taken over
    core: Node  # the float op
    out: QParams  # the QuantizeLinear's parameters
    clamp: tuple[int, int]  # the output clamp (the quantized range, narrowed by ``act``)
    act: Node | None = None  # a Relu/Clip between core (or bias_add) and q
    bias_add: Node | None = None  # Add(core, constant bias) between core and act/q (linear ops only)

    @property
    def group(self) -> list[Node]:
        return [n for n in (self.core, self.bias_add, self.act, self.q) if n is not None]


@dataclass
class Rewrite:
    node: Node
    before: list[Node] = field(default_factory=list)


def _int_attrs(**values) -> dict[str, Attr]:
    return {k: Attr.infer(tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else int(v))
            for k, v in values.items()}


def _requant_attrs(m: Match, reals: np.ndarray) -> dict[str, Attr] | str:
    encoded = multipliers(reals)
    if isinstance(encoded, str):
        return encoded
    return _int_attrs(out_zero_point=m.out.z, multiplier=encoded[0], shift=encoded[1],
                      clamp_min=m.clamp[0], clamp_max=m.clamp[1])


def _node(m: Match, op: str, inputs: list, attrs: dict[str, Attr], domain: str = DOMAIN) -> Node:
    return Node(op, inputs, [m.q.output], attrs, name=m.core.name, domain=domain, meta=merged_meta(m.group))


# --- bias ------------------------------------------------------------------------------------------

def _channel_vector(array: np.ndarray, channels: int, axis: int, rank: int | None) -> np.ndarray | None:
    """``array`` as one value per channel along ``axis`` of a rank-``rank`` output (``rank`` None: a 1-D
    array already holds one value per channel), or None."""
    if rank is None:
        ok = array.ndim == 1 and array.size in (1, channels)
        return np.broadcast_to(array, (channels,)) if ok else None
    if array.ndim > rank:
        return None
    padded = (1,) * (rank - array.ndim) + array.shape
    if any(d != 1 for i, d in enumerate(padded) if i != axis) or padded[axis] not in (1, channels):
        return None
    return np.broadcast_to(array.reshape(-1), (channels,))


#: One bias term: a value, the factor it is added with (a Gemm's ``beta``), and the rank it broadcasts
#: against as a numpy operand (None: it is already one value per channel, like a Conv's ``B``).
BiasTerm = tuple[Value, float, "int | None"]


def integer_bias(terms: list[BiasTerm], acc_scale: np.ndarray, axis: int) -> np.ndarray | None | str:
    """The int32 bias, per channel, that adds ``sum(factor * term)`` to an accumulator whose real value
    per channel (along ``axis`` of the output) is ``acc_scale * acc``. A term that is an int32 constant
    dequantized with exactly the accumulator's scale (ONNX Runtime's quantized bias) is taken as it is;
    any other constant is rounded (half to even) to the accumulator's scale."""
    channels = acc_scale.size
    exact = np.zeros(channels, np.int64)
    real = np.zeros(channels, np.float64)
    if not terms:
        return None
    for value, factor, rank in terms:
        found = dequantized(value)
        if found is not None and found[0].input(0).is_const:
            dq, params = found
            data = _channel_vector(dq.input(0).const.astype(np.int64), channels, axis, rank)
            scales = channel_scales(params, dq.input(0).type.rank - 1, channels, "the bias")
            if data is None or isinstance(scales, str):
                return "the dequantized bias is not one value per output channel"
            if (params.dtype.name == "int32" and factor == 1.0 and not np.any(params.zero_point)
                    and np.allclose(scales, acc_scale, rtol=1e-6, atol=0)):
                exact += data
                continue
            zero = np.broadcast_to(params.zero_point.astype(np.int64), scales.shape)
            real += factor * ((data - zero).astype(np.float32) * scales.astype(np.float32))
            continue
        if value is None or not value.is_const:
            return "the bias is neither a constant nor a dequantized constant"
        data = _channel_vector(value.const, channels, axis, rank)
        if data is None:
            return f"the bias {value.type} is not one value per output channel"
        real += factor * data.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rounded = np.rint(real / acc_scale)
    rounded = np.where(real == 0, 0.0, rounded)
    if not np.all(np.isfinite(rounded)):
        return "the bias cannot be represented at a zero accumulator scale"
    total = exact + rounded.astype(np.int64)
    if total.min() < INT32.min or total.max() > INT32.max:
        return "the bias does not fit in int32 at the accumulator's scale"
    return total.astype(np.int32)


def _bias_terms(m: Match, first: Value | None, factor: float, rank: int | None) -> list[BiasTerm]:
    """The op's own bias input (``first``) and the constant of an absorbed bias ``Add``."""
    terms: list[BiasTerm] = [] if first is None else [(first, factor, rank)]
    if m.bias_add is not None:
        const = next(v for v in m.bias_add.inputs if v is not None and v.producer is not m.core)
        terms.append((const, 1.0, m.bias_add.output.type.rank))
    return terms


# --- Conv, Gemm, MatMul -----------------------------------------------------------------------------

def fold_conv(graph: Graph, m: Match) -> Rewrite | str:
    """``Q(Conv(DQ(x), DQ(w), b))`` -> ``QConv(x, w, b_int32)``; per-channel weights along axis 0."""
    conv = m.core
    found = activation_input(conv.input(0), "the input")
    if isinstance(found, str):
        return found
    x, xp = found
    w = constant_weight(conv.input(1))
    if isinstance(w, str):
        return w
    channels = w.data.shape[0]
    zw = uniform_zero_point(w.params, "the weight")
    scales = channel_scales(w.params, 0, channels, "the weight")
    if isinstance(zw, str) or isinstance(scales, str):
        return zw if isinstance(zw, str) else scales
    acc_scale = xp.s * scales
    bias = integer_bias(_bias_terms(m, conv.input(2), 1.0, None), acc_scale, 1)
    attrs = _requant_attrs(m, acc_scale / m.out.s)
    if isinstance(bias, str) or isinstance(attrs, str):
        return bias if isinstance(bias, str) else attrs
    kernel = tuple(int(k) for k in w.data.shape[2:])
    geo = window_geometry(conv, tuple(x.type.shape[2:]), kernel)
    attrs.update(_int_attrs(group=conv.attr("group", 1), kernel_shape=kernel, strides=geo.strides,
                            dilations=geo.dilations, pads=geo.pads_begin + geo.pads_end,
                            x_zero_point=xp.z, w_zero_point=zw))
    inputs = [x, w.source or new_constant(graph, w.data, f"{conv.name}_w")]
    if bias is not None:
        inputs.append(new_constant(graph, bias, f"{conv.name}_bias"))
    return Rewrite(_node(m, "QConv", inputs, attrs))


def _matrix_weight(w: Weight, trans_b: bool) -> tuple[np.ndarray, QParams]:
    """The weight as ``[..., K, N]`` with its parameters' axis following the transposition."""
    if not trans_b:
        return w.data, w.params
    p = w.params
    axis = None if p.axis is None else 1 - p.axis
    return np.ascontiguousarray(w.data.T), QParams(p.scale, p.zero_point, p.dtype, axis)


def fold_matmul(graph: Graph, m: Match) -> Rewrite | str:
    """``Q(Gemm|MatMul(DQ(a), DQ(b), c))`` -> ``QMatMul(a, b, c_int32)``; per-column constant weights,
    ``alpha`` in the multiplier and ``beta`` in the bias."""
    node, gemm = m.core, m.core.op == "Gemm"
    found = activation_input(node.input(0), "input A")
    if isinstance(found, str):
        return found
    a, ap = found
    if gemm and node.attr("transA", 0):
        return "transA is set"
    alpha = float(node.attr("alpha", 1.0)) if gemm else 1.0
    trans_b = gemm and bool(node.attr("transB", 0))
    n = node.output.type.shape[-1]
    w = constant_weight(node.input(1))
    if isinstance(w, Weight):
        data, params = _matrix_weight(w, trans_b)
        scales = channel_scales(params, data.ndim - 1, n, "the weight")
        zb = uniform_zero_point(params, "the weight")
        if isinstance(scales, str) or isinstance(zb, str):
            return scales if isinstance(scales, str) else zb
        b = w.source if w.source is not None and not trans_b else new_constant(graph, data, f"{node.name}_w")
    else:
        found_b = activation_input(node.input(1), "input B")
        if isinstance(found_b, str):
            return f"{w}, and {found_b}"
        if trans_b:
            return "transB is set on a non-constant B"
        b, bp = found_b
        scales, zb = np.full(n, bp.s, np.float64), bp.z
    acc_scale = alpha * ap.s * scales
    c = node.input(2) if gemm else None
    rank = node.output.type.rank
    bias = integer_bias(_bias_terms(m, c, float(node.attr("beta", 1.0)) if gemm else 1.0, rank), acc_scale,
                        rank - 1)
    attrs = _requant_attrs(m, acc_scale / m.out.s)
    if isinstance(bias, str) or isinstance(attrs, str):
        return bias if isinstance(bias, str) else attrs
    attrs.update(_int_attrs(a_zero_point=ap.z, b_zero_point=zb))
    inputs = [a, b] + ([new_constant(graph, bias, f"{node.name}_bias")] if bias is not None else [])
    return Rewrite(_node(m, "QMatMul", inputs, attrs))


# --- elementwise and pooling ----------------------------------------------------------------------

def _two_activations(m: Match) -> tuple[tuple[Value, QParams], tuple[Value, QParams]] | str:
    found = [activation_input(m.core.input(i), f"input {i}") for i in (0, 1)]
    for f in found:
        if isinstance(f, str):
            return f
    return found[0], found[1]


def fold_add(graph: Graph, m: Match) -> Rewrite | str:
    """``Q(Add|Sub(DQ(a), DQ(b)))`` -> ``QAdd(a, b)``, both rescaled to the output (Sub: ``Mb < 0``)."""
    found = _two_activations(m)
    if isinstance(found, str):
        return found
    (a, ap), (b, bp) = found
    sign = -1.0 if m.core.op == "Sub" else 1.0
    encoded = add_multipliers(ap.s / m.out.s, sign * bp.s / m.out.s)
    if isinstance(encoded, str):
        return encoded
    ma, mb, shift = encoded
    attrs = _int_attrs(a_zero_point=ap.z, b_zero_point=bp.z, a_multiplier=ma, b_multiplier=mb, shift=shift,
                       out_zero_point=m.out.z, clamp_min=m.clamp[0], clamp_max=m.clamp[1])
    return Rewrite(_node(m, "QAdd", [a, b], attrs))


def fold_mul(graph: Graph, m: Match) -> Rewrite | str:
    """``Q(Mul(DQ(a), DQ(b)))`` -> ``QMul(a, b)`` with ``M / 2^shift ~ s_a s_b / s_out``."""
    found = _two_activations(m)
    if isinstance(found, str):
        return found
    (a, ap), (b, bp) = found
    attrs = _requant_attrs(m, np.array([ap.s * bp.s / m.out.s]))
    if isinstance(attrs, str):
        return attrs
    attrs.update(_int_attrs(a_zero_point=ap.z, b_zero_point=bp.z))
    return Rewrite(_node(m, "QMul", [a, b], attrs))


def _window_count(pool: Node, spatial: tuple[int, ...]) -> tuple[int, dict[str, Attr]] | str:
    """The element count every window of an AveragePool averages over, when it is the same for all."""
    kernel = tuple(int(k) for k in pool.attr("kernel_shape"))
    if any(d != 1 for d in pool.attr("dilations", (1,) * len(kernel))):
        return "it is dilated"
    ceil_mode = bool(pool.attr("ceil_mode", 0))
    geo = window_geometry(pool, spatial, kernel, ceil_mode=ceil_mode)
    reach = [(o - 1) * s + k for o, s, k in zip(geo.out, geo.strides, kernel)]
    padded = [size + pb + pe for size, pb, pe in zip(spatial, geo.pads_begin, geo.pads_end)]
    if any(r > p for r, p in zip(reach, padded)):
        return "ceil_mode windows run past the padded input, so the edge windows count fewer elements"
    counts = np.zeros(padded)
    inner = tuple(slice(0, p) if pool.attr("count_include_pad", 0) else slice(pb, pb + size)
                  for p, pb, size in zip(padded, geo.pads_begin, spatial))
    counts[inner] = 1
    index = tuple(slice(0, o * s, s) for o, s in zip(geo.out, geo.strides))
    windows = sliding_window_view(counts, kernel)[index]
    per_window = windows.sum(axis=tuple(range(len(kernel), 2 * len(kernel))))
    if np.any(per_window != per_window.reshape(-1)[0]):
        return "the windows average over different numbers of elements (count_include_pad=0 with padding)"
    # no window overhangs, so ceil_mode changes nothing: written as 0, with the pads explicit
    attrs = _int_attrs(kernel_shape=kernel, strides=geo.strides, pads=geo.pads_begin + geo.pads_end,
                       ceil_mode=0, count_include_pad=pool.attr("count_include_pad", 0))
    return int(per_window.reshape(-1)[0]), attrs


def fold_pool(graph: Graph, m: Match) -> Rewrite | str:
    """``Q(GlobalAveragePool|AveragePool(DQ(x)))`` -> ``QAveragePool(x)`` when every window has the same
    element count: ``M / 2^shift ~ s_x / (s_out * count)``."""
    found = activation_input(m.core.input(0), "the input")
    if isinstance(found, str):
        return found
    x, xp = found
    spatial = tuple(x.type.shape[2:])
    if m.core.op == "GlobalAveragePool":
        count, attrs = int(np.prod(spatial)), _int_attrs(**{"global": 1})
    else:
        window = _window_count(m.core, spatial)
        if isinstance(window, str):
            return window
        count, attrs = window
        attrs.update(_int_attrs(**{"global": 0}))
    requant = _requant_attrs(m, np.array([xp.s / (m.out.s * count)]))
    if isinstance(requant, str):
        return requant
    attrs.update(requant)
    attrs.update(_int_attrs(x_zero_point=xp.z))
    return Rewrite(_node(m, "QAveragePool", [x], attrs))


# --- tables and data movement ---------------------------------------------------------------------

def fold_lut(graph: Graph, m: Match) -> Rewrite | str:
    """``Q(f(DQ(x)))`` for an elementwise ``f`` of one tensor (its other inputs scalar constants), or a
    bare ``Q(DQ(x))`` requantization -> ``QLut(x)`` with ``lut[i] = Q(f(DQ(qmin + i)))``, f in float64."""
    node = m.core
    if node.op == "DequantizeLinear":
        found, data_index, f = activation_input(node.output, "the input"), 0, None
    else:
        tensors = [i for i, v in enumerate(node.inputs) if v is not None and not v.is_const]
        if len(tensors) != 1:
            return "it has more than one non-constant input"
        data_index, f = tensors[0], node
        if any(v.const.size != 1 for v in node.inputs if v is not None and v.is_const):
            return "its constant operand is not a scalar"
        found = activation_input(node.input(data_index), "the input")
    if isinstance(found, str):
        return found
    x, xp = found
    if node.output.type.shape != x.type.shape:
        return "it changes the shape"
    table = requantize_table(xp, m.out, f, data_index, m.clamp)
    if isinstance(table, str):
        return table
    lut = {"lut": Attr(AttrKind.INTS, tuple(int(v) for v in table))}
    return Rewrite(_node(m, "QLut", [x], lut))


#: Ops that only move or select elements (index of their data inputs; None: all inputs). Quantization
#: is monotone, so they commute with it (MaxPool included): on equal parameters they run on the integers.
MOVE_OPS = {"MaxPool": (0,), "GlobalMaxPool": (0,), "Reshape": (0,), "Flatten": (0,), "Transpose": (0,),
            "Squeeze": (0,), "Unsqueeze": (0,), "Identity": (0,), "Slice": (0,), "Gather": (0,),
            "Expand": (0,), "Concat": None}


def fold_move(graph: Graph, m: Match) -> Rewrite | str:
    """``Q(op(DQ(x)))`` for a data-movement ``op`` -> ``op(x)`` on the integers; an input whose parameters
    differ from the output's first goes through a ``QLut`` requantization table (exact: the float path
    requantizes every element the same way). A float constant input (an embedding table under a
    ``Gather``) is quantized with the QuantizeLinear's own parameters: ``Q(Gather(T, ids))`` is
    ``Gather(Q(T), ids)`` element for element."""
    node = m.core
    if any(out.uses() for out in node.outputs[1:]):
        return "its second output is used"
    inputs = list(node.inputs)
    indices = MOVE_OPS[node.op] or [i for i, v in enumerate(inputs) if v is not None]
    before = []
    for i in indices:
        if inputs[i] is not None and inputs[i].is_const and inputs[i].const.dtype.kind == "f":
            # a float table (an embedding Gather's): Q(op(T)) == op(Q(T)) exactly, so quantize T once
            table = evaluate_node(m.q, [inputs[i].const] + [v.const for v in m.q.inputs[1:] if v is not None])
            inputs[i] = new_constant(graph, table[0], f"{inputs[i].name}_quantized")
            continue
        found = activation_input(inputs[i], f"input {i}")
        if isinstance(found, str):
            return found
        x, xp = found
        if xp.same_as(m.out):
            inputs[i] = x
            continue
        table = requantize_table(xp, m.out)
        out = Value(graph.unique_name(f"{x.name}_requantized"),
                    TensorType(m.q.output.type.dtype, x.type.shape))
        before.append(Node("QLut", [x], [out], {"lut": Attr(AttrKind.INTS, tuple(int(v) for v in table))},
                           name=graph.unique_name(f"{node.name}_requantize"), domain=DOMAIN))
        inputs[i] = out
    return Rewrite(_node(m, node.op, inputs, dict(node.attrs), domain=""), before)

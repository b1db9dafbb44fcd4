"""Numpy semantics of the math, comparison, logical and reduction ops (see ``ops.py``).

Elementwise ops are data: ``UNARY_NUMPY`` and ``BINARY_NUMPY`` (extended here with the float math ops) and
``TYPED_NUMPY`` (ops whose result type differs from their operands': comparisons, logic, IsNaN, Cast,
Where) map an op to a numpy function, and ``BODY_NUMPY`` evaluates any op of a
``lowering::FusedElementwise`` body through them, so a fused body and the standalone ops share one
definition. Float results follow ONNX Runtime: NaN for the log or square root of a negative number, Min and
Max propagate NaN, Round rounds half to even, Cast to an integer truncates toward zero.

Reductions take their axes from input 1 (ReduceSum since opset 13, the others since 18) or the ``axes``
attribute; empty axes reduce everything unless ``noop_with_empty_axes``. Float sums and means accumulate in
float64 (the cpu kernels too), maxima are exact.
"""

from __future__ import annotations

import numpy as np

from ..opinfo import BINARY_OPS, DOMAIN, body_arity, body_param_count, elementwise_params
from .ops import BINARY_NUMPY, ONNX_TYPE_CODES, UNARY_NUMPY, _axes, _int_div, erf, register


def _quiet(fn):
    """``fn`` with numpy's invalid/divide/overflow warnings off: NaN and inf results are the semantics."""
    def wrapped(*args):
        with np.errstate(all="ignore"):
            return fn(*args)
    return wrapped


UNARY_NUMPY.update({
    "Erf": lambda x, p: erf(x),
    "Reciprocal": _quiet(lambda x, p: np.reciprocal(x)),
    "Log": _quiet(lambda x, p: np.log(x)),
    "Sqrt": _quiet(lambda x, p: np.sqrt(x)),
    "Floor": lambda x, p: np.floor(x),
    "Ceil": lambda x, p: np.ceil(x),
    "Round": lambda x, p: np.round(x),  # half to even, like ONNX
    "Sign": lambda x, p: np.sign(x),
})


def _power(base: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """ONNX Pow: the result has the base's type (the exponent may be an integer tensor). The exponent is
    materialized first: numpy computes a power by a scalar (or a stride-0 broadcast) 0.5 as a square root,
    which differs from pow (and ONNX Runtime) at -0 and -inf."""
    shape = np.broadcast_shapes(np.shape(base), np.shape(exponent))
    base = np.broadcast_to(base, shape)
    exponent = np.array(np.broadcast_to(exponent.astype(base.dtype), shape))
    with np.errstate(all="ignore"):
        return np.power(base, exponent).astype(base.dtype)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Float division (inf/NaN on zero); integer division truncates toward zero, and gives 0 on zero."""
    with np.errstate(all="ignore"):
        if np.issubdtype(a.dtype, np.floating):
            return np.divide(a, b)
        return np.where(b == 0, 0, _int_div(a, np.where(b == 0, 1, b))).astype(np.result_type(a, b))


BINARY_NUMPY.update({"Div": _divide, "Pow": _power, "Min": np.minimum, "Max": np.maximum})


def _is_inf(x: np.ndarray, params) -> np.ndarray:
    positive, negative = params
    return (np.isposinf(x) & bool(positive)) | (np.isneginf(x) & bool(negative))


def _cast(x: np.ndarray, params) -> np.ndarray:
    """ONNX Cast to the type code ``params[0]``: float -> int truncates, x -> bool is x != 0."""
    with np.errstate(all="ignore"):
        return x.astype(ONNX_TYPE_CODES[int(params[0])])


def _mod(a: np.ndarray, b: np.ndarray, params) -> np.ndarray:
    """``fmod=1``: C fmod (the dividend's sign); ``fmod=0``: the divisor's sign. An integer Mod by zero
    gives 0 (it traps in C)."""
    with np.errstate(all="ignore"):
        if params[0]:
            return np.fmod(a, b).astype(a.dtype)
        return np.where(b == 0, 0, np.mod(a, np.where(b == 0, 1, b))).astype(a.dtype)


#: Elementwise ops that are not plain ``UNARY_NUMPY`` / ``BINARY_NUMPY`` entries (their result type is not
#: their operands', or they carry parameters): op -> f(operands, params).
TYPED_NUMPY = {
    "Mod": lambda xs, p: _mod(xs[0], xs[1], p),
    "Equal": lambda xs, p: np.equal(xs[0], xs[1]),
    "Less": lambda xs, p: np.less(xs[0], xs[1]),
    "LessOrEqual": lambda xs, p: np.less_equal(xs[0], xs[1]),
    "Greater": lambda xs, p: np.greater(xs[0], xs[1]),
    "GreaterOrEqual": lambda xs, p: np.greater_equal(xs[0], xs[1]),
    "And": lambda xs, p: np.logical_and(xs[0], xs[1]),
    "Or": lambda xs, p: np.logical_or(xs[0], xs[1]),
    "Xor": lambda xs, p: np.logical_xor(xs[0], xs[1]),
    "Not": lambda xs, p: np.logical_not(xs[0]),
    "IsNaN": lambda xs, p: np.isnan(xs[0]),
    "IsInf": lambda xs, p: _is_inf(xs[0], p),
    "Cast": lambda xs, p: _cast(xs[0], p),
    "Where": lambda xs, p: np.where(xs[0], xs[1], xs[2]),
}


def body_numpy(op: str, operands: list[np.ndarray], params: tuple[float, ...]) -> np.ndarray:
    """One body op on numpy operands (the typed result; broadcasting as numpy does)."""
    if op in TYPED_NUMPY:
        return np.asarray(TYPED_NUMPY[op](operands, params))
    x = operands[0]
    if op in BINARY_OPS:
        return np.asarray(BINARY_NUMPY[op](x, operands[1])).astype(x.dtype, copy=False)
    return np.asarray(UNARY_NUMPY[op](x, params)).astype(x.dtype, copy=False)


def _standard(op: str):
    """The reference of a standard (unfused) elementwise op: its body function, parameters from attributes."""
    def run(node, xs):
        return [body_numpy(op, list(xs[:body_arity(op)]), elementwise_params(node))]
    return run


for _name in ("Erf", "Reciprocal", "Log", "Sqrt", "Floor", "Ceil", "Round", "Sign", "Div", "Pow",
              *TYPED_NUMPY):
    register(_name)(_standard(_name))


@register("Min", "Max")
def min_max(node, xs):
    """Variadic, broadcasting; NaN propagates (as in ONNX Runtime)."""
    fn = BINARY_NUMPY[node.op]
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return [np.asarray(out).astype(xs[0].dtype, copy=False)]


@register("FusedElementwise", domain=DOMAIN)
def fused_elementwise(node, xs):
    """A chain of elementwise ops over broadcast inputs; see ``passes.fusion.fuse_elementwise``."""
    regs = list(xs)
    params = list(node.attr("body_params", ()))
    args = list(node.attr("body_args", ()))
    for op in node.attr("body_ops"):
        arity, count = body_arity(op), body_param_count(op)
        regs.append(body_numpy(op, [regs[a] for a in args[:arity]], tuple(params[:count])))
        del args[:arity], params[:count]
    out = regs[-1]
    return [np.broadcast_to(out, node.output.type.shape).astype(out.dtype)]


# --- reductions ---------------------------------------------------------------------------------------

def reduce_axes(node, xs) -> tuple[int, ...] | None:
    """The axes a Reduce* node reduces, normalized and sorted; None when it is a no-op (empty axes with
    ``noop_with_empty_axes``)."""
    rank = np.ndim(xs[0])
    axes = _axes(node, xs)
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return None
        return tuple(range(rank))
    return tuple(sorted({int(a) % rank for a in axes})) if rank else ()


def _reducer(kind: str):
    def reduce(node, xs):
        x = xs[0]
        axes = reduce_axes(node, xs)
        if axes is None:
            return [x]
        keep = bool(node.attr("keepdims", 1))
        wide = np.float64 if x.dtype.kind == "f" else None
        if kind == "sum":
            y = x.sum(axis=axes, keepdims=keep, dtype=wide)
        elif kind == "mean":
            y = x.mean(axis=axes, keepdims=keep, dtype=np.float64)
        elif kind == "max":
            y = x.max(axis=axes, keepdims=keep)
        else:
            y = x.min(axis=axes, keepdims=keep)
        return [np.asarray(y).astype(x.dtype)]
    return reduce


REDUCE_KINDS = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min"}
for _name, _kind in REDUCE_KINDS.items():
    register(_name)(_reducer(_kind))


@register("ArgMax", "ArgMin")
def arg_max_min(node, xs):
    """int64 indices of the first (or with ``select_last_index`` the last) extreme along ``axis``."""
    x = xs[0]
    axis = node.attr("axis", 0) % max(x.ndim, 1)
    fn = np.argmax if node.op == "ArgMax" else np.argmin
    if node.attr("select_last_index", 0):
        index = x.shape[axis] - 1 - fn(np.flip(x, axis=axis), axis=axis)
    else:
        index = fn(x, axis=axis)
    if node.attr("keepdims", 1):
        index = np.expand_dims(index, axis)
    return [np.asarray(index, dtype=np.int64)]


@register("CumSum")
def cum_sum(node, xs):
    """Running sums along the axis given by input 1 (``exclusive`` shifts by one, ``reverse`` runs from
    the end), accumulated in order in the input type, as a sequential loop does."""
    x = xs[0]
    axis = int(np.asarray(xs[1]).reshape(-1)[0]) % x.ndim
    reverse = bool(node.attr("reverse", 0))
    y = np.flip(x, axis) if reverse else x
    y = np.cumsum(y, axis=axis, dtype=x.dtype)
    if node.attr("exclusive", 0):
        y = np.concatenate([np.zeros_like(np.take(y, [0], axis=axis)), np.take(y, range(x.shape[axis] - 1),
                                                                                 axis=axis)], axis=axis)
    return [np.ascontiguousarray(np.flip(y, axis) if reverse else y)]


@register("LogSoftmax")
def log_softmax(node, xs):
    """``x - max - log(sum(exp(x - max)))`` along ``axis`` (opset 13; older models are upgraded)."""
    x = xs[0]
    axis = node.attr("axis", -1)
    shifted = x.astype(np.float64) - x.max(axis=axis, keepdims=True)
    return [(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).astype(x.dtype)]

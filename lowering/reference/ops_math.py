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

from ..ir import DType
from ..opinfo import BINARY_OPS, DOMAIN, UNARY_ATTRS, body_arity, body_param_count, elementwise_params
from .ops import BINARY_NUMPY, ONNX_TYPE_CODES, UNARY_NUMPY, _axes, _int_div, erf, register

# bfloat16 (ONNX type code 16) is ml_dtypes' type, as in onnx: numpy has none
ONNX_TYPE_CODES.setdefault(16, DType.BFLOAT16.numpy.type)


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


def _wide(fn):
    """A float activation computed in float64 (the result is cast back to the operand's type)."""
    return _quiet(lambda x, p: fn(np.asarray(x, dtype=np.float64), p))


def _softplus(x):
    return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(x)))


UNARY_NUMPY.update({name: _wide(lambda x, p, _f=f: _f(x)) for name, f in {
    "Cos": np.cos, "Sin": np.sin, "Tan": np.tan, "Acos": np.arccos, "Asin": np.arcsin, "Atan": np.arctan,
    "Cosh": np.cosh, "Sinh": np.sinh, "Acosh": np.arccosh, "Asinh": np.arcsinh, "Atanh": np.arctanh,
    "Softplus": _softplus, "Softsign": lambda x: x / (1 + np.abs(x)),
    "HardSwish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "Mish": lambda x: x * np.tanh(_softplus(x)),
}.items()})
UNARY_NUMPY.update({
    "Elu": _wide(lambda x, p: np.where(x >= 0, x, p[0] * np.expm1(x))),
    "Celu": _wide(lambda x, p: np.maximum(x, 0) + np.minimum(0, p[0] * np.expm1(x / p[0]))),
    "ThresholdedRelu": _wide(lambda x, p: np.where(x > p[0], x, 0.0)),
    "Swish": _wide(lambda x, p: x / (1 + np.exp(-p[0] * x))),
    "Selu": _wide(lambda x, p: p[1] * np.where(x > 0, x, p[0] * np.expm1(x))),
    "HardSigmoid": _wide(lambda x, p: np.clip(p[0] * x + p[1], 0, 1)),
    "Shrink": _wide(lambda x, p: np.where(x < -p[1], x + p[0], np.where(x > p[1], x - p[0], 0.0))),
})


def _power(base: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """ONNX Pow: the result has the base's type (the exponent may be an integer tensor). The exponent is
    materialized first: numpy computes a power by a scalar (or a stride-0 broadcast) 0.5 as a square root,
    which differs from pow (and ONNX Runtime) at -0 and -inf."""
    shape = np.broadcast_shapes(np.shape(base), np.shape(exponent))
    if base.dtype.kind in "iu":  # in double, truncated to the base's type (as ONNX Runtime's std::pow)
        with np.errstate(all="ignore"):
            wide = np.power(np.broadcast_to(base, shape).astype(np.float64), exponent.astype(np.float64))
            return np.trunc(wide).astype(base.dtype)
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


def _prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return np.where(x < 0, x * slope, x).astype(x.dtype)


BINARY_NUMPY.update({"Div": _divide, "Pow": _power, "Min": np.minimum, "Max": np.maximum, "PRelu": _prelu})


def _is_inf(x: np.ndarray, params) -> np.ndarray:
    positive, negative = params
    return (np.isposinf(x) & bool(positive)) | (np.isneginf(x) & bool(negative))


def _cast(x: np.ndarray, params) -> np.ndarray:
    """ONNX Cast to the type code ``params[0]``: float -> int truncates, x -> bool is x != 0."""
    with np.errstate(all="ignore"):
        return x.astype(ONNX_TYPE_CODES[int(params[0])])


def _mod(a: np.ndarray, b: np.ndarray, params) -> np.ndarray:
    """``fmod=1``: C fmod (the dividend's sign); ``fmod=0``: the divisor's sign (np.mod). An integer Mod by
    zero gives 0 (it traps in C)."""
    with np.errstate(all="ignore"):
        if params[0]:
            return np.fmod(a, b).astype(a.dtype)
        if a.dtype.kind == "f":  # opset 28: numpy's mod (a zero divisor gives NaN)
            return np.mod(a, b).astype(a.dtype)
        return np.where(b == 0, 0, np.mod(a, np.where(b == 0, 1, b))).astype(a.dtype)


def _bit_shift(a: np.ndarray, b: np.ndarray, params) -> np.ndarray:
    """ONNX BitShift (opset 28): bits shifted out are lost (a left shift wraps in the type); an amount
    below 0 or of the width or more gives 0, or -1 for a right shift of a negative value."""
    bits = a.dtype.itemsize * 8
    a, b = np.broadcast_arrays(a, b)
    b = b.astype(np.int64)
    bad = (b < 0) | (b >= bits)
    amount = np.where(bad, 0, b).astype(np.uint64)
    with np.errstate(all="ignore"):
        if params[0]:  # RIGHT: arithmetic for signed types
            shifted = np.right_shift(a.astype(np.int64), amount.astype(np.int64)).astype(a.dtype)
            edge = np.where(a < 0, -1, 0).astype(a.dtype)
        else:
            shifted = np.left_shift(a.astype(np.int64).astype(np.uint64), amount).astype(a.dtype)
            edge = np.zeros_like(a)
    return np.where(bad, edge, shifted).astype(a.dtype)


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
    "BitwiseAnd": lambda xs, p: np.bitwise_and(xs[0], xs[1]),
    "BitwiseOr": lambda xs, p: np.bitwise_or(xs[0], xs[1]),
    "BitwiseXor": lambda xs, p: np.bitwise_xor(xs[0], xs[1]),
    "BitwiseNot": lambda xs, p: np.invert(xs[0]),
    "BitShift": lambda xs, p: _bit_shift(xs[0], xs[1], p),
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


for _name in ("Erf", "Reciprocal", "Log", "Sqrt", "Floor", "Ceil", "Round", "Sign", "Div", "Pow", "PRelu",
              *UNARY_ATTRS, "Cos", "Sin", "Tan", "Acos", "Asin", "Atan", "Cosh", "Sinh", "Acosh", "Asinh",
              "Atanh", "Softplus", "Softsign", "HardSwish", "Mish", *TYPED_NUMPY):
    register(_name)(_standard(_name))


@register("Sum", "Mean")
def sum_mean(node, xs):
    """Variadic, broadcasting: inputs added in order (Mean: then divided by their count)."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    if node.op == "Mean":
        out = out / out.dtype.type(len(xs))
    return [np.asarray(out).astype(xs[0].dtype, copy=False)]


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
        with np.errstate(all="ignore"):
            if kind == "sum":
                y = x.sum(axis=axes, keepdims=keep, dtype=wide)
            elif kind == "mean":
                y = x.mean(axis=axes, keepdims=keep, dtype=np.float64)
            elif kind == "max":
                y = x.max(axis=axes, keepdims=keep, initial=-np.inf if x.dtype.kind == "f" else None)
            elif kind == "min":
                y = x.min(axis=axes, keepdims=keep, initial=np.inf if x.dtype.kind == "f" else None)
            elif kind == "prod":
                y = x.prod(axis=axes, keepdims=keep, dtype=wide)
            elif kind == "l1":
                y = np.abs(x).sum(axis=axes, keepdims=keep, dtype=wide)
            elif kind == "l2":
                y = np.sqrt(np.square(x.astype(np.float64)).sum(axis=axes, keepdims=keep))
            elif kind == "sumsq":
                y = np.square(x.astype(wide or x.dtype)).sum(axis=axes, keepdims=keep)
            elif kind == "logsum":
                y = np.log(x.sum(axis=axes, keepdims=keep, dtype=np.float64))
            else:  # logsumexp, shifted by the maximum
                x64 = x.astype(np.float64)
                top = x64.max(axis=axes, keepdims=True, initial=-np.inf)
                shift = np.where(np.isfinite(top), top, 0.0)
                y = np.log(np.exp(x64 - shift).sum(axis=axes, keepdims=True)) + shift
                if not keep:
                    y = y.reshape([d for i, d in enumerate(y.shape) if i not in axes])
        return [np.asarray(y).astype(x.dtype)]
    return reduce


REDUCE_KINDS = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min",
                "ReduceProd": "prod", "ReduceL1": "l1", "ReduceL2": "l2", "ReduceSumSquare": "sumsq",
                "ReduceLogSum": "logsum", "ReduceLogSumExp": "logsumexp"}
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


@register("CumProd")
def cum_prod(node, xs):
    """Running products along the axis given by input 1 (``exclusive``: shifted by one, starting at 1;
    ``reverse``: from the end), in the input type."""
    x = xs[0]
    axis = int(np.asarray(xs[1]).reshape(-1)[0]) % x.ndim
    reverse = bool(node.attr("reverse", 0))
    y = np.flip(x, axis) if reverse else x
    with np.errstate(all="ignore"):
        y = np.cumprod(y, axis=axis, dtype=x.dtype)
    if node.attr("exclusive", 0):
        ones = np.ones_like(np.take(y, [0], axis=axis))
        y = np.concatenate([ones, np.take(y, range(x.shape[axis] - 1), axis=axis)], axis=axis)
    return [np.ascontiguousarray(np.flip(y, axis) if reverse else y)]


@register("Hardmax")
def hardmax(node, xs):
    """1 at the first maximum along ``axis`` (opset 13), 0 elsewhere."""
    x = xs[0]
    axis = node.attr("axis", -1) % x.ndim
    first = np.expand_dims(np.argmax(x, axis=axis), axis)
    y = np.zeros_like(x)
    np.put_along_axis(y, first, 1, axis=axis)
    return [y]


@register("LpNormalization")
def lp_normalization(node, xs):
    """``x / ||x||_p`` along ``axis`` (p 1 or 2), the norm in float64; 0 where the norm is 0."""
    x = xs[0]
    axis = node.attr("axis", -1) % x.ndim
    p = node.attr("p", 2)
    if p not in (1, 2):
        raise ValueError(f"LpNormalization p={p} (1 and 2 are defined)")
    x64 = x.astype(np.float64)
    norm = np.abs(x64).sum(axis=axis, keepdims=True) if p == 1 else \
        np.sqrt(np.square(x64).sum(axis=axis, keepdims=True))
    with np.errstate(all="ignore"):
        return [np.where(norm == 0, 0.0, x64 / norm).astype(x.dtype)]


def _normalize(x, axes, epsilon, center=True):
    """``(x - mean) / sqrt(var + epsilon)`` over ``axes`` (without ``center``: ``x / sqrt(mean(x^2) +
    epsilon)``), in float64."""
    x64 = x.astype(np.float64)
    if center:
        x64 = x64 - x64.mean(axis=axes, keepdims=True)
    return x64 / np.sqrt(np.square(x64).mean(axis=axes, keepdims=True) + epsilon)


@register("InstanceNormalization")
def instance_normalization(node, xs):
    """Per sample and channel over the spatial axes, then ``scale[c] * y + bias[c]``."""
    x, scale, bias = xs[:3]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = _normalize(x, tuple(range(2, x.ndim)), node.attr("epsilon", 1e-5))
    return [(y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)]


@register("GroupNormalization")
def group_normalization(node, xs):
    """Per sample over ``num_groups`` groups of consecutive channels (with their spatial axes), then the
    per-channel ``scale`` and ``bias`` (opset 21)."""
    x, scale, bias = xs[:3]
    groups = int(node.attr("num_groups"))
    n, c = x.shape[:2]
    grouped = x.reshape((n, groups, -1))
    y = _normalize(grouped, (2,), node.attr("epsilon", 1e-5)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    return [(y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)]


@register("RMSNormalization")
def rms_normalization(node, xs):
    """``x / sqrt(mean(x^2) + epsilon) * scale`` over the axes ``axis..rank-1`` (opset 23; scale
    broadcasts to x)."""
    x, scale = xs[:2]
    axis = node.attr("axis", -1) % x.ndim
    y = _normalize(x, tuple(range(axis, x.ndim)), node.attr("epsilon", 1e-5), center=False)
    return [(y * scale.astype(np.float64)).astype(x.dtype)]


def nll_loss(log_prob: np.ndarray, target: np.ndarray, weight, reduction: str, ignore_index) -> np.ndarray:
    """ONNX NegativeLogLikelihoodLoss of [N, C, d...] log-probabilities and [N, d...] class indices:
    ``-log_prob[n, t, d] * weight[t]`` (0 where ``t == ignore_index``); ``mean`` divides the sum by the sum
    of the weights taken. Sums in float64."""
    c = log_prob.shape[1]
    t = np.asarray(target).astype(np.int64)
    ignored = t == ignore_index if ignore_index is not None else np.zeros(t.shape, bool)
    safe = np.where(ignored, 0, t)
    bad = (safe < 0) | (safe >= c)
    if bad.any():
        raise IndexError(f"NegativeLogLikelihoodLoss target {int(safe[bad][0])} is out of range for {c} "
                         "classes")
    picked = np.take_along_axis(log_prob.astype(np.float64), safe[:, None], axis=1)[:, 0]
    w = np.ones(t.shape) if weight is None else np.asarray(weight, np.float64)[safe]
    w = np.where(ignored, 0.0, w)
    loss = -picked * w
    if reduction == "none":
        return loss.astype(log_prob.dtype)
    if reduction == "sum":
        return np.asarray(loss.sum(), log_prob.dtype)
    if reduction == "mean":
        with np.errstate(all="ignore"):
            return np.asarray(loss.sum() / w.sum(), log_prob.dtype)
    raise ValueError(f"reduction '{reduction}'")


@register("NegativeLogLikelihoodLoss")
def negative_log_likelihood_loss(node, xs):
    weight = xs[2] if len(xs) > 2 else None
    return [nll_loss(xs[0], xs[1], weight, node.attr("reduction", "mean"), node.attr("ignore_index"))]


@register("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(node, xs):
    """NegativeLogLikelihoodLoss of ``LogSoftmax(scores, axis=1)``; output 1 is that log-probability."""
    x = xs[0]
    shifted = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    weight = xs[2] if len(xs) > 2 else None
    loss = nll_loss(log_prob, xs[1], weight, node.attr("reduction", "mean"), node.attr("ignore_index"))
    return [loss.astype(x.dtype), log_prob.astype(x.dtype)][: len(node.outputs)]

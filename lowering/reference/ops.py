"""Numpy semantics of every op the compiler accepts: the executable definition passes are checked against.

``REGISTRY`` maps an op (``"Conv"``, or ``"lowering::FusedConv"`` for the project's fused ops) to a function
``(node, inputs) -> list of outputs``. The importer rejects any standard op not in it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..ir import Node
from ..opinfo import DOMAIN, FLOAT_MAX, window_geometry

Kernel = Callable[[Node, list], list]
REGISTRY: dict[str, Kernel] = {}

# ONNX TensorProto element-type codes (kept here so the reference does not import onnx).
ONNX_TYPE_CODES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
                   7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def register(*names: str, domain: str = ""):
    def wrap(fn: Kernel) -> Kernel:
        for name in names:
            REGISTRY[f"{domain}::{name}" if domain else name] = fn
        return fn
    return wrap


UNARY_NUMPY = {
    "Relu": lambda x, p: np.maximum(x, x.dtype.type(0)),
    "LeakyRelu": lambda x, p: np.where(x >= 0, x, x * x.dtype.type(p[0])),
    "Clip": lambda x, p: np.minimum(np.maximum(x, x.dtype.type(p[0])), x.dtype.type(p[1])),
    "Sigmoid": lambda x, p: _sigmoid(x),
    "Tanh": lambda x, p: np.tanh(x),
    "Neg": lambda x, p: -x,
    "Abs": lambda x, p: np.abs(x),
    "Exp": lambda x, p: np.exp(x),
    "Sqrt": lambda x, p: np.sqrt(x),
    "Identity": lambda x, p: x,
    "Gelu": lambda x, p: _gelu(x, p[0] if p else 0.0),
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1 / (1 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1 + e)
    return out


_ERF = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, exactly (math.erf in float64), in x's dtype."""
    return _ERF(np.asarray(x, dtype=np.float64)).astype(np.float64).astype(np.asarray(x).dtype)


def _gelu(x: np.ndarray, tanh_form: float) -> np.ndarray:
    """ONNX Gelu: 0.5 x (1 + erf(x / sqrt 2)), or with ``tanh_form`` its tanh approximation (in float64)."""
    x64 = np.asarray(x, dtype=np.float64)
    if tanh_form:
        inner = np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64 ** 3))
    else:
        inner = _ERF(x64 / math.sqrt(2.0)).astype(np.float64)
    return (0.5 * x64 * (1.0 + inner)).astype(np.asarray(x).dtype)


def _int_div(a, b):
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q).astype(np.result_type(a, b))


BINARY_NUMPY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": lambda a, b: np.divide(a, b) if np.issubdtype(a.dtype, np.floating) else _int_div(a, b),
}


for _name in ("Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "Sqrt"):
    register(_name)(lambda node, xs, _f=UNARY_NUMPY[_name]: [_f(xs[0], ()).astype(xs[0].dtype)])
for _name, _f in BINARY_NUMPY.items():
    register(_name)(lambda node, xs, _f=_f: [_f(xs[0], xs[1]).astype(np.result_type(xs[0], xs[1]))])


@register("LeakyRelu")
def leaky_relu(node, xs):
    return [UNARY_NUMPY["LeakyRelu"](xs[0], (node.attr("alpha", 0.01),))]


@register("Gelu")
def gelu(node, xs):
    return [_gelu(xs[0], 1.0 if node.attr("approximate", "none") == "tanh" else 0.0)]


@register("Clip")
def clip(node, xs):
    x = xs[0]
    lo = xs[1] if len(xs) > 1 and xs[1] is not None else None
    hi = xs[2] if len(xs) > 2 and xs[2] is not None else None
    if x.dtype.kind == "f":  # an absent float bound is the largest finite float, as in ONNX Runtime: -inf
        lo = np.float32(-FLOAT_MAX) if lo is None else lo  # becomes -FLT_MAX
        hi = np.float32(FLOAT_MAX) if hi is None else hi
    if lo is not None:
        x = np.maximum(x, lo.astype(x.dtype))
    if hi is not None:
        x = np.minimum(x, hi.astype(x.dtype))
    return [x.astype(xs[0].dtype, copy=False)]


@register("Identity")
def identity(node, xs):
    return [xs[0]]


# --- linear algebra --------------------------------------------------------------------------------

def _gemm(a, b, c, trans_a, trans_b, alpha, beta):
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    y = np.matmul(a, b)
    if alpha != 1.0:
        y = y * y.dtype.type(alpha)
    if c is not None:
        y = y + (c * c.dtype.type(beta) if beta != 1.0 else c)
    return y.astype(a.dtype, copy=False)


@register("Gemm")
def gemm(node, xs):
    c = xs[2] if len(xs) > 2 else None
    return [_gemm(xs[0], xs[1], c, node.attr("transA", 0), node.attr("transB", 0),
                  node.attr("alpha", 1.0), node.attr("beta", 1.0))]


@register("MatMul")
def matmul(node, xs):
    return [np.matmul(xs[0], xs[1])]


def _conv(x, w, b, node):
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    groups = node.attr("group", 1)
    kernel = tuple(w.shape[2:])
    geo = window_geometry(node, tuple(x.shape[2:]), kernel)
    d = len(kernel)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(geo.pads_begin, geo.pads_end)))
    extent = tuple((k - 1) * dl + 1 for k, dl in zip(kernel, geo.dilations))
    win = sliding_window_view(xp, extent, axis=tuple(range(2, 2 + d)))
    index = (slice(None), slice(None))
    index += tuple(slice(0, o * s, s) for o, s in zip(geo.out, geo.strides))
    index += tuple(slice(None, None, dl) for dl in geo.dilations)
    win = win[index]  # [N, C, *out, *kernel]
    positions, taps = int(np.prod(geo.out)), int(np.prod(kernel))
    win = win.reshape(n, groups, c // groups, positions, taps)
    wg = w.reshape(groups, m // groups, cg, taps)
    y = np.einsum("ngcpk,gmck->ngmp", win, wg, optimize=True).reshape((n, m) + geo.out)
    if b is not None:
        y = y + b.reshape((1, m) + (1,) * d)
    return y.astype(x.dtype, copy=False)


@register("Conv")
def conv(node, xs):
    return [_conv(xs[0], xs[1], xs[2] if len(xs) > 2 else None, node)]


# --- pooling --------------------------------------------------------------------------------------

def _pool(node, x, kind):
    kernel = tuple(node.attr("kernel_shape"))
    d = len(kernel)
    geo = window_geometry(node, tuple(x.shape[2:]), kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
    extra = [max(0, (o - 1) * s + (k - 1) * dl + 1 - (size + pb + pe))
             for o, s, k, dl, size, pb, pe in zip(geo.out, geo.strides, kernel, geo.dilations,
                                                   x.shape[2:], geo.pads_begin, geo.pads_end)]
    pad_width = [(0, 0), (0, 0)] + [(pb, pe + e) for pb, pe, e in zip(geo.pads_begin, geo.pads_end, extra)]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x.astype(np.float64), pad_width, constant_values=fill)
    # count[i] = 1 where an element counts toward an average's divisor
    counts = np.zeros(xp.shape[2:])
    include_pad = kind == "avg" and node.attr("count_include_pad", 0)
    inner = tuple(slice(0, size + pb + pe) if include_pad else slice(pb, pb + size)
                  for size, pb, pe in zip(x.shape[2:], geo.pads_begin, geo.pads_end))
    counts[inner] = 1
    extent = tuple((k - 1) * dl + 1 for k, dl in zip(kernel, geo.dilations))
    axes = tuple(range(2, 2 + d))
    index = tuple(slice(0, o * s, s) for o, s in zip(geo.out, geo.strides))
    index += tuple(slice(None, None, dl) for dl in geo.dilations)
    win = sliding_window_view(xp, extent, axis=axes)[(slice(None), slice(None)) + index]
    red = tuple(range(2 + d, 2 + 2 * d))
    if kind == "max":
        return win.max(axis=red).astype(x.dtype)
    cwin = sliding_window_view(counts, extent)[index]
    total = win.sum(axis=red)
    return (total / cwin.sum(axis=tuple(range(d, 2 * d)))).astype(x.dtype)


def _max_pool_indices(node, x: np.ndarray) -> np.ndarray:
    """MaxPool's Indices output: the flat int64 position in ``x`` of each window's first maximum under the
    compare ``v > best`` from -inf (NaN skipped; the window's first valid tap when nothing compares
    greater); the spatial part is row-major, or column-major with ``storage_order=1``."""
    kernel = tuple(node.attr("kernel_shape"))
    d = len(kernel)
    spatial = tuple(x.shape[2:])
    geo = window_geometry(node, spatial, kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
    if node.attr("storage_order", 0):
        steps = [int(np.prod(spatial[:a])) for a in range(d)]
    else:
        steps = [int(np.prod(spatial[a + 1:])) for a in range(d)]
    planes = x.reshape((-1,) + spatial)
    out = np.zeros((planes.shape[0],) + geo.out, dtype=np.int64)
    for pos in np.ndindex(*geo.out):
        best = np.full(planes.shape[0], -np.inf)
        where = np.full(planes.shape[0], -1, dtype=np.int64)
        for tap in np.ndindex(*kernel):
            at = [o * s - pb + k * dl for o, s, pb, k, dl in zip(pos, geo.strides, geo.pads_begin, tap,
                                                                  geo.dilations)]
            if any(a < 0 or a >= n for a, n in zip(at, spatial)):
                continue
            v = planes[(slice(None),) + tuple(at)]
            better = (v > best) | (where < 0)
            best = np.where(v > best, v, best)
            where = np.where(better, sum(a * s for a, s in zip(at, steps)), where)
        out[(slice(None),) + pos] = where
    offsets = (np.arange(planes.shape[0]) * int(np.prod(spatial))).reshape((-1,) + (1,) * d)
    return (out + offsets).reshape(x.shape[:2] + geo.out)


@register("MaxPool")
def max_pool(node, xs):
    outs = [_pool(node, xs[0], "max")]
    if len(node.outputs) > 1 and node.outputs[1] is not None:
        outs.append(_max_pool_indices(node, xs[0]))
    return outs


@register("AveragePool")
def average_pool(node, xs):
    return [_pool(node, xs[0], "avg")]


@register("GlobalAveragePool")
def global_average_pool(node, xs):
    x = xs[0]
    return [x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float64).astype(x.dtype)]


@register("GlobalMaxPool")
def global_max_pool(node, xs):
    x = xs[0]
    return [x.max(axis=tuple(range(2, x.ndim)), keepdims=True)]


@register("Softmax")
def softmax(node, xs):
    x = xs[0]
    axis = node.attr("axis", -1)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [(e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)]


# --- data movement and shapes -----------------------------------------------------------------------

@register("Flatten")
def flatten(node, xs):
    x = xs[0]
    axis = node.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis  # in [-rank, rank]: -1 keeps the last axis apart
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


def reshape_target(shape_in: tuple[int, ...], spec, allowzero: int) -> tuple[int, ...]:
    out = [int(d) for d in spec]
    if not allowzero:
        out = [shape_in[i] if d == 0 else d for i, d in enumerate(out)]
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(shape_in)) // known if known else 0
    return tuple(out)


@register("Reshape")
def reshape(node, xs):
    return [xs[0].reshape(reshape_target(xs[0].shape, xs[1], node.attr("allowzero", 0)))]


@register("Transpose")
def transpose(node, xs):
    perm = node.attr("perm")
    return [np.ascontiguousarray(np.transpose(xs[0], perm))]


@register("Concat")
def concat(node, xs):
    return [np.concatenate([x for x in xs if x is not None], axis=node.attr("axis"))]


def _axes(node, xs, index=1):
    if len(xs) > index and xs[index] is not None:
        return tuple(int(a) for a in np.asarray(xs[index]).reshape(-1))  # (0-d axes: onnx's own bodies)
    axes = node.attr("axes")
    return tuple(axes) if axes is not None else None


@register("Squeeze")
def squeeze(node, xs):
    axes = _axes(node, xs)
    return [np.squeeze(xs[0], axis=axes) if axes is not None else np.squeeze(xs[0])]


@register("Unsqueeze")
def unsqueeze(node, xs):
    x = xs[0]
    axes = sorted(a % (x.ndim + len(_axes(node, xs))) for a in _axes(node, xs))
    for a in axes:
        x = np.expand_dims(x, a)
    return [x]


@register("Shape")
def shape(node, xs):
    dims = np.array(xs[0].shape, dtype=np.int64)
    start, end = node.attr("start", 0), node.attr("end")
    return [dims[start:end]]


@register("Size")
def size(node, xs):
    return [np.array(xs[0].size, dtype=np.int64)]


@register("Gather")
def gather(node, xs):
    return [np.take(xs[0], xs[1].astype(np.int64), axis=node.attr("axis", 0))]


@register("Slice")
def slice_(node, xs):
    x = xs[0]
    starts, ends = xs[1], xs[2]
    axes = xs[3] if len(xs) > 3 and xs[3] is not None else range(len(starts))
    steps = xs[4] if len(xs) > 4 and xs[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a)] = slice(int(s), int(e), int(st))
    return [x[tuple(index)]]


@register("ConstantOfShape")
def constant_of_shape(node, xs):
    value = node.attr("value")
    fill = value.reshape(-1)[0] if value is not None else np.float32(0)
    return [np.full(tuple(int(d) for d in xs[0]), fill, dtype=np.asarray(fill).dtype)]


@register("Range")
def range_(node, xs):
    start, limit, delta = (np.asarray(x).reshape(-1)[0] for x in xs[:3])  # 1-element tensors too
    return [np.arange(start, limit, delta).astype(xs[0].dtype)]


@register("Expand")
def expand(node, xs):
    shape = np.broadcast_shapes(xs[0].shape, tuple(int(d) for d in xs[1]))
    return [np.broadcast_to(xs[0], shape).copy()]


# --- the project's fused ops ------------------------------------------------------------------------

def apply_activation(y: np.ndarray, node: Node) -> np.ndarray:
    act = node.attr("activation", "")
    if not act:
        return y
    return UNARY_NUMPY[act](y, node.attr("activation_params", ())).astype(y.dtype, copy=False)


@register("FusedConv", domain=DOMAIN)
def fused_conv(node, xs):
    """act(Conv(X, W, B) + R): inputs X, W, B?, R?."""
    y = _conv(xs[0], xs[1], xs[2] if len(xs) > 2 else None, node)
    if len(xs) > 3 and xs[3] is not None:
        y = y + xs[3]
    return [apply_activation(y, node)]


@register("FusedGemm", domain=DOMAIN)
def fused_gemm(node, xs):
    """act(alpha * A' B' + beta * C + R): inputs A, B, C?, R?."""
    c = xs[2] if len(xs) > 2 else None
    y = _gemm(xs[0], xs[1], c, node.attr("transA", 0), node.attr("transB", 0),
              node.attr("alpha", 1.0), node.attr("beta", 1.0))
    if len(xs) > 3 and xs[3] is not None:
        y = y + xs[3]
    return [apply_activation(y, node)]


@register("FusedMatMul", domain=DOMAIN)
def fused_matmul(node, xs):
    """act(alpha * MatMul(A', B') + C + R), numpy broadcasting: inputs A, B, C?, R?; A' / B' swap the last
    two axes of A / B when transA / transB is set; C is a bias over the last axis."""
    a = np.swapaxes(xs[0], -1, -2) if node.attr("transA", 0) else xs[0]
    b = np.swapaxes(xs[1], -1, -2) if node.attr("transB", 0) else xs[1]
    y = _gemm(a, b, xs[2] if len(xs) > 2 else None, 0, 0, node.attr("alpha", 1.0), 1.0)
    if len(xs) > 3 and xs[3] is not None:
        y = y + xs[3]
    return [apply_activation(y, node)]


@register("Copy", domain=DOMAIN)
def copy(node, xs):
    """A materialising copy (the memory planner inserts it where a graph output would alias)."""
    return [np.array(xs[0], copy=True)]


# The quantized ops and every ops_<family>.py of this folder (math, data movement, transformer, ...) register
# themselves into REGISTRY on import (ops_math also extends UNARY_NUMPY / BINARY_NUMPY and defines Cast,
# Where, the Reduce* ops and lowering::FusedElementwise).
from . import quantized_ops  # noqa: E402,F401

for _module in sorted(p.stem for p in Path(__file__).parent.glob("ops_*.py")):
    importlib.import_module(f"{__package__}.{_module}")

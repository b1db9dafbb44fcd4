"""Reading quantization parameters off QuantizeLinear/DequantizeLinear nodes, and the integer parameters
the folding passes derive from them (requantization multipliers, clamps, lookup tables).

Nothing here edits a graph. ``real = scale * (q - zero_point)``; a parameter set is *per tensor* when its
scale has one element, else *per axis* along ``axis`` of the tensor it applies to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowering.ir import Node, Value
from lowering.opinfo import FLOAT_MAX
from lowering.quantized import QRANGE, quantize_multiplier, quantize_multipliers
from lowering.reference import ReferenceError, evaluate_node

QUANTIZED_DTYPES = frozenset({"int8", "uint8"})


@dataclass(frozen=True)
class QParams:
    """Scale (float32) and zero point (int64), both 1-D, of one quantized tensor of ``dtype``."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: np.dtype
    axis: int | None  # normalized to the tensor's rank; None when per tensor

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1 and self.zero_point.size == 1

    @property
    def s(self) -> float:
        return float(self.scale[0])

    @property
    def z(self) -> int:
        return int(self.zero_point[0])

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.dtype).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.dtype).max)

    def same_as(self, other: QParams) -> bool:
        """Whether both quantize identically (per tensor)."""
        return (self.per_tensor and other.per_tensor and self.dtype == other.dtype
                and np.float32(self.s) == np.float32(other.s) and self.z == other.z)

    def describe(self) -> str:
        if self.per_tensor:
            return f"{self.dtype.name} scale {self.s:.6g} zero point {self.z}"
        return f"{self.dtype.name} per-axis ({self.scale.size} scales along axis {self.axis})"


def is_op(node: Node | None, op: str) -> bool:
    return node is not None and not node.domain and node.op == op


def qparams(node: Node) -> QParams | str:
    """The parameters of a QuantizeLinear/DequantizeLinear node, or why they are not static."""
    scale, zp = node.input(1), node.input(2)
    if scale is None or not scale.is_const:
        return "its scale is not a constant"
    if zp is not None and not zp.is_const:
        return "its zero point is not a constant"
    quantized = node.input(0) if node.op == "DequantizeLinear" else node.output
    if quantized.type is None:
        return "its quantized tensor has no type"
    dtype = quantized.type.dtype.numpy
    s = scale.const.astype(np.float32).reshape(-1)
    z = (zp.const.astype(np.int64).reshape(-1) if zp is not None else np.zeros(1, np.int64))
    if not np.all(np.isfinite(s)) or not np.all(s > 0):
        return "its scale is not finite and positive"
    if s.size != z.size and z.size != 1:
        return "its scale and zero point differ in size"
    z = np.broadcast_to(z, s.shape).copy() if z.size == 1 else z
    rank = quantized.type.rank
    axis = None if s.size == 1 else node.attr("axis", 1) % max(rank, 1)
    if node.attr("block_size", 0):
        return "it is block-quantized"
    return QParams(s, z, dtype, axis)


def dequantized(value: Value | None) -> tuple[Node, QParams] | None:
    """The DequantizeLinear producing ``value`` (with static parameters) and its parameters."""
    node = value.producer if value is not None else None
    if not is_op(node, "DequantizeLinear"):
        return None
    params = qparams(node)
    return None if isinstance(params, str) else (node, params)


def activation_input(value: Value | None, what: str) -> tuple[Value, QParams] | str:
    """``value`` as ``DequantizeLinear(q)`` of a per-tensor int8/uint8 tensor: ``(q, params)``."""
    found = dequantized(value)
    if found is None:
        return f"{what} is not dequantized from an integer tensor"
    node, params = found
    if params.dtype.name not in QUANTIZED_DTYPES:
        return f"{what} is dequantized from {params.dtype.name}, not int8/uint8"
    if not params.per_tensor:
        return f"{what} is quantized per axis; activations must be per tensor"
    return node.input(0), params


@dataclass(frozen=True)
class Weight:
    """A constant integer weight, possibly transposed on its way to the op, with its parameters."""

    data: np.ndarray
    params: QParams
    source: Value | None  # the constant holding ``data`` unchanged, when there is one


def constant_weight(value: Value | None) -> Weight | str:
    """``value`` as ``DequantizeLinear(const q)``, possibly through a ``Transpose``: the integer data
    (transposed like ``value``) and the parameters (axis moved with the transposition)."""
    perm = None
    node = value.producer if value is not None else None
    if is_op(node, "Transpose"):
        perm = node.attr("perm") or tuple(reversed(range(node.input(0).type.rank)))
        value = node.input(0)
    found = dequantized(value)
    if found is None or not found[0].input(0).is_const:
        return "the weight is not a dequantized constant"
    dq, params = found
    if params.dtype.name not in QUANTIZED_DTYPES:
        return f"the weight is {params.dtype.name}, not int8/uint8"
    data, source = dq.input(0).const, dq.input(0)
    if perm is not None:
        source = None
        data = np.ascontiguousarray(np.transpose(data, perm))
        if params.axis is not None:
            params = QParams(params.scale, params.zero_point, params.dtype, list(perm).index(params.axis))
    return Weight(data, params, source)


def uniform_zero_point(params: QParams, what: str) -> int | str:
    if np.any(params.zero_point != params.zero_point[0]):
        return f"{what} has different zero points per channel (the integer ops take one)"
    return int(params.zero_point[0])


def channel_scales(params: QParams, axis: int, channels: int, what: str) -> np.ndarray | str:
    """The float64 scale of each of ``channels`` channels along ``axis`` (per tensor broadcasts)."""
    if params.per_tensor:
        return np.full(channels, params.s, np.float64)
    if params.axis != axis or params.scale.size != channels:
        return f"{what} is quantized along axis {params.axis}, not per output channel (axis {axis})"
    return params.scale.astype(np.float64)


def multipliers(reals: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]] | str:
    """``quantize_multipliers`` of float64 reals; one entry when they are all equal."""
    reals = np.asarray(reals, np.float64).reshape(-1)
    if np.all(reals == reals[0]):
        reals = reals[:1]
    try:
        return quantize_multipliers(reals)
    except ValueError as exc:
        return str(exc)


def add_multipliers(real_a: float, real_b: float) -> tuple[int, int, int] | str:
    """``(Ma, Mb, shift)`` sharing one shift: the larger real gets the full Q31 precision."""
    try:
        _, shift = quantize_multiplier(max(abs(real_a), abs(real_b)))
    except ValueError as exc:
        return str(exc)
    ma, mb = (int(np.floor(abs(r) * 2.0**shift + 0.5)) * (1 if r >= 0 else -1) for r in (real_a, real_b))
    if max(abs(ma), abs(mb)) >= 1 << 31:
        return "the rescaling multipliers do not fit in 31 bits"
    return ma, mb, shift


def quantize_float(value: float, params: QParams) -> int:
    """QuantizeLinear of one float (float32 division, round half to even), unsaturated."""
    return int(np.rint(np.float32(value) / np.float32(params.s))) + params.z


def activation_clamp(act: Node | None, out: QParams) -> tuple[int, int] | str:
    """The output clamp of a fused ``Relu``/``Clip`` (or none) in the output's quantized domain."""
    lo, hi = out.qmin, out.qmax
    if act is None:
        return lo, hi
    if act.op == "Relu":
        return max(lo, out.z), hi
    bounds = []
    for i, default in ((1, -FLOAT_MAX), (2, FLOAT_MAX)):
        v = act.input(i)
        if v is not None and not (v.is_const and v.const.size == 1):
            return "the Clip bounds are not constants"
        bounds.append(default if v is None else float(v.const.reshape(-1)[0]))
    if bounds[0] > -FLOAT_MAX:
        lo = max(lo, min(hi, quantize_float(bounds[0], out)))
    if bounds[1] < FLOAT_MAX:
        hi = min(hi, max(lo, quantize_float(bounds[1], out)))
    return lo, hi


def requantize_table(inp: QParams, out: QParams, node: Node | None = None, data_index: int = 0,
                     clamp: tuple[int, int] | None = None) -> np.ndarray | str:
    """The 256-entry table ``Q_out(f(DQ_in(code)))`` for every code of the input's type, with ``f`` the
    op ``node`` (its other inputs constants) evaluated in float64, or the identity when ``node`` is None.
    Rounds half to even like QuantizeLinear, then saturates (and clamps) to the output's range."""
    lo, hi = QRANGE[inp.dtype.name]
    codes = np.arange(lo, hi + 1, dtype=np.int64)
    real = ((codes - inp.z).astype(np.float32) * np.float32(inp.s)).astype(np.float64)
    if node is not None:
        args = [None if v is None else v.const for v in node.inputs]
        args[data_index] = real
        try:
            with np.errstate(all="ignore"):
                real = np.asarray(evaluate_node(node, args)[0], np.float64).reshape(-1)
        except ReferenceError as exc:
            return f"the reference cannot evaluate it on the table's codes ({exc})"
        if real.shape != codes.shape:
            return "it is not elementwise"
        if np.any(np.isnan(real)):
            return "it is NaN for some input codes"
    with np.errstate(over="ignore"):
        q = np.rint(real / out.s) + out.z
    cmin, cmax = clamp if clamp is not None else (out.qmin, out.qmax)
    return np.clip(q, cmin, cmax).astype(np.int64)

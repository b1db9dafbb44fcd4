"""Shared checks and helpers of the cpu target's integer lowering (see ``emit_quant``)."""

from __future__ import annotations

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.opinfo import DOMAIN
from lowering.quantized import MAX_SHIFT, QRANGE

from .registry import QUANT_TYPES, EmitContext

ITEM_BYTES = 64  # upper bound of sizeof(lw_qgemm_item)
#: depthwise kernels up to this many taps run the direct float-FMA loop (exact while taps * 255^2 < 2^24);
#: larger ones go through im2col + the int8 GEMM like grouped convolutions
DEPTHWISE_MAX_TAPS = 256
INT8_GEMM_OPS = frozenset({f"{DOMAIN}::QConv", f"{DOMAIN}::QMatMul", "MatMulInteger", "ConvInteger"})


def _u32(x: int) -> int:
    """x modulo 2^32 as a signed int32 (C literal of a wrapped correction)."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


def _i64(x: int) -> str:
    x = int(x)
    return f"INT64_C({x})" if x != -(1 << 63) else "INT64_MIN"


def _dtype(v: Value | None) -> DType | None:
    return None if v is None or v.type is None else v.type.dtype


def _as_ints(value) -> list[int] | None:
    """An int or a sequence of ints as a list (None when absent)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    if isinstance(value, np.ndarray):
        return [int(v) for v in value.reshape(-1)]
    return [int(v) for v in value]


# --- checks -----------------------------------------------------------------------------------------


def _check_types(node: Node, inputs: dict[int, tuple[DType, ...]], out=QUANT_TYPES) -> str | None:
    for index, allowed in inputs.items():
        v = node.input(index)
        if v is None:
            continue
        if v.type is None or v.type.dtype not in allowed:
            kind = v.type.dtype.value if v.type is not None else "untyped"
            names = " or ".join(d.value for d in allowed)
            return f"input {index} '{v.name}' is {kind}; the cpu {node.op} takes {names}"
    y = node.output
    if y.type is None or y.type.dtype not in out:
        kind = y.type.dtype.value if y.type is not None else "untyped"
        return f"output '{y.name}' is {kind}; the cpu {node.op} writes {' or '.join(d.value for d in out)}"
    return None


def _check_zero_point(node: Node, attr: str, dtype: DType) -> str | None:
    z = node.attr(attr, 0)
    lo, hi = QRANGE[dtype.value]
    if not isinstance(z, (int, np.integer)) or not lo <= z <= hi:
        return f"{attr} {z!r} is not a {dtype.value} value"
    return None


def _check_finish(node: Node, channels: int | None, lut: bool = True) -> str | None:
    """The requantisation attributes: multiplier/shift (1 or ``channels`` entries; None: scalar-only),
    clamp bounds inside the output type, a 256-entry LUT."""
    mult, shift = _as_ints(node.attr("multiplier")), _as_ints(node.attr("shift"))
    if mult is None or shift is None:
        return f"{node.op} needs multiplier and shift attributes"
    if len(mult) != len(shift):
        return f"{node.op} has {len(mult)} multipliers but {len(shift)} shifts"
    allowed = (1,) if channels is None else (1, channels)
    if len(mult) not in allowed:
        return f"{node.op} has {len(mult)} multipliers; expected {' or '.join(map(str, allowed))}"
    reason = _check_shifts(node, shift) or _check_multipliers(node, mult)
    return reason or _check_clamp(node, lut)


def _check_shifts(node: Node, shifts: list[int]) -> str | None:
    bad = [s for s in shifts if not 1 <= s <= MAX_SHIFT]
    if bad:
        return f"{node.op} shift {bad[0]} is outside [1, {MAX_SHIFT}]"
    return None


def _check_multipliers(node: Node, mults: list[int]) -> str | None:
    bad = [m for m in mults if not -(1 << 31) <= m < (1 << 31)]
    if bad:
        return f"{node.op} multiplier {bad[0]} does not fit in int32"
    return None


def _check_clamp(node: Node, lut: bool = True) -> str | None:
    out = node.output.type.dtype.value
    lo, hi = QRANGE[out]
    cmin, cmax = node.attr("clamp_min"), node.attr("clamp_max")
    if cmin is None or cmax is None:
        return f"{node.op} needs clamp_min and clamp_max attributes"
    if not (lo <= cmin <= hi and lo <= cmax <= hi):
        return f"{node.op} clamp [{cmin}, {cmax}] is not inside the {out} range [{lo}, {hi}]"
    if not isinstance(node.attr("out_zero_point", 0), (int, np.integer)):
        return f"{node.op} out_zero_point must be an int"
    table = node.attr("lut")
    if lut and table is not None and len(table) not in (0, 256):
        return f"{node.op} lut has {len(table)} entries; expected 256"
    return None


def _requant_arrays(node: Node, channels: int, bias: np.ndarray | None = None) -> np.ndarray:
    """[4][channels] int64: bias, multiplier, 2^(shift-1), shift per channel (per-tensor ones repeated)."""
    mult = np.asarray(_as_ints(node.attr("multiplier")), np.int64)
    shift = np.asarray(_as_ints(node.attr("shift")), np.int64)
    mult = np.broadcast_to(mult, (channels,)) if mult.size == 1 else mult
    shift = np.broadcast_to(shift, (channels,)) if shift.size == 1 else shift
    b = np.zeros(channels, np.int64) if bias is None else np.broadcast_to(bias.astype(np.int64), (channels,))
    return np.stack([b, mult, np.left_shift(np.int64(1), shift - 1), shift]).astype(np.int64)


def _lut_bytes(node: Node) -> np.ndarray | None:
    table = node.attr("lut")
    if table is None or len(table) == 0:
        return None
    return np.asarray(table, np.int64).astype(node.output.type.dtype.numpy).view(np.uint8)


def _epilogue(ctx: EmitContext, node: Node, prm: np.ndarray, lut: bool = True) -> str:
    """A C initializer for lw_qepi."""
    table = _lut_bytes(node) if lut else None
    lut_ptr = "NULL" if table is None else ctx.weights(table, "uint8_t")
    lut_xor = 0x80 if node.output.type.dtype is DType.INT8 else 0
    return (
        f"{{{ctx.weights(prm.reshape(-1), 'int64_t')}, {prm.shape[1]}, "
        f"{_i64(node.attr('out_zero_point', 0))}, {_i64(node.attr('clamp_min'))}, "
        f"{_i64(node.attr('clamp_max'))}, {lut_ptr}, {lut_xor}}}"
    )


def _const_bias(node: Node, index: int, size: int, what: str) -> tuple[np.ndarray | None, str | None]:
    b = node.input(index)
    if b is None:
        return None, None
    if not b.is_const:
        return None, f"{node.op} {what} must be a constant on the cpu target"
    if b.type is None or b.type.dtype is not DType.INT32:
        return None, f"{node.op} {what} must be int32"
    data = b.const
    if data.size == 1:
        return data.reshape(-1).astype(np.int64), None
    if data.size != size or data.shape[-1] != size:
        return None, f"{node.op} {what} of shape {data.shape} is not one value per output channel ({size})"
    return data.reshape(-1).astype(np.int64), None


# --- QConv ------------------------------------------------------------------------------------------


def _wrap_array(values: np.ndarray) -> np.ndarray:
    """int64 values modulo 2^32 as int32."""
    return ((values.astype(np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


# --- elementwise: QAdd, QMul, QLut --------------------------------------------------------------------

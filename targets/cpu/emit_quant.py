"""Integer (quantized) op lowering for the cpu target (kernels in ``kernels_quant.c``).

The ops are those of :mod:`lowering.quantized` (QConv, QMatMul, QAdd, QMul, QAveragePool, QLut) plus the
standard QuantizeLinear / DequantizeLinear at the float boundaries; every result is bit-identical to
:mod:`lowering.reference.quantized_ops`.

- QConv (1-D / 2-D, groups, strides, pads, dilations): the weights (int8, or uint8 moved to int8 by -128)
  are packed at compile time as int8 GEMM A panels per group; the input bytes (+128 when int8, so they are
  unsigned) are im2col'ed at run time into B panels, padding with the input zero point. Since
  ``sum (x - zx)(w - zw) = sum x'w' - zw' sum x' - zx' sum w' + K zx' zw'`` (x' = x + 128 or x, zx'
  likewise, w' and zw' the int8 weights and zero point), the weight sums and the constant fold into one
  int32 correction per output channel computed here; a nonzero weight zero point adds a per-position
  correction from the column sums at run time. Everything is modulo 2^32, so the corrected accumulator is
  exactly the reference's wrapped int32 sum. Depthwise convs use a direct int32 loop.
- QMatMul (numpy matmul broadcasting): A is made unsigned (+128 when int8), B signed (-128 when uint8);
  constant operands are packed at compile time, runtime ones into the workspace with their row / column
  sums. Multipliers per tensor or per output column.
- QAdd, QMul, QLut: one loop nest per node over the compile-time-collapsed broadcast, int64 arithmetic.
- QAveragePool: window sums of ``x - zx`` (uniform counts, so no per-window divisor), then requantised.
- QuantizeLinear: float32 ``x / scale``, round half to even (``rintf``), saturate; DequantizeLinear:
  ``float(x - zp) * scale``; both per tensor or per axis, scale and zero point constants.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.opinfo import DOMAIN, window_geometry
from lowering.quantized import MAX_SHIFT, QRANGE

from .emit_elementwise import PARALLEL_MIN, collapse_broadcast
from .emit_linear import CONV_FIELDS, conv_geometry
from .pack import qpack_a, qpack_b
from .registry import QUANT_TYPES, EmitContext, KernelCode, align, c_longs, numel, register

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


def check_qconv(node: Node) -> str | None:
    x, w = node.input(0), node.input(1)
    reason = _check_types(node, {0: QUANT_TYPES, 1: QUANT_TYPES, 2: (DType.INT32,)})
    if reason:
        return reason
    if x.type.rank not in (3, 4):
        return (
            f"only 1-D and 2-D convolutions (3-D or 4-D tensors) are supported by the cpu target, "
            f"got a rank-{x.type.rank} input"
        )
    if not w.is_const:
        return "QConv weights must be a constant on the cpu target"
    m = w.type.shape[0]
    reason = _check_zero_point(node, "x_zero_point", x.type.dtype)
    reason = reason or _check_zero_point(node, "w_zero_point", w.type.dtype)
    reason = reason or _const_bias(node, 2, m, "bias")[1]
    return reason or _check_finish(node, m)


def _is_depthwise(g: dict) -> bool:
    return g["G"] == g["C"] and g["G"] > 1


def _int8_weights(w: Value, zero_point: int) -> tuple[np.ndarray, int]:
    """The weights as int8 values (int64 array) and their zero point, uint8 ones moved down by 128."""
    shift = -128 if w.type.dtype is DType.UINT8 else 0
    return w.const.astype(np.int64) + shift, zero_point + shift


@register(f"{DOMAIN}::QConv", check=check_qconv, dtypes=None)
def emit_qconv(ctx: EmitContext, node: Node) -> KernelCode:
    g, macs = conv_geometry(node)
    x, w, y = node.input(0), node.input(1), node.output
    x_int8 = x.type.dtype is DType.INT8
    zx = int(node.attr("x_zero_point", 0))
    bias, _ = _const_bias(node, 2, g["M"], "bias")
    prm = _requant_arrays(node, g["M"], bias)
    epi = _epilogue(ctx, node, prm)
    geom = c_longs(g[k] for k in CONV_FIELDS)
    lines = [f"const lw_qepi e = {epi};"]
    wv, zw = _int8_weights(w, int(node.attr("w_zero_point", 0)))
    out = ctx.out(y, "uint8_t")
    xp = ctx.ptr(x, "uint8_t")
    if _is_depthwise(g) and g["KH"] * g["KW"] <= DEPTHWISE_MAX_TAPS:
        taps = g["KH"] * g["KW"]
        wd = (wv - zw).reshape(g["M"], taps).astype(np.float32)  # |w - zw| <= 255: exact
        hp = (g["OH"] - 1) * g["SH"] + (g["KH"] - 1) * g["DH"] + 1
        wp = max(g["PW"] + g["W"], (g["OW"] - 1) * g["SW"] + (g["KW"] - 1) * g["DW"] + 1)
        vec = ctx.isa.vec
        slot = align((hp * wp + 2 * vec + g["OH"] * g["OW"] + vec) * 4)
        lines += [
            f"static const lw_conv_geom g = {geom};",
            f"lw_qdepthwise2d(ctx->nt, &g, {xp}, {int(x_int8)}, {zx}, {ctx.weights(wd)}, {out}, "
            f"ctx->ws, {slot}, &e);",
        ]
        return KernelCode("\n".join(lines), flops=2 * g["N"] * macs, workspace=g["M"] * slot)
    groups, m = g["G"], g["M"]
    k = g["C"] // groups * g["KH"] * g["KW"]
    # x' = x + 128 for int8 inputs (the unsigned operand):
    # sum (x - zx)(w - zw) = sum x'w - zw sum x' - zx' sum w + K zx' zw
    zx_s = zx + (128 if x_int8 else 0)
    wm = wv.reshape(m, k)
    rowc = np.array([_u32(-zx_s * int(s) + k * zx_s * zw) for s in wm.sum(axis=1)], np.int32)
    rowc_ptr = ctx.weights(rowc, "int32_t") if rowc.any() else "NULL"
    packed = np.concatenate([qpack_a(wg, ctx.isa.qmr) for wg in wm.reshape(groups, m // groups, k)])
    flip = 0x80 if x_int8 else 0
    lines += [
        f"static const lw_qconv_geom q = {{{geom}, {flip}, {zx & 0xFF}, {_u32(-zw)}}};",
        f"lw_qconv2d(ctx->nt, &q, {xp}, {ctx.weights(packed, 'uint8_t')}, {rowc_ptr}, {out}, ctx->ws, &e);",
    ]
    qnr = ctx.isa.qnr
    panels = -(-(g["OH"] * g["OW"]) // qnr)
    k4 = -(-k // 4)
    workspace = align(groups * ITEM_BYTES) + align(groups * panels * qnr * k4 * 4)
    if zw:
        workspace += groups * panels * qnr * 4
    return KernelCode("\n".join(lines), flops=2 * g["N"] * macs, workspace=workspace)


# --- QMatMul ----------------------------------------------------------------------------------------


def _matmul_shapes(node: Node):
    a, b = node.input(0), node.input(1)
    sa = (1,) + a.type.shape if a.type.rank == 1 else a.type.shape
    sb = b.type.shape + (1,) if b.type.rank == 1 else b.type.shape
    return sa, sb


def check_qmatmul(node: Node) -> str | None:
    reason = _check_types(node, {0: QUANT_TYPES, 1: QUANT_TYPES, 2: (DType.INT32,)})
    if reason:
        return reason
    a, b = node.input(0), node.input(1)
    if a.type.rank < 1 or b.type.rank < 1:
        return "QMatMul needs operands of rank 1 or more"
    sa, sb = _matmul_shapes(node)
    n = sb[-1]
    channels = None if b.type.rank == 1 else n
    reason = _check_zero_point(node, "a_zero_point", a.type.dtype)
    reason = reason or _check_zero_point(node, "b_zero_point", b.type.dtype)
    if reason:
        return reason
    if b.type.rank == 1 and node.input(2) is not None and node.input(2).type.shape not in ((), (1,)):
        return "QMatMul with a 1-D B takes a scalar bias only"
    reason = _const_bias(node, 2, n, "bias")[1]
    if sa[-1] >= 1 << 24:
        return f"QMatMul K = {sa[-1]} is too large"
    return reason or _check_finish(node, channels)


@register(f"{DOMAIN}::QMatMul", check=check_qmatmul, dtypes=None)
def emit_qmatmul(ctx: EmitContext, node: Node) -> KernelCode:
    _, sb = _matmul_shapes(node)
    n = sb[-1]
    bias, _ = _const_bias(node, 2, n, "bias")
    per_column = len(_as_ints(node.attr("multiplier"))) > 1
    channels = n if node.input(1).type.rank > 1 else 1
    prm = _requant_arrays(node, channels, bias)
    if not per_column and (bias is None or bias.size == 1):
        prm = prm[:, :1]
    channel_mode = 1 if prm.shape[1] > 1 else 2  # lw_qgemm_shape.channels: per column or per tensor
    za, zb = int(node.attr("a_zero_point", 0)), int(node.attr("b_zero_point", 0))
    return _int_matmul(ctx, node, za, zb, _epilogue(ctx, node, prm), channel_mode, out32=False)


def _int_matmul(
    ctx: EmitContext, node: Node, za: int | str, zb: int | str, epilogue: str, channel_mode: int, out32: bool
) -> KernelCode:
    """The int8 GEMM of ``node.input(0) @ node.input(1)`` (numpy matmul broadcasting) minus the zero points
    ``za`` / ``zb``: ints, or C expressions (an ``int32_t`` read at run time, e.g. a zero point produced
    by DynamicQuantizeLinear). The output is requantised by ``epilogue`` or, with ``out32``, the int32
    accumulator itself."""
    a, b, y = node.input(0), node.input(1), node.output
    sa, sb = _matmul_shapes(node)
    m, k, n = sa[-2], sa[-1], sb[-1]
    batch_a, batch_b = sa[:-2], sb[:-2]
    qmr, qnr = ctx.isa.qmr, ctx.isa.qnr
    k4 = -(-k // 4)
    # A' = A + 128 when int8 (unsigned operand), B' = B - 128 when uint8 (signed operand)
    flip_a = 0x80 if a.type.dtype is DType.INT8 else 0
    flip_b = 0x80 if b.type.dtype is DType.UINT8 else 0
    lines = [f"const lw_qepi e = {epilogue};", "lw_qgemm_item *items = (lw_qgemm_item *)ctx->ws;"]
    runtime_za, runtime_zb = isinstance(za, str), isinstance(zb, str)
    if runtime_za:
        lines.append(f"const int32_t za = (int32_t)({za}) + {128 if flip_a else 0};")
        za_c, need_colc = "za", True
    else:
        za = za + (128 if flip_a else 0)
        za_c, need_colc = str(za), za != 0
    if runtime_zb:
        lines.append(f"const int32_t zb = (int32_t)({zb}) - {128 if flip_b else 0};")
        zb_c, need_rowc = "zb", True
    else:
        zb = zb - (128 if flip_b else 0)
        zb_c, need_rowc = str(zb), zb != 0
    # sum (a-za)(b-zb) = sum A'B' - zb' rowsum(A') - za' colsum(B') + K za' zb'  (all modulo 2^32)
    if runtime_za or runtime_zb:
        row_scale = f"(int32_t)(0u - (uint32_t){zb_c})"
        col_scale = f"(int32_t)(0u - (uint32_t){za_c})"
        col_add = f"(int32_t)((uint32_t){k} * (uint32_t){za_c} * (uint32_t){zb_c})"
    else:
        row_scale, col_scale, col_add = _u32(-zb), _u32(-za), _u32(k * za * zb)
    if numel(batch_b) == 1:
        rows = numel(batch_a) * m
        a_count, b_count, count = 1, 1, 1
        a_index, b_index = [0], [0]
    else:
        out_batch = np.broadcast_shapes(batch_a, batch_b)
        a_index = np.broadcast_to(np.arange(numel(batch_a)).reshape(batch_a), out_batch).reshape(-1).tolist()
        b_index = np.broadcast_to(np.arange(numel(batch_b)).reshape(batch_b), out_batch).reshape(-1).tolist()
        rows, a_count, b_count, count = m, numel(batch_a), numel(batch_b), len(a_index)
    a_panels, b_panels = -(-rows // qmr), -(-n // qnr)
    a_size, b_size = a_panels * qmr * k4 * 4, b_panels * qnr * k4 * 4
    workspace = align(count * ITEM_BYTES)
    # operand A
    if a.is_const:
        mats = (a.const.astype(np.int64) + (128 if flip_a else 0)).reshape(a_count, rows, k)
        lines.append(
            f"const uint8_t *apk = {ctx.weights(np.concatenate([qpack_a(x, qmr) for x in mats]), 'uint8_t')};"
        )
        sums = np.concatenate([np.pad(x.sum(axis=1), (0, a_panels * qmr - rows)) for x in mats])
        if need_rowc and runtime_zb:
            lines += [
                f"int32_t *rowc = (int32_t *)(ctx->ws + {workspace});",
                f"lw_qcorr(rowc, {ctx.weights(_wrap_array(sums), 'int32_t')}, {sums.size}, {row_scale}, 0);",
            ]
            workspace += align(sums.size * 4)
        elif need_rowc:
            lines.append(f"const int32_t *rowc = {ctx.weights(_wrap_array(sums * -zb), 'int32_t')};")
        else:
            lines.append("const int32_t *rowc = NULL;")
    else:
        lines.append(f"uint8_t *apk = ctx->ws + {workspace};")
        workspace += align(a_count * a_size)
        if need_rowc:
            lines.append(f"int32_t *rowc = (int32_t *)(ctx->ws + {workspace});")
            workspace += align(a_count * a_panels * qmr * 4)
        else:
            lines.append("int32_t *rowc = NULL;")
        lines.append(
            f"lw_qpack_a(ctx->nt, {ctx.ptr(a, 'uint8_t')}, {rows * k}, {a_count}, {k}, 1, {rows}, {k}, "
            f"{flip_a}, 0, apk, rowc, {row_scale}, 0);"
        )
    # operand B
    if b.is_const:
        mats = (b.const.astype(np.int64) - (128 if flip_b else 0)).reshape(b_count, k, n)
        lines.append(
            f"const uint8_t *bpk = {ctx.weights(np.concatenate([qpack_b(x, qnr) for x in mats]), 'uint8_t')};"
        )
        sums = np.concatenate([np.pad(x.sum(axis=0), (0, b_panels * qnr - n)) for x in mats])
        if need_colc and (runtime_za or runtime_zb):
            lines += [
                f"int32_t *colc = (int32_t *)(ctx->ws + {workspace});",
                f"lw_qcorr(colc, {ctx.weights(_wrap_array(sums), 'int32_t')}, {sums.size}, {col_scale}, "
                f"{col_add});",
            ]
            workspace += align(sums.size * 4)
        elif need_colc:
            colc = np.concatenate(
                [np.pad(x.sum(axis=0) * -za + k * za * zb, (0, b_panels * qnr - n)) for x in mats]
            )
            lines.append(f"const int32_t *colc = {ctx.weights(_wrap_array(colc), 'int32_t')};")
        else:
            lines.append("const int32_t *colc = NULL;")
    else:
        lines.append(f"uint8_t *bpk = ctx->ws + {workspace};")
        workspace += align(b_count * b_size)
        if need_colc:
            lines.append(f"int32_t *colc = (int32_t *)(ctx->ws + {workspace});")
            workspace += align(b_count * b_panels * qnr * 4)
        else:
            lines.append("int32_t *colc = NULL;")
        lines.append(
            f"lw_qpack_b(ctx->nt, {ctx.ptr(b, 'uint8_t')}, {k * n}, {b_count}, {n}, 1, {k}, {n}, "
            f"{flip_b}, 1, bpk, colc, {col_scale}, {col_add});"
        )
    lines.append(f"uint8_t *y = {ctx.out(y, 'uint8_t')};")
    esize = 4 if out32 else 1
    index = {}
    for name, table in (("a", a_index), ("b", b_index)):
        if table == list(range(count)):
            index[name] = "i"
        elif len(set(table)) == 1:
            index[name] = str(table[0])
        else:
            lines.append(f"static const long {name}_index[{count}] = {c_longs(table)};")
            index[name] = f"{name}_index[i]"
    lines += [
        f"for (long i = 0; i < {count}; i++) {{",
        f"    items[i].a = apk + {index['a']} * {a_size};",
        f"    items[i].b = bpk + {index['b']} * {b_size};",
        f"    items[i].c = y + i * {rows * n * esize};",
        f"    items[i].rowc = rowc ? rowc + {index['a']} * {a_panels * qmr} : NULL;",
        f"    items[i].colc = colc ? colc + {index['b']} * {b_panels * qnr} : NULL;",
        "    items[i].chan0 = 0;",
        "}",
        f"const lw_qgemm_shape s = {{{rows}, {n}, {k4}, {n}, 1, {channel_mode}, e, {int(out32)}}};",
        f"lw_qgemm(ctx->nt, &s, items, {count});",
    ]
    return KernelCode("\n".join(lines), flops=2 * count * rows * n * k, workspace=workspace)


# --- MatMulInteger, ConvInteger, DynamicQuantizeLinear (ONNX Runtime's dynamic quantization) ---------

#: the epilogue of the int32-output GEMMs (unused: lw_qgemm_shape.out32 skips it)
NO_EPILOGUE = "{NULL, 0, 0, 0, 0, NULL, 0}"


def _zero_point(ctx: EmitContext, node: Node, index: int) -> int | str:
    """Input ``index`` (an optional zero point of one value, or of equal constant values) as an int, or
    as a C expression reading it at run time."""
    v = node.input(index)
    if v is None:
        return 0
    if v.is_const:
        return int(v.const.reshape(-1)[0])
    return f"*{ctx.ptr(v)}"


def _check_zero_point_input(node: Node, index: int, operand: int, what: str) -> str | None:
    """A zero point input: absent, or of the operand's type and one value (a runtime scalar, or a constant
    whose values are all equal; per-row / per-channel ones that differ are not supported)."""
    v = node.input(index)
    if v is None:
        return None
    kind = node.input(operand).type.dtype
    if v.type is None or v.type.dtype is not kind:
        return f"{node.op} {what} zero point must be {kind.value} like its operand"
    if v.is_const:
        values = v.const.reshape(-1)
        if values.size and (values != values[0]).any():
            return f"{node.op} {what} zero points that differ per row or channel are not supported on cpu"
        if values.size == 0:
            return f"{node.op} {what} zero point is empty"
        return None
    if numel(v.type.shape) != 1:
        return f"{node.op} runtime {what} zero point must be a single value on the cpu target"
    return None


def check_matmul_integer(node: Node) -> str | None:
    reason = _check_types(node, {0: QUANT_TYPES, 1: QUANT_TYPES}, out=(DType.INT32,))
    if reason:
        return reason
    a, b = node.input(0), node.input(1)
    if a.type.rank < 1 or b.type.rank < 1:
        return "MatMulInteger needs operands of rank 1 or more"
    sa, _ = _matmul_shapes(node)
    if sa[-1] >= 1 << 24:
        return f"MatMulInteger K = {sa[-1]} is too large"
    return _check_zero_point_input(node, 2, 0, "A") or _check_zero_point_input(node, 3, 1, "B")


@register("MatMulInteger", check=check_matmul_integer, dtypes=None)
def emit_matmul_integer(ctx: EmitContext, node: Node) -> KernelCode:
    za, zb = _zero_point(ctx, node, 2), _zero_point(ctx, node, 3)
    return _int_matmul(ctx, node, za, zb, NO_EPILOGUE, 2, out32=True)


def check_conv_integer(node: Node) -> str | None:
    reason = _check_types(node, {0: QUANT_TYPES, 1: QUANT_TYPES}, out=(DType.INT32,))
    if reason:
        return reason
    x, w = node.input(0), node.input(1)
    if x.type.rank not in (3, 4):
        return (
            f"only 1-D and 2-D convolutions (3-D or 4-D tensors) are supported by the cpu target, "
            f"got a rank-{x.type.rank} input"
        )
    if not w.is_const:
        return "ConvInteger weights must be a constant on the cpu target"
    if node.input(3) is not None and not node.input(3).is_const:
        return "ConvInteger weight zero point must be a constant on the cpu target"
    return _check_zero_point_input(node, 2, 0, "x") or _check_zero_point_input(node, 3, 1, "w")


@register("ConvInteger", check=check_conv_integer, dtypes=None)
def emit_conv_integer(ctx: EmitContext, node: Node) -> KernelCode:
    """Through lw_qconv2d (im2col + the int8 GEMM) with an int32 output and no epilogue; a runtime input
    zero point sets the padding byte and the per-channel corrections at run time."""
    g, macs = conv_geometry(node)
    x, w, y = node.input(0), node.input(1), node.output
    x_int8 = x.type.dtype is DType.INT8
    zx = _zero_point(ctx, node, 2)
    wv, zw = _int8_weights(w, _zero_point(ctx, node, 3))
    groups, m = g["G"], g["M"]
    k = g["C"] // groups * g["KH"] * g["KW"]
    wm = wv.reshape(m, k)
    packed = np.concatenate([qpack_a(wg, ctx.isa.qmr) for wg in wm.reshape(groups, m // groups, k)])
    flip = 0x80 if x_int8 else 0
    qnr = ctx.isa.qnr
    panels = -(-(g["OH"] * g["OW"]) // qnr)
    k4 = -(-k // 4)
    workspace = align(groups * ITEM_BYTES) + align(groups * panels * qnr * k4 * 4)
    if zw:
        workspace += groups * panels * qnr * 4
    workspace = align(workspace)
    geom = c_longs(g[key] for key in CONV_FIELDS)
    lines = [f"const lw_qepi e = {NO_EPILOGUE};"]
    # x' = x + 128 for int8 inputs: sum (x - zx)(w - zw) = sum x'w - zw sum x' - zx' sum w + K zx' zw
    if isinstance(zx, str):
        lines += [
            f"const int32_t zx = (int32_t)({zx}) + {128 if x_int8 else 0};",
            f"int32_t *rowc = (int32_t *)(ctx->ws + {workspace});",
            f"lw_qcorr(rowc, {ctx.weights(_wrap_array(wm.sum(axis=1)), 'int32_t')}, {m}, "
            f"(int32_t)(0u - (uint32_t)zx), (int32_t)((uint32_t){k} * (uint32_t)zx * (uint32_t){zw}));",
            f"const lw_qconv_geom q = {{{geom}, {flip}, (uint8_t)({zx}), {_u32(-zw)}, 1}};",
        ]
        workspace += align(m * 4)
    else:
        zx_s = zx + (128 if x_int8 else 0)
        rowc = np.array([_u32(-zx_s * int(t) + k * zx_s * zw) for t in wm.sum(axis=1)], np.int32)
        lines += [
            f"const int32_t *rowc = {ctx.weights(rowc, 'int32_t') if rowc.any() else 'NULL'};",
            f"static const lw_qconv_geom q = {{{geom}, {flip}, {zx & 0xFF}, {_u32(-zw)}, 1}};",
        ]
    lines.append(
        f"lw_qconv2d(ctx->nt, &q, {ctx.ptr(x, 'uint8_t')}, {ctx.weights(packed, 'uint8_t')}, rowc, "
        f"{ctx.out(y, 'uint8_t')}, ctx->ws, &e);"
    )
    return KernelCode("\n".join(lines), flops=2 * g["N"] * macs, workspace=workspace)


def check_dynamic_quantize(node: Node) -> str | None:
    reason = _check_types(node, {0: (DType.FLOAT32,)}, out=(DType.UINT8,))
    if reason:
        return reason
    expected = (None, DType.FLOAT32, DType.UINT8)
    for index in (1, 2):
        v = node.outputs[index] if len(node.outputs) > index else None
        if v is not None and (v.type is None or v.type.dtype is not expected[index]
                              or numel(v.type.shape) != 1):
            return f"DynamicQuantizeLinear output {index} must be a {expected[index].value} scalar"
    return None


@register("DynamicQuantizeLinear", check=check_dynamic_quantize, dtypes=None, outputs=3)
def emit_dynamic_quantize(ctx: EmitContext, node: Node) -> KernelCode:
    x = node.input(0)
    outs = list(node.outputs) + [None] * (3 - len(node.outputs))
    ptrs, scratch = [], 0
    for v, ctype in zip(outs, ("uint8_t", "float", "uint8_t")):
        if v is None or v.type is None:  # an omitted output: somewhere to write it
            ptrs.append(f"(({ctype} *)(ctx->ws + {scratch}))")
            scratch += 64
        else:
            ptrs.append(ctx.out(v, ctype))
    n = numel(x.type.shape)
    body = f"lw_dynamic_quantize(ctx->nt, {ctx.ptr(x)}, {n}, {ptrs[0]}, {ptrs[1]}, {ptrs[2]});"
    return KernelCode(body, flops=3 * n, workspace=scratch)


def _wrap_array(values: np.ndarray) -> np.ndarray:
    """int64 values modulo 2^32 as int32."""
    return ((values.astype(np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int32)


# --- elementwise: QAdd, QMul, QLut --------------------------------------------------------------------


def _elementwise(ctx: EmitContext, node: Node, inputs: list[Value], element: list[str]) -> KernelCode:
    """A loop nest over the broadcast ``inputs`` (read as ``int64_t v0, v1, ...``); ``element`` computes
    ``uint8_t out`` from them."""
    shape = node.output.type.shape
    dims, strides = collapse_broadcast(shape, [v.type.shape for v in inputs])
    inner, outer = dims[-1], dims[:-1]
    rows = numel(outer)
    lines = [f"uint8_t *y = {ctx.out(node.output, 'uint8_t')};"]
    for i, v in enumerate(inputs):
        lines.append(f"const {'int8_t' if v.type.dtype is DType.INT8 else 'uint8_t'} *x{i} = {ctx.ptr(v)};")
    task = []
    if outer:
        task.append("long rem = row;")
        for d in reversed(range(len(outer))):
            task.append(f"const long c{d} = rem % {outer[d]}; rem /= {outer[d]};")
    for i in range(len(inputs)):
        offset = " + ".join(f"c{d} * {strides[i][d]}" for d in range(len(outer)) if strides[i][d]) or "0"
        task.append(
            f"const {'int8_t' if inputs[i].type.dtype is DType.INT8 else 'uint8_t'} *x{i}r = x{i} + {offset};"
        )
    task.append(f"uint8_t *yr = y + row * {inner};")
    task.append(f"for (long j = 0; j < {inner}; j++) {{")
    for i in range(len(inputs)):
        step = "j" if strides[i][-1] else "0"
        task.append(f"    const int64_t v{i} = x{i}r[{step}];")
    task += ["    " + line for line in element] + ["    yr[j] = out;", "}"]
    if numel(shape) >= PARALLEL_MIN and rows > 1:
        lines.append("#pragma omp parallel for num_threads(ctx->nt) schedule(static) if (ctx->nt > 1)")
    lines.append(f"for (long row = 0; row < {rows}; row++) {{")
    lines += ["    " + line for line in task] + ["}"]
    return KernelCode("\n".join(lines), flops=numel(shape))


def _finish_code(ctx: EmitContext, node: Node) -> list[str]:
    """C statements turning ``int64_t t`` (already shifted) into ``uint8_t out``: zero point, clamp, LUT."""
    lines = [
        f"int64_t q = t + {_i64(node.attr('out_zero_point', 0))};",
        f"q = q < {node.attr('clamp_min')} ? {node.attr('clamp_min')} : q;",
        f"q = q > {node.attr('clamp_max')} ? {node.attr('clamp_max')} : q;",
    ]
    table = _lut_bytes(node)
    if table is None:
        return lines + ["const uint8_t out = (uint8_t)q;"]
    xor = 0x80 if node.output.type.dtype is DType.INT8 else 0
    return lines + [f"const uint8_t out = lut[(uint8_t)q ^ {xor}];"]


def _lut_decl(ctx: EmitContext, node: Node) -> str | None:
    table = _lut_bytes(node)
    return None if table is None else f"const uint8_t *lut = {ctx.weights(table, 'uint8_t')};"


def _scalar(node: Node, name: str) -> int | None:
    values = _as_ints(node.attr(name))
    return values[0] if values is not None and len(values) == 1 else None


def check_qadd(node: Node) -> str | None:
    reason = _check_types(node, {0: QUANT_TYPES, 1: QUANT_TYPES})
    if reason:
        return reason
    for attr in ("a_multiplier", "b_multiplier", "shift"):
        if _scalar(node, attr) is None:
            return f"QAdd needs a single {attr}"
    if not isinstance(node.attr("shift"), (int, np.integer)):
        return "QAdd shift must be an int"
    reason = _check_shifts(node, [_scalar(node, "shift")])
    reason = reason or _check_multipliers(
        node, [_scalar(node, "a_multiplier"), _scalar(node, "b_multiplier")]
    )
    return reason or _check_zero_points_any(node, ("a_zero_point", "b_zero_point")) or _check_clamp(node)


def _check_zero_points_any(node: Node, names) -> str | None:
    for name in names:
        z = node.attr(name, 0)
        if not isinstance(z, (int, np.integer)) or not -(1 << 31) <= z < (1 << 31):
            return f"{node.op} {name} {z!r} is not an int32"
    return None


def _with_lut(ctx: EmitContext, node: Node, code: KernelCode) -> KernelCode:
    decl = _lut_decl(ctx, node)
    if decl:
        code.body = decl + "\n" + code.body
    return code


@register(f"{DOMAIN}::QAdd", check=check_qadd, dtypes=None)
def emit_qadd(ctx: EmitContext, node: Node) -> KernelCode:
    shift = _scalar(node, "shift")
    ma, mb = _scalar(node, "a_multiplier"), _scalar(node, "b_multiplier")
    za, zb = node.attr("a_zero_point", 0), node.attr("b_zero_point", 0)
    element = [
        f"const uint64_t s = (uint64_t)(v0 - {_i64(za)}) * (uint64_t){_i64(ma)} + "
        f"(uint64_t)(v1 - {_i64(zb)}) * (uint64_t){_i64(mb)} + (uint64_t){_i64(1 << (shift - 1))};",
        f"const int64_t t = (int64_t)s >> {shift};",
    ] + _finish_code(ctx, node)
    return _with_lut(ctx, node, _elementwise(ctx, node, [node.input(0), node.input(1)], element))


def check_qmul(node: Node) -> str | None:
    reason = _check_types(node, {0: QUANT_TYPES, 1: QUANT_TYPES})
    if reason:
        return reason
    mult, shift = _as_ints(node.attr("multiplier")), _as_ints(node.attr("shift"))
    if not mult or not shift:
        return "QMul needs multiplier and shift attributes"
    reason = _check_shifts(node, shift[:1]) or _check_multipliers(node, mult[:1])
    return reason or _check_zero_points_any(node, ("a_zero_point", "b_zero_point")) or _check_clamp(node)


@register(f"{DOMAIN}::QMul", check=check_qmul, dtypes=None)
def emit_qmul(ctx: EmitContext, node: Node) -> KernelCode:
    mult, shift = _as_ints(node.attr("multiplier"))[0], _as_ints(node.attr("shift"))[0]
    za, zb = node.attr("a_zero_point", 0), node.attr("b_zero_point", 0)
    element = [
        f"const uint64_t p = (uint64_t)(v0 - {_i64(za)}) * (uint64_t)(v1 - {_i64(zb)});",
        f"const int64_t t = (int64_t)(p * (uint64_t){_i64(mult)} + "
        f"(uint64_t){_i64(1 << (shift - 1))}) >> {shift};",
    ] + _finish_code(ctx, node)
    return _with_lut(ctx, node, _elementwise(ctx, node, [node.input(0), node.input(1)], element))


def check_qlut(node: Node) -> str | None:
    reason = _check_types(node, {0: QUANT_TYPES})
    if reason:
        return reason
    table = node.attr("lut")
    if table is None or len(table) != 256:
        return f"QLut needs a 256-entry lut, got {0 if table is None else len(table)}"
    return None


@register(f"{DOMAIN}::QLut", check=check_qlut, dtypes=None)
def emit_qlut(ctx: EmitContext, node: Node) -> KernelCode:
    x = node.input(0)
    xor = 0x80 if x.type.dtype is DType.INT8 else 0
    element = [f"const uint8_t out = lut[(uint8_t)v0 ^ {xor}];"]
    return _with_lut(ctx, node, _elementwise(ctx, node, [x], element))


# --- QAveragePool -----------------------------------------------------------------------------------


def check_qavgpool(node: Node) -> str | None:
    reason = _check_types(node, {0: QUANT_TYPES})
    if reason:
        return reason
    x = node.input(0)
    if x.type.rank < 3:
        return "QAveragePool needs an input of rank 3 or more"
    reason = _check_zero_point(node, "x_zero_point", x.type.dtype) or _check_finish(node, None, lut=False)
    if reason:
        return reason
    shape = x.type.shape
    if node.attr("global", 0):
        if numel(shape[2:]) * 255 >= 1 << 31:
            return "QAveragePool over more than 8M positions is not supported"
        return None
    if x.type.rank not in (3, 4):
        return f"only 1-D and 2-D QAveragePool is supported by the cpu target, got a rank-{x.type.rank} input"
    kernel = node.attr("kernel_shape")
    if kernel is None:
        return "QAveragePool has no kernel_shape"
    if any(d != 1 for d in node.attr("dilations", ())):
        return "dilated QAveragePool is not supported (the reference sums undilated windows)"
    geo = window_geometry(node, tuple(shape[2:]), tuple(kernel), ceil_mode=bool(node.attr("ceil_mode", 0)))
    for size, k, o, s, dl, pb, pe in zip(
        shape[2:], kernel, geo.out, geo.strides, geo.dilations, geo.pads_begin, geo.pads_end
    ):
        if (o - 1) * s + (k - 1) * dl + 1 > size + pb + pe:
            return "QAveragePool windows must lie inside the padded input (uniform counts)"
    if numel(kernel) * 255 >= 1 << 31:
        return "QAveragePool window is too large"
    return None


@register(f"{DOMAIN}::QAveragePool", check=check_qavgpool, dtypes=None)
def emit_qavgpool(ctx: EmitContext, node: Node) -> KernelCode:
    x, y = node.input(0), node.output
    shape = x.type.shape
    x_int8 = int(x.type.dtype is DType.INT8)
    zx = int(node.attr("x_zero_point", 0))
    epi = _epilogue(ctx, node, _requant_arrays(node, 1), lut=False)
    xp, yp = ctx.ptr(x, "uint8_t"), ctx.out(y, "uint8_t")
    if node.attr("global", 0):
        body = (
            f"const lw_qepi e = {epi};\n"
            f"lw_qglobal_avgpool(ctx->nt, {xp}, {x_int8}, {zx}, {yp}, {numel(shape[:2])}, "
            f"{numel(shape[2:])}, &e);"
        )
        return KernelCode(body, flops=numel(shape))
    kernel = tuple(node.attr("kernel_shape"))
    geo = window_geometry(node, tuple(shape[2:]), kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
    lift = (lambda t, one: (one,) + tuple(t)) if len(shape) == 3 else (lambda t, one: tuple(t))
    fields = [
        numel(shape[:2]),
        *lift(shape[2:], 1),
        *lift(geo.out, 1),
        *lift(kernel, 1),
        *lift(geo.strides, 1),
        *lift(geo.dilations, 1),
        *lift(geo.pads_begin, 0),
        *lift(geo.pads_end, 0),
        0,
        1,
    ]
    body = (
        f"const lw_qepi e = {epi};\n"
        f"static const lw_pool_geom g = {c_longs(fields)};\n"
        f"lw_qavgpool2d(ctx->nt, &g, {xp}, {x_int8}, {zx}, {yp}, &e);"
    )
    return KernelCode(body, flops=numel(y.type.shape) * numel(kernel))


# --- QuantizeLinear / DequantizeLinear ----------------------------------------------------------------


def _axis_params(node: Node, rank: int) -> tuple[int, np.ndarray, np.ndarray | None] | str:
    """(axis, scale, zero point) with scale / zero point constants of 1 or shape[axis] entries."""
    scale, zp = node.input(1), node.input(2)
    if scale is None or not scale.is_const:
        return f"{node.op} scale must be a constant on the cpu target"
    if zp is not None and not zp.is_const:
        return f"{node.op} zero point must be a constant on the cpu target"
    if node.attr("block_size", 0):
        return f"blocked {node.op} (block_size) is not supported by the cpu target"
    s = scale.const.reshape(-1)
    if scale.type.dtype is not DType.FLOAT32:
        return f"{node.op} scale is {scale.type.dtype.value}; the cpu target takes float32"
    z = zp.const.reshape(-1) if zp is not None else None
    if z is not None and z.size != s.size:
        return f"{node.op} has {s.size} scales but {z.size} zero points"
    axis = node.attr("axis", 1)
    if s.size > 1:
        if not -rank <= axis < rank:
            return f"{node.op} axis {axis} is out of range for a rank-{rank} input"
        axis %= rank
        if node.input(0).type.shape[axis] != s.size:
            return f"{node.op} has {s.size} scales for an axis of size {node.input(0).type.shape[axis]}"
    return axis, s, z


def check_quantize(node: Node) -> str | None:
    reason = _check_types(node, {0: (DType.FLOAT32,)})
    if reason:
        return reason
    params = _axis_params(node, node.input(0).type.rank)
    if isinstance(params, str):
        return params
    zp = node.input(2)
    if zp is not None and zp.type.dtype is not node.output.type.dtype:
        out = node.output.type.dtype.value
        return f"QuantizeLinear zero point is {zp.type.dtype.value} but the output is {out}"
    return None


def _layout(shape: tuple[int, ...], axis: int, channels: int) -> tuple[int, int, int]:
    if channels == 1:
        return 1, 1, numel(shape)
    return numel(shape[:axis]), shape[axis], numel(shape[axis + 1 :])


@register("QuantizeLinear", check=check_quantize, dtypes=None)
def emit_quantize(ctx: EmitContext, node: Node) -> KernelCode:
    x, y = node.input(0), node.output
    axis, scale, zp = _axis_params(node, x.type.rank)
    zp = np.zeros(scale.size, np.int32) if zp is None else zp.astype(np.int32)
    outer, channels, inner = _layout(x.type.shape, axis, scale.size)
    qmin, qmax = QRANGE[y.type.dtype.value]
    sp, zpp = ctx.weights(scale.astype(np.float32)), ctx.weights(zp, "int32_t")
    xp, yp = ctx.ptr(x), ctx.out(y, "uint8_t")
    if inner == 1 and channels > 1:
        body = f"lw_quantize_last(ctx->nt, {xp}, {yp}, {outer}, {channels}, {sp}, {zpp}, {qmin}, {qmax});"
    else:
        body = f"lw_quantize(ctx->nt, {xp}, {yp}, {outer}, {channels}, {inner}, {sp}, {zpp}, {qmin}, {qmax});"
    return KernelCode(body, flops=2 * numel(x.type.shape))


def check_dequantize(node: Node) -> str | None:
    reason = _check_types(node, {0: (DType.INT8, DType.UINT8, DType.INT32)}, out=(DType.FLOAT32,))
    if reason:
        return reason
    params = _axis_params(node, node.input(0).type.rank)
    if isinstance(params, str):
        return params
    zp = node.input(2)
    if zp is not None and zp.type.dtype is not node.input(0).type.dtype:
        kind = node.input(0).type.dtype.value
        return f"DequantizeLinear zero point is {zp.type.dtype.value} but the input is {kind}"
    return None


DEQUANTIZE_KERNELS = {
    DType.INT8: "lw_dequantize_i8",
    DType.UINT8: "lw_dequantize_u8",
    DType.INT32: "lw_dequantize_i32",
}


@register("DequantizeLinear", check=check_dequantize, dtypes=None)
def emit_dequantize(ctx: EmitContext, node: Node) -> KernelCode:
    x, y = node.input(0), node.output
    axis, scale, zp = _axis_params(node, x.type.rank)
    zp = np.zeros(scale.size, np.int64) if zp is None else zp.astype(np.int64)
    outer, channels, inner = _layout(x.type.shape, axis, scale.size)
    body = (
        f"{DEQUANTIZE_KERNELS[x.type.dtype]}(ctx->nt, {ctx.ptr(x)}, {ctx.out(y)}, {outer}, {channels}, "
        f"{inner}, "
        f"{ctx.weights(scale.astype(np.float32))}, {ctx.weights(zp, 'int64_t')});"
    )
    return KernelCode(body, flops=2 * numel(x.type.shape))

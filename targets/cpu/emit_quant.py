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
  ``float(x - zp) * scale``; both per tensor, per axis or blocked, scale and zero point constants or
  run-time tensors (``emit_quant_pointwise``).
- ConvInteger with run-time weights or per-channel weight zero points: a direct int32 loop nest
  (``kernels_conv_runtime.c``); MatMulInteger takes run-time operands and scalar zero points.
"""


from __future__ import annotations

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.opinfo import DOMAIN

from .emit_conv_runtime import c_rconv_geom, check_spatial_rank, rconv_geometry
from .emit_linear import CONV_FIELDS, conv_geometry
from .emit_quant_common import (
    DEPTHWISE_MAX_TAPS,
    ITEM_BYTES,
    _as_ints,
    _check_finish,
    _check_types,
    _check_zero_point,
    _const_bias,
    _epilogue,
    _requant_arrays,
    _u32,
    _wrap_array,
)
from .pack import qpack_a, qpack_b
from .registry import QUANT_TYPES, EmitContext, KernelCode, align, batch_index, c_longs, numel, register


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
    index = batch_index(lines, count, {"a": list(a_index), "b": list(b_index)})
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


def _conv_integer_direct(node: Node) -> bool:
    """Whether a ConvInteger runs the direct int32 loop nest (``lw_conv_integer_rt``) instead of the int8
    GEMM: run-time weights or weight zero point (nothing to pack or correct at compile time), weight zero
    points that differ per output channel (no per-tensor GEMM correction), and 3-D convolutions."""
    w, zw = node.input(1), node.input(3)
    if not w.is_const or (zw is not None and not zw.is_const) or node.input(0).type.rank == 5:
        return True
    return zw is not None and zw.const.size > 1 and bool((zw.const != zw.const.reshape(-1)[0]).any())


def check_conv_integer(node: Node) -> str | None:
    reason = _check_types(node, {0: QUANT_TYPES, 1: QUANT_TYPES}, out=(DType.INT32,))
    if reason:
        return reason
    x, w = node.input(0), node.input(1)
    if not _conv_integer_direct(node):
        if x.type.rank not in (3, 4):
            return (
                f"only 1-D and 2-D convolutions (3-D or 4-D tensors) are supported by the cpu target, "
                f"got a rank-{x.type.rank} input"
            )
        return _check_zero_point_input(node, 2, 0, "x") or _check_zero_point_input(node, 3, 1, "w")
    reason = check_spatial_rank(node) or _check_zero_point_input(node, 2, 0, "x")
    if reason:
        return reason
    zw = node.input(3)
    if zw is not None:
        if zw.type is None or zw.type.dtype is not w.type.dtype:
            return f"ConvInteger w zero point must be {w.type.dtype.value} like its operand"
        if numel(zw.type.shape) not in (1, w.type.shape[0]):
            return (
                f"ConvInteger w zero point '{zw.name}' has {numel(zw.type.shape)} values; expected 1 or one "
                f"per output channel ({w.type.shape[0]})"
            )
    return None


def emit_conv_integer_direct(ctx: EmitContext, node: Node) -> KernelCode:
    """ConvInteger through the direct loop nest: the weights minus their zero point are widened to int32
    into the workspace first (once per run), then every output is one exact int64 sum."""
    fields, macs = rconv_geometry(node)
    x, w, y, zw = node.input(0), node.input(1), node.output, node.input(3)
    m = fields[2]
    kg = numel(w.type.shape[1:])
    zx = _zero_point(ctx, node, 2)
    zx_c = str(zx) if isinstance(zx, int) else f"(int32_t)({zx})"
    if zw is None:
        zterm = ""
    else:
        index = "0" if numel(zw.type.shape) == 1 else f"i / {kg}"
        zterm = f" - (int32_t){ctx.ptr(zw)}[{index}]"
    kernel = "lw_conv_integer_rt_i8" if x.type.dtype is DType.INT8 else "lw_conv_integer_rt_u8"
    body = "\n".join([
        f"static const lw_rconv_geom g = {c_rconv_geom(fields)};",
        "int32_t *wd = (int32_t *)ctx->ws;",
        f"for (long i = 0; i < {m * kg}; i++) wd[i] = (int32_t){ctx.ptr(w)}[i]{zterm};",
        f"{kernel}(ctx->nt, &g, {ctx.ptr(x)}, {zx_c}, wd, {ctx.out(y, 'int32_t')});",
    ])
    return KernelCode(body, flops=2 * fields[0] * macs, workspace=m * kg * 4)


@register("ConvInteger", check=check_conv_integer, dtypes=None)
def emit_conv_integer(ctx: EmitContext, node: Node) -> KernelCode:
    """Through lw_qconv2d (im2col + the int8 GEMM) with an int32 output and no epilogue; a runtime input
    zero point sets the padding byte and the per-channel corrections at run time. Run-time weights,
    per-channel weight zero points and 3-D convs take the direct loop (``emit_conv_integer_direct``)."""
    if _conv_integer_direct(node):
        return emit_conv_integer_direct(ctx, node)
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

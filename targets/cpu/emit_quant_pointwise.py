"""Integer pointwise ops for the cpu target: QAdd, QMul, QLut, QAveragePool, QuantizeLinear and
DequantizeLinear (kernels in ``kernels_quant.c``; see ``emit_quant`` for the whole integer lowering)."""

from __future__ import annotations

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.opinfo import DOMAIN, window_geometry
from lowering.quantized import QRANGE

from .emit_elementwise import PARALLEL_MIN, collapse_broadcast
from .emit_quant_common import (
    _as_ints,
    _check_clamp,
    _check_finish,
    _check_multipliers,
    _check_shifts,
    _check_types,
    _check_zero_point,
    _epilogue,
    _i64,
    _lut_bytes,
    _requant_arrays,
)
from .registry import QUANT_TYPES, EmitContext, KernelCode, c_longs, numel, register


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
        return "dilated QAveragePool is not supported (the contract's windows are undilated)"
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

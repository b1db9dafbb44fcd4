"""Integer pointwise ops for the cpu target: QAdd, QMul, QLut, QAveragePool, QuantizeLinear and
DequantizeLinear (kernels in ``kernels_quant.c``; see ``emit_quant`` for the whole integer lowering)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.opinfo import DOMAIN, window_geometry

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


@dataclass
class _QDQParams:
    """Where a QuantizeLinear / DequantizeLinear reads its scale and zero point: x as [outer][C][inner]
    around ``axis``; per tensor (C = 1, one scale), per axis (C scales) or blocked (``block`` > 0: scale
    and zero point are [outer][ceil(C / block)][inner]). Scale and zero point may be constants or run-time
    tensors (the node tests feed them as graph inputs; DynamicQuantizeLinear's expansion computes them)."""

    outer: int
    channels: int
    inner: int
    block: int
    count: int  # scale (and zero point) entries
    scale: Value
    zp: Value | None


def _qdq_params(node: Node) -> _QDQParams | str:
    """The node's parameter layout, or why the cpu target cannot run it."""
    x, scale, zp = node.input(0), node.input(1), node.input(2)
    shape, rank = x.type.shape, x.type.rank
    if scale is None:
        return f"{node.op} has no scale"
    if scale.type is None or scale.type.dtype is not DType.FLOAT32:
        kind = scale.type.dtype.value if scale.type is not None else "untyped"
        return f"{node.op} scale '{scale.name}' is {kind}; the cpu target takes float32"
    count = numel(scale.type.shape)
    if zp is not None and zp.type is not None and numel(zp.type.shape) != count:
        return f"{node.op} has {count} scales but {numel(zp.type.shape)} zero points"
    blocked_zp = zp is not None and zp.type is not None and node.attr("block_size", 0)
    if blocked_zp and zp.type.shape != scale.type.shape:
        return f"{node.op} zero point shape {zp.type.shape} differs from the scale's {scale.type.shape}"
    axis = node.attr("axis", 1)
    block = int(node.attr("block_size", 0) or 0)
    if block < 0:
        return f"{node.op} block_size {block} is negative"
    if block or count > 1:
        if not -rank <= axis < rank:
            return f"{node.op} axis {axis} is out of range for a rank-{rank} input"
        axis %= rank
    if block:
        expected = shape[:axis] + (-(-shape[axis] // block),) + shape[axis + 1 :]
        if tuple(scale.type.shape) != tuple(expected):
            return (
                f"blocked {node.op} scale '{scale.name}' has shape {scale.type.shape}; block_size {block} "
                f"along axis {axis} of {shape} needs {expected}"
            )
        return _QDQParams(numel(shape[:axis]), shape[axis], numel(shape[axis + 1 :]), block, count, scale, zp)
    if count == 1:
        return _QDQParams(1, 1, numel(shape), 0, 1, scale, zp)
    if scale.type.rank != 1 or shape[axis] != count:
        return f"{node.op} has {count} scales (shape {scale.type.shape}) for an axis of size {shape[axis]}"
    return _QDQParams(numel(shape[:axis]), shape[axis], numel(shape[axis + 1 :]), 0, count, scale, zp)


def _zero_points(ctx: EmitContext, p: _QDQParams, ctype: str, lines: list[str]) -> tuple[str, int]:
    """A C pointer to the zero points as ``ctype`` (int32_t / int64_t) and the workspace bytes used: the
    constant (or zeros) in the weights, or a run-time zero point widened into the workspace."""
    dtype = np.int32 if ctype == "int32_t" else np.int64
    if p.zp is None:
        return ctx.weights(np.zeros(p.count, dtype), ctype), 0
    if p.zp.is_const:
        return ctx.weights(p.zp.const.reshape(-1).astype(dtype), ctype), 0
    lines += [
        f"{ctype} *zq = ({ctype} *)ctx->ws;",
        f"for (long i = 0; i < {p.count}; i++) zq[i] = ({ctype}){ctx.ptr(p.zp)}[i];",
    ]
    return "zq", p.count * np.dtype(dtype).itemsize


#: the integer types QuantizeLinear writes / DequantizeLinear reads, with the C element type the quantize
#: kernels store (the bit pattern: int8 as uint8_t, int16 as uint16_t) and the kernel name suffix
QDQ_OUT = {DType.INT8: ("uint8_t", ""), DType.UINT8: ("uint8_t", ""), DType.INT16: ("uint16_t", "_16"),
           DType.UINT16: ("uint16_t", "_16")}


def check_quantize(node: Node) -> str | None:
    reason = _check_types(node, {0: (DType.FLOAT32,)}, out=tuple(QDQ_OUT))
    if reason:
        return reason
    params = _qdq_params(node)
    if isinstance(params, str):
        return params
    zp = node.input(2)
    if zp is not None and zp.type.dtype is not node.output.type.dtype:
        out = node.output.type.dtype.value
        return f"QuantizeLinear zero point is {zp.type.dtype.value} but the output is {out}"
    return None


@register("QuantizeLinear", check=check_quantize, dtypes=None)
def emit_quantize(ctx: EmitContext, node: Node) -> KernelCode:
    x, y = node.input(0), node.output
    p = _qdq_params(node)
    info = np.iinfo(y.type.dtype.numpy)
    qmin, qmax = int(info.min), int(info.max)
    ctype, suffix = QDQ_OUT[y.type.dtype]
    lines: list[str] = []
    zpp, workspace = _zero_points(ctx, p, "int32_t", lines)
    sp, xp, yp = ctx.ptr(p.scale), ctx.ptr(x), ctx.out(y, ctype)
    head, tail = f"(ctx->nt, {xp}, {yp}, {p.outer}, {p.channels}", f"{sp}, {zpp}, {qmin}, {qmax});"
    if p.block:
        lines.append(f"lw_quantize_blocked{suffix}{head}, {p.inner}, {p.block}, {tail}")
    elif p.inner == 1 and p.channels > 1:
        lines.append(f"lw_quantize_last{suffix}{head}, {tail}")
    else:
        lines.append(f"lw_quantize{suffix}{head}, {p.inner}, {tail}")
    return KernelCode("\n".join(lines), flops=2 * numel(x.type.shape), workspace=workspace)


DEQUANTIZE_KERNELS = {
    DType.INT8: "lw_dequantize_i8",
    DType.UINT8: "lw_dequantize_u8",
    DType.INT16: "lw_dequantize_i16",
    DType.UINT16: "lw_dequantize_u16",
    DType.INT32: "lw_dequantize_i32",
}


def check_dequantize(node: Node) -> str | None:
    reason = _check_types(node, {0: tuple(DEQUANTIZE_KERNELS)}, out=(DType.FLOAT32,))
    if reason:
        return reason
    params = _qdq_params(node)
    if isinstance(params, str):
        return params
    zp = node.input(2)
    if zp is not None and zp.type.dtype is not node.input(0).type.dtype:
        kind = node.input(0).type.dtype.value
        return f"DequantizeLinear zero point is {zp.type.dtype.value} but the input is {kind}"
    return None


@register("DequantizeLinear", check=check_dequantize, dtypes=None)
def emit_dequantize(ctx: EmitContext, node: Node) -> KernelCode:
    x, y = node.input(0), node.output
    p = _qdq_params(node)
    lines: list[str] = []
    zpp, workspace = _zero_points(ctx, p, "int64_t", lines)
    kernel = DEQUANTIZE_KERNELS[x.type.dtype]
    args = f"ctx->nt, {ctx.ptr(x)}, {ctx.out(y)}, {p.outer}, {p.channels}, {p.inner}"
    if p.block:
        lines.append(f"{kernel}_blocked({args}, {p.block}, {ctx.ptr(p.scale)}, {zpp});")
    else:
        lines.append(f"{kernel}({args}, {ctx.ptr(p.scale)}, {zpp});")
    return KernelCode("\n".join(lines), flops=2 * numel(x.type.shape), workspace=workspace)

"""DFT, STFT, the window ops and MelWeightMatrix on the cpu target (kernels in ``kernels_signal.c``).

The output shape is always the compiled one (ONNX shape inference or the model's declared output), so the
scalar parameters that decide it (DFT axis and dft_length, STFT frame_step and frame_length, a window's
size, the mel matrix's bins) may be constants or run-time inputs alike: a constant one is checked here
against the shape, a run-time one by the kernel, which fails the run (``LW_STATUS_OPERAND``) when it
contradicts the compiled shape. Parameters are resolved by the reference's own readers
(``lowering.reference.ops_signal``), so the two share every default.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.reference.ops_signal import (
    WINDOW_KINDS,
    SignalSpecError,
    dft_axis_attr,
    dft_geometry,
    stft_geometry,
)

from .registry import EmitContext, KernelCode, c_longs, numel, register

INT_TYPES = (DType.INT32, DType.INT64)


def _const_int(value: Value | None) -> int | None:
    if value is None or not value.is_const:
        return None
    return int(np.asarray(value.const).reshape(-1)[0])


def _typed(node: Node, index: int, kinds: tuple[DType, ...], role: str, scalar: bool = False) -> str | None:
    value = node.input(index)
    if value is None:
        return None
    if value.type is None or value.type.dtype not in kinds:
        kind = value.type.dtype.value if value.type is not None else "untyped"
        names = " or ".join(k.value for k in kinds)
        return f"{node.op} {role} '{value.name}' is {kind}; the cpu target takes {names}"
    if scalar and numel(value.type.shape) != 1:
        return f"{node.op} {role} '{value.name}' has shape {list(value.type.shape)}; a scalar is expected"
    return None


def _float_output(node: Node) -> str | None:
    out = node.output
    if out.type is None or out.type.dtype is not DType.FLOAT32:
        kind = out.type.dtype.value if out.type is not None else "untyped"
        return f"{node.op} output '{out.name}' is {kind}; the cpu target computes float32"
    return None


def _scalar_expr(ctx: EmitContext, value: Value) -> str:
    """A C expression (long) for a scalar input, its value when constant."""
    const = _const_int(value)
    return str(const) if const is not None else f"(long){ctx.ptr(value)}[0]"


# --- DFT --------------------------------------------------------------------------------------------------

def check_dft(node: Node) -> str | None:
    reason = (_typed(node, 0, (DType.FLOAT32,), "input") or _typed(node, 1, INT_TYPES, "dft_length", True)
              or _typed(node, 2, INT_TYPES, "axis", True) or _float_output(node))
    if reason:
        return reason
    shape = tuple(node.input(0).type.shape)
    axis = dft_axis_attr(node)
    axis = _const_int(node.input(2)) if axis is None else axis
    length = node.input(1)
    if axis is None or (length is not None and not length.is_const):
        return None  # run-time parameters: the kernel checks them against the compiled shapes
    try:
        geo = dft_geometry(node, shape, axis, _const_int(length))
    except SignalSpecError as exc:
        return f"DFT {exc}"
    if geo.out_shape != tuple(node.output.type.shape):
        return f"DFT output shape {list(node.output.type.shape)} is not {list(geo.out_shape)}"
    return None


@register("DFT", check=check_dft, dtypes=None)
def emit_dft(ctx: EmitContext, node: Node) -> KernelCode:
    """``lw_dft`` along the axis; a run-time axis or dft_length is read and checked by the kernel."""
    x, y = node.input(0), node.output
    ishape, oshape = tuple(x.type.shape), tuple(y.type.shape)
    rank = len(ishape)
    inverse, onesided = int(bool(node.attr("inverse", 0))), int(bool(node.attr("onesided", 0)))
    axis = dft_axis_attr(node)
    axis_expr = str(axis) if axis is not None else _scalar_expr(ctx, node.input(2))
    irfft = inverse and onesided
    if node.input(1) is not None:
        n_expr = _scalar_expr(ctx, node.input(1))
    else:
        default = "2 * (ishape[axis] - 1)" if irfft else "ishape[axis]"
        n_expr = f"axis >= 0 && axis < {rank - 1} ? {default} : 0"
    max_n = 2 * max(oshape[:-1]) + 2
    lines = [
        f"static const long ishape[{rank}] = {c_longs(ishape)}, oshape[{rank}] = {c_longs(oshape)};",
        f"long axis = {axis_expr};",
        f"if (axis < 0) axis += {rank};",
        f"const long n = {n_expr};",
        f"lw_dft(ctx->nt, {ctx.ptr(x)}, {ctx.out(y)}, ishape, oshape, {rank}, axis, n, {inverse}, "
        f"{onesided}, {max_n}, (double *)ctx->ws, ctx->status);",
    ]
    lines_in = max(ishape[:-1])
    flops = 8 * numel(oshape[:-1]) * lines_in
    return KernelCode("\n".join(lines), flops=flops, workspace=16 * max_n)


# --- STFT -------------------------------------------------------------------------------------------------

def check_stft(node: Node) -> str | None:
    reason = (_typed(node, 0, (DType.FLOAT32,), "signal") or _typed(node, 1, INT_TYPES, "frame_step", True)
              or _typed(node, 2, (DType.FLOAT32,), "window")
              or _typed(node, 3, INT_TYPES, "frame_length", True) or _float_output(node))
    if reason:
        return reason
    shape, window = tuple(node.input(0).type.shape), node.input(2)
    if len(shape) != 3 or shape[-1] not in (1, 2):
        return f"STFT signal shape {list(shape)} must be [batch, length, 1 or 2]"
    if window is not None and window.type.rank != 1:
        return f"STFT window '{window.name}' must be rank 1"
    out = tuple(node.output.type.shape)
    if len(out) != 4 or out[0] != shape[0] or out[3] != 2:
        return f"STFT output shape {list(out)} is not [batch, frames, bins, 2]"
    step, length = _const_int(node.input(1)), node.input(3)
    if step is None or (length is not None and not length.is_const):
        return None  # run-time parameters: the kernel checks them against the compiled shapes
    try:
        geo = stft_geometry(node, shape, step, None if window is None else window.type.shape[0],
                            _const_int(length))
    except SignalSpecError as exc:
        return f"STFT {exc}"
    if (geo.frames, geo.bins) != out[1:3]:
        return f"STFT output shape {list(out)} is not [{shape[0]}, {geo.frames}, {geo.bins}, 2]"
    return None


@register("STFT", check=check_stft, dtypes=None)
def emit_stft(ctx: EmitContext, node: Node) -> KernelCode:
    x, window, y = node.input(0), node.input(2), node.output
    batch, length, channels = x.type.shape
    frames, bins = y.type.shape[1:3]
    if node.input(3) is not None:
        fl = _scalar_expr(ctx, node.input(3))
    else:
        fl = str(window.type.shape[0] if window is not None else length)
    max_n = 2 * bins + 2
    body = (f"lw_stft(ctx->nt, {ctx.ptr(x)}, {ctx.opt_ptr(window)}, {ctx.out(y)}, {batch}, {length}, "
            f"{channels}, {_scalar_expr(ctx, node.input(1))}, {fl}, {int(bool(node.attr('onesided', 1)))}, "
            f"{frames}, {bins}, {max_n}, (double *)ctx->ws, ctx->status);")
    return KernelCode(body, flops=8 * batch * frames * bins * 2 * bins, workspace=16 * max_n)


# --- windows and mel filters ------------------------------------------------------------------------------

def check_window(node: Node) -> str | None:
    return _typed(node, 0, INT_TYPES, "size", True) or _float_output(node)


@register(*WINDOW_KINDS, check=check_window, dtypes=None)
def emit_window(ctx: EmitContext, node: Node) -> KernelCode:
    """The compiled number of points; a run-time size that differs fails the run."""
    n = numel(node.output.type.shape)
    body = (f"lw_window({ctx.out(node.output)}, {_scalar_expr(ctx, node.input(0))}, {n}, "
            f"{WINDOW_KINDS[node.op]}, {int(bool(node.attr('periodic', 1)))}, ctx->status);")
    return KernelCode(body, flops=10 * n)


def check_mel(node: Node) -> str | None:
    roles = ("num_mel_bins", "dft_length", "sample_rate")
    for i, role in enumerate(roles):
        reason = _typed(node, i, INT_TYPES, role, True)
        if reason:
            return reason
    for i, role in ((3, "lower_edge_hertz"), (4, "upper_edge_hertz")):
        reason = _typed(node, i, (DType.FLOAT32,), role, True)
        if reason:
            return reason
    if any(node.input(i) is None for i in range(5)):
        return "MelWeightMatrix needs its five inputs"
    if node.output.type.rank != 2:
        return f"MelWeightMatrix output '{node.output.name}' must be rank 2"
    return _float_output(node)


@register("MelWeightMatrix", check=check_mel, dtypes=None)
def emit_mel(ctx: EmitContext, node: Node) -> KernelCode:
    """The compiled [dft_length / 2 + 1, num_mel_bins] matrix; run-time sizes that differ fail the run."""
    rows, cols = node.output.type.shape
    args = ", ".join(_scalar_expr(ctx, node.input(i)) for i in range(3))
    lower, upper = (f"{ctx.ptr(node.input(i))}[0]" for i in (3, 4))
    body = (f"lw_mel_weights({ctx.out(node.output)}, {args}, {lower}, {upper}, {rows}, {cols}, "
            f"(long *)ctx->ws, ctx->status);")
    return KernelCode(body, flops=4 * rows * cols, workspace=8 * (cols + 2))

"""Sampling lowering for the cpu target: GridSample, AffineGrid, RoiAlign (kernels in ``kernels_sample.c``)
and CenterCropPad (``lw_pad`` of ``kernels_index.c``).

GridSample's grid and RoiAlign's boxes are data, so their kernels compute every coordinate, tap and weight
when the model runs. AffineGrid's ``size`` and CenterCropPad's ``shape`` decide the output's shape: a
CenterCropPad needs a constant ``shape`` (a run-time one is refused), an AffineGrid reads its run-time
``size`` and fails the run (LW_STATUS_OPERAND) unless it is the compiled shape, as Resize's run-time
``sizes`` do. Semantics: ``lowering/reference/ops_sample.py``.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import DType, Node
from lowering.reference.ops_sample import (
    GRID_MODES,
    center_crop_pad_begin,
    grid_sample_unsupported,
    roi_align_unsupported,
)

from .registry import ALL_TYPES, FLOAT_ONLY, EmitContext, KernelCode, c_float, c_longs, numel, register

GS_MODES = {"nearest": "LW_GS_NEAREST", "linear": "LW_GS_LINEAR", "cubic": "LW_GS_CUBIC"}
GS_PADDING = {"zeros": "LW_GS_ZEROS", "border": "LW_GS_BORDER", "reflection": "LW_GS_REFLECTION"}
#: taps per axis of each GridSample mode (for the FLOP count)
GS_TAPS = {"nearest": 1, "linear": 2, "cubic": 4}


# --- GridSample -------------------------------------------------------------------------------------

def check_grid_sample(node: Node) -> str | None:
    reason = grid_sample_unsupported(node)
    if reason is not None:
        return reason
    x, grid = node.input(0), node.input(1)
    r = x.type.rank - 2
    if r not in (1, 2, 3):
        return f"GridSample of a rank-{x.type.rank} input (the cpu target takes 1 to 3 spatial axes)"
    gshape = grid.type.shape
    if len(gshape) != r + 2 or gshape[0] != x.type.shape[0] or gshape[-1] != r:
        return f"GridSample grid '{grid.name}' of shape {list(gshape)} does not fit the input of shape " \
               f"{list(x.type.shape)}"
    return None


@register("GridSample", check=check_grid_sample, data_inputs=2, dtypes=FLOAT_ONLY)
def emit_grid_sample(ctx: EmitContext, node: Node) -> KernelCode:
    x, grid, y = node.input(0), node.input(1), node.output
    shape = x.type.shape
    r = len(shape) - 2
    points = numel(grid.type.shape[1:-1])
    mode = GRID_MODES[node.attr("mode", "linear")]
    padding = node.attr("padding_mode", "zeros")
    if numel(y.type.shape) == 0:
        return KernelCode("(void)ctx;")
    body = (
        f"static const long in[{r}] = {c_longs(shape[2:])};\n"
        f"lw_grid_sample(ctx->nt, {ctx.ptr(x)}, {ctx.ptr(grid)}, {ctx.out(y)}, {shape[0]}, {shape[1]}, {r}, "
        f"in, {points}, {GS_MODES[mode]}, {GS_PADDING[padding]}, {int(bool(node.attr('align_corners', 0)))});"
    )
    return KernelCode(body, flops=2 * numel(y.type.shape) * GS_TAPS[mode] ** r)


# --- AffineGrid -------------------------------------------------------------------------------------

def check_affine_grid(node: Node) -> str | None:
    theta, size, y = node.input(0), node.input(1), node.output
    if size.type.dtype is not DType.INT64:
        return f"AffineGrid size (input 1 '{size.name}') must be int64"
    r = y.type.rank - 2
    if r not in (2, 3) or tuple(theta.type.shape) != (y.type.shape[0], r, r + 1) or y.type.shape[-1] != r \
            or numel(size.type.shape) != r + 2:
        return f"AffineGrid theta of shape {list(theta.type.shape)} does not fit the output of shape " \
               f"{list(y.type.shape)} (2-D or 3-D grids)"
    if size.is_const:
        want = [int(v) for v in size.const.reshape(-1)]
        if [want[0], *want[2:]] != [y.type.shape[0], *y.type.shape[1:-1]]:
            return f"AffineGrid output shape {list(y.type.shape)} does not match its size {want}"
    return None


@register("AffineGrid", check=check_affine_grid, data_inputs=1, dtypes=FLOAT_ONLY)
def emit_affine_grid(ctx: EmitContext, node: Node) -> KernelCode:
    """The grid of the compiled shape; a run-time ``size`` (its batch and spatial sizes) that differs fails
    the run."""
    theta, size, y = node.input(0), node.input(1), node.output
    spatial = list(y.type.shape[1:-1])
    r = len(spatial)
    lines = []
    if not size.is_const:
        want = [y.type.shape[0], *spatial]
        lines += [
            f"{{ const int64_t *s = {ctx.ptr(size)};",
            f"  static const int64_t want[{r + 1}] = {c_longs(want)};",
            "  if (s[0] != want[0]) { *ctx->status = LW_STATUS_OPERAND; return; }",
            f"  for (int d = 0; d < {r}; d++) if (s[d + 2] != want[d + 1]) "
            "{ *ctx->status = LW_STATUS_OPERAND; return; } }",
        ]
    if numel(y.type.shape):
        lines += [
            f"static const long sp[{r}] = {c_longs(spatial)};",
            f"lw_affine_grid(ctx->nt, {ctx.ptr(theta)}, {ctx.out(y)}, {y.type.shape[0]}, {r}, sp, "
            f"{int(bool(node.attr('align_corners', 0)))});",
        ]
    return KernelCode("\n".join(lines) or "(void)ctx;", flops=2 * numel(y.type.shape) * (r + 1))


# --- RoiAlign ---------------------------------------------------------------------------------------

def check_roi_align(node: Node) -> str | None:
    reason = roi_align_unsupported(node)
    if reason is not None:
        return reason
    x, rois, batch = node.input(0), node.input(1), node.input(2)
    if x.type.rank != 4:
        return f"RoiAlign input '{x.name}' must have rank 4 (N, C, H, W)"
    if batch.type.dtype is not DType.INT64:
        return f"RoiAlign batch_indices (input 2 '{batch.name}') must be int64"
    k = batch.type.shape[0] if batch.type.rank == 1 else -1
    if tuple(rois.type.shape) != (k, 4):
        return f"RoiAlign rois '{rois.name}' of shape {list(rois.type.shape)} must be (num_rois, 4), one " \
               "box per batch index"
    if int(node.attr("sampling_ratio", 0)) < 0:
        return "RoiAlign sampling_ratio must not be negative"
    return None


@register("RoiAlign", check=check_roi_align, data_inputs=2, dtypes=FLOAT_ONLY)
def emit_roi_align(ctx: EmitContext, node: Node) -> KernelCode:
    x, rois, batch, y = node.input(0), node.input(1), node.input(2), node.output
    n, c, h, w = x.type.shape
    k, _, oh, ow = y.type.shape
    if numel(y.type.shape) == 0:
        return KernelCode("(void)ctx;")
    half = node.attr("coordinate_transformation_mode", "half_pixel") == "half_pixel"
    body = (
        f"lw_roi_align(ctx->nt, {ctx.ptr(x)}, {ctx.ptr(rois)}, {ctx.ptr(batch)}, {ctx.out(y)}, {k}, {n}, "
        f"{c}, {h}, {w}, {oh}, {ow}, {int(node.attr('sampling_ratio', 0))}, "
        f"{c_float(node.attr('spatial_scale', 1.0))}, {int(half)}, {int(node.attr('mode', 'avg') == 'max')}, "
        "ctx->status);"
    )
    return KernelCode(body, flops=8 * numel(y.type.shape))


# --- CenterCropPad ----------------------------------------------------------------------------------

def check_center_crop_pad(node: Node) -> str | None:
    shape = node.input(1)
    if not shape.is_const:
        return f"CenterCropPad shape (input 1 '{shape.name}') must be a constant on the cpu target"
    try:
        out, _ = center_crop_pad_begin(node, node.input(0).type.shape, shape.const)
    except ValueError as exc:
        return str(exc)
    if tuple(out) != tuple(node.output.type.shape):
        return f"CenterCropPad output shape {list(node.output.type.shape)} does not match its shape {out}"
    return None


@register("CenterCropPad", check=check_center_crop_pad, data_inputs=1, dtypes=ALL_TYPES)
def emit_center_crop_pad(ctx: EmitContext, node: Node) -> KernelCode:
    """A constant Pad with a negative begin where it crops (``lw_pad``)."""
    x, y = node.input(0), node.output
    rank = x.type.rank
    out, begin = center_crop_pad_begin(node, x.type.shape, node.input(1).const)
    if numel(out) == 0:
        return KernelCode("(void)ctx;")
    if rank == 0:
        return KernelCode(f"lw_copy(ctx->nt, {ctx.out(y)}, {ctx.ptr(x)}, {x.type.dtype.itemsize});")
    zero = np.zeros(1, x.type.dtype.numpy).tobytes()
    body = (
        f"static const long ishape[{rank}] = {c_longs(x.type.shape)};\n"
        f"static const long oshape[{rank}] = {c_longs(out)};\n"
        f"static const long begin[{rank}] = {c_longs(begin)};\n"
        f"static const unsigned char value[{len(zero)}] = {c_longs(zero)};\n"
        f"lw_pad(ctx->nt, {ctx.ptr(x)}, {ctx.out(y)}, {rank}, ishape, oshape, begin, LW_PAD_CONSTANT, value, "
        f"{x.type.dtype.itemsize});"
    )
    return KernelCode(body)

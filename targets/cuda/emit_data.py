"""Pooling, Softmax, LayerNormalization and data movement for the cuda target (fp32, thread-independent).

- MaxPool / AveragePool (1-D and 2-D, pads, strides, dilations, ceil_mode, count_include_pad): one thread
  per output element over its window; GlobalAveragePool / GlobalMaxPool: one thread per plane.
- Softmax / LogSoftmax on any axis: one thread per row of the ``[outer][len][inner]`` view (max, sum of
  exponentials, normalise: three passes over the row).
- LayerNormalization: one thread per row (mean, then variance, then the scaled output).
- Concat, Transpose, and (in emit_pointwise) Copy: one thread per output element; Transpose collapses its
  permutation with the cpu target's ``collapse_transpose``.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import Node
from lowering.opinfo import window_geometry
from targets.cpu.emit_data import collapse_transpose

from .registry import CudaEmitContext, KernelCode, c_float, linear_launch, numel, register


def check_pool(node: Node) -> str | None:
    rank = node.input(0).type.rank
    if rank not in (3, 4):
        return f"cuda target: only 1-D and 2-D pooling is supported, got a rank-{rank} input"
    if node.attr("kernel_shape") is None:
        return f"{node.op} has no kernel_shape"
    if node.op == "MaxPool" and node.attr("storage_order", 0):
        return "cuda target: MaxPool storage_order=1 is not supported"
    return None


@register("AveragePool", "MaxPool", check=check_pool, data_inputs=1)
def emit_pool(ctx: CudaEmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    kernel = tuple(node.attr("kernel_shape"))
    geo = window_geometry(node, tuple(shape[2:]), kernel, ceil_mode=bool(node.attr("ceil_mode", 0)))
    lift = (lambda t, one: (one,) + tuple(t)) if len(shape) == 3 else (lambda t, one: tuple(t))
    h, w = lift(shape[2:], 1)
    oh, ow = lift(geo.out, 1)
    kh, kw = lift(kernel, 1)
    sh, sw = lift(geo.strides, 1)
    dh, dw = lift(geo.dilations, 1)
    ph, pw = lift(geo.pads_begin, 0)
    phe, pwe = lift(geo.pads_end, 0)
    is_max = node.op == "MaxPool"
    total = numel(shape[:2]) * oh * ow
    x, y = ctx.read(node.input(0), "x"), ctx.write(node.output)
    lines = [
        "const int i = lw_global_x();",
        f"if (i >= {total}) return;",
        f"const int ow = i % {ow};",
        f"const int oh = (i / {ow}) % {oh};",
        f"const float *xp = {x} + (i / {ow * oh}) * {h * w};",
        f"const int ih0 = oh * {sh} - {ph}, iw0 = ow * {sw} - {pw};",
        f"float acc = {'-lw_inf()' if is_max else '0.0f'};",
        f"for (int kh = 0; kh < {kh}; kh++) {{",
        f"    const int ih = ih0 + kh * {dh};",
        f"    if ((unsigned)ih >= {h}u) continue;",
        f"    for (int kw = 0; kw < {kw}; kw++) {{",
        f"        const int iw = iw0 + kw * {dw};",
        f"        if ((unsigned)iw >= {w}u) continue;",
        f"        const float v = xp[ih * {w} + iw];",
        "        acc = v > acc ? v : acc;" if is_max else "        acc += v;",
        "    }",
        "}",
    ]
    if is_max:
        lines.append(f"{y}[i] = acc;")
    else:
        pad = bool(node.attr("count_include_pad", 0))
        lo_h, hi_h = (-ph, h + phe) if pad else (0, h)
        lo_w, hi_w = (-pw, w + pwe) if pad else (0, w)
        lines += [
            "int rows = 0, cols = 0;",
            f"for (int kh = 0; kh < {kh}; kh++) {{ const int ih = ih0 + kh * {dh}; "
            f"rows += ih >= {lo_h} && ih < {hi_h}; }}",
            f"for (int kw = 0; kw < {kw}; kw++) {{ const int iw = iw0 + kw * {dw}; "
            f"cols += iw >= {lo_w} && iw < {hi_w}; }}",
            f"{y}[i] = acc / (float)(rows * cols);",
        ]
    grid, block = linear_launch(total)
    return KernelCode("\n".join(lines), grid, block, flops=total * kh * kw)


def check_global_pool(node: Node) -> str | None:
    if node.input(0).type.rank < 3:
        return f"cuda target: {node.op} needs an input of rank 3 or more"
    return None


@register("GlobalAveragePool", "GlobalMaxPool", check=check_global_pool)
def emit_global_pool(ctx: CudaEmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    planes, positions = numel(shape[:2]), numel(shape[2:])
    is_max = node.op == "GlobalMaxPool"
    x, y = ctx.read(node.input(0), "x"), ctx.write(node.output)
    combine = "acc = xp[p] > acc ? xp[p] : acc;" if is_max else "acc += xp[p];"
    lines = [
        "const int i = lw_global_x();",
        f"if (i >= {planes}) return;",
        f"const float *xp = {x} + i * {positions};",
        f"float acc = {'-lw_inf()' if is_max else '0.0f'};",
        f"for (int p = 0; p < {positions}; p++) {combine}",
        f"{y}[i] = {'acc' if is_max else f'acc / {c_float(positions)}'};",
    ]
    grid, block = linear_launch(planes)
    return KernelCode("\n".join(lines), grid, block, flops=numel(shape))


def _axis_split(node: Node, axis: int) -> tuple[int, int, int]:
    shape = node.input(0).type.shape
    axis %= len(shape)
    return numel(shape[:axis]), shape[axis], numel(shape[axis + 1:])


def check_softmax(node: Node) -> str | None:
    rank = node.input(0).type.rank
    axis = node.attr("axis", -1)
    if rank == 0 or not -rank <= axis < rank:
        return f"{node.op} axis {axis} is out of range for a rank-{rank} input"
    return None


@register("Softmax", "LogSoftmax", check=check_softmax)
def emit_softmax(ctx: CudaEmitContext, node: Node) -> KernelCode:
    outer, length, inner = _axis_split(node, node.attr("axis", -1))
    x, y = ctx.read(node.input(0), "x"), ctx.write(node.output)
    lines = [
        "const int i = lw_global_x();",
        f"if (i >= {outer * inner}) return;",
        f"const int base = (i / {inner}) * {length * inner} + i % {inner};",
        f"const float *xr = {x} + base;",
        f"float *yr = {y} + base;",
        "float m = -lw_inf(), s = 0.0f;",
        f"for (int a = 0; a < {length}; a++) m = xr[a * {inner}] > m ? xr[a * {inner}] : m;",
    ]
    if node.op == "LogSoftmax":
        lines += [
            f"for (int a = 0; a < {length}; a++) s += lw_expf(xr[a * {inner}] - m);",
            "const float shift = m + logf(s);",
            f"for (int a = 0; a < {length}; a++) yr[a * {inner}] = xr[a * {inner}] - shift;",
        ]
    else:
        lines += [
            f"for (int a = 0; a < {length}; a++) {{ const float e = lw_expf(xr[a * {inner}] - m); "
            f"yr[a * {inner}] = e; s += e; }}",
            f"for (int a = 0; a < {length}; a++) yr[a * {inner}] = yr[a * {inner}] / s;",
        ]
    grid, block = linear_launch(outer * inner)
    return KernelCode("\n".join(lines), grid, block, flops=5 * numel(node.input(0).type.shape))


def _norm_cols(node: Node) -> tuple[int, ...]:
    rank = node.input(0).type.rank
    return node.input(0).type.shape[node.attr("axis", -1) % rank:]


def check_layernorm(node: Node) -> str | None:
    rank = node.input(0).type.rank
    axis = node.attr("axis", -1)
    if rank == 0 or not -rank <= axis < rank:
        return f"LayerNormalization axis {axis} is out of range for a rank-{rank} input"
    cols = _norm_cols(node)
    if numel(cols) == 0:
        return "LayerNormalization over an empty row"
    for value in node.inputs[1:3]:
        if value is None:
            continue
        if not value.is_const:
            if value.type.shape[-len(cols):] != cols or numel(value.type.shape) != numel(cols):
                return f"cuda target: LayerNormalization '{value.name}' must have the normalised shape"
            continue
        try:
            np.broadcast_to(value.const, cols)
        except ValueError:
            return f"LayerNormalization '{value.name}' does not broadcast to the normalised shape"
    return None


@register("LayerNormalization", check=check_layernorm, data_inputs=3)
def emit_layernorm(ctx: CudaEmitContext, node: Node) -> KernelCode:
    cols_shape = _norm_cols(node)
    cols = numel(cols_shape)
    rows = numel(node.input(0).type.shape) // cols
    x = ctx.read(node.input(0), "x")
    params = []
    for value, name in ((node.input(1), "scale"), (node.input(2), "bias")):
        if value is None:
            params.append(None)
        elif value.is_const:
            full = np.broadcast_to(value.const.astype(np.float32), cols_shape).reshape(-1)
            params.append(ctx.weights(full, name))
        else:
            params.append(ctx.read(value, name))
    y = ctx.write(node.output)
    scale, bias = params
    out = "(xr[c] - mean) * inv"
    if scale is not None:
        out += f" * {scale}[c]"
    if bias is not None:
        out += f" + {bias}[c]"
    lines = [
        "const int i = lw_global_x();",
        f"if (i >= {rows}) return;",
        f"const float *xr = {x} + i * {cols};",
        f"float *yr = {y} + i * {cols};",
        "float s = 0.0f;",
        f"for (int c = 0; c < {cols}; c++) s += xr[c];",
        f"const float mean = s / {c_float(cols)};",
        "float v = 0.0f;",
        f"for (int c = 0; c < {cols}; c++) {{ const float d = xr[c] - mean; v += d * d; }}",
        f"const float inv = 1.0f / sqrtf(v / {c_float(cols)} + {c_float(node.attr('epsilon', 1e-5))});",
        f"for (int c = 0; c < {cols}; c++) yr[c] = {out};",
    ]
    grid, block = linear_launch(rows)
    return KernelCode("\n".join(lines), grid, block, flops=8 * rows * cols)


@register("Transpose")
def emit_transpose(ctx: CudaEmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    perm = tuple(node.attr("perm", tuple(reversed(range(len(shape))))))
    dims, steps = collapse_transpose(shape, perm)
    total = numel(shape)
    x, y = ctx.read(node.input(0), "x"), ctx.write(node.output)
    lines = ["const int i = lw_global_x();", f"if (i >= {total}) return;", "int rem = i, src = 0;"]
    for d in reversed(range(len(dims))):
        lines.append(f"src += (rem % {dims[d]}) * {steps[d]}; rem /= {dims[d]};")
    lines.append(f"{y}[i] = {x}[src];")
    grid, block = linear_launch(total)
    return KernelCode("\n".join(lines), grid, block)


@register("Concat")
def emit_concat(ctx: CudaEmitContext, node: Node) -> KernelCode:
    out_shape = node.output.type.shape
    axis = node.attr("axis", 0) % len(out_shape)
    parts = [v for v in node.inputs if v is not None and numel(v.type.shape) > 0]
    chunks = [numel(v.type.shape[axis:]) for v in parts]  # elements each input adds per outer index
    total_chunk = sum(chunks)
    total = numel(out_shape)
    names = [ctx.read(v, f"x{k}") for k, v in enumerate(parts)]
    y = ctx.write(node.output)
    lines = ["const int i = lw_global_x();", f"if (i >= {total}) return;",
             f"const int o = i / {total_chunk}, j = i % {total_chunk};"]
    start = 0
    for k, (name, chunk) in enumerate(zip(names, chunks)):
        keyword = "if" if k == 0 else "else if"
        cond = f"j < {start + chunk}" if k < len(names) - 1 else ""
        head = f"{keyword} ({cond}) " if cond else ("else " if k else "")
        lines.append(f"{head}{y}[i] = {name}[o * {chunk} + j - {start}];")
        start += chunk
    grid, block = linear_launch(total)
    return KernelCode("\n".join(lines), grid, block)

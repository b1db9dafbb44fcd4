"""Convolution, Gemm and MatMul lowering for the cuda target (fp32, thread-independent kernels).

- Conv / lowering::FusedConv (NCHW, 1-D and 2-D, groups incl. depthwise, strides, pads, dilations): an
  implicit GEMM per group, ``out[m, p] = W[m, :] . col[:, p]`` with ``K = C/G * KH * KW``, where the column
  ``col[:, p]`` is never materialised: each thread owns one output position and ``CONV_TM`` output channels
  of one group, walks K as (channel, kh, kw) and addresses the input directly (padding taps are skipped),
  reusing every input value for its channels. Bias, residual (broadcast through image/channel/position
  strides) and activation run on the accumulators before the one store.
- Gemm / MatMul and their fused forms: a register-tiled SGEMM; each thread computes a ``TM x TN`` tile of
  ``C = act(alpha * A . B + beta * bias + R)``, reading A and B through row/column strides (so ``transA`` /
  ``transB`` and constant weights in their ONNX layout need no packing) and clamping its loads at the
  matrix edges (only in-range elements are stored). Batched MatMul runs its batch items on grid z, each
  reading the A and B matrices numpy broadcasting gives it (an index table in ``__constant__`` memory when
  that is not a plain stride). GEMMs keep the launch-plan step kind "kernel"; a later cuBLASLt path can add
  a "gemm" step kind without changing these.
"""

from __future__ import annotations

import numpy as np

from lowering.errors import LoweringError
from lowering.ir import Node, Value
from lowering.opinfo import DOMAIN, EPILOGUE_ACTIVATIONS, FLOAT_MAX, window_geometry

from .registry import (
    MAX_GRID_YZ,
    CudaEmitContext,
    KernelCode,
    c_float,
    c_ints,
    cdiv,
    linear_launch,
    numel,
    register,
)

DEFAULT_PARAMS = {"LeakyRelu": (0.01,), "Clip": (-FLOAT_MAX, FLOAT_MAX), "Gelu": (0.0,)}
#: output channels per conv thread
CONV_TM = 4
#: the GEMM thread block (x over columns, y over rows) and each thread's tile
GEMM_BLOCK = (16, 16, 1)


def activation_code(node: Node, value: str) -> str:
    """The C expression applying the node's epilogue activation to ``value``."""
    act = node.attr("activation", "") if node.domain == DOMAIN else ""
    if not act:
        return value
    params = tuple(node.attr("activation_params", ()) or DEFAULT_PARAMS.get(act, ()))
    p = [c_float(x) for x in params]
    return {
        "Relu": f"lw_relu({value})",
        "LeakyRelu": f"lw_leaky({value}, {p[0] if p else c_float(0.01)})",
        "Clip": f"lw_clip({value}, {p[0] if p else c_float(-FLOAT_MAX)}, "
                f"{p[1] if len(p) > 1 else c_float(FLOAT_MAX)})",
        "Sigmoid": f"lw_sigmoid({value})",
        "Tanh": f"lw_tanhf({value})",
        "Gelu": f"lw_gelu({value}, {p[0] if p else '0.0f'})",
    }[act]


def check_activation(node: Node) -> str | None:
    act = node.attr("activation", "") if node.domain == DOMAIN else ""
    if act and act not in EPILOGUE_ACTIVATIONS:
        return f"cuda target: epilogue activation {act!r} is not supported"
    return None


# --- convolution ------------------------------------------------------------------------------------


def conv_residual_strides(r_shape, out_shape) -> tuple[int, int, int] | None:
    """(image, channel, position) strides of a residual broadcast over a conv output, None if unsupported."""
    r = (1,) * (len(out_shape) - len(r_shape)) + tuple(r_shape)
    spatial, out_spatial = r[2:], tuple(out_shape[2:])
    if spatial == out_spatial:
        ps = 1
    elif all(d == 1 for d in spatial):
        ps = 0
    else:
        return None
    plane = numel(spatial)
    return (0 if r[0] == 1 else r[1] * plane), (0 if r[1] == 1 else plane), ps


def check_conv(node: Node) -> str | None:
    x, w = node.input(0), node.input(1)
    if x.type.rank not in (3, 4):
        return f"cuda target: only 1-D and 2-D convolutions are supported, got a rank-{x.type.rank} input"
    if not w.is_const:
        return "cuda target: Conv weights must be a constant"
    r = node.input(3) if node.domain == DOMAIN else None
    if r is not None and conv_residual_strides(r.type.shape, node.output.type.shape) is None:
        return f"cuda target: residual shape {r.type.shape} broadcasts over only some spatial axes"
    return check_activation(node)


def conv_geometry(node: Node) -> dict:
    """N, C, H, W, M, G, KH, KW, SH, SW, DH, DW, PH, PW, OH, OW (1-D convs as H = 1)."""
    xs, ws = node.input(0).type.shape, node.input(1).type.shape
    geo = window_geometry(node, tuple(xs[2:]), tuple(ws[2:]))
    lift = (lambda t, one: (one,) + tuple(t)) if len(xs) == 3 else (lambda t, one: tuple(t))
    (h, w), (kh, kw) = lift(xs[2:], 1), lift(ws[2:], 1)
    (sh, sw), (dh, dw), (ph, pw) = lift(geo.strides, 1), lift(geo.dilations, 1), lift(geo.pads_begin, 0)
    oh, ow = lift(geo.out, 1)
    return dict(N=xs[0], C=xs[1], H=h, W=w, M=ws[0], G=node.attr("group", 1), KH=kh, KW=kw, SH=sh, SW=sw,
                DH=dh, DW=dw, PH=ph, PW=pw, OH=oh, OW=ow)


@register("Conv", f"{DOMAIN}::FusedConv", check=check_conv, data_inputs=3)
def emit_conv(ctx: CudaEmitContext, node: Node) -> KernelCode:
    g = conv_geometry(node)
    out = node.output
    bias = node.input(2)
    res = node.input(3) if node.domain == DOMAIN else None
    cg, mg = g["C"] // g["G"], g["M"] // g["G"]  # input and output channels per group
    tm = min(CONV_TM, mg)
    tiles = cdiv(mg, tm)  # channel tiles per group
    positions = g["OH"] * g["OW"]
    total = g["N"] * g["G"] * tiles * positions
    x = ctx.read(node.input(0), "x")
    w = ctx.weights(node.input(1).const.astype(np.float32), "w")
    b = ctx.read(bias, "bias") if bias is not None else None
    r = ctx.read(res, "res") if res is not None else None
    y = ctx.write(out)
    lines = [
        "const int i = lw_global_x();",
        f"if (i >= {total}) return;",
        f"const int ow = i % {g['OW']};",
        f"int t = i / {g['OW']};",
        f"const int oh = t % {g['OH']}; t /= {g['OH']};",
        f"const int tile = t % {tiles}; t /= {tiles};",
        f"const int grp = t % {g['G']};",
        f"const int n = t / {g['G']};",
        f"const int m0 = grp * {mg} + tile * {tm};  /* first output channel of this thread */",
        f"const int mend = grp * {mg} + {mg};",
        f"const float *xg = {x} + (n * {g['C']} + grp * {cg}) * {g['H'] * g['W']};",
        f"int wrow[{tm}];",
        f"LW_UNROLL for (int j = 0; j < {tm}; j++) wrow[j] = (m0 + j < mend ? m0 + j : mend - 1) * "
        f"{cg * g['KH'] * g['KW']};",
        f"float acc[{tm}];",
        f"LW_UNROLL for (int j = 0; j < {tm}; j++) acc[j] = 0.0f;",
        f"const int ih0 = oh * {g['SH']} - {g['PH']}, iw0 = ow * {g['SW']} - {g['PW']};",
        f"for (int c = 0; c < {cg}; c++) {{",
        f"    const float *xc = xg + c * {g['H'] * g['W']};",
        f"    for (int kh = 0; kh < {g['KH']}; kh++) {{",
        f"        const int ih = ih0 + kh * {g['DH']};",
        f"        if ((unsigned)ih >= {g['H']}u) continue;",
        f"        for (int kw = 0; kw < {g['KW']}; kw++) {{",
        f"            const int iw = iw0 + kw * {g['DW']};",
        f"            if ((unsigned)iw >= {g['W']}u) continue;",
        f"            const float xv = xc[ih * {g['W']} + iw];",
        f"            const int k = (c * {g['KH']} + kh) * {g['KW']} + kw;",
        f"            LW_UNROLL for (int j = 0; j < {tm}; j++) acc[j] += {w}[wrow[j] + k] * xv;",
        "        }",
        "    }",
        "}",
        f"LW_UNROLL for (int j = 0; j < {tm}; j++) {{",
        "    const int m = m0 + j;",
        "    if (m >= mend) break;",
        "    float v = acc[j];",
    ]
    if b is not None:
        lines.append(f"    v += {b}[m];")
    if r is not None:
        ns, cs, ps = conv_residual_strides(res.type.shape, out.type.shape)
        terms = [f"{s} * {name}" for s, name in ((ns, "n"), (cs, "m"), (ps, f"(oh * {g['OW']} + ow)")) if s]
        lines.append(f"    v += {r}[{' + '.join(terms) or '0'}];")
    lines += [
        f"    {y}[(n * {g['M']} + m) * {positions} + oh * {g['OW']} + ow] = {activation_code(node, 'v')};",
        "}",
    ]
    grid, block = linear_launch(total)
    macs = g["N"] * g["M"] * positions * cg * g["KH"] * g["KW"]
    return KernelCode("\n".join(lines), grid, block, flops=2 * macs)


# --- GEMM and MatMul --------------------------------------------------------------------------------


def matrix_strides(shape: tuple[int, ...]) -> tuple[int, int]:
    """Row and column strides of an operand (rank <= 2) broadcast over an [M, N] output."""
    rows, cols = ((1, 1) + tuple(shape))[-2:]
    return (0 if rows == 1 else cols), (0 if cols == 1 else 1)


def _batch_offset(ctx_prelude: list[str], kernel_table: str, index: list[int], step: int) -> str:
    """The C expression (in the batch item ``bz``) of one operand's element offset."""
    if len(set(index)) == 1:
        return str(index[0] * step)
    if index == list(range(len(index))):
        return f"bz * {step}"
    ctx_prelude.append(f"__constant__ int {kernel_table}[{len(index)}] = {c_ints(index)};")
    return f"{kernel_table}[bz] * {step}"


def emit_gemm_kernel(ctx: CudaEmitContext, node: Node, *, m: int, n: int, k: int, a: Value, b: Value,
                     a_strides: tuple[int, int], b_strides: tuple[int, int], a_index: list[int],
                     b_index: list[int], alpha: float = 1.0, beta: float = 1.0, bias: Value | None = None,
                     bias_strides: tuple[int, int] = (0, 0), res: Value | None = None,
                     res_strides: tuple[int, int] = (0, 0), res_step: int = 0) -> KernelCode:
    """C[i] = act(alpha * A[a_index[i]] . B[b_index[i]] + beta * bias + R[i]) for every batch item i: A
    (m x k) at element (r, c) = r * a_strides[0] + c * a_strides[1], B (k x n) likewise."""
    count = len(a_index)
    if count > MAX_GRID_YZ:
        raise LoweringError(f"cuda target: {node.label}: a batch of {count} GEMMs exceeds the grid's z limit")
    tm = 4 if m >= 16 else 1
    tn = 4 if n >= 16 else 1
    bx, by = (GEMM_BLOCK[0], GEMM_BLOCK[1]) if m >= 16 else (128, 1)
    grid = (cdiv(n, bx * tn), cdiv(m, by * tm), count)
    if grid[1] > MAX_GRID_YZ:
        raise LoweringError(f"cuda target: {node.label}: {m} GEMM rows exceed the grid's y limit")
    name = f"{ctx.kernel_name}_" if ctx.kernel_name else ""
    prelude: list[str] = []
    pa = ctx.read(a, "a")
    pb = ctx.read(b, "b")
    pc = ctx.read(bias, "bias") if bias is not None else None
    pr = ctx.read(res, "res") if res is not None else None
    y = ctx.write(node.output)
    a_off = _batch_offset(prelude, f"{name}a_index", list(a_index), m * k)
    b_off = _batch_offset(prelude, f"{name}b_index", list(b_index), k * n)
    (ars, acs), (brs, bcs) = a_strides, b_strides
    lines = [
        "const int bz = blockIdx.z;",
        f"const int n0 = (blockIdx.x * blockDim.x + threadIdx.x) * {tn};",
        f"const int m0 = (blockIdx.y * blockDim.y + threadIdx.y) * {tm};",
        f"if (m0 >= {m} || n0 >= {n}) return;",
        f"const float *am = {pa} + {a_off};",
        f"const float *bm = {pb} + {b_off};",
        f"int arow[{tm}], bcol[{tn}];",
        f"LW_UNROLL for (int r = 0; r < {tm}; r++) arow[r] = (m0 + r < {m} ? m0 + r : {m - 1}) * {ars};",
        f"LW_UNROLL for (int c = 0; c < {tn}; c++) bcol[c] = (n0 + c < {n} ? n0 + c : {n - 1}) * {bcs};",
        f"float acc[{tm}][{tn}];",
        f"LW_UNROLL for (int r = 0; r < {tm}; r++) LW_UNROLL for (int c = 0; c < {tn}; c++) "
        "acc[r][c] = 0.0f;",
        f"for (int kk = 0; kk < {k}; kk++) {{",
        f"    float av[{tm}], bv[{tn}];",
        f"    LW_UNROLL for (int r = 0; r < {tm}; r++) av[r] = am[arow[r] + kk * {acs}];",
        f"    LW_UNROLL for (int c = 0; c < {tn}; c++) bv[c] = bm[kk * {brs} + bcol[c]];",
        f"    LW_UNROLL for (int r = 0; r < {tm}; r++) LW_UNROLL for (int c = 0; c < {tn}; c++) "
        "acc[r][c] += av[r] * bv[c];",
        "}",
        f"float *yb = {y} + bz * {m * n};",
    ]
    if pr is not None and res_step:
        lines.append(f"const float *rb = {pr} + bz * {res_step};")
    elif pr is not None:
        lines.append(f"const float *rb = {pr};")
    lines += [
        f"LW_UNROLL for (int r = 0; r < {tm}; r++) {{",
        "    const int row = m0 + r;",
        f"    if (row >= {m}) break;",
        f"    LW_UNROLL for (int c = 0; c < {tn}; c++) {{",
        "        const int col = n0 + c;",
        f"        if (col >= {n}) break;",
        "        float v = " + ("acc[r][c];" if float(alpha) == 1.0 else f"{c_float(alpha)} * acc[r][c];"),
    ]
    if pc is not None:
        index = " + ".join(t for t in (f"row * {bias_strides[0]}" if bias_strides[0] else "",
                                       f"col * {bias_strides[1]}" if bias_strides[1] else "") if t) or "0"
        scaled = f"{pc}[{index}]" if float(beta) == 1.0 else f"{c_float(beta)} * {pc}[{index}]"
        lines.append(f"        v += {scaled};")
    if pr is not None:
        index = " + ".join(t for t in (f"row * {res_strides[0]}" if res_strides[0] else "",
                                       f"col * {res_strides[1]}" if res_strides[1] else "") if t) or "0"
        lines.append(f"        v += rb[{index}];")
    lines += [
        f"        yb[row * {n} + col] = {activation_code(node, 'v')};",
        "    }",
        "}",
    ]
    block = (bx, by, 1)
    return KernelCode("\n".join(lines), grid, block, flops=2 * count * m * n * k, prelude="\n".join(prelude))


def check_gemm(node: Node) -> str | None:
    a, b = node.input(0), node.input(1)
    if a.type.rank != 2 or b.type.rank != 2:
        return "cuda target: Gemm needs rank-2 A and B"
    for i, role in ((2, "C"), (3, "residual")):
        v = node.input(i)
        if v is not None and v.type.rank > 2:
            return f"cuda target: Gemm {role} of rank {v.type.rank} is not supported (at most 2)"
    return check_activation(node)


@register("Gemm", f"{DOMAIN}::FusedGemm", check=check_gemm)
def emit_gemm(ctx: CudaEmitContext, node: Node) -> KernelCode:
    a, b, c = node.input(0), node.input(1), node.input(2)
    res = node.input(3) if node.domain == DOMAIN else None
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    m, k = a.type.shape[::-1] if trans_a else a.type.shape
    n = b.type.shape[0] if trans_b else b.type.shape[1]
    return emit_gemm_kernel(
        ctx, node, m=m, n=n, k=k, a=a, b=b,
        a_strides=(1, m) if trans_a else (k, 1), b_strides=(1, k) if trans_b else (n, 1),
        a_index=[0], b_index=[0], alpha=node.attr("alpha", 1.0), beta=node.attr("beta", 1.0),
        bias=c, bias_strides=matrix_strides(c.type.shape) if c is not None else (0, 0),
        res=res, res_strides=matrix_strides(res.type.shape) if res is not None else (0, 0))


def check_matmul(node: Node) -> str | None:
    a, b = node.input(0), node.input(1)
    if a.type.rank < 1 or b.type.rank < 1:
        return "cuda target: MatMul needs operands of rank 1 or more"
    if node.domain != DOMAIN:
        return None
    if a.type.rank < 2 or b.type.rank < 2:
        return "cuda target: FusedMatMul needs operands of rank 2 or more"
    n = node.output.type.shape[-1]
    c, r = node.input(2), node.input(3)
    if c is not None and (numel(c.type.shape) not in (1, n) or c.type.shape[-1:] not in ((), (1,), (n,))):
        return f"cuda target: FusedMatMul bias of shape {c.type.shape} is not a vector over the last axis"
    if r is not None and r.type != node.output.type:
        return f"cuda target: FusedMatMul residual {r.type} does not have the output's type"
    return check_activation(node)


@register("MatMul", f"{DOMAIN}::FusedMatMul", check=check_matmul)
def emit_matmul(ctx: CudaEmitContext, node: Node) -> KernelCode:
    a, b = node.input(0), node.input(1)
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    sa = (1,) + a.type.shape if a.type.rank == 1 else a.type.shape
    sb = b.type.shape + (1,) if b.type.rank == 1 else b.type.shape
    m, k = (sa[-1], sa[-2]) if trans_a else (sa[-2], sa[-1])
    n = sb[-2] if trans_b else sb[-1]
    batch_a, batch_b = sa[:-2], sb[:-2]
    a_strides = (1, m) if trans_a else (k, 1)
    b_strides = (1, k) if trans_b else (n, 1)
    if numel(batch_b) == 1 and not trans_a:  # one B: every row of every batch item in one GEMM
        rows = numel(batch_a) * m
        m, a_index, b_index = rows, [0], [0]
    else:
        out_batch = np.broadcast_shapes(batch_a, batch_b)
        a_index = np.broadcast_to(np.arange(numel(batch_a)).reshape(batch_a), out_batch).reshape(-1).tolist()
        b_index = np.broadcast_to(np.arange(numel(batch_b)).reshape(batch_b), out_batch).reshape(-1).tolist()
    fused = node.domain == DOMAIN
    c, r = (node.input(2), node.input(3)) if fused else (None, None)
    bias_cs = 0 if c is None or numel(c.type.shape) == 1 else 1
    return emit_gemm_kernel(
        ctx, node, m=m, n=n, k=k, a=a, b=b, a_strides=a_strides, b_strides=b_strides, a_index=a_index,
        b_index=b_index, alpha=node.attr("alpha", 1.0) if fused else 1.0, bias=c, bias_strides=(0, bias_cs),
        res=r, res_strides=(n, 1), res_step=m * n)

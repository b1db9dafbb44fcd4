"""Convolution, Gemm and MatMul lowering for the cuda target (fp32).

- Conv / lowering::FusedConv (NCHW, 1-D and 2-D, groups incl. depthwise, strides, pads, dilations): an
  implicit GEMM per group, ``out[m, p] = W[m, :] . col[:, p]`` with ``K = C/G * KH * KW``, where the column
  ``col[:, p]`` is never materialised: each thread owns one output position and ``CONV_TM`` output channels
  of one group, walks K as (channel, kh, kw) and addresses the input directly (padding taps are skipped),
  reusing every input value for its channels. Bias, residual (broadcast through image/channel/position
  strides) and activation run on the accumulators before the one store. A 1x1, stride-1, ungrouped conv
  large enough for the tiled SGEMM is that SGEMM, batched over the images (``W . x[n]``).
- Gemm / MatMul and their fused forms: ``C = act(alpha * A . B + beta * bias + R)``, A and B read through
  row/column strides (so ``transA`` / ``transB`` and constant weights in their ONNX layout need no packing).
  Above a size threshold (:func:`gemm_tile`) a shared-memory tiled SGEMM: a 64 x 64 (or 128 x 128) block
  tile, K staged through two ``__shared__`` buffers with register prefetch of the next step, a 4 x 4 (8 x 8)
  register micro-tile per thread, one ``__syncthreads`` per K step; below it the thread-independent
  kernel, each thread a ``TM x TN`` tile read straight from global memory, clamping its loads at the edges.
  Both store only in-range elements. Batched MatMul runs its batch items on grid z, each reading the A and
  B matrices numpy broadcasting gives it (an index table in ``__constant__`` memory when that is not a plain
  stride). GEMMs keep the launch-plan step kind "kernel"; a later cuBLASLt path can add a "gemm" step kind
  without changing these.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    pointwise = (g["KH"], g["KW"], g["SH"], g["SW"], g["G"]) == (1, 1, 1, 1, 1) and (g["OH"], g["OW"]) == (
        g["H"], g["W"])
    positions = g["OH"] * g["OW"]
    cfg = gemm_tile(g["M"], positions, g["C"], g["N"]) if pointwise else None
    if cfg is not None:  # a 1x1 conv is a GEMM per image: out[n] (M x HW) = W (M x C) . x[n] (C x HW)
        ns, cs, ps = conv_residual_strides(res.type.shape, out.type.shape) if res is not None else (0, 0, 0)
        return emit_gemm_kernel(
            ctx, node, m=g["M"], n=positions, k=g["C"], a=node.input(1), b=node.input(0),
            a_strides=(g["C"], 1), b_strides=(positions, 1), a_index=[0] * g["N"],
            b_index=list(range(g["N"])), bias=bias, bias_strides=(1, 0), res=res, res_strides=(cs, ps),
            res_step=ns, tile=cfg)
    cg, mg = g["C"] // g["G"], g["M"] // g["G"]  # input and output channels per group
    ktot, columns = cg * g["KH"] * g["KW"], g["N"] * positions
    cfg = gemm_tile(mg, columns, ktot, g["G"])
    if cfg is not None:
        return _emit_conv_tiled(ctx, node, g, cfg)
    tm = min(CONV_TM, mg)
    tiles = cdiv(mg, tm)  # channel tiles per group
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


def _emit_conv_tiled(ctx: CudaEmitContext, node: Node, g: dict, cfg: TileConfig) -> KernelCode:
    """The implicit-GEMM conv through the tiled SGEMM: per group (grid z), ``out (M/G x N*OH*OW) =
    W_g (M/G x K) . col (K x N*OH*OW)``, the im2col matrix gathered tile by tile into shared memory."""
    out = node.output
    bias = node.input(2)
    res = node.input(3) if node.domain == DOMAIN else None
    cg, mg = g["C"] // g["G"], g["M"] // g["G"]
    positions = g["OH"] * g["OW"]
    ktot, columns = cg * g["KH"] * g["KW"], g["N"] * positions
    x = ctx.read(node.input(0), "x")
    w = ctx.weights(node.input(1).const.astype(np.float32), "w")
    b = ctx.read(bias, "bias") if bias is not None else None
    r = ctx.read(res, "res") if res is not None else None
    y = ctx.write(out)
    lines = [
        "const int bz = blockIdx.z;  /* the group */",
        f"const float *am = {w} + bz * {mg * ktot};",
        *_tiled_body(cfg, m=mg, n=columns, k=ktot, a_strides=(ktot, 1), b_strides=(0, 0),
                     conv={**g, "x": f"{x} + bz * {cg * g['H'] * g['W']}"}),
        f"LW_UNROLL for (int r = 0; r < {cfg.tm}; r++) {{",
        f"    const int row = bm0 + {cfg.row('r')};",
        f"    if (row >= {mg}) break;",
        f"    const int ch = bz * {mg} + row;",
        f"    LW_UNROLL for (int c = 0; c < {cfg.tn}; c++) {{",
        f"        const int col = bn0 + {cfg.col('c')};",
        f"        if (col >= {columns}) break;",
        f"        const int img = col / {positions}, p = col % {positions};",
        "        float v = acc[r][c];",
    ]
    if b is not None:
        lines.append(f"        v += {b}[ch];")
    if r is not None:
        ns, cs, ps = conv_residual_strides(res.type.shape, out.type.shape)
        terms = [f"{s} * {name}" for s, name in ((ns, "img"), (cs, "ch"), (ps, "p")) if s]
        lines.append(f"        v += {r}[{' + '.join(terms) or '0'}];")
    lines += [
        f"        {y}[(img * {g['M']} + ch) * {positions} + p] = {activation_code(node, 'v')};",
        "    }",
        "}",
    ]
    grid = (cdiv(columns, cfg.bn), cdiv(mg, cfg.bm), g["G"])
    if grid[1] > MAX_GRID_YZ or grid[2] > MAX_GRID_YZ:
        raise LoweringError(f"cuda target: {node.label}: the conv's grid {grid} exceeds the y/z limits")
    macs = g["N"] * g["M"] * positions * ktot
    return KernelCode("\n".join(lines), grid, cfg.block, flops=2 * macs)


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


@dataclass(frozen=True)
class TileConfig:
    """A shared-memory tiled SGEMM: a ``bm x bn`` block tile, K staged ``bk`` at a time through two
    ``__shared__`` buffers, each of the ``(bm/tm) * (bn/tn)`` threads a ``tm x tn`` register micro-tile."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    @property
    def block(self) -> tuple[int, int, int]:
        return (self.bn // self.tn, self.bm // self.tm, 1)

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    def row(self, r: str) -> str:
        """The row in the block tile of this thread's micro-tile row ``r``: groups of ``QUAD`` consecutive
        rows ``bm / (tm / QUAD)`` apart, so a warp's float4 shared-memory reads do not conflict."""
        return _quads("tr", r, self.tm, self.bm)

    def col(self, c: str) -> str:
        return _quads("tc", c, self.tn, self.bn)

    def smem_bytes(self) -> int:
        return 4 * 2 * self.bk * (self.bm + TILE_PAD + self.bn + TILE_PAD)


#: a thread's micro-tile rows (columns) come in groups of QUAD consecutive ones (one float4 read)
QUAD = 4


def _quads(base: str, i: str, per_thread: int, tile: int) -> str:
    if per_thread == QUAD:
        return f"{base} + {i}"
    return f"{base} + {i} / {QUAD} * {tile * QUAD // per_thread} + {i} % {QUAD}"


#: 64 x 64 tiles (4 x 4 per thread) and, when there are enough of them to fill the GPU, 128 x 128 (8 x 8)
TILE_SMALL = TileConfig(64, 64, 16, 4, 4)
TILE_LARGE = TileConfig(128, 128, 8, 8, 8)
#: padding of each shared-memory tile row (keeps rows 16-byte aligned, shifts banks between rows)
TILE_PAD = 4
#: streaming multiprocessors to fill before the large tile is used (an H100/H200 has 132)
TILE_LARGE_BLOCKS = 132


def gemm_tile(m: int, n: int, k: int, count: int) -> TileConfig | None:
    """The tiled kernel's configuration for a batch of ``count`` m x n x k GEMMs, or None for the simple
    kernel (tiny or skinny GEMMs, where a 64 x 64 tile would be mostly padding)."""
    if m < 32 or n < 32 or k < 8:
        return None
    if cdiv(m, TILE_LARGE.bm) * cdiv(n, TILE_LARGE.bn) * count >= TILE_LARGE_BLOCKS:
        return TILE_LARGE
    return TILE_SMALL


def _gemm_epilogue(node: Node, *, m: int, n: int, alpha: float, beta: float, pc: str | None, pr: str | None,
                   bias_strides: tuple[int, int], res_strides: tuple[int, int], indent: str) -> list[str]:
    """``v = alpha * acc[r][c] (+ beta * bias) (+ residual)``, activated and stored at (row, col)."""
    scaled_acc = "acc[r][c]" if float(alpha) == 1.0 else f"{c_float(alpha)} * acc[r][c]"
    lines = [f"{indent}float v = {scaled_acc};"]
    if pc is not None:
        index = " + ".join(t for t in (f"row * {bias_strides[0]}" if bias_strides[0] else "",
                                       f"col * {bias_strides[1]}" if bias_strides[1] else "") if t) or "0"
        scaled = f"{pc}[{index}]" if float(beta) == 1.0 else f"{c_float(beta)} * {pc}[{index}]"
        lines.append(f"{indent}v += {scaled};")
    if pr is not None:
        index = " + ".join(t for t in (f"row * {res_strides[0]}" if res_strides[0] else "",
                                       f"col * {res_strides[1]}" if res_strides[1] else "") if t) or "0"
        lines.append(f"{indent}v += rb[{index}];")
    lines.append(f"{indent}yb[row * {n} + col] = {activation_code(node, 'v')};")
    return lines


def _tiled_body(cfg: TileConfig, *, m: int, n: int, k: int, a_strides: tuple[int, int],
                b_strides: tuple[int, int], conv: dict | None = None) -> list[str]:
    """The main loop of the tiled SGEMM: ``acc[tm][tn]`` of this thread, for the block tile at
    (blockIdx.y * bm, blockIdx.x * bn) of the matrices ``am`` (m x k) and ``bm`` (k x n).

    Each K step of ``bk`` loads the A tile (bm x bk) and the B tile (bk x bn) from global memory into
    registers, consecutive threads walking the operand's contiguous axis (so the loads coalesce for either
    layout: transA / transB need no packing); out-of-range elements load as 0, which adds exact zeros. The
    registers go to the shared buffer not being read, so one barrier per K step suffices: the next tile's
    global loads are in flight while this tile's FMAs run (register-staged double buffering).

    With ``conv`` (a :func:`conv_geometry` plus ``x``, the input pointer expression of this group's first
    channel of image 0) B is the implicit im2col matrix of a convolution, ``B[k, col]`` with k = (c, kh, kw)
    and col = (image, oh, ow), gathered from the input (0 at padding taps): each thread loads one column,
    decomposed once."""
    (ars, acs), (brs, bcs) = a_strides, b_strides
    threads, bm, bn, bk = cfg.threads, cfg.bm, cfg.bn, cfg.bk
    steps = cdiv(k, bk)
    la, lb = bm * bk // threads, bk * bn // threads  # elements each thread loads per K step

    def loader(contiguous_outer: bool, outer: int) -> tuple[str, str, str, str]:
        """(outer index, k index, outer step, k step) of a thread's loads of a tile (outer x bk)."""
        if contiguous_outer:  # consecutive threads along the outer axis (m of A, n of B)
            return f"tid % {outer}", f"tid / {outer}", "0", str(threads // outer)
        return f"tid / {bk}", f"tid % {bk}", str(threads // bk), "0"

    a_outer, a_k, a_os, a_ks = loader(acs != 1 and ars == 1, bm)
    b_outer, b_k, b_os, b_ks = loader(conv is not None or bcs == 1 or brs != 1, bn)

    def load(k0: str, indent: str) -> list[str]:
        return [
            f"{indent}LW_UNROLL for (int i = 0; i < {la}; i++) {{",
            f"{indent}    const int r = bm0 + la_o + i * {a_os}, c = {k0} + la_k + i * {a_ks};",
            f"{indent}    ra[i] = r < {m} && c < {k} ? am[r * {ars} + c * {acs}] : 0.0f;",
            f"{indent}}}",
            *(load_b(k0, indent) if conv is None else gather_b(k0, indent)),
        ]

    def load_b(k0: str, indent: str) -> list[str]:
        return [
            f"{indent}LW_UNROLL for (int i = 0; i < {lb}; i++) {{",
            f"{indent}    const int r = {k0} + lb_k + i * {b_ks}, c = bn0 + lb_o + i * {b_os};",
            f"{indent}    rb_[i] = r < {k} && c < {n} ? bm[r * {brs} + c * {bcs}] : 0.0f;",
            f"{indent}}}",
        ]

    def gather_b(k0: str, indent: str) -> list[str]:
        g = conv
        taps = g["KH"] * g["KW"]
        return [
            f"{indent}LW_UNROLL for (int i = 0; i < {lb}; i++) {{",
            f"{indent}    const int r = {k0} + lb_k + i * {b_ks};",
            f"{indent}    float v = 0.0f;",
            f"{indent}    if (col_ok && r < {k}) {{",
            f"{indent}        const int c = r / {taps}, tap = r - c * {taps};",
            f"{indent}        const int kh = tap / {g['KW']}, kw = tap - kh * {g['KW']};",
            f"{indent}        const int ih = ih0 + kh * {g['DH']}, iw = iw0 + kw * {g['DW']};",
            f"{indent}        if ((unsigned)ih < {g['H']}u && (unsigned)iw < {g['W']}u) "
            f"v = xcol[(c * {g['H']} + ih) * {g['W']} + iw];",
            f"{indent}    }}",
            f"{indent}    rb_[i] = v;",
            f"{indent}}}",
        ]

    def store(buf: str, indent: str) -> list[str]:
        return [
            f"{indent}LW_UNROLL for (int i = 0; i < {la}; i++) "
            f"As[{buf}][la_k + i * {a_ks}][la_o + i * {a_os}] = ra[i];",
            f"{indent}LW_UNROLL for (int i = 0; i < {lb}; i++) "
            f"Bs[{buf}][lb_k + i * {b_ks}][lb_o + i * {b_os}] = rb_[i];",
        ]

    return [
        f"__shared__ __align__(16) float As[2][{bk}][{bm + TILE_PAD}];",
        f"__shared__ __align__(16) float Bs[2][{bk}][{bn + TILE_PAD}];",
        f"const int tid = threadIdx.y * {cfg.block[0]} + threadIdx.x;",
        f"const int bm0 = blockIdx.y * {bm}, bn0 = blockIdx.x * {bn};",
        f"const int la_o = {a_outer}, la_k = {a_k};",
        f"const int lb_o = {b_outer}, lb_k = {b_k};",
        f"const int tr = threadIdx.y * {QUAD}, tc = threadIdx.x * {QUAD};",  # first row, column
        *([] if conv is None else [
            "/* this thread's column of the implicit im2col matrix: (image, oh, ow) */",
            "const int bcol = bn0 + lb_o;",
            f"const bool col_ok = bcol < {n};",
            f"const int cimg = bcol / {conv['OH'] * conv['OW']}, cpos = bcol % {conv['OH'] * conv['OW']};",
            f"const int ih0 = cpos / {conv['OW']} * {conv['SH']} - {conv['PH']}, "
            f"iw0 = cpos % {conv['OW']} * {conv['SW']} - {conv['PW']};",
            f"const float *xcol = {conv['x']} + (col_ok ? cimg : 0) * {conv['C'] * conv['H'] * conv['W']};",
        ]),
        f"float ra[{la}], rb_[{lb}];",
        f"float acc[{cfg.tm}][{cfg.tn}];",
        f"LW_UNROLL for (int r = 0; r < {cfg.tm}; r++) LW_UNROLL for (int c = 0; c < {cfg.tn}; c++) "
        "acc[r][c] = 0.0f;",
        *load("0", ""),
        *store("0", ""),
        "__syncthreads();",
        f"for (int t = 0; t < {steps}; t++) {{",
        "    const int cur = t & 1;",
        f"    if (t + 1 < {steps}) {{  /* the next K step's tiles, into registers */",
        *load(f"(t + 1) * {bk}", "        "),
        "    }",
        f"    LW_UNROLL for (int kk = 0; kk < {bk}; kk++) {{",
        f"        float av[{cfg.tm}], bv[{cfg.tn}];",
        f"        LW_UNROLL for (int r = 0; r < {cfg.tm}; r++) av[r] = As[cur][kk][{cfg.row('r')}];",
        f"        LW_UNROLL for (int c = 0; c < {cfg.tn}; c++) bv[c] = Bs[cur][kk][{cfg.col('c')}];",
        f"        LW_UNROLL for (int r = 0; r < {cfg.tm}; r++) LW_UNROLL for (int c = 0; c < {cfg.tn}; c++) "
        "acc[r][c] += av[r] * bv[c];",
        "    }",
        f"    if (t + 1 < {steps}) {{  /* into the buffer no thread reads in this step */",
        *store("cur ^ 1", "        "),
        "    }",
        "    __syncthreads();",
        "}",
    ]


def emit_gemm_kernel(ctx: CudaEmitContext, node: Node, *, m: int, n: int, k: int, a: Value, b: Value,
                     a_strides: tuple[int, int], b_strides: tuple[int, int], a_index: list[int],
                     b_index: list[int], alpha: float = 1.0, beta: float = 1.0, bias: Value | None = None,
                     bias_strides: tuple[int, int] = (0, 0), res: Value | None = None,
                     res_strides: tuple[int, int] = (0, 0), res_step: int = 0,
                     tile: TileConfig | None | bool = True) -> KernelCode:
    """C[i] = act(alpha * A[a_index[i]] . B[b_index[i]] + beta * bias + R[i]) for every batch item i: A
    (m x k) at element (r, c) = r * a_strides[0] + c * a_strides[1], B (k x n) likewise, the residual
    of item i at ``i * res_step`` (row, col) strides ``res_strides``. ``tile``: True picks the kernel by
    size (:func:`gemm_tile`), None forces the simple kernel, a :class:`TileConfig` that tiled kernel."""
    count = len(a_index)
    if count > MAX_GRID_YZ:
        raise LoweringError(f"cuda target: {node.label}: a batch of {count} GEMMs exceeds the grid's z limit")
    cfg = gemm_tile(m, n, k, count) if tile is True else tile or None
    if cfg is not None:
        grid = (cdiv(n, cfg.bn), cdiv(m, cfg.bm), count)
        block = cfg.block
        tm, tn = cfg.tm, cfg.tn
    else:
        tm = 4 if m >= 16 else 1
        tn = 4 if n >= 16 else 1
        bx, by = (GEMM_BLOCK[0], GEMM_BLOCK[1]) if m >= 16 else (128, 1)
        grid = (cdiv(n, bx * tn), cdiv(m, by * tm), count)
        block = (bx, by, 1)
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
    lines = ["const int bz = blockIdx.z;"]
    if cfg is None:
        lines += [
            f"const int n0 = (blockIdx.x * blockDim.x + threadIdx.x) * {tn};",
            f"const int m0 = (blockIdx.y * blockDim.y + threadIdx.y) * {tm};",
            f"if (m0 >= {m} || n0 >= {n}) return;",
        ]
    lines += [
        f"const float *am = {pa} + {a_off};",
        f"const float *bm = {pb} + {b_off};",
    ]
    if cfg is None:
        lines += [
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
        ]
        row, col = "m0 + r", "n0 + c"
    else:
        lines += _tiled_body(cfg, m=m, n=n, k=k, a_strides=a_strides, b_strides=b_strides)
        row, col = f"bm0 + {cfg.row('r')}", f"bn0 + {cfg.col('c')}"
    lines.append(f"float *yb = {y} + bz * {m * n};")
    if pr is not None and res_step:
        lines.append(f"const float *rb = {pr} + bz * {res_step};")
    elif pr is not None:
        lines.append(f"const float *rb = {pr};")
    lines += [
        f"LW_UNROLL for (int r = 0; r < {tm}; r++) {{",
        f"    const int row = {row};",
        f"    if (row >= {m}) break;",
        f"    LW_UNROLL for (int c = 0; c < {tn}; c++) {{",
        f"        const int col = {col};",
        f"        if (col >= {n}) break;",
        *_gemm_epilogue(node, m=m, n=n, alpha=alpha, beta=beta, pc=pc, pr=pr, bias_strides=bias_strides,
                        res_strides=res_strides, indent="        "),
        "    }",
        "}",
    ]
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

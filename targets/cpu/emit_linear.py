"""Convolution, Gemm and MatMul lowering for the cpu target.

All three become calls into the packed GEMM of ``kernels_gemm.c``:

- Conv / lowering::FusedConv (NCHW; 1-D and 2-D) runs on the conv GEMM of ``kernels_conv.c``: weights
  prepacked per group as A panels of ``CONV_MR`` rows, ``out[co, p] = W[co, :] . col[:, p]``, with B read
  in place for 1x1 stride-1 unpadded convs (no im2col) and from im2col panels otherwise; small planes
  (``conv_transposed``) run the transposed product instead (positions broadcast, output channels as
  vectors, weights packed by ``pack_conv_weights_t``); other spatial or strided convs on AVX-512
  (``conv_direct``) read the input, rewritten once into zero-padded phase grids, through the micro-kernel
  with no im2col; depthwise convs (group == channels) run directly (AVX-512: over phase grids,
  LW_DEPTHWISE2D_G, see depthwise_grid_plan; other ISAs: lw_depthwise2d). Bias, residual and activation
  are applied to the accumulators before the one store.
- Gemm / lowering::FusedGemm, MatMul and lowering::FusedMatMul (N-d, numpy broadcasting, bias over the
  last axis, residual and activation in the epilogue): constant operands are prepacked at compile time, a
  runtime A is read in place through its strides and a runtime B is packed into the workspace; a MatMul
  whose B is one matrix runs as a single GEMM over all of A's rows (M = batch * rows). A batch of GEMMs
  (attention's [B,H,S,D] x [B,H,D,S] when unfused) runs as one ``lw_gemm`` call whose tasks span the
  batch items, so a small M still keeps every thread busy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowering.ir import Node, Value
from lowering.opinfo import DOMAIN, EPILOGUE_ACTIVATIONS, FLOAT_MAX, window_geometry

from .pack import pack_a, pack_b, pack_conv_weights, pack_conv_weights_t, packed_a_floats, packed_b_floats
from .registry import EmitContext, KernelCode, align, batch_index, c_float, c_longs, numel, register

ACTIVATION_CODES = {"": 0, "Relu": 1, "LeakyRelu": 2, "Clip": 3, "Sigmoid": 4, "Tanh": 5, "Gelu": 6}
DEFAULT_PARAMS = {"LeakyRelu": (0.01,), "Clip": (-FLOAT_MAX, FLOAT_MAX)}
ITEM_BYTES = 64  # upper bound of sizeof(lw_gemm_item)
DW_SLOTS, DW_ACCUMULATORS = 64, 8  # LW_DW_SLOTS and LW_DW_ACC of kernels_conv.c
DW_CHUNK_ROWS = 8  # depthwise output rows per staged chunk
CONV_MR = {16: 8, 8: 6, 4: 4}  # LW_CV_MR of kernels_conv.c by vector width: weight rows per packed panel
CONV_NV_MAX = 3  # the largest LW_CV_NV of kernels_conv.c (in-place and direct conv tile width, vectors)
CT_VECTORS = 3  # LW_CT_NV of kernels_conv.c: output channels per transposed conv tile, in vectors
DT_VECTORS = 2  # LW_DT_NV of kernels_conv.c: output channels per lw_conv2d_dt tile, in vectors
WG_MR, WG_NB, WG_SLOTS = 8, 48, 8  # LW_WG_MR, LW_WG_NB, LW_WG_SLOTS of kernels_conv.c (lw_conv2d_wino)
#: the fields of lw_conv_geom, in order
CONV_FIELDS = ("N", "C", "H", "W", "M", "G", "KH", "KW", "SH", "SW", "DH", "DW", "PH", "PW", "OH", "OW")


def check_activation(node: Node) -> str | None:
    act = node.attr("activation", "")
    if act and act not in EPILOGUE_ACTIVATIONS:
        return f"epilogue activation {act!r} is not supported by the cpu target"
    return None


def epilogue(node: Node, alpha=1.0, beta=1.0, bias=(0, 0), res=(0, 0)) -> str:
    """A C initializer for lw_epilogue."""
    act = node.attr("activation", "") if node.domain == DOMAIN else ""
    params = tuple(node.attr("activation_params", ()) or DEFAULT_PARAMS.get(act, ()))
    params = (params + (0.0, 0.0))[:2]
    return (
        f"{{{c_float(alpha)}, {c_float(beta)}, {bias[0]}, {bias[1]}, {res[0]}, {res[1]}, "
        f"{ACTIVATION_CODES[act]}, {c_float(params[0])}, {c_float(params[1])}}}"
    )


def matrix_strides(shape: tuple[int, ...]) -> tuple[int, int]:
    """Row and column strides of an operand (rank <= 2) broadcast over an [M, N] output."""
    rows, cols = ((1, 1) + tuple(shape))[-2:]
    return (0 if rows == 1 else cols), (0 if cols == 1 else 1)


# --- convolution ------------------------------------------------------------------------------------


def conv_residual_strides(r_shape, out_shape) -> tuple[int, int, int] | None:
    """(image, channel, position) strides of a residual broadcast over a conv output, None if unsupported."""
    r = (1,) * (len(out_shape) - len(r_shape)) + tuple(r_shape)
    spatial, out_spatial = r[2:], tuple(out_shape[2:])
    if spatial == out_spatial:
        cs = 1
    elif all(d == 1 for d in spatial):
        cs = 0
    else:
        return None
    plane = numel(spatial)
    return (0 if r[0] == 1 else r[1] * plane), (0 if r[1] == 1 else plane), cs


def check_conv(node: Node) -> str | None:
    x, w = node.input(0), node.input(1)
    if not w.is_const:  # run-time weights: im2col + GEMM with the weights read in place
        from .emit_conv_runtime import check_conv_runtime  # (that module imports this one)

        return check_conv_runtime(node)
    if x.type.rank not in (3, 4):
        return (
            f"only 1-D and 2-D convolutions (3-D or 4-D tensors) are supported by the cpu target, "
            f"got a rank-{x.type.rank} input"
        )
    r = node.input(3) if node.domain == DOMAIN else None
    if r is not None and conv_residual_strides(r.type.shape, node.output.type.shape) is None:
        return f"residual shape {r.type.shape} broadcasts over only some spatial axes; unsupported on cpu"
    return check_activation(node)


def conv_geometry(node: Node) -> tuple[dict, int]:
    """The lw_conv_geom fields (1-D convs as H = 1) and the multiply-accumulates per image."""
    xs, ws = node.input(0).type.shape, node.input(1).type.shape
    geo = window_geometry(node, tuple(xs[2:]), tuple(ws[2:]))
    lift = (lambda t, one: (one,) + tuple(t)) if len(xs) == 3 else (lambda t, one: tuple(t))
    (h, w), (kh, kw) = lift(xs[2:], 1), lift(ws[2:], 1)
    (sh, sw), (dh, dw), (ph, pw) = lift(geo.strides, 1), lift(geo.dilations, 1), lift(geo.pads_begin, 0)
    (oh, ow) = lift(geo.out, 1)
    g = node.attr("group", 1)
    values = (xs[0], xs[1], h, w, ws[0], g, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow)
    fields = dict(zip(CONV_FIELDS, values))
    macs = ws[0] * oh * ow * (xs[1] // g) * kh * kw
    return fields, macs


def depthwise_plane_floats(g: dict, vec: int) -> int:
    """Workspace floats per staging slot of lw_depthwise2d: the zero-padded input rows of one chunk of
    output rows, staged once per kernel column (see lw_dw_plan_of in kernels_conv.c), rounded to 16."""
    nvec = -(-g["OW"] // vec)
    v = 8 if nvec >= 5 else 4 if nvec >= 3 else nvec
    r = DW_ACCUMULATORS // v
    lq = -(-nvec // v) * v * vec
    ch = min(DW_CHUNK_ROWS, -(-g["OH"] // r) * r)  # output rows per chunk (r divides DW_CHUNK_ROWS)
    rows = (ch - 1) * g["SH"] + (g["KH"] - 1) * g["DH"] + 1
    return align(rows * g["KW"] * lq, 16)


DWG_BUDGET = 4096  # floats of staged phase grids per chunk of LW_DEPTHWISE2D_G (kernels_conv.c): L1-resident
DWG_MAX_VECTORS = 1024  # LW_DWG_MAXV: most output vectors per chunk
DWG_BAND, DWG_BAND_CHUNK = 4, 8  # LW_DWG_BAND of kernels_conv.c: output rows per band; rows per band chunk


def depthwise_bands(g: dict) -> bool:
    """LW_DWG_BANDS of kernels_conv.c: the grid depthwise conv computes in bands of output rows."""
    return (g["KH"], g["KW"], g["SH"], g["DH"]) == (3, 3, 1, 1) and g["OW"] > 16


def depthwise_grid_plan(g: dict) -> tuple[int, int] | None:
    """(output rows per chunk, workspace floats per thread's slot: two staging buffers) of
    LW_DEPTHWISE2D_G, the AVX-512 depthwise conv over phase grids (lw_dwg_plan_of in kernels_conv.c computes
    the same sizes), or None (lw_depthwise2d) when a kernel has more taps than it tables or a chunk's
    vectors do not fit its table.

    Flattened chunks are the whole plane when its staged grids fit in DWG_BUDGET floats (MobileNetV2's
    56x56 and smaller planes), else at most DWG_BAND_CHUNK rows; band chunks (depthwise_bands) are that many,
    a whole number of bands: measured on MobileNetV2's planes, 8 rows made the 112x112 and 56x56 convs 25%
    faster than 30 to 56 rows (both buffers stay in L1 while the input streams through); 4 rows alike."""
    if g["KH"] * g["KW"] > 64:
        return None
    eh, ew = (g["KH"] - 1) * g["DH"] // g["SH"], (g["KW"] - 1) * g["DW"] // g["SW"]
    wq, nph = g["OW"] + ew, g["SH"] * g["SW"]

    def phase_floats(ch: int) -> int:
        return (ch + eh) * wq + (16 if nph > 1 else 0)

    if depthwise_bands(g):
        ch = min(DWG_BAND_CHUNK, -(-g["OH"] // DWG_BAND) * DWG_BAND)
    else:
        ch = 1
        while ch < g["OH"] and nph * phase_floats(ch + 1) <= DWG_BUDGET:
            ch += 1
        if ch < g["OH"]:  # a plane in several chunks: 8 rows (the stride-2 112x112 plane 13% faster than 16)
            ch = min(ch, DWG_BAND_CHUNK)
        while ch > 1 and ch * wq > 16 * DWG_MAX_VECTORS:
            ch -= 1
    if ch * wq > 16 * DWG_MAX_VECTORS:
        return None
    return ch, 2 * align(nph * phase_floats(ch) + ew + 32, 16)


def depthwise_unstaged(g: dict) -> bool:
    """LW_DW3S2 of kernels_conv.c: LW_DEPTHWISE2D_G computes 3x3 stride-2 depthwise convs straight from the
    input rows (lw_dw3s2_plane), with no staging slots."""
    return (g["KH"], g["KW"], g["SH"], g["SW"], g["DH"], g["DW"]) == (3, 3, 2, 2, 1, 1)


def conv_in_place(g: dict) -> bool:
    """1x1, stride-1, unpadded: the input plane is the GEMM's B matrix, read in place (no im2col)."""
    return (g["KH"], g["KW"], g["SH"], g["SW"], g["PH"], g["PW"]) == (1, 1, 1, 1, 0, 0) and (
        g["OH"], g["OW"]) == (g["H"], g["W"])


def conv_ksplit(g: dict) -> bool:
    """LW_CV_KSPLIT of kernels_conv.c: a pointwise conv that reduces many channels to few (MobileNetV2's
    projections) sums K in two halves, split over the threads at even thread counts so each reads the
    channels a depthwise conv's static split left in its core; it needs [M][P] floats of workspace."""
    k, mg = g["C"] // g["G"], g["M"] // g["G"]
    return conv_in_place(g) and g["G"] == 1 and 256 < k <= 640 and k >= 4 * mg


def direct_grid(g: dict) -> tuple[int, int]:
    """(grid row width Wq, floats of workspace) of lw_conv2d_d's phase grids (lw_dc_geom_of in
    kernels_conv.c): per channel SH * SW planes of OH + ((KH-1)*DH)//SH rows of Wq = OW + ((KW-1)*DW)//SW,
    then a zeroed tail."""
    eh, ew = (g["KH"] - 1) * g["DH"] // g["SH"], (g["KW"] - 1) * g["DW"] // g["SW"]
    wq = g["OW"] + ew
    slack = -(-(ew + CONV_NV_MAX * 16) // 16) * 16
    return wq, g["C"] * g["SH"] * g["SW"] * (g["OH"] + eh) * wq + slack


def conv_direct(g: dict, vec: int) -> bool:
    """Whether a conv runs directly over phase grids (lw_conv2d_d: no im2col): on AVX-512 every conv with a
    spatial window or a stride that does not run transposed (conv_transposed: small planes, where the
    transposed GEMM measured faster), except depthwise and pointwise ones, kernels of more than 64 taps and
    rows narrower than 4 grid columns. Measured against im2col (one thread): ResNet's stem 7x7/2 C = 3
    1.8x, MobileNetV2's 3x3/2 stem 1.3x, 3x3 64@56 1.3x, 128@28 1.15x, 256@14 about even. AVX2 and SSE
    builds keep im2col (lw_dc_gather and lw_dc_scatter have no masked vector form there)."""
    if vec != 16 or conv_in_place(g) or (g["G"] == g["C"] and g["G"] > 1):
        return False
    return g["KH"] * g["KW"] <= 64 and direct_grid(g)[0] >= 4


def conv_direct_t(g: dict, vec: int) -> bool:
    """Whether a conv runs directly over phase grids with output channels in the vector lanes (lw_conv2d_dt:
    grid positions broadcast, no vector load at a tap's shift): AVX-512 convs with a spatial window and
    more than 64 output positions (smaller planes run transposed over an im2col, lw_conv2d_t). Measured
    at 1 thread against lw_conv2d_d: ResNet-18's 3x3 convs 163-168 -> 187-195 GFLOP/s (ONNX Runtime
    189-197), 3x3/2 141 -> 171, its 7x7/2 stem 164 -> 177, MobileNetV2's 3x3/2 stem 83 -> 87."""
    if vec != 16 or (g["G"] == g["C"] and g["G"] > 1) or g["KH"] * g["KW"] == 1:
        return False
    return g["OH"] * g["OW"] > 64 and g["KH"] * g["KW"] <= 64 and direct_grid(g)[0] >= 4


def conv_winograd(g: dict, vec: int) -> bool:
    """Whether a conv runs as Winograd F(2x2, 3x3) (lw_conv2d_wino: 2.25x fewer multiplications): AVX-512,
    3x3, stride 1, no dilation, one group, at least 16 input channels and more than 64 positions. Measured
    at 1 thread against lw_conv2d_dt: ResNet-18's 3x3 64@56 1.06 -> 0.75 ms, 128@28 1.03 -> 0.71 ms,
    256@14 1.03 -> 0.81 ms (ONNX Runtime 1.02-1.07 ms); 512@7 1.26 -> 1.63 ms (its transformed weights,
    16 MiB, stream from memory for 20 tiles), so 7x7 planes stay on lw_conv2d_t. Every block of positions
    reads all of the transformed weights, so they must fit in L2 with room to spare (2 MiB: 128 x 256
    channels) or be read by at most two blocks (ResNet's 256@14: 4 MiB, two blocks); VGG's 256@56 would
    stream 4 MiB and its 512@28 16 MiB per 48 positions."""
    if vec != 16 or (g["G"], g["KH"], g["KW"], g["SH"], g["SW"], g["DH"], g["DW"]) != (1, 3, 3, 1, 1, 1, 1):
        return False
    if g["C"] < 16 or g["OH"] * g["OW"] <= 64:
        return False
    u_bytes = 16 * g["M"] * g["C"] * 4
    blocks = -(-winograd_vectors(g) // 3)
    return u_bytes <= 2 << 20 or u_bytes * blocks <= 8 << 20


def winograd_vectors(g: dict) -> int:
    """Vectors of 16 grid positions lw_conv2d_wino computes: 2x2 tiles over rows of ceil(OW/2) + 1."""
    th, tw = -(-g["OH"] // 2), -(-g["OW"] // 2)
    return -(-(th * (tw + 1)) // 16)


def winograd_weights(w: np.ndarray) -> np.ndarray:
    """ONNX 3x3 conv weights [M, C, 3, 3] -> U = G w G^T per (output, input) channel, as 16 packed A operands
    [16][ceil(M/8)][C][8] (xi = 4 i + j of the 4x4 U), for lw_conv2d_wino. Computed in float64."""
    gm = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    u = np.einsum("ak,mckl,bl->abmc", gm, w.astype(np.float64), gm).astype(np.float32)
    return np.concatenate([pack_a(u[i, j], WG_MR).reshape(-1) for i in range(4) for j in range(4)])


def winograd_workspace(g: dict) -> int:
    """Bytes of lw_conv2d_wino's workspace: the phase grids of the virtual 4x4 stride-2 conv over 2x2 tiles
    (and their slack), then one slot per thread (at most LW_WG_SLOTS, at most one per block of vectors)."""
    th, tw = -(-g["OH"] // 2), -(-g["OW"] // 2)
    grid = g["C"] * 4 * (th + 1) * (tw + 1) + 64
    nvec = winograd_vectors(g)
    slot = 16 * (WG_NB * (g["C"] + -(-g["M"] // WG_MR) * WG_MR) + 32)  # each xi's planes padded by 16 floats
    return align(4 * grid) + 4 * min(nvec, WG_SLOTS) * slot


def conv_transposed(g: dict, vec: int) -> bool:
    """Whether a conv runs as the transposed GEMM (lw_conv2d_t: positions broadcast, output channels as
    vectors), measured faster on AVX-512 for small planes: no position tile is wasted on 49 positions. Not
    when the output channels fill their panels poorly or K is too short to pay for the transposed store."""
    p, k, mg = g["OH"] * g["OW"], g["C"] // g["G"] * g["KH"] * g["KW"], g["M"] // g["G"]
    nc = CT_VECTORS * vec
    if -(-mg // nc) * nc > 1.25 * mg or k < 128:
        return False
    if p <= 64:
        return True
    strided = g["SH"] > 1 or g["SW"] > 1
    return p <= 256 and ((strided and g["KH"] * g["KW"] > 1) or (conv_in_place(g) and k >= 512))


@register("Conv", f"{DOMAIN}::FusedConv", check=check_conv, data_inputs=3)
def emit_conv(ctx: EmitContext, node: Node) -> KernelCode:
    if not node.input(1).is_const:
        from .emit_conv_runtime import emit_conv_runtime

        return emit_conv_runtime(ctx, node)
    g, macs = conv_geometry(node)
    out = node.output
    bias = node.input(2)
    res = node.input(3) if node.domain == DOMAIN else None
    ns, rs, cs = conv_residual_strides(res.type.shape, out.type.shape) if res is not None else (0, 0, 0)
    epi = epilogue(node, bias=(1, 0), res=(rs, cs))
    geom = c_longs(g[k] for k in CONV_FIELDS)
    lines = [f"static const lw_conv_geom g = {geom};", f"const lw_epilogue e = {epi};"]
    args = f"{ctx.ptr(node.input(0))}, WEIGHTS, {ctx.opt_ptr(bias)}, {ctx.opt_ptr(res)}, {ns}, {ctx.out(out)}"
    w = node.input(1).const.astype(np.float32)
    grid = depthwise_grid_plan(g) if g["G"] == g["C"] and g["G"] > 1 and ctx.isa.vec == 16 else None
    if grid is not None:
        ch, slot = grid
        # static: the macro's OpenMP region is outlined here and folds the geometry and the epilogue
        lines[1] = f"static const lw_epilogue e = {epi};"
        call = args.replace("WEIGHTS", ctx.weights(w))
        lines.append(f"LW_DEPTHWISE2D_G(ctx->nt, &g, {call}, (float *)ctx->ws, {slot}, {ch}, &e);")
        workspace = 0 if depthwise_unstaged(g) else min(DW_SLOTS, g["N"] * g["M"]) * slot * 4
    elif g["G"] == g["C"] and g["G"] > 1:
        slot = depthwise_plane_floats(g, ctx.isa.vec)
        weights = ctx.weights(w)
        lines.append(
            f"lw_depthwise2d(ctx->nt, &g, {args.replace('WEIGHTS', weights)}, (float *)ctx->ws, {slot}, &e);"
        )
        # the staging slots, then the taps' offsets (one long each)
        workspace = min(DW_SLOTS, g["N"] * g["M"]) * slot * 4 + g["KH"] * g["KW"] * 8
    elif conv_winograd(g, ctx.isa.vec):
        u = ctx.weights(winograd_weights(w))
        lines.append(f"lw_conv2d_wino(ctx->nt, &g, {args.replace('WEIGHTS', u)}, ctx->ws, &e);")
        workspace = winograd_workspace(g)
    elif conv_direct_t(g, ctx.isa.vec):
        packed = ctx.weights(pack_conv_weights_t(w, g["G"], DT_VECTORS * ctx.isa.vec))
        lines.append(f"lw_conv2d_dt(ctx->nt, &g, {args.replace('WEIGHTS', packed)}, ctx->ws, &e);")
        workspace = 4 * direct_grid(g)[1]
    elif conv_transposed(g, ctx.isa.vec):
        packed = ctx.weights(pack_conv_weights_t(w, g["G"], CT_VECTORS * ctx.isa.vec))
        lines.append(f"lw_conv2d_t(ctx->nt, &g, {args.replace('WEIGHTS', packed)}, ctx->ws, &e);")
        k = g["C"] // g["G"] * g["KH"] * g["KW"]
        workspace = align(g["G"] * ITEM_BYTES)
        if not conv_in_place(g):
            workspace += g["G"] * 4 * k * g["OH"] * g["OW"]  # row-major im2col [G][K][P]
    elif conv_direct(g, ctx.isa.vec):
        packed = ctx.weights(pack_conv_weights(w, g["G"], CONV_MR[ctx.isa.vec]))
        lines.append(f"lw_conv2d_d(ctx->nt, &g, {args.replace('WEIGHTS', packed)}, ctx->ws, &e);")
        workspace = 4 * direct_grid(g)[1]
    else:
        packed = ctx.weights(pack_conv_weights(w, g["G"], CONV_MR[ctx.isa.vec]))
        lines.append(f"lw_conv2d(ctx->nt, &g, {args.replace('WEIGHTS', packed)}, ctx->ws, &e);")
        k = g["C"] // g["G"] * g["KH"] * g["KW"]
        workspace = align(g["G"] * ITEM_BYTES)
        if not conv_in_place(g):
            workspace += g["G"] * 4 * packed_b_floats(k, g["OH"] * g["OW"], ctx.isa.nr)
        elif conv_ksplit(g):
            workspace += 4 * g["M"] * g["OH"] * g["OW"]  # the other half's sums
    return KernelCode("\n".join(lines), flops=2 * g["N"] * macs, workspace=workspace)


# --- GEMM and MatMul --------------------------------------------------------------------------------


@dataclass
class GemmOperand:
    """``count`` matrices stored back to back, each logically ``rows x cols`` (stored transposed if so)."""

    value: Value
    count: int
    rows: int
    cols: int
    transposed: bool = False

    @property
    def strides(self) -> tuple[int, int]:
        return (1, self.rows) if self.transposed else (self.cols, 1)

    def matrices(self) -> list[np.ndarray]:
        stored = (self.cols, self.rows) if self.transposed else (self.rows, self.cols)
        flat = self.value.const.astype(np.float32).reshape(self.count, *stored)
        return [m.T if self.transposed else m for m in flat]


def emit_gemm_batch(
    ctx: EmitContext,
    node: Node,
    a: GemmOperand,
    b: GemmOperand,
    a_index,
    b_index,
    epi: str,
    bias: str = "NULL",
    res: str = "NULL",
    res_step: int = 0,
) -> KernelCode:
    """C = epilogue(A[a_index[i]] . B[b_index[i]]) for every output matrix i (stored back to back); batch
    item i reads the residual at ``res + i * res_step``.

    Constant operands are prepacked into the weights. A runtime A is read in place through its strides (no
    packing pass, see kernels_gemm.c); a runtime B is packed into the workspace first (its panels are
    reused by every row panel)."""
    m, k, n, count = a.rows, a.cols, b.cols, len(a_index)
    a_size, b_size = packed_a_floats(m, k, ctx.isa.mr), packed_b_floats(k, n, ctx.isa.nr)
    lines = ["lw_gemm_item *items = (lw_gemm_item *)ctx->ws;"]
    workspace = align(count * ITEM_BYTES)
    if a.value.is_const:
        packed = np.concatenate([pack_a(mat, ctx.isa.mr).reshape(-1) for mat in a.matrices()])
        lines.append(f"const float *apk = {ctx.weights(packed)};")
        a_strides = (0, 0)
    else:
        lines.append(f"const float *apk = {ctx.ptr(a.value)};")
        a_size, a_strides = m * k, a.strides
    if b.value.is_const:
        packed = np.concatenate([pack_b(mat, ctx.isa.nr).reshape(-1) for mat in b.matrices()])
        lines.append(f"const float *bpk = {ctx.weights(packed)};")
    else:
        rs, cs = b.strides
        lines.append(f"float *bpk = (float *)(ctx->ws + {workspace});")
        lines.append(
            f"lw_pack_b(ctx->nt, {ctx.ptr(b.value)}, {k * n}, {b.count}, {rs}, {cs}, {k}, {n}, bpk);"
        )
        workspace += align(b.count * b_size * 4)
    lines.append(f"float *y = {ctx.out(node.output)};")
    index = batch_index(lines, count, {"a": list(a_index), "b": list(b_index)})
    lines += [
        f"for (long i = 0; i < {count}; i++) {{",
        f"    items[i].a = apk + {index['a']} * {a_size};",
        f"    items[i].b = bpk + {index['b']} * {b_size};",
        f"    items[i].c = y + i * {m * n};",
        f"    items[i].bias = {bias};",
        f"    items[i].res = {res if res == 'NULL' or not res_step else f'{res} + i * {res_step}'};",
        "}",
        f"static const lw_gemm_shape s = {{{m}, {n}, {k}, {n}, {epi}, {a_strides[0]}, {a_strides[1]}}};",
        f"lw_gemm(ctx->nt, &s, items, {count});",
    ]
    return KernelCode("\n".join(lines), flops=2 * count * m * n * k, workspace=workspace)


def check_gemm(node: Node) -> str | None:
    a, b = node.input(0), node.input(1)
    if a.type.rank != 2 or b.type.rank != 2:
        return "Gemm needs rank-2 A and B"
    for i, role in ((2, "C"), (3, "residual")):
        v = node.input(i)
        if v is not None and v.type.rank > 2:
            return f"Gemm {role} of rank {v.type.rank} is not supported (at most 2)"
    return check_activation(node)


@register("Gemm", f"{DOMAIN}::FusedGemm", check=check_gemm)
def emit_gemm(ctx: EmitContext, node: Node) -> KernelCode:
    a, b, c = node.input(0), node.input(1), node.input(2)
    res = node.input(3) if node.domain == DOMAIN else None
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    m, k = a.type.shape[::-1] if trans_a else a.type.shape
    n = b.type.shape[0] if trans_b else b.type.shape[1]
    a_op = GemmOperand(a, 1, m, k, trans_a)
    b_op = GemmOperand(b, 1, k, n, trans_b)
    epi = epilogue(
        node,
        alpha=node.attr("alpha", 1.0),
        beta=node.attr("beta", 1.0),
        bias=matrix_strides(c.type.shape) if c is not None else (0, 0),
        res=matrix_strides(res.type.shape) if res is not None else (0, 0),
    )
    return emit_gemm_batch(ctx, node, a_op, b_op, [0], [0], epi, ctx.opt_ptr(c), ctx.opt_ptr(res))


def check_matmul(node: Node) -> str | None:
    a, b = node.input(0), node.input(1)
    if a.type.rank < 1 or b.type.rank < 1:
        return "MatMul needs operands of rank 1 or more"
    if node.domain != DOMAIN:
        return None
    if a.type.rank < 2 or b.type.rank < 2:
        return "FusedMatMul needs operands of rank 2 or more"
    n = node.output.type.shape[-1]
    c, r = node.input(2), node.input(3)
    if c is not None and (numel(c.type.shape) not in (1, n) or c.type.shape[-1:] not in ((), (1,), (n,))):
        return f"FusedMatMul bias of shape {c.type.shape} is not a vector over the last axis ({n})"
    if r is not None and r.type != node.output.type:
        return f"FusedMatMul residual {r.type} does not have the output's type {node.output.type}"
    return check_activation(node)


def matmul_operands(node: Node) -> tuple[GemmOperand, GemmOperand, list[int], list[int]]:
    """The GEMM batch of a (Fused)MatMul: both operands as stacks of matrices and, per output matrix, the
    A and B matrix it multiplies (numpy broadcasting of the batch axes). A rank-1 A is one row, a rank-1 B
    one column. When B is a single matrix and A is not transposed, A's rows from every batch item form one
    GEMM (M = B * S for a [B, S, K] activation): one call, no per-batch loop, the weights packed once."""
    a, b = node.input(0), node.input(1)
    trans_a, trans_b = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    sa = (1,) + a.type.shape if a.type.rank == 1 else a.type.shape
    sb = b.type.shape + (1,) if b.type.rank == 1 else b.type.shape
    m, k = (sa[-1], sa[-2]) if trans_a else (sa[-2], sa[-1])
    n = sb[-2] if trans_b else sb[-1]
    batch_a, batch_b = sa[:-2], sb[:-2]
    if numel(batch_b) == 1 and not trans_a:
        rows = numel(batch_a) * m
        return GemmOperand(a, 1, rows, k), GemmOperand(b, 1, k, n, trans_b), [0], [0]
    out_batch = np.broadcast_shapes(batch_a, batch_b)
    a_index = np.broadcast_to(np.arange(numel(batch_a)).reshape(batch_a), out_batch).reshape(-1)
    b_index = np.broadcast_to(np.arange(numel(batch_b)).reshape(batch_b), out_batch).reshape(-1)
    return (
        GemmOperand(a, numel(batch_a), m, k, trans_a),
        GemmOperand(b, numel(batch_b), k, n, trans_b),
        a_index.tolist(),
        b_index.tolist(),
    )


@register("MatMul", f"{DOMAIN}::FusedMatMul", check=check_matmul)
def emit_matmul(ctx: EmitContext, node: Node) -> KernelCode:
    a_op, b_op, a_index, b_index = matmul_operands(node)
    fused = node.domain == DOMAIN
    c, r = (node.input(2), node.input(3)) if fused else (None, None)
    n = b_op.cols
    bias_cs = 0 if c is None or numel(c.type.shape) == 1 else 1
    epi = epilogue(node, alpha=node.attr("alpha", 1.0) if fused else 1.0, bias=(0, bias_cs),
                   res=(n, 1) if r is not None else (0, 0))
    return emit_gemm_batch(ctx, node, a_op, b_op, a_index, b_index, epi, ctx.opt_ptr(c), ctx.opt_ptr(r),
                           res_step=a_op.rows * n)

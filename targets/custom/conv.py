"""Lowering of ``lowering::QConv`` and ``lowering::QMatMul`` to NPU-1 instructions (ACCELERATOR.md C.1-C.3).

A conv is an implicit GEMM: one GEMM per (output block, input-channel block, tap) reads the padded input
tile in UB at the tap's offset (``ub_inner_stride`` = horizontal stride, ``ub_outer_stride`` = UB rows per
output row); the input zero point pads the tile (LOAD padding) and is folded into the bias. A QMatMul
``A[M, K] x B[K, N]`` is the 1x1 conv of the ``(M, 1)`` image with ``K`` channels that its layout
``[K/32][M][32]`` already is. The tiling (:mod:`.tiling`) is searched per layer; the schedule is
double-buffered with the B.3 semaphores:

- S0/S1 input chunk ready/free (LD <-> MX), S6/S7 weight chunk ready/free (LD <-> MX); a resident operand
  is loaded once (its loads signal "ready", nothing frees it);
- S2/S3 accumulator tile ready/free (MX <-> VP), S4/S5 output tile ready/free (VP <-> ST).

Every token is consumed within the layer, so the layer leaves the semaphores at ``SEM_INIT``.
Program order is per step: its LOADs, then its GEMMs; after a tile's last step: its ACTs and its STORE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from lowering.opinfo import window_geometry
from runtime.accel.config import AccelConfig
from runtime.accel.timing import dma_cost

from .builder import (
    LD_MX_READY,
    LD_VP_READY,
    MX_LD_FREE,
    MX_VP_READY,
    ST_VP_FREE,
    VP_MX_FREE,
    VP_ST_READY,
    Act,
    LayerStats,
    ProgramBuilder,
)
from .packing import PB_RECORD_LINES, fits_int32, folded_bias, pack_lut, pack_params, pack_weights
from .tiling import (
    MAX_FIELD,
    MAX_STRIDE_FIELD,
    ConvGeom,
    Plan,
    compulsory_bytes,
    estimate_cycles,
    pool_slot,
    pool_tiles,
    ring_pieces,
    run_pieces,
    search,
)

W_READY, W_FREE = 6, 7          # LD -> MX weight chunk ready / MX -> LD weight slot free
MAX_PAD, MAX_INNER_STRIDE = 7, 7
HOST_GROUPED = "depthwise/grouped conv with <32 channels per group runs on the host (C.5)"


# ---- what runs on the NPU ----------------------------------------------------------------------------------
def _is_int8(value) -> bool:
    return value is not None and value.type is not None and value.type.dtype.numpy == np.dtype(np.int8)


def _const(node, i):
    v = node.input(i)
    return None if v is None else v.const


def conv_geom(node, cfg: AccelConfig) -> ConvGeom:
    """The :class:`ConvGeom` of a QConv (2-D) or QMatMul (``A[M, K]``) node."""
    lut = node.attr("lut") is not None and len(node.attr("lut")) > 0
    if node.op == "QMatMul":
        m, k = node.input(0).type.shape
        return ConvGeom(m, 1, k, int(node.input(1).type.shape[1]), block=cfg.block, lut=lut)
    _, cin, h, w = node.input(0).type.shape
    cout, _, kh, kw = node.input(1).const.shape
    geo = window_geometry(node, (h, w), (kh, kw))
    return ConvGeom(h, w, cin, cout, kh, kw, *geo.strides, *geo.pads_begin, *geo.pads_end, block=cfg.block,
                    lut=lut)


def _qconv_reason(node) -> str | None:
    x, w = node.input(0), node.input(1)
    if x is None or x.type is None or x.type.rank != 4:
        return "only 2-D convolutions (4-D input) run on the NPU"
    group = node.attr("group", 1)
    if group != 1:
        return HOST_GROUPED if x.type.shape[1] // group < 32 else "grouped conv not supported yet"
    if w is None or not w.is_const or w.const.ndim != 4:
        return "conv weights must be a constant 4-D tensor"
    if any(d != 1 for d in node.attr("dilations", (1, 1))):
        return "dilated conv not supported"
    if x.type.shape[0] != 1:
        return "batch > 1 not supported yet"
    return None


def _qmatmul_reason(node) -> str | None:
    a, bmat = node.input(0), node.input(1)
    if a is None or a.type is None or a.type.rank != 2 or a.is_const:
        return "only a 2-D activation A [M, K] runs on the NPU"
    if bmat is None or not bmat.is_const:
        return "activation x activation MatMul not supported yet"
    if bmat.const.ndim != 2:
        return "B must be a constant 2-D [K, N] matrix"
    return None


def _quant_reason(node, weight_zp_attr: str, x_zp_attr: str, weights: np.ndarray, cout: int) -> str | None:
    """The integer-contract checks shared by QConv and QMatMul (``weights`` as ``[Cout, ...]``)."""
    if not (_is_int8(node.input(0)) and _is_int8(node.output)) or weights.dtype != np.int8:
        return "only int8 activations and weights run on the NPU"
    if node.attr(weight_zp_attr, 0) != 0:
        return f"asymmetric weights ({weight_zp_attr} != 0) not supported"
    bias = _const(node, 2)
    if node.input(2) is not None and (bias is None or bias.dtype != np.int32 or bias.size != cout):
        return "bias must be a constant int32 vector of one entry per output channel"
    for attr in ("multiplier", "shift"):
        if np.asarray(node.attr(attr)).size not in (1, cout):
            return f"{attr} must have 1 or {cout} entries"
    lut = node.attr("lut")
    if lut is not None and len(lut) not in (0, 256):
        return "lut must have 256 entries"
    if not fits_int32(folded_bias(weights, bias, node.attr(x_zp_attr, 0))):
        return "bias with the folded input zero point overflows int32"
    return None


def _geometry_reason(g: ConvGeom) -> str | None:
    if max(g.pt, g.pl, g.pb, g.pr) > MAX_PAD:
        return f"padding > {MAX_PAD} not supported (LOAD pad fields)"
    if g.pt >= g.kh or g.pb >= g.kh or g.pl >= g.kw or g.pr >= g.kw:
        return "padding >= kernel size not supported"
    if max(g.sh, g.sw) > MAX_INNER_STRIDE:
        return f"stride > {MAX_INNER_STRIDE} not supported (ub_inner_stride field)"
    if max(g.h, g.w, g.wo) > MAX_FIELD or g.w * g.row_step > MAX_STRIDE_FIELD:
        return f"feature maps wider or taller than {MAX_FIELD} not supported"
    if g.cin * g.taps * 255 * 128 >= 1 << 31:
        return "reduction too long: the int32 accumulator could overflow"
    return None


def unsupported_reason(node, cfg: AccelConfig | None = None) -> str | None:
    """None when the NPU runs ``node`` (a ``lowering::QConv`` / ``lowering::QMatMul``), else why not."""
    cfg = cfg or AccelConfig()
    if node.op == "QConv":
        why = _qconv_reason(node)
        if why is None:
            w = node.input(1).const
            why = _quant_reason(node, "w_zero_point", "x_zero_point", w, w.shape[0])
    elif node.op == "QMatMul":
        why = _qmatmul_reason(node)
        if why is None:
            w = np.ascontiguousarray(node.input(1).const.T)
            why = _quant_reason(node, "b_zero_point", "a_zero_point", w, w.shape[0])
    else:
        return f"{node.op} is not a conv or matmul"
    if why is None:
        g = conv_geom(node, cfg)
        why = _geometry_reason(g)
        if why is None and g.nb * PB_RECORD_LINES > cfg.pb_lines:
            why = "too many output channels for the parameter buffer"
        if why is None and search(cfg, g).plan is None:
            why = "no tiling fits the on-chip buffers"
    return why


# ---- C.4 fusion and residency ------------------------------------------------------------------------------
@dataclass
class Epilogue:
    """How a conv layer is fused with its neighbours (ACCELERATOR.md C.4); the default is a plain layer.

    ``add``/``skip``: a ``lowering::QAdd`` computed in the epilogue: after ACT writes an output tile, the
    matching tile of ``skip`` (the add's other operand, in DRAM) is LOADed and EWISE adds it (the conv's
    output is operand ``1 - skip_index``); only the sum is STOREd (to the add's output).
    ``in_base``: the input is already in UB at this line in the resident-input layout (written by the previous
    layer), so no input is LOADed. ``out_region``: ``(base line, consumer geometry, consumer input zero
    point)``: ACT writes the output straight into the next layer's padded UB region (after filling its pad
    lines with the zero point) and nothing is STOREd. ``own_base``/``own_lines``: the UB lines this layer's
    own buffers (input tiles, output and skip slots) use (``own_lines`` 0: all of UB). ``pool``: a MaxPool
    fused per output tile (``y`` is its output): ACT writes each tile's rows into a pooling slot, POOL reduces
    them into the output slot and only the pooled rows are STOREd (``tiling.pool_tiles``)."""

    add: object = None
    skip: Act | None = None
    skip_index: int = 1
    in_base: int | None = None
    out_region: tuple | None = None
    own_base: int = 0
    own_lines: int = 0
    pool: object = None

    def geom(self, g: ConvGeom) -> ConvGeom:
        return dataclasses.replace(g, skip=self.add is not None, in_ub=self.in_base is not None,
                                   out_ub=self.out_region is not None, ub_lines=self.own_lines,
                                   pool=pool_tuple(self.pool))


def pool_tuple(pool) -> tuple:
    """``ConvGeom.pool`` of a MaxPool node fused into its producing conv (``()`` for None)."""
    if pool is None:
        return ()
    from .vpu import _pool_geometry

    p = _pool_geometry(pool, avg=False)
    return (p.kh, p.kw, p.sh, p.sw, p.pt, p.pl, p.pb, p.pr, p.oh, p.ow)


def region_lines(g: ConvGeom) -> int:
    """UB lines of a consumer's resident padded input (``[cb][u_need][wt]``)."""
    return g.cb * g.u_need * g.wt


def region_reason(g: ConvGeom) -> str | None:
    """Why a producer cannot write this consumer's input straight into its UB region (None if it can)."""
    if g.row_step != 1 or g.col_len != g.w or g.u_real != (g.pt, g.pt + g.h):
        return "the consumer does not read every input row and column"
    if g.w > MAX_FIELD or g.h > MAX_FIELD:
        return "rows too long for ACT"
    return None


def ewise_add_fields(node, skip_index: int) -> tuple[str, dict]:
    """(EWISE op, PB line fields) of a QAdd (vpu.lower_qadd's parameters)."""
    from . import vpu

    ma, mb = vpu._int(node, "a_multiplier"), vpu._int(node, "b_multiplier")
    op = "SUB" if mb < 0 and vpu._in(-mb, vpu.INT32) else "ADD"
    return op, dict(ma=ma, mb=-mb if op == "SUB" else mb, shift=vpu._int(node, "shift"),
                    za=vpu._int(node, "a_zero_point", 0), zb=vpu._int(node, "b_zero_point", 0),
                    **vpu._finish_params(node))


# ---- lowering ----------------------------------------------------------------------------------------------
def lower_qconv(b: ProgramBuilder, node, x: Act, y: Act, stats: LayerStats,
                ep: Epilogue | None = None) -> None:
    """Emit QConv ``node`` (``x`` -> ``y``, both in DRAM unless ``ep`` keeps them in UB) into the builder's
    current layer; with ``ep.add``, ``y`` is the fused add's output."""
    _check_supported(node, b.cfg)
    ep = ep or Epilogue()
    _lower(b, node, ep.geom(conv_geom(node, b.cfg)), node.input(1).const, "x_zero_point", x, y, stats, ep)


def lower_qmatmul(b: ProgramBuilder, node, a: Act, y: Act, stats: LayerStats) -> None:
    """Emit QMatMul ``node`` (``a[M, K]`` -> ``y[M, N]``) into the builder's current layer."""
    _check_supported(node, b.cfg)
    w = np.ascontiguousarray(node.input(1).const.T)[:, :, None, None]      # [N, K, 1, 1]
    _lower(b, node, conv_geom(node, b.cfg), w, "a_zero_point", a, y, stats, Epilogue())


def _check_supported(node, cfg) -> None:
    why = unsupported_reason(node, cfg)
    if why:
        raise ValueError(f"{node.label} cannot run on the NPU: {why}")


def _lower(b: ProgramBuilder, node, g: ConvGeom, w: np.ndarray, x_zp_attr: str, x: Act, y: Act,
           stats: LayerStats, ep: Epilogue) -> None:
    cfg = b.cfg
    x_zp = int(node.attr(x_zp_attr, 0))
    bias = folded_bias(w, _const(node, 2), x_zp)
    lut = node.attr("lut")
    consts = dict(w=b.constant(pack_weights(w, cfg.block)),
                  pb=b.constant(pack_params(bias, node.attr("multiplier"), node.attr("shift"),
                                            node.attr("out_zero_point", 0), cfg.block)),
                  lut=b.constant(pack_lut(lut)) if g.lut else None)
    if ep.add is not None:
        from .vpu import _lut, param_line

        op, fields = ewise_add_fields(ep.add, ep.skip_index)
        add_lut = _lut(ep.add)
        consts.update(add_op=op, add_pb=b.constant(param_line(**fields, line_bytes=cfg.line_bytes)),
                      add_lut=None if add_lut is None else b.constant(pack_lut(add_lut)))
    if ep.out_region is not None or ep.pool is not None:
        zp = int(ep.out_region[2]) if ep.pool is None else -128
        consts["fill_pb"] = b.constant(pack_params(np.zeros(1, np.int64), 0, 1, zp, cfg.block)[:1])
    result = search(cfg, g)
    if result.plan is None:
        raise ValueError("no tiling fits the on-chip buffers with this fusion")
    start = len(b.instructions)
    act = dict(clamp_min=int(node.attr("clamp_min", -128)), clamp_max=int(node.attr("clamp_max", 127)),
               lut_en=g.lut, lut_id=0)
    _Schedule(b, g, result.plan, x, y, x_zp, consts, act, ep).emit()
    instrs = b.instructions[start:]
    stats.macs = g.macs
    stats.compulsory_bytes = compulsory_bytes(cfg, g)
    stats.predicted_dram_bytes = sum(dma_cost(cfg, i)[0] for i in instrs if i.op in ("LOAD", "STORE"))
    stats.predicted_cycles = estimate_cycles(cfg, instrs)
    p = result.plan
    stats.tiling = dict(Ho_t=p.ho_t, Mt=p.ho_t * g.wo, Nt=p.nt * cfg.block, Kt=p.kc * cfg.block,
                        order=p.order, residency=p.residency, candidates=result.candidates,
                        best_exhaustive_bytes=result.best_exhaustive_bytes, search_bytes=result.bytes,
                        search_cycles=result.cycles)


class _Schedule:
    """Emits one layer's instructions for plan ``p`` (UB from ``ep.own_base``: input region, then two output
    slots, then two skip slots; a UB-resident input lives at ``ep.in_base`` instead; WB: the resident weights
    or two weight slots; ACC: two accumulator slots; PB: the records from line 0, then the fused add's line,
    then the pad-fill record).

    Semaphores: the B.3 set above. With a fused add, the input and weight chunks share the "ready" token S0
    (the LD queue completes in order, so the step's last load signalling covers the others), S6 is "skip tile
    ready" (LD -> VP) and the WAR semaphore the resident operand leaves unused (S7 with resident weights,
    else S1) is "skip slot free" (VP -> LD)."""

    def __init__(self, b: ProgramBuilder, g: ConvGeom, p: Plan, x: Act, y: Act, x_zp: int, consts: dict,
                 act: dict, ep: Epilogue | None = None):
        self.b, self.g, self.p, self.x, self.y, self.x_zp = b, g, p, x, y, x_zp
        self.consts, self.act = consts, act
        self.ep = ep = ep or Epilogue()
        self.blk = b.cfg.block
        self.m_max = p.ho_t * g.wo
        hin_max = max(u1 - u0 for u0, u1 in (g.tile_u(p.ho_t, i) for i in range(self.mt)))
        self.in_slot_lines = p.kc * hin_max * g.wt
        if g.in_ub:
            self.in_base, in_lines = ep.in_base, 0
        else:
            self.in_base = ep.own_base
            in_lines = g.cb * g.u_need * g.wt if p.in_res else 2 * self.in_slot_lines
            if p.ring:
                in_lines = g.cb * p.ring * g.wt
        self.pool_base = ep.own_base + in_lines
        self.pslot = pool_slot(g, p.ho_t) if g.pool else (0, 0, 0)
        self.out_base = self.pool_base + 2 * g.nb * self.pslot[0] * self.pslot[1]
        self.skip_base = self.out_base + (0 if g.out_ub else 2 * p.nt * self.m_max)
        self.w_slot_lines = p.nt * p.kc * g.taps * self.blk
        self.in_ready, self.w_ready = LD_MX_READY, (LD_MX_READY if g.skip else W_READY)
        self.in_free, self.w_free = MX_LD_FREE, W_FREE
        self.skip_free = (W_FREE if p.w_res else MX_LD_FREE) if g.skip else None
        self.add_pb = g.nb * PB_RECORD_LINES
        self.fill_pb = self.add_pb + 1

    @property
    def mt(self) -> int:
        return -(-self.g.ho // self.p.ho_t)

    @property
    def n_tiles(self) -> int:
        return -(-self.g.nb // self.p.nt)

    @property
    def k_chunks(self) -> int:
        return -(-self.g.cb // self.p.kc)

    def steps(self) -> list[tuple[int, int, int]]:
        """(m-tile, n-tile, K chunk) in execution order."""
        ks = range(self.k_chunks)
        if self.p.order == "m_outer":
            return [(i, j, k) for i in range(self.mt) for j in range(self.n_tiles) for k in ks]
        return [(i, j, k) for j in range(self.n_tiles) for i in range(self.mt) for k in ks]

    def blocks(self, k: int) -> range:
        return range(k * self.p.kc, min(self.g.cb, (k + 1) * self.p.kc))

    def n_blocks(self, j: int) -> range:
        return range(j * self.p.nt, min(self.g.nb, (j + 1) * self.p.nt))

    # ---- emission -----------------------------------------------------------------------------------------
    def emit(self) -> None:
        if self.g.out_ub:
            self.fill_region()
        if self.g.pool:
            self.fill_pool_slots()
        steps = self.steps()
        loaded_in, loaded_w = set(), set()
        in_loads = w_loads = tiles = 0
        in_slot = w_slot = 0
        for s, (i, j, k) in enumerate(steps):
            prev = steps[s - 1] if s else None
            nxt = steps[s + 1] if s + 1 < len(steps) else None
            # input chunk (i, k)
            in_items, in_wait = [], set()
            if self.g.in_ub:
                free_in = False
            elif self.p.in_res:
                if (i, k) not in loaded_in:
                    in_items = self.input_band(i, k)
                loaded_in.add((i, k))
                free_in = False
            elif self.p.ring:       # streamed into the ring: the tile's band; freed like a streamed slot
                if prev is None or prev[0] != i:
                    in_items = self.input_ring(i)
                    in_wait = {self.in_free} if in_items else set()
                    if in_items:
                        loaded_in.add(i)
                free_in = i in loaded_in and (nxt is None or nxt[0] != i)
            else:
                if prev is None or (prev[0], prev[2]) != (i, k):
                    in_slot, in_loads = in_loads % 2, in_loads + 1
                    in_items, in_wait = self.input_tile(i, k, in_slot), {self.in_free}
                free_in = nxt is None or (nxt[0], nxt[2]) != (i, k)
            # weight chunk (j, k)
            w_items, w_wait = [], set()
            if self.p.w_res:
                if (j, k) not in loaded_w:
                    w_items = self.weights(j, k, None)
                loaded_w.add((j, k))
                free_w = False
            else:
                if prev is None or (prev[1], prev[2]) != (j, k):
                    w_slot, w_loads = w_loads % 2, w_loads + 1
                    w_items, w_wait = self.weights(j, k, w_slot), {self.w_free}
                free_w = nxt is None or (nxt[1], nxt[2]) != (j, k)
            if self.g.skip:        # one shared "ready" token for the step's loads
                self._sync(in_items, in_wait, None)
                self._sync(w_items, w_wait, None)
                loads = [ins for ins in self.b.instructions[-(len(in_items) + len(w_items)):]] \
                    if in_items or w_items else []
                if loads:
                    loads[-1].signal = frozenset({LD_MX_READY})
                wait = {LD_MX_READY} if loads else set()
            else:
                in_token = self._sync(in_items, in_wait, self.in_ready)
                w_token = self._sync(w_items, w_wait, self.w_ready)
                wait = {self.in_ready} if in_token else set()
                wait |= {self.w_ready} if w_token else set()
            wait |= {VP_MX_FREE} if k == 0 else set()
            signal = ({self.in_free} if free_in else set()) | ({self.w_free} if free_w else set())
            signal |= {MX_VP_READY} if k == self.k_chunks - 1 else set()
            self.gemms(i, j, k, tiles % 2, in_slot, w_slot, wait, signal)
            if k == self.k_chunks - 1:
                if tiles == 0:
                    self.params()
                (self.pool_epilogue if self.g.pool else self.epilogue)(i, j, tiles % 2, first=tiles == 0)
                tiles += 1

    def _sync(self, loads: list[dict], wait: set, signal: int | None) -> bool:
        """Emit ``loads`` (the first waits ``wait``, the last signals ``signal``); True if any."""
        for n, fields in enumerate(loads):
            last = n == len(loads) - 1 and signal is not None
            self.b.emit("LOAD", wait=wait if n == 0 else (), signal={signal} if last else (), **fields)
        return bool(loads)

    # ---- loads --------------------------------------------------------------------------------------------
    def _runs(self, buf: str, sram: int, dram: int, lines: int) -> list[dict]:
        return [dict(buf=buf, sram_line=sram + off, dram_line=dram + off, rows=rows, row_len=n,
                     dram_row_stride=n) for off, rows, n in run_pieces(lines)]

    def _rows(self, cs: range, u0: int, u1: int, dest, block_stride: int) -> list[dict]:
        """LOADs of UB rows ``[u0, u1)`` of channel blocks ``cs``; block ``c`` lands at ``dest(c)`` (blocks
        ``block_stride`` lines apart in UB)."""
        g, x = self.g, self.x
        r0, rows, top, bottom = g.real_rows(u0, u1)
        if rows == 0:
            raise AssertionError(f"UB rows [{u0}, {u1}) hold no input rows")
        if g.flat and not (top or bottom):
            n, plane = rows * g.w, g.h * g.w
            if block_stride == n and rows == g.h:          # whole planes: one run across blocks
                return self._runs("UB", dest(cs[0]), x.plane(0, cs[0]), n * len(cs))
            if block_stride == n and n <= MAX_FIELD and len(cs) > 1 and plane <= MAX_STRIDE_FIELD:
                return [dict(buf="UB", sram_line=dest(cs[0]), dram_line=x.plane(0, cs[0]) + r0 * g.w,
                             rows=len(cs), row_len=n, dram_row_stride=plane)]
            return [f for c in cs for f in self._runs("UB", dest(c), x.plane(0, c) + r0 * g.w, n)]
        return [dict(buf="UB", sram_line=dest(c), dram_line=x.plane(0, c) + r0 * g.w, rows=rows,
                     row_len=g.col_len, dram_row_stride=g.w * g.row_step if rows > 1 else 0, pad_top=top,
                     pad_bottom=bottom, pad_left=g.pl, pad_right=g.pad_right, pad_value=self.x_zp)
                for c in cs]

    def input_band(self, i: int, k: int) -> list[dict]:
        """Resident input: the rows of band ``i`` not loaded yet, for the blocks of K chunk ``k``."""
        g = self.g
        u0, u1 = g.band(self.p.ho_t, i)
        if u1 <= u0:
            return []
        plane = g.u_need * g.wt
        return self._rows(self.blocks(k), u0, u1, lambda c: self.in_base + c * plane + u0 * g.wt, plane)

    def input_ring(self, i: int) -> list[dict]:
        """Ring input: the rows of band ``i`` (every channel block), split where they wrap."""
        g, ring = self.g, self.p.ring
        plane = ring * g.wt
        out = []
        for u0, u1 in ring_pieces(g.band(self.p.ho_t, i), ring):
            out += self._rows(range(g.cb), u0, u1,
                              lambda c, u0=u0: self.in_base + c * plane + (u0 % ring) * g.wt, plane)
        return out

    def input_tile(self, i: int, k: int, slot: int) -> list[dict]:
        """Streamed input: the rows m-tile ``i`` reads (halo included) into input slot ``slot``."""
        g = self.g
        u0, u1 = g.tile_u(self.p.ho_t, i)
        cs = self.blocks(k)
        stride = (u1 - u0) * g.wt
        base = self.in_base + slot * self.in_slot_lines
        return self._rows(cs, u0, u1, lambda c: base + (c - cs[0]) * stride, stride)

    def weights(self, j: int, k: int, slot: int | None) -> list[dict]:
        """The weight blocks of n-tile ``j`` and K chunk ``k`` (``slot`` None: the resident layout, which
        is the DRAM layout)."""
        g, blk = self.g, self.blk
        cs, ns = self.blocks(k), self.n_blocks(j)
        run = len(cs) * g.taps * blk
        row = g.cb * g.taps * blk                      # lines per output block in DRAM
        src0 = self.consts["w"] + (ns[0] * g.cb + cs[0]) * g.taps * blk
        if slot is None:
            if len(cs) == g.cb:
                return self._runs("WB", src0 - self.consts["w"], src0, run * len(ns))
            return [f for n in ns for f in self._runs("WB", (n * g.cb + cs[0]) * g.taps * blk,
                                                      src0 + (n - ns[0]) * row, run)]
        base = slot * self.w_slot_lines
        if run <= MAX_FIELD and row <= MAX_STRIDE_FIELD:
            return [dict(buf="WB", sram_line=base, dram_line=src0, rows=len(ns), row_len=run,
                         dram_row_stride=row if len(ns) > 1 else 0)]
        return [f for n in ns
                for f in self._runs("WB", base + (n - ns[0]) * run, src0 + (n - ns[0]) * row, run)]

    def params(self) -> None:
        """PB records (and the LUT; the fused add's PB line and LUT) for the whole layer, before the first ACT
        (which is fenced)."""
        nb = self.g.nb
        for f in self._runs("PB", 0, self.consts["pb"], nb * PB_RECORD_LINES):
            self.b.emit("LOAD", **f)
        per = self.b.cfg.lut_entries // self.b.cfg.line_bytes
        if self.consts["lut"] is not None:
            self.b.emit("LOAD", buf="LUT", sram_line=0, dram_line=self.consts["lut"], rows=1, row_len=per,
                        dram_row_stride=0)
        if self.g.skip:
            self.b.emit("LOAD", buf="PB", sram_line=self.add_pb, dram_line=self.consts["add_pb"], rows=1,
                        row_len=1, dram_row_stride=0)
            if self.consts["add_lut"] is not None:
                self.b.emit("LOAD", buf="LUT", sram_line=per, dram_line=self.consts["add_lut"], rows=1,
                            row_len=per, dram_row_stride=0)

    def fill_region(self) -> None:
        """Fill the pad lines of the consumer's UB region with its input zero point: ACTs with
        ``clamp_min = clamp_max = zp`` (any ACC rows; the record's multiplier is 0). They come first in the
        layer, so the (fenced) first GEMM waits for them and nothing else touches those lines."""
        base, gc, zp = self.ep.out_region
        cfg = self.b.cfg
        self.b.emit("LOAD", buf="PB", sram_line=self.fill_pb, dram_line=self.consts["fill_pb"], rows=1,
                    row_len=PB_RECORD_LINES, dram_row_stride=0)
        plane = gc.u_need * gc.wt
        gap = gc.wt - gc.w
        runs = []                           # (first line, m_inner, m_outer, outer stride)
        for c in range(gc.cb):
            b0 = base + c * plane
            runs.append((b0, gc.pt * gc.wt + gc.pl, 1, 0))
            if gap and gc.h > 1:
                runs.append((b0 + gc.pt * gc.wt + gc.pl + gc.w, gap, gc.h - 1, gc.wt))
            last = b0 + (gc.pt + gc.h - 1) * gc.wt + gc.pl + gc.w
            runs.append((last, b0 + plane - last, 1, 0))
        for line, inner, outer, stride in runs:
            if inner <= 0:
                continue
            for off in range(0, inner, MAX_FIELD):              # split long runs / many rows
                n = min(MAX_FIELD, inner - off)
                rows_per = max(1, min(MAX_FIELD, cfg.acc_rows // n))
                for o0 in range(0, outer, rows_per):
                    mo = min(rows_per, outer - o0)
                    self.b.emit("ACT", acc_row=0, ub_line=line + off + o0 * stride, m_inner=n, m_outer=mo,
                                ub_outer_stride=stride if mo > 1 else 0, pb_line=self.fill_pb,
                                clamp_min=zp, clamp_max=zp, lut_en=False, lut_id=0)

    def fill_pool_slots(self) -> None:
        """Fill every pooling slot with -128 (MaxPool's padding; ACT later writes the conv rows inside the
        padded rows and columns): first in the layer, like :meth:`fill_region`."""
        cfg = self.b.cfg
        self.b.emit("LOAD", buf="PB", sram_line=self.fill_pb, dram_line=self.consts["fill_pb"], rows=1,
                    row_len=PB_RECORD_LINES, dram_row_stride=0)
        total = 2 * self.g.nb * self.pslot[0] * self.pslot[1]
        step = min(MAX_FIELD, cfg.acc_rows)
        for off in range(0, total, step):
            self.b.emit("ACT", acc_row=0, ub_line=self.pool_base + off, m_inner=min(step, total - off),
                        m_outer=1, ub_outer_stride=0, pb_line=self.fill_pb, clamp_min=-128, clamp_max=-128,
                        lut_en=False, lut_id=0)

    def pool_line(self, n: int, tile: int) -> int:
        """UB line of the pooling slot of output block ``n`` that m-tile ``tile`` pools from."""
        rows, pitch, _ = self.pslot
        return self.pool_base + (2 * n + tile % 2) * rows * pitch

    # ---- compute ------------------------------------------------------------------------------------------
    def in_line(self, i: int, k: int, c: int, ky: int, kx: int, slot: int) -> int:
        """UB line of the first pixel m-tile ``i`` reads for block ``c`` and tap ``(ky, kx)``."""
        g = self.g
        if self.p.in_res:
            oy0, _ = g.tile(self.p.ho_t, i)
            return self.in_base + c * g.u_need * g.wt + (oy0 * g.out_step + ky) * g.wt + kx
        if self.p.ring:
            return self._ring_line(c, g.tile(self.p.ho_t, i)[0], ky, kx)
        u0, u1 = g.tile_u(self.p.ho_t, i)
        return (self.in_base + slot * self.in_slot_lines + (c - self.blocks(k)[0]) * (u1 - u0) * g.wt
                + ky * g.wt + kx)

    def w_line(self, j: int, k: int, n: int, c: int, tap: int, slot: int) -> int:
        g, blk = self.g, self.blk
        if self.p.w_res:
            return ((n * g.cb + c) * g.taps + tap) * blk
        cs, ns = self.blocks(k), self.n_blocks(j)
        return slot * self.w_slot_lines + (((n - ns[0]) * len(cs) + c - cs[0]) * g.taps + tap) * blk

    def gemms(self, i, j, k, acc_slot, in_slot, w_slot, wait, signal) -> None:
        g, cfg = self.g, self.b.cfg
        oy0, hh = g.tile(self.p.ho_t, i)
        cs, ns = self.blocks(k), self.n_blocks(j)
        items = []
        for n in ns:
            n_valid = -(-min(self.blk, g.cout - n * self.blk) // cfg.n_granule)
            acc = acc_slot * self.p.nt * self.m_max + (n - ns[0]) * self.m_max
            for c in cs:
                k_valid = -(-min(self.blk, g.cin - c * self.blk) // cfg.k_granule)
                for tap in range(g.taps):
                    ky, kx = divmod(tap, g.kw)
                    line, wb = self.in_line(i, k, c, ky, kx, in_slot), self.w_line(j, k, n, c, tap, w_slot)
                    for r0, rows in self._row_runs(oy0, hh, ky):     # one run unless it wraps the ring
                        items.append(dict(ub_line=line if r0 == 0 else self._ring_line(c, oy0 + r0, ky, kx),
                                          wb_line=wb, acc_row=acc + r0 * g.wo,
                                          m_inner=g.wo, m_outer=rows, ub_inner_stride=g.sw if g.wo > 1 else 1,
                                          ub_outer_stride=g.out_step * g.wt if rows > 1 else 0,
                                          k_valid=k_valid, n_valid=n_valid, reuse_weights=r0 > 0,
                                          accumulate=not (k == 0 and c == cs[0] and tap == 0)))
        for q, fields in enumerate(items):
            self.b.emit("GEMM", wait=wait if q == 0 else (), signal=signal if q == len(items) - 1 else (),
                        **fields)

    def _row_runs(self, oy0: int, hh: int, ky: int) -> list[tuple[int, int]]:
        """(first output row offset, rows) of a tile's GEMM rows for tap row ``ky``: one run, or with an input
        ring, runs split where the input rows they read wrap around it."""
        if not self.p.ring:
            return [(0, hh)]
        step, ring = self.g.out_step, self.p.ring
        runs, start = [], 0
        for r in range(1, hh + 1):
            if r == hh or ((oy0 + r) * step + ky) // ring != ((oy0 + start) * step + ky) // ring:
                runs.append((start, r - start))
                start = r
        return runs

    def _ring_line(self, c: int, oy: int, ky: int, kx: int) -> int:
        g, ring = self.g, self.p.ring
        return self.in_base + (c * ring + (oy * g.out_step + ky) % ring) * g.wt + kx

    def epilogue(self, i: int, j: int, slot: int, first: bool = False) -> None:
        """ACT per output block (ACC slot -> UB output slot, or straight into the consumer's UB region), the
        fused add (skip tile LOAD + EWISE per block), then one STORE of the tile."""
        g, p = self.g, self.p
        oy0, hh = g.tile(p.ho_t, i)
        m = hh * g.wo
        ns = self.n_blocks(j)
        acc0, out0 = slot * p.nt * self.m_max, self.out_base + slot * p.nt * self.m_max
        store = not g.out_ub
        skip0 = self.skip_base + slot * p.nt * self.m_max
        if g.skip:          # the skip tile (LD queue, ahead of the VP work that waits for it)
            loads = self._skip_loads(ns, oy0, m, skip0)
            for q, f in enumerate(loads):
                self.b.emit("LOAD", wait={self.skip_free} if q == 0 else (),
                            signal={LD_VP_READY} if q == len(loads) - 1 else (), **f)
        for n in ns:
            a_first, a_last = n == ns[0], n == ns[-1]
            wait = {MX_VP_READY} | ({ST_VP_FREE} if store else set()) if a_first else ()
            signal = {VP_MX_FREE} | ({VP_ST_READY} if store and not g.skip else set()) if a_last else ()
            if g.out_ub:
                base, gc, _ = self.ep.out_region
                dst = dict(ub_line=base + n * gc.u_need * gc.wt + (gc.pt + oy0) * gc.wt + gc.pl, m_inner=g.wo,
                           m_outer=hh, ub_outer_stride=gc.wt if hh > 1 else 0)
            else:
                dst = dict(ub_line=out0 + (n - ns[0]) * self.m_max, m_inner=m)
            ins = self.b.emit("ACT", wait=wait, signal=signal, acc_row=acc0 + (n - ns[0]) * self.m_max,
                              pb_line=n * PB_RECORD_LINES, **dst, **self.act)
            if first and a_first:
                ins.fence = True            # the PB records / LUT are loaded without a semaphore
        if g.skip:
            a_is_conv = self.ep.skip_index == 1
            for n in ns:
                e_first, e_last = n == ns[0], n == ns[-1]
                out_l, skip_l = out0 + (n - ns[0]) * self.m_max, skip0 + (n - ns[0]) * m
                self.b.emit("EWISE", wait={LD_VP_READY} if e_first else (),
                            signal={self.skip_free, VP_ST_READY} if e_last else (), op=self.consts["add_op"],
                            a_line=out_l if a_is_conv else skip_l, b_line=skip_l if a_is_conv else out_l,
                            dst_line=out_l, n_lines=m, pb_line=self.add_pb, lut_id=1,
                            lut_en=self.consts["add_lut"] is not None)
        if not store:
            return
        plane = g.ho * g.wo
        if len(ns) == 1 or plane <= MAX_STRIDE_FIELD:
            groups = [(ns, plane if len(ns) > 1 else 0)]
        else:
            groups = [(range(n, n + 1), 0) for n in ns]
        for q, (grp, stride) in enumerate(groups):
            self.b.emit("STORE", wait={VP_ST_READY} if q == 0 else (),
                        signal={ST_VP_FREE} if q == len(groups) - 1 else (), buf="UB",
                        sram_line=out0 + (grp[0] - ns[0]) * self.m_max,
                        dram_line=self.y.plane(0, grp[0]) + oy0 * g.wo, rows=len(grp), row_len=m,
                        dram_row_stride=stride, sram_row_stride=self.m_max if len(grp) > 1 else 0)

    def pool_epilogue(self, i: int, j: int, slot: int, first: bool = False) -> None:
        """A conv tile with a fused MaxPool: ACT writes the tile's rows into its pooling slot (rows the next
        tile's windows also read, into the next slot as well: the carried halo; in the last tile, -128 into
        the bottom padding rows), POOL per output block into the output slot, one STORE of the pooled rows."""
        g, p = self.g, self.p
        t = pool_tiles(g, p.ho_t)[i]
        a, hh = g.tile(p.ho_t, i)
        _, pitch, pm = self.pslot
        kh, kw, sh, sw, _, pl, _, _, oh, ow = g.pool
        ns = self.n_blocks(j)
        acc0, out0 = slot * p.nt * self.m_max, self.out_base + slot * p.nt * pm
        acts = []
        for n in ns:
            acc_n = acc0 + (n - ns[0]) * self.m_max
            for r0, r1, tile in ((max(a, t.lo), min(a + hh, t.hi), i), (max(a, t.carry), a + hh, i + 1)):
                if r1 > r0 and tile < self.mt:
                    lo = pool_tiles(g, p.ho_t)[tile].lo
                    acts.append(dict(self.act, acc_row=acc_n + (r0 - a) * g.wo, m_inner=g.wo, m_outer=r1 - r0,
                                     ub_line=self.pool_line(n, tile) + (r0 - lo) * pitch + pl,
                                     ub_outer_stride=pitch if r1 > r0 + 1 else 0,
                                     pb_line=n * PB_RECORD_LINES))
            if i == self.mt - 1 and t.hi > g.ho:
                r0 = max(g.ho, t.lo)
                acts.append(dict(acc_row=acc_n, ub_line=self.pool_line(n, i) + (r0 - t.lo) * pitch,
                                 m_inner=(t.hi - r0) * pitch, m_outer=1, ub_outer_stride=0,
                                 pb_line=self.fill_pb, clamp_min=-128, clamp_max=-128, lut_en=False,
                                 lut_id=0))
        for q, fields in enumerate(acts):
            ins = self.b.emit("ACT", wait={MX_VP_READY} if q == 0 else (),
                              signal={VP_MX_FREE} if q == len(acts) - 1 else (), **fields)
            if first and q == 0:
                ins.fence = True            # the PB records / LUT are loaded without a semaphore
        for q, n in enumerate(ns):
            self.b.emit("POOL", wait={ST_VP_FREE} if q == 0 else (),
                        signal={VP_ST_READY} if q == len(ns) - 1 else (), src_line=self.pool_line(n, i),
                        dst_line=out0 + (n - ns[0]) * pm, in_w=pitch, kh=kh, kw=kw, sh=sh, sw=sw,
                        out_h=t.r1 - t.r0, out_w=ow, pb_line=0, avg=False)
        plane, m = oh * ow, (t.r1 - t.r0) * ow
        groups = [(ns, plane if len(ns) > 1 else 0)] if len(ns) == 1 or plane <= MAX_STRIDE_FIELD else \
            [(range(n, n + 1), 0) for n in ns]
        for q, (grp, stride) in enumerate(groups):
            self.b.emit("STORE", wait={VP_ST_READY} if q == 0 else (),
                        signal={ST_VP_FREE} if q == len(groups) - 1 else (), buf="UB",
                        sram_line=out0 + (grp[0] - ns[0]) * pm, dram_line=self.y.plane(0, grp[0]) + t.r0 * ow,
                        rows=len(grp), row_len=m, dram_row_stride=stride,
                        sram_row_stride=pm if len(grp) > 1 else 0)

    def _skip_loads(self, ns: range, oy0: int, m: int, skip0: int) -> list[dict]:
        """LOADs of the skip operand's tile (blocks ``ns``, ``m`` pixels from row ``oy0``) to ``skip0``,
        blocks ``m`` lines apart."""
        s, plane = self.ep.skip, self.g.ho * self.g.wo
        src = s.plane(0, ns[0]) + oy0 * self.g.wo
        if m == plane:
            return self._runs("UB", skip0, src, m * len(ns))
        if m <= MAX_FIELD and len(ns) <= MAX_FIELD and plane <= MAX_STRIDE_FIELD:
            return [dict(buf="UB", sram_line=skip0, dram_line=src, rows=len(ns), row_len=m,
                         dram_row_stride=plane if len(ns) > 1 else 0)]
        return [f for n in ns
                for f in self._runs("UB", skip0 + (n - ns[0]) * m, src + (n - ns[0]) * plane, m)]

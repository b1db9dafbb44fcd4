"""Tiling of a conv / GEMM layer for NPU-1 (ACCELERATOR.md C.1-C.3): geometry of the implicit GEMM, the
exhaustive tile search (exact DRAM bytes, estimated cycles) and an event model of an emitted schedule.

Implicit GEMM (C.1): output pixels ``M = Ho*Wo`` (tiles of ``Ho_t`` full-width output rows), ``K = Cin*kh*kw``
(one GEMM per input-channel block and tap, the tap being an offset into a padded input tile in UB),
``N = Cout`` (tiles of ``nt`` 32-channel blocks). UB "rows" are the padded input rows a tile needs; a 1x1
kernel with stride ``s`` and no vertical padding loads only every ``s``-th input row (``row_step``).

A :class:`Plan` fixes ``Ho_t``, ``nt``, ``kc`` (input-channel blocks per K chunk), the loop order
(``m_outer``: for m-tile, for n-tile; ``n_outer``: the reverse; the K chunks innermost, partial sums kept in
ACC) and which operands are resident (input: the whole padded image stays in UB, loaded band by band, no
halo re-reads; weights: all of them stay in WB) rather than streamed (double-buffered chunks, reloaded when
the chunk changes). A streamed input may instead live in a *ring* of ``ring`` UB rows per channel block
(input row ``u`` at ring row ``u mod ring``): each tile loads only the rows no earlier tile loaded (its band,
as a resident input does), so the halo rows shared by consecutive tiles are read from DRAM once, while the
ring holds only two tiles' rows (the image need not fit); a GEMM whose rows wrap around the ring is split
in two (the second part reuses the weights already in the array). :func:`search` enumerates every plan
that fits the buffers and the ISA fields.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from runtime.accel.config import AccelConfig
from runtime.accel.timing import dma_cost, occupancy

from .builder import SEM_INIT
from .packing import PB_RECORD_LINES

MAX_FIELD = 1024          # rows, row_len, m_inner, m_outer (10-bit _m1 fields)
MAX_STRIDE_FIELD = 65535  # dram_row_stride / sram_row_stride (16 bits)
LUT_LINES = 8


@dataclass(frozen=True)
class ConvGeom:
    """One image of a 2-D conv (a GEMM is the 1x1 conv of an ``(M, 1)`` image with ``K`` channels)."""

    h: int
    w: int
    cin: int
    cout: int
    kh: int = 1
    kw: int = 1
    sh: int = 1
    sw: int = 1
    pt: int = 0
    pl: int = 0
    pb: int = 0
    pr: int = 0
    block: int = 32
    lut: bool = False
    # C.4 fusion / residency (see conv.py): ``skip`` a fused residual add in the epilogue (its operand tile is
    # LOADed per output tile, two more UB slots), ``in_ub`` the input is already in UB in this layer's
    # resident-input layout (no input LOADs; the input region is not part of this layer's UB lines),
    # ``out_ub`` the output is written by ACT into the next layer's UB region (no output slots, no STORE),
    # ``ub_lines`` the UB lines this layer's own buffers may use (0: all of UB)
    skip: bool = False
    in_ub: bool = False
    out_ub: bool = False
    ub_lines: int = 0
    # C.4 pooling after conv, per output tile: a fused MaxPool's (kh, kw, sh, sw, pt, pl, pb, pr, oh, ow)
    # (see :func:`pool_tiles`); the layer's DRAM output is the pooled tensor
    pool: tuple = ()

    @property
    def ho(self) -> int:
        return (self.h + self.pt + self.pb - self.kh) // self.sh + 1

    @property
    def wo(self) -> int:
        return (self.w + self.pl + self.pr - self.kw) // self.sw + 1

    @property
    def cb(self) -> int:
        return -(-self.cin // self.block)

    @property
    def nb(self) -> int:
        return -(-self.cout // self.block)

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    @property
    def row_step(self) -> int:
        """Input rows between consecutive UB rows: ``sh`` for a 1x1 kernel without vertical padding."""
        return self.sh if self.kh == 1 and self.pt == 0 and self.pb == 0 else 1

    @property
    def out_step(self) -> int:
        """UB rows between consecutive output rows."""
        return self.sh // self.row_step

    @property
    def wt(self) -> int:
        """UB tile width in lines: the padded input columns the output row reads."""
        return (self.wo - 1) * self.sw + self.kw

    @property
    def col_len(self) -> int:
        return min(self.w, self.wt - self.pl)

    @property
    def pad_right(self) -> int:
        return self.wt - self.pl - self.col_len

    @property
    def u_need(self) -> int:
        """UB rows of the whole (padded) input the output reads."""
        return (self.ho - 1) * self.out_step + self.kh

    @property
    def u_real(self) -> tuple[int, int]:
        """UB rows ``[lo, hi)`` that hold real input rows (the rest is padding)."""
        if self.row_step > 1:
            return 0, self.ho
        return self.pt, min(self.pt + self.h, self.u_need)

    @property
    def flat(self) -> bool:
        """Input rows are whole DRAM rows without horizontal padding: a tile is one contiguous run."""
        return self.pl == 0 and self.pad_right == 0 and self.col_len == self.w and self.row_step == 1

    @property
    def macs(self) -> int:
        return self.ho * self.wo * self.cin * self.taps * self.cout

    def tile(self, ho_t: int, i: int) -> tuple[int, int]:
        """Output rows ``(first, count)`` of m-tile ``i``."""
        oy0 = i * ho_t
        return oy0, min(ho_t, self.ho - oy0)

    def tile_u(self, ho_t: int, i: int) -> tuple[int, int]:
        """UB rows ``[u0, u1)`` m-tile ``i`` reads."""
        oy0, hh = self.tile(ho_t, i)
        return oy0 * self.out_step, (oy0 + hh - 1) * self.out_step + self.kh

    def band(self, ho_t: int, i: int) -> tuple[int, int]:
        """UB rows a resident input loads for m-tile ``i``: the rows not loaded yet (the first band takes
        the top padding, the band reaching the last real row takes the bottom padding)."""
        def hi(t):
            u1 = self.tile_u(ho_t, t)[1]
            return self.u_need if u1 >= self.u_real[1] else u1
        return (0 if i == 0 else hi(i - 1)), hi(i)

    def real_rows(self, u0: int, u1: int) -> tuple[int, int, int, int]:
        """For UB rows ``[u0, u1)``: (first real input row, real rows, pad rows on top, pad rows below)."""
        lo, hi = self.u_real
        a, b = max(u0, lo), min(u1, hi)
        if b <= a:
            return 0, 0, u1 - u0, 0
        return a * self.row_step - (self.pt if self.row_step == 1 else 0), b - a, a - u0, u1 - b


@dataclass(frozen=True)
class PoolTile:
    """The pooling after an m-tile of a conv with a fused MaxPool: pooled rows ``[r0, r1)``, which read
    conv rows ``[lo, hi)`` (padding outside ``[0, ho)``) from the tile's pooling slot (slot row 0 = conv row
    ``lo``); rows of the tile at or past ``carry`` are also written to the next tile's slot."""

    r0: int
    r1: int
    lo: int
    hi: int
    carry: int


@lru_cache(maxsize=4096)
def pool_tiles(g: ConvGeom, ho_t: int) -> tuple[PoolTile, ...] | None:
    """Per m-tile :class:`PoolTile` of ``g.pool`` for tiles of ``ho_t`` conv rows, or None when the tiling
    does not suit it: every tile must complete at least one pooled row, and a tile's windows may reach back
    only into the previous tile (whose overlapping rows its epilogue writes to both slots: the halo is
    carried, not recomputed)."""
    kh, _, sh, _, pt, _, _, _, oh, _ = g.pool
    mt = -(-g.ho // ho_t)
    out, r0 = [], 0
    for i in range(mt):
        a, b = g.tile(ho_t, i)
        b += a
        r1 = oh if i == mt - 1 else min(oh, max(0, (b - 1 + pt - kh + 1) // sh + 1))
        if r1 <= r0:
            return None
        lo, hi = r0 * sh - pt, (r1 - 1) * sh - pt + kh
        prev_a = g.tile(ho_t, i - 1)[0] if i else -pt
        if lo < prev_a or (i and lo < 0) or (i < mt - 1 and hi > g.ho):
            return None
        out.append(PoolTile(r0, r1, lo, hi, 0))
        r0 = r1
    return tuple(dataclasses.replace(t, carry=out[i + 1].lo if i + 1 < mt else g.ho)
                 for i, t in enumerate(out))


def pool_slot(g: ConvGeom, ho_t: int) -> tuple[int, int, int]:
    """(rows, row pitch in lines, pooled lines per block) of one pooling slot for tiles of ``ho_t`` rows."""
    _, kw, _, _, _, pl, _, pr, _, ow = g.pool
    tiles = pool_tiles(g, ho_t)
    return (max(t.hi - t.lo for t in tiles), pl + g.wo + pr, max((t.r1 - t.r0) * ow for t in tiles))


@dataclass(frozen=True)
class Plan:
    """One tiling candidate (see the module docstring)."""

    ho_t: int
    nt: int
    kc: int
    order: str          # "m_outer" | "n_outer"
    in_res: bool
    w_res: bool
    ring: int = 0       # streamed input in a ring of this many UB rows per channel block (0: two slots)

    @property
    def residency(self) -> str:
        if self.ring:
            return "weights+input_ring" if self.w_res else "input_ring"
        return {(True, True): "both", (True, False): "activations", (False, True): "weights",
                (False, False): "k_split"}[(self.in_res, self.w_res)]


def bus_cycles(cfg: AccelConfig, rows: int, row_len: int) -> int:
    """DRAM bus cycles of one LOAD/STORE of ``rows`` x ``row_len`` lines (B.5)."""
    burst = cfg.dram_burst_bytes
    return math.ceil(rows * math.ceil(row_len * cfg.line_bytes / burst) * burst / cfg.dram_bytes_per_cycle)


def run_bus(cfg: AccelConfig, lines: int) -> int:
    """Bus cycles of a contiguous run as :func:`run_pieces` splits it."""
    return sum(bus_cycles(cfg, r, n) for _, r, n in run_pieces(lines))


def run_pieces(lines: int) -> list[tuple[int, int, int]]:
    """A contiguous run of lines as (offset, rows, row_len) pieces legal for one DMA each."""
    out, off = [], 0
    q, r = divmod(lines, MAX_FIELD)
    while q:
        rows = min(q, MAX_FIELD)
        out.append((off, rows, MAX_FIELD))
        off, q = off + rows * MAX_FIELD, q - rows
    if r:
        out.append((off, 1, r))
    return out


@dataclass
class _TileTable:
    """Per m-tile facts of one ``Ho_t`` (per input-channel block): rows, bytes and bus cycles."""

    m: np.ndarray           # output pixels per tile
    hin_max: int            # UB rows of the tallest streamed tile
    s_bytes: np.ndarray     # streamed tile input bytes per block
    s_bus: np.ndarray
    r_bytes: np.ndarray     # resident band input bytes per block
    r_bus: np.ndarray


def input_rows_cost(cfg: AccelConfig, g: ConvGeom, u0: int, u1: int) -> tuple[int, int]:
    """(bytes, bus cycles) of loading UB rows ``[u0, u1)`` of one channel block."""
    _, rows, top, bottom = g.real_rows(u0, u1)
    if not rows:
        return 0, 0
    nbytes = rows * g.col_len * cfg.line_bytes
    if g.flat and not (top or bottom):
        return nbytes, run_bus(cfg, rows * g.w)
    return nbytes, bus_cycles(cfg, rows, g.col_len)


def tile_table(cfg: AccelConfig, g: ConvGeom, ho_t: int) -> _TileTable:
    mt = -(-g.ho // ho_t)
    m, sb, sbus, rb, rbus, hin = [], [], [], [], [], 0
    for i in range(mt):
        _, hh = g.tile(ho_t, i)
        u0, u1 = g.tile_u(ho_t, i)
        hin = max(hin, u1 - u0)
        m.append(hh * g.wo)
        b, c = input_rows_cost(cfg, g, u0, u1)
        sb.append(b)
        sbus.append(c)
        b, c = input_rows_cost(cfg, g, *g.band(ho_t, i))
        rb.append(b)
        rbus.append(c)
    return _TileTable(np.array(m), hin, np.array(sb), np.array(sbus), np.array(rb), np.array(rbus))


def _splits(total: int, size: int) -> np.ndarray:
    n = -(-total // size)
    out = np.full(n, size)
    out[-1] = total - size * (n - 1)
    return out


def _distinct_sizes(total: int, limit: int) -> list[int]:
    """Tile sizes giving distinct tile counts (the smallest size for each count), up to ``limit``."""
    return sorted({-(-total // n) for n in range(1, total + 1)} & set(range(1, limit + 1)))


@lru_cache(maxsize=4096)
def ring_rows(g: ConvGeom, ho_t: int) -> int:
    """The fewest ring rows for m-tiles of ``ho_t`` output rows: tile ``i``'s rows and the band tile ``i + 1``
    loads (while tile ``i`` may still run) must not share a ring row; 0 when a ring cannot work (a band piece
    that would wrap holds padding only: a LOAD must carry at least one real row)."""
    mt = -(-g.ho // ho_t)
    if mt < 2:
        return 0
    need = max(g.band(ho_t, min(i + 1, mt - 1))[1] - g.tile_u(ho_t, i)[0] for i in range(mt))
    for ring in range(need, min(g.u_need, need + 2 * ho_t * g.out_step + g.kh)):
        if all(g.real_rows(a, b)[1] for i in range(mt) for a, b in ring_pieces(g.band(ho_t, i), ring)):
            return ring
    return 0


def ring_pieces(band: tuple[int, int], ring: int) -> list[tuple[int, int]]:
    """UB rows ``[u0, u1)`` split where they wrap around a ring of ``ring`` rows."""
    u0, u1 = band
    out = []
    while u0 < u1:
        end = min(u1, (u0 // ring + 1) * ring)
        out.append((u0, end))
        u0 = end
    return out


def fits(cfg: AccelConfig, g: ConvGeom, p: Plan, hin_max: int) -> bool:
    """Buffer capacities and ISA field limits of plan ``p``."""
    m = p.ho_t * g.wo
    blk = g.block
    if g.in_ub:
        in_lines = 0
    elif p.ring:
        in_lines = g.cb * p.ring * g.wt
    else:
        in_lines = g.cb * g.u_need * g.wt if p.in_res else 2 * p.kc * hin_max * g.wt
    w_lines = g.nb * g.cb * g.taps * blk if p.w_res else 2 * p.nt * p.kc * g.taps * blk
    out_lines = out_slot_count(g) * p.nt * m
    if g.pool:                      # two pooling slots per output block, two pooled output slots
        if pool_tiles(g, p.ho_t) is None:
            return False
        rows, pitch, pm = pool_slot(g, p.ho_t)
        out_lines = 2 * g.nb * rows * pitch + 2 * p.nt * pm
        last = pool_tiles(g, p.ho_t)[-1]
        if max(rows, pitch, pm) > MAX_FIELD or max(0, last.hi - g.ho) * pitch > min(m, MAX_FIELD):
            return False
    return (m <= MAX_FIELD and 2 * p.nt * m <= cfg.acc_rows and in_lines + out_lines <= ub_avail(cfg, g)
            and w_lines <= cfg.wb_lines)


def out_slot_count(g: ConvGeom) -> int:
    """UB tiles of ``nt x Mt`` lines past the input: two output slots (unless ``out_ub``), two skip slots."""
    return (0 if g.out_ub else 2) + (2 if g.skip else 0)


def ub_avail(cfg: AccelConfig, g: ConvGeom) -> int:
    return g.ub_lines or cfg.ub_lines


def fixed_bytes(cfg: AccelConfig, g: ConvGeom) -> int:
    """Output, PB records and LUT (and the pad-fill record of an output kept in UB, of a fused pool's
    slots): moved once by every plan."""
    outs = int(not g.out_ub) + int(g.skip)          # the output STORE, the skip operand LOAD
    if g.pool:
        return (g.nb * (g.pool[-2] * g.pool[-1] + PB_RECORD_LINES) + (LUT_LINES if g.lut else 0)
                + PB_RECORD_LINES) * cfg.line_bytes          # the pooled output; the -128 fill record
    return (outs * g.nb * g.ho * g.wo + g.nb * PB_RECORD_LINES + (LUT_LINES if g.lut else 0)
            + (1 if g.skip else 0) + (PB_RECORD_LINES if g.out_ub else 0)) * cfg.line_bytes


def compulsory_bytes(cfg: AccelConfig, g: ConvGeom) -> int:
    """C.3: input, weights, params (+LUT) and output, each once, in DRAM (blocked layout) bytes; for a fused
    group only the tensors crossing its boundary (no input if it is UB-resident, no output if the output
    stays in UB, plus the skip operand of a fused add)."""
    return ((0 if g.in_ub else g.cb * g.h * g.w * cfg.line_bytes)
            + g.nb * g.cb * g.taps * g.block * cfg.line_bytes + fixed_bytes(cfg, g))


def evaluate(cfg: AccelConfig, g: ConvGeom, p: Plan, tt: _TileTable) -> tuple[int, int]:
    """(exact DRAM bytes, estimated cycles) of plan ``p``: cycles are ``sum over tiles of max(GEMM, DMA)``
    plus the pipeline fill (first chunk's loads) and drain (last tile's ACT and STORE)."""
    mt, nt_n, kc_n = len(tt.m), -(-g.nb // p.nt), -(-g.cb // p.kc)
    nts = _splits(g.nb, p.nt)
    first_i = np.zeros((mt, nt_n), bool)
    first_i[:, 0] = True                       # first visit of an m-tile: in the j == 0 pass
    first_j = np.zeros((mt, nt_n), bool)
    first_j[0, :] = True
    if p.in_res or p.ring:
        in_load = first_i
    elif kc_n > 1 or (p.order == "n_outer" and mt > 1):
        in_load = np.ones((mt, nt_n), bool)
    else:
        in_load = first_i
    if p.w_res:
        w_load = first_j
    elif kc_n > 1 or (p.order == "m_outer" and nt_n > 1):
        w_load = np.ones((mt, nt_n), bool)
    else:
        w_load = first_j
    in_b, in_c = (tt.r_bytes, tt.r_bus) if p.in_res or p.ring else (tt.s_bytes, tt.s_bus)
    if g.in_ub:
        in_b, in_c = in_b * 0, in_c * 0
    wblk = g.taps * g.block                     # weight lines per (n block, k block)
    in_bytes = int((in_load * in_b[:, None]).sum()) * g.cb
    w_bytes = int((w_load * nts[None, :]).sum()) * g.cb * wblk * cfg.line_bytes
    nbytes = in_bytes + w_bytes + fixed_bytes(cfg, g)
    mx = nts[None, :] * (g.cb * g.taps) * np.maximum(tt.m, cfg.array_rows)[:, None]
    burst = cfg.dram_burst_bytes
    out_m = tt.m
    act = nts[None, :] * tt.m[:, None]
    if g.pool:                      # the pooled rows are stored; POOL (and the carried rows) on the VPU
        pooled = np.array([(t.r1 - t.r0) * g.pool[-1] for t in pool_tiles(g, p.ho_t)])
        out_m = pooled
        act = act + nts[None, :] * (pooled * g.pool[0] * g.pool[1])[:, None]
    store = np.ceil(nts[None, :] * np.ceil(out_m * cfg.line_bytes / burst)[:, None] * burst
                    / cfg.dram_bytes_per_cycle) * (int(not g.out_ub) + int(g.skip))
    w_bus = wblk * cfg.line_bytes / cfg.dram_bytes_per_cycle    # bus cycles per (n block, k block)
    dma = in_load * in_c[:, None] * g.cb + w_load * nts[None, :] * g.cb * w_bus + store
    kc0 = min(p.kc, g.cb)
    fill = in_c[0] * kc0 + nts[0] * kc0 * w_bus + cfg.dram_latency_cycles + cfg.fill_latency
    drain = nts[-1] * tt.m[-1] + cfg.vpu_latency + store[-1, -1] + cfg.dram_latency_cycles
    lat, fill_lat, vp_lat = cfg.dram_latency_cycles, cfg.fill_latency, cfg.vpu_latency
    streamed = (in_load & (not p.in_res)) | (w_load & (not p.w_res))     # tiles loading streamed chunks
    # two slots per ring: a step's load waits for the GEMMs two steps back (DMA latency + fill in the loop)
    chain = np.where(streamed, (dma + mx) / 2 + kc_n * (lat + fill_lat) / 2, 0)
    acc_chain = (mx + fill_lat + act + vp_lat) / 2
    out_chain = (act + vp_lat + store + lat) / 2
    tile = np.maximum.reduce([mx, dma, act, chain, acc_chain, out_chain])
    return nbytes, int(tile.sum() + fill + drain)


@dataclass
class SearchResult:
    plan: Plan | None
    bytes: int = 0
    cycles: int = 0
    candidates: int = 0
    best_exhaustive_bytes: int = 0


@lru_cache(maxsize=512)
def search(cfg: AccelConfig, g: ConvGeom, slack: float = 0.02) -> SearchResult:
    """Every plan that fits; keep those within ``slack`` of the fastest estimate, take the fewest DRAM
    bytes, ties to fewer cycles (within 0.2%, to taller tiles). ``plan`` is None when nothing fits."""
    results = []
    # m-tiles under R rows are dominated (more reloads, and a GEMM occupies max(M, R) cycles)
    min_rows = -(-min(cfg.array_rows, g.ho * g.wo) // g.wo)
    for ho_t in _distinct_sizes(g.ho, min(MAX_FIELD, cfg.acc_rows // 2) // g.wo):
        if ho_t < min_rows:
            continue
        tt = tile_table(cfg, g, ho_t)
        for nt in _distinct_sizes(g.nb, g.nb):
            for kc in _distinct_sizes(g.cb, g.cb):
                for in_res in (True,) if g.in_ub else (True, False):
                    for w_res in (True, False):
                        if g.skip and not (in_res or w_res):
                            continue        # a fused add needs the semaphores a resident operand frees
                        for order in ("m_outer", "n_outer") if not (in_res and w_res) else ("m_outer",):
                            p = Plan(ho_t, nt, kc, order, in_res, w_res)
                            if fits(cfg, g, p, tt.hin_max):
                                results.append((p, *evaluate(cfg, g, p, tt)))
                            # the input ring: every K block in one chunk, each m-tile's input loaded once
                            if in_res or kc < g.cb or g.in_ub or (order == "n_outer" and nt < g.nb):
                                continue
                            ring = ring_rows(g, ho_t)
                            p = Plan(ho_t, nt, kc, order, in_res, w_res, ring)
                            if ring and fits(cfg, g, p, tt.hin_max):
                                results.append((p, *evaluate(cfg, g, p, tt)))
    if not results:
        return SearchResult(None)
    fastest = min(r[2] for r in results)
    ok = [r for r in results if r[2] <= fastest * (1 + slack)]
    least = min(r[1] for r in ok)
    ok = [r for r in ok if r[1] == least]
    quickest = min(r[2] for r in ok)
    # within 0.2% of the quickest: taller tiles (fewer, longer GEMMs: the simulator runs them faster)
    best = min((r for r in ok if r[2] <= quickest * 1.002), key=lambda r: (-r[0].ho_t, r[2], r[0].ring))
    return SearchResult(best[0], best[1], best[2], len(results), min(r[1] for r in results))


# ---- event model of an emitted schedule --------------------------------------------------------------------
@dataclass
class _Op:
    queue: str
    cost: int          # bus cycles (DMA) or engine occupancy
    latency: int
    wait: frozenset
    signal: frozenset
    fence: bool
    dma: bool


def _macro_ops(cfg: AccelConfig, instrs) -> list[_Op]:
    """Merge runs of consecutive same-engine instructions with no synchronisation between them."""
    ops: list[_Op] = []
    for ins in instrs:
        dma = ins.op in ("LOAD", "STORE")
        cost, lat = (dma_cost(cfg, ins)[2], cfg.dram_latency_cycles) if dma else occupancy(cfg, ins)
        last = ops[-1] if ops else None
        if last and last.queue == ins.engine and not ins.wait and not ins.fence and not last.signal:
            last.cost += cost
            last.latency = lat
            last.signal = ins.signal
        else:
            ops.append(_Op(ins.engine, cost, lat, ins.wait, ins.signal, ins.fence, dma))
    return ops


def estimate_cycles(cfg: AccelConfig, instrs) -> int:
    """Cycles of one layer's instructions (starting from :data:`SEM_INIT`), scheduling merged runs of
    instructions with the B.3/B.5 issue rule: the earliest issuable queue head goes first, semaphore tokens
    carry completion times, LD and ST share the DRAM bus, a fence waits for everything before it."""
    ops = _macro_ops(cfg, instrs)
    queues: dict[str, list[int]] = {}
    for k, op in enumerate(ops):
        queues.setdefault(op.queue, []).append(k)
    heads = dict.fromkeys(queues, 0)
    free = dict.fromkeys(queues, 0)
    tokens = [[0] * v for v in SEM_INIT]
    done = [0] * len(ops)
    issued = [False] * len(ops)
    first, prefix, bus_free = 0, 0, 0
    for _ in range(len(ops)):
        best = None
        for q, lst in queues.items():
            if heads[q] >= len(lst):
                continue
            k = lst[heads[q]]
            op = ops[k]
            if any(not tokens[s] for s in op.wait) or (op.fence and first < k):
                continue
            t = max([free[q], prefix if op.fence else 0] + [tokens[s][0] for s in op.wait])
            if best is None or (t, k) < best[:2]:
                best = (t, k, q)
        if best is None:
            raise RuntimeError("schedule deadlocks")
        t, k, q = best
        op = ops[k]
        heads[q] += 1
        for s in op.wait:
            heapq.heappop(tokens[s])
        if op.dma:
            start = max(t, bus_free)
            bus_free = free[q] = start + op.cost
            done[k] = bus_free + op.latency
        else:
            free[q] = t + op.cost
            done[k] = free[q] + op.latency
        for s in op.signal:
            heapq.heappush(tokens[s], done[k])
        issued[k] = True
        while first < len(ops) and issued[first]:
            prefix = max(prefix, done[first])
            first += 1
    return max(done) if done else 0

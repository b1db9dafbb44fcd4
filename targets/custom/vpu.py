"""VPU layers of the custom target (ACCELERATOR.md B.2 EWISE/POOL, B.4): element-wise ``QAdd``/``QMul``,
standalone ``QLut``, ``MaxPool`` and ``QAveragePool``, bit-exact with ``lowering/reference``.

Every layer is a double-buffered stream (B.3) over *chunks* of its tensors::

    LD:  [params/LUT once]  LOAD chunk i            (first waits S7 "slot free", last signals S6)
    VP:  EWISE / POOL ... of chunk i                (first waits S6 and S5, last signals S7 and S4)
    ST:  STORE chunk i                              (first waits S4, last signals S5)

UB holds two input slots and two output slots (the whole UB is the layer's: layers are fenced), PB line 0
the EWISE/POOL-avg parameter line (functional.py: ``Ma, Mb, shift, za, zb, zo, clamp_min, clamp_max``) and
LUT table 0 the optional 256-entry table. Every wait is matched by a signal, so the semaphores end at
``SEM_INIT``. The parameter/LUT loads need no semaphore: the LD queue completes in order (one bus, a fixed
latency), so they are done before chunk 0's operands signal S6.

Element-wise ops stream the (same-shape, contiguous) blocked tensors in chunks of 128-1024 lines.
Pooling works per channel-block plane ``[H][W][32]``: whole planes are grouped into a chunk when they fit,
otherwise a plane is cut into tiles of output rows (with the input halo re-read). The chunk size is chosen
among a few candidates with :func:`estimate_cycles` (the B.5 timing of this very schedule) and the exact
DMA bytes (:func:`_choose`). Spatial padding is LOAD
padding: ``-128`` for max pooling (the reference pads with ``-inf``; every window holds a real element),
``x_zero_point`` for average pooling (the reference sums ``x - zx`` over zero padding). A global average
pool is one POOL per plane over the plane read as any ``r x c`` grid with ``r, c <= 8`` (the window sum is
the same), so ``H x W`` up to 64 elements.

Padded channels (B.1) of the outputs hold whatever the op makes of the inputs' padded channels (their
zero points): ``clamp(zo)`` then the LUT; consumers ignore them (weights are zero there).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from lowering.opinfo import window_geometry
from runtime.accel.isa import Instruction
from runtime.accel.timing import dma_cost, occupancy

from .builder import LD_VP_READY, ST_VP_FREE, VP_LD_FREE, VP_ST_READY, Act, LayerStats, ProgramBuilder
from .packing import pack_lut

DMA_MAX = 1024            # LOAD/STORE rows, row_len and POOL in_w/out_h/out_w (10-bit ``_m1`` fields)
PAD_MAX = 7               # LOAD pad fields are 3 bits
WINDOW_MAX = 8            # POOL kh/kw (3 bits)
STRIDE_MAX = 4            # POOL sh/sw (2 bits)
EWISE_CHUNKS = (128, 256, 512, 1024)     # candidate lines per element-wise chunk (<= one DMA row)
POOL_CHUNKS = (512, 1024, 1536, 2048, 3072, 4096)   # candidate UB lines (input + output) per pooling chunk
POOL_CHUNK = POOL_CHUNKS[-1]
CYCLE_SLACK = 1.05        # C.2-style choice: fewest DRAM bytes among tilings within 5% of the fastest
INT8 = (-128, 127)
INT32 = (-(1 << 31), (1 << 31) - 1)
MAX_SHIFT = 62
LUT_ID = 0


# ---- attribute helpers ----------------------------------------------------------------------------------
def _int(node, name: str, default=None):
    """An int attribute, also accepted as a one-element list (``multiplier=[M]``); None if absent/invalid."""
    v = node.attr(name, default)
    if isinstance(v, (list, tuple, np.ndarray)):
        v = list(np.asarray(v).reshape(-1))
        if not v:
            return None
        v = v[0]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        return None
    return int(v)


def _in(v, lo_hi) -> bool:
    return v is not None and lo_hi[0] <= v <= lo_hi[1]


def _lut(node) -> np.ndarray | None:
    """The node's ``lut`` as int8 (None when absent or empty)."""
    table = node.attr("lut")
    if table is None or len(table) == 0:
        return None
    return np.asarray(table, np.int64)


def _check_lut(node, required: bool = False) -> str | None:
    table = _lut(node)
    if table is None:
        return "QLut needs a 256-entry lut" if required else None
    if table.size != 256:
        return f"lut has {table.size} entries; the NPU LUT has 256"
    if table.min() < INT8[0] or table.max() > INT8[1]:
        return "lut entries outside int8"
    return None


def _check_finish(node, zero_points=()) -> str | None:
    """Zero points and clamp bounds must be int8 (one PB line byte each)."""
    for name in tuple(zero_points) + ("out_zero_point",):
        if not _in(_int(node, name, 0), INT8):
            return f"{name} {node.attr(name)!r} does not fit the int8 PB field"
    for name in ("clamp_min", "clamp_max"):
        if not _in(_int(node, name), INT8):
            return f"{name} {node.attr(name)!r} is not an int8 bound"
    return None


def _check_requant(node, mult_names, shift_name="shift") -> str | None:
    shift = _int(node, shift_name)
    if shift is None or not 1 <= shift <= MAX_SHIFT:
        return f"shift {node.attr(shift_name)!r} outside 1..{MAX_SHIFT}"
    for name in mult_names:
        m = _int(node, name)
        if not _in(m, INT32):
            return f"{name} {node.attr(name)!r} does not fit int32"
    return None


# ---- unsupported_reason ---------------------------------------------------------------------------------
def _check_tensors(node, n_inputs: int, rank4: bool) -> str | None:
    ins = [v for v in node.inputs if v is not None]
    if len(ins) != n_inputs:
        return f"expects {n_inputs} input(s), got {len(ins)}"
    for v in ins + [node.output]:
        if v.is_const:
            return f"constant operand '{v.name}'; runs on the host"
        if v.type is None or v.type.dtype.value != "int8":
            return f"tensor '{v.name}' is not int8"
        if len(v.type.shape) not in ((4,) if rank4 else (2, 4)):
            return f"tensor '{v.name}' has rank {len(v.type.shape)}; expected {'4' if rank4 else '2 or 4'}"
    return None


def _check_eltwise(node) -> str | None:
    reason = _check_tensors(node, 2, rank4=False)
    if reason:
        return reason
    a, b = node.input(0).type.shape, node.input(1).type.shape
    if tuple(a) != tuple(b) or tuple(a) != tuple(node.output.type.shape):
        return f"broadcasting {list(a)} with {list(b)}; EWISE needs same-shape operands"
    return _check_finish(node, ("a_zero_point", "b_zero_point")) or _check_lut(node)


def _check_qadd(node) -> str | None:
    reason = _check_eltwise(node) or _check_requant(node, ("a_multiplier",))
    if reason:
        return reason
    mb = _int(node, "b_multiplier")
    if mb is None or not (_in(mb, INT32) or _in(-mb, INT32)):
        return f"b_multiplier {node.attr('b_multiplier')!r} does not fit int32"
    return None


def _check_qmul(node) -> str | None:
    return _check_eltwise(node) or _check_requant(node, ("multiplier",))


def _check_qlut(node) -> str | None:
    return _check_tensors(node, 1, rank4=False) or _check_lut(node, required=True)


def _check_maxpool(node) -> str | None:
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        return "MaxPool indices output"
    reason = _check_tensors(node, 1, rank4=True)
    if reason:
        return reason
    try:
        _pool_geometry(node, avg=False)
    except ValueError as exc:
        return str(exc)
    return None


def _check_qavgpool(node) -> str | None:
    reason = _check_tensors(node, 1, rank4=True) or _check_finish(node, ("x_zero_point",))
    reason = reason or _check_requant(node, ("multiplier",))
    if reason:
        return reason
    try:
        _pool_geometry(node, avg=True)
    except ValueError as exc:
        return str(exc)
    return None


_CHECKS = {"lowering::QAdd": _check_qadd, "lowering::QMul": _check_qmul, "lowering::QLut": _check_qlut,
           "MaxPool": _check_maxpool, "lowering::QAveragePool": _check_qavgpool}


def unsupported_reason(node) -> str | None:
    """Why ``node`` cannot run on the VPU (None when it can): same-shape int8 QAdd/QMul (with clamp and
    LUT), QLut, 2-D int8 MaxPool and QAveragePool with windows up to 8x8 and strides up to 4."""
    check = _CHECKS.get(node.qualified_op)
    if check is None:
        return f"{node.qualified_op} is not a VPU op"
    return check(node)


# ---- pooling geometry -----------------------------------------------------------------------------------
@dataclass
class PoolGeometry:
    """One plane's pooling: the input as an ``h x w`` grid padded by (pt, pb, pl, pr) lines, windows
    ``kh x kw`` with strides (sh, sw), output ``oh x ow``."""

    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pb: int
    pl: int
    pr: int
    oh: int
    ow: int

    @property
    def in_w(self) -> int:
        return self.pl + self.w + self.pr

    def tile_rows(self, ot: int) -> int:
        """Padded input rows read by ``ot`` output rows."""
        return (ot - 1) * self.sh + self.kh


def _grid(n: int) -> tuple[int, int] | None:
    """``r x c = n`` with ``r, c <= 8`` (most square first), or None."""
    for r in range(int(math.isqrt(n)), 0, -1):
        if n % r == 0 and n // r <= WINDOW_MAX and r <= WINDOW_MAX:
            return r, n // r
    return None


def _pool_geometry(node, avg: bool) -> PoolGeometry:
    """The POOL geometry of a MaxPool / QAveragePool node; ValueError (the reason) if the VPU cannot run
    it exactly."""
    _, _, h, w = node.input(0).type.shape
    if avg and _int(node, "global", 0):
        g = _grid(h * w)
        if g is None:
            if h * w > WINDOW_MAX * WINDOW_MAX:
                raise ValueError(f"global pool over {h}x{w} > 64 elements needs two passes (not bit-exact); "
                                 "runs on the host")
            raise ValueError(f"global pool over {h}x{w} elements fits no window of at most 8x8")
        return PoolGeometry(g[0], g[1], g[0], g[1], 1, 1, 0, 0, 0, 0, 1, 1)
    kernel = node.attr("kernel_shape")
    if kernel is None or len(kernel) != 2:
        raise ValueError("only 2-D pooling with a kernel_shape runs on the NPU")
    kh, kw = (int(k) for k in kernel)
    geo = window_geometry(node, (h, w), (kh, kw), ceil_mode=bool(node.attr("ceil_mode", 0)))
    if any(d != 1 for d in geo.dilations):
        raise ValueError("dilated pooling")
    if max(kh, kw) > WINDOW_MAX:
        raise ValueError(f"pooling window {kh}x{kw} larger than 8x8")
    if max(geo.strides) > STRIDE_MAX:
        raise ValueError(f"pooling strides {list(geo.strides)} larger than 4")
    (pt, pl), (pb, pr) = geo.pads_begin, geo.pads_end
    if pt >= kh or pb >= kh or pl >= kw or pr >= kw:
        raise ValueError("pads as large as the window (a window could lie in the padding)")
    (oh, ow), (sh, sw) = geo.out, geo.strides
    need_b, need_r = (oh - 1) * sh + kh - (pt + h), (ow - 1) * sw + kw - (pl + w)
    if avg and (need_b > pb or need_r > pr):
        raise ValueError("QAveragePool windows must lie inside the padded input (uniform counts)")
    pb, pr = max(pb, need_b), max(pr, need_r)      # MaxPool ceil_mode overhang: more -128 padding
    g = PoolGeometry(h, w, kh, kw, sh, sw, pt, pb, pl, pr, oh, ow)
    if max(pt, pb, pl, pr) > PAD_MAX:
        raise ValueError(f"pads {[pt, pl, pb, pr]} larger than {PAD_MAX} lines")
    if g.in_w > DMA_MAX or ow > DMA_MAX or oh < 1 or ow < 1:
        raise ValueError(f"padded row of {g.in_w} lines or {ow} outputs exceeds {DMA_MAX}")
    if g.tile_rows(1) * g.in_w + ow > POOL_CHUNK:
        raise ValueError("one output row's input window does not fit the pooling chunk")
    return g


# ---- the double-buffered stream -------------------------------------------------------------------------
@dataclass
class Chunk:
    """The instructions of one pipeline step, as (op, fields) pairs per engine."""

    loads: list = field(default_factory=list)
    ops: list = field(default_factory=list)
    stores: list = field(default_factory=list)


def _load(sram_line, dram_line, rows, row_len, stride=None, buf="UB", pads=(0, 0, 0, 0), pad_value=0):
    pt, pb, pl, pr = pads
    return ("LOAD", dict(buf=buf, sram_line=sram_line, dram_line=dram_line, rows=rows, row_len=row_len,
                         dram_row_stride=row_len if stride is None else stride, pad_top=pt, pad_bottom=pb,
                         pad_left=pl, pad_right=pr, pad_value=pad_value))


def _contiguous(op: str, sram_line: int, dram_line: int, n_lines: int) -> list:
    """LOADs (into UB) or STOREs (from UB) of ``n_lines`` contiguous lines: rows of up to 1024 lines."""
    out, off = [], 0
    while off < n_lines:
        rem = n_lines - off
        row_len = min(rem, DMA_MAX)
        rows = min(rem // row_len, DMA_MAX)
        if op == "LOAD":
            out.append(_load(sram_line + off, dram_line + off, rows, row_len))
        else:
            out.append(("STORE", dict(buf="UB", sram_line=sram_line + off, dram_line=dram_line + off,
                                      rows=rows, row_len=row_len, dram_row_stride=row_len,
                                      sram_row_stride=row_len)))
        off += rows * row_len
    return out


def _emit_queue(b: ProgramBuilder, items: list, wait, signal) -> None:
    """Emit ``items`` in order: the first waits ``wait``, the last signals ``signal``."""
    for i, (op, fields) in enumerate(items):
        b.emit(op, wait=wait if i == 0 else (), signal=signal if i == len(items) - 1 else (), **fields)


def _emit_stream(b: ProgramBuilder, prologue: list, chunks: list[Chunk]) -> None:
    """The B.3 double-buffered loop (module docstring); program order = chunk order."""
    for op, fields in prologue:
        b.emit(op, **fields)
    for ch in chunks:
        if ch.loads:
            _emit_queue(b, ch.loads, (VP_LD_FREE,), (LD_VP_READY,))
            _emit_queue(b, ch.ops, (LD_VP_READY, ST_VP_FREE), (VP_LD_FREE, VP_ST_READY))
        else:           # the operands are already in UB (a resident input): only the output slots cycle
            _emit_queue(b, ch.ops, (ST_VP_FREE,), (VP_ST_READY,))
        _emit_queue(b, ch.stores, (VP_ST_READY,), (ST_VP_FREE,))


def _dram_bytes(cfg, items) -> int:
    return sum(dma_cost(cfg, Instruction(op, f))[0] for op, f in items if op in ("LOAD", "STORE"))


def estimate_cycles(cfg, prologue: list, chunks: list[Chunk]) -> int:
    """B.5 cost of the stream: LD, VP and ST engines, one shared DRAM bus granted to the DMA that can issue
    first (LD before ST on ties only for an earlier chunk), two slots per side; a DMA completes
    ``dram_latency_cycles`` after its bus transfer, the VP ``vpu_latency`` after its last op."""
    n, lat = len(chunks), cfg.dram_latency_cycles

    def bus(item) -> int:
        return dma_cost(cfg, Instruction(*item))[2]

    vp_cycles = [sum(occupancy(cfg, Instruction(op, f))[0] for op, f in ch.ops) for ch in chunks]
    free = dict(bus=0, LD=0, ST=0, VP=0)
    ld_done, vp_done, st_done = {}, {}, {}
    for item in prologue:
        free["LD"] = free["bus"] = free["bus"] + bus(item)
    for j, ch in enumerate(chunks):
        if not ch.loads:              # operands resident in UB: ready once the prologue has landed
            ld_done[j] = free["LD"] + (lat if prologue else 0)
    lq = [(j, k) for j in range(n) for k in range(len(chunks[j].loads))]
    sq = [(j, k) for j in range(n) for k in range(len(chunks[j].stores))]
    vi = 0
    while lq or sq:
        while vi < n and vi in ld_done and (vi < 2 or vi - 2 in st_done):
            t = max(free["VP"], ld_done[vi], st_done.get(vi - 2, 0))
            free["VP"] = t + vp_cycles[vi]
            vp_done[vi] = free["VP"] + cfg.vpu_latency
            vi += 1
        cands = []
        if lq:
            j, k = lq[0]
            ready = 0 if k or j < 2 else vp_done.get(j - 2)
            if ready is not None:
                cands.append((max(free["LD"], ready), j, 1, "LD", lq, chunks[j].loads))
        if sq:
            j, k = sq[0]
            ready = vp_done.get(j) if k == 0 else 0
            if ready is not None:
                cands.append((max(free["ST"], ready), j, 0, "ST", sq, chunks[j].stores))
        issue, j, _, engine, queue, items = min(cands, key=lambda c: c[:3])
        k = queue.pop(0)[1]
        free[engine] = free["bus"] = max(issue, free["bus"]) + bus(items[k])
        if k == len(items) - 1:
            (ld_done if engine == "LD" else st_done)[j] = free[engine] + lat
    return max([free["LD"] + lat] + list(st_done.values()))


def _choose(cfg, prologue: list, candidates: list) -> tuple[list[Chunk], dict]:
    """C.2 choice among ``(chunks, tiling)`` candidates: minimum DRAM bytes among those whose estimated
    cycles are within :data:`CYCLE_SLACK` of the fastest; ties go to fewer cycles, then fewer chunks."""
    scored = []
    for chunks, tiling in candidates:
        items = [it for ch in chunks for it in ch.loads + ch.stores]
        scored.append((estimate_cycles(cfg, prologue, chunks), _dram_bytes(cfg, items), len(chunks), chunks,
                       tiling))
    fastest = min(s[0] for s in scored)
    best = min((s for s in scored if s[0] <= CYCLE_SLACK * fastest), key=lambda s: (s[1], s[0], s[2]))
    return best[3], best[4]


def _finish_layer(b, stats: LayerStats, prologue, chunks, tensors, const_bytes: int, tiling: dict) -> None:
    """Emit the stream and fill ``stats`` (bytes exact, cycles from :func:`estimate_cycles`)."""
    _emit_stream(b, prologue, chunks)
    items = prologue + [it for ch in chunks for it in ch.loads + ch.stores]
    stats.macs = 0
    stats.compulsory_bytes = sum(t.nbytes for t in tensors) + const_bytes
    stats.predicted_dram_bytes = _dram_bytes(b.cfg, items)
    stats.predicted_cycles = estimate_cycles(b.cfg, prologue, chunks)
    stats.tiling = dict(tiling, chunks=len(chunks), slots=2)


# ---- parameters ---------------------------------------------------------------------------------------
def param_line(ma=0, mb=0, shift=0, za=0, zb=0, zo=0, clamp_min=-128, clamp_max=127, line_bytes=32) -> bytes:
    """The EWISE / POOL-avg PB line (functional.py ``_param_line``)."""
    raw = struct.pack("<iiBbbbbb", ma, mb, shift, za, zb, zo, clamp_min, clamp_max)
    return raw + bytes(line_bytes - len(raw))


def _param_prologue(b: ProgramBuilder, line: bytes, lut: np.ndarray | None) -> tuple[list, int]:
    """LOADs of the PB line (to PB line 0) and the LUT (to table 0); returns them and their bytes."""
    items = [_load(0, b.constant(line), 1, 1, buf="PB")]
    nbytes = len(line)
    if lut is not None:
        per = b.cfg.lut_entries // b.cfg.line_bytes
        items.append(_load(LUT_ID * per, b.constant(pack_lut(lut)), 1, per, buf="LUT"))
        nbytes += lut.size
    return items, nbytes


# ---- element-wise ---------------------------------------------------------------------------------------
def _ewise_chunks(cfg, srcs: list[Act], y: Act, op: str, lut_en: bool, chunk_lines: int):
    """Chunks of ``chunk_lines`` lines (capped by UB and the tensor) of the element-wise stream;
    UB = [src0 slot x2][src1 slot x2][out slot x2]."""
    total = y.lines
    for s in srcs:
        if s.lines != total:
            raise ValueError(f"{s.name}: {s.lines} lines, output {y.name} has {total}")
    c = min(chunk_lines, DMA_MAX, cfg.ub_lines // (2 * len(srcs) + 2), total)
    out_base = 2 * len(srcs) * c
    chunks = []
    for i, off in enumerate(range(0, total, c)):
        n, slot = min(c, total - off), i % 2
        ch = Chunk()
        ub = [(2 * k + slot) * c for k in range(len(srcs))]
        for s, line in zip(srcs, ub):
            ch.loads += _contiguous("LOAD", line, s.dram_line + off, n)
        dst = out_base + slot * c
        ch.ops.append(("EWISE", dict(op=op, a_line=ub[0], b_line=ub[-1], dst_line=dst, n_lines=n, pb_line=0,
                                     lut_id=LUT_ID, lut_en=lut_en)))
        ch.stores += _contiguous("STORE", dst, y.dram_line + off, n)
        chunks.append(ch)
    return chunks, dict(op=op, chunk_lines=c, lut=lut_en)


def _require(node) -> None:
    reason = unsupported_reason(node)
    if reason:
        raise ValueError(reason)


def _lower_ewise(b, node, srcs, y, stats, op, line, chunk_lines=None) -> None:
    """Stream ``srcs`` through one EWISE per chunk; ``chunk_lines`` forces a chunk size (else searched)."""
    lut = _lut(node)
    prologue, const_bytes = _param_prologue(b, line, lut)
    sizes = (chunk_lines,) if chunk_lines else EWISE_CHUNKS
    chunks, tiling = _choose(b.cfg, prologue, [_ewise_chunks(b.cfg, srcs, y, op, lut is not None, c)
                                               for c in sizes])
    _finish_layer(b, stats, prologue, chunks, list(srcs) + [y], const_bytes, tiling)


def _finish_params(node) -> dict:
    return dict(zo=_int(node, "out_zero_point", 0), clamp_min=_int(node, "clamp_min"),
                clamp_max=_int(node, "clamp_max"))


def lower_qadd(b: ProgramBuilder, node, a: Act, bt: Act, y: Act, stats: LayerStats, chunk_lines=None) -> None:
    """``lowering::QAdd`` as EWISE ADD (SUB with ``|Mb|`` when ``b_multiplier < 0``), clamp and LUT."""
    _require(node)
    ma, mb = _int(node, "a_multiplier"), _int(node, "b_multiplier")
    op = "SUB" if mb < 0 and _in(-mb, INT32) else "ADD"
    line = param_line(ma, -mb if op == "SUB" else mb, _int(node, "shift"), _int(node, "a_zero_point", 0),
                      _int(node, "b_zero_point", 0), **_finish_params(node), line_bytes=b.cfg.line_bytes)
    _lower_ewise(b, node, [a, bt], y, stats, op, line, chunk_lines)


def lower_qmul(b: ProgramBuilder, node, a: Act, bt: Act, y: Act, stats: LayerStats, chunk_lines=None) -> None:
    """``lowering::QMul`` as EWISE MUL (multiplier/shift: the first entry, as the reference reads them)."""
    _require(node)
    line = param_line(_int(node, "multiplier"), 0, _int(node, "shift"), _int(node, "a_zero_point", 0),
                      _int(node, "b_zero_point", 0), **_finish_params(node), line_bytes=b.cfg.line_bytes)
    _lower_ewise(b, node, [a, bt], y, stats, "MUL", line, chunk_lines)


def lower_qlut(b: ProgramBuilder, node, x: Act, y: Act, stats: LayerStats, chunk_lines=None) -> None:
    """``lowering::QLut`` as EWISE MAX of x with itself (identity, full int8 clamp) then the LUT."""
    _require(node)
    _lower_ewise(b, node, [x], y, stats, "MAX", param_line(line_bytes=b.cfg.line_bytes), chunk_lines)


# ---- pooling ------------------------------------------------------------------------------------------
@dataclass
class _Tile:
    plane: int      # n * cb + c_block
    oy0: int        # first output row
    ot: int         # output rows


def _plan_tiles(g: PoolGeometry, planes: int, budget: int) -> tuple[list[list[_Tile]], int, int]:
    """Group whole planes per chunk when one fits ``budget`` UB lines (input tile + output), otherwise cut
    planes into tiles of ``ot`` output rows. Returns (chunks of tiles, planes per chunk, ot)."""
    def fits(ot):
        lines = g.tile_rows(ot) * g.in_w + ot * g.ow
        return lines <= budget and ot <= DMA_MAX and g.tile_rows(ot) <= DMA_MAX

    if fits(g.oh):
        per = max(1, min(planes, budget // (g.tile_rows(g.oh) * g.in_w + g.oh * g.ow)))
        groups = [[_Tile(p, 0, g.oh) for p in range(p0, min(planes, p0 + per))]
                  for p0 in range(0, planes, per)]
        return groups, per, g.oh
    ot = 1
    while ot < g.oh and fits(ot + 1):
        ot += 1
    groups = [[_Tile(p, oy0, min(ot, g.oh - oy0))] for p in range(planes) for oy0 in range(0, g.oh, ot)]
    return groups, 1, ot


def _tile_load(g: PoolGeometry, x: Act, t: _Tile, sram_line: int, pad_value: int) -> list:
    """LOAD(s) of one tile's padded input window into a contiguous ``rows x in_w`` UB tile."""
    r0 = t.oy0 * g.sh - g.pt                          # first real input row of the window (may be < 0)
    r1 = r0 + g.tile_rows(t.ot)
    top, bottom = max(0, -r0), max(0, r1 - g.h)
    rows = min(r1, g.h) - max(r0, 0)
    src = x.dram_line + t.plane * g.h * g.w + max(r0, 0) * g.w
    if top == bottom == g.pl == g.pr == 0:
        return _contiguous("LOAD", sram_line, src, rows * g.w)
    if max(top, bottom) > PAD_MAX:
        raise ValueError(f"tile padding {top}/{bottom} exceeds {PAD_MAX} lines")
    return [_load(sram_line, src, rows, g.w, g.w, pads=(top, bottom, g.pl, g.pr), pad_value=pad_value)]


def _pool_chunks(cfg, g: PoolGeometry, x: Act, y: Act, avg: bool, pad_value: int, budget: int):
    """Chunks of the pooling stream of at most ``budget`` UB lines each (input + output; a single output
    row may exceed it); UB = [input slot x2][output slot x2]."""
    planes = x.n * x.cb
    if y.n * y.cb != planes or (y.h, y.w) != (g.oh, g.ow):
        raise ValueError(f"{y.name}: shape {y.shape} does not match the pooling of {x.name} {x.shape}")
    budget = min(budget, cfg.ub_lines // 2)
    groups, per, ot = _plan_tiles(g, planes, budget)
    in_slot = max(sum(g.tile_rows(t.ot) * g.in_w for t in grp) for grp in groups)
    out_slot = max(sum(t.ot * g.ow for t in grp) for grp in groups)
    if 2 * (in_slot + out_slot) > cfg.ub_lines:
        raise ValueError(f"pooling tiles of {in_slot}+{out_slot} lines do not fit UB twice")
    chunks = []
    for i, grp in enumerate(groups):
        ch, slot = Chunk(), i % 2
        src, dst = slot * in_slot, 2 * in_slot + slot * out_slot
        out0 = y.dram_line + grp[0].plane * g.oh * g.ow + grp[0].oy0 * g.ow
        out_lines = sum(t.ot * g.ow for t in grp)
        if per > 1 and max(g.pt, g.pb, g.pl, g.pr) == 0 and g.tile_rows(g.oh) == g.h:
            # whole unpadded planes that the windows read entirely: one contiguous read
            ch.loads += _contiguous("LOAD", src, x.dram_line + grp[0].plane * g.h * g.w, len(grp) * g.h * g.w)
        else:
            s = src
            for t in grp:
                ch.loads += _tile_load(g, x, t, s, pad_value)
                s += g.tile_rows(t.ot) * g.in_w
        d, s = dst, src
        for t in grp:
            ch.ops.append(("POOL", dict(src_line=s, dst_line=d, in_w=g.in_w, kh=g.kh, kw=g.kw, sh=g.sh,
                                        sw=g.sw, out_h=t.ot, out_w=g.ow, pb_line=0, avg=avg)))
            s += g.tile_rows(t.ot) * g.in_w
            d += t.ot * g.ow
        ch.stores += _contiguous("STORE", dst, out0, out_lines)
        chunks.append(ch)
    return chunks, dict(planes_per_chunk=per, out_rows_per_tile=ot, in_slot_lines=in_slot,
                        out_slot_lines=out_slot, window=[g.kh, g.kw], strides=[g.sh, g.sw],
                        pads=[g.pt, g.pl, g.pb, g.pr])


@dataclass(frozen=True)
class ResidentInput:
    """A pooling input the producing conv left in UB (C.4 residency): channel-block plane ``c`` starts at
    line ``base + c * plane_lines``, rows ``in_w`` lines apart, padding already filled."""

    base: int
    plane_lines: int
    in_w: int
    own_base: int           # the UB lines [own_base, own_base + own_lines) are the layer's own
    own_lines: int


def pool_region(node, avg: bool, block: int = 32):
    """The conv geometry whose resident-input region (``conv.region_lines``) is this pooling layer's padded
    input as POOL reads it (channel blocks of ``block``, the configuration's), the pad value its producer
    fills in, and the row pitch; ValueError if the pooling cannot read a resident input."""
    from .tiling import ConvGeom

    g = _pool_geometry(node, avg)
    _, c, h, w = node.input(0).type.shape
    if avg and _int(node, "global", 0):
        gc = ConvGeom(h, w, c, c, kh=h, kw=w, block=block)   # the plane, unpadded; POOL reads g's grid
        return gc, _int(node, "x_zero_point", 0), g.in_w
    gc = ConvGeom(h, w, c, c, kh=g.kh, kw=g.kw, sh=g.sh, sw=g.sw, pt=g.pt, pl=g.pl, pb=g.pb, pr=g.pr,
                  block=block)
    if (gc.ho, gc.wo) != (g.oh, g.ow) or gc.u_need < g.tile_rows(g.oh):
        raise ValueError("the pooling windows do not tile the padded input as a convolution would")
    return gc, (_int(node, "x_zero_point", 0) if avg else INT8[0]), gc.wt


def _resident_pool_chunks(cfg, g: PoolGeometry, r: ResidentInput, y: Act, avg: bool):
    """Chunks of a pooling layer whose input is resident: POOLs from the region into two output slots in the
    layer's own lines, STOREs. Whole planes per chunk when they fit a slot, else tiles of output rows."""
    planes, slot = y.n * y.cb, r.own_lines // 2
    if g.ow > slot:
        raise ValueError(f"an output row of {g.ow} lines does not fit half the {r.own_lines} free UB lines")
    if g.oh * g.ow <= slot:
        per, ot = max(1, min(planes, slot // (g.oh * g.ow))), g.oh
        groups = [[_Tile(p, 0, g.oh) for p in range(p0, min(planes, p0 + per))]
                  for p0 in range(0, planes, per)]
    else:
        per, ot = 1, min(g.oh, slot // g.ow, DMA_MAX)
        groups = [[_Tile(p, oy0, min(ot, g.oh - oy0))] for p in range(planes) for oy0 in range(0, g.oh, ot)]
    chunks = []
    for i, grp in enumerate(groups):
        ch, d = Chunk(), r.own_base + (i % 2) * slot
        dst = d
        for t in grp:
            ch.ops.append(("POOL", dict(src_line=r.base + t.plane * r.plane_lines + t.oy0 * g.sh * r.in_w,
                                        dst_line=d, in_w=r.in_w, kh=g.kh, kw=g.kw, sh=g.sh, sw=g.sw,
                                        out_h=t.ot, out_w=g.ow, pb_line=0, avg=avg)))
            d += t.ot * g.ow
        ch.stores += _contiguous("STORE", dst, y.dram_line + grp[0].plane * g.oh * g.ow + grp[0].oy0 * g.ow,
                                 d - dst)
        chunks.append(ch)
    return chunks, dict(planes_per_chunk=per, out_rows_per_tile=ot, in_slot_lines=0, out_slot_lines=slot,
                        window=[g.kh, g.kw], strides=[g.sh, g.sw], pads=[g.pt, g.pl, g.pb, g.pr],
                        input_in_ub=True)


def lower_maxpool(b: ProgramBuilder, node, x: Act, y: Act, stats: LayerStats,
                  resident: ResidentInput | None = None) -> None:
    """``MaxPool`` (int8, 2-D): POOL max per plane tile, padding (and ceil_mode overhang) = -128.
    ``resident``: the input is already in UB (written there by the producing conv)."""
    _require(node)
    g = _pool_geometry(node, avg=False)
    if resident is not None:
        chunks, tiling = _resident_pool_chunks(b.cfg, g, resident, y, False)
        _finish_layer(b, stats, [], chunks, [y], 0, tiling)
        return
    chunks, tiling = _choose(b.cfg, [], [_pool_chunks(b.cfg, g, x, y, False, INT8[0], budget)
                                         for budget in POOL_CHUNKS])
    _finish_layer(b, stats, [], chunks, [x, y], 0, tiling)


def lower_qavgpool(b: ProgramBuilder, node, x: Act, y: Act, stats: LayerStats,
                   resident: ResidentInput | None = None) -> None:
    """``lowering::QAveragePool`` (global or windowed): POOL avg, padding = x_zero_point (contributes 0).
    ``resident``: the input is already in UB (written there by the producing conv)."""
    _require(node)
    g = _pool_geometry(node, avg=True)
    zx = _int(node, "x_zero_point", 0)
    line = param_line(_int(node, "multiplier"), 0, _int(node, "shift"), zx, 0, **_finish_params(node),
                      line_bytes=b.cfg.line_bytes)
    prologue, const_bytes = _param_prologue(b, line, None)
    if resident is not None:
        chunks, tiling = _resident_pool_chunks(b.cfg, g, resident, y, True)
        tensors = [y]
    else:
        chunks, tiling = _choose(b.cfg, prologue, [_pool_chunks(b.cfg, g, x, y, True, zx, budget)
                                                   for budget in POOL_CHUNKS])
        tensors = [x, y]
    _finish_layer(b, stats, prologue, chunks, tensors, const_bytes, dict(tiling, global_pool=bool(
        _int(node, "global", 0))))

"""NPU-1 functional semantics (ACCELERATOR.md B.2 semantics, B.4 VPU), bit-exact, one instruction at a time
with vectorised numpy (D.3: float32 matmul, exact for int8 blocks of K <= 256).

State: the DRAM image (bytes) and the on-chip buffers sized from the config, in lines of B = R bytes:
UB and WB int8 ``[lines, B]``, ACC int32 ``[rows, B]``, PB and LUT bytes ``[lines, B]`` (LUT table t is
bytes ``[256 t, 256 t + 256)``, int8), plus the weights latched in the array by the last preloading GEMM.

Parameter layouts in PB (little-endian):
- ACT record (10 lines, B.1): lines 0-3 bias int32[B], 4-7 multiplier M0 int32[B], 8 shift uint8[B],
  9 byte 0 = out_zero_point int8 (rest reserved).
- EWISE / POOL-avg record (1 line, defined here): bytes [0:4] Ma int32 (MUL and POOL-avg: the multiplier
  M), [4:8] Mb int32, [8] shift uint8, [9] za int8 (POOL: input zero point), [10] zb int8, [11] zo int8,
  [12] clamp_min int8, [13] clamp_max int8, rest reserved.

Rounding ``(t * M + 2^(sh-1)) >> sh`` is int64 with an arithmetic shift; ``sh = 0`` means no rounding term
(``t * M``); ``sh > 62`` is an error. MAX/MIN ignore the scales (equal quantisation params) and apply the
record's clamp; max pooling reads no PB record. ``clamp(y, lo, hi) = min(max(y, lo), hi)``.
"""

from __future__ import annotations

import numpy as np

from .config import AccelConfig
from .errors import OutOfBoundsError, SimulationError
from .isa import Instruction

ACT_RECORD_LINES = 10


def footprint(cfg: AccelConfig, ins: Instruction) -> list[tuple[str, int, int, bool]]:
    """The (buffer, lo, hi, is_write) ranges an instruction touches: SRAM in lines (ACC in rows), DRAM in
    bytes. Ranges are bounding intervals of strided accesses (conservative for the hazard checker)."""
    f, L = ins.fields, cfg.line_bytes
    op = ins.op
    if op == "LOAD":
        h = f["pad_top"] + f["rows"] + f["pad_bottom"]
        w = f["pad_left"] + f["row_len"] + f["pad_right"]
        d0 = f["dram_line"] * L
        return [(f["buf"], f["sram_line"], f["sram_line"] + h * w, True),
                ("DRAM", d0, d0 + ((f["rows"] - 1) * f["dram_row_stride"] + f["row_len"]) * L, False)]
    if op == "STORE":
        unit = cfg.acc_row_bytes if f["buf"] == "ACC" else L
        d0 = f["dram_line"] * L
        s_hi = f["sram_line"] + (f["rows"] - 1) * f["sram_row_stride"] + f["row_len"]
        return [(f["buf"], f["sram_line"], s_hi, False),
                ("DRAM", d0, d0 + (f["rows"] - 1) * f["dram_row_stride"] * L + f["row_len"] * unit, True)]
    if op == "GEMM":
        m = f["m_inner"] * f["m_outer"]
        ub_hi = f["ub_line"] + (f["m_outer"] - 1) * f["ub_outer_stride"] + \
            (f["m_inner"] - 1) * f["ub_inner_stride"] + 1
        out = [("UB", f["ub_line"], ub_hi, False), ("ACC", f["acc_row"], f["acc_row"] + m, True)]
        if not f["reuse_weights"]:
            out.append(("WB", f["wb_line"], f["wb_line"] + cfg.array_rows, False))
        return out
    if op == "ACT":
        m = f["m_inner"] * f["m_outer"]
        ub_hi = f["ub_line"] + (f["m_outer"] - 1) * f["ub_outer_stride"] + f["m_inner"]
        out = [("ACC", f["acc_row"], f["acc_row"] + m, False), ("UB", f["ub_line"], ub_hi, True),
               ("PB", f["pb_line"], f["pb_line"] + ACT_RECORD_LINES, False)]
        return out + _lut_fp(cfg, f)
    if op == "EWISE":
        n = f["n_lines"]
        out = [("UB", f["a_line"], f["a_line"] + n, False), ("UB", f["b_line"], f["b_line"] + n, False),
               ("UB", f["dst_line"], f["dst_line"] + n, True), ("PB", f["pb_line"], f["pb_line"] + 1, False)]
        return out + _lut_fp(cfg, f)
    if op == "POOL":
        in_h = (f["out_h"] - 1) * f["sh"] + f["kh"]
        out = [("UB", f["src_line"], f["src_line"] + in_h * f["in_w"], False),
               ("UB", f["dst_line"], f["dst_line"] + f["out_h"] * f["out_w"], True)]
        if f["avg"]:
            out.append(("PB", f["pb_line"], f["pb_line"] + 1, False))
        return out
    return []


def _lut_fp(cfg, f):
    if not f["lut_en"]:
        return []
    per = cfg.lut_entries // cfg.line_bytes
    return [("LUT", f["lut_id"] * per, (f["lut_id"] + 1) * per, False)]


def _round_shift(t: np.ndarray, sh) -> np.ndarray:
    sh = np.asarray(sh, np.int64)
    rnd = np.where(sh > 0, np.int64(1) << np.maximum(sh - 1, 0), 0)
    return (t + rnd) >> sh


class Machine:
    """The architectural state of one NPU-1 and :meth:`execute` for each opcode."""

    def __init__(self, cfg: AccelConfig, dram=b""):
        self.cfg = cfg
        B = cfg.block
        self.dram = np.frombuffer(bytearray(dram), np.uint8) if not isinstance(dram, int) \
            else np.zeros(dram, np.uint8)
        self.ub = np.zeros((cfg.ub_lines, B), np.int8)
        self.wb = np.zeros((cfg.wb_lines, B), np.int8)
        self.acc = np.zeros((cfg.acc_rows, B), np.int32)
        self.pb = np.zeros((cfg.pb_lines, B), np.uint8)
        self.lut = np.zeros((cfg.lut_lines, B), np.uint8)
        self.array_w: np.ndarray | None = None  # float32 [B, B] weights latched in the PEs
        self._bytes = {"UB": self.ub.view(np.uint8), "WB": self.wb.view(np.uint8), "PB": self.pb,
                       "LUT": self.lut, "ACC": self.acc}

    # ---- helpers --------------------------------------------------------------------------------------
    def _size(self, buf: str) -> int:
        return len(self.dram) if buf == "DRAM" else len(self._bytes[buf])

    def check_bounds(self, pc: int, ins: Instruction) -> None:
        for buf, lo, hi, write in footprint(self.cfg, ins):
            n = self._size(buf)
            if lo < 0 or hi > n:
                unit = "bytes" if buf == "DRAM" else ("rows" if buf == "ACC" else "lines")
                raise OutOfBoundsError(
                    f"instruction {pc} ({ins.op}): {'write' if write else 'read'} of {buf} {unit} "
                    f"[{lo}, {hi}) out of bounds ({buf} has {n} {unit})")

    def lut_table(self, pc, ins, lut_id: int) -> np.ndarray:
        if lut_id >= self.cfg.lut_tables:
            raise SimulationError(f"instruction {pc} ({ins.op}): lut_id {lut_id} >= lut_tables "
                                  f"{self.cfg.lut_tables}")
        return self.lut.reshape(-1)[256 * lut_id:256 * lut_id + 256].view(np.int8).astype(np.int64)

    def _param_line(self, pc, ins, line: int):
        p = self.pb[line]
        sh = int(p[8])
        if sh > 62:
            raise SimulationError(f"instruction {pc} ({ins.op}): shift {sh} > 62 in PB line {line}")
        i32 = p[:8].view("<i4").astype(np.int64)
        s8 = p[9:14].view(np.int8).astype(np.int64)
        return dict(ma=int(i32[0]), mb=int(i32[1]), sh=sh, za=int(s8[0]), zb=int(s8[1]), zo=int(s8[2]),
                    cmin=int(s8[3]), cmax=int(s8[4]))

    def _finish(self, pc, ins, y, cmin, cmax, lut_en, lut_id):
        y = np.minimum(np.maximum(y, cmin), cmax)
        if lut_en:
            y = self.lut_table(pc, ins, lut_id)[y + 128]
        return y.astype(np.int8)

    # ---- execution ------------------------------------------------------------------------------------
    def run(self, instrs) -> None:
        for pc, ins in enumerate(instrs):
            self.execute(pc, ins)

    def execute(self, pc: int, ins: Instruction) -> None:
        self.check_bounds(pc, ins)
        if ins.op not in ("NOP", "FINISH"):
            getattr(self, "_" + ins.op.lower())(pc, ins, ins.fields)

    def _load(self, pc, ins, f):
        L = self.cfg.line_bytes
        rows, rl, stride = f["rows"], f["row_len"], f["dram_row_stride"]
        d0 = f["dram_line"] * L
        if rows == 1 or stride == rl:
            src = self.dram[d0:d0 + rows * rl * L]
        else:
            idx = (d0 + np.arange(rows) * stride * L)[:, None] + np.arange(rl * L)[None, :]
            src = self.dram[idx]
        dst = self._bytes[f["buf"]]
        pt, pb_, pl, pr = f["pad_top"], f["pad_bottom"], f["pad_left"], f["pad_right"]
        s = f["sram_line"]
        if pt == pb_ == pl == pr == 0:
            dst[s:s + rows * rl] = src.reshape(rows * rl, L)
            return
        h, w = pt + rows + pb_, pl + rl + pr
        tile = dst[s:s + h * w].reshape(h, w, L)
        tile[...] = np.uint8(f["pad_value"] & 0xFF)
        tile[pt:pt + rows, pl:pl + rl] = src.reshape(rows, rl, L)

    def _store(self, pc, ins, f):
        L = self.cfg.line_bytes
        rows, rl = f["rows"], f["row_len"]
        s, ss = f["sram_line"], f["sram_row_stride"]
        src_idx = (s + np.arange(rows) * ss)[:, None] + np.arange(rl)[None, :]
        if f["buf"] == "ACC":
            data = self.acc[src_idx].astype("<i4").view(np.uint8).reshape(rows, -1)
        else:
            data = self._bytes["UB"][src_idx].reshape(rows, -1)
        d0 = f["dram_line"] * L
        idx = (d0 + np.arange(rows) * f["dram_row_stride"] * L)[:, None] + np.arange(data.shape[1])[None, :]
        self.dram[idx] = data

    def _gemm(self, pc, ins, f):
        cfg = self.cfg
        B = cfg.block
        kv, nv = f["k_valid"] * cfg.k_granule, f["n_valid"] * cfg.n_granule
        if kv > B or nv > B:
            raise SimulationError(f"instruction {pc} (GEMM): k_valid {kv} / n_valid {nv} exceed the "
                                  f"{B}x{B} array")
        if f["reuse_weights"]:
            if self.array_w is None:
                raise SimulationError(f"instruction {pc} (GEMM): reuse_weights with no weights preloaded")
        else:
            self.array_w = self.wb[f["wb_line"]:f["wb_line"] + B].astype(np.float32)
        mi, mo = f["m_inner"], f["m_outer"]
        u0, si, so = f["ub_line"], f["ub_inner_stride"], f["ub_outer_stride"]
        if si == 1 and (mo == 1 or so == mi):     # contiguous rows: a slice, no gather (D.3)
            x = self.ub[u0:u0 + mi * mo, :kv].astype(np.float32)
        else:
            rows = (u0 + np.arange(mo) * so)[:, None] + (np.arange(mi) * si)[None, :]
            x = self.ub[rows.reshape(-1), :kv].astype(np.float32)
        res = (x @ self.array_w[:kv, :nv]).astype(np.int32)
        a = f["acc_row"]
        if f["accumulate"]:
            self.acc[a:a + mi * mo, :nv] += res   # int32 wrap-around
        else:
            self.acc[a:a + mi * mo, :nv] = res

    def _act(self, pc, ins, f):
        rec = self.pb[f["pb_line"]:f["pb_line"] + ACT_RECORD_LINES]
        bias = rec[0:4].reshape(-1).view("<i4").astype(np.int64)
        m0 = rec[4:8].reshape(-1).view("<i4").astype(np.int64)
        sh = rec[8].astype(np.int64)
        if sh.max() > 62:
            n = int(np.argmax(sh))
            raise SimulationError(f"instruction {pc} (ACT): shift {int(sh[n])} > 62 for channel {n} in the "
                                  f"PB record at line {f['pb_line']}")
        zp = int(rec[9, :1].view(np.int8)[0])
        mi, mo = f["m_inner"], f["m_outer"]
        a = f["acc_row"]
        x = self.acc[a:a + mi * mo].astype(np.int64) + bias
        y = _round_shift(x * m0, sh) + zp
        y = self._finish(pc, ins, y, f["clamp_min"], f["clamp_max"], f["lut_en"], f["lut_id"])
        dst = (f["ub_line"] + np.arange(mo) * f["ub_outer_stride"])[:, None] + np.arange(mi)[None, :]
        self.ub[dst.reshape(-1)] = y

    def _ewise(self, pc, ins, f):
        p = self._param_line(pc, ins, f["pb_line"])
        n = f["n_lines"]
        a = self.ub[f["a_line"]:f["a_line"] + n].astype(np.int64)
        b = self.ub[f["b_line"]:f["b_line"] + n].astype(np.int64)
        op = f["op"]
        if op in ("ADD", "SUB"):
            tb = p["mb"] * (b - p["zb"])
            t = p["ma"] * (a - p["za"]) + (tb if op == "ADD" else -tb)
            y = p["zo"] + _round_shift(t, p["sh"])
        elif op == "MUL":
            y = p["zo"] + _round_shift((a - p["za"]) * (b - p["zb"]) * p["ma"], p["sh"])
        elif op == "MAX":
            y = np.maximum(a, b)
        else:
            y = np.minimum(a, b)
        self.ub[f["dst_line"]:f["dst_line"] + n] = self._finish(pc, ins, y, p["cmin"], p["cmax"],
                                                                f["lut_en"], f["lut_id"])

    def _pool(self, pc, ins, f):
        kh, kw, sh, sw, oh, ow, in_w = (f[k] for k in ("kh", "kw", "sh", "sw", "out_h", "out_w", "in_w"))
        if (ow - 1) * sw + kw > in_w:
            raise SimulationError(f"instruction {pc} (POOL): window columns (out_w-1)*sw+kw = "
                                  f"{(ow - 1) * sw + kw} exceed in_w {in_w}")
        oy = np.arange(oh)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None]
        ox = np.arange(ow)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :]
        idx = (f["src_line"] + oy * in_w + ox).reshape(oh * ow, kh * kw)
        x = self.ub[idx]                                            # [oh*ow, kh*kw, B]
        if not f["avg"]:
            y = x.max(axis=1)
        else:
            p = self._param_line(pc, ins, f["pb_line"])
            s = (x.astype(np.int64) - p["za"]).sum(axis=1)
            y = self._finish(pc, ins, p["zo"] + _round_shift(s * p["ma"], p["sh"]), p["cmin"], p["cmax"],
                             False, 0)
        self.ub[f["dst_line"]:f["dst_line"] + oh * ow] = y


"""Hand-built NPU-1 programs for tests and benchmarks: a double-buffered tiled int8 GEMM (ACCELERATOR.md
B.1 layouts, B.3 semaphore convention, C.2 loop orders).

``C[M,N] = requant(A[M,K] · W[K,N])`` with A in DRAM as ``[K/B][M][B]`` (activation layout, one line per
row and K block), W as ``[N/B][K/B][B k][B n]`` blocks (B.1 weight layout), one 10-line ACT record per
output block, C as ``[N/B][M][B]``. Tiles are ``Mt`` rows x ``Nt`` columns with the full K panel:

- ``n_outer`` (weights resident): ``for n-tile: for m-tile`` — the W panel ``[K, Nt]`` stays while A panels
  stream (A read ``N/Nt`` times);
- ``m_outer`` (activations resident): ``for m-tile: for n-tile`` — the A panel ``[Mt, K]`` stays while W
  panels stream (W read ``M/Mt`` times).

Per tile: LD loads the panels that changed (A: one LOAD of K/B rows of Mt lines; W: one LOAD of Nt/B
rows of K lines), MX runs one GEMM per (n block, k block) (M = Mt rows, accumulating over k), VP one ACT
per n block, ST one strided STORE. Semaphores: S0/S1 A ready/free, S6/S7 W ready/free, S2/S3 ACC tile
ready/free, S4/S5 output tile ready/free; slot counts are the free semaphores' initial values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import AccelConfig
from .errors import SimulationError
from .isa import Instruction


@dataclass
class GemmWorkload:
    """A generated GEMM program with its DRAM image, operands and the expected output."""

    program: object            # simulator.Program
    dram: bytes
    a: np.ndarray              # int8 [M, K]
    w: np.ndarray              # int8 [K, N]
    out_offset: int            # DRAM byte offset of C ([N/B][M][B])
    expected: np.ndarray       # int8 [M, N]
    dram_bytes: dict = field(default_factory=dict)   # predicted useful bytes: a, w, params, c, total
    block: int = 32

    def output(self, dram: np.ndarray) -> np.ndarray:
        m, n = self.expected.shape
        b = self.block
        c = np.asarray(dram[self.out_offset:self.out_offset + m * n]).view(np.int8)
        return c.reshape(n // b, m, b).transpose(1, 0, 2).reshape(m, n)


def _check(cond, msg):
    if not cond:
        raise SimulationError(f"tiled_gemm: {msg}")


def tiled_gemm(cfg: AccelConfig, M: int, N: int, K: int, Mt: int, Nt: int, *, order: str = "n_outer",
               a_slots: int = 2, w_slots: int = 2, seed: int = 0, layer=None) -> GemmWorkload:
    """Build the program. ``layer`` is a name, or a function ``(m_tile, n_tile) -> name`` tagging each
    tile's instructions (the asm comment = the debug table's layer)."""
    from .simulator import Program

    B = cfg.block
    _check(M % Mt == 0 and N % Nt == 0 and Nt % B == 0 and K % B == 0, f"M={M} % Mt={Mt}, N={N} % Nt={Nt}, "
           f"Nt and K={K} must divide into {B}-blocks")
    _check(1 <= Mt <= 1024 and K <= 1024 and K // B <= 1024, "Mt and K must be <= 1024")
    _check(order in ("n_outer", "m_outer"), f"order {order!r} is n_outer or m_outer")
    a_lines, w_lines, o_lines = Mt * K // B, K * Nt // B, Mt * Nt // B
    _check(a_slots * a_lines + 2 * o_lines <= cfg.ub_lines, "A panels + output tiles exceed UB")
    _check(w_slots * w_lines <= cfg.wb_lines, "W panels exceed WB")
    _check(2 * o_lines <= cfg.acc_rows, "two accumulator tiles exceed ACC")
    _check(N // B * 10 <= cfg.pb_lines, "parameter records exceed PB")
    name = layer if callable(layer) else (lambda _m, _n, _x=layer or "gemm": _x)

    kb_n, nb_t, nb = K // B, Nt // B, N // B
    A_BASE, W_BASE = 0, K // B * M
    PB_BASE = W_BASE + N * K // B
    C_BASE = PB_BASE + nb * 10
    O_BASE = a_slots * a_lines  # UB: A slots, then two output slots

    tiles = [(m, n) for n in range(N // Nt) for m in range(M // Mt)] if order == "n_outer" else \
        [(m, n) for m in range(M // Mt) for n in range(N // Nt)]
    body = []   # per tile, in program order: LD, MX, VP, ST (the functional model runs program order)
    ld = [Instruction("LOAD", dict(buf="PB", sram_line=0, dram_line=PB_BASE, rows=nb, row_len=10,
                                       dram_row_stride=10), comment=name(*tiles[0]))]
    a_loads = w_loads = 0
    a_slot = w_slot = 0
    for t, (mt, nt) in enumerate(tiles):
        tag = name(mt, nt)
        ld = ld if t == 0 else []
        mx, vp, st = [], [], []
        body.append((ld, mx, vp, st))
        new_a = t == 0 or tiles[t - 1][0] != mt
        new_w = t == 0 or tiles[t - 1][1] != nt
        last = t == len(tiles) - 1
        free_a = last or tiles[t + 1][0] != mt
        free_w = last or tiles[t + 1][1] != nt
        if new_a:
            a_slot = a_loads % a_slots
            a_loads += 1
            ld.append(Instruction("LOAD", dict(buf="UB", sram_line=a_slot * a_lines,
                                               dram_line=A_BASE + mt * Mt, rows=kb_n, row_len=Mt,
                                               dram_row_stride=M), {1}, {0},
                                  comment=tag))
        if new_w:
            w_slot = w_loads % w_slots
            w_loads += 1
            ld.append(Instruction("LOAD", dict(buf="WB", sram_line=w_slot * w_lines,
                                               dram_line=W_BASE + nt * nb_t * kb_n * B, rows=nb_t,
                                               row_len=K, dram_row_stride=K), {7}, {6}, comment=tag))
        acc0 = (t % 2) * o_lines
        out0 = O_BASE + (t % 2) * o_lines
        for j in range(nb_t):
            for k in range(kb_n):
                first, fin = j == 0 and k == 0, j == nb_t - 1 and k == kb_n - 1
                wait = ({3} | ({0} if new_a else set()) | ({6} if new_w else set())) if first else set()
                sig = ({2} | ({1} if free_a else set()) | ({7} if free_w else set())) if fin else set()
                mx.append(Instruction("GEMM", dict(
                    ub_line=a_slot * a_lines + k * Mt, wb_line=w_slot * w_lines + (j * kb_n + k) * B,
                    acc_row=acc0 + j * Mt, m_inner=Mt, ub_inner_stride=1, k_valid=B // cfg.k_granule,
                    n_valid=B // cfg.n_granule, accumulate=k > 0), wait, sig, comment=tag))
        for j in range(nb_t):
            wait = {2, 5} if j == 0 else set()
            sig = {3, 4} if j == nb_t - 1 else set()
            vp.append(Instruction("ACT", dict(acc_row=acc0 + j * Mt, ub_line=out0 + j * Mt, m_inner=Mt,
                                              pb_line=(nt * nb_t + j) * 10, clamp_min=-128, clamp_max=127),
                                  wait, sig, comment=tag))
        st.append(Instruction("STORE", dict(buf="UB", sram_line=out0,
                                            dram_line=C_BASE + nt * nb_t * M + mt * Mt, rows=nb_t,
                                            row_len=Mt, dram_row_stride=M, sram_row_stride=Mt),
                              {4}, {5}, comment=tag))
    instrs = [ins for tile in body for q in tile for ins in q] + [Instruction("FINISH")]
    sem = (0, a_slots, 0, 2, 0, 2, 0, w_slots)
    program = Program(instrs, sem, [i.comment for i in instrs])

    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    half_log_k = (K.bit_length() - 1 + 1) // 2   # |acc| ~ sqrt(K) * 2^12.4: output spread over int8
    bias = rng.integers(-(1 << (10 + half_log_k)), 1 << (10 + half_log_k), N).astype(np.int64)
    m0 = rng.integers(1 << 30, 1 << 31, N).astype(np.int64)
    sh = np.full(N, 37 + half_log_k, np.int64) - rng.integers(0, 3, N)
    zp = -3
    rec = np.zeros((nb, 10, B), np.uint8)
    rec[:, 0:4] = bias.astype("<i4").reshape(nb, B).view(np.uint8).reshape(nb, 4, B)
    rec[:, 4:8] = m0.astype("<i4").reshape(nb, B).view(np.uint8).reshape(nb, 4, B)
    rec[:, 8] = sh.reshape(nb, B).astype(np.uint8)
    rec[:, 9, 0] = np.uint8(zp & 0xFF)
    a_d = a.reshape(M, kb_n, B).transpose(1, 0, 2)
    w_d = w.reshape(kb_n, B, nb, B).transpose(2, 0, 1, 3)
    dram = a_d.tobytes() + w_d.tobytes() + rec.tobytes() + bytes(M * N)
    acc = (a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64) + bias   # exact: |acc| < 2^53
    y = ((acc * m0 + (np.int64(1) << (sh - 1))) >> sh) + zp
    expected = np.clip(y, -128, 127).astype(np.int8)
    n_a = M * K * (1 if order == "m_outer" or M == Mt else N // Nt)
    n_w = K * N * (1 if order == "n_outer" or N == Nt else M // Mt)
    traffic = dict(a=n_a, w=n_w, params=nb * 10 * B, c=M * N)
    traffic["total"] = sum(traffic.values())
    return GemmWorkload(program, dram, a, w, C_BASE * B, expected, traffic, B)

"""NPU-1 cycle model (ACCELERATOR.md B.3, B.5): formulas, double buffering, deadlock, hazards, determinism."""

import numpy as np
import pytest

from runtime.accel.config import AccelConfig
from runtime.accel.errors import DeadlockError, HazardError, SimulationError
from runtime.accel.simulator import Program, simulate
from runtime.accel.timing import simulate_timing

pytestmark = pytest.mark.unit
CFG = AccelConfig()
B = 32


def timing(text, sem_init=(0,) * 8, **kw):
    return simulate_timing(CFG, Program.from_text(text).instructions, sem_init, **kw)


def test_one_load_matches_formula():
    # 4 rows of 3 lines = 96 B -> 2 bursts = 128 B per row; 512 B / 32 B/cycle = 16 bus cycles; + 100 latency
    t = timing("LOAD buf=UB sram_line=0 dram_line=0 rows=4 row_len=3 dram_row_stride=3 pad_top=1 pad_left=2\n"
               "FINISH")
    assert t.total_cycles == 16 + 100
    d = t.counters["dram"]
    assert (d["read_bytes"], d["read_bytes_burst"], d["bus_busy_cycles"]) == (384, 512, 16)
    assert t.counters["sram_write_bytes"]["UB"] == 5 * 5 * B          # pad lines are written, bus-free
    assert t.counters["engines"]["LD"]["busy"] == 16 and t.counters["engines"]["LD"]["idle"] == 100


def test_load_and_store_share_the_dram_bus():
    t = timing("LOAD buf=UB sram_line=0 dram_line=0 rows=1 row_len=64\n"
               "STORE buf=UB sram_line=100 dram_line=1000 rows=1 row_len=64\nFINISH")
    assert list(t.issue[:2]) == [0, 0] and list(t.done[:2]) == [64 + 100, 128 + 100]
    assert t.counters["engines"]["ST"]["dram_wait"] == 64 and t.total_cycles == 228


@pytest.mark.parametrize("m_inner, m_outer, reuse, cycles", [
    (16, 1, False, 32 + 63),       # preload not hidden: max(M, R)
    (16, 1, True, 16 + 63),
    (10, 10, False, 100 + 63),
])
def test_one_gemm_matches_formula(m_inner, m_outer, reuse, cycles):
    t = timing(f"GEMM m_inner={m_inner} m_outer={m_outer} k_valid=32 n_valid=20"
               f"{' reuse_weights' if reuse else ''}\nFINISH")
    m = m_inner * m_outer
    assert t.total_cycles == cycles
    c = t.counters
    assert c["macs_useful"] == m * 32 * 20 and c["mac_slots"] == m * 32 * 32
    assert c["engines"]["MX"]["busy"] == cycles - 63
    assert c["mac_util"] == pytest.approx(m * 32 * 20 / (cycles * 1024))
    assert c["mapping_efficiency"] == pytest.approx(20 / 32)


def test_vpu_occupancies():
    t = timing("ACT m_inner=8 m_outer=2\nEWISE n_lines=5\nPOOL kh=3 kw=3 out_h=2 out_w=2 in_w=8\n"
               "NOP engine=VP\nFINISH")
    assert list(t.issue) == [0, 16, 21, 57, 61] and t.total_cycles == 61
    assert t.counters["instructions"] == {"ACT": 1, "EWISE": 1, "FINISH": 1, "NOP": 1, "POOL": 1}


W_LINE, PB_LINE, IN_LINE = 0, 32, 42


def _tile_loop(n_tiles, pipelined):
    """in[t] (64 lines) -> GEMM -> ACT -> out[t]; slots alternate (t mod 2). Either semaphores (B.3
    convention) or a fence on every instruction. DRAM: W lines 0-31, PB record 32-41, inputs, outputs."""
    out = IN_LINE + n_tiles * 64
    sync = (lambda w, s: (f" wait={w}" if w else "") + (f" signal={s}" if s else "")) if pipelined \
        else (lambda w, s: " fence")
    lines = [f"LOAD buf=WB sram_line=0 dram_line={W_LINE} rows=1 row_len=32" + sync("", "S6"),
             f"LOAD buf=PB sram_line=0 dram_line={PB_LINE} rows=1 row_len=10" + sync("", "S7")]
    for t in range(n_tiles):
        s = t % 2
        first = t == 0
        lines += [
            f"LOAD buf=UB sram_line={s * 64} dram_line={IN_LINE + t * 64} rows=1 row_len=64"
            + sync("S1", "S0"),
            f"GEMM ub_line={s * 64} wb_line=0 acc_row={s * 64} m_inner=64 ub_inner_stride=1 "
            "k_valid=32 n_valid=32"
            + sync("S0,S3" + (",S6" if first else ""), "S1,S2"),
            f"ACT acc_row={s * 64} ub_line={1024 + s * 64} m_inner=64 pb_line=0 clamp_min=-128 clamp_max=127"
            + sync("S2,S5" + (",S7" if first else ""), "S3,S4"),
            f"STORE buf=UB sram_line={1024 + s * 64} dram_line={out + t * 64} rows=1 row_len=64"
            + sync("S4", "S5"),
        ]
    lines.append("FINISH")
    return Program.from_text("\n".join(lines), (0, 2, 0, 2, 0, 2, 0, 0) if pipelined else (0,) * 8), out


def _dram_image(n_tiles):
    rng = np.random.default_rng(11)
    w = rng.integers(-128, 128, (B, B)).astype(np.int8)
    rec = np.zeros((10, B), np.uint8)
    rec[4:8] = np.full(B, 1 << 30, "<i4").view(np.uint8).reshape(4, B)
    rec[8] = 40
    x = rng.integers(-128, 128, (n_tiles * 64, B)).astype(np.int8)
    return w.tobytes() + rec.tobytes() + x.tobytes() + bytes(n_tiles * 64 * B), w, x


def test_double_buffered_loop_is_faster_and_identical():
    n = 6
    image, w, x = _dram_image(n)
    fast_p, out_line = _tile_loop(n, True)
    slow_p, _ = _tile_loop(n, False)
    fast = simulate(CFG, fast_p, image)
    slow = simulate(CFG, slow_p, image)
    assert fast.cycles < 0.6 * slow.cycles
    assert slow.cycles == int((slow.timing.done - slow.timing.issue).sum())   # fully serial: plain sum
    np.testing.assert_array_equal(fast.dram, slow.dram)
    got = fast.dram[out_line * B:(out_line + n * 64) * B].view(np.int8).reshape(n * 64, B)
    acc = x.astype(np.int64) @ w.astype(np.int64)
    want = np.clip((acc * (1 << 30) + (1 << 39)) >> 40, -128, 127)
    assert len(np.unique(want)) > 50
    np.testing.assert_array_equal(got, want)
    c = fast.counters
    assert c["engines"]["MX"]["busy"] == n * 64 and c["dram"]["read_bytes"] == (32 + 10 + n * 64) * B
    assert c["dram"]["write_bytes"] == n * 64 * B and c["instructions"]["GEMM"] == n


def test_deadlock_names_instructions_and_semaphores():
    with pytest.raises(DeadlockError) as err:
        timing("LOAD buf=UB rows=1 row_len=1 wait=S1 signal=S0\nGEMM wait=S0,S2\nSTORE buf=UB\nFINISH")
    msg = str(err.value)
    assert "LD: head instruction 0" in msg and "S1 (value 0)" in msg
    assert "MX: head instruction 1" in msg and "S0 (value 0), S2 (value 0)" in msg
    assert "S0=0 S1=0" in msg and "ST" not in msg.split("semaphores")[0].split("\n", 1)[1].split("MX")[0]


def test_hazard_names_both_instructions():
    with pytest.raises(HazardError, match=r"hazard on UB \[0, 1\): instruction 0 \(LOAD on LD, cycles "
                                          r"\[0, 116\)\) and instruction 1 \(GEMM on MX"):
        timing("LOAD buf=UB sram_line=0 dram_line=0 rows=1 row_len=16\nGEMM ub_line=0 m_inner=16\nFINISH")
    ok = timing("LOAD buf=UB sram_line=0 dram_line=0 rows=1 row_len=16 signal=S0\n"
                "GEMM ub_line=0 m_inner=16 wait=S0\nFINISH")
    assert ok.issue[1] == 116
    disjoint = timing("LOAD buf=UB sram_line=0 rows=1 row_len=16\nGEMM ub_line=16 m_inner=16\nFINISH")
    assert disjoint.issue[1] == 0


def test_finish_must_be_last_and_determinism():
    with pytest.raises(SimulationError, match="instruction 0 \\(FINISH\\) is followed by 1"):
        timing("FINISH\nNOP")
    p, _ = _tile_loop(4, True)
    image = _dram_image(4)[0]
    a, b = simulate(CFG, p, image), simulate(CFG, p, image)
    assert a.counters == b.counters and (a.timing.issue == b.timing.issue).all()

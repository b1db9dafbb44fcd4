"""NPU-1 energy model (ACCELERATOR.md B.6) on hand-counted programs and the 1024^3 GEMM sanity example,
plus the tiled-GEMM generator the example uses (B.1 layouts, B.3 double buffering, C.2 loop orders)."""

import math

import numpy as np
import pytest

from runtime.accel.config import AccelConfig
from runtime.accel.energy import BREAKDOWN_KEYS, energy, energy_table, format_energy
from runtime.accel.simulator import Program, simulate
from runtime.accel.timing import count_groups, simulate_timing
from runtime.accel.workloads import tiled_gemm

pytestmark = pytest.mark.unit
CFG = AccelConfig()
MiB = 1 << 20
ACC_PJ = 2.5 * math.sqrt(1 / 8)   # 4 KiB ACC banks


@pytest.mark.parametrize("M, N, K, Mt, Nt, order", [
    (128, 96, 64, 64, 32, "n_outer"), (256, 128, 128, 64, 64, "m_outer"), (96, 64, 96, 32, 64, "m_outer")])
def test_tiled_gemm_generator_is_bit_exact_and_predicts_its_bytes(M, N, K, Mt, Nt, order):
    w = tiled_gemm(CFG, M, N, K, Mt, Nt, order=order, seed=M + N)
    r = simulate(CFG, w.program, w.dram)
    assert len(np.unique(w.expected)) > 100                     # not saturated
    np.testing.assert_array_equal(w.output(r.dram), w.expected)
    d = r.counters["dram"]
    assert d["read_bytes"] + d["write_bytes"] == w.dram_bytes["total"]
    assert r.counters["macs_useful"] == M * N * K


def _gemm_1024(order="m_outer"):
    if order == "m_outer":   # A panel (256 x 1024) resident, W panels (1024 x 64) streamed: ~6 MiB
        w = tiled_gemm(CFG, 1024, 1024, 1024, 256, 64, order="m_outer", a_slots=1)
    else:                    # W panel (1024 x 128) resident, A panels (128 x 1024) streamed: ~10 MiB
        w = tiled_gemm(CFG, 1024, 1024, 1024, 128, 128, order="n_outer")
    return w, simulate_timing(CFG, w.program.instructions, w.program.sem_init)


def test_1024_cubed_gemm_matches_hand_formulas():
    w, t = _gemm_1024("m_outer")
    e = energy(CFG, t.counters)
    n = 1024
    gemms = (n // 256) * (n // 32) * (n // 32)                  # one per (m tile, n block, k block)
    assert t.counters["instructions"]["GEMM"] == gemms
    assert e["mac"] == pytest.approx(n ** 3 * 0.3)             # every slot useful: M*R*C = M*K*N
    ub = gemms * 256 * 32 + n * n + n * n + n * n              # GEMM reads, ACT writes, LOAD A, STORE C
    assert e["ub"] == pytest.approx(ub * 2.5)
    wb = gemms * 1024 + n * n * (n // 256)                     # preloads + W streamed M/Mt times
    assert e["wb"] == pytest.approx(wb * 2.5)
    acc = gemms * 256 * 128 * (2 - 1 / 32) + n * n * 4         # write all, read when k > 0, ACT reads
    assert e["acc"] == pytest.approx(acc * ACC_PJ)
    acts = (n // 256) * (n // 32)
    assert e["pb_lut"] == pytest.approx((n // 32 * 320 + acts * 320) * 2.5)
    assert e["vpu"] == pytest.approx(n * n * 3.4)
    dram = w.dram_bytes["total"]
    assert dram == n * n + n * n * (n // 256) + n * n + n // 32 * 320
    assert e["dram"] == pytest.approx(dram * 160)
    assert e["static"] == 0 and e["total"] == pytest.approx(sum(e[k] for k in BREAKDOWN_KEYS[:-1]))
    assert e["pj_per_mac"] == pytest.approx(e["total"] / n ** 3)


@pytest.mark.parametrize("order", ["m_outer", "n_outer"])
def test_b6_sanity_example(order):
    """B.6: 1024^3 int8 GEMM with ~6-10 MiB of DRAM traffic: MAC ~0.32 mJ, DRAM 1.0-1.7 mJ, SRAM ~0.35 mJ;
    DRAM dominates. Also compute bound (C.3) with a high mac_util."""
    w, t = _gemm_1024(order)
    e = energy(CFG, t.counters)
    dram_bytes = t.counters["dram"]["read_bytes_burst"] + t.counters["dram"]["write_bytes_burst"]
    assert 6 * MiB <= dram_bytes <= 10.1 * MiB
    assert e["mac"] / 1e9 == pytest.approx(0.32, rel=0.02)
    assert 1.0 <= e["dram"] / 1e9 <= 1.7
    assert (e["ub"] + e["wb"] + e["acc"] + e["pb_lut"]) / 1e9 == pytest.approx(0.35, rel=0.1)
    assert max(BREAKDOWN_KEYS[:-1], key=e.get) == "dram" and e["dram"] / e["total"] > 0.55
    assert t.counters["mac_util"] > 0.95
    assert "dram" in format_energy(e)


def test_presets_and_static_energy():
    cfg = CFG.replace(static_mw=250.0)
    _, t = _gemm_1024("m_outer")
    c = t.counters
    h = energy(cfg, c)
    assert h["static"] == pytest.approx(250e-3 * c["total_cycles"] * 1e-9 * 1e12)   # W x s -> pJ
    a = energy(cfg, c, preset="accelergy32")
    assert a["mac"] == pytest.approx(c["mac_slots"] * 0.21)
    assert a["dram"] == pytest.approx(h["dram"] * 64 / 160)
    tab = energy_table(cfg, "accelergy32")
    assert tab.sram_read["UB"] == pytest.approx(2.27 / 2) and tab.sram_write["UB"] == pytest.approx(1.77 / 2)
    ey = energy(cfg, c, preset="eyeriss65")
    assert ey["mac"] == c["mac_slots"] and ey["dram"] == pytest.approx(100 * h["dram"] / 160)
    assert ey["ub"] == pytest.approx(h["ub"] * 3 / 2.5) and ey["acc"] == pytest.approx(h["acc"] * 3 / ACC_PJ)
    t45 = energy_table(cfg)
    assert t45.sram_read["LUT"] == pytest.approx(0.442, abs=1e-3)
    assert t45.sram_read["ACC"] == pytest.approx(0.884, abs=1e-3)


def test_vpu_actions_per_opcode():
    text = ("ACT m_inner=4 lut_en\nEWISE op=ADD n_lines=2\nEWISE op=MUL n_lines=1\nEWISE op=MAX n_lines=3\n"
            "POOL kh=3 kw=3 out_h=2 out_w=1 in_w=3 avg\nPOOL kh=2 kw=2 out_h=1 out_w=1 in_w=2\nFINISH")
    t = simulate_timing(CFG, Program.from_text(text).instructions)
    v = t.counters["vpu_energy_ops"]
    B = 32
    assert v["requant"] == (4 + 2 * 2 + 1 + 2) * B
    assert v["simple"] == (4 + 2 + 1 + 3 + 2 * 9 + 4) * B
    e = energy(CFG, t.counters)
    assert e["vpu"] == pytest.approx(v["requant"] * 3.4 + v["simple"] * 0.1)


def test_group_counters_sum_to_totals():
    w = tiled_gemm(CFG, 128, 128, 64, 64, 64, layer=lambda m, n: f"L{n}")
    t = simulate_timing(CFG, w.program.instructions, w.program.sem_init)
    groups = count_groups(CFG, w.program.instructions, w.program.layers)
    assert list(groups) == ["L0", "L1", None]
    per = [energy(CFG, g, cycles=0) for g in groups.values()]
    assert sum(p["total"] for p in per) == pytest.approx(energy(CFG, t.counters)["total"])
    assert sum(g["dram"]["bus_busy_cycles"] for g in groups.values()) == t.counters["dram"]["bus_busy_cycles"]
    assert sum(g["macs_useful"] for g in groups.values()) == t.counters["macs_useful"]

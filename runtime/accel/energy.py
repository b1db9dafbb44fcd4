"""NPU-1 energy model (ACCELERATOR.md B.6, Accelergy style): ``E = sum over actions of count x energy``.

Actions and where their counts come from (the B.5 counters of ``timing``):

- MAC: every *issued* MAC slot (``mac_slots`` = M·R·C per GEMM; padding lanes burn energy too).
- SRAM, per byte read or written, per buffer (B.6 "SRAM counts per instruction"): GEMM reads M·B bytes of
  UB, R·C bytes of WB per weight preload, writes M·4C bytes of ACC (+ reads them when accumulating); ACT
  reads M·4C of ACC + the 10-line PB record, writes M·B of UB (+ M·B LUT bytes with ``lut_en``);
  EWISE/POOL read and write UB (+ one PB line); LOAD writes and STORE reads the SRAM bytes they move
  (LOAD pad lines included: they are written).
- VPU: *requant-class* element-ops (an int32 multiply + adds: ACT, 2 per EWISE ADD/SUB element, 1 per
  EWISE MUL element, 1 per avg-pool output) and *simple* element-ops (add / compare / shift / LUT: the
  window reads of POOL, EWISE combine/MAX/MIN, LUT lookups).
- DRAM, per byte on the bus: the burst-rounded bytes (``read_bytes_burst + write_bytes_burst``), i.e. what
  the bus actually moves (equal to the useful bytes for burst-aligned rows).
- static: ``static_mw`` (config) x simulated time.

Presets (per-action energies in pJ):

- ``horowitz45`` (default, 45 nm): MAC 0.3; SRAM ``2.5·sqrt(bank_bytes / 32 KiB)`` pJ/B for read and
  write (UB/WB/PB 32 KiB banks 2.5, ACC 4 KiB banks 0.88, the 1 KiB LUT 0.44); DRAM 160 pJ/B; VPU requant
  3.4, simple 0.1.
- ``accelergy32`` (Timeloop/Accelergy ERT, 32 nm): MAC 0.21; SRAM 2.27 read / 1.77 write pJ/B for a
  128 KiB SRAM, scaled by ``sqrt(bank_bytes / 128 KiB)`` like the Horowitz rule (choice: the ERT gives one
  size); DRAM 64 pJ/B; VPU = the horowitz45 figures x 0.21/0.3 (choice: the ERT has no VPU entry).
- ``eyeriss65`` (Eyeriss ISCA'16 normalised costs, 65 nm): per 16-bit access MAC 1, RF 1, buffer 6,
  DRAM 200 units, so per byte RF 0.5 (the LUT), buffer 3 (UB/WB/PB/ACC), DRAM 100; VPU requant 3.4/0.3
  and simple 0.1/0.3 units (the horowitz45 ratios to a MAC). One unit = ``EYERISS_UNIT_PJ`` = 1 pJ, so the
  numbers read as "MAC-equivalents" (choice: the paper gives only ratios). Inter-PE ("array", 2 units)
  forwarding is not a separate action here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import AccelConfig
from .errors import ConfigError

BUFFERS = ("UB", "WB", "ACC", "PB", "LUT")
BREAKDOWN_KEYS = ("mac", "ub", "wb", "acc", "pb_lut", "vpu", "dram", "static", "total")
EYERISS_UNIT_PJ = 1.0
KiB = 1024


@dataclass(frozen=True)
class EnergyTable:
    """Per-action energies of one preset for one configuration (pJ)."""

    preset: str
    mac: float
    sram_read: dict    # buffer -> pJ per byte read
    sram_write: dict   # buffer -> pJ per byte written
    dram: float        # pJ per byte on the bus
    vpu_requant: float
    vpu_simple: float

    def to_dict(self) -> dict:
        return {"preset": self.preset, "mac_pj": self.mac, "sram_read_pj_per_byte": dict(self.sram_read),
                "sram_write_pj_per_byte": dict(self.sram_write), "dram_pj_per_byte": self.dram,
                "vpu_requant_pj": self.vpu_requant, "vpu_simple_pj": self.vpu_simple}


def bank_bytes(cfg: AccelConfig) -> dict:
    """Bytes per SRAM bank of each buffer (the LUT is one bank of all its tables)."""
    return {"UB": cfg.ub_bytes // cfg.ub_banks, "WB": cfg.wb_bytes // cfg.wb_banks,
            "ACC": cfg.acc_bytes // cfg.acc_banks, "PB": cfg.pb_bytes // cfg.pb_banks,
            "LUT": cfg.lut_tables * cfg.lut_entries}


def energy_table(cfg: AccelConfig, preset: str | None = None) -> EnergyTable:
    """The B.6 table of ``preset`` (default: the config's ``energy_preset``) for ``cfg``'s bank sizes."""
    preset = preset or cfg.energy_preset
    banks = bank_bytes(cfg)
    if preset == "horowitz45":
        per_b = {b: 2.5 * math.sqrt(n / (32 * KiB)) for b, n in banks.items()}
        return EnergyTable(preset, 0.3, per_b, dict(per_b), 160.0, 3.4, 0.1)
    if preset == "accelergy32":
        scale = {b: math.sqrt(n / (128 * KiB)) for b, n in banks.items()}
        k = 0.21 / 0.3
        return EnergyTable(preset, 0.21, {b: 2.27 * s for b, s in scale.items()},
                           {b: 1.77 * s for b, s in scale.items()}, 64.0, 3.4 * k, 0.1 * k)
    if preset == "eyeriss65":
        u = EYERISS_UNIT_PJ
        per_b = {b: (0.5 if b == "LUT" else 3.0) * u for b in banks}
        return EnergyTable(preset, 1.0 * u, per_b, dict(per_b), 100.0 * u, 3.4 / 0.3 * u, 0.1 / 0.3 * u)
    raise ConfigError(f"unknown energy preset {preset!r}; presets: horowitz45, accelergy32, eyeriss65")


def energy(cfg: AccelConfig, counters: dict, *, cycles: int | None = None, preset: str | None = None,
           table: EnergyTable | None = None) -> dict:
    """Energy breakdown in pJ (keys :data:`BREAKDOWN_KEYS`, plus ``pj_per_mac`` per useful MAC and
    ``preset``) from the B.5 counters (the ``counters`` of a timing run, or one group of
    ``timing.count_groups``). Static energy uses ``cycles`` (default ``counters["total_cycles"]``; 0 for a
    group without one)."""
    t = table or energy_table(cfg, preset)
    rd, wr = counters["sram_read_bytes"], counters["sram_write_bytes"]
    sram = {b: rd.get(b, 0) * t.sram_read[b] + wr.get(b, 0) * t.sram_write[b] for b in BUFFERS}
    d = counters["dram"]
    v = counters["vpu_energy_ops"]
    if cycles is None:
        cycles = counters.get("total_cycles", 0)
    out = {
        "mac": counters["mac_slots"] * t.mac,
        "ub": sram["UB"], "wb": sram["WB"], "acc": sram["ACC"], "pb_lut": sram["PB"] + sram["LUT"],
        "vpu": v["requant"] * t.vpu_requant + v["simple"] * t.vpu_simple,
        "dram": (d["read_bytes_burst"] + d["write_bytes_burst"]) * t.dram,
        "static": cfg.static_mw * (cycles / cfg.clock_mhz) * 1e3,   # mW x us = nJ = 1e3 pJ
    }
    out["total"] = sum(out.values())
    macs = counters["macs_useful"]
    out["pj_per_mac"] = out["total"] / macs if macs else 0.0
    out["preset"] = t.preset
    return out


def format_energy(e: dict) -> str:
    """One line per term in µJ with its share of the total."""
    tot = e["total"] or 1.0
    lines = [f"energy ({e['preset']}): total {e['total'] / 1e6:.3f} uJ, {e['pj_per_mac']:.3f} pJ/MAC"]
    for k in BREAKDOWN_KEYS[:-1]:
        lines.append(f"  {k:<7} {e[k] / 1e6:12.3f} uJ  {100 * e[k] / tot:5.1f}%")
    return "\n".join(lines)

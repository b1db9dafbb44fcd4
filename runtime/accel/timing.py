"""NPU-1 cycle model (ACCELERATOR.md B.3 synchronisation, B.5 timing and counters), instruction-granular.

Four in-order queues (LD, MX, VP, ST; NOPs go to the queue their ``engine`` field names) plus FINISH, a
barrier after everything. The head of a queue issues at ``max(engine free, earliest token of every
semaphore in wait, fence time)``; tokens are consumed at issue, produced at completion. The globally
earliest issuable head goes first (ties: lowest pc), so token races resolve in time order,
deterministically. LOAD and STORE share one DRAM bus: bus time ``ceil(sum_rows ceil(row_bytes/burst)*burst
/ bytes_per_cycle)`` (pad lines are free), starting when both the engine and the bus are free; completion
``bus end + dram_latency_cycles``. GEMM occupies ``max(M, R)`` (``M`` when it reuses the latched weights)
and completes ``fill_latency`` later; ACT ``M``, EWISE ``n_lines``, POOL ``out_h*out_w*kh*kw`` cycles,
completing ``vpu_latency`` later; NOP 1 cycle. Total cycles = FINISH time (or the last completion).

Also the B.3 checks: deadlock (no head can ever issue) and hazards (instructions on different engines
whose ``[issue, completion)`` intervals overlap and whose footprints overlap with a write; DRAM footprints
are checked too, since LD and ST race on DRAM the same way).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from .config import AccelConfig
from .errors import DeadlockError, HazardError, SimulationError
from .functional import ACT_RECORD_LINES, footprint
from .isa import Instruction, disasm_one

QUEUES = ("LD", "MX", "VP", "ST", "FIN")
BUFFERS = ("UB", "WB", "ACC", "PB", "LUT")


@dataclass
class TimingResult:
    """Per-instruction issue/completion cycles and the B.5 counters (``counters`` has stable keys)."""

    issue: np.ndarray
    done: np.ndarray
    engine: list
    total_cycles: int
    counters: dict = field(default_factory=dict)
    busy_end: np.ndarray | None = None   # end of engine occupancy (DMA: end of its bus transfer)
    bus_start: np.ndarray | None = None  # DMA: start of the bus transfer (-1 for other instructions)


def dma_cost(cfg: AccelConfig, ins: Instruction) -> tuple[int, int, int]:
    """(useful bytes, burst-rounded bytes, bus cycles) of a LOAD/STORE."""
    f = ins.fields
    unit = cfg.acc_row_bytes if f["buf"] == "ACC" else cfg.line_bytes
    row = f["row_len"] * unit
    burst = math.ceil(row / cfg.dram_burst_bytes) * cfg.dram_burst_bytes
    useful, rounded = f["rows"] * row, f["rows"] * burst
    return useful, rounded, math.ceil(rounded / cfg.dram_bytes_per_cycle)


def occupancy(cfg: AccelConfig, ins: Instruction) -> tuple[int, int]:
    """(engine occupancy, latency after it) of a non-DMA instruction (B.5 table)."""
    f, op = ins.fields, ins.op
    if op == "GEMM":
        m = f["m_inner"] * f["m_outer"]
        return (m if f["reuse_weights"] else max(m, cfg.array_rows)), cfg.fill_latency
    if op == "ACT":
        return f["m_inner"] * f["m_outer"], cfg.vpu_latency
    if op == "EWISE":
        return f["n_lines"], cfg.vpu_latency
    if op == "POOL":
        return f["out_h"] * f["out_w"] * f["kh"] * f["kw"], cfg.vpu_latency
    if op == "NOP":
        return 1, 0
    return 0, 0


# EWISE energy actions per element (B.6): ADD/SUB rescale both operands (two int32 multiplies) and add;
# MUL is one int32 multiply (requant) after a small product; MAX/MIN are one compare.
_EWISE_ENERGY = {"ADD": (2, 1), "SUB": (2, 1), "MUL": (1, 1), "MAX": (0, 1), "MIN": (0, 1)}


class _Counters:
    def __init__(self, cfg):
        self.cfg = cfg
        self.engines = {q: dict(busy=0, sem_wait=0, fence_wait=0, dram_wait=0, instructions=0)
                        for q in QUEUES[:4]}
        self.dram = dict(bus_busy_cycles=0, read_bytes=0, read_bytes_burst=0, write_bytes=0,
                         write_bytes_burst=0)
        self.macs_useful = 0
        self.mac_slots = 0
        self.sram_read = dict.fromkeys(BUFFERS, 0)
        self.sram_write = dict.fromkeys(BUFFERS, 0)
        self.vpu_ops = dict(requant=0, add=0, sub=0, mul=0, max=0, min=0, pool_max=0, pool_avg=0, lut=0)
        # B.6 energy actions of the VPU: requant-class element-ops (an int32 multiply + adds) and simple
        # element-ops (add / compare / shift / LUT). See energy.py for the per-opcode accounting.
        self.vpu_energy = dict(requant=0, simple=0)
        self.opcodes: dict[str, int] = {}
        self.sem_wait = [0] * 8
        self.high_water = dict.fromkeys(BUFFERS, 0)

    def count(self, ins: Instruction):
        cfg, f, op = self.cfg, ins.fields, ins.op
        B, L = cfg.block, cfg.line_bytes
        self.opcodes[op] = self.opcodes.get(op, 0) + 1
        for buf, _lo, hi, _w in footprint(cfg, ins):
            if buf != "DRAM":
                unit = cfg.acc_row_bytes if buf == "ACC" else L
                self.high_water[buf] = max(self.high_water[buf], hi * unit)
        if op in ("LOAD", "STORE"):
            useful, rounded, _ = dma_cost(cfg, ins)
            if op == "LOAD":
                h = f["pad_top"] + f["rows"] + f["pad_bottom"]
                w = f["pad_left"] + f["row_len"] + f["pad_right"]
                self.sram_write[f["buf"]] += h * w * L
                self.dram["read_bytes"] += useful
                self.dram["read_bytes_burst"] += rounded
            else:
                self.sram_read[f["buf"]] += useful
                self.dram["write_bytes"] += useful
                self.dram["write_bytes_burst"] += rounded
        elif op == "GEMM":
            m = f["m_inner"] * f["m_outer"]
            self.macs_useful += m * f["k_valid"] * cfg.k_granule * f["n_valid"] * cfg.n_granule
            self.mac_slots += m * cfg.array_rows * cfg.array_cols
            self.sram_read["UB"] += m * B
            if not f["reuse_weights"]:
                self.sram_read["WB"] += cfg.array_rows * cfg.array_cols
            self.sram_write["ACC"] += m * cfg.acc_row_bytes
            if f["accumulate"]:
                self.sram_read["ACC"] += m * cfg.acc_row_bytes
        elif op == "ACT":
            m = f["m_inner"] * f["m_outer"]
            self.sram_read["ACC"] += m * cfg.acc_row_bytes
            self.sram_read["PB"] += ACT_RECORD_LINES * L
            self.sram_write["UB"] += m * B
            self.vpu_ops["requant"] += m * B
            self.vpu_energy["requant"] += m * B
            if f["lut_en"]:
                self.vpu_ops["lut"] += m * B
                self.vpu_energy["simple"] += m * B
                self.sram_read["LUT"] += m * B
        elif op == "EWISE":
            n = f["n_lines"]
            self.sram_read["UB"] += 2 * n * B
            self.sram_write["UB"] += n * B
            self.sram_read["PB"] += L
            self.vpu_ops[f["op"].lower()] += n * B
            rq, simple = _EWISE_ENERGY[f["op"]]
            self.vpu_energy["requant"] += rq * n * B
            self.vpu_energy["simple"] += simple * n * B
            if f["lut_en"]:
                self.vpu_ops["lut"] += n * B
                self.vpu_energy["simple"] += n * B
                self.sram_read["LUT"] += n * B
        elif op == "POOL":
            outs = f["out_h"] * f["out_w"]
            self.sram_read["UB"] += outs * f["kh"] * f["kw"] * B
            self.sram_write["UB"] += outs * B
            self.vpu_ops["pool_avg" if f["avg"] else "pool_max"] += outs * f["kh"] * f["kw"] * B
            self.vpu_energy["simple"] += outs * f["kh"] * f["kw"] * B
            if f["avg"]:
                self.sram_read["PB"] += L
                self.vpu_energy["requant"] += outs * B

    def additive(self) -> dict:
        """The counters that sum over any partition of the program (per-layer tables)."""
        return {"macs_useful": self.macs_useful, "mac_slots": self.mac_slots, "dram": dict(self.dram),
                "sram_read_bytes": dict(self.sram_read), "sram_write_bytes": dict(self.sram_write),
                "vpu_ops": dict(self.vpu_ops), "vpu_energy_ops": dict(self.vpu_energy),
                "instructions": dict(sorted(self.opcodes.items()))}

    def as_dict(self, total: int) -> dict:
        cfg = self.cfg
        engines = {}
        for q, e in self.engines.items():
            e = dict(e)
            e["idle"] = total - e["busy"] - e["sem_wait"] - e["fence_wait"] - e["dram_wait"]
            engines[q] = e
        cyc = max(total, 1)
        return {
            "total_cycles": total,
            "time_us": total / cfg.clock_mhz,
            "engines": engines,
            "dram": dict(self.dram),
            "macs_useful": self.macs_useful,
            "mac_slots": self.mac_slots,
            "mac_util": self.macs_useful / (cyc * cfg.array_rows * cfg.array_cols),
            "mapping_efficiency": self.macs_useful / self.mac_slots if self.mac_slots else 0.0,
            "mx_active": engines["MX"]["busy"] / cyc,
            "dram_bw_util": self.dram["bus_busy_cycles"] / cyc,
            "sram_read_bytes": dict(self.sram_read),
            "sram_write_bytes": dict(self.sram_write),
            "sram_high_water_bytes": dict(self.high_water),
            "vpu_ops": dict(self.vpu_ops),
            "vpu_energy_ops": dict(self.vpu_energy),
            "instructions": dict(sorted(self.opcodes.items())),
            "semaphore_wait_cycles": {f"S{i}": w for i, w in enumerate(self.sem_wait)},
        }


def _route(instrs) -> list[list[int]]:
    queues: list[list[int]] = [[] for _ in QUEUES]
    for pc, ins in enumerate(instrs):
        if ins.op == "FINISH" and pc != len(instrs) - 1:
            raise SimulationError(f"instruction {pc} (FINISH) is followed by {len(instrs) - pc - 1} more "
                                  "instruction(s); FINISH must be last")
        queues[QUEUES.index(ins.engine)].append(pc)
    return queues


def _deadlock(instrs, queues, heads, tokens, first_unissued) -> DeadlockError:
    lines = ["deadlock: every non-empty queue is blocked and nothing is in flight"]
    for qi, q in enumerate(QUEUES):
        if heads[qi] >= len(queues[qi]):
            continue
        pc = queues[qi][heads[qi]]
        ins = instrs[pc]
        why = [f"S{s} (value 0)" for s in sorted(ins.wait) if not tokens[s]]
        if (ins.fence or ins.op == "FINISH") and first_unissued < pc:
            why.append(f"fence behind unissued instruction {first_unissued} ({instrs[first_unissued].op})")
        lines.append(f"  {q}: head instruction {pc} ({disasm_one(ins)}) blocked on {', '.join(why)}; "
                     f"{len(queues[qi]) - heads[qi]} queued")
    lines.append("  semaphores: " + " ".join(f"S{s}={len(t)}" for s, t in enumerate(tokens)))
    return DeadlockError("\n".join(lines))


def simulate_timing(cfg: AccelConfig, instrs, sem_init=(0,) * 8, check_hazards: bool = True) -> TimingResult:
    """Run the cycle model over a decoded program; raise on deadlock or (if asked) on a hazard."""
    n = len(instrs)
    if len(sem_init) > 8 or any(v < 0 for v in sem_init):
        raise SimulationError(f"semaphore initial values {tuple(sem_init)}: at most 8, each >= 0")
    queues = _route(instrs)
    heads = [0] * len(QUEUES)
    engine_free = [0] * len(QUEUES)
    tokens: list[list] = [[(0, -1)] * v for v in sem_init] + [[] for _ in range(8 - len(sem_init))]
    issue = np.zeros(n, np.int64)
    done = np.zeros(n, np.int64)
    busy_end = np.zeros(n, np.int64)
    bus_start = np.full(n, -1, np.int64)
    issued = [False] * n
    first_unissued, prefix_max = 0, 0
    bus_free = 0
    c = _Counters(cfg)
    remaining = n
    while remaining:
        best = None
        for qi in range(len(QUEUES)):
            if heads[qi] >= len(queues[qi]):
                continue
            pc = queues[qi][heads[qi]]
            ins = instrs[pc]
            t = engine_free[qi]
            if ins.fence or ins.op == "FINISH":
                if first_unissued < pc:
                    continue
                t = max(t, prefix_max)
            base = t
            if any(not tokens[s] for s in ins.wait):
                continue
            for s in ins.wait:
                t = max(t, tokens[s][0][0])
            if best is None or (t, pc) < best[:2]:
                best = (t, pc, qi, base)
        if best is None:
            raise _deadlock(instrs, queues, heads, tokens, first_unissued)
        t, pc, qi, base = best
        ins = instrs[pc]
        heads[qi] += 1
        for s in ins.wait:
            tok_t, _ = heapq.heappop(tokens[s])
            c.sem_wait[s] += max(0, tok_t - base)
        c.count(ins)
        if qi < 4:
            e = c.engines[QUEUES[qi]]
            e["instructions"] += 1
            e["sem_wait"] += t - base
            e["fence_wait"] += base - engine_free[qi]
        if ins.op in ("LOAD", "STORE"):
            _, _, bus = dma_cost(cfg, ins)
            start = max(t, bus_free)
            bus_free = engine_free[qi] = start + bus
            e["busy"] += bus
            e["dram_wait"] += start - t
            c.dram["bus_busy_cycles"] += bus
            fin = start + bus + cfg.dram_latency_cycles
            bus_start[pc], busy_end[pc] = start, start + bus
        else:
            occ, lat = occupancy(cfg, ins)
            engine_free[qi] = busy_end[pc] = t + occ
            if qi < 4:
                e["busy"] += occ
            fin = t + occ + lat
        issue[pc], done[pc] = t, fin
        for s in ins.signal:
            heapq.heappush(tokens[s], (fin, pc))
        issued[pc] = True
        remaining -= 1
        while first_unissued < n and issued[first_unissued]:
            prefix_max = max(prefix_max, int(done[first_unissued]))
            first_unissued += 1
    total = int(done.max()) if n else 0
    if n and instrs[-1].op == "FINISH":
        total = int(done[-1])
    engines = [instrs[pc].engine for pc in range(n)]
    if check_hazards:
        check_hazard_intervals(cfg, instrs, issue, done, engines)
    return TimingResult(issue, done, engines, total, c.as_dict(total), busy_end, bus_start)


def count_groups(cfg: AccelConfig, instrs, keys) -> dict:
    """The additive B.5 counters (MACs, DRAM/SRAM bytes, bus cycles, VPU ops, instruction counts) summed per
    group, plus each group's SRAM high-water marks: ``keys[pc]`` names the group of instruction ``pc`` (e.g.
    its layer). Groups in first-seen order."""
    groups: dict = {}
    for ins, key in zip(instrs, keys):
        c = groups.get(key)
        if c is None:
            c = groups[key] = _Counters(cfg)
        c.count(ins)
        if ins.op in ("LOAD", "STORE"):
            c.dram["bus_busy_cycles"] += dma_cost(cfg, ins)[2]
    out = {}
    for k, c in groups.items():
        out[k] = c.additive()
        out[k]["sram_high_water_bytes"] = dict(c.high_water)   # max, not a sum
    return out


def check_hazard_intervals(cfg, instrs, issue, done, engines) -> None:
    """B.3 hazard checker: sweep the ``[issue, done)`` intervals in issue order."""
    order = sorted(range(len(instrs)), key=lambda pc: (int(issue[pc]), pc))
    active: list[tuple[int, int, list]] = []
    for pc in order:
        fp = footprint(cfg, instrs[pc])
        if not fp:
            continue
        t0 = int(issue[pc])
        active = [a for a in active if a[0] > t0]
        for _a_done, other, ofp in active:
            if engines[other] == engines[pc] or done[pc] <= issue[pc]:
                continue
            for buf, lo, hi, w in fp:
                for obuf, olo, ohi, ow in ofp:
                    if buf == obuf and (w or ow) and lo < ohi and olo < hi:
                        first, second = sorted((other, pc))
                        raise HazardError(_hazard_message(instrs, issue, done, engines, first, second, buf,
                                                          max(lo, olo), min(hi, ohi)))
        active.append((int(done[pc]), pc, fp))


def _hazard_message(instrs, issue, done, engines, a, b, buf, lo, hi) -> str:
    def who(pc):
        return (f"instruction {pc} ({instrs[pc].op} on {engines[pc]}, cycles [{int(issue[pc])}, "
                f"{int(done[pc])}))")
    return (f"hazard on {buf} [{lo}, {hi}): {who(a)} and {who(b)} overlap in time and in footprint "
            f"(at least one writes) with no semaphore or fence ordering them")

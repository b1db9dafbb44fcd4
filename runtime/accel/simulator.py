"""NPU-1 simulator entry point: a program (instructions + semaphore initial values + DRAM image) run through
the timing model (B.3/B.5, with the deadlock and hazard checks) and the functional model (B.2/B.4).

The functional model executes in program order; that equals any legal interleaving because the hazard
checker rejects unsynchronised overlapping accesses first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import AccelConfig
from .functional import Machine
from .isa import Instruction, asm, decode_program, encode_program
from .timing import TimingResult, simulate_timing

SIMULATOR_VERSION = "0.1"


@dataclass
class Program:
    """What the runtime hands the simulator: instructions, semaphore initial values (B.2 header)."""

    instructions: list[Instruction]
    sem_init: tuple = (0,) * 8
    layers: list | None = None  # optional per-instruction layer names (debug table)

    @classmethod
    def from_text(cls, text: str, sem_init=(0,) * 8) -> Program:
        instrs = asm(text)
        return cls(instrs, tuple(sem_init), [i.comment for i in instrs])

    @classmethod
    def from_bytes(cls, data: bytes, sem_init=(0,) * 8, layers=None) -> Program:
        return cls(decode_program(data, layers), tuple(sem_init), layers)

    def to_bytes(self) -> bytes:
        return encode_program(self.instructions)


@dataclass
class SimResult:
    machine: Machine | None
    timing: TimingResult | None
    counters: dict = field(default_factory=dict)

    @property
    def dram(self) -> np.ndarray:
        return self.machine.dram

    @property
    def cycles(self) -> int:
        return self.timing.total_cycles


def simulate(cfg: AccelConfig, program: Program, dram=b"", *, functional: bool = True,
             timing: bool = True, check_hazards: bool = True) -> SimResult:
    """Run ``program`` on a fresh machine whose DRAM starts as ``dram`` (bytes, or a size in bytes)."""
    t = simulate_timing(cfg, program.instructions, program.sem_init, check_hazards) if timing else None
    m = None
    if functional:
        m = Machine(cfg, dram)
        m.run(program.instructions)
    return SimResult(m, t, t.counters if t else {})

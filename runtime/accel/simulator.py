"""NPU-1 simulator entry point: a program (``program.Program``: instructions, semaphore initial values, DRAM
image; or its packed container, B.2 "Artifact") run through the timing model (B.3/B.5, with the deadlock and
hazard checks) and the functional model (B.2/B.4).

The functional model executes in program order; that equals any legal interleaving because the hazard
checker rejects unsynchronised overlapping accesses first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .config import AccelConfig
from .errors import ProgramFormatError
from .functional import Machine
from .program import Program, unpack
from .timing import TimingResult, simulate_timing

SIMULATOR_VERSION = "0.2"
__all__ = ["SIMULATOR_VERSION", "Program", "SimResult", "simulate"]


@dataclass
class SimResult:
    machine: Machine | None
    timing: TimingResult | None
    counters: dict = field(default_factory=dict)
    wall_s: float = 0.0   # host seconds simulate() took (not deterministic: kept out of compared reports)

    @property
    def dram(self) -> np.ndarray:
        return self.machine.dram

    @property
    def cycles(self) -> int:
        return self.timing.total_cycles


def simulate(cfg: AccelConfig, program, dram=None, *, functional: bool = True,
             timing: bool = True, check_hazards: bool = True) -> SimResult:
    """Run ``program`` (a :class:`Program`, or a packed container as bytes) on a fresh machine whose DRAM
    starts as ``dram`` (bytes, or a size in bytes; default: the program's constant image at its offset in a
    zeroed DRAM of the size it declares). A program bound to another config is an error."""
    t0 = time.perf_counter()
    if isinstance(program, (bytes, bytearray, memoryview)):
        program = unpack(program, cfg)
    elif program.config_hash and program.config_hash != cfg.config_hash():
        raise ProgramFormatError(f"NPU-1 program: compiled for config hash {program.config_hash[:16]}..., "
                                 f"but the simulator's config {cfg.name!r} has {cfg.config_hash()[:16]}...")
    if dram is None:
        dram = program.initial_dram()
    t = simulate_timing(cfg, program.instructions, program.sem_init, check_hazards) if timing else None
    m = None
    if functional:
        m = Machine(cfg, dram)
        m.run(program.instructions)
    return SimResult(m, t, t.counters if t else {}, time.perf_counter() - t0)

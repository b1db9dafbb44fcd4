"""NPU-1 simulator entry point: a program (``program.Program``: instructions, semaphore initial values, DRAM
image; or its packed container, B.2 "Artifact") run through the timing model (B.3/B.5, with the deadlock and
hazard checks) and the functional model (B.2/B.4).

Execution order of the functional model: when the timing model ran, the instructions execute in its issue
order (pcs sorted by issue cycle, ties by pc; a stable sort), else in program order. The issue order is always
a legal one once the hazard checker has passed: any two conflicting instructions (overlapping footprints, one
writing, on different engines) are synchronised by a semaphore or a fence, so the first completes before the
second issues; instructions of one engine issue in program order. Program order is not always legal: a
semaphore may let a later instruction of one queue run before an earlier one of another (e.g. a LOAD that
a preceding GEMM waits for). Without the hazard check (``check_hazards=False``), the issue order is the
one the hardware would start the instructions in, and racing accesses give whichever result that order
gives.

The timing model does not depend on the data, so a caller that runs one program many times (the runtime's
custom executor) can pass the :class:`~.timing.TimingResult` of an earlier run as ``timing_result`` and skip
re-running it.
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
__all__ = ["SIMULATOR_VERSION", "Program", "SimResult", "execution_order", "simulate"]


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


def execution_order(timing: TimingResult | None, n: int) -> list[int]:
    """The order the functional model executes ``n`` instructions in: the timing model's issue order (by
    issue cycle, ties by pc) when there is a timing result, else program order (see the module docstring)."""
    if timing is None:
        return list(range(n))
    return np.argsort(np.asarray(timing.issue), kind="stable").tolist()


def simulate(cfg: AccelConfig, program, dram=None, *, functional: bool = True,
             timing: bool = True, check_hazards: bool = True,
             timing_result: TimingResult | None = None) -> SimResult:
    """Run ``program`` (a :class:`Program`, or a packed container as bytes) on a fresh machine whose DRAM
    starts as ``dram`` (bytes, or a size in bytes; default: the program's constant image at its offset in a
    zeroed DRAM of the size it declares). A program bound to another config is an error.

    ``timing_result``: the timing of an earlier :func:`simulate` of this same program and config (timing is
    data-independent), used instead of running the timing model again."""
    t0 = time.perf_counter()
    if isinstance(program, (bytes, bytearray, memoryview)):
        program = unpack(program, cfg)
    elif program.config_hash and program.config_hash != cfg.config_hash():
        raise ProgramFormatError(f"NPU-1 program: compiled for config hash {program.config_hash[:16]}..., "
                                 f"but the simulator's config {cfg.name!r} has {cfg.config_hash()[:16]}...")
    if dram is None:
        dram = program.initial_dram()
    if timing_result is not None:
        if len(timing_result.issue) != len(program.instructions):
            raise ValueError(f"timing_result is for {len(timing_result.issue)} instructions, the program has "
                             f"{len(program.instructions)}")
        t = timing_result
    else:
        t = simulate_timing(cfg, program.instructions, program.sem_init, check_hazards) if timing else None
    m = None
    if functional:
        m = Machine(cfg, dram)
        instrs = program.instructions
        for pc in execution_order(t, len(instrs)):
            m.execute(pc, instrs[pc])
    return SimResult(m, t, t.counters if t else {}, time.perf_counter() - t0)

"""The functional model runs in the timing model's issue order (runtime.accel.simulator): a semaphore may let
a later instruction of one queue run before an earlier one of another, and the result must follow."""

import numpy as np
import pytest

from runtime.accel.config import AccelConfig
from runtime.accel.errors import HazardError
from runtime.accel.isa import asm
from runtime.accel.program import Program, pack
from runtime.accel.simulator import execution_order, simulate
from runtime.accel.workloads import tiled_gemm

pytestmark = pytest.mark.unit
CFG = AccelConfig()
L = CFG.line_bytes

# EWISE (pc 1) waits for a LOAD that comes after it in program order (pc 2): legal, synchronised by S0.
OUT_OF_ORDER = """
LOAD buf=PB sram_line=0 dram_line=0 rows=1 row_len=1 signal=S2 ; params
EWISE op=MAX a_line=0 b_line=4 dst_line=8 n_lines=4 pb_line=0 wait=S0,S2 signal=S1 ; max
LOAD buf=UB sram_line=0 dram_line=1 rows=1 row_len=8 signal=S0 ; operands
STORE buf=UB sram_line=8 dram_line=9 rows=1 row_len=4 wait=S1 ; out
FINISH
"""


def _dram(seed=0):
    rng = np.random.default_rng(seed)
    rec = np.zeros(L, np.uint8)
    rec[12], rec[13] = np.uint8(-128 & 0xFF), np.uint8(127)        # clamp_min, clamp_max
    a = rng.integers(-128, 128, (4, L)).astype(np.int8)
    b = rng.integers(-128, 128, (4, L)).astype(np.int8)
    dram = rec.tobytes() + a.tobytes() + b.tobytes() + bytes(4 * L)
    return dram, np.maximum(a, b)


def test_semaphore_order_differs_from_program_order():
    prog = Program.from_text(OUT_OF_ORDER)
    dram, expected = _dram()
    res = simulate(CFG, prog, dram)
    order = execution_order(res.timing, len(prog.instructions))
    assert order.index(2) < order.index(1)                 # the LOAD executes before the EWISE
    assert order == sorted(range(5), key=lambda pc: (int(res.timing.issue[pc]), pc))
    out = res.dram[9 * L:13 * L].view(np.int8).reshape(4, L)
    np.testing.assert_array_equal(out, expected)
    # program order (no timing) reads UB before the LOAD fills it: a different, wrong result
    stale = simulate(CFG, prog, dram, timing=False)
    assert stale.timing is None
    assert not np.array_equal(stale.dram[9 * L:13 * L].view(np.int8).reshape(4, L), expected)


def test_no_timing_means_program_order():
    assert execution_order(None, 4) == [0, 1, 2, 3]


def test_ties_are_broken_by_pc():
    class T:
        issue = np.array([5, 0, 5, 0, 9])

    assert execution_order(T, 5) == [1, 3, 0, 2, 4]


def test_packed_program_runs_in_issue_order_too():
    prog = Program.from_text(OUT_OF_ORDER)
    dram, expected = _dram(1)
    prog.dram_image, prog.dram_bytes = dram, len(dram)
    res = simulate(CFG, pack(prog))
    np.testing.assert_array_equal(res.dram[9 * L:13 * L].view(np.int8).reshape(4, L), expected)


def test_reused_timing_gives_the_same_result():
    prog = Program.from_text(OUT_OF_ORDER)
    dram, expected = _dram(2)
    first = simulate(CFG, prog, dram)
    again = simulate(CFG, prog, dram, timing_result=first.timing)
    assert again.timing is first.timing and again.cycles == first.cycles
    np.testing.assert_array_equal(again.dram, first.dram)
    with pytest.raises(ValueError, match="timing_result is for 5 instructions"):
        simulate(CFG, Program.from_text("NOP\nFINISH"), 64, timing_result=first.timing)


@pytest.mark.parametrize("order", ["n_outer", "m_outer"])
def test_gemm_workloads_agree_with_program_order(order):
    w = tiled_gemm(CFG, 128, 96, 64, 32, 32, order=order, a_slots=2)
    timed = simulate(CFG, w.program, w.dram)
    untimed = simulate(CFG, w.program, w.dram, timing=False)
    np.testing.assert_array_equal(w.output(timed.dram), w.expected)
    np.testing.assert_array_equal(timed.dram, untimed.dram)


def test_the_hazard_check_still_rejects_an_unsynchronised_read():
    racy = OUT_OF_ORDER.replace("wait=S0,S2", "wait=S2").replace("signal=S0", "")
    with pytest.raises(HazardError):
        simulate(CFG, Program.from_text(racy), _dram()[0])
    assert len(asm(racy)) == 5

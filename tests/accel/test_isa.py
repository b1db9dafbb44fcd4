"""NPU-1 ISA (ACCELERATOR.md B.2): exact 128-bit encoding, golden words, asm/disasm round trip, ranges."""

import random

import pytest

from runtime.accel.errors import IsaError
from runtime.accel.isa import LAYOUT, Instruction, asm, decode, decode_program, disasm, encode, encode_program

pytestmark = pytest.mark.unit


def _random_instruction(op, rng):
    fields = {}
    for name, lo, hi, kind in LAYOUT[op]:
        width = hi - lo + 1
        if isinstance(kind, dict):
            fields[name] = rng.choice(list(kind))
        elif isinstance(kind, tuple):
            fields[name] = rng.choice(kind)
        elif kind == "b":
            fields[name] = rng.random() < 0.5
        elif kind == "m1":
            fields[name] = rng.randint(1, 1 << width)
        elif kind == "s8":
            fields[name] = rng.randint(-128, 127)
        else:
            fields[name] = rng.randint(0, (1 << width) - 1)
    wait = {s for s in range(8) if rng.random() < 0.3}
    signal = {s for s in range(8) if rng.random() < 0.3}
    return Instruction(op, fields, wait, signal, rng.random() < 0.5)


@pytest.mark.parametrize("op", sorted(LAYOUT))
def test_encode_decode_round_trip(op):
    rng = random.Random(op)
    for _ in range(200):
        ins = _random_instruction(op, rng)
        word = encode(ins)
        assert len(word) == 16
        assert decode(word) == ins
        assert encode(decode(word)) == word


def test_golden_load_word():
    # opcode 1 | wait S0 <<4 | signal S1 <<13 | fence <<23 | buf WB(1) <<24 | sram 2 <<27 | dram 3 <<43
    # | rows_m1 0 | row_len_m1 31 <<81
    ins = Instruction("LOAD", {"buf": "WB", "sram_line": 2, "dram_line": 3, "rows": 1, "row_len": 32},
                      wait={0}, signal={1}, fence=True)
    w = encode(ins)
    assert int.from_bytes(w[:8], "little") == 0x0000180011802011
    assert int.from_bytes(w[8:], "little") == 0x3E0000


def test_golden_gemm_word():
    ins = Instruction("GEMM", {"ub_line": 5, "wb_line": 64, "acc_row": 3, "m_inner": 16, "m_outer": 2,
                               "ub_inner_stride": 1, "ub_outer_stride": 18, "k_valid": 32, "n_valid": 32,
                               "accumulate": True})
    w = encode(ins)
    assert int.from_bytes(w[:8], "little") == 0x0300400005100003
    assert int.from_bytes(w[8:], "little") == 0x7DF001220081E0


def test_golden_finish_and_nop():
    assert encode(Instruction("FINISH")) == bytes([15]) + bytes(15)
    assert encode(Instruction("NOP", {"engine": "ST"})) == (3 << 20).to_bytes(16, "little")


def test_asm_disasm_round_trip():
    rng = random.Random(7)
    prog = [_random_instruction(op, rng) for op in sorted(LAYOUT) for _ in range(20)]
    for i, ins in enumerate(prog):
        ins.comment = f"layer{i % 3}" if i % 2 else None
    text = disasm(prog)
    again = asm(text)
    assert again == prog and [i.comment for i in again] == [i.comment for i in prog]
    assert disasm(again) == text
    assert decode_program(encode_program(prog)) == prog


def test_asm_defaults_and_example_line():
    (g,) = asm("GEMM ub_line=0 wb_line=32 acc_row=0 m_inner=16 wait=S0,S3 signal=S1 accumulate ; conv1\n")
    assert g.m_inner == 16 and g.m_outer == 1 and g.k_valid == 1 and g.accumulate and not g.reuse_weights
    assert g.wait == {0, 3} and g.signal == {1} and g.comment == "conv1"
    assert asm("; only a comment\n\n") == []
    (e,) = asm("EWISE op=max a_line=1 b_line=2 dst_line=3 n_lines=4 fence")
    assert e.op == "EWISE" and e.fields["op"] == "MAX" and e.fence


@pytest.mark.parametrize("text, match", [
    ("GEMM m_inner=1025", r"m_inner=1025 out of range \[1, 1024\]"),
    ("GEMM m_inner=0", "m_inner=0 out of range"),
    ("LOAD dram_line=268435456", "dram_line"),
    ("LOAD pad_value=128", "pad_value=128"),
    ("ACT clamp_min=-129", "clamp_min"),
    ("LOAD buf=ACC", "buf"),
    ("GEMM wait=S8", "wait semaphore 8 out of range"),
    ("FOO x=1", "unknown opcode"),
    ("GEMM bogus=1", "no field 'bogus'"),
    ("POOL kh=9", "kh=9"),
])
def test_out_of_range_errors(text, match):
    with pytest.raises(IsaError, match=match):
        asm(text)


def test_decode_rejects_reserved_opcode_and_stray_bits():
    with pytest.raises(IsaError, match="reserved opcode 7"):
        decode(bytes([7]) + bytes(15))
    with pytest.raises(IsaError, match="outside the op's fields"):
        decode((1 | 1 << 127).to_bytes(16, "little"))   # LOAD uses bits up to 126
    with pytest.raises(IsaError, match="16 bytes"):
        decode(bytes(8))

"""NPU-1 functional semantics (ACCELERATOR.md B.2, B.4): every opcode against an independent reference."""

import numpy as np
import pytest

from runtime.accel.config import AccelConfig
from runtime.accel.errors import OutOfBoundsError, SimulationError
from runtime.accel.functional import Machine
from runtime.accel.isa import asm

pytestmark = pytest.mark.unit
CFG = AccelConfig()
B = 32


def act_record(bias, m0, sh, zp):
    rec = np.zeros((10, B), np.uint8)
    rec[0:4] = np.asarray(bias, "<i4").view(np.uint8).reshape(4, B)
    rec[4:8] = np.asarray(m0, "<i4").view(np.uint8).reshape(4, B)
    rec[8] = np.asarray(sh, np.uint8)
    rec[9, 0] = np.uint8(zp & 0xFF)
    return rec.tobytes()


def param_line(ma=0, mb=0, sh=0, za=0, zb=0, zo=0, cmin=-128, cmax=127):
    line = np.zeros(B, np.uint8)
    line[0:8] = np.array([ma, mb], "<i4").view(np.uint8)
    line[8] = sh
    line[9:14] = np.array([za, zb, zo, cmin, cmax], np.int8).view(np.uint8)
    return line.tobytes()


def rshift_round(t, sh):  # python ints: round half up, arithmetic shift
    return (t + (1 << (sh - 1))) >> sh if sh else t


def run(text, dram):
    m = Machine(CFG, dram)
    m.run(asm(text))
    return m


def test_load_with_padding_then_store_round_trip():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (3, 4, B), dtype=np.int8)
    dram = bytearray(x.tobytes()) + bytearray(6 * 5 * B)
    out = 12  # DRAM line of the output region
    m = run(f"""LOAD buf=UB sram_line=10 dram_line=0 rows=3 row_len=4 dram_row_stride=4 \
pad_top=1 pad_bottom=1 pad_left=1 pad_right=1 pad_value=-5
STORE buf=UB sram_line=10 dram_line={out} rows=5 row_len=6 dram_row_stride=6 sram_row_stride=6
FINISH""".replace("\\\n", ""), dram)
    want = np.pad(x, ((1, 1), (1, 1), (0, 0)), constant_values=-5)
    got = m.dram[out * B:out * B + want.size].view(np.int8).reshape(want.shape)
    np.testing.assert_array_equal(got, want)


def test_load_strided_rows_and_store_acc_raw():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (4, 8, B), dtype=np.int8)     # take a 2x3 window at (1, 2)
    dram = bytearray(x.tobytes()) + bytearray(4 * 2 * 4 * B)
    m = Machine(CFG, dram)
    m.acc[5:9] = rng.integers(-2**31, 2**31, (4, B), dtype=np.int64).astype(np.int32)
    m.run(asm(f"""LOAD buf=UB sram_line=0 dram_line={1 * 8 + 2} rows=2 row_len=3 dram_row_stride=8
STORE buf=ACC sram_line=5 dram_line=32 rows=2 row_len=2 dram_row_stride=8 sram_row_stride=2"""))
    np.testing.assert_array_equal(m.ub[:6].reshape(2, 3, B), x[1:3, 2:5])
    got = m.dram[32 * B:(32 + 16) * B].view("<i4").reshape(4, B)
    np.testing.assert_array_equal(got, m.acc[5:9])


def _conv_program(h, w, cin, stride):
    """A 3x3 conv (pad 1) of an [h][w][cin] tile into 32 output channels, one GEMM per tap and K block."""
    hp, wp = h + 2, w + 2
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    kb = cin // B
    lines = []
    for c in range(kb):   # input tile of K block c at UB line c*hp*wp; DRAM layout [C/32][H][W][32]
        lines.append(f"LOAD buf=UB sram_line={c * hp * wp} dram_line={c * h * w} rows={h} row_len={w} "
                     f"dram_row_stride={w} pad_top=1 pad_bottom=1 pad_left=1 pad_right=1 pad_value=3")
    wdram = kb * h * w
    lines.append(f"LOAD buf=WB sram_line=0 dram_line={wdram} rows=1 row_len={kb * 9 * B}")
    first = True
    for c in range(kb):
        for ky in range(3):
            for kx in range(3):
                blk = (c * 9 + ky * 3 + kx) * B
                lines.append(f"GEMM ub_line={c * hp * wp + ky * wp + kx} wb_line={blk} acc_row=0 "
                             f"m_inner={wo} m_outer={ho} ub_inner_stride={stride} "
                             f"ub_outer_stride={stride * wp} k_valid={B} n_valid={B}"
                             + ("" if first else " accumulate"))
                first = False
    lines.append("FINISH")
    return "\n".join(lines), wdram, (ho, wo)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3_by_gemm_taps_matches_numpy(stride):
    rng = np.random.default_rng(2 + stride)
    h, w, cin = 6, 7, 64
    x = rng.integers(-128, 128, (cin, h, w)).astype(np.int8)
    wt = rng.integers(-128, 128, (B, cin, 3, 3)).astype(np.int8)
    text, wline, (ho, wo) = _conv_program(h, w, cin, stride)
    x_dram = x.reshape(cin // B, B, h, w).transpose(0, 2, 3, 1)               # [C/32][H][W][32]
    w_dram = wt.reshape(B, cin // B, B, 3, 3).transpose(1, 3, 4, 2, 0)        # [Cin/32][kh][kw][k][n]
    dram = x_dram.tobytes() + w_dram.tobytes()
    assert len(x_dram.tobytes()) == wline * B
    m = run(text, dram)
    xp = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1)), constant_values=3)
    want = np.zeros((ho, wo, B), np.int64)
    for ky in range(3):
        for kx in range(3):
            patch = xp[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
            want += np.einsum("chw,nc->hwn", patch, wt[:, :, ky, kx].astype(np.int64))
    np.testing.assert_array_equal(m.acc[:ho * wo].reshape(ho, wo, B), want)


def test_gemm_valid_subset_wraparound_and_reuse():
    m = Machine(CFG, b"")
    m.ub[0:2] = 127
    m.wb[0:B] = 127
    m.acc[0:2] = 2**31 - 1
    m.acc[0:2, 5:] = 7
    m.run(asm("GEMM ub_line=0 wb_line=0 acc_row=0 m_inner=2 k_valid=3 n_valid=5 accumulate\n"
              "GEMM ub_line=0 wb_line=999 acc_row=4 m_inner=1 k_valid=1 n_valid=1 reuse_weights"))
    want = np.int64(2**31 - 1) + 3 * 127 * 127
    assert m.acc[0, 0] == ((want + 2**31) % 2**32) - 2**31          # wrapped
    assert (m.acc[0:2, 5:] == 7).all()                               # columns >= n_valid untouched
    assert m.acc[4, 0] == 127 * 127 and m.acc[4, 1] == 0             # reused the latched weights
    with pytest.raises(SimulationError, match="instruction 0 .*no weights preloaded"):
        Machine(CFG, b"").run(asm("GEMM reuse_weights"))


def test_act_requant_matches_python_ints():
    rng = np.random.default_rng(5)
    acc = rng.integers(-2**31, 2**31, (6, B), dtype=np.int64)
    acc[0, :4] = [2**31 - 1, -2**31, 0, -1]
    bias = rng.integers(-2**20, 2**20, B)
    m0 = rng.integers(2**30, 2**31, B)
    sh = rng.integers(1, 40, B)
    sh[:3] = [1, 62, 31]
    zp, cmin, cmax = -7, -100, 90
    lut = rng.integers(-128, 128, 256).astype(np.int8)
    dram = act_record(bias, m0, sh, zp) + lut.tobytes()
    for lut_en in (False, True):
        m = Machine(CFG, dram)
        m.acc[100:106] = acc.astype(np.int32)
        m.run(asm(f"""LOAD buf=PB sram_line=20 dram_line=0 rows=1 row_len=10
LOAD buf=LUT sram_line=16 dram_line=10 rows=1 row_len=8
ACT acc_row=100 ub_line=50 m_inner=3 m_outer=2 ub_outer_stride=5 pb_line=20 clamp_min={cmin} \
clamp_max={cmax} lut_id=2{' lut_en' if lut_en else ''}""".replace("\\\n", "")))
        for r in range(6):
            line = 50 + (r // 3) * 5 + r % 3
            for n in range(B):
                y = rshift_round((int(acc[r, n]) + int(bias[n])) * int(m0[n]), int(sh[n]))
                y = min(max(y + zp, cmin), cmax)
                if lut_en:
                    y = int(lut[y + 128])
                assert m.ub[line, n] == y, (r, n)


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "MAX", "MIN"])
def test_ewise_matches_python_ints(op):
    rng = np.random.default_rng(len(op) * 31 + ord(op[1]))
    a = rng.integers(-128, 128, (3, B)).astype(np.int8)
    b = rng.integers(-128, 128, (3, B)).astype(np.int8)
    p = dict(ma=1518500250, mb=1073741824, sh=31, za=3, zb=-9, zo=5, cmin=-120, cmax=100)
    if op == "MUL":
        p.update(ma=1518500250, sh=38)
    dram = a.tobytes() + b.tobytes() + param_line(**p)
    m = run(f"""LOAD buf=UB sram_line=0 dram_line=0 rows=1 row_len=6
LOAD buf=PB sram_line=7 dram_line=6 rows=1 row_len=1
EWISE op={op} a_line=0 b_line=3 dst_line=10 n_lines=3 pb_line=7""", dram)
    for i in range(3):
        for n in range(B):
            x, y = int(a[i, n]), int(b[i, n])
            if op in ("ADD", "SUB"):
                t = p["ma"] * (x - p["za"]) + (1 if op == "ADD" else -1) * p["mb"] * (y - p["zb"])
                r = p["zo"] + rshift_round(t, p["sh"])
            elif op == "MUL":
                r = p["zo"] + rshift_round((x - p["za"]) * (y - p["zb"]) * p["ma"], p["sh"])
            else:
                r = max(x, y) if op == "MAX" else min(x, y)
            assert m.ub[10 + i, n] == min(max(r, p["cmin"]), p["cmax"]), (i, n)


@pytest.mark.parametrize("avg", [False, True])
def test_pool_matches_numpy(avg):
    rng = np.random.default_rng(9)
    h, w, kh, kw, s = 7, 6, 3, 2, 2
    oh, ow = (h - kh) // s + 1, (w - kw) // s + 1
    x = rng.integers(-128, 128, (h, w, B)).astype(np.int8)
    p = dict(ma=1431655765, sh=32, za=-4, zo=2, cmin=-128, cmax=127)  # ~ 1/6 for a 3x2 window
    dram = x.tobytes() + param_line(**p)
    m = run(f"""LOAD buf=UB sram_line=0 dram_line=0 rows=1 row_len={h * w}
LOAD buf=PB sram_line=0 dram_line={h * w} rows=1 row_len=1
POOL src_line=0 dst_line=100 in_w={w} kh={kh} kw={kw} sh={s} sw={s} out_h={oh} out_w={ow} pb_line=0\
{' avg' if avg else ''}""", dram)
    win = np.stack([x[ky:ky + s * (oh - 1) + 1:s, kx:kx + s * (ow - 1) + 1:s].astype(np.int64)
                    for ky in range(kh) for kx in range(kw)])
    if avg:
        t = (win - p["za"]).sum(0) * p["ma"]
        want = np.clip(p["zo"] + ((t + (1 << (p["sh"] - 1))) >> p["sh"]), -128, 127)
    else:
        want = win.max(0)
    np.testing.assert_array_equal(m.ub[100:100 + oh * ow].reshape(oh, ow, B), want)


@pytest.mark.parametrize("text, match", [
    ("NOP\nLOAD buf=UB sram_line=16383 dram_line=0 rows=1 row_len=2",
     r"instruction 1 \(LOAD\): write of UB lines \[16383, 16385\) out of bounds \(UB has 16384 lines\)"),
    ("LOAD buf=UB dram_line=4 rows=1 row_len=1", r"instruction 0 \(LOAD\): read of DRAM bytes"),
    ("GEMM acc_row=1000 m_inner=30", r"instruction 0 \(GEMM\): write of ACC rows \[1000, 1030\)"),
    ("GEMM wb_line=8190", r"read of WB lines \[8190, 8222\)"),
    ("STORE buf=UB dram_line=1 rows=1 row_len=4", r"write of DRAM bytes \[32, 160\)"),
    ("ACT pb_line=1020", r"read of PB lines \[1020, 1030\)"),
    ("EWISE a_line=16384", r"read of UB lines \[16384, 16385\)"),
])
def test_out_of_bounds_errors_name_instruction_and_buffer(text, match):
    with pytest.raises(OutOfBoundsError, match=match):
        run(text, bytes(4 * B))

"""NPU-1 program container (ACCELERATOR.md B.2 "Artifact"): pack/unpack round trip, validation errors,
disassembly with layers, and the simulator running the container directly."""

import struct

import numpy as np
import pytest

from runtime.accel.config import AccelConfig, preset
from runtime.accel.errors import ProgramFormatError
from runtime.accel.program import HEADER_BYTES, Program, TensorInfo, disasm, pack, unpack
from runtime.accel.simulator import simulate
from runtime.accel.workloads import tiled_gemm

pytestmark = pytest.mark.unit
CFG = AccelConfig()


def _container():
    w = tiled_gemm(CFG, 128, 64, 64, 64, 32, layer=lambda m, n: f"fc{n}")
    p = w.program
    out_bytes = 128 * 64
    image = w.dram[:w.out_offset]
    prog = Program(p.instructions, p.sem_init, p.layers, image, 0, w.out_offset + out_bytes,
                   [TensorInfo("x", 0, [128, 64], [2, 128, 32], "K/32,M,32", "int8", 0.05, -3),
                    TensorInfo("y", w.out_offset, [128, 64], [2, 128, 32], "N/32,M,32", "int8", 0.1, -3)],
                   {"fc0": ["Gemm_0"], "fc1": ["Gemm_0", "Relu_1"]}, CFG.config_hash(),
                   {"partition": [{"segment": "npu", "nodes": ["Gemm_0", "Relu_1"]}]})
    return w, prog


def test_pack_unpack_round_trip():
    _, prog = _container()
    data = pack(prog)
    back = unpack(data, CFG)
    assert back.instructions == prog.instructions and back.layers == prog.layers
    assert back.sem_init == tuple(prog.sem_init) and back.dram_image == prog.dram_image
    assert (back.const_offset, back.dram_bytes, back.config_hash) == (0, prog.dram_bytes, CFG.config_hash())
    assert back.tensors == prog.tensors and back.layer_nodes == prog.layer_nodes and back.meta == prog.meta
    assert pack(back) == data                                   # deterministic, lossless
    n = len(prog.instructions)
    assert data[:8] == b"NPU1PRG\0" and data[HEADER_BYTES:HEADER_BYTES + 16 * n] == prog.to_bytes()
    assert data[HEADER_BYTES + 16 * n:HEADER_BYTES + 16 * n + len(prog.dram_image)] == prog.dram_image
    bare = unpack(pack(Program(prog.instructions[-1:])))
    assert bare.config_hash is None and bare.layers == [None] and bare.tensors == []


def test_simulate_runs_the_container():
    w, prog = _container()
    direct = simulate(CFG, w.program, w.dram)
    packed = simulate(CFG, pack(prog))
    assert packed.cycles == direct.cycles and packed.counters == direct.counters
    np.testing.assert_array_equal(w.output(packed.dram), w.expected)
    assert len(packed.dram) == prog.dram_bytes


def _patch(data, fmt, offset, value):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def test_validation_errors():
    _, prog = _container()
    data = pack(prog)
    with pytest.raises(ProgramFormatError, match=r"truncated: 10 bytes, the header alone is 96"):
        unpack(data[:10])
    with pytest.raises(ProgramFormatError, match=r"truncated: .* the header announces"):
        unpack(data[:-1])
    with pytest.raises(ProgramFormatError, match=r"bad magic b'ELF"):
        unpack(b"ELF" + data[3:])
    with pytest.raises(ProgramFormatError, match=r"format version 2 is newer than this runtime's 1"):
        unpack(_patch(data, "<H", 8, 2))
    corrupt = bytearray(data)
    corrupt[HEADER_BYTES + 5] ^= 0x40
    with pytest.raises(ProgramFormatError, match="checksum mismatch"):
        unpack(bytes(corrupt))
    with pytest.raises(ProgramFormatError, match="trailing bytes"):
        unpack(data + b"\0")
    other = preset("gemmini_like")
    with pytest.raises(ProgramFormatError, match=r"compiled for config hash .* config 'gemmini_like' has"):
        unpack(data, other)
    with pytest.raises(ProgramFormatError, match="compiled for config hash"):
        simulate(other, prog)
    with pytest.raises(ProgramFormatError, match="semaphore initial values"):
        pack(Program(prog.instructions, (0, 300)))


def test_disasm_lists_every_instruction_with_its_layer():
    _, prog = _container()
    text = disasm(unpack(pack(prog)))
    lines = text.splitlines()
    body = [x for x in lines if not x.startswith(";")]
    assert len(body) == len(prog.instructions)
    assert body[0].startswith("     0: LOAD buf=PB") and body[0].endswith("; fc0 [Gemm_0]")
    assert any(x.endswith("; fc1 [Gemm_0, Relu_1]") and "GEMM" in x for x in body)
    assert body[-1].endswith("FINISH")
    assert any("tensor y:" in x and "scale 0.1 zero_point -3" in x for x in lines)
    assert "S1=2" in lines[0] and CFG.config_hash() in lines[1]

"""The NPU-1 program container (ACCELERATOR.md B.2 "Artifact (what the runtime loads)"): header (magic,
version, config hash, semaphore initial values), instruction array (N x 16 B), constant DRAM image with its
offset, tensor table, and debug table (instruction -> layer / ONNX nodes); :func:`pack` / :func:`unpack`
and :func:`disasm` (the ``lower disasm`` listing).

Binary layout v1, little-endian::

    header (96 B)  magic "NPU1PRG\\0", u16 version, u16 header size, u32 flags (0), 32 B config hash (raw
                   sha256 of the config, zeros = unbound), 8 x u8 semaphore initial values, u32 N
                   instructions, u64 const_offset (DRAM byte offset of the image), u64 dram_bytes (DRAM the
                   program needs in all: image + activations/scratch), u64 image length, u32 debug length,
                   u32 tables length, u32 crc32 of everything after the header
    N x 16 B       instructions (B.2 words)
    image          constant DRAM image (packed weights, PB records, LUTs), placed at const_offset
    N x u32        debug index: layer number of each instruction (0xFFFFFFFF = none)
    tables         UTF-8 JSON, sorted keys: {"layers": [{"name", "onnx_nodes"}], "tensors": [TensorInfo],
                   "meta": {...}} (meta: free-form, e.g. the compiler's partition table)

A reader rejects a short file, a bad magic, a newer version, a bad checksum, an inconsistent debug table,
and (given a config) a config-hash mismatch, each with a :class:`ProgramFormatError` saying which.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import IsaError, ProgramFormatError
from .isa import Instruction, asm, decode, decode_program, disasm_one, encode_program

MAGIC = b"NPU1PRG\0"
VERSION = 1
_HDR = struct.Struct("<8sHHI32s8BIQQQIII")
HEADER_BYTES = _HDR.size
_NONE = 0xFFFFFFFF


@dataclass
class TensorInfo:
    """One tensor table entry: where a named tensor lives in DRAM and how to (un)pack it."""

    name: str
    dram_offset: int
    shape: list                      # logical shape, e.g. [1, 64, 56, 56]
    padded_shape: list               # shape in DRAM, e.g. [1, 2, 56, 56, 32]
    layout: str = "NC/32HW32"        # B.1 layout name
    dtype: str = "int8"
    scale: float = 1.0
    zero_point: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> TensorInfo:
        return cls(**d)


@dataclass
class Program:
    """What the simulator runs: instructions, semaphore initial values, the per-instruction layer names
    (debug table), and optionally the constant DRAM image, tensor table and config binding."""

    instructions: list[Instruction]
    sem_init: tuple = (0,) * 8
    layers: list | None = None           # layer name (or None) per instruction
    dram_image: bytes = b""
    const_offset: int = 0
    dram_bytes: int = 0                  # 0: just the image
    tensors: list = field(default_factory=list)       # TensorInfo
    layer_nodes: dict = field(default_factory=dict)   # layer name -> ONNX node names
    config_hash: str | None = None       # hex sha256 of the AccelConfig it was compiled for
    meta: dict = field(default_factory=dict)
    words: bytes | None = field(default=None, repr=False, compare=False)   # encoded instructions, if known

    @classmethod
    def from_text(cls, text: str, sem_init=(0,) * 8) -> Program:
        instrs = asm(text)
        return cls(instrs, tuple(sem_init), [i.comment for i in instrs])

    @classmethod
    def from_bytes(cls, data: bytes, sem_init=(0,) * 8, layers=None) -> Program:
        """From raw instruction words (no container header); see :func:`unpack` for the container."""
        return cls(decode_program(data, layers), tuple(sem_init), layers)

    def to_bytes(self) -> bytes:
        """The raw instruction words (no container); see :func:`pack`."""
        return encode_program(self.instructions)

    def layer_of(self, pc: int) -> str | None:
        if self.layers:
            return self.layers[pc]
        return self.instructions[pc].comment

    def total_dram_bytes(self) -> int:
        return max(self.dram_bytes, self.const_offset + len(self.dram_image))

    def initial_dram(self) -> np.ndarray:
        """A fresh DRAM array: zeros with the constant image at ``const_offset``."""
        d = np.zeros(self.total_dram_bytes(), np.uint8)
        img = np.frombuffer(self.dram_image, np.uint8)
        d[self.const_offset:self.const_offset + len(img)] = img
        return d

    def pack(self) -> bytes:
        return pack(self)


def _fail(msg):
    raise ProgramFormatError(f"NPU-1 program: {msg}")


def pack(p: Program) -> bytes:
    """Serialise to the v1 container (deterministic: same program -> same bytes)."""
    n = len(p.instructions)
    if len(p.sem_init) > 8 or any(not 0 <= v <= 255 for v in p.sem_init):
        _fail(f"semaphore initial values {tuple(p.sem_init)}: at most 8 values in 0..255")
    sems = tuple(p.sem_init) + (0,) * (8 - len(p.sem_init))
    names: list[str] = []
    index: dict[str, int] = {}
    dbg = np.full(n, _NONE, "<u4")
    for pc in range(n):
        name = p.layer_of(pc)
        if name:
            if name not in index:
                index[name] = len(names)
                names.append(name)
            dbg[pc] = index[name]
    tables = {"layers": [{"name": x, "onnx_nodes": list(p.layer_nodes.get(x, []))} for x in names],
              "tensors": [asdict(t) if isinstance(t, TensorInfo) else dict(t) for t in p.tensors],
              "meta": p.meta}
    tables_b = json.dumps(tables, sort_keys=True, separators=(",", ":")).encode()
    body = encode_program(p.instructions) + bytes(p.dram_image) + dbg.tobytes() + tables_b
    h = bytes.fromhex(p.config_hash) if p.config_hash else bytes(32)
    if len(h) != 32:
        _fail(f"config hash {p.config_hash!r} is not a sha256 hex digest")
    hdr = _HDR.pack(MAGIC, VERSION, HEADER_BYTES, 0, h, *sems, n, p.const_offset, p.dram_bytes,
                    len(p.dram_image), dbg.nbytes, len(tables_b), zlib.crc32(body))
    return hdr + body


def unpack(data: bytes, cfg=None) -> Program:
    """Parse and validate a v1 container; with ``cfg`` (an AccelConfig) also check the config hash."""
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        _fail(f"truncated: {len(data)} bytes, the header alone is {HEADER_BYTES}")
    (magic, version, hsize, _flags, h, *rest) = _HDR.unpack_from(data)
    sems, (n, const_offset, dram_bytes, img_len, dbg_len, tab_len, crc) = tuple(rest[:8]), rest[8:]
    if magic != MAGIC:
        _fail(f"bad magic {magic!r} (expected {MAGIC!r}): not an NPU-1 program")
    if version > VERSION:
        _fail(f"format version {version} is newer than this runtime's {VERSION}; upgrade the runtime")
    if hsize != HEADER_BYTES:
        _fail(f"header size {hsize} != {HEADER_BYTES} for version {version}")
    want = HEADER_BYTES + 16 * n + img_len + dbg_len + tab_len
    if len(data) < want:
        _fail(f"truncated: {len(data)} bytes, the header announces {want} ({n} instructions, image "
              f"{img_len} B, debug {dbg_len} B, tables {tab_len} B)")
    if len(data) > want:
        _fail(f"{len(data) - want} trailing bytes after the announced {want}")
    body = data[HEADER_BYTES:]
    if zlib.crc32(body) != crc:
        _fail(f"checksum mismatch (crc32 {zlib.crc32(body):08x}, header says {crc:08x}): corrupt file")
    config_hash = h.hex() if any(h) else None
    if cfg is not None and config_hash and config_hash != cfg.config_hash():
        _fail(f"compiled for config hash {config_hash[:16]}..., but the simulator's config {cfg.name!r} has "
              f"{cfg.config_hash()[:16]}...; recompile for this config or load the matching one")
    if dbg_len != 4 * n:
        _fail(f"debug table is {dbg_len} bytes for {n} instructions (expected {4 * n})")
    o = 16 * n
    instrs = []
    for pc in range(n):
        try:
            instrs.append(decode(body[16 * pc:16 * pc + 16]))
        except IsaError as e:
            _fail(f"instruction {pc}: {e}")
    image = body[o:o + img_len]
    dbg = np.frombuffer(body[o + img_len:o + img_len + dbg_len], "<u4")
    try:
        tables = json.loads(body[o + img_len + dbg_len:].decode())
        names = [x["name"] for x in tables["layers"]]
        nodes = {x["name"]: list(x.get("onnx_nodes", [])) for x in tables["layers"]}
        tensors = [TensorInfo.from_dict(t) for t in tables["tensors"]]
    except (ValueError, KeyError, TypeError) as e:
        _fail(f"bad tables section ({e})")
    bad = dbg[(dbg != _NONE) & (dbg >= len(names))]
    if len(bad):
        _fail(f"debug table names layer {int(bad[0])} but only {len(names)} layers are listed")
    layers = [None if i == _NONE else names[i] for i in dbg.tolist()]
    for ins, name in zip(instrs, layers):
        ins.comment = name
    return Program(instrs, sems, layers, image, const_offset, dram_bytes, tensors,
                   {k: v for k, v in nodes.items() if v}, config_hash, tables.get("meta", {}), body[:o])


def disasm(p: Program) -> str:
    """Readable listing: a header summary, the tensor table, then ``pc: instruction ; layer [ONNX nodes]``."""
    out = [f"; NPU-1 program: {len(p.instructions)} instructions, semaphores "
           + " ".join(f"S{i}={v}" for i, v in enumerate(p.sem_init)),
           f"; config hash {p.config_hash or '(unbound)'}",
           f"; DRAM {p.total_dram_bytes()} bytes, constant image {len(p.dram_image)} bytes at "
           f"{p.const_offset}"]
    for t in p.tensors:
        t = t if isinstance(t, TensorInfo) else TensorInfo.from_dict(t)
        out.append(f"; tensor {t.name}: DRAM {t.dram_offset} shape {t.shape} -> {t.layout} "
                   f"{t.padded_shape} {t.dtype} scale {t.scale:g} zero_point {t.zero_point}")
    for pc, ins in enumerate(p.instructions):
        layer = p.layer_of(pc)
        text = disasm_one(Instruction(ins.op, ins.fields, ins.wait, ins.signal, ins.fence))
        if layer:
            nodes = p.layer_nodes.get(layer)
            text += f" ; {layer}" + (f" [{', '.join(nodes)}]" if nodes else "")
        out.append(f"{pc:6d}: {text}")
    return "\n".join(out) + "\n"

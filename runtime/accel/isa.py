"""NPU-1 ISA (ACCELERATOR.md B.2): 128-bit instructions, exact encode/decode, text assembler/disassembler.

An :class:`Instruction` holds the opcode, the common header (``wait``/``signal`` semaphore sets, ``fence``)
and the op's fields by *logical* value: ``_m1`` fields are stored as value-1 but appear here and in the text
form without the suffix (``rows``, ``m_inner``...). The op-specific ``op_flags`` bits [22:20] are fields
too: GEMM ``accumulate`` [20], ``reuse_weights`` [21]; ACT ``lut_en`` [20], ``lut_id`` [22:21]; EWISE ``op``
[22:20]; POOL ``avg`` [20]; NOP ``engine`` [21:20]. Signed int8 fields (``pad_value``, ``clamp_min``,
``clamp_max``) are two's complement. The word is little-endian: bits 0-63 then 64-127, 16 bytes.
Decoding rejects reserved opcodes and any set bit outside the opcode's fields.

Text form, one instruction per line, fields in table order, ``;`` starts a comment (the layer name)::

    GEMM ub_line=0 wb_line=32 acc_row=0 m_inner=16 m_outer=1 ... wait=S0,S3 signal=S1 accumulate ; conv1
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import IsaError

OPCODES = {"NOP": 0, "LOAD": 1, "STORE": 2, "GEMM": 3, "ACT": 4, "EWISE": 5, "POOL": 6, "FINISH": 15}
OPNAMES = {v: k for k, v in OPCODES.items()}
ENGINES = ("LD", "MX", "VP", "ST")
EWISE_OPS = ("ADD", "SUB", "MUL", "MAX", "MIN")
LOAD_BUFS = {"UB": 0, "WB": 1, "PB": 2, "LUT": 3}
STORE_BUFS = {"UB": 0, "ACC": 4}

# kind: "u" unsigned, "m1" stored minus one, "s8" int8 two's complement, "b" one-bit boolean,
# or a tuple of symbol names (stored as the index / mapped value).
_F = tuple[str, int, int, object]
LAYOUT: dict[str, tuple[_F, ...]] = {
    "NOP": (("engine", 20, 21, ENGINES),),
    "LOAD": (("buf", 24, 26, LOAD_BUFS), ("sram_line", 27, 42, "u"), ("dram_line", 43, 70, "u"),
             ("rows", 71, 80, "m1"), ("row_len", 81, 90, "m1"), ("dram_row_stride", 91, 106, "u"),
             ("pad_top", 107, 109, "u"), ("pad_bottom", 110, 112, "u"), ("pad_left", 113, 115, "u"),
             ("pad_right", 116, 118, "u"), ("pad_value", 119, 126, "s8")),
    "STORE": (("buf", 24, 26, STORE_BUFS), ("sram_line", 27, 42, "u"), ("dram_line", 43, 70, "u"),
              ("rows", 71, 80, "m1"), ("row_len", 81, 90, "m1"), ("dram_row_stride", 91, 106, "u"),
              ("sram_row_stride", 107, 122, "u")),
    "GEMM": (("ub_line", 24, 39, "u"), ("wb_line", 40, 55, "u"), ("acc_row", 56, 68, "u"),
             ("m_inner", 69, 78, "m1"), ("m_outer", 79, 88, "m1"), ("ub_inner_stride", 89, 91, "u"),
             ("ub_outer_stride", 92, 107, "u"), ("k_valid", 108, 113, "m1"), ("n_valid", 114, 119, "m1"),
             ("accumulate", 20, 20, "b"), ("reuse_weights", 21, 21, "b")),
    "ACT": (("acc_row", 24, 36, "u"), ("ub_line", 37, 52, "u"), ("m_inner", 53, 62, "m1"),
            ("m_outer", 63, 72, "m1"), ("ub_outer_stride", 73, 88, "u"), ("pb_line", 89, 104, "u"),
            ("clamp_min", 105, 112, "s8"), ("clamp_max", 113, 120, "s8"),
            ("lut_en", 20, 20, "b"), ("lut_id", 21, 22, "u")),
    "EWISE": (("op", 20, 22, EWISE_OPS), ("a_line", 24, 39, "u"), ("b_line", 40, 55, "u"),
              ("dst_line", 56, 71, "u"), ("n_lines", 72, 87, "m1"), ("pb_line", 88, 103, "u"),
              ("lut_id", 104, 105, "u"), ("lut_en", 106, 106, "b")),
    "POOL": (("src_line", 24, 39, "u"), ("dst_line", 40, 55, "u"), ("in_w", 56, 65, "m1"),
             ("kh", 66, 68, "m1"), ("kw", 69, 71, "m1"), ("sh", 72, 73, "m1"), ("sw", 74, 75, "m1"),
             ("out_h", 76, 85, "m1"), ("out_w", 86, 95, "m1"), ("pb_line", 96, 111, "u"),
             ("avg", 20, 20, "b")),
    "FINISH": (),
}
_USED_MASK = {op: sum(((1 << (hi - lo + 1)) - 1) << lo for _, lo, hi, _ in fs) | ((1 << 24) - 1)
              for op, fs in LAYOUT.items()}


def _default(kind):
    return 1 if kind == "m1" else (False if kind == "b" else 0)


def _default_fields(op: str) -> dict:
    out = {}
    for name, _, _, kind in LAYOUT[op]:
        if isinstance(kind, tuple):
            out[name] = kind[0]
        elif isinstance(kind, dict):
            out[name] = next(iter(kind))
        else:
            out[name] = _default(kind)
    return out


@dataclass
class Instruction:
    """One decoded instruction. ``fields`` maps every field of ``op`` (see :data:`LAYOUT`) to its logical
    value; missing ones get defaults (0, 1 for ``_m1`` fields, False, the first symbol)."""

    op: str
    fields: dict = field(default_factory=dict)
    wait: frozenset = frozenset()
    signal: frozenset = frozenset()
    fence: bool = False
    comment: str | None = None  # layer / debug name; not encoded

    def __post_init__(self):
        if self.op not in LAYOUT:
            raise IsaError(f"unknown opcode {self.op!r}; opcodes: {sorted(OPCODES)}")
        unknown = set(self.fields) - {f[0] for f in LAYOUT[self.op]}
        if unknown:
            raise IsaError(f"{self.op}: unknown field(s) {sorted(unknown)}; fields: "
                           f"{[f[0] for f in LAYOUT[self.op]]}")
        self.fields = {**_default_fields(self.op), **self.fields}
        self.wait, self.signal = frozenset(self.wait), frozenset(self.signal)

    def __getattr__(self, name):  # instr.m_inner etc.
        f = self.__dict__.get("fields")
        if f is not None and name in f:
            return f[name]
        raise AttributeError(name)

    def __eq__(self, other):  # the comment is not part of the instruction
        return (isinstance(other, Instruction) and (self.op, self.fields, self.wait, self.signal, self.fence)
                == (other.op, other.fields, other.wait, other.signal, other.fence))

    @property
    def opcode(self) -> int:
        return OPCODES[self.op]

    @property
    def engine(self) -> str:
        """The queue the fetch stage routes this instruction to (FINISH: ``FIN``)."""
        return {"LOAD": "LD", "STORE": "ST", "GEMM": "MX", "ACT": "VP", "EWISE": "VP", "POOL": "VP",
                "FINISH": "FIN"}.get(self.op) or self.fields["engine"]

    def encode(self) -> bytes:
        return encode(self)


def _mask(sems, what, op) -> int:
    m = 0
    for s in sems:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 8:
            raise IsaError(f"{op}: {what} semaphore {s!r} out of range 0..7")
        m |= 1 << s
    return m


def encode(ins: Instruction) -> bytes:
    """Encode to 16 little-endian bytes; raise :class:`IsaError` naming the field on out-of-range values."""
    word = ins.opcode | _mask(ins.wait, "wait", ins.op) << 4 | _mask(ins.signal, "signal", ins.op) << 12
    word |= int(bool(ins.fence)) << 23
    for name, lo, hi, kind in LAYOUT[ins.op]:
        v = ins.fields[name]
        width = hi - lo + 1
        if isinstance(kind, (tuple, dict)):
            table = kind if isinstance(kind, dict) else {s: i for i, s in enumerate(kind)}
            if v not in table:
                raise IsaError(f"{ins.op}: field {name}={v!r} must be one of {list(table)}")
            raw = table[v]
        elif kind == "b":
            if v not in (0, 1, True, False):
                raise IsaError(f"{ins.op}: field {name}={v!r} must be a boolean")
            raw = int(v)
        else:
            if isinstance(v, bool) or not isinstance(v, int):
                raise IsaError(f"{ins.op}: field {name}={v!r} must be an integer")
            if kind == "m1":
                lo_v, hi_v, raw = 1, 1 << width, v - 1
            elif kind == "s8":
                lo_v, hi_v, raw = -128, 127, v & 0xFF
            else:
                lo_v, hi_v, raw = 0, (1 << width) - 1, v
            if not lo_v <= v <= hi_v:
                raise IsaError(f"{ins.op}: field {name}={v} out of range [{lo_v}, {hi_v}] "
                               f"({width}-bit field [{hi}:{lo}])")
        word |= raw << lo
    return word.to_bytes(16, "little")


def decode(data: bytes, comment: str | None = None) -> Instruction:
    """Decode one 16-byte word. Reserved opcodes and stray bits are errors."""
    if len(data) != 16:
        raise IsaError(f"an instruction is 16 bytes, got {len(data)}")
    word = int.from_bytes(data, "little")
    opcode = word & 0xF
    if opcode not in OPNAMES:
        raise IsaError(f"reserved opcode {opcode} in word 0x{word:032x}")
    op = OPNAMES[opcode]
    stray = word & ~_USED_MASK[op]
    if stray:
        raise IsaError(f"{op}: bits 0x{stray:032x} set outside the op's fields")
    wait = frozenset(i for i in range(8) if word >> (4 + i) & 1)
    signal = frozenset(i for i in range(8) if word >> (12 + i) & 1)
    fields = {}
    for name, lo, hi, kind in LAYOUT[op]:
        raw = word >> lo & ((1 << (hi - lo + 1)) - 1)
        if isinstance(kind, dict):
            inv = {i: s for s, i in kind.items()}
            if raw not in inv:
                raise IsaError(f"{op}: field {name} has reserved value {raw}")
            fields[name] = inv[raw]
        elif isinstance(kind, tuple):
            if raw >= len(kind):
                raise IsaError(f"{op}: field {name} has reserved value {raw}")
            fields[name] = kind[raw]
        elif kind == "b":
            fields[name] = bool(raw)
        elif kind == "m1":
            fields[name] = raw + 1
        elif kind == "s8":
            fields[name] = raw - 256 if raw & 0x80 else raw
        else:
            fields[name] = raw
    return Instruction(op, fields, wait, signal, bool(word >> 23 & 1), comment)


def encode_program(instrs) -> bytes:
    return b"".join(encode(i) for i in instrs)


def decode_program(data: bytes, comments=None) -> list[Instruction]:
    if len(data) % 16:
        raise IsaError(f"program length {len(data)} is not a multiple of 16 bytes")
    n = len(data) // 16
    return [decode(data[16 * i:16 * i + 16], comments[i] if comments else None) for i in range(n)]


# ---- text form ---------------------------------------------------------------------------------------
def _sems(text: str, what: str, lineno: int) -> frozenset:
    out = set()
    for tok in filter(None, text.split(",")):
        if not (tok[:1] in "Ss" and tok[1:].isdigit()):
            raise IsaError(f"line {lineno}: bad {what} semaphore {tok!r} (expected S0..S7)")
        out.add(int(tok[1:]))
    return frozenset(out)


def asm(text: str) -> list[Instruction]:
    """Assemble the text form (see the module docstring); blank and comment-only lines are skipped."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        code, _, comment = raw.partition(";")
        toks = code.split()
        if not toks:
            continue
        op = toks[0].upper()
        if op not in LAYOUT:
            raise IsaError(f"line {lineno}: unknown opcode {toks[0]!r}")
        kinds = {f[0]: f[3] for f in LAYOUT[op]}
        fields, wait, signal, fence = {}, frozenset(), frozenset(), False
        for tok in toks[1:]:
            key, eq, val = tok.partition("=")
            if not eq:
                if key == "fence":
                    fence = True
                elif kinds.get(key) == "b":
                    fields[key] = True
                else:
                    raise IsaError(f"line {lineno}: {op} has no flag {key!r}")
            elif key == "wait":
                wait = _sems(val, "wait", lineno)
            elif key == "signal":
                signal = _sems(val, "signal", lineno)
            elif key not in kinds:
                raise IsaError(f"line {lineno}: {op} has no field {key!r}; fields: {list(kinds)}")
            elif isinstance(kinds[key], (tuple, dict)):
                fields[key] = val.upper()
            elif kinds[key] == "b":
                fields[key] = val.lower() in ("1", "true")
            else:
                try:
                    fields[key] = int(val, 0)
                except ValueError:
                    raise IsaError(f"line {lineno}: {op} field {key}={val!r} is not an integer") from None
        ins = Instruction(op, fields, wait, signal, fence, comment.strip() or None)
        try:
            encode(ins)  # range checks
        except IsaError as e:
            raise IsaError(f"line {lineno}: {e}") from None
        out.append(ins)
    return out


def disasm_one(ins: Instruction) -> str:
    parts = [ins.op]
    for name, _, _, kind in LAYOUT[ins.op]:
        v = ins.fields[name]
        if kind == "b":
            if v:
                parts.append(name)
        else:
            parts.append(f"{name}={v}")
    if ins.wait:
        parts.append("wait=" + ",".join(f"S{s}" for s in sorted(ins.wait)))
    if ins.signal:
        parts.append("signal=" + ",".join(f"S{s}" for s in sorted(ins.signal)))
    if ins.fence:
        parts.append("fence")
    text = " ".join(parts)
    return f"{text} ; {ins.comment}" if ins.comment else text


def disasm(instrs, numbered: bool = False) -> str:
    """Text form of a program, one instruction per line. ``numbered`` adds a leading ``<pc>:`` column for
    listings (``lower disasm``); that form is for reading, :func:`asm` does not accept it."""
    lines = [disasm_one(i) for i in instrs]
    if numbered:
        lines = [f"{pc:6d}: {t}" for pc, t in enumerate(lines)]
    return "\n".join(lines) + ("\n" if lines else "")

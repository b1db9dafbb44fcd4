"""Building one NPU-1 program (an accelerator segment): the DRAM map, the constant image, the tensor table
and instruction emission with per-layer bookkeeping. Every layer lowering (``conv.py``, ``vpu.py``) writes
through a :class:`ProgramBuilder`.

DRAM map of a segment (byte addresses, everything line-aligned)::

    [0, act_bytes)                 activation tensors (segment inputs, outputs, intermediates), B.1 layout
    [const_offset, +image bytes)   constants: packed weights, PB records, LUTs (the program's DRAM image)

Activation tensors are all allocated first (:meth:`ProgramBuilder.tensor`), then :meth:`seal_tensors`
fixes ``const_offset``; constants are appended after that (:meth:`constant`), so every address is final
when an instruction is emitted.

Layout of an activation (ACCELERATOR.md B.1, "NC/32HW32"): ``[N][ceil(C/B)][H][W][B]`` int8, channels padded
to a multiple of B with the tensor's zero point. A 2-D tensor ``[M, K]`` (a matrix operand) is stored as the
4-D ``(1, K, M, 1)``: ``[K/B][M][B]`` — so a ``Flatten`` of ``(1, C, 1, 1)`` keeps the bytes.

Synchronisation between layers: the first instruction of each engine queue within a layer carries
``fence`` (all earlier instructions done), so layers are serialised and each layer only has to leave the
semaphores as it found them (:data:`SEM_INIT`, the B.3 convention). Within a layer, lowerings use the
B.3 semaphores for double buffering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from runtime.accel.config import AccelConfig
from runtime.accel.isa import Instruction
from runtime.accel.program import Program, TensorInfo

# B.3 semaphore convention: (RAW "ready" semaphores start at 0, WAR "free slot" ones at the slot count)
LD_MX_READY, MX_LD_FREE, MX_VP_READY, VP_MX_FREE, VP_ST_READY, ST_VP_FREE, LD_VP_READY, VP_LD_FREE = range(8)
SEM_INIT = (0, 2, 0, 2, 0, 2, 0, 2)
LAYOUT_4D, LAYOUT_2D = "NC/32HW32", "MK:K/32M32"


@dataclass
class Act:
    """An int8 activation tensor in DRAM in the blocked layout (see the module docstring)."""

    name: str
    shape: tuple            # logical shape: (N, C, H, W) or (M, K)
    dram_line: int          # first line
    zero_point: int
    scale: float
    block: int = 32

    @property
    def shape4(self) -> tuple[int, int, int, int]:
        if len(self.shape) == 4:
            return tuple(self.shape)
        m, k = self.shape
        return (1, k, m, 1)

    @property
    def n(self) -> int:
        return self.shape4[0]

    @property
    def c(self) -> int:
        return self.shape4[1]

    @property
    def h(self) -> int:
        return self.shape4[2]

    @property
    def w(self) -> int:
        return self.shape4[3]

    @property
    def cb(self) -> int:
        """Channel blocks."""
        return -(-self.c // self.block)

    @property
    def lines(self) -> int:
        n, _, h, w = self.shape4
        return n * self.cb * h * w

    @property
    def nbytes(self) -> int:
        return self.lines * self.block

    def plane(self, n: int, c_block: int) -> int:
        """DRAM line of pixel (0, 0) of channel block ``c_block`` of image ``n``."""
        return self.dram_line + (n * self.cb + c_block) * self.h * self.w

    def line(self, n: int, c_block: int, y: int, x: int) -> int:
        return self.plane(n, c_block) + y * self.w + x

    def info(self) -> TensorInfo:
        n, _, h, w = self.shape4
        return TensorInfo(self.name, self.dram_line * self.block, list(self.shape),
                          [n, self.cb, h, w, self.block], LAYOUT_4D if len(self.shape) == 4 else LAYOUT_2D,
                          "int8", float(self.scale), int(self.zero_point))


@dataclass
class LayerStats:
    """What the compiler knows and predicts about one lowered layer (echoed into the simulator report's
    per-layer rows and the compile report)."""

    name: str
    op_type: str
    onnx_nodes: list
    macs: int = 0
    compulsory_bytes: int = 0                # C.3: tensors crossing the layer boundary, read/written once
    predicted_dram_bytes: int = 0            # exactly what its DMA instructions move (useful bytes)
    predicted_cycles: int = 0                # cost-model estimate
    tiling: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    geometry: dict = field(default_factory=dict)   # input/output shapes, kernel, strides (set by the target)
    saved_dram_bytes: int = 0                # C.4: DRAM bytes fused edges / UB residency save (estimate)

    def to_json(self) -> dict:
        return {"op_type": self.op_type, "onnx_nodes": list(self.onnx_nodes), "macs": self.macs,
                "compulsory_bytes": self.compulsory_bytes, "predicted_dram_bytes": self.predicted_dram_bytes,
                "predicted_cycles": self.predicted_cycles, "tiling": self.tiling, "notes": list(self.notes),
                "geometry": self.geometry, "saved_dram_bytes": self.saved_dram_bytes}


class ProgramBuilder:
    """Accumulates one segment's tensors, constants and instructions; :meth:`finish` returns the Program."""

    def __init__(self, cfg: AccelConfig, name: str = "npu"):
        self.cfg = cfg
        self.name = name
        self.B = cfg.block
        self.tensors: dict[str, Act] = {}
        self._act_lines = 0
        self._sealed = False
        self._image = bytearray()
        self.instructions: list[Instruction] = []
        self.layers: list[str | None] = []
        self.layer_nodes: dict[str, list[str]] = {}
        self.stats: dict[str, LayerStats] = {}
        self._layer: str | None = None
        self._queues_seen: set[str] = set()
        self._const_cache: dict[bytes, int] = {}

    # ---- DRAM -------------------------------------------------------------------------------------------
    def tensor(self, name: str, shape, zero_point: int, scale: float) -> Act:
        """Allocate an activation tensor (before :meth:`seal_tensors`)."""
        if self._sealed:
            raise RuntimeError("tensors must be allocated before constants")
        if name in self.tensors:
            return self.tensors[name]
        t = Act(name, tuple(int(d) for d in shape), self._act_lines, int(zero_point), float(scale), self.B)
        self._act_lines += t.lines
        self.tensors[name] = t
        return t

    def alias(self, name: str, source: Act, shape) -> Act:
        """A second name for ``source``'s bytes (a layout-preserving Flatten/Reshape)."""
        t = Act(name, tuple(int(d) for d in shape), source.dram_line, source.zero_point, source.scale, self.B)
        if t.lines != source.lines or t.shape4[1] != source.c:
            raise ValueError(f"{name}: shape {shape} does not keep the blocked layout of {source.name}")
        self.tensors[name] = t
        return t

    def seal_tensors(self) -> None:
        self._sealed = True

    @property
    def const_line(self) -> int:
        """First line of the constant region."""
        return self._act_lines

    @property
    def const_bytes(self) -> int:
        """Bytes of the constant image so far (weights, PB records, LUTs)."""
        return len(self._image)

    def constant(self, data) -> int:
        """Append ``data`` (bytes or an array, padded to whole lines) to the constant image; return its
        DRAM line. Identical constants are stored once."""
        self._sealed = True
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        if raw in self._const_cache:
            return self._const_cache[raw]
        line = self.const_line + len(self._image) // self.B
        self._image += raw + bytes(-len(raw) % self.B)
        self._const_cache[raw] = line
        return line

    # ---- instructions -----------------------------------------------------------------------------------
    def begin_layer(self, name: str, onnx_nodes=(), op_type: str = "") -> LayerStats:
        if name in self.stats:
            raise ValueError(f"layer {name!r} emitted twice")
        self._layer = name
        self._queues_seen = set()
        self.layer_nodes[name] = list(onnx_nodes)
        st = LayerStats(name, op_type, list(onnx_nodes))
        self.stats[name] = st
        return st

    def emit(self, opcode: str, wait=(), signal=(), **fields) -> Instruction:
        """Append one instruction to the current layer. The first instruction of each engine queue in a
        layer gets ``fence`` (layers are serialised; see the module docstring)."""
        ins = Instruction(opcode, fields, frozenset(wait), frozenset(signal), False, comment=self._layer)
        queue = ins.engine
        if self._layer is not None and queue not in self._queues_seen:
            ins.fence = True
            self._queues_seen.add(queue)
        self.instructions.append(ins)
        self.layers.append(self._layer)
        return ins

    def finish(self, meta: dict | None = None) -> Program:
        self._layer = None
        self.instructions.append(Instruction("FINISH"))
        self.layers.append(None)
        const_offset = self.const_line * self.B
        meta = dict(meta or {})
        meta["layers"] = {k: v.to_json() for k, v in self.stats.items()}
        return Program(self.instructions, SEM_INIT, self.layers, bytes(self._image), const_offset,
                       const_offset + len(self._image), [t.info() for t in self.tensors.values()],
                       {k: v for k, v in self.layer_nodes.items() if v}, self.cfg.config_hash(), meta)


def lines_for(nbytes: int, line_bytes: int) -> int:
    return math.ceil(nbytes / line_bytes)

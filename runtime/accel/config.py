"""NPU-1 hardware configuration (ACCELERATOR.md B.1): defaults, presets, JSON load/save, validation, hash.

Every size is in bytes and must be a power of two. The array is square (``array_rows == array_cols ==
line_bytes``, called the *block* B below): one UB line holds one B-channel pixel, which is both a GEMM
input row (K block) and an ACT output row (N block), so the B.1 data layout needs R == C == line width.
Limits imposed by the ISA field widths (B.2) are checked too: UB/WB/PB lines < 2^16, ACC rows <= 2^13,
<= 4 LUT tables of 256 entries, <= 8 semaphores; arrays wider than 64 must be multiples of 64 because
``k_valid``/``n_valid`` (6 bits) then count in granules of B/64 lanes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ConfigError

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class AccelConfig:
    """One NPU-1 instance. Defaults are the ``default`` preset of B.1."""

    name: str = "default"
    clock_mhz: float = 1000.0
    array_rows: int = 32          # R: reduction (K) lanes
    array_cols: int = 32          # C: output channels (N)
    dataflow: str = "weight_stationary"
    line_bytes: int = 32          # SRAM addressing and DMA unit (= R int8)
    ub_bytes: int = 512 * KiB
    ub_banks: int = 16
    wb_bytes: int = 256 * KiB
    wb_banks: int = 8
    acc_bytes: int = 128 * KiB
    acc_banks: int = 32
    pb_bytes: int = 32 * KiB
    pb_banks: int = 1
    lut_tables: int = 4
    lut_entries: int = 256
    dram_bytes_per_cycle: float = 32.0
    dram_latency_cycles: int = 100
    dram_burst_bytes: int = 64
    vpu_lanes: int = 32
    vpu_latency: int = 4
    mxu_fill_latency: int | None = None   # None -> R + C - 1
    num_semaphores: int = 8
    energy_preset: str = "horowitz45"
    static_mw: float = 0.0

    def __post_init__(self):
        validate(self)

    # ---- derived quantities -------------------------------------------------------------------------
    @property
    def block(self) -> int:
        return self.array_rows

    @property
    def ub_lines(self) -> int:
        return self.ub_bytes // self.line_bytes

    @property
    def wb_lines(self) -> int:
        return self.wb_bytes // self.line_bytes

    @property
    def pb_lines(self) -> int:
        return self.pb_bytes // self.line_bytes

    @property
    def acc_row_bytes(self) -> int:
        return 4 * self.array_cols

    @property
    def acc_rows(self) -> int:
        return self.acc_bytes // self.acc_row_bytes

    @property
    def lut_lines(self) -> int:
        return self.lut_tables * self.lut_entries // self.line_bytes

    @property
    def fill_latency(self) -> int:
        if self.mxu_fill_latency is None:
            return self.array_rows + self.array_cols - 1
        return self.mxu_fill_latency

    @property
    def k_granule(self) -> int:
        """Lanes per unit of the 6-bit ``k_valid`` field (1 for R <= 64)."""
        return max(1, self.array_rows // 64)

    @property
    def n_granule(self) -> int:
        return max(1, self.array_cols // 64)

    # ---- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

    def save(self, path) -> None:
        Path(path).write_text(self.to_json())

    def config_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of every key except ``name``; stable across runs/machines."""
        d = self.to_dict()
        d.pop("name")
        canon = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    def replace(self, **changes) -> AccelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict) -> AccelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"configuration must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**data)


_INT_KEYS = ("array_rows", "array_cols", "line_bytes", "ub_bytes", "ub_banks", "wb_bytes", "wb_banks",
             "acc_bytes", "acc_banks", "pb_bytes", "pb_banks", "lut_tables", "lut_entries",
             "dram_latency_cycles", "dram_burst_bytes", "vpu_lanes", "vpu_latency", "num_semaphores")
_POW2_KEYS = ("line_bytes", "ub_bytes", "ub_banks", "wb_bytes", "wb_banks", "acc_bytes", "acc_banks",
              "pb_bytes", "pb_banks", "dram_burst_bytes")
_ENERGY_PRESETS = ("horowitz45", "accelergy32", "eyeriss65")


def _fail(key, value, why):
    raise ConfigError(f"config key {key!r} = {value!r}: {why}")


def _pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def validate(c: AccelConfig) -> None:
    """Raise :class:`ConfigError` naming the first bad key and its value."""
    for k in _INT_KEYS:
        v = getattr(c, k)
        if isinstance(v, bool) or not isinstance(v, int):
            _fail(k, v, "must be an integer")
        if v < (0 if k in ("dram_latency_cycles", "vpu_latency") else 1):
            _fail(k, v, "must be positive")
    for k in ("clock_mhz", "dram_bytes_per_cycle", "static_mw"):
        v = getattr(c, k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0:
            _fail(k, v, "must be a non-negative number")
    if c.clock_mhz <= 0:
        _fail("clock_mhz", c.clock_mhz, "must be > 0")
    if c.dram_bytes_per_cycle <= 0:
        _fail("dram_bytes_per_cycle", c.dram_bytes_per_cycle, "must be > 0")
    for k in _POW2_KEYS:
        if not _pow2(getattr(c, k)):
            _fail(k, getattr(c, k), "must be a power of two")
    for k in ("array_rows", "array_cols"):
        v = getattr(c, k)
        if v % 8:
            _fail(k, v, "must be a multiple of 8")
        if v > 64 and v % 64:
            _fail(k, v, "above 64 must be a multiple of 64 (k_valid/n_valid are 6-bit fields)")
    if c.array_cols != c.array_rows:
        _fail("array_cols", c.array_cols, f"must equal array_rows ({c.array_rows}): the NCHWc layout "
              "uses one line as both a K block and an N block")
    if c.line_bytes != c.array_rows:
        _fail("line_bytes", c.line_bytes, f"must equal array_rows ({c.array_rows}) (one line = R int8)")
    if c.dataflow != "weight_stationary":
        _fail("dataflow", c.dataflow, "only 'weight_stationary' is modelled")
    for k, unit in (("ub_bytes", c.line_bytes), ("wb_bytes", c.line_bytes), ("pb_bytes", c.line_bytes),
                    ("acc_bytes", c.acc_row_bytes)):
        v = getattr(c, k)
        if v < unit:
            _fail(k, v, f"must hold at least one line/row ({unit} bytes)")
        if v // getattr(c, k.replace("_bytes", "_banks")) < 1:
            _fail(k.replace("_bytes", "_banks"), getattr(c, k.replace("_bytes", "_banks")),
                  f"more banks than bytes in {k}")
    if c.wb_bytes < c.array_rows * c.array_cols:
        _fail("wb_bytes", c.wb_bytes, f"must hold one {c.array_rows}x{c.array_cols} weight block")
    if c.pb_bytes < 10 * c.line_bytes:
        _fail("pb_bytes", c.pb_bytes, "must hold one 10-line parameter record")
    # limits the ISA field widths impose (B.2)
    for k, lines, bits in (("ub_bytes", c.ub_lines, 16), ("wb_bytes", c.wb_lines, 16),
                           ("pb_bytes", c.pb_lines, 16)):
        if lines > 1 << bits:
            _fail(k, getattr(c, k), f"{lines} lines exceed the {bits}-bit line address field")
    if c.acc_rows > 1 << 13:
        _fail("acc_bytes", c.acc_bytes, f"{c.acc_rows} rows exceed the 13-bit acc_row field")
    if c.lut_entries != 256:
        _fail("lut_entries", c.lut_entries, "must be 256 (int8 -> int8 tables)")
    if c.lut_tables > 4:
        _fail("lut_tables", c.lut_tables, "at most 4 (lut_id is a 2-bit field)")
    if (c.lut_tables * 256) % c.line_bytes:
        _fail("lut_tables", c.lut_tables, "LUT bytes must be a whole number of lines")
    if c.num_semaphores > 8:
        _fail("num_semaphores", c.num_semaphores, "at most 8 (wait/signal masks are 8 bits)")
    if c.mxu_fill_latency is not None and (isinstance(c.mxu_fill_latency, bool)
                                           or not isinstance(c.mxu_fill_latency, int)
                                           or c.mxu_fill_latency < 0):
        _fail("mxu_fill_latency", c.mxu_fill_latency, "must be null or a non-negative integer")
    if c.energy_preset not in _ENERGY_PRESETS:
        _fail("energy_preset", c.energy_preset, f"must be one of {list(_ENERGY_PRESETS)}")


PRESETS: dict[str, AccelConfig] = {
    "default": AccelConfig(),
    # VTA (Pynq): 16x16 GEMM core, 32 KiB input, 256 KiB weight, 128 KiB acc, 8 B/cycle at 100 MHz.
    "vta_like": AccelConfig(name="vta_like", clock_mhz=100.0, array_rows=16, array_cols=16, line_bytes=16,
                            ub_bytes=32 * KiB, ub_banks=1, wb_bytes=256 * KiB, wb_banks=8,
                            acc_bytes=128 * KiB, acc_banks=16, dram_bytes_per_cycle=8.0, vpu_lanes=16),
    # Gemmini default: 16x16 WS, 256 KiB scratchpad split UB/WB, 64 KiB accumulator, 16 B/cycle.
    "gemmini_like": AccelConfig(name="gemmini_like", array_rows=16, array_cols=16, line_bytes=16,
                                ub_bytes=128 * KiB, ub_banks=4, wb_bytes=128 * KiB, wb_banks=4,
                                acc_bytes=64 * KiB, acc_banks=16, dram_bytes_per_cycle=16.0, vpu_lanes=16),
    # TPU v1: 256x256 at 700 MHz, 4 MiB acc, ~48.6 B/cycle (ridge ~1350 MAC/B). Its 24 MiB UB is not a
    # power of two and exceeds the 16-bit line field: 16 MiB (= 65536 lines of 256 B) is the largest legal.
    "tpu_v1_like": AccelConfig(name="tpu_v1_like", clock_mhz=700.0, array_rows=256, array_cols=256,
                               line_bytes=256, ub_bytes=16 * MiB, ub_banks=32, wb_bytes=1 * MiB, wb_banks=16,
                               acc_bytes=4 * MiB, acc_banks=256, pb_bytes=64 * KiB,
                               dram_bytes_per_cycle=48.6, vpu_lanes=256),
}


def preset(name: str) -> AccelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}") from None


def load_config(path=None, *, preset_name: str | None = None, overrides: dict | None = None) -> AccelConfig:
    """Load a JSON config file (keys of :class:`AccelConfig`; an optional ``"preset"`` key names the base
    preset the other keys override), or a preset, with optional overrides."""
    data: dict = {}
    if path is not None:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: configuration must be a JSON object")
    data = dict(data)
    base_name = data.pop("preset", None) or preset_name or "default"
    base = preset(base_name)
    merged = {**base.to_dict(), **data, **(overrides or {})}
    return AccelConfig.from_dict(merged)

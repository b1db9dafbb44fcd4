"""NPU-1 configuration (ACCELERATOR.md B.1): defaults, presets, JSON round trip, validation, hash."""

import json

import pytest

from runtime.accel.config import PRESETS, AccelConfig, load_config, preset
from runtime.accel.errors import ConfigError

pytestmark = pytest.mark.unit


def test_defaults_match_b1():
    c = AccelConfig()
    assert (c.array_rows, c.array_cols, c.line_bytes) == (32, 32, 32)
    assert c.ub_lines == 16384 and c.wb_lines == 8192 and c.acc_rows == 1024 and c.pb_bytes == 32 * 1024
    assert c.fill_latency == 63 and c.dram_burst_bytes == 64 and c.dram_latency_cycles == 100
    assert c.lut_lines == 32 and c.num_semaphores == 8 and c.energy_preset == "horowitz45"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip_through_json(name, tmp_path):
    c = preset(name)
    path = tmp_path / "c.json"
    c.save(path)
    again = load_config(path)
    assert again == c and again.config_hash() == c.config_hash()


def test_preset_facts():
    assert preset("vta_like").array_rows == 16 and preset("vta_like").dram_bytes_per_cycle == 8
    assert preset("gemmini_like").acc_bytes == 64 * 1024
    tpu = preset("tpu_v1_like")
    assert tpu.array_rows == 256 and 1300 < tpu.array_rows ** 2 / tpu.dram_bytes_per_cycle < 1400


def test_hash_is_stable_and_sensitive():
    a = AccelConfig()
    assert a.config_hash() == AccelConfig().config_hash()
    assert len(a.config_hash()) == 64
    assert a.replace(dram_latency_cycles=101).config_hash() != a.config_hash()
    assert a.replace(name="renamed").config_hash() == a.config_hash()


def test_partial_json_overrides_a_preset(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"preset": "vta_like", "dram_latency_cycles": 50}))
    c = load_config(p)
    assert c.array_rows == 16 and c.dram_latency_cycles == 50


@pytest.mark.parametrize("changes, key", [
    ({"ub_bytes": 500 * 1024}, "ub_bytes"),
    ({"array_rows": 12, "array_cols": 12, "line_bytes": 16}, "array_rows"),
    ({"array_cols": 16}, "array_cols"),
    ({"line_bytes": 64}, "line_bytes"),
    ({"acc_bytes": 2 * 1024 * 1024}, "acc_bytes"),     # 16384 rows > 13-bit acc_row
    ({"ub_bytes": 4 * 1024 * 1024}, "ub_bytes"),       # 131072 lines > 16-bit address
    ({"lut_tables": 8}, "lut_tables"),
    ({"num_semaphores": 9}, "num_semaphores"),
    ({"dram_bytes_per_cycle": 0}, "dram_bytes_per_cycle"),
    ({"energy_preset": "nope"}, "energy_preset"),
    ({"vpu_latency": 1.5}, "vpu_latency"),
])
def test_validation_names_key_and_value(changes, key):
    with pytest.raises(ConfigError, match=rf"'{key}' = "):
        AccelConfig(**changes)


def test_unknown_key_and_preset():
    with pytest.raises(ConfigError, match="unknown configuration key"):
        AccelConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("tpu_v9")

"""The report's data and plots on the cases a small CNN does not reach: a layer with no DRAM traffic
(infinite intensity), a layer without MACs (vector work), predicted numbers with no run, graphs too large
to draw, an empty memory plan."""

import math

import pytest

from lowering.reporting import data

pytestmark = [pytest.mark.unit]
CONFIG = {"array_rows": 16, "array_cols": 8, "dram_bytes_per_cycle": 16.0, "vpu_lanes": 16,
          "clock_mhz": 500.0}


def _layer(name, macs, cycles, read, write, output=None):
    return {"layer": name, "op_type": "QConv" if macs else "QAdd", "macs": macs, "cycles": cycles,
            "dram_read_bytes": read, "dram_write_bytes": write,
            "geometry": {"output": output or [1, 4, 4, 4]}, "segment": "npu1", "start_cycle": 0,
            "end_cycle": cycles}


def test_roofline_edge_cases():
    run = {"layers": [_layer("resident", 4096, 100, 0, 0), _layer("vector", 0, 10, 64, 64, [1, 2, 8, 8]),
                      _layer("fin", 0, 0, 0, 0), {**_layer("end", 0, 0, 0, 0), "op_type": "FINISH"}]}
    layers = data.npu_layers(CONFIG, run)
    assert [x["name"] for x in layers] == ["resident", "vector"]  # FINISH and empty layers left out
    roof = data.roofline(CONFIG, layers)
    assert roof["peak_ops_per_cycle"] == 256 and roof["ridge"] == 16
    resident, vector = roof["points"]
    assert math.isinf(resident["intensity"]) and resident["ops_per_cycle"] == 2 * 4096 / 100
    assert resident["attainable"] == 256
    assert vector["kind"] == "vector" and vector["ops"] == 128 and vector["intensity"] == 128 / 128
    assert vector["attainable"] == min(16, 16 * 1.0) and vector["gops"] == pytest.approx(12.8 * 0.5)
    plots = pytest.importorskip("lowering.reporting.plots")
    svg = plots.roofline(roof, "edge cases", "t-roof")
    assert svg.startswith("<svg ") and "resident" in svg and "vector unit roof" in svg
    assert "<?xml" not in svg and "<metadata" not in svg and "DOCTYPE" not in svg


def test_predicted_layers_from_kernel_records():
    kernels = [{"target": "npu", "segment": "npu1", "name": "a", "op": "QConv", "macs": 1280,
                "predicted_cycles": 40, "predicted_dram_bytes": 1600, "onnx_nodes": ["a", "a_q"]},
               {"target": "host", "name": "h", "op": "QuantizeLinear", "sources": ["h"]},
               {"target": "npu", "segment": "npu1", "name": "b", "op": "QMatMul", "macs": 640,
                "predicted_cycles": 10, "predicted_dram_bytes": 16}]
    layers = data.npu_layers(CONFIG, None, kernels)
    assert [(x["name"], x["start"], x["end"]) for x in layers] == [("a", 0, 40), ("b", 40, 50)]
    assert layers[0]["bound"] == "memory" and layers[0]["roofline_cycles"] == 100  # 1600 B / 16 B/cycle
    assert layers[1]["bound"] == "compute" and layers[1]["roofline_cycles"] == 5  # 640 / 128 MACs/cycle
    assert layers[0]["mac_util"] == pytest.approx(1280 / (40 * 128))
    assert layers[0]["onnx_nodes"] == ["a", "a_q"] and layers[0]["source"] == "predicted"


def test_fusion_map_and_memory_edges():
    kernels = [{"name": "k0", "op": "Conv", "sources": ["conv", "relu"]}, {"name": "k1", "op": "Gemm",
                                                                         "sources": ["fc"]}]
    fusion = data.fusion_map(kernels, [("conv", "Conv"), ("relu", "Relu"), ("const", "Constant"),
                                       ("fc", "Gemm"), ])
    assert fusion["before"] == [("conv", "Conv", 0), ("relu", "Relu", 0), ("const", "Constant", None),
                                ("fc", "Gemm", 1)]
    assert data.fusion_map(kernels)["before"] == [("conv", "?", 0), ("relu", "?", 0), ("fc", "?", 1)]
    assert data.fusion_map(kernels, [("conv", "Conv")])["unmatched_sources"] == ["fc", "relu"]
    assert data.live_bytes({"buffers": []}) == []
    plan = {"buffers": [{"live": [0, 2], "size": 5}, {"live": [1, 1], "size": 3}]}
    assert data.live_bytes(plan) == [5, 8, 5]
    plots = pytest.importorskip("lowering.reporting.plots")
    big = {"before": [(f"n{i}", "Relu", 0) for i in range(plots.MAX_ROWS_DRAWN + 1)],
           "after": [("k", "Relu", "")], "unmatched_sources": []}
    assert plots.fusion_map(big, "big") is None
    assert plots.memory_timeline({"buffers": []}, [], "m") is None
    assert plots.energy([], {p: 0.0 for p in data.ENERGY_PARTS}, "e") is None

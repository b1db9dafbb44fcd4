"""C.4 fusion on NPU-1 (targets/custom/passes.py, conv.Epilogue): residual-add fusion into the conv epilogue
and layer-to-layer UB residency, as graph passes of the custom target. Small graphs are lowered with and
without the passes, simulated (hazard checker on) and compared bit for bit with lowering.reference; fused
programs move strictly fewer DRAM bytes and use less energy, and the compiler's per-layer DRAM bytes equal
the simulator's."""

from __future__ import annotations

import numpy as np
import pytest

from lowering.opinfo import DOMAIN
from lowering.passmanager import PassContext, PassManager
from lowering.quantized import quantize_multipliers
from lowering.reference import run_graph
from runtime.accel.config import AccelConfig
from runtime.accel.report import build_report
from runtime.accel.simulator import simulate
from targets.custom.passes import FUSE_ATTR, RESIDENT_ATTR
from targets.custom.target import CustomTarget, _build_npu, _steps

from ..targets.cpu_harness import GraphMaker
from .test_conv import pack, unpack

CFG = AccelConfig()
B = CFG.block


def _conv(m: GraphMaker, x, cout, k=3, stride=1, relu=False, x_zp=0):
    cin = x.type.shape[1]
    w = m.const(m.rng.integers(-127, 128, (cout, cin, k, k)).astype(np.int8))
    b = m.const(m.rng.integers(-2000, 2000, cout).astype(np.int32))
    reals = 0.02 / np.sqrt(cin * k * k) * m.rng.uniform(0.5, 2.0, cout)
    mult, shift = quantize_multipliers(reals)
    zp = int(m.rng.integers(-20, 20))
    return m.node("QConv", x, w, b, domain=DOMAIN, out_dtype=np.int8, x_zero_point=x_zp, w_zero_point=0,
                  strides=(stride, stride), pads=(k // 2,) * 4, kernel_shape=(k, k), multiplier=mult,
                  shift=shift, out_zero_point=zp, clamp_min=zp if relu else -128, clamp_max=127)


def _zp(v) -> int:
    return int(v.producer.attr("out_zero_point")) if v.producer is not None else 3


def _add(m: GraphMaker, a, b, relu=True, sub=False):
    zo = -5
    return m.node("QAdd", a, b, domain=DOMAIN, out_dtype=np.int8, a_zero_point=_zp(a), b_zero_point=_zp(b),
                  a_multiplier=round(0.6 * 2**30), b_multiplier=round(0.4 * 2**30) * (-1 if sub else 1),
                  shift=30, out_zero_point=zo, clamp_min=zo if relu else -128, clamp_max=127)


def resnet_block(hw=56, c=64, seed=0, sub=False, skip_first=False):
    """x -> conv3x3+relu -> conv3x3 -> QAdd(., x) (+relu) -> out (the skip operand first if asked)."""
    m = GraphMaker("block", seed)
    x = m.qinput(1, c, hw, hw, dtype=np.int8)
    h = _conv(m, x, c, relu=True, x_zp=3)
    y = _conv(m, h, c, x_zp=_zp(h))
    out = _add(m, x, y, sub=sub) if skip_first else _add(m, y, x, sub=sub)
    return m.output(out)


def two_blocks(hw=14, c=32, seed=1):
    """conv -> conv -> conv chain feeding two residual blocks (residency chains, fused adds)."""
    m = GraphMaker("chain", seed)
    x = m.qinput(1, c, hw, hw, dtype=np.int8)
    a = _conv(m, x, c, relu=True, x_zp=3)
    b = _conv(m, a, c, relu=True, x_zp=_zp(a))
    r1 = _add(m, _conv(m, b, c, x_zp=_zp(b)), a)
    d = _conv(m, r1, 48, relu=True, x_zp=_zp(r1))
    e = _conv(m, d, 48, k=1, x_zp=_zp(d))
    f = _conv(m, e, c, x_zp=_zp(e))
    return m.output(_add(m, f, r1))


def lower_and_run(m: GraphMaker, disabled=(), cfg=CFG):
    """Run the target's passes (minus ``disabled``), lower the (single) NPU step, simulate it; returns
    (outputs, program, stats, simulation result, pass records)."""
    target = CustomTarget(cfg)
    options = {} if cfg is CFG else {"accel_config": cfg.name}
    records = PassManager(target.pipeline(options)).run(m.graph, PassContext(
        options=options, disabled=frozenset(disabled) | {"npu_pack_taps"}))     # one NPU step: no host ops
    steps = _steps(m.graph, target)
    assert [s.kind for s in steps] == ["npu"]
    step = steps[0]
    step.name = "npu0"
    program, stats = _build_npu(cfg, step, target)
    dram = program.initial_dram()
    acts = {t.name: t for t in program.tensors}
    for v in step.inputs:
        t = acts[v.name]
        raw = np.frombuffer(pack(m.feeds[v.name], t.zero_point, cfg.block), np.uint8)
        dram[t.dram_offset:t.dram_offset + raw.size] = raw
    res = simulate(cfg, program.pack(), dram)
    outs = {}
    for v in step.outputs:
        t = acts[v.name]
        n = int(np.prod(t.padded_shape))
        outs[v.name] = unpack(res.dram[t.dram_offset:t.dram_offset + n], tuple(v.type.shape), cfg.block)
    return outs, program, stats, res, records


def _clean(m: GraphMaker):
    for n in m.graph.nodes:
        for key in (FUSE_ATTR, RESIDENT_ATTR, "npu_fused_into"):
            n.attrs.pop(key, None)


def check(m: GraphMaker, disabled=(), cfg=CFG):
    """Bit-exact vs the reference, per-layer predicted DRAM bytes == simulated; returns (stats, report)."""
    _clean(m)
    want = run_graph(m.graph, m.feeds, keep_all=True)
    outs, program, stats, res, records = lower_and_run(m, disabled, cfg)
    for name, got in outs.items():
        np.testing.assert_array_equal(got, want[name])
    report = build_report(cfg, program, res)
    rows = {r["name"]: r for r in report["layers"]}
    for st in stats:
        row = rows[st.name]
        assert st.predicted_dram_bytes == row["dram_read_bytes"] + row["dram_write_bytes"], st.name
    d = res.counters["dram"]
    total = d["read_bytes"] + d["write_bytes"]
    assert total == sum(st.predicted_dram_bytes for st in stats)
    return stats, report, total, records


ALL_OFF = ("npu_fuse_epilogues", "npu_residency")


@pytest.mark.parametrize("kw", [dict(), dict(sub=True, skip_first=True)])
def test_small_block_fused_and_resident_bit_exact(kw):
    m = resnet_block(hw=9, c=40, seed=3, **kw)
    base, rep0, bytes0, _ = check(m, ALL_OFF)
    fused, rep1, bytes1, records = check(m)
    assert len(base) == 3 and len(fused) == 2
    assert bytes1 < bytes0
    assert rep1["summary"]["energy_pj"]["total"] < rep0["summary"]["energy_pj"]["total"]
    changes = [c for r in records for c in r.changes]
    assert any("fused" in c for c in changes) and any("stays in UB" in c for c in changes)
    conv2 = fused[1]
    assert len(conv2.onnx_nodes) == 2 and conv2.tiling["fusion"]["add"]
    assert fused[0].tiling["fusion"]["output_in_ub"] and conv2.saved_dram_bytes > 0


def test_each_pass_alone_saves_and_stays_exact():
    m = resnet_block(hw=12, c=32, seed=5)
    _, _, none, _ = check(m, ALL_OFF)
    _, _, fuse_only, _ = check(m, ("npu_residency",))
    _, _, res_only, _ = check(m, ("npu_fuse_epilogues",))
    _, _, both, _ = check(m)
    assert both < fuse_only < none and both < res_only < none


def test_chains_of_resident_layers():
    m = two_blocks()
    base, _, bytes0, _ = check(m, ALL_OFF)
    fused, rep, bytes1, records = check(m)
    assert bytes1 < bytes0
    resident = [st for st in fused if "output_in_ub" in st.tiling.get("fusion", {})]
    assert len(resident) >= 2
    for st in resident:     # the search counts the pad-fill record it loads (compulsory: a constant read)
        assert st.tiling["search_bytes"] == st.predicted_dram_bytes, st.name


def test_resnet_block_56x56x64_saving():
    """The ResNet-18 layer1 block: conv-relu-conv + skip add at 56x56x64."""
    m = resnet_block(hw=56, c=64, seed=0)
    _, rep0, bytes0, _ = check(m, ALL_OFF)
    fused, rep1, bytes1, _ = check(m)
    e0, e1 = rep0["summary"]["energy_pj"]["total"], rep1["summary"]["energy_pj"]["total"]
    print(f"\n56x56x64 block: DRAM {bytes0} -> {bytes1} bytes, energy {e0 / 1e6:.2f} -> {e1 / 1e6:.2f} uJ, "
          f"cycles {rep0['summary']['cycles']} -> {rep1['summary']['cycles']}")
    t = 64 * 56 * 56
    assert bytes0 - bytes1 >= 3 * t          # the add's two reads + conv outputs' writes, minus the halo
    assert e1 < e0


def conv_pool(pool: str, hw=12, c=40, seed=7, **attrs):
    """conv3x3+relu -> pooling (C.4 "pooling after conv": the pool reads the conv output from UB)."""
    from lowering.quantized import quantize_multiplier

    m = GraphMaker("conv_pool", seed)
    x = m.qinput(1, c, hw, hw, dtype=np.int8)
    h = _conv(m, x, c, relu=True, x_zp=3)
    if pool == "max":
        y = m.node("MaxPool", h, **attrs)
    else:
        count = hw * hw if attrs.get("global") else int(np.prod(attrs["kernel_shape"]))
        mult, shift = quantize_multiplier(0.8 / count)
        y = m.node("QAveragePool", h, domain=DOMAIN, out_dtype=np.int8, x_zero_point=_zp(h), out_zero_point=3,
                   multiplier=[mult], shift=[shift], clamp_min=-100, clamp_max=127, **attrs)
    return m.output(y)


@pytest.mark.parametrize("pool, hw, attrs", [
    ("max", 12, dict(kernel_shape=[2, 2], strides=[2, 2])),
    ("max", 13, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),     # -128 pad lines
    ("max", 9, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),             # overhang padding
    ("avg", 9, dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])),      # zero-point pad lines
    ("avg", 7, {"global": 1}),
])
def test_pool_reads_the_conv_output_from_ub(pool, hw, attrs):
    m = conv_pool(pool, hw=hw, **attrs)
    base, rep0, bytes0, _ = check(m, ALL_OFF)
    fused, rep1, bytes1, records = check(m)
    conv_out = 2 * CFG.block * hw * hw          # two channel blocks, written once and read once unfused
    assert bytes0 - bytes1 >= 2 * conv_out - 2 * CFG.line_bytes * 10
    assert rep1["summary"]["energy_pj"]["total"] < rep0["summary"]["energy_pj"]["total"]
    assert fused[0].tiling["fusion"]["output_in_ub"][0] == fused[1].name
    assert fused[1].tiling["input_in_ub"] and fused[1].predicted_dram_bytes < base[1].predicted_dram_bytes
    assert any("stays in UB" in c for r in records for c in r.changes)


# ---- MaxPool fused per output tile (when the pooled input region does not fit UB) -------------------------
def conv_maxpool(hw, cin, cout, k, stride, seed=7, **attrs):
    m = GraphMaker("conv_maxpool", seed)
    x = m.qinput(1, cin, hw, hw, dtype=np.int8)
    h = _conv(m, x, cout, k=k, stride=stride, relu=True, x_zp=3)
    return m.output(m.node("MaxPool", h, **attrs))


@pytest.mark.parametrize("hw, cin, k, stride, attrs", [
    (224, 3, 7, 2, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),   # the ResNet-18 stem
    (120, 8, 3, 1, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),         # bottom overhang rows
    (116, 8, 3, 1, dict(kernel_shape=[2, 2], strides=[2, 2])),                      # no overlap
])
def test_maxpool_fused_per_output_tile(hw, cin, k, stride, attrs):
    """conv -> MaxPool whose 64-channel padded input cannot stay in UB: the pool runs on each conv output
    tile before the STORE (the rows shared by consecutive tiles' windows carried into the next slot), so
    the conv output never reaches DRAM: exact, as predicted, fewer bytes, less energy, no slower."""
    m = conv_maxpool(hw, cin, 64, k, stride, **attrs)
    base, rep0, bytes0, _ = check(m, ALL_OFF)
    fused, rep1, bytes1, records = check(m)
    assert len(base) == 2 and len(fused) == 1 and fused[0].tiling["fusion"]["pool"]
    conv_out = 2 * CFG.block * (hw // stride) ** 2
    assert bytes0 - bytes1 >= 2 * conv_out - 2 * CFG.line_bytes * 10
    assert rep1["summary"]["energy_pj"]["total"] < rep0["summary"]["energy_pj"]["total"]
    assert rep1["summary"]["cycles"] <= rep0["summary"]["cycles"]
    row = next(r for r in rep1["layers"] if r["name"] == fused[0].name)
    assert abs(fused[0].predicted_cycles - row["cycles"]) <= 0.05 * row["cycles"]
    assert any("pooled per output tile" in c for r in records for c in r.changes)


def test_maxpool_per_tile_every_plan(monkeypatch):
    """Every tiling the search admits for a conv with a per-tile MaxPool (tile heights, N tiles, loop orders,
    residencies, input rings) is exact and moves the DRAM bytes the compiler predicts."""
    import dataclasses

    from targets.custom import conv as conv_module
    from targets.custom import passes
    from targets.custom.conv import conv_geom, pool_tuple
    from targets.custom.tiling import Plan, SearchResult, fits, ring_rows, tile_table

    monkeypatch.setattr(passes, "_plan_resident", lambda *a, **k: False)
    m = conv_maxpool(15, 40, 70, 3, 1, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    conv, pool = m.graph.nodes[0], m.graph.nodes[1]
    g = dataclasses.replace(conv_geom(conv, CFG), pool=pool_tuple(pool))
    plans = []
    for ho_t in range(1, 6):
        tt = tile_table(CFG, g, ho_t)
        for nt in (1, 2, 3):
            for in_res, w_res in ((True, True), (True, False), (False, True), (False, False)):
                for order in ("m_outer", "n_outer"):
                    for ring in (0, ring_rows(g, ho_t)) if not in_res else (0,):
                        p = Plan(ho_t, nt, 2 if ring else 1, order, in_res, w_res, ring)
                        if fits(CFG, g, p, tt.hin_max) and not (ring and order == "n_outer" and nt < 3):
                            plans.append(p)
    assert len(plans) >= 20 and len({p.ho_t for p in plans}) >= 3 and any(p.ring for p in plans)
    for plan in plans:
        monkeypatch.setattr(conv_module, "search", lambda cfg, g, p=plan: SearchResult(p, candidates=1))
        fused, _, _, _ = check(m)
        assert len(fused) == 1 and fused[0].tiling["fusion"]["pool"] == pool.name, plan


@pytest.mark.parametrize("preset", ["vta_like", "gemmini_like"])
def test_pool_region_uses_the_configured_block(preset):
    """16-wide presets: the pooling input region kept in UB is sized in the configuration's channel blocks
    (it was sized in 32-channel blocks: the second block's ACT wrote past the end of the 2048-line UB)."""
    from runtime.accel.config import load_config

    cfg = load_config(preset_name=preset)
    m = conv_pool("max", hw=8, c=32, kernel_shape=[2, 2], strides=[2, 2])
    fused, _, bytes1, _ = check(m, cfg=cfg)
    _, _, bytes0, _ = check(m, ALL_OFF, cfg=cfg)
    assert fused[0].tiling["fusion"]["output_in_ub"][0] == fused[1].name and bytes1 < bytes0

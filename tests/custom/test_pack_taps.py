"""The custom target's ``npu_pack_taps`` pass (targets/custom/passes.py): a conv with few input channels
(the RGB stem) gets its horizontal taps packed into channels by host Pad/Slice/Concat ops, and the NPU runs
a ``kh x 1`` conv over ``Cin*kw`` channels. Checked against lowering.reference on the original graph (the
rewritten graph computes the same int8 values; the NPU program computes them bit for bit) and for the
GEMM count and DRAM bytes it saves."""

from __future__ import annotations

import numpy as np
import pytest

from lowering.passmanager import PassContext, PassManager
from lowering.reference import run_graph
from runtime.accel.config import AccelConfig
from runtime.accel.simulator import simulate
from targets.custom.target import CustomTarget, _build_npu, _steps

from ..targets.cpu_harness import GraphMaker
from .test_conv import pack, unpack
from .test_fusion import _conv

CFG = AccelConfig()


def stem(hw, cin, k, stride, seed=0):
    m = GraphMaker("stem", seed)
    x = m.qinput(1, cin, hw, hw, dtype=np.int8)
    y = _conv(m, x, 40, k=k, stride=stride, relu=True, x_zp=-7)
    m.output(y)
    return m, y


def lower(m, disabled=()):
    """Passes, then the NPU step lowered and simulated on the reference's values of its inputs; returns
    (NPU outputs, reference values of the rewritten graph, program, pass changes)."""
    target = CustomTarget(CFG)
    records = PassManager(target.pipeline({})).run(m.graph, PassContext(disabled=frozenset(disabled)))
    values = {**m.feeds, **run_graph(m.graph, m.feeds, keep_all=True)}
    step = next(s for s in _steps(m.graph, target) if s.kind == "npu")
    step.name = "npu1"
    program, _ = _build_npu(CFG, step, target)
    dram = program.initial_dram()
    acts = {t.name: t for t in program.tensors}
    for v in step.inputs:
        t = acts[v.name]
        raw = np.frombuffer(pack(values[v.name], t.zero_point), np.uint8)
        dram[t.dram_offset:t.dram_offset + raw.size] = raw
    res = simulate(CFG, program.pack(), dram)
    outs = {}
    for v in step.outputs:
        t = acts[v.name]
        outs[v.name] = unpack(res.dram[t.dram_offset:t.dram_offset + int(np.prod(t.padded_shape))],
                              tuple(v.type.shape))
    return outs, values, program, res, [c for r in records for c in r.changes]


@pytest.mark.parametrize("hw, cin, k, stride", [(30, 3, 7, 2), (17, 3, 3, 2), (12, 4, 5, 1), (11, 8, 3, 1)])
def test_packed_taps_equal_the_original_conv(hw, cin, k, stride):
    m, out = stem(hw, cin, k, stride, seed=hw)
    want = run_graph(m.graph, m.feeds, keep_all=True)[out.name]
    plain_m, plain_out = stem(hw, cin, k, stride, seed=hw)
    _, _, plain, plain_res, _ = lower(plain_m, ("npu_pack_taps",))
    got, values, program, res, changes = lower(m)
    np.testing.assert_array_equal(values[out.name], want)          # the rewritten graph
    np.testing.assert_array_equal(got[out.name], want)             # the NPU program
    assert any("packed into" in c for c in changes)
    conv = next(n for n in m.graph.nodes if n.op == "QConv")
    assert conv.attr("kernel_shape") == (k, 1) and conv.input(0).type.shape[1] == cin * k
    assert [n.op for n in m.graph.nodes].count("Slice") == k
    gemms = lambda p: sum(1 for i in p.instructions if i.op == "GEMM")      # noqa: E731
    assert gemms(program) * k <= gemms(plain) * 1.2
    assert res.counters["dram"]["read_bytes"] < plain_res.counters["dram"]["read_bytes"]


def test_wide_inputs_are_not_packed():
    """Cin*kw over one channel block (or Cin >= 16): no rewrite."""
    m, _ = stem(12, 16, 3, 1)
    _, _, _, _, changes = lower(m)
    assert not any("packed into" in c for c in changes)
    assert [n.op for n in m.graph.nodes] == ["QConv"]

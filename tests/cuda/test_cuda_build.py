"""The cuda target's build checks that need no GPU: nvcc's resource report, unsupported ops, missing nvcc,
compile errors, and the emulator's out-of-bounds guard."""

from __future__ import annotations

import numpy as np
import pytest

from lowering.errors import LoweringError
from lowering.opinfo import DOMAIN
from runtime.backends.cuda import PackedParams
from targets.cuda.build import (
    build_flags,
    check_resources,
    compile_fatbin,
    parse_resource_usage,
)
from targets.cuda.codegen import common_source
from targets.cuda.emulate import EmulatedDriver, EmulatedKernels
from targets.cuda.target import CudaTarget
from tests.targets.cpu_harness import GraphMaker, naive_plan

from .harness import require_nvcc

REPORT = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k0_conv' for 'sm_80'
ptxas info    : Function properties for k0_conv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 368 bytes cmem[0]
ptxas info    : Compiling entry function 'k1_gemm' for 'sm_80'
ptxas info    : Function properties for k1_gemm
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 50000 bytes smem, 368 bytes cmem[0]
ptxas info    : Compiling entry function 'k0_conv' for 'sm_90'
ptxas info    : Function properties for k0_conv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 38 registers, used 0 barriers
"""


def test_resource_report_is_parsed():
    usage = parse_resource_usage(REPORT)
    assert usage["k0_conv"]["sm_80"].registers == 40 and usage["k0_conv"]["sm_90"].registers == 38
    gemm = usage["k1_gemm"]["sm_80"]
    assert (gemm.spill_stores, gemm.spill_loads, gemm.stack, gemm.smem) == (8, 12, 16, 50000)


def test_resource_check_fails_on_spills_smem_and_missing_code():
    usage = parse_resource_usage(REPORT)
    check_resources(usage, ["k0_conv"])  # within limits on both architectures
    with pytest.raises(LoweringError) as err:
        check_resources(usage, ["k0_conv", "k1_gemm"])
    message = str(err.value)
    assert "k1_gemm (sm_80): spills registers" in message
    assert "k1_gemm (sm_80): uses 50000 bytes of static shared memory" in message
    assert "k1_gemm: no sm_90 code was compiled" in message
    usage["k0_conv"]["sm_90"].registers = 300
    with pytest.raises(LoweringError, match=r"k0_conv \(sm_90\): uses 300 registers"):
        check_resources(usage, ["k0_conv"])


def test_nvcc_warnings_are_errors():
    nvcc = require_nvcc()
    source = common_source() + 'extern "C" __global__ void k(float *y) { int unused = 3; y[0] = 1.0f; }\n'
    with pytest.raises(LoweringError, match="nvcc failed"):
        compile_fatbin(source, nvcc, build_flags())


def test_unsupported_ops_are_named():
    m = GraphMaker("unsupported")
    x = m.input(2, 6)
    red = m.node("ReduceSum", x, m.const(np.array([1], np.int64)), keepdims=0)
    cmp = fused(m, "FusedElementwise", x, m.input(2, 6), body_ops=("Less", "Where"),
                body_args=(0, 1, 2, 0, 1), body_params=())
    ok = m.node("Relu", x)
    graph = m.output(red, cmp, ok).graph
    target = CudaTarget()
    reasons = {n.op: target.unsupported_reason(n) for n in graph.nodes}
    assert reasons["ReduceSum"] == "cuda target: ReduceSum is not supported"
    assert "Less" in reasons["FusedElementwise"] and "Where" in reasons["FusedElementwise"]
    assert reasons["Relu"] is None
    graph.memory_plan = naive_plan(graph)
    with pytest.raises(LoweringError, match="cuda target cannot lower 2 node"):
        target.build(graph, {})


def fused(m: GraphMaker, op: str, *inputs, **attrs):
    return m.node(op, *inputs, domain=DOMAIN, **attrs)


def test_missing_nvcc_is_a_clear_error():
    m = GraphMaker("relu")
    graph = m.output(m.node("Relu", m.input(4))).graph
    graph.memory_plan = naive_plan(graph)
    with pytest.raises(LoweringError, match="nvcc '/nonexistent/nvcc' not found"):
        CudaTarget().build(graph, {"nvcc": "/nonexistent/nvcc"})


def test_emulator_catches_a_missing_bounds_guard():
    source = common_source() + (
        'extern "C" __global__ void __launch_bounds__(256) k(float *y) {\n'
        "    y[lw_global_x()] = 1.0f;  /* no guard: threads past 100 write past the end */\n}\n")
    # 128 threads over 100 floats: the overrun (112 bytes) stays inside the emulator's guard bytes
    step = {"kernel": "k", "grid": [1, 1, 1], "block": [128, 1, 1], "smem": 0,
            "args": [{"kind": "arena", "offset": 0, "dtype": "float32", "access": "write"}]}
    driver = EmulatedDriver(EmulatedKernels(source, [step]))
    driver.load_module(b"k\0")
    buffer = driver.alloc(400)
    params = PackedParams([buffer])
    with pytest.raises(AssertionError, match="wrote past the end of the 400-byte buffer"):
        driver.launch(driver.get_function(1, "k"), (1, 1, 1), (128, 1, 1), 0, params.array, "k")

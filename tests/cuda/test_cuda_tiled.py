"""Block-cooperative kernels: the emulator's barriers and shared memory, and the shared-memory tiled SGEMM
and implicit-GEMM conv against the reference interpreter (partial tiles in M, N and K, every operand
layout and epilogue, batched GEMMs), plus their nvcc build and resource check.

No GPU: the tiled kernels run on the emulator, a block's threads as fibers that meet at every
``__syncthreads`` (dropping the barriers makes these tests fail, see ``test_tiled_gemm_needs_its_barriers``).
"""

from __future__ import annotations

import numpy as np
import pytest

from lowering.opinfo import DOMAIN
from lowering.reference import run_graph
from runtime.backends.cuda import CudaError, PackedParams
from targets.cuda import emit_linear
from targets.cuda.build import build_flags, check_resources, compile_fatbin, parse_resource_usage
from targets.cuda.codegen import common_source, generate
from targets.cuda.emit_linear import TILE_LARGE, TILE_SMALL, gemm_tile
from targets.cuda.emulate import EmulatedDriver, EmulatedKernels, cooperative_kernels
from tests.targets.cpu_harness import naive_plan

from .harness import GraphMaker, check_emulated, emulate_graph, require_nvcc

ACTS = [("Relu", ()), ("LeakyRelu", (0.1,)), ("Clip", (-0.5, 0.7)), ("Sigmoid", ()), ("Tanh", ()),
        ("Gelu", (0.0,)), ("Gelu", (1.0,)), ("", ())]


def fused(m: GraphMaker, op: str, *inputs, **attrs):
    return m.node(op, *inputs, domain=DOMAIN, **attrs)


def assert_tiled(module, count: int) -> None:
    """Exactly ``count`` kernels of ``module`` are block-cooperative (the tiled paths), and they are the
    first ``count`` steps (the tests build the tiled cases first)."""
    tiled = cooperative_kernels(module.source)
    assert [s["kernel"] for s in module.steps[:count]] == [s["kernel"] for s in module.steps
                                                           if s["kernel"] in tiled]


# --- the emulator ------------------------------------------------------------------------------------

def _launch(source: str, name: str, grid, block, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Run kernel ``name`` of ``source`` on the emulator over float32 ``arrays`` (one pointer each)."""
    step = {"kernel": name, "grid": list(grid), "block": list(block), "smem": 0,
            "args": [{"kind": "arena", "offset": 0, "dtype": "float32", "access": "write"} for _ in arrays]}
    driver = EmulatedDriver(EmulatedKernels(common_source() + source, [step]))
    driver.load_module(name.encode() + b"\0")
    buffers = [driver.alloc(a.nbytes) for a in arrays]
    for buf, a in zip(buffers, arrays):
        driver.copy_to_device(buf, a.ctypes.data, a.nbytes)
    params = PackedParams(buffers)  # keeps the pointer values its array points at alive
    try:
        driver.launch(driver.get_function(1, name), tuple(grid), tuple(block), 0, params.array, name)
        out = [np.empty_like(a) for a in arrays]
        for buf, o in zip(buffers, out):
            driver.copy_to_host(o.ctypes.data, buf, o.nbytes)
        return out
    finally:
        for buf in buffers:
            driver.free(buf)


BLOCK_REVERSE_SUM = """
extern "C" __global__ void __launch_bounds__(256) k_rev(const float *x, float *y, float *s) {
    __shared__ float tile[128];
    const int t = threadIdx.y * blockDim.x + threadIdx.x, n = blockDim.x * blockDim.y;
    const int base = blockIdx.x * n;
    tile[t] = x[base + t];
    __syncthreads();
    y[base + t] = tile[n - 1 - t];  /* another thread's element: needs the barrier */
    __syncthreads();
    for (int half = n / 2; half > 0; half /= 2) {  /* tree sum, a barrier per level */
        if (t < half) tile[t] += tile[t + half];
        __syncthreads();
    }
    if (t == 0) s[blockIdx.x] = tile[0];
}
"""


def test_emulator_runs_blocks_cooperatively():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3 * 128).astype(np.float32)
    _, y, s = _launch(BLOCK_REVERSE_SUM, "k_rev", (3, 1, 1), (32, 4, 1),
                      [x, np.zeros_like(x), np.zeros(3, np.float32)])
    np.testing.assert_array_equal(y, x.reshape(3, 128)[:, ::-1].reshape(-1))
    np.testing.assert_allclose(s, x.reshape(3, 128).sum(axis=1), rtol=1e-5, atol=1e-5)


DIVERGENT_RETURN = """
extern "C" __global__ void __launch_bounds__(256) k_div(float *y) {
    __shared__ float tile[64];
    if (blockIdx.x == 1 && threadIdx.x >= 60) return;  /* block 1 only: these never reach the barrier */
    tile[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    y[blockIdx.x * 64 + threadIdx.x] = tile[63 - threadIdx.x];
}
"""

DIVERGENT_SITES = """
extern "C" __global__ void __launch_bounds__(256) k_sites(float *y) {
    if (threadIdx.x & 1) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    y[threadIdx.x] = 1.0f;
}
"""


def test_divergent_barriers_are_reported():
    with pytest.raises(CudaError) as err:
        _launch(DIVERGENT_RETURN, "k_div", (2, 1, 1), (64, 1, 1), [np.zeros(128, np.float32)])
    message = str(err.value)
    assert "k_div: divergent __syncthreads() in block (1, 0, 0)" in message
    assert "60 of its 64 threads wait at kernels.cu line" in message
    assert "thread (60, 0, 0) returned without reaching it" in message
    sites = (r"k_sites: divergent __syncthreads\(\) in block \(0, 0, 0\): thread \(1, 0, 0\) waits at "
             r"kernels.cu line \d+, other threads at line \d+")
    with pytest.raises(CudaError, match=sites):
        _launch(DIVERGENT_SITES, "k_sites", (1, 1, 1), (32, 1, 1), [np.zeros(32, np.float32)])


UNWRITTEN_SHARED = """
extern "C" __global__ void __launch_bounds__(256) k_unwritten(float *y) {
    __shared__ float tile[64];
    if (threadIdx.x < 32) tile[threadIdx.x] = 1.0f;  /* half of the tile */
    __syncthreads();
    y[blockIdx.x * 64 + threadIdx.x] = tile[threadIdx.x];
}
"""


def test_unwritten_shared_memory_reads_nan_in_every_block():
    (y,) = _launch(UNWRITTEN_SHARED, "k_unwritten", (2, 1, 1), (64, 1, 1), [np.zeros(128, np.float32)])
    y = y.reshape(2, 64)
    assert (y[:, :32] == 1.0).all() and np.isnan(y[:, 32:]).all()


def test_thread_independent_kernels_still_run_thread_by_thread():
    source = common_source() + (
        'extern "C" __global__ void __launch_bounds__(256) k_ind(float *y) {\n'
        "    const int i = lw_global_x();\n    if (i < 300) y[i] = (float)i;\n}\n")
    assert cooperative_kernels(source + BLOCK_REVERSE_SUM) == {"k_rev"}
    (y,) = _launch(source[len(common_source()):], "k_ind", (2, 1, 1), (256, 1, 1),
                   [np.zeros(300, np.float32)])
    np.testing.assert_array_equal(y, np.arange(300, dtype=np.float32))


# --- tiled SGEMM -------------------------------------------------------------------------------------

def test_tile_selection():
    assert gemm_tile(1, 1000, 1000, 1) is None and gemm_tile(1000, 16, 64, 1) is None
    assert gemm_tile(64, 64, 4, 1) is None  # K too short to stage
    assert gemm_tile(37, 45, 50, 1) is TILE_SMALL
    assert gemm_tile(130, 130, 20, 33) is TILE_LARGE  # 2 x 2 x 33 = 132 blocks of 128 x 128
    assert gemm_tile(1024, 1024, 64, 1) is TILE_SMALL  # 64 large tiles would leave SMs idle
    for cfg in (TILE_SMALL, TILE_LARGE):
        assert cfg.threads == 256 and cfg.smem_bytes() <= 48 * 1024


def test_tiled_gemm_layouts_and_epilogues():
    m = GraphMaker("tiled_gemm")
    outs = []
    # 70 x 90 x 33: partial tiles in M (70 = 64 + 6), N (90 = 64 + 26) and K (33 = 2 * 16 + 1)
    a, at = m.input(70, 33), m.input(33, 70)
    for trans_a in (0, 1):
        for trans_b in (0, 1):
            b = m.weight(*((90, 33) if trans_b else (33, 90)))
            outs.append(m.node("Gemm", at if trans_a else a, b, m.weight(90), transA=trans_a, transB=trans_b))
    outs += [
        m.node("Gemm", m.input(37, 50), m.weight(50, 45), None),  # one partial tile in every dimension
        m.node("Gemm", a, m.input(90, 33), m.input(70, 1), transB=1, alpha=0.5, beta=2.0),  # column bias
        m.node("Gemm", a, m.weight(33, 90), m.weight(70, 90), beta=-1.0),  # matrix bias
        m.node("Gemm", a, m.weight(33, 90), m.const(np.float32(0.25))),  # scalar bias
        m.node("Gemm", m.input(64, 64), m.input(64, 64), None),  # whole tiles only
        m.node("Gemm", m.input(40, 8), m.weight(8, 200), None),  # K of one short step
    ]
    for i, (act, params) in enumerate(ACTS):
        res = [m.input(70, 90), m.input(1, 90), m.input(70, 1), None][i % 4]
        bias = m.weight(90) if i % 2 else None
        outs.append(fused(m, "FusedGemm", a, m.weight(90, 33), bias, res, transB=1,
                          alpha=1.5 if i == 3 else 1.0, activation=act, activation_params=params))
    module = check_emulated(m.output(*outs))
    assert_tiled(module, len(outs))


def test_tiled_matmul_batches():
    m = GraphMaker("tiled_matmul")
    outs = [
        m.node("MatMul", m.input(2, 3, 40, 20), m.input(2, 3, 20, 50)),  # a batch on grid z
        m.node("MatMul", m.input(2, 1, 40, 20), m.input(1, 3, 20, 50)),  # broadcast batch: index tables
        m.node("MatMul", m.weight(48, 36), m.input(3, 36, 33)),  # one A for every batch item
        m.node("MatMul", m.input(2, 50, 24), m.weight(24, 70)),  # rows of every batch item in one GEMM
        fused(m, "FusedMatMul", m.input(2, 3, 40, 16), m.input(2, 3, 35, 16), None, None, transB=1,
              alpha=0.5),
        fused(m, "FusedMatMul", m.input(2, 33, 24), m.weight(24, 40), m.weight(40), m.input(2, 33, 40),
              activation="Gelu", activation_params=(0.0,)),
        fused(m, "FusedMatMul", m.input(3, 16, 34), m.input(3, 16, 40), m.weight(1), None, transA=1,
              activation="Relu", activation_params=()),
        m.node("MatMul", m.input(33, 130, 20), m.input(33, 20, 130)),  # 128 x 128 tiles (8 x 8 per thread)
    ]
    module = check_emulated(m.output(*outs))
    assert_tiled(module, len(outs))
    assert module.steps[-1]["block"] == list(TILE_LARGE.block)


def test_tiled_gemm_needs_its_barriers(monkeypatch):
    """Without its __syncthreads the tiled kernel reads tiles other threads have not stored yet: the
    emulator (fibers that only switch at barriers) gives wrong results, so the tests above can fail."""
    original = emit_linear._tiled_body
    monkeypatch.setattr(emit_linear, "_tiled_body", lambda *a, **kw: [
        line for line in original(*a, **kw) if "__syncthreads" not in line])
    m = GraphMaker("no_barrier")
    graph = m.output(m.node("Gemm", m.input(70, 33), m.weight(33, 90), None)).graph
    got, _ = emulate_graph(graph, m.feeds)
    want = run_graph(graph, m.feeds)
    (name,) = want
    assert not np.allclose(got[name], want[name], rtol=1e-3, atol=1e-3)


# --- tiled convolutions ------------------------------------------------------------------------------

TILED_CONV_CASES = [  # (input shape, weight shape, attrs): all above the tiling threshold
    ((2, 8, 10, 10), (40, 8, 3, 3), {"pads": (1, 1, 1, 1)}),  # M 40, 200 columns, K 72: partial tiles
    ((2, 8, 12, 12), (66, 4, 3, 3), {"group": 2, "strides": (2, 2), "pads": (0, 1, 1, 0)}),  # groups on z
    ((1, 3, 23, 23), (36, 3, 7, 7), {"strides": (2, 2), "pads": (3, 3, 3, 3)}),  # a ResNet stem
    ((1, 4, 12, 12), (33, 4, 3, 3), {"dilations": (2, 2), "auto_pad": "SAME_UPPER"}),
    ((2, 6, 40), (48, 6, 5), {"pads": (2, 2), "dilations": (2,)}),  # 1-D
    ((1, 16, 16, 16), (48, 16, 1, 1), {"strides": (2, 2)}),  # strided 1x1: the implicit GEMM
    ((2, 24, 8, 8), (40, 24, 1, 1), {}),  # 1x1: the plain batched SGEMM
]


def test_tiled_conv_variants():
    m = GraphMaker("tiled_conv")
    outs = []
    for i, (xs, ws, attrs) in enumerate(TILED_CONV_CASES):
        bias = m.weight(ws[0]) if i % 3 != 2 else None
        outs.append(m.node("Conv", m.input(*xs), m.weight(*ws), bias, **attrs))
    module = check_emulated(m.output(*outs))
    assert_tiled(module, len(outs))


def test_tiled_fused_conv_epilogues():
    m = GraphMaker("tiled_fused_conv")
    x, x1 = m.input(2, 8, 9, 9), m.input(2, 24, 8, 8)
    outs = []
    for i, (act, params) in enumerate(ACTS):
        res = [m.input(2, 40, 9, 9), m.input(1, 40, 1, 1), m.input(2, 40, 1, 1), None][i % 4]
        outs.append(fused(m, "FusedConv", x, m.weight(40, 8, 3, 3), m.weight(40) if i % 2 else None, res,
                          pads=(1, 1, 1, 1), activation=act, activation_params=params))
        res = [m.input(1, 40, 8, 8), m.input(2, 40, 8, 8), m.input(1, 40, 1, 1), None][i % 4]
        outs.append(fused(m, "FusedConv", x1, m.weight(40, 24, 1, 1), m.weight(40) if i % 3 else None, res,
                          activation=act, activation_params=params))
    module = check_emulated(m.output(*outs))
    assert_tiled(module, len(outs))


# --- nvcc --------------------------------------------------------------------------------------------

def test_tiled_kernels_build_within_sm80_limits():
    """Every tiled variant (both tile sizes, each operand layout, the conv gather) compiles to the fatbin
    with warnings as errors and passes the resource check: no spills, <= 255 registers, static shared
    memory under 48 KiB. The ptxas numbers are printed (pytest -s)."""
    nvcc = require_nvcc()
    m = GraphMaker("tiled_build")
    a, at = m.input(70, 33), m.input(33, 70)
    outs = [m.node("Gemm", at if ta else a, m.weight(*((90, 33) if tb else (33, 90))), m.weight(90),
                   transA=ta, transB=tb) for ta in (0, 1) for tb in (0, 1)]
    outs += [
        fused(m, "FusedMatMul", m.input(33, 130, 20), m.input(33, 20, 130), None, None,
              activation="Gelu", activation_params=(0.0,)),
        fused(m, "FusedConv", m.input(2, 8, 10, 10), m.weight(64, 8, 3, 3), m.weight(64),
              m.input(2, 64, 10, 10), pads=(1, 1, 1, 1), activation="Relu", activation_params=()),
        m.node("Conv", m.input(2, 24, 8, 8), m.weight(40, 24, 1, 1), m.weight(40)),
    ]
    graph = m.output(*outs).graph
    graph.memory_plan = naive_plan(graph)
    module = generate(graph, graph.memory_plan.offsets, graph.memory_plan.arena_size)
    assert_tiled(module, len(outs))
    _, report = compile_fatbin(module.source, nvcc, build_flags())
    usage = parse_resource_usage(report)
    names = [s["kernel"] for s in module.steps]
    check_resources(usage, names)
    for step in module.steps:
        for arch, res in sorted(usage[step["kernel"]].items()):
            print(f"{step['kernel']:>16} {arch} block {step['block']}: {res.registers} registers, "
                  f"{res.smem} bytes smem, {res.spill_stores + res.spill_loads} bytes spilled")
            assert 0 < res.smem <= 48 * 1024 and res.registers * 256 <= 65536

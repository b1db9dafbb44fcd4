"""The cpu target's GEMM paths against the reference interpreter: transformer linear layers (FusedMatMul
with bias, residual and activation in the epilogue, M = batch * tokens), batched products of two runtime
operands with broadcast batch axes, transposed operands read in place, and partial panels (M, N not
multiples of the register tile, K over one K block)."""

import numpy as np
import pytest

from lowering.ir import Graph
from lowering.opinfo import DOMAIN
from lowering.passmanager import PassContext, PassManager
from lowering.reference import run_graph
from passes.pipeline import default_passes
from targets.cpu.codegen import library_source

from .cpu_harness import RTOL, GraphMaker, build_cpu, check_against_reference

pytestmark = pytest.mark.unit


def _fused_matmul(m: GraphMaker, a, b, bias=None, res=None, act="", params=(), **attrs):
    flags = {"transA": 0, "transB": 0, "alpha": 1.0} | attrs
    return m.node("FusedMatMul", a, b, bias, res, domain=DOMAIN, activation=act, activation_params=params,
                  **flags)


@pytest.mark.parametrize("act, params", [("", ()), ("Relu", ()), ("Gelu", (0.0,)), ("Gelu", (1.0,))])
def test_linear_layer_with_bias_and_activation(act, params):
    """[2, 13, 300] x W[300, 40] + b: 26 rows (partial row panel), K over one K block, N a partial panel."""
    m = GraphMaker("linear", seed=1)
    x = m.input(2, 13, 300)
    m.output(_fused_matmul(m, x, m.weight(300, 40, scale=0.1), m.weight(40), act=act, params=params))
    check_against_reference(m, threads=2)


@pytest.mark.parametrize(
    "isa, act, params",
    [(None, "Gelu", (0.0,)), (None, "Gelu", (1.0,)), (None, "Tanh", ()), (None, "Sigmoid", ()),
     ("x86-64-v3", "Gelu", (0.0,)), ("x86-64-v2", "Gelu", (1.0,))],
)
def test_activation_epilogue_on_every_tile_shape(isa, act, params):
    """The activation runs on the accumulators of full-width tiles and through lw_activate on a partial
    column panel. M = 29: full row panels and partial ones of every kernel height (rows past M re-read the
    last row, in place); K = 600: three K blocks (the first steps of each prefetch the next panel); N = 70:
    two full column panels (NR 32) and a partial one; outputs spread over [-20, 20] (saturated tails).
    The second output reads a constant A (packed panels, prefetched) against a runtime B."""
    m = GraphMaker("act_epilogue", seed=11)
    x = m.input(29, 600)
    m.output(_fused_matmul(m, x, m.weight(600, 70, scale=0.3), m.weight(70), act=act, params=params))
    m.output(_fused_matmul(m, m.weight(29, 600, scale=0.3), m.input(600, 70), act=act, params=params))
    check_against_reference(m, threads=2, **({"isa": isa} if isa else {}))


def test_linear_layer_with_residual_alpha_and_transposed_weight():
    m = GraphMaker("residual", seed=2)
    x, r = m.input(3, 7, 24), m.input(3, 7, 20)
    w = m.weight(20, 24)  # stored [N, K]: transB
    m.output(_fused_matmul(m, x, w, m.weight(1), r, "Tanh", transB=1, alpha=0.5))
    check_against_reference(m, threads=1)


@pytest.mark.parametrize("isa", [None, "x86-64-v3"])
def test_batched_runtime_operands_with_broadcast(isa):
    """Unfused attention scores: q [2,3,17,8] x k^T with k [1,3,17,8] read transposed (transB), scaled."""
    m = GraphMaker("scores", seed=3)
    q, k = m.input(2, 3, 17, 8), m.input(1, 3, 17, 8)
    m.output(_fused_matmul(m, q, k, transB=1, alpha=0.125))
    check_against_reference(m, threads=2, **({"isa": isa} if isa else {}))


def test_transposed_runtime_a_is_read_in_place():
    """transA on a batched runtime A ([2, K, M] -> M = 11 rows, K = 270) times a runtime B."""
    m = GraphMaker("trans_a", seed=4)
    a, b = m.input(2, 270, 11), m.input(2, 270, 9)
    m.output(_fused_matmul(m, a, b, m.weight(9), transA=1))
    check_against_reference(m, threads=2)


def test_gemm_trans_a_and_plain_matmul_shapes():
    m = GraphMaker("gemm", seed=5)
    a = m.input(300, 5)  # transA: 5 x 300 read in place, column stride 5
    m.output(m.node("FusedGemm", a, m.weight(300, 33), m.weight(33), None, domain=DOMAIN, transA=1, transB=0,
                    alpha=1.0, beta=0.5, activation="Clip", activation_params=(-1.0, 1.0)))
    v = m.input(12)  # rank-1 and broadcast MatMul operands
    m.output(m.node("MatMul", v, m.input(4, 12, 3)))
    m.output(m.node("MatMul", m.input(2, 1, 5, 12), m.weight(3, 12, 4)))
    check_against_reference(m, threads=2, isa="x86-64-v3")


def test_results_do_not_depend_on_the_thread_count():
    m = GraphMaker("threads", seed=6)
    x = m.input(1, 128, 256)
    m.output(_fused_matmul(m, x, m.weight(256, 96, scale=0.1), m.weight(96), act="Gelu", params=(0.0,)))
    built = build_cpu(m.graph)
    one, two = built.run(m.feeds, threads=1), built.run(m.feeds, threads=2)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name])


def _transformer_block_graph() -> tuple[Graph, dict]:
    """A post-LN-free encoder slice as exporters write it: linear layers on [B, S, K] with separate bias
    Adds, a head split, q @ k^T through an explicit Transpose, softmax, context, output projection."""
    m = GraphMaker("block", seed=7)
    x = m.input(2, 16, 32)
    qkv = [m.node("Add", m.node("MatMul", x, m.weight(32, 32, scale=0.2)), m.weight(32)) for _ in range(3)]
    shape = m.const(np.array([2, 16, 4, 8], np.int64))
    q, k, v = (m.node("Transpose", m.node("Reshape", t, shape), perm=(0, 2, 1, 3)) for t in qkv)
    key_t = m.node("Transpose", k, perm=(0, 1, 3, 2))
    scores = m.node("Mul", m.node("MatMul", q, key_t), m.const(np.float32(0.35)))
    ctx = m.node("MatMul", m.node("Softmax", scores, axis=-1), v)
    merged = m.node("Reshape", m.node("Transpose", ctx, perm=(0, 2, 1, 3)), m.const(np.array([2, 16, 32])))
    out = m.node("Relu", m.node("Add", m.node("MatMul", merged, m.weight(32, 32, scale=0.2)), m.weight(32)))
    m.output(out)
    return m.graph, m.feeds


@pytest.mark.parametrize("attention", [True, False])
def test_pipeline_lowers_a_transformer_block_to_fused_matmuls(attention):
    """With the attention fusion off, q @ k^T and softmax @ v stay batched GEMMs of runtime operands."""
    graph, feeds = _transformer_block_graph()
    want = run_graph(graph, feeds)
    disabled = frozenset() if attention else frozenset({"fuse_transformer"})
    PassManager(default_passes()).run(graph, PassContext(disabled=disabled))
    ops = graph.op_counts()
    assert ops.get(f"{DOMAIN}::FusedMatMul", 0) == (4 if attention else 6) and "MatMul" not in ops
    assert "Add" not in ops  # every bias is in a GEMM epilogue
    # fused attention reads the head split/merge layouts through strides (fold_transpose); unfused, the
    # key's head split and its k^T compose into one transpose
    assert ops.get("Transpose", 0) == (0 if attention else 4)
    got = build_cpu(graph).run(feeds, threads=2)
    for name, expected in want.items():
        np.testing.assert_allclose(got[name], expected, rtol=RTOL, atol=1e-5)


def test_every_parallel_region_takes_the_runtime_thread_count():
    """``lower bench --threads N`` compares like with like only if no kernel picks its own thread count."""
    regions = [line.strip() for line in library_source().splitlines() if "omp parallel" in line]
    assert regions and all("num_threads(nt)" in line for line in regions), regions

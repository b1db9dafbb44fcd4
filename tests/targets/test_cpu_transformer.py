"""The cpu target's LayerNormalization and fused attention kernels against the reference interpreter (and
the reference against independent numpy formulas)."""

from __future__ import annotations

import numpy as np
import pytest

from lowering.ir import Node, TensorType, Value
from lowering.opinfo import DOMAIN
from lowering.reference import evaluate_node, run_graph
from targets.cpu.emit_transformer import check_attention, check_layernorm

from .cpu_harness import GraphMaker, build_cpu, check_against_reference

pytestmark = pytest.mark.target_cpu

LAYERNORM_CASES = [  # (input shape, axis, scale shape, bias?)
    ((4, 7, 64), -1, (64,), True),
    ((3, 37), -1, (37,), False),  # a row that is not a whole number of vectors
    ((2, 5, 6, 10), -2, (6, 10), True),  # two normalised axes
    ((1, 16, 384), 2, (1,), True),  # scalar scale broadcast over the row
    ((130, 768), -1, (768,), True),  # enough rows to run in parallel
]


@pytest.mark.parametrize("threads", [1, 2])
def test_layernorm_variants(threads):
    m = GraphMaker("layernorm")
    outs = []
    for shape, axis, scale_shape, has_bias in LAYERNORM_CASES:
        x = m.input(*shape)
        scale = m.const((m.rng.random(scale_shape) + 0.5).astype(np.float32))
        bias = m.weight(*shape[axis % len(shape):], scale=0.1) if has_bias else None
        outs.append(m.node("LayerNormalization", x, scale, bias, axis=axis, epsilon=1e-5))
    shifted = m.input(8, 96)  # mean far from zero against the spread: the shifted sums keep the variance
    m.feeds[shifted.name] = m.feeds[shifted.name] * np.float32(0.01) + np.float32(300.0)
    outs.append(m.node("LayerNormalization", shifted, m.const(np.ones(96, np.float32)), epsilon=1e-12))
    check_against_reference(m.output(*outs), threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_layernorm_mean_and_inv_std_outputs(threads):
    """The optional outputs Mean and InvStdDev (the reduced axes kept as size one), each alone, both, and
    one read by a later node; a LayerNormalization whose extra outputs go unread keeps the plain kernel."""
    m = GraphMaker("layernorm_stats")
    outs = []
    for shape, axis, used in [((4, 7, 64), -1, (1, 2)), ((3, 37), 0, (1,)), ((2, 5, 6, 10), -2, (2,)),
                              ((130, 768), -1, (1, 2))]:
        x = m.input(*shape)
        scale = m.const((m.rng.random(shape[axis % len(shape):]) + 0.5).astype(np.float32))
        y, mean, inv = m.node_outputs("LayerNormalization", x, scale, None, outputs=3, axis=axis,
                                      epsilon=1e-3)
        outs += [y] + [(mean, inv)[i - 1] for i in used]
    x = m.input(6, 32)
    y, mean, _ = m.node_outputs("LayerNormalization", x, m.const(np.ones(32, np.float32)), outputs=3)
    outs += [y, m.node("Add", mean, mean)]
    plain = m.node_outputs("LayerNormalization", m.input(5, 16), m.const(np.ones(16, np.float32)),
                           outputs=3)[0]
    built = check_against_reference(m.output(*outs, plain), threads=threads)
    source = built.build.files["cpu/model.c"].decode()
    assert source.count("lw_layernorm_stats(ctx") == 5 and source.count("lw_layernorm(ctx") == 1
    assert m._env[id(outs[1])].shape == (4, 7, 1) and m._env[id(outs[4])].shape == (1, 1)


def test_layernorm_stats_types_refused():
    x = Value("x", TensorType.of(np.zeros((2, 8), np.float32)))
    g = Value("g", TensorType.of(np.ones(8, np.float32)))
    node = Node("LayerNormalization", [x, g], [Value("y"), Value("mean", TensorType.of(np.zeros((2, 1))))])
    assert check_layernorm(node) == "LayerNormalization output 1 'mean' is float64, not float32"
    node.set_attr("stash_type", 11)
    assert "stash_type 11 is not supported" in check_layernorm(node)


def test_layernorm_reference_matches_formula():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 10)).astype(np.float32)
    g, b = rng.standard_normal(10).astype(np.float32), rng.standard_normal(10).astype(np.float32)
    node = Node("LayerNormalization", [], [Value("y"), Value("mean"), Value("inv")], name="ln")
    node.set_attr("epsilon", 1e-3)
    y, mean, inv = evaluate_node(node, [x, g, b])
    mu = x.mean(-1, keepdims=True)
    want = (x - mu) / np.sqrt(x.var(-1, keepdims=True) + 1e-3) * g + b
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean, mu, rtol=1e-6, atol=1e-6)
    assert inv.shape == (3, 4, 1)


def _attention(m: GraphMaker, q, k, v, mask=None, bool_mask=None, **attrs):
    return m.node("Attention", q, k, v, mask, bool_mask, domain=DOMAIN, **attrs)


def test_attention_variants():
    m = GraphMaker("attention")
    outs = []
    q, k, v = m.input(1, 2, 16, 32), m.input(1, 2, 16, 32), m.input(1, 2, 16, 32)
    outs.append(_attention(m, q, k, v, scale=32 ** -0.5))  # K rows: dot products
    kt = m.input(2, 3, 20, 37)  # K^T with an odd key count and head size 20
    q2, v2 = m.input(2, 3, 11, 20), m.input(2, 3, 37, 24)
    pad = np.zeros((2, 1, 1, 37), np.float32)
    pad[0, ..., 30:] = np.finfo(np.float32).min  # BERT's additive padding mask, broadcast over heads/rows
    outs.append(_attention(m, q2, kt, v2, m.const(pad), k_transposed=1, scale=0.2))
    full = m.input(2, 3, 11, 37)  # a full-size additive mask
    outs.append(_attention(m, q2, kt, v2, full, k_transposed=1, scale=0.3))
    kt3 = m.input(1, 2, 32, 16)
    outs.append(_attention(m, q, kt3, v, k_transposed=1, causal=1, scale=0.25))  # GPT-2's causal mask
    q4 = m.input(1, 2, 5, 32)  # fewer queries than keys: the causal diagonal shifts right
    outs.append(_attention(m, q4, k, v, causal=1, scale=0.25))
    allowed = m.rng.random((1, 1, 16, 16)) < 0.7
    allowed[0, 0, 3] = False  # a row with every key masked: -inf everywhere, NaN, guarded to 0
    bool_mask = m.const(allowed)
    outs.append(_attention(m, q, k, v, None, bool_mask, mask_fill=float("-inf"), nan_to_zero=1, scale=0.5))
    min_fill = float(np.finfo(np.float32).min)  # a finite fill: the masked-out row becomes uniform
    outs.append(_attention(m, q, k, v, None, bool_mask, mask_fill=min_fill, scale=0.5))
    check_against_reference(m.output(*outs), threads=2)


def test_attention_reference_matches_formula():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 2, 6, 4)).astype(np.float32) for _ in range(3))
    mask = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    node = Node("Attention", [], [Value("y")], name="attn", domain=DOMAIN)
    node.set_attr("scale", 0.5)
    node.set_attr("causal", 1)
    got = evaluate_node(node, [q, k, v, mask])[0]
    s = q @ k.transpose(0, 1, 3, 2) * 0.5 + mask
    s = np.where(np.tril(np.ones((6, 6), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(got, (p / p.sum(-1, keepdims=True)) @ v, rtol=1e-5, atol=1e-6)


def _typed(name, shape, dtype="float32"):
    from lowering.ir import DType

    return Value(name, TensorType(DType(dtype), shape))


def test_unsupported_cases_are_explained():
    q = _typed("q", (2, 8, 16))
    node = Node("Attention", [q, _typed("k", (2, 8, 16)), _typed("v", (2, 8, 16))], [_typed("y", (2, 8, 16))],
                domain=DOMAIN)
    assert "rank-4" in check_attention(node)
    q4 = _typed("q", (1, 2, 8, 16))
    bad_mask = _typed("m", (1, 3, 8, 8))
    node = Node("Attention", [q4, _typed("k", (1, 2, 8, 16)), _typed("v", (1, 2, 8, 16)), bad_mask],
                [_typed("y", (1, 2, 8, 16))], domain=DOMAIN)
    assert "does not broadcast" in check_attention(node)
    ln = Node("LayerNormalization", [_typed("x", (4, 8)), _typed("s", (5,))], [_typed("y", (4, 8))])
    assert "normalised shape" in check_layernorm(ln)


def test_attention_model_sized_shapes_match_at_any_thread_count():
    """ViT/BERT-sized heads: several micro-tiles per task, a partial last tile, keys not a whole number of
    vectors, K as rows and as K^T, Dv not a whole number of vectors (V packed). The rows are computed the
    same way whatever the split, so 1 and 2 threads give bit-identical results."""
    m = GraphMaker("attention_big")
    outs = []
    q, k, v = m.input(1, 3, 197, 64), m.input(1, 3, 197, 64), m.input(1, 3, 197, 64)
    outs.append(_attention(m, q, k, v, scale=0.125))
    kt = m.input(1, 3, 64, 197)
    outs.append(_attention(m, q, kt, v, k_transposed=1, scale=0.125))
    pad = np.zeros((1, 1, 1, 197), np.float32)
    pad[..., 150:] = np.finfo(np.float32).min
    outs.append(_attention(m, q, kt, v, m.const(pad), k_transposed=1, scale=0.125))
    q2, k2, v2 = m.input(2, 2, 40, 24), m.input(2, 2, 40, 24), m.input(2, 2, 40, 20)
    outs.append(_attention(m, q2, k2, v2, causal=1, scale=0.3))
    built = check_against_reference(m.output(*outs), threads=1)
    one, two = built.run(m.feeds, 1), built.run(m.feeds, 2)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


def test_attention_infinite_and_nan_scores():
    """Scores of +inf (an infinite mask entry) and NaN take the general exp path: NaN rows as the
    reference gives them, and zeros under the NaN guard."""
    m = GraphMaker("attention_special")
    q, k, v = m.input(1, 1, 20, 16), m.input(1, 1, 20, 16), m.input(1, 1, 20, 16)
    mask = np.zeros((1, 1, 20, 20), np.float32)
    mask[0, 0, 2, 5] = np.inf
    mask[0, 0, 4, :] = -np.inf
    mask[0, 0, 6, 3] = np.nan
    outs = [_attention(m, q, k, v, m.const(mask), scale=0.25),
            _attention(m, q, k, v, m.const(mask), scale=0.25, nan_to_zero=1)]
    maker = m.output(*outs)
    built = build_cpu(maker.graph)
    got = built.run(maker.feeds, 2)
    want = run_graph(maker.graph, maker.feeds)
    for name, expected in want.items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-5, err_msg=name)
    assert np.isnan(want[maker.graph.output_names[0]][0, 0, 4]).all()


def test_attention_reads_and_writes_through_layouts():
    """The head split/merge transposes folded in: Q, V [B, S, H, D] (q_perm (0, 2, 1, 3)), K [B, S, H, D]
    read as K^T (k_perm (0, 2, 3, 1)) or as rows, the output written [B, S, H, Dv] (y_perm)."""
    m = GraphMaker("attention_layouts")
    q, k, v = m.input(2, 37, 3, 32), m.input(2, 45, 3, 32), m.input(2, 45, 3, 24)
    heads = (0, 2, 1, 3)
    outs = [
        _attention(m, q, k, v, k_transposed=1, scale=0.2, q_perm=heads, k_perm=(0, 2, 3, 1), v_perm=heads,
                   y_perm=heads),
        _attention(m, q, k, v, scale=0.2, q_perm=heads, k_perm=heads, v_perm=heads),
        _attention(m, q, k, v, causal=1, scale=0.2, q_perm=heads, k_perm=heads, v_perm=heads, y_perm=heads),
    ]
    check_against_reference(m.output(*outs), threads=2)


def test_layouts_that_are_not_contiguous_along_the_head_size_are_refused():
    qkv = [_typed(name, (1, 2, 8, 16)) for name in "qkv"]
    node = Node("Attention", qkv, [_typed("y", (1, 2, 8, 16))], domain=DOMAIN)
    node.set_attr("q_perm", (0, 1, 3, 2))
    assert "contiguous along the head size" in check_attention(node)
    node.set_attr("q_perm", (0, 1, 2))
    assert "not a permutation" in check_attention(node)


# --- the standard ONNX Attention (opset 23), imported as lowering::Attention --------------------------

def _onnx_attention(q_shape, k_shape, v_shape, mask=None, opset=23, **attrs):
    from onnx import TensorProto, helper

    names = ["Q", "K", "V"] + (["M"] if mask is not None else [])
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
              for n, s in zip("QKV", (q_shape, k_shape, v_shape))]
    if mask is not None:
        kind = TensorProto.BOOL if mask[0] == "bool" else TensorProto.FLOAT
        inputs.append(helper.make_tensor_value_info("M", kind, mask[1]))
    node = helper.make_node("Attention", names, ["Y"], name="attn", **attrs)
    hidden = v_shape[-1] * attrs.get("q_num_heads", 1) // attrs.get("kv_num_heads", 1)
    y_shape = (*q_shape[:3], v_shape[3]) if len(q_shape) == 4 else (*q_shape[:2], hidden)
    graph = helper.make_graph([node], "attention", inputs, [helper.make_tensor_value_info("Y", 1, y_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _feeds(model, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type == 9:
            mask = rng.random(shape) < 0.7
            mask[..., 0] = True
            feeds[vi.name] = mask
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


ONNX_ATTENTION_CASES = {
    "4d": ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), None, {}),
    "4d_scaled_causal_square": ((1, 2, 5, 8), (1, 2, 5, 8), (1, 2, 5, 8), None,
                                {"scale": 0.3, "is_causal": 1}),
    "4d_causal_top_left": ((2, 2, 3, 4), (2, 2, 6, 4), (2, 2, 6, 4), None, {"is_causal": 1}),
    "4d_float_mask": ((2, 2, 3, 4), (2, 2, 6, 4), (2, 2, 6, 4), ("float", (3, 6)), {}),
    "4d_bool_mask_causal": ((2, 2, 3, 4), (2, 2, 6, 4), (2, 2, 6, 4), ("bool", (2, 1, 3, 6)),
                            {"is_causal": 1}),
    "3d": ((2, 4, 12), (2, 6, 12), (2, 6, 9), ("float", (2, 3, 4, 6)),
           {"q_num_heads": 3, "kv_num_heads": 3}),
    "3d_causal": ((1, 5, 8), (1, 5, 8), (1, 5, 8), None,
                  {"q_num_heads": 2, "kv_num_heads": 2, "is_causal": 1}),
    "4d_gqa_float_mask": ((2, 6, 3, 4), (2, 2, 5, 4), (2, 2, 5, 7), ("float", (2, 6, 3, 5)), {}),
    "3d_gqa_causal": ((2, 5, 24), (2, 5, 8), (2, 5, 6), None,
                      {"q_num_heads": 6, "kv_num_heads": 2, "is_causal": 1}),
}


@pytest.mark.parametrize("case", sorted(ONNX_ATTENTION_CASES))
def test_onnx_attention_matches_onnx_reference(case):
    """Compiled for cpu and run, and through the lowering reference interpreter, against onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    from lowering.onnx.backend import CpuBackend
    from lowering.onnx.importer import import_model

    q, k, v, mask, attrs = ONNX_ATTENTION_CASES[case]
    model = _onnx_attention(q, k, v, mask, **attrs)
    feeds = _feeds(model)
    (want,) = ReferenceEvaluator(model).run(None, feeds)
    graph = import_model(model)
    assert [n.op for n in graph.nodes if n.op == "Attention"] == ["Attention"]
    assert all(n.op != "Attention" or n.domain == DOMAIN for n in graph.nodes)
    np.testing.assert_allclose(run_graph(graph, feeds)[graph.output_names[0]], want, rtol=1e-5, atol=1e-5)
    (got,) = CpuBackend.prepare(model).run([feeds[i.name] for i in model.graph.input])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_onnx_attention_fully_masked_row_is_zero():
    model = _onnx_attention((1, 1, 2, 4), (1, 1, 3, 4), (1, 1, 3, 4), ("bool", (2, 3)))
    feeds = _feeds(model)
    feeds["M"] = np.array([[True, False, True], [False, False, False]])
    from lowering.onnx.backend import CpuBackend

    (got,) = CpuBackend.prepare(model).run([feeds["Q"], feeds["K"], feeds["V"], feeds["M"]])
    assert np.all(got[0, 0, 1] == 0) and np.all(np.isfinite(got))


@pytest.mark.parametrize("attrs, inputs", [({"softcap": 2.0}, 3), ({"qk_matmul_output_mode": 1}, 3), ({}, 6)])
def test_onnx_attention_features_beyond_lowering_attention_expand(attrs, inputs):
    """softcap, the QK output mode and past KV are not lowering::Attention's: the node is replaced by its
    ONNX function body (tests/onnx/test_expand.py checks the numbers against ONNX Runtime)."""
    from lowering.onnx.importer import import_model

    model = _onnx_attention((1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4), **attrs)
    if inputs == 6:
        from onnx import TensorProto, helper

        model.graph.node[0].input.extend(["", "PK", "PV"])
        for n in ("PK", "PV"):
            model.graph.input.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, (1, 2, 2, 4)))
    lines = []
    graph = import_model(model, log=lines.append)
    assert lines == ["expanded 1 node(s) into their ONNX function bodies: Attention x1"]
    assert not any(n.op == "Attention" for n in graph.nodes) and any(n.op == "Softmax" for n in graph.nodes)


def test_onnx_attention_heads_not_a_multiple_refused():
    from lowering.errors import LoweringError
    from lowering.onnx.importer import import_model

    model = _onnx_attention((1, 6, 12), (1, 6, 12), (1, 6, 12), q_num_heads=3, kv_num_heads=2)
    with pytest.raises(LoweringError, match="3 query heads over 2 key/value heads is not supported"):
        import_model(model)

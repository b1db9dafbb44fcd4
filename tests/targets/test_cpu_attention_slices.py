"""lowering::Attention reading Q, K and V as parts of one tensor (``q_slice`` / ``k_slice`` / ``v_slice``
``[axis, start, stop]``, then ``*_perm``): the cpu kernel against the reference interpreter and an
independent numpy formula, the reference's slices against explicit copies, and a GPT-2 attention block
exported as ONNX, compiled whole (the Split folded away) against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import runtime
from lowering.driver import CompileOptions, compile_model
from lowering.ir import DType, Node, TensorType, Value
from lowering.opinfo import DOMAIN
from lowering.reference import evaluate_node
from targets.cpu.emit_transformer import check_attention

from .cpu_harness import GraphMaker, check_against_reference

pytestmark = pytest.mark.target_cpu

HEADS = (0, 2, 1, 3)


def _attention(m: GraphMaker, x, **attrs):
    return m.node("Attention", x, x, x, domain=DOMAIN, **attrs)


def numpy_attention(q, k, v, scale, causal=False):
    """softmax(scale q k^T) v in float64 over [B, H, S, D] operands."""
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) * scale
    if causal:
        sq, sk = s.shape[-2:]
        s = np.where(np.tril(np.ones((sq, sk), bool), sk - sq), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v.astype(np.float64)


@pytest.mark.parametrize("isa", [None, "x86-64-v3", "x86-64-v2"])  # 16, 8 and 4 floats a vector
def test_sliced_operands_match_the_reference_and_the_formula(isa):
    m = GraphMaker("attention_slices", seed=4)
    # GPT-2: one [B, S, 3H, D] view of the qkv projection, Q / K / V the head ranges, read [B, H, S, D]
    x = m.input(2, 37, 9, 32)
    fused = _attention(m, x, k_transposed=1, causal=1, scale=0.2, q_slice=(2, 0, 3), k_slice=(2, 3, 6),
                       v_slice=(2, 6, 9), q_perm=HEADS, k_perm=(0, 2, 3, 1), v_perm=HEADS, y_perm=HEADS)
    # parts along the head size (the innermost axis), K as rows, uneven V
    y = m.input(1, 2, 45, 88)
    inner = _attention(m, y, scale=0.3, q_slice=(3, 0, 32), k_slice=(3, 32, 64), v_slice=(3, 64, 88))
    # K^T sliced along the keys (contiguous along them) and Q, V in separate tensors' parts
    z = m.input(1, 2, 32, 60)
    kt_part = m.node("Attention", m.input(1, 2, 20, 64), z, m.input(1, 2, 57, 24), domain=DOMAIN,
                     k_transposed=1, scale=0.25, q_slice=(3, 16, 48), k_slice=(3, 3, 60))
    maker = m.output(fused, inner, kt_part)
    built = check_against_reference(maker, threads=2, **({} if isa is None else {"isa": isa}))
    got = built.run(maker.feeds, threads=1)
    names = maker.graph.output_names

    xs = np.transpose(maker.feeds[x.name], HEADS)
    want = numpy_attention(xs[:, 0:3], xs[:, 3:6], xs[:, 6:9], 0.2, causal=True)
    np.testing.assert_allclose(got[names[0]], np.transpose(want, HEADS), rtol=1e-4, atol=1e-5)
    ys = maker.feeds[y.name]
    want = numpy_attention(ys[..., 0:32], ys[..., 32:64], ys[..., 64:88], 0.3)
    np.testing.assert_allclose(got[names[1]], want, rtol=1e-4, atol=1e-5)
    two = built.run(maker.feeds, threads=2)
    for name in names:
        np.testing.assert_array_equal(got[name], two[name])


def test_reference_slices_equal_copies_bit_for_bit():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 16, 6, 8)).astype(np.float32)
    attrs = {"k_transposed": 1, "causal": 1, "scale": 0.35, "q_perm": HEADS, "k_perm": (0, 2, 3, 1),
             "v_perm": HEADS}
    sliced = Node("Attention", [], [Value("y")], domain=DOMAIN)
    plain = Node("Attention", [], [Value("y")], domain=DOMAIN)
    for key, value in attrs.items():
        sliced.set_attr(key, value)
        plain.set_attr(key, value)
    for name, bounds in zip("qkv", ((2, 0, 2), (2, 2, 4), (2, 4, 6))):
        sliced.set_attr(f"{name}_slice", bounds)
    got = evaluate_node(sliced, [x, x, x])[0]
    want = evaluate_node(plain, [np.ascontiguousarray(p) for p in np.split(x, 3, axis=2)])[0]
    np.testing.assert_array_equal(got, want)


def _typed(name, shape):
    return Value(name, TensorType(DType.FLOAT32, shape))


def test_bad_slices_are_refused_with_a_reason():
    x = _typed("x", (1, 8, 6, 16))
    node = Node("Attention", [x, x, x], [_typed("y", (1, 2, 8, 16))], domain=DOMAIN)
    node.set_attr("q_slice", (2, 4, 8))
    assert "q_slice [2, 4, 8] is not a part of [1, 8, 6, 16]" in check_attention(node)
    node.set_attr("q_slice", (5, 0, 1))
    assert "q_slice" in check_attention(node)


# --- a GPT-2 block end to end ----------------------------------------------------------------------

B, S, H, D = 1, 24, 4, 16
E = H * D


def gpt2_block_model(path):
    """x -> c_attn (MatMul + Add) -> Split -> Reshape/Transpose heads -> causal attention -> merge, as
    torch's legacy exporter writes GPT-2."""
    rng = np.random.default_rng(0)

    def const(name, array):
        return helper.make_tensor(name, TensorProto.FLOAT if array.dtype == np.float32 else
                                  (TensorProto.INT64 if array.dtype == np.int64 else TensorProto.BOOL),
                                  array.shape, array.reshape(-1).tolist())

    inits = [
        const("w", (rng.standard_normal((E, 3 * E)) * 0.2).astype(np.float32)),
        const("b", rng.standard_normal(3 * E).astype(np.float32)),
        const("sizes", np.array([E, E, E], np.int64)),
        const("heads", np.array([B, S, H, D], np.int64)),
        const("merged", np.array([B, S, E], np.int64)),
        const("scale", np.array(np.sqrt(D), np.float32)),
        const("causal", np.tril(np.ones((S, S), bool)).reshape(1, 1, S, S)),
        const("fill", np.array(np.finfo(np.float32).min, np.float32)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["qkv"]),
        helper.make_node("Split", ["qkv", "sizes"], ["q0", "k0", "v0"], axis=2),
    ]
    for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [helper.make_node("Reshape", [f"{name}0", "heads"], [f"{name}1"]),
                  helper.make_node("Transpose", [f"{name}1"], [f"{name}2"], perm=perm)]
    nodes += [
        helper.make_node("MatMul", ["q2", "k2"], ["s0"]),
        helper.make_node("Div", ["s0", "scale"], ["s1"]),
        helper.make_node("Where", ["causal", "s1", "fill"], ["s2"]),
        helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v2"], ["o"]),
        helper.make_node("Transpose", ["o"], ["o1"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["o1", "merged"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "gpt2_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  [B, S, E])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, E])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_gpt2_block_reads_qkv_in_place_and_matches_onnxruntime(tmp_path):
    path = gpt2_block_model(tmp_path / "gpt2_block.onnx")
    result = compile_model(path, output=tmp_path / "m.lwr",
                           options=CompileOptions(targets=("cpu",), verify_each=True))
    ops = result.report["targets"]["cpu"]["ops"]
    assert ops.get("lowering::Attention") == 1
    assert "Split" not in ops and "Transpose" not in ops
    feed = {"x": np.random.default_rng(1).standard_normal((B, S, E)).astype(np.float32)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    for threads in (1, 2):
        got = runtime.load(tmp_path / "m.lwr", threads=threads).run(None, feed)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

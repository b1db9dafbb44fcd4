"""ONNX function-body expansion in the importer (``lowering/onnx/expand.py``).

Ops the compiler has no native import of (MeanVarianceNormalization, RotaryEmbedding, SwiGLU) and the
Attention features ``lowering::Attention`` does not take (past/present KV, softcap) are replaced by the
function body onnx defines for them; the compiled model (cpu target) must match ONNX Runtime, or onnx's
ReferenceEvaluator where ONNX Runtime lacks the opset. A supported Attention still imports as one fused
node, and a model with nothing to expand is left as it was, without a shape-inference run.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from lowering.errors import LoweringError
from lowering.onnx import expand
from lowering.onnx.backend import CpuBackend
from lowering.onnx.importer import _imports_natively, _is_supported, import_model

F = TensorProto.FLOAT


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, list[int]]],
           outputs: dict[str, tuple[int, list[int]]], opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
                              [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def _feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type == TensorProto.INT64:
            feeds[vi.name] = rng.integers(0, 6, shape).astype(np.int64)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _compiled(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return list(CpuBackend.run_model(model, [feeds[i.name] for i in model.graph.input]))


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _assert_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def _expanded_ops(model: onnx.ModelProto) -> dict[str, int]:
    lines: list[str] = []
    graph = import_model(model, name="m", log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("expanded "), lines
    return graph.op_counts()


# ------------------------------------------------------------------------------------ parity, cpu target


@pytest.mark.target_cpu
@pytest.mark.parametrize("opset", [13, 21])
def test_mean_variance_normalization_matches_onnxruntime(opset):
    # opset 21: the body is written for opset 18 (its Constant changed since) and is version-converted
    node = helper.make_node("MeanVarianceNormalization", ["X"], ["Y"], name="mvn")
    model = _model([node], {"X": (F, [2, 3, 4, 5])}, {"Y": (F, [2, 3, 4, 5])}, opset)
    feeds = _feeds(model)
    assert "MeanVarianceNormalization" not in _expanded_ops(model)
    _assert_close(_compiled(model, feeds), _onnxruntime(model, feeds))


@pytest.mark.target_cpu
@pytest.mark.parametrize("interleaved, position_ids", [(0, False), (1, True)])
def test_rotary_embedding_matches_onnxruntime(interleaved, position_ids):
    inputs = {"X": (F, [2, 4, 3, 8])}
    if position_ids:
        inputs.update({"cos": (F, [6, 4]), "sin": (F, [6, 4]), "pos": (TensorProto.INT64, [2, 3])})
    else:
        inputs.update({"cos": (F, [2, 3, 4]), "sin": (F, [2, 3, 4])})
    node = helper.make_node("RotaryEmbedding", list(inputs), ["Y"], name="rope", interleaved=interleaved)
    model = _model([node], inputs, {"Y": (F, [2, 4, 3, 8])}, 23)
    feeds = _feeds(model)
    _assert_close(_compiled(model, feeds), _onnxruntime(model, feeds))


@pytest.mark.target_cpu
def test_attention_with_past_present_and_softcap_matches_onnxruntime():
    # grouped-query (4 query heads over 2 key/value heads), an additive mask over past + new keys
    node = helper.make_node("Attention", ["Q", "K", "V", "mask", "past_k", "past_v"],
                            ["Y", "present_k", "present_v"], name="attn", softcap=2.0)
    model = _model([node], {"Q": (F, [2, 4, 3, 8]), "K": (F, [2, 2, 5, 8]), "V": (F, [2, 2, 5, 8]),
                            "mask": (F, [3, 11]), "past_k": (F, [2, 2, 6, 8]), "past_v": (F, [2, 2, 6, 8])},
                   {"Y": (F, [2, 4, 3, 8]), "present_k": (F, [2, 2, 11, 8]), "present_v": (F, [2, 2, 11, 8])},
                   23)
    feeds = _feeds(model)
    ops = _expanded_ops(model)
    assert "lowering::Attention" not in ops and ops["Softmax"] == 1 and ops["Tanh"] == 1  # softcap: tanh
    _assert_close(_compiled(model, feeds), _onnxruntime(model, feeds))


@pytest.mark.target_cpu
def test_attention_3d_causal_with_omitted_mask_and_output_matches_onnxruntime():
    # an omitted optional input in the middle (attn_mask) and an omitted optional output (present_key)
    node = helper.make_node("Attention", ["Q", "K", "V", "", "past_k", "past_v"], ["Y", "", "present_v"],
                            name="attn", is_causal=1, q_num_heads=4, kv_num_heads=2, scale=0.25)
    model = _model([node], {"Q": (F, [1, 3, 32]), "K": (F, [1, 3, 16]), "V": (F, [1, 3, 16]),
                            "past_k": (F, [1, 2, 4, 8]), "past_v": (F, [1, 2, 4, 8])},
                   {"Y": (F, [1, 3, 32]), "present_v": (F, [1, 2, 7, 8])}, 24)
    feeds = _feeds(model, seed=1)
    # ONNX Runtime refuses a past_key without present_key: it runs the same node with every output
    full = onnx.ModelProto()
    full.CopyFrom(model)
    full.graph.node[0].output[1] = "present_k"
    full.graph.output.insert(1, helper.make_tensor_value_info("present_k", F, [1, 2, 7, 8]))
    y, _, present_v = _onnxruntime(full, feeds)
    _assert_close(_compiled(model, feeds), [y, present_v])


@pytest.mark.target_cpu
def test_swiglu_matches_reference_evaluator():
    # SwiGLU is opset 28, which the installed ONNX Runtime does not load: onnx's own evaluator decides
    node = helper.make_node("SwiGLU", ["A", "B"], ["Y"], name="glu", alpha=1.5)
    model = _model([node], {"A": (F, [4, 8]), "B": (F, [4, 8])}, {"Y": (F, [4, 8])}, 28)
    feeds = _feeds(model)
    _assert_close(_compiled(model, feeds), ReferenceEvaluator(model).run(None, feeds))


# ------------------------------------------------------------------------------------ the mechanics


def _supported(node: onnx.NodeProto) -> bool:
    return True


@pytest.mark.unit
def test_nested_expansion_binds_attributes_through_both_levels():
    # refusing Swish too makes SwiGLU's body (Swish<alpha=@alpha>, Mul) expand once more, into Swish's
    # own body: alpha must reach the innermost node, and every new name carries the node's as prefix
    node = helper.make_node("SwiGLU", ["A", "B"], ["Y"], name="glu", alpha=0.75)
    model = _model([node], {"A": (F, [3, 5]), "B": (F, [3, 5])}, {"Y": (F, [3, 5])}, 28)
    feeds = _feeds(model)
    want = ReferenceEvaluator(model).run(None, feeds)
    expanded = onnx.ModelProto()
    expanded.CopyFrom(model)
    counts = expand.expand_functions(expanded, "m", lambda n, types: n.op_type not in ("SwiGLU", "Swish"),
                                     _supported)
    assert counts == {"SwiGLU": 1}
    ops = [n.op_type for n in expanded.graph.node]
    assert "SwiGLU" not in ops and "Swish" not in ops, ops
    assert all(n.name.startswith("glu/") for n in expanded.graph.node)
    internal = {o for n in expanded.graph.node for o in n.output} - {"Y"}
    assert internal and all(o.startswith("glu/") for o in internal), internal
    onnx.checker.check_model(expanded)
    _assert_close(ReferenceEvaluator(expanded).run(None, feeds), want)


@pytest.mark.unit
def test_body_with_unsupported_ops_is_one_line_naming_the_node():
    node = helper.make_node("MeanVarianceNormalization", ["X"], ["Y"], name="mvn")
    model = _model([node], {"X": (F, [2, 3, 4, 5])}, {"Y": (F, [2, 3, 4, 5])}, 18)
    with pytest.raises(LoweringError) as err:
        expand.expand_functions(model, "m.onnx", lambda n, types: n.op_type != "MeanVarianceNormalization",
                                lambda n: n.op_type not in ("Pow", "Sqrt"))
    assert str(err.value) == ("m.onnx: node 'mvn' (MeanVarianceNormalization) expanded into its ONNX "
                              "function body, which needs unsupported ops: Pow, Sqrt")


@pytest.mark.unit
def test_linear_attention_body_scan_is_unrolled():
    # LinearAttention (opset 27) is defined by a body that runs a Scan: expanded, then unrolled
    try:
        onnx.defs.get_schema("LinearAttention", 27)
    except Exception:
        pytest.skip("this onnx has no LinearAttention")
    node = helper.make_node("LinearAttention", ["Q", "K", "V"], ["Y", "state"], name="la", q_num_heads=2,
                            kv_num_heads=2, update_rule="linear")
    model = _model([node], {"Q": (F, [1, 3, 8]), "K": (F, [1, 3, 8]), "V": (F, [1, 3, 8])},
                   {"Y": (F, [1, 3, 8]), "state": (F, [1, 2, 4, 4])}, 27)
    lines: list[str] = []
    graph = import_model(model, name="m.onnx", log=lines.append)
    assert lines == ["expanded 1 node(s) into their ONNX function bodies: LinearAttention x1",
                     "unrolled 1 control-flow node(s) (If, Loop, Scan) into plain nodes"]
    assert "Scan" not in graph.op_counts()


@pytest.mark.unit
def test_log_line_counts_expanded_nodes_and_unnamed_nodes_get_distinct_names():
    nodes = [helper.make_node("MeanVarianceNormalization", ["X"], ["H"]),
             helper.make_node("MeanVarianceNormalization", ["H"], ["Y"])]
    model = _model(nodes, {"X": (F, [2, 3, 4, 5])}, {"Y": (F, [2, 3, 4, 5])}, 18)
    lines: list[str] = []
    graph = import_model(model, name="m", log=lines.append)
    assert lines == ["expanded 2 node(s) into their ONNX function bodies: MeanVarianceNormalization x2"]
    assert graph.op_counts()["ReduceMean"] == 4
    names = [n.name for n in graph.nodes]
    assert len(names) == len(set(names))


@pytest.mark.unit
def test_supported_attention_keeps_the_fused_import(monkeypatch):
    def no_inference(*args, **kwargs):
        raise AssertionError("shape inference ran for a model with nothing to expand")

    node = helper.make_node("Attention", ["Q", "K", "V"], ["Y"], name="attn", is_causal=1)
    model = _model([node], {"Q": (F, [1, 2, 4, 8]), "K": (F, [1, 2, 4, 8]), "V": (F, [1, 2, 4, 8])},
                   {"Y": (F, [1, 2, 4, 8])}, 23)
    before = model.SerializeToString()
    with monkeypatch.context() as patch:  # the import's own (strict) shape inference runs later
        patch.setattr(expand.shape_inference, "infer_shapes", no_inference)
        assert expand.expand_functions(model, "m", _imports_natively, _is_supported) == {}
    assert model.SerializeToString() == before
    lines: list[str] = []
    graph = import_model(model, name="m", log=lines.append)
    assert graph.op_counts() == {"lowering::Attention": 1} and lines == []


@pytest.mark.unit
def test_model_without_expandable_ops_is_left_as_it_was(monkeypatch):
    def no_inference(*args, **kwargs):
        raise AssertionError("shape inference ran for a model with nothing to expand")

    monkeypatch.setattr(expand.shape_inference, "infer_shapes", no_inference)
    w = helper.make_tensor("W", F, [4, 4], np.ones(16, np.float32))
    nodes = [helper.make_node("MatMul", ["X", "W"], ["H"]), helper.make_node("Relu", ["H"], ["Y"]),
             helper.make_node("Attention", ["Y", "Y", "Y"], ["Z"], name="attn_from_inputs")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", F, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("Z", F, [1, 1, 4, 4])], [w])
    graph.value_info.append(helper.make_tensor_value_info("Y", F, [1, 1, 4, 4]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    before = model.SerializeToString()
    assert expand.expand_functions(model, "m", _imports_natively, _is_supported) == {}
    assert model.SerializeToString() == before

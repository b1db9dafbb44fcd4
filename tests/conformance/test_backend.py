"""The ONNX backend test suite (``onnx.backend.test.BackendTest``) on the cpu target, bounded for CI.

``OnnxBackendNodeModelTest`` below is onnx's own generated test class, run by pytest: each test compiles
the node test's model with ``lowering.onnx.backend.CpuBackend`` and checks the outputs the way every ONNX
backend is checked. CI runs ``CI_SLICE``, a fixed spread over the op families the cpu target supports,
all of which must pass; ``LOWERING_CONFORMANCE=all`` runs every node test that is not excluded (in this
process: a crash in generated code would end the run, which ``python -m tests.conformance.run`` survives;
it also writes the table in docs/conformance.md).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import onnx.backend.test
import pytest
from onnx import TensorProto, helper

from lowering.errors import LoweringError
from lowering.onnx.backend import CpuBackend

from .cases import node_cases, run_case
from .exclusions import EXCLUDED, REASON_KEYS, excluded_reason
from .run import missing_ops, run_tests, write_report

pytestmark = [pytest.mark.target_cpu]

#: Node tests CI runs, a few per op family: elementwise (float, int8/uint8, int32/int64, bool), broadcast,
#: reductions, pooling, GEMM/MatMul, data movement, indexing, normalisation and attention-style patterns
#: (onnx's function-expanded tests), quantization, and models at opsets 7 to 28. All must pass.
CI_SLICE = (
    "test_abs", "test_add_bcast", "test_add_uint8", "test_and_bcast4v3d", "test_argmax_keepdims_example",
    "test_argmin_default_axis_random_select_last_index", "test_averagepool_1d_default",
    "test_averagepool_2d_pads", "test_ceil", "test_clip_default_inbounds", "test_concat_2d_axis_negative_1",
    "test_constant", "test_depthtospace_crd_mode_example_expanded", "test_div_int32_trunc",
    "test_dynamicquantizelinear", "test_equal_bcast", "test_erf", "test_exp", "test_expand_dim_changed",
    "test_flatten_axis2", "test_gather_2d_indices", "test_gather_elements_negative_indices",
    "test_gathernd_example_int32_batch_dim1", "test_gelu_tanh_1", "test_gemm_all_attributes",
    "test_globalaveragepool", "test_globalmaxpool", "test_greater_equal_bcast", "test_identity",
    "test_isinf_negative", "test_isnan", "test_layer_normalization_3d_axis0_epsilon_expanded",
    "test_leakyrelu", "test_less_equal_bcast_expanded", "test_log", "test_logsoftmax_axis_1",
    "test_matmul_4d", "test_matmulinteger", "test_max_int64", "test_maxpool_2d_dilations",
    "test_min_example", "test_mod_mixed_sign_int32", "test_mul_int8", "test_mvn_expanded", "test_neg",
    "test_nllloss_NCd1_weight_expanded", "test_not_3d", "test_or_bcast4v2d", "test_pow_types_float32_int64",
    "test_reciprocal", "test_reduce_max_default_axes_keepdims_random", "test_relu",
    "test_reshape_negative_dim", "test_rms_normalization_2d_axis0_expanded", "test_rotary_embedding_expanded",
    "test_round", "test_shape_clip_end", "test_sigmoid", "test_sign", "test_size",
    "test_softmax_axis_1_expanded", "test_spacetodepth_example_expanded", "test_split_equal_parts_2d_opset13",
    "test_sqrt", "test_squeeze_negative_axes", "test_sub_bcast", "test_tanh", "test_tile",
    "test_transpose_all_permutations_3", "test_tril", "test_triu_square", "test_unsqueeze_three_axes",
    "test_where_long_example", "test_xor_bcast3v1d",
    # issue 8: activations and trigonometry, variadic Sum/Mean, bitwise ops, reductions (their axes fed at
    # run time), losses, normalisations, scatters, generators and run-time operands of data movement
    "test_elu", "test_cos", "test_selu_example", "test_prelu_broadcast", "test_mean_example",
    "test_bitshift_left_int8_overflow", "test_bitwise_xor_ui8_bcast_4v3d", "test_reduce_l2_keep_dims_example",
    "test_reduce_sum_keepdims_random", "test_reduce_log_sum_exp_empty_set", "test_hardmax_axis_1",
    "test_l2normalization_axis_0", "test_onehot_negative_indices", "test_spacetodepth_crd_mode_example",
    "test_scatter_elements_with_duplicate_indices", "test_scatternd_max", "test_rms_normalization_2d_axis1",
    "test_group_normalization_example", "test_nllloss_NCd1_weight_ii", "test_sce_mean_weight_ii_log_prob",
    "test_dropout_default_mask", "test_constantofshape_int_zeros", "test_range_int32_type_negative_delta",
    "test_slice_neg_steps", "test_clip_splitbounds", "test_cumprod_1d_int32_exclusive",
    "test_eyelike_without_dtype", "test_layer_normalization_2d_axis_negative_1_expanded",
    # LayerNormalization's optional outputs Mean and InvStdDev
    "test_layer_normalization_4d_axis_negative_2", "test_layer_normalization_3d_axis1_epsilon",
    # the standard Attention as lowering::Attention: 4-D and 3-D, masks, causal, fully masked rows, GQA
    "test_attention_4d_attn_mask_bool", "test_attention_3d_diff_heads_sizes_causal",
    "test_attention_4d_attn_mask_3d_causal", "test_attention_23_boolmask_fullymasked_row_nan_robustness",
    "test_attention_4d_gqa_attn_mask", "test_attention_3d_gqa_causal",
)

RUN_ALL = os.environ.get("LOWERING_CONFORMANCE") == "all"


def _backend_test_class():
    """onnx's generated node test class, reduced to the cpu tests to run here."""
    node_cases()  # builds the node tests once, quietly (onnx's case modules warn as they compute)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suite = onnx.backend.test.BackendTest(CpuBackend, __name__)
    cls = suite.test_cases["OnnxBackendNodeModelTest"]
    for attr in [a for a in vars(cls) if a.startswith("test_")]:
        base = attr.removesuffix("_cpu")
        keep = attr.endswith("_cpu") and excluded_reason(base) is None and (RUN_ALL or base in CI_SLICE)
        if not keep:
            delattr(cls, attr)
    return cls


OnnxBackendNodeModelTest = _backend_test_class()


def test_ci_slice_is_collected_from_onnx_and_not_excluded():
    collected = {a.removesuffix("_cpu") for a in vars(OnnxBackendNodeModelTest) if a.startswith("test_")}
    assert set(CI_SLICE) <= collected
    assert [n for n in CI_SLICE if excluded_reason(n)] == []


def _model_facts(model: onnx.ModelProto) -> set[str]:
    """Domains, op types (subgraphs included), value kinds and element type names of a test model."""
    facts: set[str] = set()

    def kinds(tp: onnx.TypeProto):
        which = tp.WhichOneof("value")
        facts.add(which)
        if which == "tensor_type":
            facts.add(TensorProto.DataType.Name(tp.tensor_type.elem_type))
        elif which == "sequence_type":
            kinds(tp.sequence_type.elem_type)
        elif which == "optional_type":
            kinds(tp.optional_type.elem_type)

    def walk(graph: onnx.GraphProto):
        for vi in list(graph.input) + list(graph.output):
            kinds(vi.type)
        for init in graph.initializer:
            facts.add(TensorProto.DataType.Name(init.data_type))
        for node in graph.node:
            facts.update({node.op_type, node.domain})
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(sub)

    walk(model.graph)
    return facts


#: what a model must contain to be excluded for each reason (any of these facts)
_REASON_FACTS = {
    "training": {"ai.onnx.preview.training"},
    "ml": {"ai.onnx.ml"},
    "string": {"STRING"},
    "sequence/optional": {"sequence_type", "optional_type", "map_type", "sparse_tensor_type",
                          "SplitToSequence", "ConcatFromSequence", "SequenceEmpty", "SequenceConstruct",
                          "Optional", "OptionalHasElement", "OptionalGetElement"},
}


def test_exclusions_name_existing_tests_for_their_stated_reason():
    cases = node_cases()
    listed = [name for names in EXCLUDED.values() for name in names]
    assert [n for n in listed if n not in cases] == []  # every excluded test exists
    assert len(listed) == len(set(listed))  # and is listed once
    assert set(EXCLUDED) == set(REASON_KEYS)
    for reason, names in EXCLUDED.items():
        key = REASON_KEYS[reason]
        wanted = _REASON_FACTS.get(key, set(key.split()))  # dtype reasons: the type names
        wrong = [n for n in names if not _model_facts(cases[n].model) & wanted]
        assert wrong == [], f"{reason}: these tests do not have {sorted(wanted)}"


def test_unsupported_op_is_a_compile_failure_naming_the_op():
    outcome = run_case(node_cases()["test_image_decoder_decode_bmp_rgb"], CpuBackend)
    assert (outcome.status, outcome.stage) == ("failed", "compile")
    assert "unsupported ops: ImageDecoder" in outcome.error
    assert missing_ops(outcome.error) == ["ImageDecoder"]
    with pytest.raises(LoweringError, match="ImageDecoder"):
        CpuBackend.prepare(node_cases()["test_image_decoder_decode_bmp_rgb"].model)


def test_backend_api_prepare_run_model_run_node():
    assert CpuBackend.supports_device("CPU") and not CpuBackend.supports_device("CUDA")
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    node = helper.make_node("Relu", ["x"], ["y"])
    (y,) = CpuBackend.run_node(node, [x])
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Mul", ["a", "b"], ["p"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 2]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["n", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rep = CpuBackend.prepare(model)  # symbolic batch: compiled per input shape on run
    try:
        for rows in (2, 3):
            a = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
            p, s = rep.run([a, a + 1])  # outputs in the model's order
            np.testing.assert_array_equal(p, a * (a + 1))
            np.testing.assert_array_equal(s, a + a + 1)
        (s,) = CpuBackend.run_model(model, {"a": x, "b": x})[1:]
        np.testing.assert_array_equal(s, x + x)
    finally:
        rep.close()


def test_runner_survives_a_crash_and_writes_the_table(tmp_path, monkeypatch):
    """The full-suite runner: a test that kills its process is a ``crash`` failure and the run goes on in
    a new worker; an unsupported op is a failure naming the op; the table counts each."""
    monkeypatch.setenv("LOWERING_CONFORMANCE_CRASH_ON", "test_relu")
    names = ["test_abs", "test_relu", "test_image_decoder_decode_bmp_rgb", "test_sigmoid"]
    results = run_tests(names, ["inputs"], jobs=2, timeout=120)["inputs"]
    assert {n: o.status for n, o in results.items()} == {
        "test_abs": "passed", "test_relu": "failed", "test_image_decoder_decode_bmp_rgb": "failed",
        "test_sigmoid": "passed"}
    assert results["test_relu"].stage == "crash" and "SIGSEGV" in results["test_relu"].error
    assert results["test_image_decoder_decode_bmp_rgb"].stage == "compile"
    excluded = {"test_cast_FLOAT_to_FLOAT8E4M3FN": excluded_reason("test_cast_FLOAT_to_FLOAT8E4M3FN")}
    text = write_report(tmp_path / "conformance.md", "cpu", names + list(excluded), excluded,
                        {"inputs": results}, 1.0)
    assert "| cpu | fed at run time | 5 | 2 | 2 | 1 |" in text
    assert "| ImageDecoder | 1 |" in text
    assert "| 8-, 6- and 4-bit floats | 1 |" in text
    assert "the test process died of signal SIGSEGV | test_relu |" in text

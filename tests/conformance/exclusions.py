"""The node tests the conformance run does not run, grouped by reason. An exclusion list, not an
allow-list: every test not named here runs, and a test that fails for any other reason (an op not yet
supported, an input that must be a constant on the cpu target, a wrong result) is reported as a failure in
docs/conformance.md. ``tests/conformance/test_backend.py`` checks that every name exists and that each
test really has the property its reason states (the check reads the test's model).

The lists were written from the models themselves (their domains, ops and graph input/output/constant
element types), in the order of the reasons below: a test is listed under the first reason that applies.
"""

from __future__ import annotations

#: reason -> the tests excluded for it
EXCLUDED: dict[str, tuple[str, ...]] = {
    # ai.onnx.preview.training (Adagrad, Adam, Momentum, Gradient): optimizer steps, not inference.
    'training ops': (
        'test_adagrad', 'test_adagrad_multiple', 'test_adam', 'test_adam_multiple', 'test_momentum',
        'test_momentum_multiple', 'test_nesterov_momentum',
    ),
    # the classical-ML domain (tree ensembles, label encoders, ...): out of scope for a tensor compiler.
    'ai.onnx.ml ops': (
        'test_ai_onnx_ml_array_feature_extractor', 'test_ai_onnx_ml_binarizer',
        'test_ai_onnx_ml_label_encoder_string_int', 'test_ai_onnx_ml_label_encoder_string_int_no_default',
        'test_ai_onnx_ml_label_encoder_tensor_mapping',
        'test_ai_onnx_ml_label_encoder_tensor_value_only_mapping',
        'test_ai_onnx_ml_tree_ensemble_set_membership', 'test_ai_onnx_ml_tree_ensemble_single_tree',
    ),
    # string tensors (StringNormalizer, RegexFullMatch, string Cast/Equal, ...): no string type in the IR.
    'string tensors': (
        'test_equal_string', 'test_equal_string_broadcast', 'test_regex_full_match_basic',
        'test_regex_full_match_email_domain', 'test_regex_full_match_empty', 'test_string_concat',
        'test_string_concat_broadcasting', 'test_string_concat_empty_string', 'test_string_concat_utf8',
        'test_string_concat_zero_dimensional', 'test_string_split_basic',
        'test_string_split_consecutive_delimiters', 'test_string_split_empty_string_delimiter',
        'test_string_split_empty_tensor', 'test_string_split_maxsplit', 'test_string_split_no_delimiter',
        'test_strnormalizer_export_monday_casesensintive_lower',
        'test_strnormalizer_export_monday_casesensintive_nochangecase',
        'test_strnormalizer_export_monday_casesensintive_upper',
        'test_strnormalizer_export_monday_empty_output',
        'test_strnormalizer_export_monday_insensintive_upper_twodim',
        'test_strnormalizer_nostopwords_nochangecase',
    ),
    # sequence and optional values (Sequence*, SplitToSequence, Optional*, ...): the IR holds tensors only.
    'sequence and optional types': (
        'test_identity_opt', 'test_identity_sequence', 'test_if_opt', 'test_if_seq', 'test_loop13_seq',
        'test_loop16_seq_none', 'test_optional_get_element_optional_sequence',
        'test_optional_get_element_optional_tensor', 'test_optional_get_element_sequence',
        'test_optional_get_element_tensor', 'test_optional_has_element_empty_no_input_name_optional_input',
        'test_optional_has_element_empty_no_input_name_tensor_input',
        'test_optional_has_element_empty_no_input_optional_input',
        'test_optional_has_element_empty_no_input_tensor_input',
        'test_optional_has_element_empty_optional_input', 'test_optional_has_element_optional_input',
        'test_optional_has_element_tensor_input', 'test_sequence_insert_at_back',
        'test_sequence_insert_at_front', 'test_sequence_map_add_1_sequence_1_tensor',
        'test_sequence_map_add_1_sequence_1_tensor_expanded', 'test_sequence_map_add_2_sequences',
        'test_sequence_map_add_2_sequences_expanded', 'test_sequence_map_extract_shapes',
        'test_sequence_map_extract_shapes_expanded', 'test_sequence_map_identity_1_sequence',
        'test_sequence_map_identity_1_sequence_1_tensor',
        'test_sequence_map_identity_1_sequence_1_tensor_expanded',
        'test_sequence_map_identity_1_sequence_expanded', 'test_sequence_map_identity_2_sequences',
        'test_sequence_map_identity_2_sequences_expanded', 'test_split_to_sequence_1',
        'test_split_to_sequence_2', 'test_split_to_sequence_nokeepdims',
    ),
    # float8/float6/float4 tensors: not IR types.
    '8-, 6- and 4-bit floats': (
        'test_cast_FLOAT16_to_FLOAT4E2M1', 'test_cast_FLOAT16_to_FLOAT8E4M3FN',
        'test_cast_FLOAT16_to_FLOAT8E4M3FNUZ', 'test_cast_FLOAT16_to_FLOAT8E5M2',
        'test_cast_FLOAT16_to_FLOAT8E5M2FNUZ', 'test_cast_FLOAT4E2M1_to_FLOAT',
        'test_cast_FLOAT4E2M1_to_FLOAT16', 'test_cast_FLOAT8E4M3FNUZ_to_FLOAT',
        'test_cast_FLOAT8E4M3FNUZ_to_FLOAT16', 'test_cast_FLOAT8E4M3FN_to_FLOAT',
        'test_cast_FLOAT8E4M3FN_to_FLOAT16', 'test_cast_FLOAT8E5M2FNUZ_to_FLOAT',
        'test_cast_FLOAT8E5M2FNUZ_to_FLOAT16', 'test_cast_FLOAT8E5M2_to_FLOAT',
        'test_cast_FLOAT8E5M2_to_FLOAT16', 'test_cast_FLOAT_to_FLOAT4E2M1', 'test_cast_FLOAT_to_FLOAT8E4M3FN',
        'test_cast_FLOAT_to_FLOAT8E4M3FNUZ', 'test_cast_FLOAT_to_FLOAT8E5M2',
        'test_cast_FLOAT_to_FLOAT8E5M2FNUZ', 'test_cast_e8m0_FLOAT16_to_FLOAT8E8M0',
        'test_cast_e8m0_FLOAT8E8M0_to_FLOAT', 'test_cast_e8m0_FLOAT8E8M0_to_FLOAT16',
        'test_cast_e8m0_FLOAT_to_FLOAT8E8M0', 'test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN',
        'test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ', 'test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2',
        'test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ', 'test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN',
        'test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ', 'test_cast_no_saturate_FLOAT_to_FLOAT8E5M2',
        'test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ', 'test_castlike_FLOAT16_to_FLOAT4E2M1',
        'test_castlike_FLOAT16_to_FLOAT4E2M1_expanded', 'test_castlike_FLOAT16_to_FLOAT8E4M3FN',
        'test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ', 'test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded',
        'test_castlike_FLOAT16_to_FLOAT8E4M3FN_expanded', 'test_castlike_FLOAT16_to_FLOAT8E5M2',
        'test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ', 'test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded',
        'test_castlike_FLOAT16_to_FLOAT8E5M2_expanded', 'test_castlike_FLOAT4E2M1_to_FLOAT',
        'test_castlike_FLOAT4E2M1_to_FLOAT16', 'test_castlike_FLOAT4E2M1_to_FLOAT16_expanded',
        'test_castlike_FLOAT4E2M1_to_FLOAT_expanded', 'test_castlike_FLOAT8E4M3FNUZ_to_FLOAT',
        'test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16', 'test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16_expanded',
        'test_castlike_FLOAT8E4M3FNUZ_to_FLOAT_expanded', 'test_castlike_FLOAT8E4M3FN_to_FLOAT',
        'test_castlike_FLOAT8E4M3FN_to_FLOAT16', 'test_castlike_FLOAT8E4M3FN_to_FLOAT16_expanded',
        'test_castlike_FLOAT8E4M3FN_to_FLOAT_expanded', 'test_castlike_FLOAT8E5M2FNUZ_to_FLOAT',
        'test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16', 'test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16_expanded',
        'test_castlike_FLOAT8E5M2FNUZ_to_FLOAT_expanded', 'test_castlike_FLOAT8E5M2_to_FLOAT',
        'test_castlike_FLOAT8E5M2_to_FLOAT16', 'test_castlike_FLOAT8E5M2_to_FLOAT16_expanded',
        'test_castlike_FLOAT8E5M2_to_FLOAT_expanded', 'test_castlike_FLOAT_to_FLOAT4E2M1',
        'test_castlike_FLOAT_to_FLOAT4E2M1_expanded', 'test_castlike_FLOAT_to_FLOAT8E4M3FN',
        'test_castlike_FLOAT_to_FLOAT8E4M3FNUZ', 'test_castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded',
        'test_castlike_FLOAT_to_FLOAT8E4M3FN_expanded', 'test_castlike_FLOAT_to_FLOAT8E5M2',
        'test_castlike_FLOAT_to_FLOAT8E5M2FNUZ', 'test_castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded',
        'test_castlike_FLOAT_to_FLOAT8E5M2_expanded', 'test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN',
        'test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ',
        'test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded',
        'test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded',
        'test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2',
        'test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ',
        'test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded',
        'test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2_expanded',
        'test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN',
        'test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ',
        'test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded',
        'test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded',
        'test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2', 'test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ',
        'test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded',
        'test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2_expanded', 'test_dequantizelinear_e4m3fn',
        'test_dequantizelinear_e4m3fn_float16', 'test_dequantizelinear_e4m3fn_zero_point',
        'test_dequantizelinear_e5m2', 'test_dequantizelinear_float4e2m1', 'test_quantizelinear_e4m3fn',
        'test_quantizelinear_e5m2', 'test_quantizelinear_float4e2m1'
    ),
    # int4/uint4/int2/uint2 tensors: not IR types.
    '4- and 2-bit integers': (
        'test_cast_FLOAT16_to_INT2', 'test_cast_FLOAT16_to_INT4', 'test_cast_FLOAT16_to_UINT2',
        'test_cast_FLOAT16_to_UINT4', 'test_cast_FLOAT_to_INT2', 'test_cast_FLOAT_to_INT4',
        'test_cast_FLOAT_to_UINT2', 'test_cast_FLOAT_to_UINT4', 'test_cast_INT2_to_FLOAT',
        'test_cast_INT2_to_FLOAT16', 'test_cast_INT2_to_INT8', 'test_cast_INT4_to_FLOAT',
        'test_cast_INT4_to_FLOAT16', 'test_cast_INT4_to_INT8', 'test_cast_UINT2_to_FLOAT',
        'test_cast_UINT2_to_FLOAT16', 'test_cast_UINT2_to_UINT8', 'test_cast_UINT4_to_FLOAT',
        'test_cast_UINT4_to_FLOAT16', 'test_cast_UINT4_to_UINT8', 'test_castlike_FLOAT16_to_INT2',
        'test_castlike_FLOAT16_to_INT2_expanded', 'test_castlike_FLOAT16_to_INT4',
        'test_castlike_FLOAT16_to_INT4_expanded', 'test_castlike_FLOAT16_to_UINT2',
        'test_castlike_FLOAT16_to_UINT2_expanded', 'test_castlike_FLOAT16_to_UINT4',
        'test_castlike_FLOAT16_to_UINT4_expanded', 'test_castlike_FLOAT_to_INT2',
        'test_castlike_FLOAT_to_INT2_expanded', 'test_castlike_FLOAT_to_INT4',
        'test_castlike_FLOAT_to_INT4_expanded', 'test_castlike_FLOAT_to_UINT2',
        'test_castlike_FLOAT_to_UINT2_expanded', 'test_castlike_FLOAT_to_UINT4',
        'test_castlike_FLOAT_to_UINT4_expanded', 'test_castlike_INT2_to_FLOAT',
        'test_castlike_INT2_to_FLOAT16', 'test_castlike_INT2_to_FLOAT16_expanded',
        'test_castlike_INT2_to_FLOAT_expanded', 'test_castlike_INT2_to_INT8',
        'test_castlike_INT2_to_INT8_expanded', 'test_castlike_INT4_to_FLOAT', 'test_castlike_INT4_to_FLOAT16',
        'test_castlike_INT4_to_FLOAT16_expanded', 'test_castlike_INT4_to_FLOAT_expanded',
        'test_castlike_INT4_to_INT8', 'test_castlike_INT4_to_INT8_expanded', 'test_castlike_UINT2_to_FLOAT',
        'test_castlike_UINT2_to_FLOAT16', 'test_castlike_UINT2_to_FLOAT16_expanded',
        'test_castlike_UINT2_to_FLOAT_expanded', 'test_castlike_UINT2_to_UINT8',
        'test_castlike_UINT2_to_UINT8_expanded', 'test_castlike_UINT4_to_FLOAT',
        'test_castlike_UINT4_to_FLOAT16', 'test_castlike_UINT4_to_FLOAT16_expanded',
        'test_castlike_UINT4_to_FLOAT_expanded', 'test_castlike_UINT4_to_UINT8',
        'test_castlike_UINT4_to_UINT8_expanded', 'test_dequantizelinear_int2', 'test_dequantizelinear_int4',
        'test_dequantizelinear_uint2', 'test_dequantizelinear_uint4', 'test_quantizelinear_int2',
        'test_quantizelinear_int4', 'test_quantizelinear_uint2', 'test_quantizelinear_uint4'
    ),
}

#: reason -> the type names, ops or domains that make a test fall under it (checked by the tests)
REASON_KEYS: dict[str, str] = {
    'training ops': 'training',
    'ai.onnx.ml ops': 'ml',
    'string tensors': 'string',
    'sequence and optional types': 'sequence/optional',
    '8-, 6- and 4-bit floats': ('FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ FLOAT8E8M0 FLOAT4E2M1 '
                                'FLOAT6E2M3 FLOAT6E3M2'),
    '4- and 2-bit integers': 'INT4 UINT4 INT2 UINT2',
}

_BY_NAME = {name: reason for reason, names in EXCLUDED.items() for name in names}


def excluded_reason(name: str) -> str | None:
    """Why the node test ``name`` (``test_abs``, without a device suffix) is excluded; None: it runs."""
    return _BY_NAME.get(name)

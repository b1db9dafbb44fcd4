"""Import torch-exported models and check the numpy reference interpreter against ONNX Runtime.

The zoo (``tests/zoo``) is exported by both torch exporters over a spread of opsets 13..21; every model
once per exporter, the ResNet- and MobileNet-style ones at several opsets. Then: symbolic batch binding,
and the importer's errors for bad input (missing file, not ONNX, checker failure, unsupported ops).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowering.errors import LoweringError, UnsupportedOpsError
from lowering.ir import verify
from lowering.onnx.importer import import_model, load_model_proto
from lowering.reference import run_graph
from tests.zoo.fixtures import zoo  # noqa: F401  (a pytest fixture)

pytestmark = pytest.mark.unit

ZOO_NAMES = ["mlp", "small_cnn", "resnet_style", "mobilenet_style", "activations", "pooling",
             "grouped_concat", "shapes", "arith", "batchnorm"]
LEGACY_OPSETS = list(range(13, 22))
DYNAMO_OPSETS = list(range(18, 22))  # the dynamo exporter writes opset >= 18 (see tests/zoo/export.py)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _cases() -> list:
    cases: dict[tuple, None] = {}
    for i, name in enumerate(ZOO_NAMES):  # every model at one opset per exporter, spread over the range
        cases[(name, "legacy", LEGACY_OPSETS[i % len(LEGACY_OPSETS)])] = None
        cases[(name, "dynamo", DYNAMO_OPSETS[i % len(DYNAMO_OPSETS)])] = None
    for name in ("resnet_style", "mobilenet_style"):
        for opset in (13, 17, 21):
            cases[(name, "legacy", opset)] = None
        for opset in (18, 21):
            cases[(name, "dynamo", opset)] = None
    cases[("shapes", "dynamo", 16)] = None  # exported at 18, converted down by the ONNX version converter
    return [pytest.param(*c, id=f"{c[0]}-{c[1]}-op{c[2]}") for c in cases]


def _feeds(graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(v.type.shape).astype(v.type.dtype.numpy) for v in graph.inputs}


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def assert_matches_ort(graph, path: Path, feeds: dict[str, np.ndarray], tol: float = 1e-4) -> None:
    """Reference outputs equal ONNX Runtime's within ``tol`` times max(1, |output|)."""
    ours = run_graph(graph, feeds)
    theirs = _ort(path, feeds)
    assert sorted(ours) == sorted(theirs)
    for name, expected in theirs.items():
        got = ours[name]
        assert got.shape == expected.shape, f"{name}: shape {got.shape}, ONNX Runtime {expected.shape}"
        assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype}, ONNX Runtime {expected.dtype}"
        scale = max(1.0, float(np.abs(expected).max()))
        diff = float(np.abs(got.astype(np.float64) - expected).max())
        assert diff <= tol * scale, f"{name}: max |reference - ONNX Runtime| = {diff:.3g} (scale {scale:.3g})"


def assert_types_match_values(graph, feeds) -> None:
    """Every value's declared type (from ONNX shape inference) is what the reference computes."""
    env = run_graph(graph, feeds, keep_all=True)
    for node in graph.nodes:
        for out in node.outputs:
            if out.name in env and env[out.name] is not None and out.uses():
                value = env[out.name]
                assert out.type is not None, f"{node.label}: output '{out.name}' has no type"
                assert value.shape == out.type.shape, (
                    f"{node.label}: '{out.name}' declared {out.type.shape}, computed {value.shape}")
                assert value.dtype == out.type.dtype.numpy, (
                    f"{node.label}: '{out.name}' declared {out.type.dtype}, computed {value.dtype}")


# --- the zoo -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, exporter, opset", _cases())
def test_zoo_reference_matches_onnxruntime(zoo, name, exporter, opset):  # noqa: F811
    path = zoo.get(name, exporter, opset)
    model = load_model_proto(path)
    assert next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx")) == opset
    graph = import_model(model, name=str(path))
    verify(graph)
    assert [v.name for v in graph.inputs] == ["x"] and graph.output_names == ["y"]
    feeds = _feeds(graph, seed=opset)
    assert_matches_ort(graph, path, feeds)
    assert_types_match_values(graph, feeds)


def test_dynamo_external_data(zoo):  # noqa: F811
    path = zoo.get("small_cnn", "dynamo", 18, external_data=True)
    assert path.with_name(path.name + ".data").exists()
    graph = import_model(load_model_proto(path), name=str(path))
    assert_matches_ort(graph, path, _feeds(graph))


@pytest.mark.parametrize("exporter, opset", [("legacy", 17), ("dynamo", 18)])
@pytest.mark.parametrize("name", ["resnet_style", "shapes"])
def test_symbolic_batch_must_be_bound(zoo, name, exporter, opset):  # noqa: F811
    """``shapes`` reads its batch size at run time (Shape -> Gather -> Unsqueeze -> Concat -> Reshape)."""
    path = zoo.get(name, exporter, opset, dynamic_batch=True)
    dims = load_model_proto(path).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    with pytest.raises(LoweringError) as info:
        import_model(load_model_proto(path), name=str(path))
    message = str(info.value)
    assert "'x'" in message and "dimension 0" in message and "batch" in message and str(path) in message

    spatial = tuple(d.dim_value for d in dims[1:])
    graph = import_model(load_model_proto(path), shapes={"x": (2,) + spatial}, name=str(path))
    verify(graph)
    assert graph.inputs[0].type.shape == (2,) + spatial
    feeds = _feeds(graph, seed=2)
    assert_matches_ort(graph, path, feeds)
    assert_types_match_values(graph, feeds)


def test_binding_a_fixed_dimension_differently_fails(zoo):  # noqa: F811
    path = zoo.get("resnet_style", "legacy", 17, dynamic_batch=True)
    with pytest.raises(LoweringError, match="fixes it at 32"):
        import_model(load_model_proto(path), shapes={"x": (2, 3, 64, 32)}, name=str(path))
    with pytest.raises(LoweringError, match="not a model input"):
        import_model(load_model_proto(path), shapes={"image": (2, 3, 32, 32)}, name=str(path))


# --- the bundled example -----------------------------------------------------------------------------

def test_bundled_example_matches_onnxruntime():
    path = EXAMPLES / "cnn.onnx"
    if not path.exists():
        pytest.skip("examples/cnn.onnx is missing; run python examples/make_example.py")
    graph = import_model(load_model_proto(path), name=str(path))
    assert [v.name for v in graph.inputs] == ["input"] and graph.output_names == ["logits"]
    assert graph.inputs[0].type.shape == (1, 3, 32, 32)
    with np.load(EXAMPLES / "cnn_input.npz") as data:
        feeds = {"input": data["input"]}
    assert feeds["input"].dtype == np.float32 and feeds["input"].shape == (1, 3, 32, 32)
    assert_matches_ort(graph, path, feeds)


# --- bad input -----------------------------------------------------------------------------------------

def _save(model: onnx.ModelProto, path: Path, check: bool = True) -> Path:
    if check:
        onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(LoweringError, match="no such file") as info:
        load_model_proto(path)
    assert str(path) in str(info.value)


def test_a_directory_is_not_a_model(tmp_path):
    with pytest.raises(LoweringError, match="no such file"):
        load_model_proto(tmp_path)


@pytest.mark.parametrize("content", [np.random.default_rng(7).bytes(4096), b"", b"not an onnx model\n"],
                         ids=["random-bytes", "empty", "text"])
def test_not_onnx(tmp_path, content):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    with pytest.raises(LoweringError, match="not an ONNX model") as info:
        load_model_proto(path)
    assert str(path) in str(info.value)


def test_model_failing_the_checker(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "ghost"], ["y"], name="add_ghost")]
    model = _model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])])
    path = _save(model, tmp_path / "undefined_input.onnx", check=False)
    with pytest.raises(LoweringError, match="onnx.checker") as info:
        load_model_proto(path)
    message = str(info.value)
    assert str(path) in message and "ghost" in message
    assert "\n" not in message  # one line for the CLI


def test_unsupported_ops_are_all_listed(tmp_path):
    nodes = [helper.make_node("Unique", ["x"], ["a"], name="det_first"),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("NonZero", ["b"], ["c"], name="nonzero_mid"),
             helper.make_node("Unique", ["c"], ["y"], name="det_last")]
    model = _model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])])
    path = _save(model, tmp_path / "unsupported.onnx")
    with pytest.raises(UnsupportedOpsError) as info:
        import_model(load_model_proto(path), name=str(path))
    assert isinstance(info.value, LoweringError)
    message = str(info.value)
    for fragment in (str(path), "Unique", "NonZero", "det_first", "det_last", "nonzero_mid"):
        assert fragment in message
    assert "relu" not in message
    assert sorted(info.value.nodes) == [("det_first", "Unique"), ("det_last", "Unique"),
                                        ("nonzero_mid", "NonZero")]


def test_custom_domain_op_is_unsupported(tmp_path):
    nodes = [helper.make_node("Gelu", ["x"], ["y"], name="ms_gelu", domain="com.microsoft")]
    model = _model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = _save(model, tmp_path / "custom_domain.onnx")
    with pytest.raises(UnsupportedOpsError, match="com.microsoft::Gelu.*ms_gelu"):
        import_model(load_model_proto(path), name=str(path))


def test_scalar_constants_keep_rank_zero():
    """A 0-d Constant/initializer stays 0-d in the IR (Gather with a scalar index drops the axis)."""
    shape_index = numpy_helper.from_array(np.array(0, dtype=np.int64), "index")
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Constant", [], ["one"], name="one",
                              value=numpy_helper.from_array(np.array(1, dtype=np.int64))),
             helper.make_node("Gather", ["s", "index"], ["n"], name="gather", axis=0),
             helper.make_node("Add", ["n", "one"], ["y"], name="add")]
    model = _model(nodes, [_vi("x", [3, 4])], [helper.make_tensor_value_info("y", TensorProto.INT64, [])],
                   initializers=[shape_index])
    onnx.checker.check_model(model)
    graph = import_model(model, name="scalars")
    assert {v.name: v.const.shape for v in graph.constants()} == {"index": (), "one": ()}
    out = run_graph(graph, {"x": np.zeros((3, 4), np.float32)})["y"]
    assert out.shape == () and int(out) == 4


@pytest.mark.parametrize("opset, axes, keepdims, noop", [
    (13, [2, 3], 1, 0), (13, [-1], 0, 0), (13, None, 1, 0),
    (18, [2, 3], 1, 0), (18, [1, -1], 0, 0), (18, None, 0, 0), (18, None, 1, 1),
])
def test_reduce_mean_matches_onnxruntime(tmp_path, opset, axes, keepdims, noop):
    """ReduceMean (the dynamo exporter's global pool): axes as attribute (13) or input (18), or absent."""
    attrs = {"keepdims": keepdims}
    inputs, inits = ["x"], []
    if axes is not None and opset < 18:
        attrs["axes"] = axes
    elif axes is not None:
        inputs.append("axes")
        inits.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"))
    if opset >= 18:
        attrs["noop_with_empty_axes"] = noop
    nodes = [helper.make_node("ReduceMean", inputs, ["y"], name="mean", **attrs)]
    reduced = (np.zeros((2, 3, 4, 5)) if noop and axes is None
               else np.zeros((2, 3, 4, 5)).mean(axis=tuple(axes) if axes else None, keepdims=bool(keepdims)))
    model = _model(nodes, [_vi("x", [2, 3, 4, 5])], [_vi("y", list(reduced.shape))], initializers=inits,
                   opset=opset)
    path = _save(model, tmp_path / "reduce_mean.onnx")
    graph = import_model(load_model_proto(path), name=str(path))
    assert_matches_ort(graph, path, _feeds(graph), tol=1e-6)

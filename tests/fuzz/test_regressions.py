"""Every compiler bug the fuzzer found, as a regression test: the mutated model, rebuilt by hand from
``base_model``, must be refused by ``lower`` with exit 2 and one error line naming the node or tensor at
fault (not an "internal error", not a traceback, and never a build: several used to compile, into code
whose result ONNX does not define, e.g. a Reshape reading 64 elements of a 16-element tensor). ONNX
Runtime refusing each model too confirms that refusing is right (``ORT_RUNS``: valid models that use what
the IR lacks).

Found by ``python -m tests.fuzz`` (seeds 1-12, 3,000 models each): negative dimensions from windows larger
than their input (ir/types.py), Conv groups and weights that disagree with the input (targets/cpu/pack.py),
initializers of element types the IR lacks, attribute text that is not UTF-8; and, once the fuzzer also
checked that ONNX Runtime runs every model ``lower`` builds, models that built although inconsistent
(input channels, bias size, Reshape element counts; with ``--qdq``, DequantizeLinear type mismatches:
ONNX shape inference only checks types with ``check_type=True``).
"""

import contextlib
import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowering.cli import main
from lowering.errors import LoweringError

from .mutators import base_model, fake_cc, ort_refusal

pytestmark = pytest.mark.unit

def _set_attrs(model, node_name, **attrs):
    node = next(n for n in model.graph.node if n.name == node_name)
    for key, value in attrs.items():
        for a in [a for a in node.attribute if a.name == key]:
            node.attribute.remove(a)
        node.attribute.append(helper.make_attribute(key, value))
    return model


def _set_input(model, node_name, index, tensor):
    next(n for n in model.graph.node if n.name == node_name).input[index] = tensor
    return model


def _input_channels(model, channels):
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = channels
    return model


def _opset(model, version):
    model.opset_import[0].version = version
    return model


def _spare_initializer(model, data_type):
    """A copy of the weight 'w' as 'spare', an initializer no node reads (so only the importer sees its
    type: a node's input of that type fails ONNX shape inference first), of element type ``data_type``."""
    spare = model.graph.initializer.add()
    spare.CopyFrom(next(t for t in model.graph.initializer if t.name == "w"))
    spare.name, spare.data_type = "spare", data_type
    return model


def _dequantize(zero_point_dtype):
    """x + DequantizeLinear(int8 constant, scale, zero point of ``zero_point_dtype``)."""
    inits = [numpy_helper.from_array(np.array([1, 2, 3], np.int8), "q"),
             numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
             numpy_helper.from_array(np.array(0, zero_point_dtype), "zero")]
    nodes = [helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d"], name="dq"),
             helper.make_node("Add", ["d", "x"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _text_bytes(model, old: bytes, new: bytes) -> bytes:
    data = model.SerializeToString()
    assert data.count(old) == 1 and len(old) == len(new)
    return data.replace(old, new)


CASES = {  # name -> (the model or its bytes, what the one error line must say)
    "conv kernel_shape disagrees with the weight": (
        lambda: _set_attrs(base_model(), "conv", kernel_shape=[10**9, 10**9]),
        "node 'conv' (Conv) has kernel_shape=[1000000000, 1000000000], which disagrees with its weight 'w' "
        "of shape [4, 3, 3, 3]"),
    "conv dilations larger than the input": (
        lambda: _set_attrs(base_model(), "conv", dilations=[10**9, 10**9]),
        "node 'conv' (Conv) gives 'c' the shape [1, 4, -1999999990, -1999999990], a negative dimension"),
    "pool window larger than the input": (
        lambda: _set_attrs(base_model(), "pool", kernel_shape=[108, 2]),
        "node 'pool' (MaxPool) gives 'p' the shape [1, 4, -49, 4], a negative dimension"),
    "conv group larger than the channels (opset 22)": (
        lambda: _opset(_set_attrs(base_model(), "conv", group=10**9), 22),
        "node 'conv' (Conv): weight 'w' has 4 output channels, not a multiple of group=1000000000"),
    "conv group negative": (
        lambda: _set_attrs(base_model(), "conv", group=-5),
        "node 'conv' (Conv) has group=-5; it must be at least 1"),
    "conv group and weight disagree with the input channels": (
        lambda: _set_attrs(base_model(), "conv", group=2),
        "node 'conv' (Conv): input 'x' has shape [1, 3, 8, 8], but the weight 'w' of shape [4, 3, 3, 3] with "
        "group=2 expects rank 4 and 6 channels"),
    "input channels differ from the weight's": (
        lambda: _input_channels(base_model(), 6),
        "node 'conv' (Conv): input 'x' has shape [1, 6, 8, 8], but the weight 'w' of shape [4, 3, 3, 3] with "
        "group=1 expects rank 4 and 3 channels"),
    "conv bias of the wrong shape": (
        lambda: _set_input(base_model(), "conv", 2, "x"),
        "node 'conv' (Conv): bias 'x' has shape [1, 3, 8, 8]; the weight 'w' of shape [4, 3, 3, 3] needs "
        "[4]"),
    "reshape changes the element count": (
        lambda: _set_attrs(base_model(), "pool", strides=[82, 2]),
        "node 'reshape' (Reshape) reshapes 'p' of shape [1, 4, 1, 4] into [1, 64]: the element counts "
        "differ"),
    "initializer of an element type the IR lacks": (
        lambda: _spare_initializer(base_model(), TensorProto.INT2),
        "tensor 'spare': unsupported element type int2"),
    "quantized weight and zero point of different types": (
        lambda: _dequantize(np.uint8),
        "ONNX shape inference failed: [ShapeInferenceError] (op_type:DequantizeLinear, node name: dq): "
        "x_zero_point has inconsistent type tensor(uint8)"),
    "zero point of a type DequantizeLinear does not take": (
        lambda: _dequantize(np.float16),
        "ONNX shape inference failed: [ShapeInferenceError] (op_type:DequantizeLinear, node name: dq): "
        "x_zero_point typestr: T, has unsupported type: tensor(float16)"),
    "attribute text that is not UTF-8": (
        lambda: _text_bytes(_set_attrs(base_model(), "conv", auto_pad="NOTSET"), b"NOTSET", b"N\xffTSET"),
        "node 'conv' (Conv) attribute 'auto_pad' is not valid UTF-8 text"),
}


#: cases ONNX Runtime runs: the model is valid, but uses what the IR lacks (refused, naming the tensor)
ORT_RUNS = {"initializer of an element type the IR lacks"}


def _lower(path, out, monkeypatch):
    monkeypatch.setenv("CC", str(fake_cc(path.parent)))  # a build would not need the real compiler
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(path), "-o", str(out), "--no-cache"])
    return code, stderr.getvalue()


@pytest.mark.parametrize("case", sorted(CASES))
def test_fuzzer_found_model_is_refused_naming_the_node(case, tmp_path, monkeypatch):
    make, expected = CASES[case]
    model = make()
    path = tmp_path / "case.onnx"
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    code, err = _lower(path, tmp_path / "case.lwr", monkeypatch)
    assert code == 2 and err.startswith(f"error: case.onnx: {expected}") and err.count("\n") == 1, err
    assert not (tmp_path / "case.lwr").exists()
    if case in ORT_RUNS:
        assert ort_refusal(path) is None
    else:
        assert ort_refusal(path) is not None  # ONNX Runtime refuses it as well


def test_name_that_is_not_utf8_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "case.onnx"
    path.write_bytes(_text_bytes(base_model(), b"relu", b"\xffelu"))
    code, err = _lower(path, tmp_path / "case.lwr", monkeypatch)
    assert code == 2
    assert err == "error: case.onnx: the name of node 1 b'\\xffelu' is not valid UTF-8 (a damaged model?)\n"


def test_exporter_refuses_names_that_are_not_text():
    """The exporter is the last line of defence when the IR comes from another path than ``lower``."""
    from lowering.onnx.exporter import export_bytes
    from lowering.onnx.importer import import_model

    model = onnx.ModelProto()
    model.ParseFromString(_text_bytes(base_model(), b"relu", b"\xffelu"))
    graph = import_model(model, name="case.onnx")
    with pytest.raises(LoweringError) as info:
        export_bytes(graph)
    expected = "fuzz: the name of node 1 (Relu) b'\\xffelu' is not valid UTF-8 text (a damaged model?)"
    assert str(info.value) == expected


@pytest.mark.parametrize("make", [base_model, lambda: _dequantize(np.int8)], ids=["base", "dequantize"])
def test_the_unmutated_models_still_build(make, tmp_path, monkeypatch):
    """The regression models differ from a model that builds only by the edit under test."""
    path = tmp_path / "case.onnx"
    onnx.save(make(), path)
    code, err = _lower(path, tmp_path / "case.lwr", monkeypatch)
    assert code == 0 and err == "" and ort_refusal(path) is None


# ---- artifacts (found by the hypothesis plans: tests/fuzz/strategies.py) --------------------------------

@pytest.fixture(scope="module")
def built_artifact(tmp_path_factory):
    """``base_model(3)`` built for cpu with the real C compiler (a loaded case runs its library)."""
    from .mutators import build_base_artifact

    return build_base_artifact(tmp_path_factory.mktemp("artifact"))


def _lie_about(data: bytes, role: str, dim: int, value: int) -> bytes:
    """The artifact with dimension ``dim`` of its first ``role`` tensor set to ``value`` in the artifact's
    signature and in every target's own: a manifest that lies about a tensor's size but agrees with
    itself (members and their hashes untouched)."""
    import json

    from .mutators import MANIFEST_NAME, _read_zip, _write_zip

    members = _read_zip(data)
    manifest = json.loads(members[MANIFEST_NAME])
    manifest[role][0]["shape"][dim] = value
    for entry in manifest["targets"].values():
        entry["signature"][role][0]["shape"][dim] = value
    members[MANIFEST_NAME] = json.dumps(manifest).encode()
    return _write_zip(members)


@pytest.mark.target_cpu
@pytest.mark.parametrize("role, dim, value", [("inputs", 1, 1), ("outputs", 1, 2)],
                         ids=["input 1x1x8x8 for 1x3x8x8", "output 1x2 for 1x5"])
def test_signature_smaller_than_the_compiled_code_is_refused(role, dim, value, built_artifact, tmp_path):
    """Loaded, such an artifact would have the library read past the caller's input buffer (768 bytes
    compiled, 256 passed) or write past its output buffer (20 bytes written into 8). Refused: the cpu
    library exports its input and output byte sizes (lw_input_bytes(i), lw_output_bytes(i)) and
    runtime/backends/cpu.py's _validate compares them with the signature, as it does the arena size."""
    import runtime
    from runtime.errors import RuntimeLoadError

    path = tmp_path / "lie.lwr"
    path.write_bytes(_lie_about(built_artifact.read_bytes(), role, dim, value))
    with pytest.raises(RuntimeLoadError, match=f"{role[:-1]} 0 bytes is"):
        runtime.load(path)

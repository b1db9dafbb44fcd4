"""RNN, GRU, LSTM, DFT, STFT, the window ops, MelWeightMatrix and Einsum on the cpu target.

Against ONNX Runtime: models built with ``onnx.helper`` that put several attribute combinations in one
model (each compiled model is one gcc run), and LSTM/GRU exported from PyTorch when torch is installed.
Against numpy's FFT where ONNX Runtime's DFT differs from ONNX's definition (the inverse one-sided
transform). Run-time parameters (weights, DFT axis and length, window size) and the one-line refusals too.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from lowering.driver import CompileOptions, compile_model
from lowering.ir import DType, Graph, Node, TensorType, Value
from lowering.onnx.importer import import_model
from lowering.reference import run_graph
from targets.cpu import emit_rnn
from targets.cpu.target import CpuTarget
from targets.cuda.target import CudaTarget
from targets.custom.target import CustomTarget

pytestmark = pytest.mark.target_cpu

OPSET = 21
F = TensorProto.FLOAT


def compiled_run(model: onnx.ModelProto, feeds: dict, tmp_path, name: str) -> dict:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    result = compile_model(path, output=tmp_path / f"{name}.lwr",
                           options=CompileOptions(targets=("cpu",), verify_each=True))
    ops = result.report["targets"]["cpu"]["ops"]
    outputs = runtime.load(tmp_path / f"{name}.lwr").run(None, feeds)
    return dict(zip([o.name for o in model.graph.output], outputs)), ops


def reference_run(model: onnx.ModelProto, feeds: dict) -> dict:
    """The reference interpreter's outputs (lowering/reference) on the imported model."""
    graph = import_model(model)
    return run_graph(graph, {v.name: feeds[v.name] for v in graph.inputs})


def ort_run(model: onnx.ModelProto, feeds: dict) -> dict:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in model.graph.output], session.run(None, feeds)))


def assert_same(got: dict, want: dict, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, err_msg=name)


class ModelBuilder:
    """Nodes, initializers, graph inputs and outputs of one test model (shapes inferred by onnx)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.inputs, self.outputs, self.feeds = [], [], [], [], {}

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def input(self, name: str, array: np.ndarray) -> str:
        array = np.asarray(array)
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        self.inputs.append(helper.make_tensor_value_info(name, elem, array.shape))
        self.feeds[name] = array
        return name

    def randn(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0] or outputs[-1], **attrs))
        self.outputs += [o for o in outputs if o]

    def model(self, opset: int = OPSET) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, F, None) for o in self.outputs]
        graph = helper.make_graph(self.nodes, "m", self.inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        return model


# --- recurrent ops -------------------------------------------------------------------------------------

def _recurrent(b: ModelBuilder, tag: str, op: str, steps: int, batch: int, inputs: int, hidden: int, *,
               direction: str = "forward", layout: int = 0, bias: bool = True, lens=None, initial=False,
               peepholes=False, runtime_weights=False, outputs=(True, True, True),
               twin: ModelBuilder | None = None, **attrs) -> dict[str, tuple[int, ...]]:
    """Add one recurrent node to ``b`` and, when given, its layout-0 equivalent to ``twin`` (ONNX Runtime
    has no batchwise layout); returns the transposes that turn the twin's outputs into ``b``'s."""
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    dirs = 2 if direction == "bidirectional" else 1
    x = b.randn(steps, batch, inputs)
    w, r = b.randn(dirs, gates * hidden, inputs, scale=0.6), b.randn(dirs, gates * hidden, hidden, scale=0.6)
    bb, p = b.randn(dirs, 2 * gates * hidden, scale=0.3), b.randn(dirs, 3 * hidden, scale=0.3)
    h0, c0 = b.randn(dirs, batch, hidden, scale=0.5), b.randn(dirs, batch, hidden, scale=0.5)
    perms = {}
    for target, lay in ((b, layout), (twin, 0)):
        if target is None:
            continue
        swap = (lambda a: a.transpose(1, 0, 2)) if lay else (lambda a: a)
        weight = target.input if runtime_weights else target.const
        names = [target.input(f"{tag}_x", swap(x)), weight(f"{tag}_w", w), weight(f"{tag}_r", r),
                 target.const(f"{tag}_b", bb) if bias else ""]
        names.append("" if lens is None else target.input(f"{tag}_lens", np.asarray(lens, np.int32)))
        names.append(target.input(f"{tag}_h0", swap(h0)) if initial else "")
        if op == "LSTM":
            names.append(target.input(f"{tag}_c0", swap(c0)) if initial else "")
            names.append(target.const(f"{tag}_p", p) if peepholes else "")
        while names and names[-1] == "":
            names.pop()
        kept = zip(("y", "yh", "yc"), outputs[:3 if op == "LSTM" else 2])
        outs = [f"{tag}_{o}" if keep else "" for o, keep in kept]
        while outs and outs[-1] == "":
            outs.pop()
        target.node(op, names, outs, hidden_size=hidden, direction=direction, layout=lay, **attrs)
        if lay:
            perms.update({f"{tag}_y": (2, 0, 1, 3), f"{tag}_yh": (1, 0, 2), f"{tag}_yc": (1, 0, 2)})
    return perms


def _rnn_models() -> tuple[onnx.ModelProto, onnx.ModelProto, dict, dict]:
    b, twin, perms = ModelBuilder(1), ModelBuilder(1), {}
    perms |= _recurrent(b, "rnn_fwd", "RNN", 5, 3, 4, 6, initial=True, twin=twin)
    perms |= _recurrent(b, "rnn_bi", "RNN", 4, 2, 3, 5, direction="bidirectional", lens=[4, 2],
                        activations=["Relu", "LeakyRelu"], activation_alpha=[0.2], bias=False, twin=twin)
    perms |= _recurrent(b, "rnn_rev", "RNN", 6, 3, 3, 4, direction="reverse", layout=1, lens=[3, 6, 0],
                        initial=True, clip=0.7, runtime_weights=True, twin=twin)
    perms |= _recurrent(b, "gru_lbr", "GRU", 5, 4, 4, 6, direction="bidirectional", lens=[5, 1, 0, 3],
                        initial=True, linear_before_reset=1, twin=twin)
    perms |= _recurrent(b, "gru_clip", "GRU", 4, 2, 3, 5, clip=0.5, outputs=(False, True),
                        activations=["HardSigmoid", "Softsign"], activation_alpha=[0.3],
                        activation_beta=[0.4], twin=twin)
    perms |= _recurrent(b, "gru_b1", "GRU", 3, 4, 2, 7, layout=1, direction="reverse", runtime_weights=True,
                        twin=twin)
    return b.model(), twin.model(), b.feeds, twin.feeds, perms


def _lstm_models() -> tuple[onnx.ModelProto, onnx.ModelProto, dict, dict]:
    b, twin, perms = ModelBuilder(2), ModelBuilder(2), {}
    perms |= _recurrent(b, "lstm_full", "LSTM", 5, 4, 4, 6, direction="bidirectional", lens=[5, 2, 0, 4],
                        initial=True, peepholes=True, twin=twin)
    perms |= _recurrent(b, "lstm_if", "LSTM", 4, 2, 3, 5, input_forget=1, clip=1.5,
                        outputs=(True, False, True), twin=twin)
    perms |= _recurrent(b, "lstm_b1", "LSTM", 6, 2, 3, 4, layout=1, direction="reverse", initial=True,
                        runtime_weights=True, outputs=(False, True, True), twin=twin)
    perms |= _recurrent(b, "lstm_act", "LSTM", 3, 2, 4, 5, peepholes=True,
                        activations=["Sigmoid", "ScaledTanh", "Elu"], activation_alpha=[0.9, 0.7],
                        activation_beta=[1.1], twin=twin)
    perms |= _recurrent(b, "lstm_wide", "LSTM", 3, 2, 33, 37, bias=False, twin=twin)  # vector tails
    return b.model(), twin.model(), b.feeds, twin.feeds, perms


@pytest.mark.parametrize("make, hoist", [(_rnn_models, True), (_lstm_models, True), (_lstm_models, False)],
                         ids=["rnn_gru", "lstm", "lstm_per_step_input_product"])
def test_recurrent_matches_onnxruntime(tmp_path, monkeypatch, make, hoist):
    if not hoist:  # the path long sequences take: no workspace for the hoisted input products
        monkeypatch.setattr(emit_rnn, "HOIST_BYTES", 0)
    model, twin, feeds, twin_feeds, perms = make()
    got, ops = compiled_run(model, feeds, tmp_path, make.__name__.strip("_"))
    assert {"RNN", "GRU", "LSTM"} & set(ops)
    want = {name: value.transpose(perms[name]) if name in perms else value
            for name, value in ort_run(twin, twin_feeds).items()}
    assert_same(got, want)
    assert_same(reference_run(model, feeds), want)


def test_recurrent_sequence_length_out_of_range_fails_the_run(tmp_path):
    b = ModelBuilder(3)
    _recurrent(b, "r", "RNN", 3, 2, 2, 3, lens=[3, 1])
    model, feeds = b.model(), b.feeds
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    compile_model(path, output=tmp_path / "m.lwr", options=CompileOptions(targets=("cpu",)))
    session = runtime.load(tmp_path / "m.lwr")
    session.run(None, feeds)
    with pytest.raises(RuntimeError, match="status 4"):
        session.run(None, dict(feeds, r_lens=np.asarray([4, 1], np.int32)))


def _torch_model(kind: str):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    if kind == "lstm":
        module = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    else:
        module = torch.nn.GRU(4, 6, num_layers=1, bidirectional=False)
    x = torch.randn(2, 4, 3) if kind == "lstm" else torch.randn(5, 3, 4)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module.eval(), (x,), buffer, opset_version=17, dynamo=False,
                              input_names=["x"], output_names=["y", "h"] + (["c"] if kind == "lstm" else []))
        except Exception as exc:  # an exporter without the TorchScript path (or its dependencies)
            pytest.skip(f"torch.onnx.export failed: {exc}")
    return onnx.load_from_string(buffer.getvalue()), {"x": x.numpy()}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_torch_exported_recurrent_matches_onnxruntime(tmp_path, kind):
    model, feeds = _torch_model(kind)
    got, ops = compiled_run(model, feeds, tmp_path, f"torch_{kind}")
    assert kind.upper() in ops
    assert_same(got, ort_run(model, feeds))


# --- signal ops ----------------------------------------------------------------------------------------

def _signal_model() -> tuple[onnx.ModelProto, dict, dict]:
    """DFT/STFT cases ONNX Runtime computes as ONNX defines them, and the inverse one-sided DFT (whose
    ONNX Runtime output differs from ONNX's definition: checked against numpy's irfft)."""
    b = ModelBuilder(4)
    real = b.input("real", b.randn(2, 12, 5, 1))
    cplx = b.input("cplx", b.randn(3, 8, 2))
    i64 = lambda v: b.const(f"c{len(b.inits)}", np.asarray(v, np.int64))  # noqa: E731
    b.node("DFT", [real, "", i64(1)], ["dft_real"])
    b.node("DFT", [real, "", i64(-2)], ["dft_real_last"])
    b.node("DFT", [real, "", i64(1)], ["rfft"], onesided=1)
    b.node("DFT", [real, i64(9), i64(1)], ["rfft_odd"], onesided=1)
    b.node("DFT", [cplx, "", i64(1)], ["dft_cplx"])
    b.node("DFT", [cplx, "", i64(0)], ["dft_cplx_axis0"])
    b.node("DFT", [cplx, i64(11), i64(1)], ["dft_pad"])
    b.node("DFT", [cplx, i64(5), i64(1)], ["dft_cut"])
    b.node("DFT", [cplx, "", i64(1)], ["idft"], inverse=1)
    b.node("DFT", [cplx, i64(6), i64(0)], ["idft_len"], inverse=1)
    signal = b.input("signal", b.randn(2, 40, 1))
    # onesided given explicitly: onnx's shape inference takes its default (1) as 0 when the frame length is
    # a constant (the node then gets the wrong shape, which the cpu target refuses in one line)
    b.node("STFT", [signal, i64(6), "", i64(10)], ["stft"], onesided=1)
    b.node("STFT", [signal, i64(5), b.const("win", b.randn(16) ** 2)], ["stft_win"], onesided=1)
    b.node("STFT", [signal, i64(7), "", i64(9)], ["stft_full"], onesided=0)
    spectrum = b.input("spectrum", b.randn(2, 7, 3, 2))
    b.node("DFT", [spectrum, "", i64(1)], ["irfft"], inverse=1, onesided=1)
    b.node("DFT", [spectrum, i64(13), i64(1)], ["irfft_odd"], inverse=1, onesided=1)
    s = b.feeds[spectrum][..., 0] + 1j * b.feeds[spectrum][..., 1].astype(np.float64)
    numpy_only = {"irfft": np.fft.irfft(s, axis=1)[..., None],
                  "irfft_odd": np.fft.irfft(s, n=13, axis=1)[..., None]}
    return b.model(20), b.feeds, numpy_only


def test_signal_ops_match_onnxruntime_and_numpy(tmp_path):
    model, feeds, numpy_only = _signal_model()
    got, ops = compiled_run(model, feeds, tmp_path, "signal")
    assert {"DFT", "STFT"} <= set(ops)
    want = ort_run(model, feeds)
    for name, value in numpy_only.items():
        want[name] = value.astype(np.float32)
    assert_same(got, want, rtol=1e-4, atol=2e-5)
    assert_same(reference_run(model, feeds), want, rtol=1e-4, atol=2e-5)


def test_runtime_dft_parameters_and_window_size(tmp_path):
    """A run-time axis, dft_length and window size are read by the kernels; values that contradict the
    compiled shapes fail the run (status 4) instead of writing the wrong elements."""
    b = ModelBuilder(5)
    x = b.input("x", b.randn(1, 6, 6, 2))
    axis, length = b.input("axis", np.asarray(2, np.int64)), b.input("n", np.asarray(6, np.int64))
    b.node("DFT", [x, length, axis], ["y"])
    b.node("HannWindow", [b.input("size", np.asarray(10, np.int32))], ["hann"], periodic=0)
    b.node("BlackmanWindow", [b.input("size64", np.asarray(7, np.int64))], ["blackman"])
    graph = helper.make_graph(b.nodes, "m", b.inputs, [
        helper.make_tensor_value_info("y", F, [1, 6, 6, 2]),
        helper.make_tensor_value_info("hann", F, [10]),
        helper.make_tensor_value_info("blackman", F, [7])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    compile_model(path, output=tmp_path / "m.lwr", options=CompileOptions(targets=("cpu",)))
    session = runtime.load(tmp_path / "m.lwr")
    names = [o.name for o in model.graph.output]
    for a in (1, 2, -2, -3):
        got = dict(zip(names, session.run(None, dict(b.feeds, axis=np.asarray(a, np.int64)))))
        signal = b.feeds["x"][..., 0] + 1j * b.feeds["x"][..., 1]
        spectrum = np.fft.fft(signal, axis=a % 4)
        np.testing.assert_allclose(got["y"], np.stack([spectrum.real, spectrum.imag], -1), rtol=1e-4,
                                   atol=1e-5)
    np.testing.assert_allclose(got["hann"], np.hanning(10), atol=1e-6)
    np.testing.assert_allclose(got["blackman"], np.blackman(8)[:7], atol=1e-6)
    for bad in ({"axis": np.asarray(3, np.int64)}, {"n": np.asarray(7, np.int64)},
                {"size": np.asarray(9, np.int32)}):
        with pytest.raises(RuntimeError, match="status 4"):
            session.run(None, dict(b.feeds, **bad))


def test_windows_and_mel_match_onnxruntime(tmp_path):
    """Run-time sizes (the compiled shapes declared by the model) through the window and mel kernels."""
    b = ModelBuilder(6)
    outputs = []
    for op in ("HannWindow", "HammingWindow", "BlackmanWindow"):
        for periodic in (0, 1):
            name = f"{op}_{periodic}"
            b.node(op, [b.input(f"size_{name}", np.asarray(11, np.int64))], [name], periodic=periodic)
            outputs.append(helper.make_tensor_value_info(name, F, [11]))
    mel_in = [b.input("bins", np.asarray(6, np.int64)), b.input("dft", np.asarray(64, np.int64)),
              b.input("rate", np.asarray(16000, np.int64)), b.input("lo", np.asarray(100.0, np.float32)),
              b.input("hi", np.asarray(7000.0, np.float32))]
    b.node("MelWeightMatrix", mel_in, ["mel"])
    outputs.append(helper.make_tensor_value_info("mel", F, [33, 6]))
    graph = helper.make_graph(b.nodes, "m", b.inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    got, ops = compiled_run(model, b.feeds, tmp_path, "windows")
    assert {"HannWindow", "MelWeightMatrix"} <= set(ops)
    want = ort_run(model, b.feeds)
    assert_same(got, want, rtol=1e-5, atol=1e-6)
    assert_same(reference_run(model, b.feeds), want, rtol=1e-5, atol=1e-6)


# --- Einsum ----------------------------------------------------------------------------------------------

#: (equation, operand shapes): the node tests' equations (float64 there) in float32, and more forms
EINSUMS = [
    ("...ii ->...i", [(3, 5, 5)]), ("bij, bjk -> bik", [(5, 2, 3), (5, 3, 4)]), ("i,i", [(5,), (5,)]),
    ("->", [()]), ("ij->i", [(3, 4)]), ("ij->ji", [(3, 4)]), ("ij,jk", [(3, 4), (4, 2)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (1, 5, 4, 2)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("ii", [(4, 4)]), ("bhid,bhjd->bhij", [(2, 3, 4, 8), (2, 3, 5, 8)]), ("iij->j", [(3, 3, 2)]),
    ("Ab,bC->CA", [(2, 3), (3, 4)]),
]


def test_einsum_matches_onnxruntime(tmp_path):
    b = ModelBuilder(7)
    for i, (equation, shapes) in enumerate(EINSUMS):
        names = [b.input(f"e{i}_{k}", b.randn(*shape)) for k, shape in enumerate(shapes)]
        b.node("Einsum", names, [f"einsum{i}"], equation=equation)
    model = b.model()
    got, ops = compiled_run(model, b.feeds, tmp_path, "einsum")
    assert "Einsum" in ops
    want = ort_run(model, b.feeds)
    assert_same(got, want)
    assert_same(reference_run(model, b.feeds), want)


# --- refusals --------------------------------------------------------------------------------------------

def _node(op: str, inputs: list[tuple[str, DType, tuple[int, ...]]], out_shape, **attrs) -> Node:
    graph = Graph(name="g", opset=20)
    values = [Value(name, TensorType(dtype, shape)) for name, dtype, shape in inputs]
    graph.inputs.extend(values)
    node = Node(op, values, [Value(f"{op.lower()}_out", TensorType(DType.FLOAT32, out_shape))], name="n",
                attrs=attrs)
    graph.append(node)
    graph.outputs.append(node.output)
    return node


@pytest.mark.parametrize("op, inputs, out_shape, attrs, reason", [
    ("LSTM", [("x", DType.FLOAT32, (2, 1, 3)), ("w", DType.FLOAT32, (1, 16, 3)),
              ("r", DType.FLOAT32, (1, 16, 4)), ("b", DType.FLOAT32, (1, 32)), ("lens", DType.INT64, (1,))],
     (2, 1, 1, 4), {"hidden_size": 4},
     "LSTM input sequence_lens 'lens' is int64; the cpu target takes int32"),
    ("GRU", [("x", DType.FLOAT32, (2, 1, 3)), ("w", DType.FLOAT32, (1, 12, 3)),
             ("r", DType.FLOAT32, (1, 12, 4))],
     (2, 1, 1, 4), {"hidden_size": 4, "activations": ("Sigmoid", "Gelu")},
     "GRU activation 'Gelu' is not one of the ONNX RNN activations"),
    ("RNN", [("x", DType.FLOAT32, (2, 1, 3)), ("w", DType.FLOAT32, (1, 5, 3)),
             ("r", DType.FLOAT32, (1, 4, 4))],
     (2, 1, 1, 4), {"hidden_size": 4}, "RNN input W 'w' has shape [1, 5, 3], expected [1, 4, 3]"),
    ("DFT", [("x", DType.FLOAT32, (1, 8, 3))], (1, 8, 2), {"axis": 1}, "DFT input shape [1, 8, 3] must have"),
    ("STFT", [("s", DType.FLOAT32, (1, 16, 1)), ("step", DType.INT64, ())], (1, 3, 5, 2), {},
     "STFT output shape [1, 3, 5, 2] is not"),
    ("Einsum", [("a", DType.FLOAT32, (2, 3)), ("b", DType.FLOAT32, (4, 5))], (2, 5),
     {"equation": "ij,jk->ik"}, "Einsum label 'j' is 3 in one place and 4 in another"),
    ("Einsum", [("a", DType.FLOAT32, (2, 3))], (2,), {"equation": "i1->i"},
     "Einsum operand 0 term 'i1' has the character '1', which is not a letter"),
])
def test_unsupported_cases_give_one_line_reasons(op, inputs, out_shape, attrs, reason):
    from lowering.ir import Attr, AttrKind

    kinds = {int: AttrKind.INT, tuple: AttrKind.STRINGS, str: AttrKind.STRING}
    node = _node(op, inputs, out_shape, **{k: Attr(kinds[type(v)], v) for k, v in attrs.items()})
    if op == "STFT":  # a constant frame_step that gives another frame count than the output's
        step = node.graph.constant(np.asarray(4, np.int64), hint="step")
        node.replace_input(1, step)
    got = CpuTarget().unsupported_reason(node)
    assert got is not None and reason in got and "\n" not in got


def test_other_targets_refuse_the_new_ops():
    node = _node("LSTM", [("x", DType.FLOAT32, (2, 1, 3)), ("w", DType.FLOAT32, (1, 16, 3)),
                          ("r", DType.FLOAT32, (1, 16, 4))], (2, 1, 1, 4))
    for target in (CudaTarget(), CustomTarget()):
        reason = target.unsupported_reason(node)
        assert reason and "LSTM" in reason and "\n" not in reason

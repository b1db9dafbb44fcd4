"""Conv, ConvInteger, MatMulInteger, QuantizeLinear / DequantizeLinear and QLinearMatMul / QLinearConv whose
weights, scales and zero points are run-time tensors (graph inputs, or computed in the graph), on the cpu
target through the whole pipeline, against ONNX Runtime, on 1 and 4 threads; and the reference interpreter
on the same models.

The cpu target packs constant weights and folds constant scales at compile time; these cases have nothing
to fold, so they take the run-time kernels (``emit_conv_runtime``, the ConvInteger direct loop, the
run-time-parameter QuantizeLinear / DequantizeLinear). Several cases share one model (one gcc run).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from lowering.driver import CompileOptions, compile_model
from lowering.errors import LoweringError
from lowering.onnx.importer import import_model
from lowering.reference import run_graph

from .cpu_harness import build_cpu

pytestmark = pytest.mark.target_cpu

ELEM = {np.float32: TensorProto.FLOAT, np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8,
        np.int32: TensorProto.INT32, np.int16: TensorProto.INT16, np.uint16: TensorProto.UINT16}


class ModelMaker:
    """Graph inputs with their feeds, nodes and outputs of one ONNX model (shapes left to inference)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.inputs, self.outputs, self.nodes, self.inits = [], [], [], []
        self.feeds: dict[str, np.ndarray] = {}

    def feed(self, name: str, data: np.ndarray) -> str:
        data = np.asarray(data)
        self.inputs.append(helper.make_tensor_value_info(name, ELEM[data.dtype.type], list(data.shape)))
        self.feeds[name] = data
        return name

    def f32(self, name: str, *shape: int, scale: float = 1.0) -> str:
        return self.feed(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def ints(self, name: str, dtype, *shape: int, low=None, high=None) -> str:
        info = np.iinfo(dtype)
        low, high = info.min if low is None else low, info.max if high is None else high
        return self.feed(name, self.rng.integers(low, high, shape, endpoint=True).astype(dtype))

    def const(self, name: str, data) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(data), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def output(self, name: str) -> None:
        self.outputs.append(name)

    def model(self, name: str, opset: int = 21) -> onnx.ModelProto:
        """The model, its outputs typed by ONNX shape inference."""
        graph = helper.make_graph(self.nodes, name, self.inputs, [], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        inferred = {vi.name: vi for vi in model.graph.value_info}
        model.graph.output.extend(inferred[o] for o in self.outputs)
        return model


def ort_run(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in model.graph.output], sess.run(None, feeds)))


def lowered_runs(model: onnx.ModelProto, feeds: dict, tmp_path, name: str,
                 ops: set[str] | None = None) -> list[dict[str, np.ndarray]]:
    """The cpu artifact's outputs on 1 and on 4 threads (one compile); ``ops`` (if given) must be among the
    ops of the lowered graph."""
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    result = compile_model(path, output=tmp_path / f"{name}.lwr",
                           options=CompileOptions(targets=("cpu",), verify_each=True))
    lowered = result.report["targets"]["cpu"]["ops"]
    assert ops is None or ops <= set(lowered), lowered
    names = [o.name for o in model.graph.output]
    runs = []
    for threads in (1, 4):
        session = runtime.load(tmp_path / f"{name}.lwr", target="cpu", threads=threads)
        runs.append(dict(zip(names, session.run(None, feeds))))
    return runs


# --- float Conv with run-time weights ---------------------------------------------------------------


def conv_model() -> tuple[onnx.ModelProto, dict]:
    m = ModelMaker(1)
    # 2-D, groups, strides, dilations, asymmetric pads, run-time bias, Relu epilogue
    x = m.f32("x", 2, 6, 9, 11)
    w = m.f32("w", 4, 3, 3, 2)
    b = m.f32("b", 4)
    c = m.node("Conv", [x, w, b], "c_grouped", group=2, strides=[2, 1], dilations=[1, 2], pads=[1, 0, 2, 1])
    m.output(m.node("Relu", [c], "y_grouped"))
    # 2-D SAME_UPPER, constant bias, residual Add (FusedConv's residual epilogue)
    w2 = m.f32("w2", 6, 6, 3, 3)
    c2 = m.node("Conv", [x, w2, m.const("b2", np.linspace(-1, 1, 6, dtype=np.float32))], "c_same",
                auto_pad="SAME_UPPER")
    m.output(m.node("Add", [c2, m.f32("r", 2, 6, 9, 11)], "y_residual"))
    # a deep K (several K blocks of the GEMM) and more positions than one panel, weights computed in-graph
    xk = m.f32("xk", 1, 40, 12, 13)
    wk = m.node("Mul", [m.f32("wk", 24, 40, 3, 3, scale=0.2), m.const("two", np.float32(2))], "wk2")
    m.output(m.node("Conv", [xk, wk], "y_deep", pads=[1, 1, 1, 1]))
    # 1-D depthwise (the causal-conv shape: left padding), dilated, strided, Clip epilogue
    x1 = m.f32("x1", 3, 5, 17)
    c1 = m.node("Conv", [x1, m.f32("w1", 5, 1, 4)], "c_dw", group=5, dilations=[2], strides=[2], pads=[6, 0])
    m.output(m.node("Clip", [c1, m.const("lo", np.float32(-0.5)), m.const("hi", np.float32(0.75))], "y_dw"))
    # 1-D, two output channels per group, SAME_LOWER with a stride
    m.output(m.node("Conv", [x1, m.f32("w1g", 10, 1, 4)], "y_dw2", group=5, strides=[3],
                    auto_pad="SAME_LOWER"))
    # 3-D, strided, padded
    x3 = m.f32("x3", 1, 3, 5, 6, 7)
    m.output(m.node("Conv", [x3, m.f32("w3", 4, 3, 2, 3, 2), m.f32("b3", 4)], "y_3d", strides=[2, 1, 2],
                    pads=[1, 1, 0, 0, 1, 1]))
    # 3-D grouped, VALID
    m.output(m.node("Conv", [x3, m.f32("w3g", 6, 1, 3, 3, 3)], "y_3d_grouped", group=3, auto_pad="VALID"))
    return m.model("conv_runtime"), m.feeds


def test_conv_with_runtime_weights_matches_onnxruntime(tmp_path):
    model, feeds = conv_model()
    want = ort_run(model, feeds)
    reference = run_graph(import_model(model, name="conv_runtime"), feeds)
    for got in lowered_runs(model, feeds, tmp_path, "conv_runtime", {"lowering::FusedConv"}) + [reference]:
        for name, expected in want.items():
            np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-4, err_msg=name)
    assert float(np.abs(want["y_grouped"]).max()) > 0 and (want["y_grouped"] == 0).any()  # Relu did clip


# --- QuantizeLinear / DequantizeLinear with run-time scale and zero point ------------------------------


def qdq_model() -> tuple[onnx.ModelProto, dict]:
    m = ModelMaker(2)
    x = m.f32("x", 2, 6, 5, scale=4.0)
    m.feeds[x][0, 0, :4] = [0.25, -0.25, 0.75, -0.75]  # exact ties at scale 0.5: round half to even
    m.feeds[x][1, 5, :] = [1e4, -1e4, 300.0, -300.0, 1e-9]  # saturation
    # per tensor, uint8
    s = m.feed("s", np.array(0.5, np.float32))
    z = m.feed("z", np.array(131, np.uint8))
    q = m.node("QuantizeLinear", [x, s, z], "q_tensor")
    m.output(q)
    m.output(m.node("DequantizeLinear", [q, s, z], "dq_tensor"))
    # per axis (axis 1), int8
    sa = m.feed("sa", np.array([0.5, 0.1, 0.037, 1.0, 0.25, 2.0], np.float32))
    za = m.feed("za", np.array([0, -3, 7, 100, -128, 127], np.int8))
    qa = m.node("QuantizeLinear", [x, sa, za], "q_axis", axis=1)
    m.output(qa)
    m.output(m.node("DequantizeLinear", [qa, sa, za], "dq_axis", axis=1))
    # per axis on the last axis (the lw_quantize_last path), scale only: uint8 with zero point 0
    sl = m.feed("sl", np.array([0.05, 0.2, 0.5, 0.01, 0.3], np.float32))
    m.output(m.node("QuantizeLinear", [x, sl], "q_last", axis=-1))
    # blocked along axis 1 (block 4: a partial last block), int8 and uint8
    sb = m.feed("sb", (np.abs(m.rng.standard_normal((2, 2, 5))) * 0.1 + 0.02).astype(np.float32))
    zb = m.ints("zb", np.int8, 2, 2, 5, low=-20, high=20)
    qb = m.node("QuantizeLinear", [x, sb, zb], "q_blocked", axis=1, block_size=4)
    m.output(qb)
    m.output(m.node("DequantizeLinear", [qb, sb, zb], "dq_blocked", axis=1, block_size=4))
    zbu = m.ints("zbu", np.uint8, 2, 6, 3, low=100, high=150)
    sbu = m.feed("sbu", (np.abs(m.rng.standard_normal((2, 6, 3))) * 0.1 + 0.02).astype(np.float32))
    m.output(m.node("QuantizeLinear", [x, sbu, zbu], "q_blocked_last", axis=2, block_size=2))
    # DequantizeLinear of int32 (a bias) with a run-time scale, and of uint8 with a computed scale
    qi = m.ints("qi", np.int32, 4, 6, low=-(1 << 20), high=1 << 20)
    m.output(m.node("DequantizeLinear", [qi, m.feed("si", np.array(1e-3, np.float32))], "dq_int32"))
    su = m.node("Mul", [s, m.const("three", np.float32(3))], "s3")
    m.output(m.node("DequantizeLinear", [m.ints("qu", np.uint8, 3, 7), su, z], "dq_computed"))
    # large enough for the kernels' parallel loops (> 65536 elements): blocked along the last axis
    xl = m.f32("xl", 3, 64, 400, scale=3.0)
    sl2 = m.feed("sl2", (np.abs(m.rng.standard_normal((3, 64, 13))) * 0.05 + 0.01).astype(np.float32))
    zl2 = m.ints("zl2", np.uint8, 3, 64, 13, low=60, high=200)
    ql = m.node("QuantizeLinear", [xl, sl2, zl2], "q_large", axis=-1, block_size=32)
    m.output(ql)
    m.output(m.node("DequantizeLinear", [ql, sl2, zl2], "dq_large", axis=-1, block_size=32))
    m.output(m.node("QuantizeLinear", [xl, m.feed("sl3", np.linspace(0.01, 0.1, 64, dtype=np.float32)),
                                       m.ints("zl3", np.int8, 64)], "q_large_axis", axis=1))
    qt = m.node("QuantizeLinear", [xl, s, z], "q_large_tensor")  # per tensor: split into chunks
    m.output(qt)
    m.output(m.node("DequantizeLinear", [qt, s, z], "dq_large_tensor"))
    return m.model("qdq_runtime"), m.feeds


def test_quantize_dequantize_with_runtime_parameters_match_onnxruntime_exactly(tmp_path):
    model, feeds = qdq_model()
    want = ort_run(model, feeds)
    reference = run_graph(import_model(model, name="qdq_runtime"), feeds)
    assert (want["q_tensor"] == 255).any() and (want["q_axis"] == -128).any()  # the cases saturate
    for got in lowered_runs(model, feeds, tmp_path, "qdq_runtime") + [reference]:
        for name, expected in want.items():
            assert got[name].dtype == expected.dtype, name
            np.testing.assert_array_equal(got[name], expected, err_msg=name)


# --- ConvInteger, MatMulInteger, QLinearMatMul, QLinearConv ------------------------------------------


def integer_model(per_channel: bool) -> tuple[onnx.ModelProto, dict]:
    """ConvInteger and MatMulInteger cases; with ``per_channel``, the per-output-channel weight zero points
    ONNX Runtime does not implement (checked against onnx.reference instead)."""
    m = ModelMaker(3)
    # ConvInteger: run-time uint8 weights and zero points (scalar x, per-channel or scalar w), grouped
    x = m.ints("x", np.uint8, 2, 4, 7, 8)
    w = m.ints("w", np.uint8, 6, 2, 3, 3)
    zw = m.ints("zw", np.uint8, 6) if per_channel else m.feed("zw", np.array([201], np.uint8))
    m.output(m.node("ConvInteger", [x, w, m.feed("zx", np.array(121, np.uint8)), zw], "ci_grouped", group=2,
                    pads=[1, 0, 1, 2], strides=[1, 2]))
    if per_channel:
        # 1-D, constant weights with per-channel constant zero points (not one GEMM correction)
        x1 = m.ints("x1", np.uint8, 1, 3, 11)
        w1 = m.const("w1", m.rng.integers(0, 255, (4, 3, 3), endpoint=True).astype(np.uint8))
        m.output(m.node("ConvInteger", [x1, w1, m.const("zx1", np.uint8(3)),
                                        m.const("zw1", np.array([0, 9, 200, 255], np.uint8))], "ci_1d",
                        pads=[2, 1]))
        # 3-D, run-time weights
        x3 = m.ints("x3", np.uint8, 1, 2, 4, 5, 6)
        m.output(m.node("ConvInteger", [x3, m.ints("w3", np.uint8, 3, 2, 2, 3, 2), m.feed(
            "zx3", np.array(7, np.uint8))], "ci_3d", strides=[1, 2, 1], pads=[0, 1, 1, 1, 0, 0]))
        return m.model("integer_per_channel"), m.feeds
    # ConvInteger: run-time weights, no zero points, dilated
    m.output(m.node("ConvInteger", [x, m.ints("w2", np.uint8, 3, 4, 2, 2)], "ci_plain", dilations=[2, 3]))
    # large enough for the parallel loop, int8
    xb = m.ints("xb", np.int8, 1, 8, 20, 20)
    wb = m.ints("wb", np.int8, 16, 8, 3, 3)
    m.output(m.node("ConvInteger", [xb, wb, m.feed("zxb", np.array(-7, np.int8)),
                                    m.feed("zwb", np.array(3, np.int8))], "ci_large", pads=[1, 1, 1, 1]))
    # MatMulInteger with run-time operands and run-time scalar zero points
    a = m.ints("a", np.uint8, 2, 5, 19)
    b = m.ints("b", np.int8, 19, 7)
    m.output(m.node("MatMulInteger", [a, b, m.feed("za", np.array(77, np.uint8)),
                                      m.feed("zb", np.array(-5, np.int8))], "mmi"))
    return m.model("integer_runtime"), m.feeds


def ort_conv_integer(model: onnx.ModelProto, node: onnx.NodeProto, feeds: dict) -> np.ndarray:
    """ConvInteger by ONNX Runtime's float Conv of ``x - zx`` and ``w - zw`` (ONNX Runtime's ConvInteger
    takes per-tensor weight zero points only). Exact: every partial sum here is an integer below 2^24."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    values = [feeds[n] if n in feeds else inits[n] for n in node.input]
    x, w = values[0].astype(np.int64), values[1].astype(np.int64)
    zx = values[2].astype(np.int64).reshape(()) if len(values) > 2 else 0
    zw = values[3].astype(np.int64).reshape((-1,) + (1,) * (w.ndim - 1)) if len(values) > 3 else 0
    conv = onnx.NodeProto()
    conv.CopyFrom(node)
    conv.op_type = "Conv"
    del conv.input[2:]
    graph = helper.make_graph(
        [conv], "conv", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in conv.input],
        [helper.make_tensor_value_info(conv.output[0], TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    operands = {conv.input[0]: (x - zx).astype(np.float32), conv.input[1]: (w - zw).astype(np.float32)}
    y = ort_run(model, operands)[conv.output[0]]
    assert np.abs(y).max() < 1 << 24
    return y.astype(np.int32)


@pytest.mark.parametrize("per_channel", [False, True])
def test_conv_integer_and_matmul_integer_with_runtime_operands(tmp_path, per_channel):
    model, feeds = integer_model(per_channel)
    if per_channel:
        want = {node.output[0]: ort_conv_integer(model, node, feeds) for node in model.graph.node}
    else:
        want = ort_run(model, feeds)
    reference = run_graph(import_model(model, name=model.graph.name), feeds)
    for got in lowered_runs(model, feeds, tmp_path, model.graph.name) + [reference]:
        for name, expected in want.items():
            assert got[name].dtype == expected.dtype, name
            np.testing.assert_array_equal(got[name], expected, err_msg=name)


def qlinear_model() -> tuple[onnx.ModelProto, dict]:
    m = ModelMaker(4)

    def scale(name: str, value: float) -> str:
        return m.feed(name, np.array(value, np.float32))

    # QLinearMatMul, 3-D uint8 and 2-D int8, every scale and zero point a graph input
    a = m.ints("a", np.uint8, 2, 4, 16)
    b = m.ints("b", np.uint8, 16, 5)
    m.output(m.node("QLinearMatMul", [a, scale("sa", 0.02), m.feed("za", np.array(120, np.uint8)), b,
                                      scale("sb", 0.015), m.feed("zb", np.array(130, np.uint8)),
                                      scale("sy", 0.3), m.feed("zy", np.array(128, np.uint8))], "qmm_u8"))
    ai = m.ints("ai", np.int8, 3, 16)
    bi = m.ints("bi", np.int8, 16, 6)
    m.output(m.node("QLinearMatMul", [ai, scale("sai", 0.05), m.feed("zai", np.array(-3, np.int8)), bi,
                                      scale("sbi", 0.01), m.feed("zbi", np.array(2, np.int8)),
                                      scale("syi", 0.2), m.feed("zyi", np.array(-10, np.int8))], "qmm_i8"))
    # QLinearConv with run-time weights and scales, per-tensor
    x = m.ints("x", np.uint8, 1, 3, 8, 8)
    w = m.ints("w", np.uint8, 4, 3, 3, 3)
    m.output(m.node("QLinearConv", [x, scale("sx", 0.01), m.feed("zx", np.array(100, np.uint8)), w,
                                    m.feed("sw", np.array([0.02], np.float32)),
                                    m.feed("zw", np.array([128], np.uint8)), scale("sy2", 0.2),
                                    m.feed("zy2", np.array(90, np.uint8))], "qconv", pads=[1, 1, 1, 1]))
    # QLinearConv, int8, per-output-channel run-time weight scales, grouped, strided
    xi = m.ints("xi", np.int8, 2, 4, 9, 7)
    wi = m.ints("wi", np.int8, 6, 2, 3, 3)
    swi = m.feed("swi", np.linspace(0.005, 0.03, 6, dtype=np.float32))
    m.output(m.node("QLinearConv", [xi, scale("sxi", 0.02), m.feed("zxi", np.array(-5, np.int8)), wi, swi,
                                    m.feed("zwi", np.zeros(6, np.int8)), scale("syi2", 0.15),
                                    m.feed("zyi2", np.array(3, np.int8))], "qconv_i8",
                    group=2, strides=[2, 1], pads=[0, 1, 2, 1]))
    return m.model("qlinear_runtime"), m.feeds


def test_qlinear_ops_with_runtime_scales_match_onnxruntime(tmp_path):
    """With run-time scales, QLinearMatMul / QLinearConv stay in QDQ form (DequantizeLinear -> float op ->
    QuantizeLinear; fold_qdq needs constant scales). ONNX Runtime requantises the integer accumulator once
    (``rint(acc * sa * sb / sy)``) where the QDQ form rounds ``(sum of products of dequantized values) /
    sy``: the float rounding differs, so a value near a .5 tie may land one step away; nothing more."""
    model, feeds = qlinear_model()
    want = ort_run(model, feeds)
    reference = run_graph(import_model(model, name="qlinear_runtime"), feeds)
    qdq = {"QuantizeLinear", "DequantizeLinear", "lowering::FusedConv"}  # fold_qdq left them
    for got in lowered_runs(model, feeds, tmp_path, "qlinear_runtime", qdq) + [reference]:
        for name, expected in want.items():
            assert got[name].dtype == expected.dtype, name
            diff = np.abs(got[name].astype(np.int64) - expected.astype(np.int64))
            assert diff.max() <= 1 and (diff == 0).mean() > 0.97, name
    for name in ("qconv", "qconv_i8", "qmm_u8", "qmm_i8"):
        assert len(np.unique(want[name])) > 8, name  # not all saturated


def test_unsupported_runtime_cases_are_one_line_errors(tmp_path):
    m = ModelMaker(5)
    x = m.f32("x", 1, 2, 3, 3, 3, 3)  # a 4-D convolution
    m.output(m.node("Conv", [x, m.f32("w", 2, 2, 2, 2, 2, 2)], "conv4d"))
    path = tmp_path / "bad.onnx"
    onnx.save(m.model("bad"), path)
    with pytest.raises(LoweringError) as info:
        compile_model(path, output=tmp_path / "bad.lwr", options=CompileOptions(targets=("cpu",)))
    message = str(info.value)
    assert "conv4d" in message and "rank-6" in message and "\n" not in message


def qdq16_model() -> tuple[onnx.ModelProto, dict]:
    m = ModelMaker(6)
    x = m.f32("x", 3, 8, 10, scale=3000.0)
    m.feeds[x][0, 0, :4] = [0.25, -0.25, 0.75, -0.75]  # ties at scale 0.5
    m.feeds[x][2, 7, :2] = [1e9, -1e9]  # saturation
    for dtype, name in ((np.int16, "i16"), (np.uint16, "u16")):
        low, high = (-300, 300) if dtype == np.int16 else (30000, 35000)
        s = m.feed(f"s_{name}", np.array(0.5, np.float32))
        z = m.feed(f"z_{name}", np.array(low + 17, dtype))
        q = m.node("QuantizeLinear", [x, s, z], f"q_{name}")
        m.output(q)
        m.output(m.node("DequantizeLinear", [q, s, z], f"dq_{name}"))
        sa = m.feed(f"sa_{name}", np.linspace(0.05, 2.0, 8, dtype=np.float32))
        za = m.ints(f"za_{name}", dtype, 8, low=low, high=high)
        qa = m.node("QuantizeLinear", [x, sa, za], f"qa_{name}", axis=1)
        m.output(qa)
        m.output(m.node("DequantizeLinear", [qa, sa, za], f"dqa_{name}", axis=1))
        sb = m.feed(f"sb_{name}", (np.abs(m.rng.standard_normal((3, 8, 4))) + 0.1).astype(np.float32))
        zb = m.ints(f"zb_{name}", dtype, 3, 8, 4, low=low, high=high)
        qb = m.node("QuantizeLinear", [x, sb, zb], f"qb_{name}", axis=2, block_size=3)
        m.output(qb)
        m.output(m.node("DequantizeLinear", [qb, sb, zb], f"dqb_{name}", axis=2, block_size=3))
    return m.model("qdq16_runtime"), m.feeds


@pytest.mark.parametrize("threads", [1, 4])
def test_16_bit_quantize_dequantize_with_runtime_parameters_match_onnxruntime(threads):
    """int16 / uint16 QuantizeLinear and DequantizeLinear (per tensor, per axis, blocked), built straight
    from the imported graph (the cpu kernels, not the whole artifact pipeline)."""
    model, feeds = qdq16_model()
    want = ort_run(model, feeds)
    graph = import_model(model, name="qdq16_runtime")
    assert {"QuantizeLinear", "DequantizeLinear"} == {n.op for n in graph.nodes}
    got = build_cpu(graph).run(feeds, threads)
    reference = run_graph(graph, feeds)
    for index, (name, expected) in enumerate(want.items()):
        for value in (got[graph.output_names[index]], reference[name]):
            assert value.dtype == expected.dtype, name
            np.testing.assert_array_equal(value, expected, err_msg=name)
    assert (want["q_i16"] == 32767).any() and (want["q_u16"] == 0).any()  # the cases saturate

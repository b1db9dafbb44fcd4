"""The cpu target's kernels for ONNX Runtime's dynamic quantization (``quantize_dynamic``):
DynamicQuantizeLinear (three outputs), MatMulInteger and ConvInteger (int32 outputs, zero points that may
be runtime scalars), Cast, and the float epilogue that multiplies by a runtime scale. Integer outputs must
equal the reference interpreter exactly; DynamicQuantizeLinear must also equal ONNX Runtime bit for bit.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lowering.ir import DType
from targets.cpu.target import CpuTarget

from .cpu_harness import GraphMaker, check_exactly
from .test_cpu_quantized import GEMM_PATHS, build_options

pytestmark = pytest.mark.target_cpu


def _dql_inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    cases = [
        np.zeros((3, 5), np.float32),  # empty range: scale 1, zero point 0 (ONNX Runtime)
        np.full((4, 4), 2.5, np.float32),  # all positive: zero point 0
        np.full((7,), -3.0, np.float32),  # all negative: zero point 255
        np.array([0.5, 1.5, 2.5, -1.0, -0.0, 255.0, -255.0], np.float32),  # ties to even
        rng.standard_normal((2, 3, 17, 19)).astype(np.float32),
        (rng.standard_normal((300,)) * 1e-6).astype(np.float32),
        (rng.standard_normal((300,)) * 1e5 + 3e4).astype(np.float32),
        rng.standard_normal((1, 70000)).astype(np.float32),  # the parallel reduction
    ]
    for _ in range(40):
        x = rng.standard_normal(int(rng.integers(1, 200))) * 10.0 ** rng.uniform(-4, 4) + rng.uniform(-2, 2)
        cases.append(x.astype(np.float32))
    return cases


def _ort_dynamic_quantize(x: np.ndarray) -> list[np.ndarray]:
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


@pytest.mark.parametrize("threads", [1, 4])
def test_dynamic_quantize_linear_exact_vs_reference_and_ort(threads):
    for x in _dql_inputs():
        m = GraphMaker("dql")
        v = m.input(*x.shape)
        m.feeds[v.name] = x
        m._env[id(v)] = x
        y, s, z = m.node_outputs("DynamicQuantizeLinear", v, outputs=3)
        m.output(y, s, z)
        built = check_exactly(m, threads=threads)
        got = list(built.run(m.feeds, threads).values())
        for g, w in zip(got, _ort_dynamic_quantize(x)):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g.reshape(-1), np.asarray(w).reshape(-1),
                                          err_msg=f"x={x.reshape(-1)[:4]}")


def test_dynamic_quantize_linear_unused_outputs():
    """Only the quantized tensor used: the scale and zero point are still written (into scratch)."""
    m = GraphMaker("dql_y")
    y, _, _ = m.node_outputs("DynamicQuantizeLinear", m.input(4, 9), outputs=3)
    m.output(y)
    check_exactly(m)


def _dynamic_matmul_graph(a_dtype, b_dtype, seed=0) -> GraphMaker:
    m = GraphMaker("mmi", seed=seed)
    outs = []
    # runtime A with a runtime zero point, constant B and zero point (ONNX Runtime's dynamic MatMul)
    a, za = m.qinput(5, 37, dtype=a_dtype), m.qinput(dtype=a_dtype)
    b = m.const(m.rng.integers(np.iinfo(b_dtype).min, np.iinfo(b_dtype).max, (37, 29), endpoint=True)
                .astype(b_dtype))
    zb = m.const(np.asarray(3 if b_dtype == np.int8 else 140, b_dtype))
    outs.append(m.node("MatMulInteger", a, b, za, zb))
    outs.append(m.node("MatMulInteger", a, b, za))  # no B zero point
    outs.append(m.node("MatMulInteger", a, b))  # no zero points
    # N-d broadcasting: a batch of A against one B, and a batch of both (runtime B, runtime zero points)
    a3 = m.qinput(2, 3, 6, 40, dtype=a_dtype)
    b3 = m.const(m.rng.integers(-128, 127, (40, 17), endpoint=True).astype(np.int8))
    outs.append(m.node("MatMulInteger", a3, b3, za))
    b4 = m.qinput(3, 40, 9, dtype=b_dtype)
    zb4 = m.qinput(dtype=b_dtype)
    outs.append(m.node("MatMulInteger", a3, b4, za, zb4))
    # constant A against a runtime B (runtime B zero point): the row corrections at run time
    a5 = m.const(m.rng.integers(0, 255, (7, 40), endpoint=True).astype(np.uint8))
    outs.append(m.node("MatMulInteger", a5, b4, m.const(np.asarray(200, np.uint8)), zb4))
    # 1-D operands
    a6 = m.qinput(37, dtype=a_dtype)
    outs.append(m.node("MatMulInteger", a6, b, za, zb))
    return m.output(*outs)


@pytest.mark.parametrize("a_dtype, b_dtype", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])
@pytest.mark.parametrize("isa, define", GEMM_PATHS)
def test_matmul_integer_exact(isa, define, a_dtype, b_dtype):
    m = _dynamic_matmul_graph(a_dtype, b_dtype)
    built = check_exactly(m, threads=1, **build_options(isa, define))
    single = built.run(m.feeds, threads=1)
    for name, value in built.run(m.feeds, threads=3).items():
        np.testing.assert_array_equal(value, single[name], err_msg=name)


def _conv_integer_graph(x_dtype, w_dtype, seed=0) -> GraphMaker:
    m = GraphMaker("convi", seed=seed)
    x, zx = m.qinput(2, 6, 13, 11, dtype=x_dtype), m.qinput(dtype=x_dtype)
    info = np.iinfo(w_dtype)

    def w(*shape):
        return m.const(m.rng.integers(info.min, info.max, shape, endpoint=True).astype(w_dtype))

    zw = m.const(np.asarray(-5 if w_dtype == np.int8 else 131, w_dtype))
    outs = [
        m.node("ConvInteger", x, w(8, 6, 3, 3), zx, zw, pads=(1, 1, 1, 1)),
        m.node("ConvInteger", x, w(8, 6, 3, 3), zx, strides=(2, 2), pads=(0, 1, 2, 1)),
        m.node("ConvInteger", x, w(4, 6, 1, 1), zx, zw),
        m.node("ConvInteger", x, w(6, 3, 3, 3), zx, zw, group=2, dilations=(2, 1), pads=(2, 1, 2, 1)),
        m.node("ConvInteger", x, w(6, 1, 3, 3), zx, zw, group=6, pads=(1, 1, 1, 1)),  # depthwise
        m.node("ConvInteger", x, w(5, 6, 3, 3), m.const(np.asarray(7, x_dtype)), zw),  # constant zero point
        m.node("ConvInteger", x, w(5, 6, 3, 3)),  # no zero points
    ]
    x1 = m.qinput(1, 4, 23, dtype=x_dtype)  # 1-D convolution
    outs.append(m.node("ConvInteger", x1, w(3, 4, 5), zx, zw, pads=(2, 2)))
    return m.output(*outs)


@pytest.mark.parametrize("x_dtype, w_dtype", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])
@pytest.mark.parametrize("isa, define", GEMM_PATHS)
def test_conv_integer_exact(isa, define, x_dtype, w_dtype):
    m = _conv_integer_graph(x_dtype, w_dtype)
    built = check_exactly(m, threads=1, **build_options(isa, define))
    single = built.run(m.feeds, threads=1)
    for name, value in built.run(m.feeds, threads=3).items():
        np.testing.assert_array_equal(value, single[name], err_msg=name)


def test_cast():
    m = GraphMaker("cast")
    i32 = m.qinput(3, 50, dtype=np.int32, low=-(1 << 31), high=(1 << 31) - 1)
    u8, i8 = m.qinput(4, 5, dtype=np.uint8), m.qinput(4, 5, dtype=np.int8)
    m.output(
        m.node("Cast", i32, to=TensorProto.FLOAT),  # rounds to nearest like static_cast
        m.node("Cast", u8, to=TensorProto.FLOAT),
        m.node("Cast", i8, to=TensorProto.INT32),
        m.node("Cast", u8, to=TensorProto.UINT8),
    )
    check_exactly(m)


def test_cast_to_float16_is_supported():
    """(float16 casts are checked bit for bit in tests/targets/test_cpu_dtypes.py)"""
    m = GraphMaker("cast_f16")
    y = m.node("Cast", m.input(3), to=TensorProto.FLOAT16)
    m.output(y)
    assert CpuTarget().unsupported_reason(m.graph.nodes[0]) is None


def test_dynamic_quantized_layer():
    """ONNX Runtime's dynamic MatMul: DynamicQuantizeLinear -> MatMulInteger (runtime zero point) -> Cast ->
    Mul by the runtime scale product -> Add bias -> Relu; the float epilogue reads 0-d runtime tensors."""
    m = GraphMaker("layer", seed=3)
    x = m.input(4, 48)
    xq, xs, xz = m.node_outputs("DynamicQuantizeLinear", x, outputs=3)
    w = m.const(m.rng.integers(-127, 127, (48, 24), endpoint=True).astype(np.int8))
    acc = m.node("MatMulInteger", xq, w, xz, m.const(np.asarray(0, np.int8)))
    scale = m.node("Mul", xs, m.const(np.asarray(0.0123, np.float32)))
    y = m.node("Mul", m.node("Cast", acc, to=TensorProto.FLOAT), scale)
    y = m.node("Relu", m.node("Add", y, m.weight(24)))
    m.output(y, xs, xz)
    assert m.graph.nodes[0].outputs[1].type.dtype is DType.FLOAT32
    check_exactly(m)


def test_runtime_weight_zero_point():
    """A run-time weight zero point takes the direct ConvInteger kernel (kernels_conv_runtime.c)."""
    m = GraphMaker("convi_rt_zp")
    x = m.qinput(1, 2, 5, 5, dtype=np.uint8)
    w = m.const(np.ones((2, 2, 3, 3), np.int8))
    y = m.node("ConvInteger", x, w, m.qinput(dtype=np.uint8), m.qinput(dtype=np.int8))
    m.output(y)
    assert CpuTarget().unsupported_reason(m.graph.nodes[0]) is None
    check_exactly(m)

"""The cuda target's kernels, op family by op family, against the reference interpreter.

No GPU: each graph's kernels.cu runs on the emulator (every thread of every block in turn, through the
real CudaExecutor over a simulated driver), and the same source goes through nvcc with warnings as errors
when nvcc is installed. One graph per family holds many independent cases (one compile each).
"""

from __future__ import annotations

import numpy as np

from lowering.opinfo import DOMAIN

from .harness import GraphMaker, check_emulated


def fused(m: GraphMaker, op: str, *inputs, **attrs):
    return m.node(op, *inputs, domain=DOMAIN, **attrs)


CONV_CASES = [  # (input shape, weight shape, attrs)
    ((1, 8, 10, 10), (16, 8, 3, 3), {"pads": (1, 1, 1, 1)}),
    ((2, 3, 17, 13), (7, 3, 3, 3), {"strides": (2, 2)}),  # 7 channels: a partial channel tile
    ((1, 4, 12, 12), (8, 4, 3, 3), {"dilations": (2, 2), "pads": (2, 2, 2, 2)}),
    ((1, 8, 9, 9), (12, 4, 3, 3), {"group": 2, "pads": (1, 0, 1, 2)}),
    ((1, 6, 11, 11), (6, 1, 3, 3), {"group": 6, "pads": (1, 1, 1, 1)}),  # depthwise
    ((2, 4, 12, 12), (8, 1, 5, 5), {"group": 4, "strides": (2, 2), "auto_pad": "SAME_UPPER"}),
    ((1, 5, 8, 8), (5, 1, 3, 3), {"group": 5, "dilations": (2, 2), "auto_pad": "SAME_LOWER",
                                  "strides": (1, 2)}),
    ((1, 6, 8, 8), (9, 2, 3, 3), {"group": 3}),  # 3 channels per group: a 3-wide tile
    ((1, 16, 9, 9), (8, 16, 1, 1), {"strides": (2, 2)}),
    ((1, 3, 20), (4, 3, 5), {"pads": (2, 1), "strides": (2,)}),  # 1-D
    ((1, 2, 31), (4, 1, 3), {"group": 2, "dilations": (3,)}),  # 1-D depthwise, channel multiplier 2
    ((1, 2, 6, 6), (2, 1, 3, 3), {"group": 2, "pads": (4, 4, 4, 4)}),  # pads wider than the kernel
]


def test_conv_variants():
    m = GraphMaker("conv")
    outs = []
    for i, (xs, ws, attrs) in enumerate(CONV_CASES):
        bias = m.weight(ws[0]) if i % 3 != 2 else None
        outs.append(m.node("Conv", m.input(*xs), m.weight(*ws), bias, **attrs))
    check_emulated(m.output(*outs))


def test_fused_conv_epilogues():
    m = GraphMaker("fused_conv")
    x = m.input(2, 8, 9, 9)
    acts = [("Relu", ()), ("LeakyRelu", (0.1,)), ("Clip", (-0.5, 0.7)), ("Sigmoid", ()), ("Tanh", ()),
            ("Gelu", (0.0,)), ("", ())]
    outs = []
    for i, (act, params) in enumerate(acts):
        res = [m.input(2, 16, 9, 9), m.input(1, 16, 1, 1), None][i % 3]
        outs.append(fused(m, "FusedConv", x, m.weight(16, 8, 3, 3), m.weight(16), res, pads=(1, 1, 1, 1),
                          activation=act, activation_params=params))
    outs.append(fused(m, "FusedConv", x, m.weight(8, 1, 3, 3), m.weight(8), m.input(2, 8, 5, 5), group=8,
                      strides=(2, 2), pads=(1, 1, 1, 1), activation="Relu", activation_params=()))
    outs.append(fused(m, "FusedConv", x, m.weight(4, 8, 1, 1), None, m.input(2, 4, 1, 1),
                      activation="Clip", activation_params=(0.0, 6.0)))
    check_emulated(m.output(*outs))


def test_gemm_variants():
    m = GraphMaker("gemm")
    outs = []
    a, at = m.input(5, 7), m.input(7, 5)
    for trans_a in (0, 1):
        for trans_b in (0, 1):
            b = m.weight(*((9, 7) if trans_b else (7, 9)))
            outs.append(m.node("Gemm", at if trans_a else a, b, m.weight(9), transA=trans_a, transB=trans_b))
    outs.append(m.node("Gemm", a, m.input(9, 7), m.input(5, 1), transB=1, alpha=0.5, beta=2.0))
    outs.append(m.node("Gemm", a, m.weight(7, 9), m.weight(5, 9), beta=-1.0))
    outs.append(m.node("Gemm", a, m.weight(7, 9), m.const(np.float32(0.25))))
    outs.append(m.node("Gemm", m.input(1, 300), m.weight(70, 300), None, transB=1))
    outs.append(m.node("Gemm", m.input(37, 50), m.weight(50, 45), None))  # 4x4 tiles with ragged edges
    outs += [
        fused(m, "FusedGemm", m.input(33, 40), m.weight(40, 70), m.weight(70), m.input(33, 70),
              activation="Relu", activation_params=()),
        fused(m, "FusedGemm", a, m.weight(9, 7), None, m.input(1, 9), transB=1, alpha=2.0,
              activation="LeakyRelu", activation_params=(0.2,)),
        fused(m, "FusedGemm", m.input(20, 60), m.weight(60, 30), m.weight(30), None,
              activation="Gelu", activation_params=(1.0,)),
    ]
    check_emulated(m.output(*outs))


def test_matmul_variants():
    m = GraphMaker("matmul")
    outs = [
        m.node("MatMul", m.input(8, 20), m.weight(20, 30)),
        m.node("MatMul", m.input(2, 5, 20), m.weight(20, 70)),
        m.node("MatMul", m.input(2, 3, 6, 16), m.input(2, 3, 16, 5)),
        m.node("MatMul", m.input(2, 1, 6, 16), m.input(1, 3, 16, 5)),  # broadcast batch: index tables
        m.node("MatMul", m.input(4, 6, 16), m.weight(4, 16, 5)),
        m.node("MatMul", m.weight(6, 16), m.input(3, 16, 5)),
        m.node("MatMul", m.input(16), m.weight(16, 5)),
        m.node("MatMul", m.input(3, 6, 16), m.input(16)),
        fused(m, "FusedMatMul", m.input(2, 3, 17, 8), m.input(2, 3, 19, 8), None, None, transB=1, alpha=0.5),
        fused(m, "FusedMatMul", m.input(2, 9, 24), m.weight(24, 20), m.weight(20), m.input(2, 9, 20),
              activation="Gelu", activation_params=(0.0,)),
    ]
    check_emulated(m.output(*outs))


def test_elementwise_ops_and_broadcasting():
    m = GraphMaker("elementwise")
    x, y, pos = m.input(2, 3, 4, 5), m.input(2, 3, 4, 5), m.input(2, 3, 4, 5, positive=True)
    outs = [m.node(op, x, y) for op in ("Add", "Sub", "Mul", "Min", "Max")] + [m.node("Div", x, pos)]
    outs += [m.node(op, x) for op in ("Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", "Erf", "Floor",
                                      "Ceil", "Sign")]
    outs += [m.node("Sqrt", pos), m.node("Log", pos), m.node("Reciprocal", pos)]
    outs += [m.node("LeakyRelu", x, alpha=0.3)]
    outs += [m.node("Pow", pos, m.const(np.float32(2.0))), m.node("Pow", pos, m.const(np.float32(1.7)))]
    outs += [
        m.node("Clip", x, m.const(np.float32(-0.5)), m.const(np.float32(0.5))),
        m.node("Clip", x, None, m.const(np.float32(0.2))),
        m.node("Add", x, m.input(3, 1, 1)),
        m.node("Mul", x, m.input(5)),
        m.node("Sub", m.input(1, 3, 1, 5), x),
        m.node("Div", x, m.const(np.float32(4.0))),
        m.node("Add", m.input(4, 1), m.input(1, 6)),
        m.node("Mul", m.input(2, 1, 4, 1), m.input(1, 3, 1, 5)),
        m.node("Add", m.input(1), m.input(1)),
        m.node("Max", x, y, pos),
        m.node("Mod", x, pos, fmod=1),
    ]
    check_emulated(m.output(*outs))


def test_fused_elementwise_bodies():
    m = GraphMaker("fused_elementwise")
    x, b, s = m.input(2, 8, 6, 6), m.input(1, 8, 1, 1), m.input(6)
    # r3 = x + b; r4 = Clip(r3, 0, 6); r5 = r4 * s; r6 = LeakyRelu(r5, 0.1); r7 = r6 - x
    one = fused(m, "FusedElementwise", x, b, s, body_ops=("Add", "Clip", "Mul", "LeakyRelu", "Sub"),
                body_args=(0, 1, 3, 4, 2, 5, 6, 0), body_params=(0.0, 6.0, 0.1))
    # gelu(tanh form) of x * 0.5 + sigmoid(x)
    two = fused(m, "FusedElementwise", x, m.const(np.float32(0.5)),
                body_ops=("Mul", "Sigmoid", "Add", "Gelu"), body_args=(0, 1, 0, 2, 3, 4), body_params=(1.0,))
    check_emulated(m.output(one, two))


def test_pooling():
    m = GraphMaker("pool")
    x = m.input(2, 3, 11, 13)
    outs = [
        m.node("MaxPool", x, kernel_shape=(2, 2), strides=(2, 2)),
        m.node("MaxPool", x, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
        m.node("MaxPool", x, kernel_shape=(3, 3), strides=(2, 2), ceil_mode=1),
        m.node("MaxPool", x, kernel_shape=(2, 3), dilations=(2, 2)),
        m.node("AveragePool", x, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
        m.node("AveragePool", x, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), count_include_pad=1),
        m.node("AveragePool", x, kernel_shape=(2, 2), strides=(2, 2), ceil_mode=1),
        m.node("AveragePool", m.input(1, 4, 20), kernel_shape=(4,), strides=(3,), pads=(1, 2)),
        m.node("GlobalAveragePool", x),
        m.node("GlobalMaxPool", x),
        m.node("GlobalAveragePool", m.input(1, 5, 17)),
    ]
    check_emulated(m.output(*outs))


def test_softmax_layernorm_and_data_movement():
    m = GraphMaker("data")
    x = m.input(2, 3, 4, 5)
    outs = [
        m.node("Softmax", x, axis=-1),
        m.node("Softmax", x, axis=1),
        m.node("LogSoftmax", x, axis=2),
        m.node("Softmax", m.input(3, 10) , axis=0),
        m.node("LayerNormalization", x, m.weight(5), m.weight(5), axis=-1, epsilon=1e-5),
        m.node("LayerNormalization", x, m.weight(4, 5), None, axis=2),
        m.node("LayerNormalization", x, m.const(np.float32(1.5)), m.weight(1), axis=1),
        m.node("Transpose", x, perm=(0, 2, 3, 1)),
        m.node("Transpose", x, perm=(3, 1, 0, 2)),
        m.node("Transpose", m.input(6, 7)),
        m.node("Concat", x, m.input(2, 2, 4, 5), m.input(2, 1, 4, 5), axis=1),
        m.node("Concat", x, m.input(2, 3, 4, 1), axis=-1),
        m.node("Concat", m.input(1, 4), m.input(2, 4), axis=0),
        m.node("BatchNormalization", x, m.weight(3), m.weight(3), m.weight(3),
               m.const(np.abs(m.rng.standard_normal(3)).astype(np.float32) + 0.5), epsilon=1e-3),
    ]
    view = m.node("Flatten", m.node("Relu", x), axis=1)  # a view: no kernel, the reader aliases its input
    outs.append(m.node("Gemm", view, m.weight(60, 7)))
    outs.append(fused(m, "Copy", m.input(3, 4)))
    module = check_emulated(m.output(*outs))
    assert not any("Flatten" in step["kernel"] for step in module.steps)

"""Facts about ops that the reference interpreter, passes and targets share.

- which ops are views (no data movement: the output aliases the input's storage);
- which ops are elementwise, their arity and how many float parameters they carry;
- the fused ops of the ``lowering`` domain and their activation epilogues;
- convolution and pooling geometry (pads, strides, dilations, output sizes, ``auto_pad``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .ir import Node

DOMAIN = "lowering"

#: Ops whose output has the same bytes as input 0, in the same order.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})

#: Unary elementwise ops -> number of float parameters they carry when fused.
UNARY_OPS = {
    "Relu": 0, "LeakyRelu": 1, "Clip": 2, "Sigmoid": 0, "Tanh": 0, "Neg": 0, "Abs": 0, "Exp": 0,
    "Sqrt": 0, "Identity": 0, "Gelu": 1,
}
BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div"})

#: Activations a Conv/Gemm epilogue can apply (a subset of UNARY_OPS).
EPILOGUE_ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Gelu"})

FLOAT_MAX = 3.4028234663852886e38


def activation_params(node: Node) -> tuple[float, ...] | None:
    """The float parameters of a standard unary op, or None when they are not compile-time constants."""
    if node.op == "LeakyRelu":
        return (float(node.attr("alpha", 0.01)),)
    if node.op == "Gelu":  # ONNX opset 20: approximate "none" (erf form) or "tanh"; the parameter says which
        approximate = node.attr("approximate", "none")
        return (1.0,) if approximate == "tanh" else (0.0,) if approximate == "none" else None
    if node.op == "Clip":
        bounds = []
        for i, default in ((1, -FLOAT_MAX), (2, FLOAT_MAX)):
            v = node.input(i)
            if v is None:
                bounds.append(default)
            elif v.is_const and v.const.size == 1:
                bounds.append(float(v.const.reshape(())))
            else:
                return None
        return tuple(bounds)
    return ()


@dataclass(frozen=True)
class WindowGeometry:
    """Sliding-window geometry over the spatial axes of an N-C-spatial tensor."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out: tuple[int, ...]


def window_geometry(node: Node, spatial: tuple[int, ...], kernel: tuple[int, ...],
                    ceil_mode: bool = False) -> WindowGeometry:
    """Resolve strides, dilations, pads (including ``auto_pad``) and output sizes for Conv/pooling."""
    d = len(spatial)
    strides = tuple(node.attr("strides", (1,) * d))
    dilations = tuple(node.attr("dilations", (1,) * d))
    pads = tuple(node.attr("pads", (0,) * (2 * d)))
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, dil in zip(spatial, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * dil + 1 - size)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        pads = tuple(begin) + tuple(end)
    elif auto_pad == "VALID":
        pads = (0,) * (2 * d)
    out = []
    for i in range(d):
        extent = (kernel[i] - 1) * dilations[i] + 1
        span = spatial[i] + pads[i] + pads[i + d] - extent
        if ceil_mode:
            o = math.ceil(span / strides[i]) + 1
            if (o - 1) * strides[i] >= spatial[i] + pads[i]:
                o -= 1  # the last window must start inside the input or the left padding
        else:
            o = span // strides[i] + 1
        out.append(o)
    return WindowGeometry(tuple(kernel), strides, dilations, pads[:d], pads[d:], tuple(out))

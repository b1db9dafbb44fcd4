"""Facts about ops that the reference interpreter, passes and targets share.

- which ops are views (no data movement: the output aliases the input's storage);
- which ops are elementwise, their arity, the float parameters they carry and their operand and result
  element types (``elementwise_result``: the typing rule of fused elementwise bodies);
- the fused ops of the ``lowering`` domain and their activation epilogues;
- convolution and pooling geometry (pads, strides, dilations, output sizes, ``auto_pad``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .ir import DType, Node

DOMAIN = "lowering"

#: Ops whose output has the same bytes as input 0, in the same order.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})

#: Unary elementwise ops -> number of float parameters they carry when fused. They map a float type to
#: itself (``FLOAT_DTYPES``; ``INTEGER_UNARY_OPS`` also integers to the same type); quantized graphs turn
#: them into lookup tables.
UNARY_OPS = {
    "Relu": 0, "LeakyRelu": 1, "Clip": 2, "Sigmoid": 0, "Tanh": 0, "Neg": 0, "Abs": 0, "Exp": 0,
    "Sqrt": 0, "Identity": 0, "Gelu": 1, "Erf": 0, "Reciprocal": 0, "Log": 0, "Floor": 0, "Ceil": 0,
    "Round": 0, "Sign": 0,
    "Cos": 0, "Sin": 0, "Tan": 0, "Acos": 0, "Asin": 0, "Atan": 0, "Cosh": 0, "Sinh": 0, "Acosh": 0,
    "Asinh": 0, "Atanh": 0, "Softplus": 0, "Softsign": 0, "HardSwish": 0, "Mish": 0,
    "Elu": 1, "Celu": 1, "ThresholdedRelu": 1, "Swish": 1, "Selu": 2, "HardSigmoid": 2, "Shrink": 2,
}
#: The float parameters of the parameterized unary activations: (attribute, default) in parameter order.
UNARY_ATTRS = {
    "Elu": (("alpha", 1.0),), "Celu": (("alpha", 1.0),), "ThresholdedRelu": (("alpha", 1.0),),
    "Swish": (("alpha", 1.0),), "Selu": (("alpha", 1.6732632423543772), ("gamma", 1.0507009873554805)),
    "HardSigmoid": (("alpha", 0.2), ("beta", 0.5)), "Shrink": (("bias", 0.0), ("lambd", 0.5)),
}
INTEGER_UNARY_OPS = frozenset({"Neg", "Abs", "Sign", "Identity"})
#: Binary arithmetic: two operands of one numeric type give that type (Pow: a float32 base and any numeric
#: exponent). Min and Max are variadic in ONNX; with two inputs they are binary elementwise ops. PRelu is
#: ``x < 0 ? x * slope : x`` (the slope broadcasts to x).
BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Min", "Max", "PRelu"})
#: Variadic elementwise ops that are not body ops themselves: a chain of Add (Mean: then a Div by the count).
VARIADIC_OPS = frozenset({"Sum", "Mean"})
#: Comparisons: two operands of one numeric type (bool too, for Equal) give bool.
COMPARE_OPS = frozenset({"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"})
#: Logic on bool tensors.
LOGIC_OPS = frozenset({"And", "Or", "Xor"})
#: Bitwise ops on integer tensors (the result has the operands' type). BitShift's parameter is its
#: direction (0: LEFT, 1: RIGHT); a shift by a negative amount or by the width or more gives 0 (-1 for a
#: right shift of a negative signed value), as opset 28 defines it.
BITWISE_OPS = frozenset({"BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitShift"})
INTEGER_DTYPES = (DType.INT64, DType.INT32, DType.INT8, DType.UINT8, DType.INT16, DType.UINT16, DType.UINT32,
                  DType.UINT64)
UNSIGNED_DTYPES = (DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64)
#: Float element types elementwise ops compute on. float16 and bfloat16 are stored in 16 bits and computed
#: in float32, each op's result rounded to the 16-bit type (numpy's float16 and ml_dtypes' bfloat16
#: arithmetic); float64 is computed in double.
FLOAT_DTYPES = (DType.FLOAT32, DType.FLOAT16, DType.FLOAT64, DType.BFLOAT16)
#: Elementwise ops whose result type is not their operands' -> (operands, float parameters when fused).
#: Cast's parameter is its ONNX ``to`` code; IsInf's are ``detect_positive`` and ``detect_negative``; Mod's
#: is ``fmod`` (1: C fmod, the dividend's sign; 0: the divisor's sign, numpy's mod).
TYPED_OPS = {
    "Not": (1, 0), "IsNaN": (1, 0), "IsInf": (1, 2), "Cast": (1, 1), "Where": (3, 0), "Mod": (2, 1),
    "BitwiseAnd": (2, 0), "BitwiseOr": (2, 0), "BitwiseXor": (2, 0), "BitwiseNot": (1, 0), "BitShift": (2, 1),
    **{op: (2, 0) for op in COMPARE_OPS | LOGIC_OPS},
}
#: Every op a ``lowering::FusedElementwise`` body can hold.
BODY_OPS = frozenset(UNARY_OPS) | BINARY_OPS | frozenset(TYPED_OPS)

#: ONNX TensorProto element-type codes of the types elementwise ops compute on (Cast's ``to``).
ONNX_DTYPE_CODES = {1: DType.FLOAT32, 2: DType.UINT8, 3: DType.INT8, 4: DType.UINT16, 5: DType.INT16,
                    6: DType.INT32, 7: DType.INT64, 9: DType.BOOL, 10: DType.FLOAT16, 11: DType.FLOAT64,
                    12: DType.UINT32, 13: DType.UINT64, 16: DType.BFLOAT16}
NUMERIC_DTYPES = FLOAT_DTYPES + INTEGER_DTYPES
STORED_DTYPES = NUMERIC_DTYPES + (DType.BOOL,)

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
    if node.op in UNARY_ATTRS:
        return tuple(float(node.attr(name, default)) for name, default in UNARY_ATTRS[node.op])
    return ()


def body_arity(op: str) -> int:
    """How many operands a body op reads."""
    return 2 if op in BINARY_OPS else TYPED_OPS[op][0] if op in TYPED_OPS else 1


def body_param_count(op: str) -> int:
    """How many float parameters a body op carries."""
    return TYPED_OPS[op][1] if op in TYPED_OPS else UNARY_OPS.get(op, 0)


def elementwise_params(node: Node) -> tuple[float, ...] | None:
    """The float parameters of a standard elementwise op as a fused body carries them (None: not known at
    compile time)."""
    if node.op == "Cast":
        return (float(node.attr("to")),)
    if node.op == "Mod":
        return (float(node.attr("fmod", 0)),)
    if node.op == "BitShift":
        return (1.0 if node.attr("direction", "") == "RIGHT" else 0.0,)
    if node.op == "IsInf":
        return (float(node.attr("detect_positive", 1)), float(node.attr("detect_negative", 1)))
    if node.op in UNARY_OPS:
        return activation_params(node)
    return ()


def elementwise_result(op: str, dtypes: list[DType], params: tuple[float, ...] = ()) -> DType | str:
    """The element type of body op ``op`` on operands of ``dtypes``, or why they are not valid for it."""
    kinds = ", ".join(d.value for d in dtypes)
    if op == "Cast":
        to = ONNX_DTYPE_CODES.get(int(params[0])) if params else None
        if dtypes[0] not in STORED_DTYPES or to is None:
            return f"Cast from {dtypes[0].value} to ONNX type {int(params[0]) if params else '?'}"
        return to
    if op == "Where":
        if dtypes[0] is not DType.BOOL or dtypes[1] is not dtypes[2] or dtypes[1] not in STORED_DTYPES:
            return f"Where takes a bool condition and two operands of one type, not ({kinds})"
        return dtypes[1]
    if op == "Pow":  # the result has the base's type (an integer power is computed in double, truncated)
        if dtypes[0] not in NUMERIC_DTYPES or dtypes[1] not in NUMERIC_DTYPES:
            return f"Pow takes a numeric base and exponent, not ({kinds})"
        return dtypes[0]
    if any(d is not dtypes[0] for d in dtypes):
        return f"{op} operands must have one element type, not ({kinds})"
    dtype = dtypes[0]
    if op in LOGIC_OPS or op == "Not":
        allowed, result = (DType.BOOL,), DType.BOOL
    elif op in BITWISE_OPS:
        allowed, result = INTEGER_DTYPES, dtype
    elif op in ("IsNaN", "IsInf"):
        allowed, result = FLOAT_DTYPES, DType.BOOL
    elif op in COMPARE_OPS:
        allowed, result = NUMERIC_DTYPES + ((DType.BOOL,) if op == "Equal" else ()), DType.BOOL
    elif op in BINARY_OPS or op in INTEGER_UNARY_OPS or op == "Mod":
        allowed, result = NUMERIC_DTYPES, dtype
    elif op in UNARY_OPS:
        allowed, result = FLOAT_DTYPES, dtype
    else:
        return f"{op} is not an elementwise op"
    if dtype not in allowed:
        return f"{op} does not take {dtype.value} operands"
    return result


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

"""Building small QDQ graphs, and the parity check for passes that change quantized numerics.

``assert_within_steps`` is ``assert_parity`` for the quantization passes: the fold replaces float QDQ
arithmetic by integer requantization (fixed point, round half up instead of float32, round half to even),
so outputs before and after may differ by one quantization step of the output. It checks that bound and
returns the fraction of outputs that are exactly equal.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lowering.ir import Graph, Value
from lowering.passmanager import Pass
from lowering.reference import run_graph
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import random_inputs, run_passes


def quantize(b: GraphBuilder, x: Value, scale: float, zero_point: int, dtype=np.int8, name="q") -> Value:
    return b.op("QuantizeLinear", [x, b.const(np.array(scale, np.float32), f"{name}_scale"),
                                   b.const(np.array(zero_point, dtype), f"{name}_zp")], name=name)


def dequantize(b: GraphBuilder, q: Value, scale, zero_point, axis: int | None = None, name="dq") -> Value:
    scale = np.asarray(scale, np.float32)
    zero_point = np.asarray(zero_point, q.type.dtype.numpy)
    attrs = {"axis": axis} if axis is not None else {}
    return b.op("DequantizeLinear", [q, b.const(scale, f"{name}_scale"), b.const(zero_point, f"{name}_zp")],
                attrs, name=name)


def qdq(b: GraphBuilder, x: Value, scale: float, zero_point: int, dtype=np.int8, name="act") -> Value:
    """``DQ(Q(x))``: a quantized activation as the float ops between Q/DQ see it."""
    return dequantize(b, quantize(b, x, scale, zero_point, dtype, f"{name}_q"), scale, zero_point,
                      name=f"{name}_dq")


def weight(b: GraphBuilder, w: np.ndarray, axis: int | None = 0, name="w") -> Value:
    """``DQ(int8 w)``, symmetric, per channel along ``axis`` (None: per tensor)."""
    if axis is None:
        scale = np.array(np.abs(w).max() / 127, np.float32)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        return dequantize(b, b.const(q, f"{name}_int8"), scale, np.int8(0), name=f"{name}_dq")
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=reduce) / 127).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return dequantize(b, b.const(q, f"{name}_int8"), scale, np.zeros(scale.size, np.int8), axis=axis,
                      name=f"{name}_dq")


def int32_bias(b: GraphBuilder, bias: np.ndarray, scale: np.ndarray, name="bias") -> Value:
    """``DQ(int32 bias, scale, 0)`` as ONNX Runtime's quantizer writes a Conv/Gemm bias."""
    scale = np.asarray(scale, np.float32).reshape(-1)
    q = np.rint(bias / scale).astype(np.int32)
    axis = 0 if scale.size > 1 else None
    return dequantize(b, b.const(q, f"{name}_int32"), scale if scale.size > 1 else scale[0],
                      np.zeros(scale.size, np.int32) if scale.size > 1 else np.int32(0), axis=axis,
                      name=f"{name}_dq")


def scale_of(value: Value) -> np.ndarray:
    """The scale of the DequantizeLinear producing ``value``."""
    return value.producer.input(1).const


def output_steps(graph: Graph) -> dict[str, float]:
    """Per graph output, one quantization step in its units: the scale of the DequantizeLinear that
    produces it, or 1 for an integer output."""
    steps = {}
    for name, v in zip(graph.output_names, graph.outputs):
        node = v.producer
        if node is not None and node.op == "DequantizeLinear" and node.input(1).const.size == 1:
            steps[name] = float(node.input(1).const.reshape(-1)[0])
        else:
            assert np.issubdtype(v.type.dtype.numpy, np.integer), f"output '{name}' is not quantized"
            steps[name] = 1.0
    return steps


def assert_within_steps(model: Graph | GraphBuilder, passes: list[Pass], inputs: dict | None = None,
                        steps: float = 1, seed: int = 0, expect_modified: bool | None = None,
                        log: Callable[[str], None] | None = None, scale_inputs: float = 1.0,
                        min_exact: float = 0.0) -> tuple[Graph, float]:
    """Run ``passes`` (verified, ``modified`` checked) and check every output moved by at most ``steps``
    quantization steps. Returns the graph and the fraction of output elements that are exactly equal."""
    graph = model.graph if isinstance(model, GraphBuilder) else model
    feeds = inputs if inputs is not None else {
        k: (v * scale_inputs).astype(v.dtype) for k, v in random_inputs(graph, seed).items()}
    unit = output_steps(graph)
    expected = run_graph(graph, feeds)
    modified = run_passes(graph, passes, log)
    if expect_modified is not None:
        assert modified == expect_modified, f"expected modified={expect_modified}, got {modified}"
    actual = run_graph(graph, feeds)
    equal = total = 0
    for name, step in unit.items():
        want, got = np.asarray(expected[name]), np.asarray(actual[name])
        assert got.dtype == want.dtype and got.shape == want.shape, f"output '{name}' changed its type"
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64)) / step
        assert diff.max() <= steps + 1e-3, (
            f"output '{name}': {diff.max():.3f} quantization steps apart (allowed {steps}); "
            f"{np.mean(diff > 1e-3):.4f} of the elements differ")
        equal += int(np.sum(diff < 1e-3))
        total += diff.size
    fraction = equal / total
    assert fraction >= min_exact, f"only {fraction:.4f} of the outputs are exactly equal"
    return graph, fraction

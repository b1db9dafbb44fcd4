"""Element types beyond float32 on the cpu target: int16, uint16, uint32, uint64, float16 and float64.

- the integer types through the type-generic elementwise kernel, against numpy's (= ONNX's) semantics on
  edge values: wraparound of Add/Sub/Mul, unsigned division and Mod, shifts by the width or more, casts;
- float16 casts bit for bit against numpy (ties to even, overflow to inf, subnormals, NaN, inf), with the
  F16C instructions (x86-64-v3) and with the portable bit routines (x86-64-v2);
- a float16 model whose MatMul/Softmax/ReduceMean the ``legalize_types`` pass runs in float32 between Casts,
  against ONNX Runtime (which does the same);
- a float64 model: elementwise ops in double (to the last bits), a CumSum computed in float32 with the
  one-line warning naming it;
- the cuda and custom targets refuse (one line) what they do not compute.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import runtime
from lowering.driver import CompileOptions, compile_model
from lowering.ir import Attr, AttrKind, DType, Graph, Node, TensorType, Value
from targets.cpu.build import choose_isa

pytestmark = pytest.mark.target_cpu

INT_TYPES = {
    np.int16: TensorProto.INT16,
    np.uint16: TensorProto.UINT16,
    np.uint32: TensorProto.UINT32,
    np.uint64: TensorProto.UINT64,
}


def _model(
    nodes,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, tuple[int, tuple]],
    opset: int = 21,
    initializers=(),
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "dtypes",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in inputs.items()
        ],
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def _compiled(model: onnx.ModelProto, feeds: dict, tmp_path, name: str, isa: str | None = None) -> dict:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    result = compile_model(
        path,
        output=tmp_path / f"{name}.lwr",
        options=CompileOptions(targets=("cpu",), verify_each=True, isa=isa),
    )
    outputs = runtime.load(tmp_path / f"{name}.lwr").run(None, feeds)
    names = [o.name for o in model.graph.output]
    return dict(zip(names, outputs)) | {"_report": result.report["targets"]["cpu"]}


def _edge_values(dtype) -> tuple[np.ndarray, np.ndarray]:
    """Operand pairs covering the type's extremes (no zero divisor: numpy's is not ONNX's)."""
    info = np.iinfo(dtype)
    a = np.array([info.max, info.min, info.max, 1, 7, info.max // 3, 100, info.min + 1, 5, 0], dtype=object)
    b = np.array([1, 1, info.max, info.max, 3, 2, 3, 2, info.max - 1, 9], dtype=object)
    if info.min < 0:
        b[[1, 6, 7]] = [-1 if info.bits > 16 else 2, -3, -7]
        a[4] = -7
    return a.astype(dtype), b.astype(dtype)


def _truncated_div(x: int, y: int) -> int:
    q = abs(x) // abs(y)
    return q if (x < 0) == (y < 0) else -q


def _wrapped(values: list[int], dtype) -> np.ndarray:
    """Python ints wrapped into ``dtype`` (two's complement)."""
    bits = np.dtype(dtype).itemsize * 8
    out = [v % (1 << bits) for v in values]
    if np.dtype(dtype).kind == "i":
        out = [v - (1 << bits) if v >= 1 << (bits - 1) else v for v in out]
    return np.array(out, dtype=dtype)


@pytest.mark.parametrize("dtype", list(INT_TYPES), ids=lambda d: np.dtype(d).name)
def test_integer_elementwise_matches_numpy_on_edge_values(tmp_path, dtype):
    code = INT_TYPES[dtype]
    a, b = _edge_values(dtype)
    shift = (np.arange(a.size) * 5 % (np.dtype(dtype).itemsize * 8 + 4)).astype(dtype)  # past the width too
    n = (a.size,)
    binary = {
        "add": "Add",
        "sub": "Sub",
        "mul": "Mul",
        "div": "Div",
        "min": "Min",
        "max": "Max",
        "and": "BitwiseAnd",
        "or": "BitwiseOr",
        "xor": "BitwiseXor",
    }
    nodes = [helper.make_node(op, ["a", "b"], [name]) for name, op in binary.items()]
    nodes += [
        helper.make_node("Mod", ["a", "b"], ["mod"], fmod=0),
        helper.make_node("Mod", ["a", "b"], ["fmod"], fmod=1),
        helper.make_node("BitwiseNot", ["a"], ["not"]),
        helper.make_node("Less", ["a", "b"], ["less"]),
        helper.make_node("Equal", ["a", "b"], ["eq"]),
        helper.make_node("Abs", ["a"], ["abs"]),
        helper.make_node("Cast", ["a"], ["as_i64"], to=TensorProto.INT64),
        helper.make_node("Cast", ["a"], ["as_f32"], to=TensorProto.FLOAT),
        # a fused chain: (a * b + a) as float, and a broadcast scalar constant
        helper.make_node("Mul", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "a"], ["aba"]),
        helper.make_node("Cast", ["aba"], ["chain"], to=TensorProto.DOUBLE),
        helper.make_node("Sub", ["a", "k"], ["minus_k"]),
    ]
    bools = {"less", "eq"}
    outputs = {
        name: (TensorProto.BOOL if name in bools else code, n)
        for name in list(binary) + ["mod", "fmod", "not", "less", "eq", "abs", "minus_k"]
    }
    outputs |= {
        "as_i64": (TensorProto.INT64, n),
        "as_f32": (TensorProto.FLOAT, n),
        "chain": (TensorProto.DOUBLE, n),
    }
    k = helper.make_tensor("k", code, [], [int(np.iinfo(dtype).max)])
    if np.dtype(dtype).kind == "u":  # BitShift takes unsigned types before opset 28
        nodes += [
            helper.make_node("BitShift", ["a", "s"], ["shl"], direction="LEFT"),
            helper.make_node("BitShift", ["a", "s"], ["shr"], direction="RIGHT"),
        ]
        outputs |= {"shl": (code, n), "shr": (code, n)}
    model = _model(nodes, {"a": a, "b": b, "s": shift}, outputs, initializers=[k])
    got = _compiled(model, {"a": a, "b": b, "s": shift}, tmp_path, f"int_{np.dtype(dtype).name}")
    with np.errstate(all="ignore"):
        expected = {
            "add": a + b,
            "sub": a - b,
            "mul": a * b,
            "min": np.minimum(a, b),
            "max": np.maximum(a, b),
            "div": _wrapped([_truncated_div(int(x), int(y)) for x, y in zip(a, b)], dtype),
            "and": a & b,
            "or": a | b,
            "xor": a ^ b,
            "not": ~a,
            "less": a < b,
            "eq": a == b,
            "mod": np.mod(a, b),
            "fmod": np.fmod(a, b),
            "abs": np.abs(a),
            "as_i64": a.astype(np.int64),
            "as_f32": a.astype(np.float32),
            "chain": (a * b + a).astype(np.float64),
            "minus_k": a - dtype(np.iinfo(dtype).max),
        }
    if "shl" in outputs:
        bits = np.dtype(dtype).itemsize * 8
        wide = [int(x) for x in a]
        expected["shl"] = _wrapped([x << int(s) if s < bits else 0 for x, s in zip(wide, shift)], dtype)
        expected["shr"] = _wrapped([x >> int(s) if s < bits else 0 for x, s in zip(wide, shift)], dtype)
    for name, want in expected.items():
        assert got[name].dtype == np.asarray(want).dtype, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_new_integer_types_match_onnxruntime(tmp_path):
    """Ops ONNX Runtime's CPU provider has kernels for, on uint32/uint64/int16: the same bits."""
    a32, b32 = _edge_values(np.uint32)
    a64, b64 = _edge_values(np.uint64)
    a16, b16 = _edge_values(np.int16)
    nodes = [
        helper.make_node("Add", ["a32", "b32"], ["add32"]),
        helper.make_node("Mul", ["a64", "b64"], ["mul64"]),
        helper.make_node("Div", ["a64", "b64"], ["div64"]),
        helper.make_node("Sub", ["a16", "b16"], ["sub16"]),
        helper.make_node("Less", ["a16", "b16"], ["less16"]),
        helper.make_node("Cast", ["a64"], ["cast"], to=TensorProto.INT32),
    ]
    n = (a32.size,)
    feeds = {"a32": a32, "b32": b32, "a64": a64, "b64": b64, "a16": a16, "b16": b16}
    model = _model(
        nodes,
        feeds,
        {
            "add32": (TensorProto.UINT32, n),
            "mul64": (TensorProto.UINT64, n),
            "div64": (TensorProto.UINT64, n),
            "sub16": (TensorProto.INT16, n),
            "less16": (TensorProto.BOOL, n),
            "cast": (TensorProto.INT32, n),
        },
    )
    got = _compiled(model, feeds, tmp_path, "int_ort")
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    for out, w in zip(model.graph.output, want):
        assert got[out.name].dtype == w.dtype
        np.testing.assert_array_equal(got[out.name], w, err_msg=out.name)


def _half_edges() -> tuple[np.ndarray, np.ndarray]:
    """float32 and float64 values at float16's edges: ties (to even), the overflow threshold, subnormals,
    the smallest subnormal's half (a tie to 0), NaN, infinities, signed zeros."""
    ulp1 = 2.0**-10
    values = [
        1.0,
        1 + ulp1 / 2,
        1 + 3 * ulp1 / 2,
        1 + ulp1 / 2 + 2**-30,
        65504.0,
        65519.99,
        65520.0,
        1e6,
        2.0**-24,
        2.0**-25,
        3 * 2.0**-25,
        2.0**-25 + 2.0**-40,
        2.0**-14 - 2.0**-25,
        6.1e-5,
        1e-9,
        0.1,
        1 / 3,
        np.inf,
        -np.inf,
        np.nan,
        0.0,
        -0.0,
        -1.5,
        -65520.0,
        2049.0,
        4097.0,
    ]
    f64 = np.array(values, np.float64)
    f32 = np.concatenate(
        [
            f64.astype(np.float32),
            np.random.default_rng(0).standard_normal(37).astype(np.float32) * np.float32(300),
        ]
    )
    return f32, np.concatenate([f64, np.random.default_rng(1).standard_normal(37) * 3000])


@pytest.mark.parametrize("isa", ["x86-64-v3", "x86-64-v2"])
def test_float16_casts_are_bit_exact(tmp_path, isa):
    """x86-64-v3 converts with F16C, x86-64-v2 with the portable bit routines: the same bits as numpy."""
    if choose_isa(None).name < isa:
        pytest.skip(f"this machine cannot run {isa} code")
    f32, f64 = _half_edges()
    h = np.concatenate([np.arange(0, 65536, 1, np.uint32).astype(np.uint16)]).view(
        np.float16
    )  # every float16
    nodes = [
        helper.make_node("Cast", ["f32"], ["h_from_f32"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["f64"], ["h_from_f64"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["h"], ["f_from_h"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["h"], ["d_from_h"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["small"], ["i_from_h"], to=TensorProto.INT32),
        helper.make_node("Cast", ["ints"], ["h_from_i"], to=TensorProto.FLOAT16),
        helper.make_node("IsNaN", ["h"], ["nan"]),
        helper.make_node("IsInf", ["h"], ["inf"]),
    ]
    small = (np.random.default_rng(2).standard_normal(50) * 1000).astype(np.float16)
    ints = np.array([0, 1, -1, 2049, 2051, 65504, 65519, 65520, 100000, -70000, 4095, 4097], np.int64)
    feeds = {"f32": f32, "f64": f64, "h": h, "small": small, "ints": ints}
    outputs = {
        "h_from_f32": (TensorProto.FLOAT16, f32.shape),
        "h_from_f64": (TensorProto.FLOAT16, f64.shape),
        "f_from_h": (TensorProto.FLOAT, h.shape),
        "d_from_h": (TensorProto.DOUBLE, h.shape),
        "i_from_h": (TensorProto.INT32, small.shape),
        "h_from_i": (TensorProto.FLOAT16, ints.shape),
        "nan": (TensorProto.BOOL, h.shape),
        "inf": (TensorProto.BOOL, h.shape),
    }
    got = _compiled(_model(nodes, feeds, outputs), feeds, tmp_path, f"half_{isa}", isa=isa)
    assert got["_report"] is not None
    with np.errstate(all="ignore"):
        expected = {
            "h_from_f32": f32.astype(np.float16),
            "h_from_f64": f64.astype(np.float16),
            "f_from_h": h.astype(np.float32),
            "d_from_h": h.astype(np.float64),
            "i_from_h": small.astype(np.int32),
            "h_from_i": ints.astype(np.float16),
            "nan": np.isnan(h),
            "inf": np.isinf(h),
        }
    for name, want in expected.items():
        got_bits, want_bits = got[name], want
        if want.dtype.kind == "f":
            nan = np.isnan(want)
            np.testing.assert_array_equal(np.isnan(got[name]), nan, err_msg=name)  # NaN payloads may differ
            got_bits, want_bits = (
                got[name][~nan].view(f"u{want.itemsize}"),
                want[~nan].view(f"u{want.itemsize}"),
            )
        np.testing.assert_array_equal(got_bits, want_bits, err_msg=name)


def test_float16_model_legalized_matches_onnxruntime(tmp_path):
    """MatMul, Softmax and ReduceMean have float32 kernels only: ``legalize_types`` runs them in float32
    between Casts; Add, Relu and Mod stay float16 elementwise kernels. ONNX Runtime does the same."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 16)).astype(np.float16)
    w = (rng.standard_normal((16, 8)) * 0.3).astype(np.float16)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "x8"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["act"]),
        helper.make_node("Softmax", ["act"], ["probs"], axis=-1),
        helper.make_node("ReduceMean", ["probs"], ["mean"], keepdims=1),
        helper.make_node("Mod", ["sum", "three"], ["mod"], fmod=1),
    ]
    inits = [
        onnx.numpy_helper.from_array(w, "w"),
        onnx.numpy_helper.from_array(np.float16(3).reshape(()), "three"),
    ]
    x8 = rng.standard_normal((4, 8)).astype(np.float16)
    feeds = {"x": x, "x8": x8}
    model = _model(
        nodes,
        feeds,
        {
            "probs": (TensorProto.FLOAT16, (4, 8)),
            "mean": (TensorProto.FLOAT16, (1, 1)),
            "mod": (TensorProto.FLOAT16, (4, 8)),
        },
        initializers=inits,
    )
    got = _compiled(model, feeds, tmp_path, "half_model")
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    for out, w_ in zip(model.graph.output, want):
        assert got[out.name].dtype == np.float16
        np.testing.assert_allclose(
            got[out.name].astype(np.float32), w_.astype(np.float32), rtol=2e-3, atol=2e-3, err_msg=out.name
        )
    passes = {p["name"]: p for p in got["_report"]["passes"]}
    changes = " ".join(passes["legalize_types"]["changes"])
    assert "Gemm" in changes and "Softmax" in changes and "ReduceMean" in changes  # MatMul + Add: a FusedGemm
    assert "Mod" not in changes  # an elementwise float16 kernel
    assert "cast pair" in changes  # between the Softmax and the ReduceMean: float32 throughout


def test_float64_elementwise_in_double_and_the_rest_warned(tmp_path, capfd):
    rng = np.random.default_rng(4)
    d = rng.standard_normal((3, 5)) * 3
    e = rng.standard_normal((3, 5)) + 4
    nodes = [
        helper.make_node("Exp", ["d"], ["exp"]),
        helper.make_node("Tanh", ["d"], ["tanh"]),
        helper.make_node("Div", ["d", "e"], ["div"]),
        helper.make_node("Mod", ["d", "e"], ["mod"], fmod=1),
        helper.make_node("Sigmoid", ["d"], ["sig"]),
        helper.make_node("Sqrt", ["e"], ["sqrt"]),
        helper.make_node("CumSum", ["d", "axis"], ["cumsum"]),
        helper.make_node("ReduceSum", ["e"], ["total"], keepdims=0),
    ]
    axis = onnx.numpy_helper.from_array(np.array(1, np.int64), "axis")
    shape = (3, 5)
    outputs = {n: (TensorProto.DOUBLE, shape) for n in ("exp", "tanh", "div", "mod", "sig", "sqrt", "cumsum")}
    model = _model(
        nodes, {"d": d, "e": e}, outputs | {"total": (TensorProto.DOUBLE, ())}, initializers=[axis]
    )
    got = _compiled(model, {"d": d, "e": e}, tmp_path, "double_model")
    warning = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "2 float64 node(s) computed in float32" in warning[0]
    assert "CumSum" in warning[0] and "ReduceSum" in warning[0]
    exact = {
        "exp": np.exp(d),
        "tanh": np.tanh(d),
        "div": d / e,
        "mod": np.fmod(d, e),
        "sig": 1 / (1 + np.exp(-d)),
        "sqrt": np.sqrt(e),
    }
    for name, want in exact.items():  # double libm: within an ulp or two, far below float32's precision
        assert got[name].dtype == np.float64
        np.testing.assert_allclose(got[name], want, rtol=1e-14, atol=1e-300, err_msg=name)
    np.testing.assert_allclose(got["cumsum"], np.cumsum(d, axis=1), rtol=1e-5, atol=1e-6)  # float32 inside
    np.testing.assert_allclose(got["total"], e.sum(), rtol=1e-5)


def _typed_node(op: str, dtype: DType, arity: int = 2) -> Node:
    graph = Graph(name="g")
    x = Value("x", TensorType(dtype, (1, 1, 4, 4)))
    y = Value("y", TensorType(dtype, (1, 1, 4, 4)))
    graph.inputs.append(x)
    node = graph.append(Node(op, [x] * arity, [y], {"kernel_shape": Attr(AttrKind.INTS, (2, 2))}, name="n"))
    graph.outputs.append(y)
    return node


@pytest.mark.parametrize(
    "dtype", [DType.UINT16, DType.INT16, DType.UINT32, DType.UINT64, DType.FLOAT16, DType.FLOAT64]
)
def test_cuda_and_custom_targets_refuse_the_types_in_one_line(dtype):
    from targets.cuda.target import CudaTarget
    from targets.custom.target import CustomTarget

    for target, node in (
        (CudaTarget(), _typed_node("Add", dtype)),
        (CudaTarget(), _typed_node("MaxPool", dtype, 1)),
        (CustomTarget(), _typed_node("MaxPool", dtype, 1)),
    ):
        reason = target.unsupported_reason(node)
        assert reason and "\n" not in reason and dtype.value in reason, (target.name, reason)
    # what they refuse goes to the host cpu target, which runs elementwise ops of these types
    from targets.cpu.target import CpuTarget

    assert CpuTarget().unsupported_reason(_typed_node("Add", dtype)) is None


def test_legalize_types_pass_casts_around_nodes_without_kernels_and_drops_round_trips():
    """Reference parity of the pass alone: Softmax -> ReduceMax on float16 (no float16 kernels) becomes
    Cast -> Softmax -> ReduceMax -> Cast, the float16 round trip between them removed; the float16 Relu (an
    elementwise kernel) and the float16 Transpose (moves elements) stay as they are."""
    from passes.cleanup.legalize_types import LegalizeTypes
    from targets.cpu.target import CpuTarget
    from tests.helpers.graphs import GraphBuilder
    from tests.helpers.parity import assert_parity

    b = GraphBuilder()
    x = b.input("x", (2, 3, 5), np.float16)
    relu = b.op("Relu", [x])
    soft = b.op("Softmax", [b.op("Transpose", [relu], {"perm": (0, 2, 1)})], {"axis": -1})
    b.output(b.op("ReduceMax", [soft], {"keepdims": 0, "axes": (1,)}), "m")
    b.output(b.op("Mul", [soft, b.const(np.float16(2))]), "twice")
    cpu = CpuTarget()
    graph = assert_parity(
        b,
        [LegalizeTypes(lambda n: cpu.unsupported_reason(n) is None)],
        rtol=2e-3,
        atol=1e-3,
        expect_modified=True,
    )
    ops = [n.op for n in graph.nodes]
    assert ops == ["Relu", "Transpose", "Cast", "Softmax", "Cast", "ReduceMax", "Cast", "Mul"], ops
    softmax = graph.nodes[3]
    assert softmax.input(0).type.dtype is DType.FLOAT32 and softmax.output.type.dtype is DType.FLOAT32
    reduce = graph.nodes[5]
    assert reduce.input(0) is softmax.output  # the float16 round trip between them is gone
    assert graph.outputs[0].type.dtype is DType.FLOAT16 and graph.output_names == ["m", "twice"]
    # nothing to do on a float32 graph
    b = GraphBuilder()
    b.output(b.op("Softmax", [b.input("x", (2, 3))]))
    assert_parity(b, [LegalizeTypes(lambda n: cpu.unsupported_reason(n) is None)], expect_modified=False)


def test_bfloat16_casts_elementwise_and_legalized_ops(tmp_path):
    """bfloat16 (ml_dtypes' type, as onnx uses): casts round to nearest even as ml_dtypes does (a double
    through float, as ml_dtypes does), elementwise ops round each result, Softmax runs in float32."""
    import ml_dtypes

    bf16 = np.dtype(ml_dtypes.bfloat16)
    f32, f64 = _half_edges()
    b = np.random.default_rng(5).standard_normal((4, 8)).astype(bf16)
    nodes = [
        helper.make_node("Cast", ["f32"], ["from_f32"], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["f64"], ["from_f64"], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["b"], ["to_f32"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["b", "b"], ["square"]),
        helper.make_node("Add", ["square", "b"], ["chain"]),
        helper.make_node("Softmax", ["b"], ["probs"], axis=-1),
    ]
    feeds = {"f32": f32, "f64": f64, "b": b}
    outputs = {
        "from_f32": (TensorProto.BFLOAT16, f32.shape),
        "from_f64": (TensorProto.BFLOAT16, f64.shape),
        "to_f32": (TensorProto.FLOAT, b.shape),
        "chain": (TensorProto.BFLOAT16, b.shape),
        "probs": (TensorProto.BFLOAT16, b.shape),
    }
    got = _compiled(_model(nodes, feeds, outputs), feeds, tmp_path, "bf16")
    with np.errstate(all="ignore"):
        exact = {
            "from_f32": f32.astype(bf16),
            "from_f64": f64.astype(bf16),
            "to_f32": b.astype(np.float32),
            "chain": (b * b) + b,
        }
    for name, want in exact.items():
        assert got[name].dtype == want.dtype, name
        nan = np.isnan(want.astype(np.float32))
        np.testing.assert_array_equal(np.isnan(got[name].astype(np.float32)), nan, err_msg=name)
        np.testing.assert_array_equal(
            got[name][~nan].view(np.uint16 if want.itemsize == 2 else np.uint32),
            want[~nan].view(np.uint16 if want.itemsize == 2 else np.uint32),
            name,
        )
    x = b.astype(np.float32)
    want = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(got["probs"].astype(np.float32), want / want.sum(-1, keepdims=True), rtol=8e-3)


def test_runtime_needs_ml_dtypes_only_for_bfloat16(monkeypatch):
    import sys

    from runtime.artifact import numpy_dtype
    from runtime.errors import RuntimeLoadError

    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # as if it were not installed
    assert numpy_dtype("float16") == np.float16 and numpy_dtype("uint64") == np.uint64
    with pytest.raises(RuntimeLoadError, match="bfloat16 .*ml_dtypes"):
        numpy_dtype("bfloat16")


def test_signed_division_of_the_minimum_by_minus_one_wraps_instead_of_trapping(tmp_path):
    """INT_MIN / -1 and INT_MIN % -1 raise SIGFPE in C; numpy (the reference) wraps to INT_MIN and gives 0."""
    feeds, nodes, outputs = {}, [], {}
    for dtype, code in ((np.int32, TensorProto.INT32), (np.int64, TensorProto.INT64)):
        low = np.iinfo(dtype).min
        name = np.dtype(dtype).name
        feeds[f"a_{name}"] = np.array([low, low, 7, -7, 5], dtype)
        feeds[f"b_{name}"] = np.array([-1, 1, -1, 2, 0], dtype)
        for op, attrs in (("Div", {}), ("Mod", {"fmod": 0}), ("Mod", {"fmod": 1})):
            out = f"{op}{attrs.get('fmod', '')}_{name}"
            nodes.append(helper.make_node(op, [f"a_{name}", f"b_{name}"], [out], **attrs))
            outputs[out] = (code, (5,))
    got = _compiled(_model(nodes, feeds, outputs), feeds, tmp_path, "int_min")
    for name in ("int32", "int64"):
        low = np.iinfo(name).min
        np.testing.assert_array_equal(got[f"Div_{name}"], np.array([low, low, -7, -3, 0], name))
        np.testing.assert_array_equal(got[f"Mod0_{name}"], np.array([0, 0, 0, 1, 0], name))
        np.testing.assert_array_equal(got[f"Mod1_{name}"], np.array([0, 0, 0, -1, 0], name))

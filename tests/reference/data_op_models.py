"""One-op ONNX models of the indexing and data-movement ops, with ONNX Runtime as the oracle.

Shared by ``test_ops_data.py`` (the reference interpreter against ONNX Runtime) and
``tests/targets/test_cpu_index.py`` (the compiled cpu target against ONNX Runtime). A ``Case`` names one
node: its inputs (graph inputs, or initializers when ``const``), attributes and output element types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

RNG = np.random.default_rng(1234)


@dataclass
class In:
    name: str
    data: np.ndarray
    const: bool = False  # an initializer rather than a graph input


@dataclass
class Case:
    id: str
    op: str
    inputs: list[In | None]
    attrs: dict = field(default_factory=dict)
    #: element types of the outputs (numpy); None: one output of input 0's type
    outputs: list | None = None
    opset: int = 17
    #: compare only as sets along the last axis (TopK sorted=0: order unspecified)
    unordered: bool = False

    def model(self) -> onnx.ModelProto:
        names = [i.name if i is not None else "" for i in self.inputs]
        out_types = self.outputs or [self.inputs[0].data.dtype]
        outs = [f"y{i}" for i in range(len(out_types))]
        node = helper.make_node(self.op, names, outs, name=self.id, **self.attrs)
        graph_inputs = [helper.make_tensor_value_info(i.name, _elem(i.data.dtype), i.data.shape)
                        for i in self.inputs if i is not None and not i.const]
        inits = [numpy_helper.from_array(i.data, i.name) for i in self.inputs if i is not None and i.const]
        graph_outputs = [helper.make_empty_tensor_value_info(o) for o in outs]
        graph = helper.make_graph([node], self.id, graph_inputs, graph_outputs, initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        # type the outputs with ONNX shape inference (the element types are the case's)
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model, data_prop=True).graph.output}
        for out, elem in zip(model.graph.output, out_types):
            out.CopyFrom(inferred[out.name])
            out.type.tensor_type.elem_type = _elem(elem)
        onnx.checker.check_model(model)
        return model

    def feeds(self) -> dict[str, np.ndarray]:
        return {i.name: i.data for i in self.inputs if i is not None and not i.const}


def _elem(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def ort_outputs(case: Case) -> list[np.ndarray]:
    return ort_outputs_of(case.model(), case.feeds())


def assert_matches(case: Case, got: list[np.ndarray], want: list[np.ndarray], rtol=1e-5, atol=1e-6) -> None:
    assert len(got) == len(want), f"{case.id}: {len(got)} outputs, ONNX Runtime gives {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype, f"{case.id} output {i}: dtype {g.dtype}, ONNX Runtime {w.dtype}"
        assert g.shape == w.shape, f"{case.id} output {i}: shape {g.shape}, ONNX Runtime {w.shape}"
        if case.unordered:
            g, w = np.sort(g, axis=-1), np.sort(w, axis=-1)
        if w.dtype.kind in "fc":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{case.id} output {i}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{case.id} output {i}")


# --- the cases ------------------------------------------------------------------------------------------

def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def ints(*shape, low=-50, high=50, dtype=np.int64):
    return RNG.integers(low, high, shape).astype(dtype)


def i64(*values):
    return np.array(values, np.int64)


STORED = {  # one array of every stored element type, shape [3, 4, 5]
    "f32": f32(3, 4, 5),
    "i64": ints(3, 4, 5),
    "i32": ints(3, 4, 5, dtype=np.int32),
    "i8": ints(3, 4, 5, low=-128, high=127, dtype=np.int8),
    "u8": ints(3, 4, 5, low=0, high=255, dtype=np.uint8),
    "bool": RNG.random((3, 4, 5)) < 0.5,
}


def gather_cases() -> list[Case]:
    cases = [
        Case("gather_embedding", "Gather",
             [In("w", f32(50, 16), True), In("ids", ints(2, 7, low=0, high=50))]),
        Case("gather_embedding_neg_i32", "Gather",
             [In("w", f32(50, 16), True), In("ids", ints(2, 7, low=-50, high=50, dtype=np.int32))]),
        Case("gather_axis1_scalar", "Gather", [In("x", f32(2, 5, 8)), In("i", np.array(-1, np.int64), True)],
             {"axis": 1}),
        Case("gather_axis2", "Gather", [In("x", f32(2, 3, 6)), In("i", ints(2, 2, low=-6, high=6), True)],
             {"axis": -1}),
        Case("gather_axis0_rows", "Gather", [In("x", f32(6, 3)), In("i", i64(5, 0, 0, -2), True)]),
    ]
    for name, data in STORED.items():
        cases.append(Case(f"gather_{name}", "Gather", [In("x", data), In("i", ints(3, low=-4, high=4))],
                          {"axis": 1}))
    return cases


def slice_cases() -> list[Case]:
    x = f32(4, 6, 8)
    big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    specs = [  # (starts, ends, axes, steps)
        ((1, 0), (3, 5), (0, 1), None),
        ((0,), (big,), (2,), (2,)),
        ((-1,), (small,), (2,), (-1,)),
        ((5, -2), (0, 1), (1, 2), (-2, -3)),
        ((-100,), (100,), (-1,), None),  # clamped bounds
        ((2,), (2,), (1,), None),  # empty
        ((1, 1, 1), (-1, -1, -1), (0, 1, 2), (1, 2, 3)),
    ]
    cases = []
    for n, (s, e, a, st) in enumerate(specs):
        ins = [In("x", x), In("s", i64(*s), True), In("e", i64(*e), True), In("a", i64(*a), True)]
        ins.append(In("st", i64(*st), True) if st is not None else None)
        cases.append(Case(f"slice_{n}", "Slice", ins if st is not None else ins[:4]))
    for name in ("i64", "bool", "u8"):
        cases.append(Case(f"slice_{name}", "Slice", [In("x", STORED[name]), In("s", i64(2, -1), True),
                                                     In("e", i64(0, 1), True), In("a", i64(1, 2), True),
                                                     In("st", i64(-1, -2), True)]))
    return cases


def split_cases() -> list[Case]:
    x = f32(2, 7, 6)
    return [
        Case("split_input", "Split", [In("x", x), In("s", i64(2, 4, 1), True)], {"axis": 1},
             outputs=[np.float32] * 3),
        Case("split_equal", "Split", [In("x", x)], {"axis": -1}, outputs=[np.float32] * 3),
        Case("split_num_outputs", "Split", [In("x", x)], {"axis": 1, "num_outputs": 3},
             outputs=[np.float32] * 3, opset=18),
        Case("split_attr_opset11", "Split", [In("x", x)], {"axis": 0, "split": [1, 1]},
             outputs=[np.float32] * 2, opset=11),
        Case("split_i64", "Split", [In("x", STORED["i64"]), In("s", i64(1, 3), True)], {"axis": 1},
             outputs=[np.int64] * 2),
        Case("split_bool", "Split", [In("x", STORED["bool"])], {"axis": 2, "num_outputs": 2},
             outputs=[np.bool_] * 2, opset=18),
    ]


def expand_tile_cases() -> list[Case]:
    return [
        Case("expand_rows", "Expand", [In("x", f32(3, 1)), In("s", i64(2, 3, 4), True)]),
        Case("expand_inner", "Expand", [In("x", f32(1, 4)), In("s", i64(3, 1), True)]),
        Case("expand_mid", "Expand", [In("x", f32(2, 1, 5)), In("s", i64(2, 3, 5), True)]),
        Case("expand_bool", "Expand", [In("x", STORED["bool"][:1, :, :1]), In("s", i64(2, 4, 3), True)]),
        Case("expand_i64", "Expand", [In("x", ints(1, 1, 4)), In("s", i64(3, 2, 1), True)]),
        Case("tile", "Tile", [In("x", f32(2, 3, 4)), In("r", i64(2, 1, 3), True)]),
        Case("tile_i32", "Tile", [In("x", ints(3, 2, dtype=np.int32)), In("r", i64(1, 4), True)]),
        Case("tile_bool", "Tile", [In("x", STORED["bool"][:, :2, :]), In("r", i64(2, 2, 1), True)]),
    ]


def pad_cases() -> list[Case]:
    x = f32(2, 3, 5, 6)
    pads = i64(0, 1, 2, 3, 1, 0, 1, 2)
    return [
        Case("pad_constant", "Pad",
             [In("x", x), In("p", pads, True), In("v", np.array(1.5, np.float32), True)]),
        Case("pad_constant_default", "Pad", [In("x", x), In("p", pads, True)]),
        Case("pad_reflect", "Pad", [In("x", x), In("p", i64(0, 0, 2, 3, 0, 0, 4, 1), True)],
             {"mode": "reflect"}),
        Case("pad_edge", "Pad", [In("x", x), In("p", pads, True)], {"mode": "edge"}),
        Case("pad_negative", "Pad", [In("x", x), In("p", i64(0, 0, -1, 2, 0, 1, 1, -2), True)]),
        Case("pad_axes", "Pad", [In("x", x), In("p", i64(1, 2, 3, 0), True), None, In("a", i64(-1, 2), True)],
             {"mode": "edge"}, opset=18),
        Case("pad_i64", "Pad", [In("x", STORED["i64"]), In("p", i64(1, 0, 0, 0, 2, 1), True),
                                In("v", np.array(-7, np.int64), True)]),
        Case("pad_wrap", "Pad", [In("x", x), In("p", i64(0, 1, 2, 3, 0, 2, 1, 4), True)], {"mode": "wrap"},
             opset=19),
        Case("pad_u8_reflect", "Pad", [In("x", STORED["u8"]), In("p", i64(0, 2, 1, 0, 3, 2), True)],
             {"mode": "reflect"}),
    ]


def trilu_cases() -> list[Case]:
    x = f32(2, 5, 7)
    cases = []
    for upper in (0, 1):
        for k in (-2, 0, 3, 9, -(2 ** 62)):
            cases.append(Case(f"trilu_u{upper}_k{k}", "Trilu",
                              [In("x", x), In("k", np.array(k, np.int64), True)], {"upper": upper}, opset=14))
    cases.append(Case("trilu_default", "Trilu", [In("x", f32(6, 4))], opset=14))
    cases.append(Case("trilu_bool", "Trilu", [In("x", STORED["bool"])], {"upper": 0}, opset=14))
    return cases


def gather_elements_nd_cases() -> list[Case]:
    data = f32(3, 4, 5)
    return [
        Case("gather_elements_axis1", "GatherElements",
             [In("x", data), In("i", ints(3, 2, 5, low=-4, high=4))], {"axis": 1}),
        Case("gather_elements_axis_last", "GatherElements",
             [In("x", data), In("i", ints(2, 4, 3, low=0, high=5, dtype=np.int32))], {"axis": -1}),
        Case("gather_elements_i64", "GatherElements",
             [In("x", STORED["i64"]), In("i", ints(3, 4, 2, low=0, high=5))], {"axis": 2}),
        Case("gather_nd_full", "GatherND", [In("x", data), In("i", i64([0, 1, 2], [2, -1, 4]))]),
        Case("gather_nd_rows", "GatherND", [In("x", data), In("i", i64([[1], [0]], [[2], [-3]]))]),
        Case("gather_nd_batch", "GatherND", [In("x", data), In("i", i64([1, 2], [0, 0], [3, 4]))],
             {"batch_dims": 1}),
        Case("gather_nd_bool", "GatherND", [In("x", STORED["bool"]), In("i", i64([2, 3], [0, 1]))]),
    ]


def topk_cases() -> list[Case]:
    x = f32(3, 4, 9)
    ties = np.array([[1, 3, 3, 2, 3, 1, 1, 0], [5, 5, 5, 5, 4, 4, 6, 6]], np.float32)
    two = [np.float32, np.int64]
    cases = [
        Case("topk_last", "TopK", [In("x", x), In("k", i64(4), True)], outputs=two),
        Case("topk_axis1_smallest", "TopK", [In("x", x), In("k", i64(2), True)], {"axis": 1, "largest": 0},
             outputs=two),
        Case("topk_axis0_all", "TopK", [In("x", x), In("k", i64(3), True)], {"axis": 0}, outputs=two),
        Case("topk_ties_largest", "TopK", [In("x", ties), In("k", i64(5), True)], outputs=two),
        Case("topk_ties_smallest", "TopK", [In("x", ties), In("k", i64(5), True)], {"largest": 0},
             outputs=two),
        Case("topk_big_k", "TopK", [In("x", f32(2, 300)), In("k", i64(100), True)], outputs=two),
        Case("topk_i64", "TopK", [In("x", ints(4, 10, low=-3, high=3)), In("k", i64(3), True)],
             outputs=[np.int64, np.int64]),
    ]
    return cases


def resize_cases() -> list[Case]:
    x = f32(1, 2, 5, 7)
    empty = np.array([], np.float32)
    cases = []
    combos = [
        ("nearest", "asymmetric", "floor"),
        ("nearest", "half_pixel", "round_prefer_floor"),
        ("nearest", "half_pixel", "round_prefer_ceil"),
        ("nearest", "align_corners", "round_prefer_floor"),
        ("nearest", "pytorch_half_pixel", "ceil"),
        ("linear", "half_pixel", None),
        ("linear", "pytorch_half_pixel", None),
        ("linear", "align_corners", None),
        ("linear", "asymmetric", None),
    ]
    for mode, ctm, nearest in combos:
        attrs = {"mode": mode, "coordinate_transformation_mode": ctm}
        if nearest:
            attrs["nearest_mode"] = nearest
        for tag, scales in (("up", (1, 1, 2, 3)), ("frac", (1, 1, 1.6, 0.75)), ("down", (1, 1, 0.5, 0.5))):
            cases.append(Case(f"resize_{mode}_{ctm}_{nearest}_{tag}", "Resize",
                              [In("x", x), In("roi", empty, True),
                               In("sc", np.array(scales, np.float32), True)], attrs))
        cases.append(Case(f"resize_{mode}_{ctm}_{nearest}_sizes", "Resize",
                          [In("x", x), In("roi", empty, True), In("sc", empty, True),
                           In("sz", i64(1, 2, 9, 4), True)],
                          attrs))
    cases.append(Case("resize_nearest_u8", "Resize",
                      [In("x", ints(1, 1, 3, 4, low=0, high=255, dtype=np.uint8)), In("roi", empty, True),
                       In("sc", np.array([1, 1, 2, 2], np.float32), True)],
                      {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                       "nearest_mode": "floor"}))
    cases.append(Case("resize_linear_3d", "Resize",
                      [In("x", f32(2, 3, 6)), In("roi", empty, True),
                       In("sc", np.array([1, 1, 2.5], np.float32), True)],
                      {"mode": "linear"}))
    cases.append(Case("resize_sizes_axes", "Resize",
                      [In("x", x), None, None, In("sz", i64(8, 3), True)],
                      {"mode": "linear", "axes": [2, 3]}, opset=18))
    return cases


def concat_transpose_cases() -> list[Case]:
    cases = []
    for name in ("i64", "bool"):
        data = STORED[name]
        cases.append(Case(f"concat_{name}", "Concat", [In("a", data), In("b", data[:, :2])], {"axis": 1}))
        cases.append(Case(f"transpose_{name}", "Transpose", [In("x", data)], {"perm": [2, 0, 1]}))
    return cases


ALL_CASES = (gather_cases() + slice_cases() + split_cases() + expand_tile_cases() + pad_cases()
             + trilu_cases() + gather_elements_nd_cases() + topk_cases() + resize_cases()
             + concat_transpose_cases())


def ort_outputs_of(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)

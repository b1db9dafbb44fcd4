"""Resize's filters and coordinate modes, GridSample, AffineGrid, RoiAlign and CenterCropPad on the cpu
target, against ONNX Runtime.

Each family of cases becomes one ONNX model (one node per case, ``data_op_models.Case``), which is run by
the reference interpreter (no passes: what constant folding computes) and compiled for the cpu target and
run at 1 and 2 threads; both must match ONNX Runtime. Resize's parameters (scales, sizes, roi) are
initializers and its data a graph input, so the kernels run; GridSample's grid and RoiAlign's boxes are
graph inputs (their kernels compute every coordinate at run time). Then: run-time AffineGrid sizes and
RoiAlign batch indices the run refuses, and the one-line reasons of what the cpu target does not lower.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lowering.ir import DType, TensorType, Value
from lowering.onnx.importer import import_model
from lowering.reference import run_graph
from targets.cpu import emit_index
from targets.cpu.target import CpuTarget
from tests.reference import data_op_models as cases_
from tests.reference.data_op_models import RNG, Case, In, assert_matches, f32, i64

from .test_cpu_index import _node, combined_model, compile_cpu, run_build

pytestmark = pytest.mark.target_cpu

EMPTY = np.array([], np.float32)


def f32s(*values) -> np.ndarray:
    return np.array(values, np.float32)


def resize(cid: str, x: np.ndarray, attrs: dict, scales=None, sizes=None, roi=None) -> Case:
    """A Resize case with constant roi / scales / sizes (opset 19: every attribute)."""
    inputs = [In("x", x), In("roi", EMPTY if roi is None else f32s(*roi), True)]
    inputs.append(In("sc", EMPTY if scales is None else f32s(*scales), True))
    if sizes is not None:
        inputs.append(In("sz", i64(*sizes), True))
    return Case(cid, "Resize", inputs, attrs, opset=19)


def resize_cases() -> list[Case]:
    x = f32(2, 3, 9, 11)
    cubic = {"mode": "cubic"}
    linear = {"mode": "linear"}
    crop = {"coordinate_transformation_mode": "tf_crop_and_resize"}
    cases = []
    for ctm in ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "asymmetric", "align_corners"):
        attrs = {**cubic, "coordinate_transformation_mode": ctm}
        cases.append(resize(f"cubic_{ctm}_up", x, attrs, scales=(1, 1, 1.5, 2.25)))
        cases.append(resize(f"cubic_{ctm}_down", x, attrs, scales=(1, 1, 0.6, 0.5)))
    cases += [
        resize("cubic_sizes", x, cubic, sizes=(2, 3, 14, 5)),
        resize(
            "cubic_a05_exclude",
            x,
            {**cubic, "cubic_coeff_a": -0.5, "exclude_outside": 1},
            scales=(1, 1, 1.7, 0.8),
        ),
        resize("cubic_axis_w", x, {**cubic, "axes": [3]}, scales=(1.9,)),
        resize("cubic_rank2", f32(7, 9), cubic, scales=(1.3, 0.7)),
        resize(
            "linear_symmetric",
            x,
            {**linear, "coordinate_transformation_mode": "half_pixel_symmetric"},
            scales=(1, 1, 1.3, 0.7),
        ),
        # antialiasing (downscaling widens the filter; upscaling keeps it)
        resize("linear_aa_down", x, {**linear, "antialias": 1}, scales=(1, 1, 0.4, 0.55)),
        resize(
            "linear_aa_exclude", x, {**linear, "antialias": 1, "exclude_outside": 1}, scales=(1, 1, 0.45, 0.3)
        ),
        resize("linear_aa_up", x, {**linear, "antialias": 1}, scales=(1, 1, 1.7, 2.0)),
        resize("cubic_aa_down", x, {**cubic, "antialias": 1}, sizes=(2, 3, 4, 3)),
        resize(
            "cubic_aa_exclude",
            x,
            {**cubic, "antialias": 1, "exclude_outside": 1, "cubic_coeff_a": -0.5},
            scales=(1, 1, 0.5, 0.35),
        ),
        resize(
            "cubic_aa_align",
            x,
            {**cubic, "antialias": 1, "coordinate_transformation_mode": "align_corners"},
            scales=(1, 1, 0.7, 0.5),
        ),
        # tf_crop_and_resize: roi, extrapolation where it reaches outside the input
        resize(
            "crop_linear", x, {**linear, **crop}, sizes=(2, 3, 5, 8), roi=(0, 0, 0.2, 0.1, 1, 1, 0.8, 0.7)
        ),
        resize(
            "crop_linear_outside",
            x,
            {**linear, **crop, "extrapolation_value": 7.5},
            sizes=(2, 3, 6, 7),
            roi=(0, 0, -0.3, 0.4, 1, 1, 1.2, 1.6),
        ),
        resize(
            "crop_cubic",
            x,
            {**cubic, **crop, "extrapolation_value": -2.0},
            sizes=(2, 3, 7, 4),
            roi=(0, 0, -0.1, 0.25, 1, 1, 0.9, 1.3),
        ),
        resize(
            "crop_nearest",
            x,
            {"mode": "nearest", **crop, "extrapolation_value": 3.0},
            sizes=(2, 3, 8, 5),
            roi=(0, 0, 0.1, -0.2, 1, 1, 1.1, 0.9),
        ),
        resize(
            "crop_axes_3_2", x, {**linear, **crop, "axes": [3, 2]}, sizes=(6, 4), roi=(0.1, -0.2, 0.9, 0.7)
        ),
        resize("crop_one_row", x, {**linear, **crop}, sizes=(2, 3, 1, 6), roi=(0, 0, 0.3, 0, 1, 1, 0.5, 1)),
        resize(
            "crop_cubic_scales",
            x,
            {**cubic, **crop, "extrapolation_value": 1.5},
            scales=(1, 1, 0.8, 1.3),
            roi=(0, 0, 0.2, -0.1, 1, 1, 0.7, 1.2),
        ),
        # keep_aspect_ratio_policy (sizes of the listed axes)
        resize(
            "not_larger_linear",
            x,
            {**linear, "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"},
            sizes=(5, 17),
        ),
        resize(
            "not_smaller_cubic",
            x,
            {**cubic, "axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller"},
            sizes=(5, 17),
        ),
        resize(
            "not_larger_nearest",
            x,
            {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"},
            sizes=(20, 30),
        ),
        resize(
            "not_smaller_nearest",
            x,
            {"axes": [3, 2], "keep_aspect_ratio_policy": "not_smaller"},
            sizes=(4, 3),
        ),
        # big enough for the threaded loops
        resize("cubic_big", f32(1, 16, 40, 48), cubic, scales=(1, 1, 1.5, 1.5)),
        resize("linear_aa_big", f32(1, 16, 40, 48), {**linear, "antialias": 1}, scales=(1, 1, 0.5, 0.3)),
    ]
    u8 = RNG.integers(0, 255, (1, 2, 6, 7)).astype(np.uint8)
    cases.append(
        resize(
            "crop_nearest_u8",
            u8,
            {"mode": "nearest", **crop, "extrapolation_value": 200.0},
            sizes=(1, 2, 5, 9),
            roi=(0, 0, -0.25, 0.0, 1, 1, 1.0, 1.25),
        )
    )
    return cases


def resize_axes_cases() -> list[Case]:
    """Resizes of axes other than the last two (one pass per resized axis)."""
    linear, crop = {"mode": "linear"}, {"coordinate_transformation_mode": "tf_crop_and_resize"}
    x5 = f32(1, 2, 4, 5, 6)
    return [
        resize("trilinear_5d", x5, linear, scales=(1, 1, 2, 1.5, 0.7)),
        resize(
            "trilinear_3d",
            f32(4, 5, 6),
            {**linear, "coordinate_transformation_mode": "align_corners"},
            scales=(1.5, 0.8, 2),
        ),
        resize("trilinear_aa_5d", x5, {**linear, "antialias": 1}, scales=(1, 1, 0.5, 0.6, 0.4)),
        resize(
            "trilinear_crop_5d",
            x5,
            {**linear, **crop, "extrapolation_value": 4.0},
            sizes=(1, 2, 3, 6, 4),
            roi=(0, 0, -0.2, 0.1, 0.0, 1, 1, 0.9, 1.3, 0.8),
        ),
        resize("nearest_channels", f32(1, 3, 4, 5), {}, scales=(1, 2, 1, 1)),
        resize(
            "nearest_3d_i32",
            cases_.ints(2, 3, 4, dtype=np.int32),
            {"nearest_mode": "round_prefer_ceil"},
            scales=(2, 0.5, 1.5),
        ),
        resize(
            "nearest_crop_3d",
            f32(5, 6, 7),
            {"mode": "nearest", **crop, "extrapolation_value": -1.0},
            sizes=(4, 8, 3),
            roi=(-0.2, 0.1, 0.3, 1.0, 1.2, 0.6),
        ),
        resize("trilinear_big", f32(1, 4, 16, 24, 24), linear, scales=(1, 1, 2, 2, 2)),
    ]


def grid_sample_cases() -> list[Case]:
    cases = []
    x4, g4 = f32(2, 3, 5, 7), RNG.uniform(-1.3, 1.3, (2, 4, 6, 2)).astype(np.float32)
    g4[0, 0, :4] = [[-1, -1], [1, 1], [0, 0], [-1, 1]]  # the corners and the centre exactly
    x5, g5 = f32(2, 2, 4, 5, 3), RNG.uniform(-1.3, 1.3, (2, 3, 2, 4, 3)).astype(np.float32)
    for mode in ("nearest", "linear", "cubic"):
        for padding in ("zeros", "border", "reflection"):
            for corners in (0, 1):
                attrs = {"mode": mode, "padding_mode": padding, "align_corners": corners}
                tag = f"{mode}_{padding}_{corners}"
                cases.append(Case(f"gs4_{tag}", "GridSample", [In("x", x4), In("g", g4)], attrs, opset=20))
                if mode != "cubic":  # ONNX Runtime has no 3-D cubic
                    cases.append(
                        Case(f"gs5_{tag}", "GridSample", [In("x", x5), In("g", g5)], attrs, opset=20)
                    )
    big_grid = RNG.uniform(-1.1, 1.1, (2, 40, 40, 2)).astype(np.float32)
    cases.append(
        Case(
            "gs_big",
            "GridSample",
            [In("x", f32(2, 8, 32, 32)), In("g", big_grid)],
            {"mode": "linear"},
            opset=20,
        )
    )
    return cases


def affine_grid_cases() -> list[Case]:
    cases = []
    for corners in (0, 1):
        cases.append(
            Case(
                f"ag2_{corners}",
                "AffineGrid",
                [In("t", f32(2, 2, 3)), In("s", i64(2, 3, 5, 6), True)],
                {"align_corners": corners},
                opset=20,
            )
        )
        cases.append(
            Case(
                f"ag3_{corners}",
                "AffineGrid",
                [In("t", f32(2, 3, 4)), In("s", i64(2, 3, 4, 5, 3), True)],
                {"align_corners": corners},
                opset=20,
            )
        )
    cases.append(
        Case("ag_one_pixel", "AffineGrid", [In("t", f32(1, 2, 3)), In("s", i64(1, 1, 1, 4), True)], opset=20)
    )
    return cases


ROIS = np.array(
    [[0, 0, 9, 9], [1.3, 2.2, 7.7, 5.1], [-3, -2, 4, 15], [5, 5, 5.2, 5.1], [11, 9, 30, 30], [4, 6, 2, 1]],
    np.float32,
)  # whole, fractional, partly outside, tiny, outside, reversed


def roi_align_cases() -> list[Case]:
    x = f32(2, 3, 10, 12)
    batch = i64(0, 1, 1, 0, 1, 0)
    cases = []
    for mode in ("avg", "max"):
        for ctm in ("half_pixel", "output_half_pixel"):
            for ratio, scale in ((0, 1.0), (2, 0.5)):
                attrs = {
                    "mode": mode,
                    "coordinate_transformation_mode": ctm,
                    "output_height": 3,
                    "output_width": 4,
                    "sampling_ratio": ratio,
                    "spatial_scale": scale,
                }
                cases.append(
                    Case(
                        f"roi_{mode}_{ctm}_{ratio}",
                        "RoiAlign",
                        [In("x", x), In("r", ROIS), In("b", batch)],
                        attrs,
                        opset=20,
                    )
                )
    cases.append(
        Case(
            "roi_big",
            "RoiAlign",
            [In("x", f32(2, 16, 20, 20)), In("r", ROIS * 1.5), In("b", batch)],
            {"output_height": 7, "output_width": 7},
            opset=20,
        )
    )
    return cases


def center_crop_pad_cases() -> list[Case]:
    cases = []
    for name, data in (
        ("f32", f32(5, 6, 7)),
        ("i64", cases_.ints(5, 6, 7)),
        ("u8", cases_.ints(5, 6, 7, low=0, high=255, dtype=np.uint8)),
    ):
        cases.append(
            Case(f"ccp_{name}", "CenterCropPad", [In("x", data), In("s", i64(3, 9, 7), True)], opset=18)
        )
    x = f32(5, 6, 7)
    cases += [
        Case("ccp_axes", "CenterCropPad", [In("x", x), In("s", i64(8, 2), True)], {"axes": [1, 2]}, opset=18),
        Case(
            "ccp_negative_axes",
            "CenterCropPad",
            [In("x", x), In("s", i64(1, 10), True)],
            {"axes": [-1, 0]},
            opset=18,
        ),
        Case("ccp_empty", "CenterCropPad", [In("x", x), In("s", i64(0), True)], {"axes": [1]}, opset=18),
    ]
    return cases


FAMILIES = {
    "resize": resize_cases,
    "resize_axes": resize_axes_cases,
    "grid_sample": grid_sample_cases,
    "affine_grid": affine_grid_cases,
    "roi_align": roi_align_cases,
    "center_crop_pad": center_crop_pad_cases,
}


def _family(family: str):
    cases = FAMILIES[family]()
    model, feeds, names = combined_model(cases)
    return cases, model, feeds, names, dict(zip(names, cases_.ort_outputs_of(model, feeds)))


def _check(cases, names, got, want, rtol=1e-5, atol=1e-5):
    for case in cases:
        outs = [n for n in names if n.startswith(f"{case.id}.")]
        assert_matches(case, [got[n] for n in outs], [want[n] for n in outs], rtol=rtol, atol=atol)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_reference_and_cpu_match_onnxruntime(family):
    cases, model, feeds, names, want = _family(family)
    graph = import_model(model, name=family)
    _check(cases, names, run_graph(graph, feeds), want)
    graph, build = compile_cpu(model)
    computed = {k["op"] for k in build.kernels}
    assert {c.op for c in cases} <= computed, f"not compiled as kernels: {({c.op for c in cases}) - computed}"
    for threads in (1, 2):
        _check(cases, names, run_build(graph, build, feeds, threads), want)


def test_resize_planes_in_chunks(monkeypatch):
    """The separable Resize goes through its row buffer a few planes at a time when they do not all fit
    (here one of the 15 planes at a time: 9 input rows x 24 output columns fill 300 floats)."""
    monkeypatch.setattr(emit_index, "RESIZE_TMP_FLOATS", 300)
    cases = [resize("chunked", f32(3, 5, 9, 11), {"mode": "cubic"}, scales=(1, 1, 1.5, 2.25))]
    model, feeds, names = combined_model(cases)
    want = dict(zip(names, cases_.ort_outputs_of(model, feeds)))
    graph, build = compile_cpu(model)
    for threads in (1, 2):
        _check(cases, names, run_build(graph, build, feeds, threads), want)


def _runtime_model(op: str, inputs: list[tuple[str, int, tuple]], out_shape: tuple, attrs: dict, opset: int):
    """A one-node model whose inputs are all graph inputs and whose output shape is declared (as the
    backend node tests declare theirs)."""
    node = helper.make_node(op, [n for n, _, _ in inputs], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_affine_grid_runtime_size_must_be_the_compiled_shape():
    """A run-time size is read: the compiled (declared) shape computes; any other batch or spatial size
    fails the run, as a run-time Resize sizes does."""
    model = _runtime_model(
        "AffineGrid",
        [("t", TensorProto.FLOAT, (2, 2, 3)), ("s", TensorProto.INT64, (4,))],
        (2, 4, 5, 2),
        {"align_corners": 1},
        opset=20,
    )
    graph, build = compile_cpu(model)
    theta = f32(2, 2, 3)
    feeds = {"t": theta, "s": i64(2, 7, 4, 5)}  # the channel count is free
    want = cases_.ort_outputs_of(model, feeds)[0]
    np.testing.assert_allclose(run_build(graph, build, feeds, 1)["y"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="status 4"):
        run_build(graph, build, {"t": theta, "s": i64(2, 3, 5, 5)}, 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_roi_align_batch_index_out_of_range_fails_the_run(threads):
    model = _runtime_model(
        "RoiAlign",
        [
            ("x", TensorProto.FLOAT, (2, 3, 6, 6)),
            ("r", TensorProto.FLOAT, (2, 4)),
            ("b", TensorProto.INT64, (2,)),
        ],
        (2, 3, 2, 2),
        {"output_height": 2, "output_width": 2},
        opset=16,
    )
    graph, build = compile_cpu(model)
    feeds = {"x": f32(2, 3, 6, 6), "r": ROIS[:2], "b": i64(1, 2)}
    with pytest.raises(RuntimeError, match="status 3: an index was out of range"):
        run_build(graph, build, feeds, threads)
    feeds["b"] = i64(1, 0)
    np.testing.assert_allclose(
        run_build(graph, build, feeds, threads)["y"],
        cases_.ort_outputs_of(model, feeds)[0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_unsupported_cases_give_reasons():
    target = CpuTarget()
    x = Value("x", TensorType(DType.FLOAT32, (1, 2, 4, 4)))
    const = lambda a: Value("c", const=np.asarray(a))  # noqa: E731
    scales = const(f32s(1, 1, 2, 2))
    out8 = TensorType(DType.FLOAT32, (1, 2, 8, 8))
    roi = Value("roi", TensorType(DType.FLOAT32, (8,)))
    reasons = {
        "Resize mode 'lanczos' is not supported": _node(
            "Resize", [x, None, scales], {"mode": "lanczos"}, out8
        ),
        "Resize with antialias=1 and mode 'nearest'": _node(
            "Resize", [x, None, scales], {"antialias": 1}, out8
        ),
        "cubic Resize of int8 data is not supported": _node(
            "Resize", [Value("q", TensorType(DType.INT8, (1, 1, 2, 2))), None, scales], {"mode": "cubic"}
        ),
        "Resize roi (input 1 'roi') must be a constant": _node(
            "Resize",
            [x, roi, None, const(i64(1, 2, 3, 3))],
            {"coordinate_transformation_mode": "tf_crop_and_resize"},
            TensorType(DType.FLOAT32, (1, 2, 3, 3)),
        ),
        "Resize sizes (input 3 'sz') must be a constant with keep_aspect_ratio_policy 'not_larger'": _node(
            "Resize",
            [x, None, None, Value("sz", TensorType(DType.INT64, (2,)))],
            {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"},
            out8,
        ),
        "Resize keep_aspect_ratio_policy 'fill' is not supported": _node(
            "Resize",
            [x, None, None, const(i64(8, 8))],
            {"axes": [2, 3], "keep_aspect_ratio_policy": "fill"},
            out8,
        ),
        "CenterCropPad shape (input 1 'shp') must be a constant": _node(
            "CenterCropPad", [x, Value("shp", TensorType(DType.INT64, (4,)))]
        ),
        "GridSample padding_mode 'mirror' is not supported": _node(
            "GridSample",
            [x, Value("g", TensorType(DType.FLOAT32, (1, 3, 3, 2)))],
            {"padding_mode": "mirror"},
            TensorType(DType.FLOAT32, (1, 2, 3, 3)),
        ),
        "GridSample grid 'g' of shape [1, 3, 3, 3] does not fit": _node(
            "GridSample",
            [x, Value("g", TensorType(DType.FLOAT32, (1, 3, 3, 3)))],
            None,
            TensorType(DType.FLOAT32, (1, 2, 3, 3)),
        ),
        "RoiAlign mode 'median' is not supported": _node(
            "RoiAlign",
            [x, Value("r", TensorType(DType.FLOAT32, (3, 4))), Value("b", TensorType(DType.INT64, (3,)))],
            {"mode": "median"},
            TensorType(DType.FLOAT32, (3, 2, 1, 1)),
        ),
    }
    for expected, node in reasons.items():
        reason = target.unsupported_reason(node)
        assert reason is not None and expected in reason, (expected, reason)
        assert "\n" not in reason

"""The cpu target's indexing and data-movement kernels against ONNX Runtime.

Each family of ``tests/reference/data_op_models`` cases becomes one ONNX model (one node per case, names
prefixed by the case), compiled through the whole pipeline for the cpu target and run at 1 and 2 threads;
every output must equal ONNX Runtime's (float results of linear Resize within 1e-5). The parameters
(indices of constant gathers, pads, k, scales) are initializers and the data are graph inputs, so the
kernels run rather than constant folding. Then: out-of-range gather indices, and the reasons unsupported
cases give.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from lowering.ir import DType, Node, TensorType, Value
from lowering.onnx.importer import import_model
from lowering.passmanager import PassContext, PassManager
from passes.memory.materialize_outputs import MaterializeOutputs
from passes.memory.plan_memory import PlanMemory
from passes.pipeline import default_passes
from targets.cpu.target import CpuTarget
from tests.reference import data_op_models as cases_
from tests.reference.data_op_models import Case, In, assert_matches, f32, i64

from .cpu_harness import GraphMaker, build_cpu

pytestmark = pytest.mark.target_cpu


def combined_model(cases: list[Case]) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[str]]:
    """One model holding every case's node (inputs, initializers and outputs renamed ``<id>.<name>``)."""
    nodes, inputs, inits, outputs, feeds, names = [], [], [], [], {}, []
    opset = max(c.opset for c in cases)
    for case in cases:
        model = case.model()
        if case.opset != opset:
            model = onnx.version_converter.convert_version(model, opset)
        g = model.graph
        rename = {v.name: f"{case.id}.{v.name}" for v in list(g.input) + list(g.output)}
        rename.update({t.name: f"{case.id}.{t.name}" for t in g.initializer})
        for n in g.node:
            n.input[:] = [rename.get(i, f"{case.id}.{i}" if i else "") for i in n.input]
            n.output[:] = [rename.get(o, f"{case.id}.{o}") for o in n.output]
            nodes.append(n)
        for coll, target in ((g.input, inputs), (g.output, outputs), (g.initializer, inits)):
            for v in coll:
                v.name = rename[v.name]
                target.append(v)
        feeds.update({f"{case.id}.{k}": v for k, v in case.feeds().items()})
        names += [v.name for v in g.output]
    graph = helper.make_graph(nodes, "family", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, feeds, names


def compile_cpu(model: onnx.ModelProto):
    graph = import_model(model, name="family")
    target = CpuTarget()
    PassManager(default_passes() + target.pipeline({}) + [MaterializeOutputs(), PlanMemory()]).run(
        graph, PassContext(verify_each=True))
    return graph, target.build(graph, {})


def run_build(graph, build, feeds, threads):
    from runtime.backends.cpu import CpuExecutor

    executor = CpuExecutor(build.manifest, lambda path: build.files[path], threads)
    outs = [np.empty(v.type.shape, v.type.dtype.numpy) for v in graph.outputs]
    executor.run([np.ascontiguousarray(feeds[v.name]) for v in graph.inputs], outs)
    return dict(zip(graph.output_names, outs))


FAMILIES = {
    "gather": cases_.gather_cases() + cases_.gather_elements_nd_cases(),
    "slice_split": cases_.slice_cases() + cases_.split_cases(),
    "expand_tile_pad_trilu": cases_.expand_tile_cases() + cases_.pad_cases() + cases_.trilu_cases(),
    "topk": cases_.topk_cases(),
    "resize": cases_.resize_cases(),
    "concat_transpose": cases_.concat_transpose_cases(),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_cpu_matches_onnxruntime(family):
    cases = FAMILIES[family]
    model, feeds, names = combined_model(cases)
    graph, build = compile_cpu(model)
    computed = {k["op"] for k in build.kernels}
    assert {c.op for c in cases} <= computed, f"not compiled as kernels: {({c.op for c in cases}) - computed}"
    want = dict(zip(names, cases_.ort_outputs_of(model, feeds)))
    for threads in (1, 2):
        got = run_build(graph, build, feeds, threads)
        for case in cases:
            outs = [n for n in names if n.startswith(f"{case.id}.")]
            assert_matches(case, [got[n] for n in outs], [want[n] for n in outs])


def test_topk_unsorted_and_big_tensors_across_threads():
    """Large enough that the OpenMP loops split (embedding rows, strided copies, pads, resize, topk)."""
    cases = [
        Case("embed", "Gather", [In("w", f32(3000, 96), True),
                                 In("ids", cases_.ints(4, 256, low=-3000, high=3000))]),
        Case("slice_big", "Slice", [In("x", f32(8, 128, 160)), In("s", i64(1, 159), True),
                                    In("e", i64(127, 0), True), In("a", i64(1, 2), True),
                                    In("st", i64(1, -1), True)]),
        Case("expand_big", "Expand", [In("x", f32(1, 128, 1)), In("s", i64(8, 128, 300), True)]),
        Case("pad_big", "Pad", [In("x", f32(2, 16, 64, 64)), In("p", i64(0, 0, 3, 2, 0, 0, 1, 4), True)],
             {"mode": "reflect"}),
        Case("resize_big", "Resize", [In("x", f32(1, 32, 40, 40)), None, In("sc", np.array(
            [1, 1, 2, 2], np.float32), True)], {"mode": "linear"}),
        Case("topk_unsorted", "TopK", [In("x", f32(64, 2000)), In("k", i64(40), True)], {"sorted": 0},
             outputs=[np.float32, np.int64], unordered=True),
    ]
    model, feeds, names = combined_model(cases)
    graph, build = compile_cpu(model)
    want = dict(zip(names, cases_.ort_outputs_of(model, feeds)))
    for threads in (1, 2):
        got = run_build(graph, build, feeds, threads)
        for case in cases:
            outs = [n for n in names if n.startswith(f"{case.id}.")]
            assert_matches(case, [got[n] for n in outs], [want[n] for n in outs])


def test_out_of_range_gather_indices_write_zeros():
    """ONNX Runtime fails such a run; the kernels must not read outside the data: those elements are 0."""
    m = GraphMaker("oob")
    w = m.weight(6, 4)
    ids = m.qinput(5, dtype=np.int32, low=0, high=5)
    x = m.input(3, 4)
    rows = m.qinput(2, 4, dtype=np.int32, low=0, high=2)
    built = build_cpu(m.output(m.node("Gather", w, ids), m.node("GatherElements", x, rows, axis=0)).graph)
    feeds = dict(m.feeds)
    feeds[ids.name] = np.array([0, 6, -7, 5, -1], np.int32)
    feeds[rows.name] = np.array([[0, 3, -4, 2], [9, -1, 1, 0]], np.int32)
    got = list(built.run(feeds).values())
    table, zero, xd = w.const, np.zeros(4, np.float32), feeds[x.name]
    np.testing.assert_array_equal(got[0], np.stack([table[0], zero, zero, table[5], table[5]]))
    want = np.array([[xd[0, 0], 0, 0, xd[2, 3]], [0, xd[2, 1], xd[1, 2], xd[0, 3]]], np.float32)
    np.testing.assert_array_equal(got[1], want)


def _node(op, inputs, attrs=None, out_type=None):
    node = Node(op, inputs, [Value("y", out_type or inputs[0].type)], name="n")
    for key, value in (attrs or {}).items():
        node.set_attr(key, value)
    return node


def test_unsupported_cases_give_reasons():
    target = CpuTarget()
    x = Value("x", TensorType(DType.FLOAT32, (1, 2, 4, 4)))
    starts = Value("s", TensorType(DType.INT64, (1,)))
    const = lambda a: Value("c", const=np.asarray(a))  # noqa: E731
    reasons = {
        "Slice starts (input 1 's') must be a constant": _node(
            "Slice", [x, starts, const(i64(2))]),
        "Resize mode 'cubic' is not supported": _node(
            "Resize", [x, None, const(np.array([1, 1, 2, 2], np.float32))], {"mode": "cubic"}),
        "Resize of axis 1": _node(
            "Resize", [x, None, const(np.array([1, 2, 1, 1], np.float32))],
            out_type=TensorType(DType.FLOAT32, (1, 4, 4, 4))),
        "linear Resize of int8 data": _node(
            "Resize", [Value("q", TensorType(DType.INT8, (1, 1, 2, 2))), None,
                       const(np.array([1, 1, 2, 2], np.float32))], {"mode": "linear"}),
        "Pad pads (input 1 's') must be a constant": _node("Pad", [x, starts]),
        "Gather indices (input 1) are float32": _node("Gather", [x, x]),
        "TopK k (input 1 's') must be a constant": _node("TopK", [x, starts]),
        "Slice has a step of 0": _node(
            "Slice", [x, const(i64(0)), const(i64(2)), const(i64(1)), const(i64(0))]),
        "Resize: Resize needs a scales or a sizes input": _node(
            "Resize", [x, None, const(np.zeros(0, np.float32))]),
    }
    for expected, node in reasons.items():
        reason = target.unsupported_reason(node)
        assert reason is not None and expected in reason, (expected, reason)

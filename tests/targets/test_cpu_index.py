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


def _out_of_range_case(op: str, big: bool):
    """A one-node graph of ``op`` built with in-range indices, the feeds that put some out of range, and
    the output expected with the out-of-range elements as zeros (``big``: large enough that the OpenMP
    loops split at 2 threads)."""
    m = GraphMaker(f"oob_{op}")
    if op == "Gather":
        rows = 3000 if big else 6
        w = m.weight(rows, 96 if big else 4)
        ids = m.qinput(*((4, 256) if big else (5,)), dtype=np.int32, low=0, high=rows - 1)
        m.output(m.node("Gather", w, ids))
        bad = m.feeds[ids.name].copy().reshape(-1)
        bad[[1, 2, -1]] = [rows, -rows - 1, 1 << 30]  # -rows - 1 and 1 << 30 too
        bad = bad.reshape(m.feeds[ids.name].shape)
        want = w.const[np.clip(bad, -rows, rows - 1)]
        want[(bad >= rows) | (bad < -rows)] = 0
        return m, {ids.name: bad}, want
    if op == "GatherElements":
        x = m.input(*((300, 400) if big else (3, 4)))
        n = x.type.shape[0]
        rows = m.qinput(*((256, 400) if big else (2, 4)), dtype=np.int64, low=-n, high=n - 1)
        m.output(m.node("GatherElements", x, rows, axis=0))
        bad = m.feeds[rows.name].copy()
        bad[0, 1], bad[1, 0], bad[-1, -1] = n, -n - 1, 1 << 40
        xd = m.feeds[x.name]
        want = np.take_along_axis(xd, np.clip(bad, -n, n - 1) % n, axis=0)
        want[(bad >= n) | (bad < -n)] = 0
        return m, {rows.name: bad}, want
    x = m.input(*((64, 64, 256) if big else (3, 4, 2)))
    a, b = x.type.shape[:2]
    tuples = m.qinput(*((512, 2) if big else (5, 2)), dtype=np.int64, low=0, high=min(a, b) - 1)
    m.output(m.node("GatherND", x, tuples))
    bad = m.feeds[tuples.name].copy()
    bad[1] = [a, 0]
    bad[2] = [0, -b - 1]
    bad[-1] = [-1, -1]  # in range: counts from the end
    xd = m.feeds[x.name]
    ok = (bad[:, 0] >= -a) & (bad[:, 0] < a) & (bad[:, 1] >= -b) & (bad[:, 1] < b)
    want = np.where(ok[:, None], xd[bad[:, 0] % a * ok, bad[:, 1] % b * ok], 0).astype(np.float32)
    return m, {tuples.name: bad}, want


@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
@pytest.mark.parametrize("op", ["Gather", "GatherElements", "GatherND"])
def test_out_of_range_gather_indices_fail_the_run(op, big):
    """ONNX Runtime fails such a run; so does lw_run (the runtime raises, the process lives on). The
    kernels still never read outside the data: the out-of-range elements are written as zeros, the rest
    normally. The next run with in-range indices succeeds (the status is per run)."""
    m, bad_feeds, want = _out_of_range_case(op, big)
    built = build_cpu(m.graph)
    feeds = {**m.feeds, **bad_feeds}
    for threads in (1, 2):
        executor = built.executor(threads)
        out = np.full(want.shape, np.nan, np.float32)
        with pytest.raises(RuntimeError, match=r"lw_run failed with status 3: an index was out of range"):
            executor.run([np.ascontiguousarray(feeds[v.name]) for v in m.graph.inputs], [out])
        np.testing.assert_array_equal(out, want)
        got = built.run(m.feeds, threads)  # the graph's own (in-range) indices: no error
        np.testing.assert_array_equal(next(iter(got.values())), m._env[id(m.graph.outputs[0])])


def _node(op, inputs, attrs=None, out_type=None, outputs=1):
    """A node named 'n' whose output 'y' has ``out_type`` (default: input 0's); further outputs are int64."""
    outs = [Value("y", out_type or inputs[0].type)] + [Value(f"y{i}", TensorType(DType.INT64, (1,)))
                                                         for i in range(1, outputs)]
    node = Node(op, inputs, outs, name="n")
    for key, value in (attrs or {}).items():
        node.set_attr(key, value)
    return node


def test_unsupported_cases_give_reasons():
    target = CpuTarget()
    x = Value("x", TensorType(DType.FLOAT32, (1, 2, 4, 4)))
    starts = Value("s", TensorType(DType.INT64, (1,)))
    const = lambda a: Value("c", const=np.asarray(a))  # noqa: E731
    reasons = {
        "Slice starts (input 1 'f') must be 1 int32 or int64 value(s)": _node(
            "Slice", [x, Value("f", TensorType(DType.FLOAT32, (1,))), const(i64(2))]),
        "Resize mode 'lanczos' is not supported": _node(
            "Resize", [x, None, const(np.array([1, 1, 2, 2], np.float32))], {"mode": "lanczos"}),
        "Resize output shape does not match its scales or sizes": _node(
            "Resize", [x, None, const(np.array([1, 2, 1, 1], np.float32))],
            out_type=TensorType(DType.FLOAT32, (1, 2, 4, 4))),
        "linear Resize of int8 data": _node(
            "Resize", [Value("q", TensorType(DType.INT8, (1, 1, 2, 2))), None,
                       const(np.array([1, 1, 2, 2], np.float32))], {"mode": "linear"}),
        "Pad pads (input 1 's') must be 8 int64 values": _node("Pad", [x, starts]),
        "Gather indices (input 1) are float32": _node("Gather", [x, x]),
        "TopK k (input 1 'f') must be 1 int64 value(s)": _node(
            "TopK", [x, Value("f", TensorType(DType.FLOAT32, (1,)))]),
        "Slice has a step of 0": _node(
            "Slice", [x, const(i64(0)), const(i64(2)), const(i64(1)), const(i64(0))]),
        "Resize: Resize needs a scales or a sizes input": _node(
            "Resize", [x, None, const(np.zeros(0, np.float32))]),
    }
    for expected, node in reasons.items():
        reason = target.unsupported_reason(node)
        assert reason is not None and expected in reason, (expected, reason)

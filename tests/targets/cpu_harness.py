"""Shared helpers for the cpu target tests: build small graphs, plan them, build, run, compare.

``GraphMaker`` infers every node's output type by evaluating it with the reference interpreter as the graph
is built, so a test states only inputs, ops and attributes. ``check_against_reference`` builds the graph
with ``CpuTarget``, runs it with ``CpuExecutor`` and compares every output with ``run_graph``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowering.ir import DType, Graph, Node, TensorType, Value, verify
from lowering.memory import ALIGNMENT, MemoryPlan, storage_roots
from lowering.reference import evaluate_node, run_graph
from runtime.backends.cpu import CpuExecutor
from targets.base import TargetBuild
from targets.cpu.target import CpuTarget

RTOL, ATOL = 1e-4, 1e-5


def naive_plan(graph: Graph) -> MemoryPlan:
    """Every arena-resident storage root gets its own buffer (views share their root's offset)."""
    roots = storage_roots(graph)
    external = {id(v) for v in graph.inputs} | {id(v) for v in graph.outputs}
    offsets: dict[str, int] = {}
    size = 0
    for v in graph.values():
        root = roots[id(v)]
        if root.is_const or id(root) in external or root.type is None:
            continue
        if root.name not in offsets:
            offsets[root.name] = size
            size += -(-max(root.type.nbytes, 1) // ALIGNMENT) * ALIGNMENT
        offsets[v.name] = offsets[root.name]
    return MemoryPlan(arena_size=size, naive_size=size, lower_bound=0, offsets=offsets)


class GraphMaker:
    """Builds a graph node by node, typing each output by running the reference on seeded inputs."""

    def __init__(self, name: str = "test", seed: int = 0):
        self.graph = Graph(name=name)
        self.rng = np.random.default_rng(seed)
        self.feeds: dict[str, np.ndarray] = {}
        self._env: dict[int, np.ndarray] = {}

    def input(self, *shape: int, positive: bool = False) -> Value:
        data = self.rng.standard_normal(shape).astype(np.float32)
        if positive:
            data = np.abs(data) + np.float32(0.1)
        v = Value(self.graph.unique_name("x"), TensorType.of(data))
        self.graph.inputs.append(v)
        self.feeds[v.name] = data
        self._env[id(v)] = data
        return v

    def qinput(self, *shape: int, dtype=np.int8, low: int | None = None, high: int | None = None) -> Value:
        """A graph input of random int8 / uint8 (or int32) data in [low, high]."""
        info = np.iinfo(dtype)
        low = info.min if low is None else low
        high = info.max if high is None else high
        data = np.asarray(self.rng.integers(low, high, shape, endpoint=True)).astype(dtype)
        v = Value(self.graph.unique_name("q"), TensorType.of(data))
        self.graph.inputs.append(v)
        self.feeds[v.name] = data
        self._env[id(v)] = data
        return v

    def const(self, data) -> Value:
        v = self.graph.constant(np.asarray(data), hint="c")
        self._env[id(v)] = v.const
        return v

    def weight(self, *shape: int, scale: float = 0.5) -> Value:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, *inputs: Value | None, domain: str = "", out_dtype=None, **attrs) -> Value:
        """Append a node; ``out_dtype`` types the output up front for ops whose reference reads it (the
        integer ops of lowering.quantized)."""
        name = self.graph.unique_name(op.lower())
        out = Value(self.graph.unique_name(f"{name}_out"))
        if out_dtype is not None:
            out.type = TensorType(DType.from_numpy(out_dtype), ())
        node = Node(op, list(inputs), [out], name=name, domain=domain)
        for key, value in attrs.items():
            node.set_attr(key, value)
        args = [None if v is None else self._env[id(v)] for v in inputs]
        if op == "FusedElementwise":  # its reference reads the output shape: the inputs' broadcast
            out.type = TensorType.of(np.broadcast_arrays(*[a for a in args if a is not None])[0])
        result = evaluate_node(node, args)[0]
        out.type = TensorType.of(result)
        self._env[id(out)] = result
        self.graph.append(node)
        return out

    def node_outputs(self, op: str, *inputs: Value | None, outputs: int, domain: str = "", **attrs
                     ) -> list[Value]:
        """Append a node with several outputs (DynamicQuantizeLinear), each typed by the reference."""
        name = self.graph.unique_name(op.lower())
        outs = [Value(self.graph.unique_name(f"{name}_out{i}")) for i in range(outputs)]
        node = Node(op, list(inputs), outs, name=name, domain=domain)
        for key, value in attrs.items():
            node.set_attr(key, value)
        results = evaluate_node(node, [None if v is None else self._env[id(v)] for v in inputs])
        for out, result in zip(outs, results):
            result = np.asarray(result)
            out.type = TensorType.of(result)
            self._env[id(out)] = result
        self.graph.append(node)
        return outs

    def output(self, *values: Value) -> GraphMaker:
        for v in values:
            self.graph.outputs.append(v)
            self.graph.output_names.append(f"out_{len(self.graph.output_names)}_{v.name}")
        return self


@dataclass
class Built:
    build: TargetBuild
    graph: Graph

    def executor(self, threads: int | None = None) -> CpuExecutor:
        return CpuExecutor(self.build.manifest, lambda path: self.build.files[path], threads)

    def run(self, feeds: dict[str, np.ndarray], threads: int | None = None) -> dict[str, np.ndarray]:
        executor = self.executor(threads)
        outputs = [np.empty(v.type.shape, v.type.dtype.numpy) for v in self.graph.outputs]
        executor.run([np.ascontiguousarray(feeds[v.name]) for v in self.graph.inputs], outputs)
        return dict(zip(self.graph.output_names, outputs))


def build_cpu(graph: Graph, planner=naive_plan, **options) -> Built:
    verify(graph)
    graph.memory_plan = planner(graph)
    return Built(CpuTarget().build(graph, options), graph)


def check_against_reference(
    maker: GraphMaker, threads: int | None = None, planner=naive_plan, **options
) -> Built:
    """Build ``maker.graph`` for cpu, run it and compare every output with the reference interpreter."""
    built = build_cpu(maker.graph, planner, **options)
    got = built.run(maker.feeds, threads)
    want = run_graph(maker.graph, maker.feeds)
    for name, expected in want.items():
        assert got[name].dtype == expected.dtype, f"output {name}: {got[name].dtype} != {expected.dtype}"
        if expected.dtype.kind in "iu":  # integer results are exact
            np.testing.assert_array_equal(got[name], expected, err_msg=f"output {name}")
        else:
            np.testing.assert_allclose(got[name], expected, rtol=RTOL, atol=ATOL, err_msg=f"output {name}")
    return built


def check_exactly(maker: GraphMaker, threads: int | None = None, **options) -> Built:
    """Like check_against_reference, but every output (float ones too) must be bit-identical."""
    built = build_cpu(maker.graph, naive_plan, **options)
    got = built.run(maker.feeds, threads)
    want = run_graph(maker.graph, maker.feeds)
    for name, expected in want.items():
        assert got[name].dtype == expected.dtype, f"output {name}: {got[name].dtype} != {expected.dtype}"
        np.testing.assert_array_equal(got[name], expected, err_msg=f"output {name}")
    return built


def conv_graph(name: str, cases, activation: str = "", params=(), fan_in_scale: bool = False) -> GraphMaker:
    """One conv per (input shape, weight shape, attrs) case: a plain Conv, or a FusedConv with `activation`;
    weights scaled by 1/sqrt(fan-in) with `fan_in_scale` (outputs of magnitude 1 whatever K)."""
    from lowering.opinfo import DOMAIN

    m = GraphMaker(name)
    outs = []
    for xs, ws, attrs in cases:
        x = m.input(*xs)
        w = m.weight(*ws, scale=float(np.prod(ws[1:])) ** -0.5) if fan_in_scale else m.weight(*ws)
        if activation:
            outs.append(m.node("FusedConv", x, w, m.weight(ws[0]), domain=DOMAIN, activation=activation,
                               activation_params=params, **attrs))
        else:
            outs.append(m.node("Conv", x, w, m.weight(ws[0]), **attrs))
    return m.output(*outs)


#: the epilogues a conv kernel applies: (residual: of the output's shape ("full"), per channel, or none;
#: activation; its parameters)
CONV_EPILOGUES = (("full", "Relu", ()), ("channel", "LeakyRelu", (0.1,)), ("full", "Sigmoid", ()),
                  (None, "Tanh", ()), (None, "", ()))


def add_conv_epilogues(m: GraphMaker, x: Value, ws, attrs: dict, out_shape, weight_scale: float = 0.5
                       ) -> list[Value]:
    """FusedConv nodes over x with every epilogue of CONV_EPILOGUES, then one with a residual and no bias."""
    from lowering.opinfo import DOMAIN

    full, per_channel = m.input(*out_shape), m.input(1, ws[0], 1, 1)
    residual = {"full": full, "channel": per_channel, None: None}
    outs = [
        m.node("FusedConv", x, m.weight(*ws, scale=weight_scale), m.weight(ws[0]), residual[res],
               domain=DOMAIN, activation=act, activation_params=params, **attrs)
        for res, act, params in CONV_EPILOGUES
    ]
    outs.append(m.node("FusedConv", x, m.weight(*ws, scale=weight_scale), None, full, domain=DOMAIN, **attrs))
    return outs


def assert_thread_count_independent(maker: GraphMaker, counts=(1, 2, 3, 4)) -> None:
    """Every output bit-identical whatever the thread count (each output's reduction order is fixed)."""
    built = build_cpu(maker.graph)
    results = [built.run(maker.feeds, threads) for threads in counts]
    for other in results[1:]:
        for name, value in results[0].items():
            np.testing.assert_array_equal(other[name], value, err_msg=name)


def conv_epilogue_graph(name: str, cases, weight_scale: float = 0.5) -> GraphMaker:
    """Per (input shape, weight shape, attrs) case: a Conv without bias, then every epilogue
    (add_conv_epilogues)."""
    m = GraphMaker(name)
    outs = []
    for xs, ws, attrs in cases:
        x = m.input(*xs)
        plain = m.node("Conv", x, m.weight(*ws, scale=weight_scale), None, **attrs)
        outs += [plain, *add_conv_epilogues(m, x, ws, attrs, plain.type.shape, weight_scale)]
    return m.output(*outs)

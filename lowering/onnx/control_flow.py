"""Unroll ONNX control flow (If, Loop, Scan) into plain nodes at import.

The IR has static shapes and no subgraphs, so control flow is resolved the way static-shape compilers do
it, on the ModelProto, before the function expansion and the supported-op check::

    y, z = Scan<body>(s0, x[3, 2])          ->  x_0 = Gather(x, 0); s1, z_0 = body(s0, x_0); ...
                                                y = Identity(s3); z = Concat(Unsqueeze(z_0), ..., axis=0)
    v, w = Loop<body>(M=2, true, v0)        ->  v1, w_0 = body(0, true, v0); v2, w_1 = body(1, true, v1)
    y = If<then, else>(c)                   ->  c constant: the taken branch inlined
                                                c at run time: both inlined, y = Where(c, y_then, y_else)

Each inlined body instance gets its values and nodes renamed (prefix ``node/iteration/``); a body's
references to outer-scope values resolve to the outer names; control flow nested in a body is unrolled as
it is inlined. Decisions need compile-time values: the trip count and condition of a Loop, a constant If
condition. They come from a lazy constant folder over the graph (initializers, Constant nodes, Shape/Size
of tensors of static shape, and any op whose inputs fold, evaluated with the compiler's own reference
interpreter). A Loop whose trip count or condition depends on run-time data is refused, naming the node; a
run-time If whose branches disagree on an output's type or shape is refused after the fact (``Where``
could not select between them). When a decision needs the shape of a value made in the same pass (a Scan
over a value an unrolled Loop computes), the node is left for the next pass, after shape inference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from ..errors import LoweringError
from .expand import _all_names, _unique

#: The ops this module removes.
CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
#: The most iterations one Loop or Scan may unroll into, and the most nodes a model may have once unrolled:
#: beyond, the unrolled model would be too large to compile in reasonable time (refused, naming the node).
MAX_ITERATIONS = 4096
MAX_NODES = 200_000
#: Passes over the graph (each resolves what the previous one's shape inference made decidable).
MAX_PASSES = 16

#: Evaluates one standard node on numpy inputs (None for an omitted input): the reference interpreter.
Evaluate = Callable[[onnx.NodeProto, list], list]

#: Ops whose value is not a function of their inputs: never folded.
_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                               "Multinomial", "Bernoulli", "Dropout"})


def is_control_flow(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in CONTROL_FLOW


def has_control_flow(graph: onnx.GraphProto) -> bool:
    """Whether ``graph``'s own nodes hold any If, Loop or Scan (bodies are only reachable through them)."""
    return any(is_control_flow(n) for n in graph.node)


def _opset(model: onnx.ModelProto) -> int:
    return next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), 1)


def unroll_control_flow(model: onnx.ModelProto, name: str, shapes: dict[str, tuple[int, ...]],
                        evaluate: Evaluate, ops: frozenset[str] = CONTROL_FLOW) -> int:
    """Replace, in place, every ``ops`` node of ``model`` (If, Loop, Scan; nested ones too) by plain
    nodes. ``shapes`` are the ``--shape`` bindings of the model's inputs (they decide Scan lengths and
    folded Shape values). Returns how many control-flow nodes were unrolled. ``name`` is how errors name the
    model."""
    if not any(n.op_type in ops and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return 0
    names = _all_names(model.graph)
    total = 0
    selections: list[_Selection] = []
    for _ in range(MAX_PASSES):
        unroller = _Unroller(model, name, _StaticShapes(model, shapes), evaluate, ops, names)
        unroller.run()
        total += unroller.unrolled
        selections.extend(unroller.selections)
        if not unroller.deferred:
            break
        if not unroller.unrolled:  # nothing decidable now will be later: say why the first one is not
            raise LoweringError(f"{name}: {unroller.deferred[0]}")
    else:
        raise LoweringError(f"{name}: control flow still left after {MAX_PASSES} unrolling passes "
                            "(nested too deep)")
    if selections:
        _check_selections(model, shapes, selections, name)
    return total


# ----------------------------------------------------------------------------------------- shapes


class _StaticShapes:
    """Static shapes of a model's values: the graph inputs (with ``--shape`` bindings) and initializers at
    once; the rest from one ONNX shape inference run, on first need."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]):
        self.model = model
        self.bindings = shapes
        self.known: dict[str, tuple[int, ...]] = {}
        self._inferred = False
        g = model.graph
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            shape = _static(vi.type, shapes.get(vi.name))
            if shape is not None:
                self.known[vi.name] = shape
        for init in g.initializer:
            self.known[init.name] = tuple(init.dims)

    def get(self, value: str) -> tuple[int, ...] | None:
        if value not in self.known and not self._inferred:
            self._inferred = True
            try:
                inferred = shape_inference.infer_shapes(_bound_copy(self.model, self.bindings),
                                                        data_prop=True)
            except Exception:  # a model inference cannot read: its shapes stay unknown
                inferred = None
            if inferred is not None:
                for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
                    shape = _static(vi.type)
                    if shape is not None:
                        self.known.setdefault(vi.name, shape)
        return self.known.get(value)


def _static(type_proto: onnx.TypeProto, bound: tuple[int, ...] | None = None) -> tuple[int, ...] | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims = type_proto.tensor_type.shape.dim
    if bound is not None and len(bound) == len(dims):
        return tuple(int(d) for d in bound)
    if all(d.HasField("dim_value") for d in dims):
        return tuple(int(d.dim_value) for d in dims)
    return None


def _bound_copy(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs have the ``--shape`` bindings as their dimensions."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for inp in copy.graph.input:
        wanted = shapes.get(inp.name)
        dims = inp.type.tensor_type.shape.dim if inp.type.HasField("tensor_type") else []
        if wanted is not None and len(wanted) == len(dims):
            for dim, size in zip(dims, wanted):
                dim.Clear()
                dim.dim_value = int(size)
    return copy


# ----------------------------------------------------------------------------------------- folding


class _Blocked(NamedTuple):
    """Why a value does not fold: ``kind`` 'input' (run-time data: ``name`` is the graph input), 'shape'
    (the shape of ``name`` is not known yet) or 'op' (``name`` comes from an op that does not fold)."""

    kind: str
    name: str
    why: str = ""

    def describe(self) -> str:
        if self.kind == "input":
            return f"input '{self.name}'"
        if self.kind == "shape":
            return f"the shape of '{self.name}', which is not static"
        return f"'{self.name}'" + (f" ({self.why})" if self.why else "")


class _Folder:
    """The compile-time value of a graph value, computed on demand (only the cone a decision needs)."""

    def __init__(self, model: onnx.ModelProto, shapes: _StaticShapes, evaluate: Evaluate):
        self.shapes = shapes
        self.evaluate = evaluate
        self.producers: dict[str, onnx.NodeProto] = {}
        self.memo: dict[str, np.ndarray | _Blocked] = {}
        self.initializers = {t.name: t for t in model.graph.initializer}  # read only when a fold needs one
        self.inputs = {i.name for i in model.graph.input if i.name not in self.initializers}

    def add(self, node: onnx.NodeProto) -> None:
        for out in node.output:
            if out:
                self.producers[out] = node

    def set(self, value: str, array: np.ndarray) -> None:
        self.memo[value] = array

    def shape_of(self, value: str) -> tuple[int, ...] | None:
        known = self.memo.get(value)
        if isinstance(known, np.ndarray):
            return known.shape
        if value in self.initializers:
            return tuple(self.initializers[value].dims)
        return self.shapes.get(value)

    def fold(self, value: str) -> np.ndarray | _Blocked:
        stack = [value]
        while stack:
            current = stack[-1]
            if current in self.memo:
                stack.pop()
                continue
            node = self.producers.get(current)
            if node is None and current in self.initializers:
                self.memo[current] = numpy_helper.to_array(self.initializers[current])
                stack.pop()
                continue
            if node is None:
                self.memo[current] = _Blocked("input" if current in self.inputs else "op", current,
                                              "" if current in self.inputs else "defined outside the graph")
                stack.pop()
                continue
            if node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx"):
                shape = self.shape_of(node.input[0])
                if shape is None:
                    self._store(node, [_Blocked("shape", node.input[0])])
                else:
                    self._store(node, [_shape_value(node, shape)])
                stack.pop()
                continue
            missing = [x for x in node.input if x and x not in self.memo]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            self._store(node, self._evaluate(node))
        return self.memo[value]

    def _store(self, node: onnx.NodeProto, results: list) -> None:
        for i, out in enumerate(node.output):
            if out:
                self.memo[out] = results[i] if i < len(results) else results[0]

    def _evaluate(self, node: onnx.NodeProto) -> list:
        args = [self.memo[x] if x else None for x in node.input]
        blocked = next((a for a in args if isinstance(a, _Blocked)), None)
        if blocked is not None:
            return [blocked]
        first = node.output[0] if node.output else node.name
        if node.domain not in ("", "ai.onnx") or node.op_type in _NONDETERMINISTIC \
                or node.op_type in CONTROL_FLOW:
            return [_Blocked("op", first, f"{node.op_type} does not fold")]
        try:
            if node.op_type == "Constant":
                return [_constant(node)]
            if node.op_type == "CastLike":
                return [args[0].astype(args[1].dtype)]
            return [np.asarray(r) for r in self.evaluate(node, args)]
        except Exception as exc:
            return [_Blocked("op", first, f"{node.op_type} does not fold: {str(exc).strip()[:80]}")]


def _shape_value(node: onnx.NodeProto, shape: tuple[int, ...]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    rank = len(shape)
    start, end = attrs.get("start", 0), attrs.get("end", rank)
    start, end = (max(0, min(rank, s + rank if s < 0 else s)) for s in (start, end))
    return np.array(shape[start:end], np.int64)


def _constant(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    value = helper.get_attribute_value(attr)
    dtypes = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
              "value_ints": np.int64}
    if attr.name not in dtypes:
        raise ValueError(f"Constant attribute '{attr.name}'")
    return np.array(value, dtypes[attr.name])


# ----------------------------------------------------------------------------------------- unrolling


class _Selection(NamedTuple):
    """A run-time If's output: the branches' values ``Where`` selects between."""

    label: str
    index: int
    then_value: str
    else_value: str


class _Defer(Exception):
    """A decision needs a shape not known in this pass: leave the node for the next one."""


class _Unroller:
    def __init__(self, model: onnx.ModelProto, name: str, shapes: _StaticShapes, evaluate: Evaluate,
                 ops: frozenset[str], names: set[str]):
        self.model = model
        self.name = name
        self.opset = _opset(model)
        self.ops = ops
        self.names = names
        self.folder = _Folder(model, shapes, evaluate)
        self.out: list[onnx.NodeProto] = []
        self.unrolled = 0
        self.deferred: list[str] = []
        self.selections: list[_Selection] = []
        self.unrolling: list[onnx.NodeProto] = []  # the control-flow nodes being unrolled, outermost first

    def run(self) -> None:
        for node in self.model.graph.node:
            self.emit(node)
        del self.model.graph.node[:]
        self.model.graph.node.extend(self.out)

    # ------------------------------------------------------------------ emission

    def emit(self, node: onnx.NodeProto) -> None:
        if node.op_type in self.ops and node.domain in ("", "ai.onnx"):
            self.unrolling.append(node)
            try:
                {"If": self._if, "Loop": self._loop, "Scan": self._scan}[node.op_type](node)
                self.unrolled += 1
                return
            except _Defer as why:
                self.deferred.append(str(why))
            finally:
                self.unrolling.pop()
        if len(self.out) >= MAX_NODES:
            where = _short(self.unrolling[0]) if self.unrolling else "the model"
            raise LoweringError(f"{self.name}: {where}: unrolled, the model would have more than {MAX_NODES} "
                                "nodes; only smaller unrolled models are compiled")
        self.out.append(node)
        self.folder.add(node)

    def _new(self, hint: str) -> str:
        return _unique(hint, self.names)

    def _node(self, op: str, inputs: list[str], output: str, hint: str, **attrs) -> str:
        self.emit(helper.make_node(op, inputs, [output], name=self._new(hint), **attrs))
        return output

    def _const(self, array: np.ndarray, hint: str) -> str:
        out = self._new(hint)
        self._node("Constant", [], out, hint, value=numpy_helper.from_array(np.asarray(array), out))
        self.folder.set(out, np.asarray(array))
        return out

    def _identity(self, source: str, output: str, hint: str) -> None:
        if output:
            self._node("Identity", [source], output, hint)

    def _unsqueeze(self, x: str, axis: int, hint: str) -> str:
        out = self._new(hint)
        if self.opset >= 13:
            return self._node("Unsqueeze", [x, self._const(np.array([axis], np.int64), hint + "_axes")],
                              out, hint)
        return self._node("Unsqueeze", [x], out, hint, axes=[axis])

    def _take(self, x: str, index: int, axis: int, hint: str) -> str:
        """``x``'s slice ``index`` along ``axis``, that axis removed."""
        return self._node("Gather", [x, self._const(np.array(index, np.int64), hint + "_index")],
                          self._new(hint), hint, axis=axis)

    def _stack(self, parts: list[str], axis: int, output: str, hint: str) -> None:
        """``parts`` stacked along a new ``axis`` (negative: counted in the result's rank) as ``output``."""
        if not output:
            return
        if not parts:
            raise LoweringError(f"{self.name}: {hint}: no iterations, so its scan output '{output}' would be "
                                "empty; empty tensors are not supported")
        self._node("Concat", [self._unsqueeze(p, axis, f"{hint}_unsqueeze") for p in parts], output,
                   f"{hint}_stack", axis=axis)

    # ------------------------------------------------------------------ inlining a body

    def _inline(self, body: onnx.GraphProto, prefix: str, bindings: dict[str, str]) -> list[str]:
        """Emit one instance of ``body`` with its inputs bound to ``bindings`` (formal -> actual name):
        every value it defines renamed with ``prefix``, outer-scope names kept. Returns the actual names of
        its outputs."""
        scopes = [dict(bindings)]
        for init in body.initializer:
            new = self._new(prefix + init.name)
            tensor = onnx.TensorProto()
            tensor.CopyFrom(init)
            tensor.name = new
            self._node("Constant", [], new, prefix + init.name, value=tensor)
            scopes[-1][init.name] = new
        for proto in body.node:
            node = _renamed(proto, prefix, scopes, self.names)
            self.emit(node)
        return [_use(scopes, vi.name) for vi in body.output]

    # ------------------------------------------------------------------ the ops

    def _decide(self, node: onnx.NodeProto, value: str) -> np.ndarray | _Blocked:
        result = self.folder.fold(value)
        if isinstance(result, _Blocked) and result.kind == "shape":
            raise _Defer(f"{_short(node)} depends on {result.describe()}")
        return result

    def _if(self, node: onnx.NodeProto) -> None:
        branches = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
        then_branch, else_branch = branches["then_branch"], branches["else_branch"]
        prefix = (node.name or self._new("If")) + "/"
        cond = self._decide(node, node.input[0])
        if not isinstance(cond, _Blocked):
            if cond.size != 1:
                raise LoweringError(f"{self.name}: {_short(node)}: its condition '{node.input[0]}' has "
                                    f"{cond.size} elements; one expected")
            taken = then_branch if bool(cond.reshape(-1)[0]) else else_branch
            for i, value in enumerate(self._inline(taken, prefix, {})):
                self._identity(value, node.output[i] if i < len(node.output) else "", prefix + "out")
            return
        then_values = self._inline(then_branch, prefix + "then/", {})
        else_values = self._inline(else_branch, prefix + "else/", {})
        if len(then_values) != len(else_values):
            raise LoweringError(f"{self.name}: {_short(node)}: its branches give {len(then_values)} and "
                                f"{len(else_values)} outputs")
        scalar = self._node("Reshape", [node.input[0], self._const(np.zeros(0, np.int64), prefix + "scalar")],
                            self._new(prefix + "cond"), prefix + "cond")
        for i, (t, e) in enumerate(zip(then_values, else_values)):
            output = node.output[i] if i < len(node.output) else ""
            if output:
                self._node("Where", [scalar, t, e], output, prefix + "select")
                self.selections.append(_Selection(_short(node), i, t, e))

    def _loop(self, node: onnx.NodeProto) -> None:
        body = next(a.g for a in node.attribute if a.name == "body")
        trip_name = node.input[0] if len(node.input) > 0 else ""
        cond_name = node.input[1] if len(node.input) > 1 else ""
        state = list(node.input[2:])
        carried = len(state)
        scanned = len(body.output) - 1 - carried
        label = _short(node)
        trip = None
        if trip_name:
            value = self._decide(node, trip_name)
            if isinstance(value, _Blocked):
                raise LoweringError(f"{self.name}: {_short(node)}: trip count depends on {value.describe()}; "
                                    "only loops with a trip count known at compile time are unrolled")
            trip = int(value.reshape(-1)[0])
        cond = True
        if cond_name:
            value = self._decide(node, cond_name)
            if isinstance(value, _Blocked):
                raise LoweringError(f"{self.name}: {_short(node)}: condition depends on {value.describe()}; "
                                    "only loops whose condition is known at compile time are unrolled")
            cond = bool(value.reshape(-1)[0])
        if trip is not None and trip > MAX_ITERATIONS:
            raise LoweringError(f"{self.name}: {_short(node)}: {trip} iterations; at most {MAX_ITERATIONS} "
                                "are unrolled")
        prefix = node.name or self._new("Loop")
        scans: list[list[str]] = [[] for _ in range(scanned)]
        i = 0
        while cond and (trip is None or i < trip):
            if i >= MAX_ITERATIONS:
                raise LoweringError(f"{self.name}: {_short(node)}: more than {MAX_ITERATIONS} iterations "
                                    f"(no trip count, condition still true); at most {MAX_ITERATIONS} are "
                                    "unrolled")
            step = f"{prefix}/{i}/"
            bindings = {body.input[0].name: self._const(np.array(i, np.int64), step + "iteration"),
                        body.input[1].name: self._const(np.array(cond), step + "cond")}
            for formal, actual in zip(body.input[2:], state):
                bindings[formal.name] = actual
            outs = self._inline(body, step, bindings)
            state = outs[1:1 + carried]
            for k in range(scanned):
                scans[k].append(outs[1 + carried + k])
            value = self.folder.fold(outs[0])
            if isinstance(value, _Blocked):
                raise LoweringError(f"{self.name}: {label}: the condition its body computes at iteration {i} "
                                    f"depends on {value.describe()}; only loops whose condition is known "
                                    "at compile time are unrolled")
            cond = bool(value.reshape(-1)[0])
            i += 1
        for j in range(carried):
            self._identity(state[j], node.output[j] if j < len(node.output) else "", f"{prefix}/out")
        for k in range(scanned):
            output = node.output[carried + k] if carried + k < len(node.output) else ""
            self._stack(scans[k], 0, output, f"{prefix}/scan{k}")

    def _scan(self, node: onnx.NodeProto) -> None:
        attrs = {a.name: a for a in node.attribute}
        body = attrs["body"].g
        count = attrs["num_scan_inputs"].i
        if self.opset < 9:
            self._scan8(node, body, count, attrs)
            return
        states, xs = list(node.input[:len(node.input) - count]), list(node.input[len(node.input) - count:])
        k = len(body.output) - len(states)

        def ints(key: str, count: int) -> list[int]:
            return list(attrs[key].ints) if key in attrs else [0] * count

        in_axes, in_dirs = ints("scan_input_axes", count), ints("scan_input_directions", count)
        out_axes, out_dirs = ints("scan_output_axes", k), ints("scan_output_directions", k)
        axes, length = self._scan_length(node, xs, in_axes)
        prefix = node.name or self._new("Scan")
        finals, scans = self._scan_steps(node, prefix, body, states, xs, axes, in_dirs, length)
        for j, value in enumerate(finals):
            self._identity(value, node.output[j] if j < len(node.output) else "", f"{prefix}/out")
        for i, parts in enumerate(scans):
            index = len(states) + i
            output = node.output[index] if index < len(node.output) else ""
            self._stack(parts[::-1] if out_dirs[i] else parts, out_axes[i], output, f"{prefix}/scan{i}")

    def _scan_length(self, node: onnx.NodeProto, xs: list[str], in_axes: list[int],
                     batch: int = 0) -> tuple[list[int], int]:
        """The scan inputs' axes (made non-negative) and their common sequence length."""
        axes, lengths = [], []
        for x, axis in zip(xs, in_axes):
            shape = self.folder.shape_of(x)
            if shape is None:
                raise _Defer(f"{_short(node)}: the sequence length of '{x}' is not known at compile time")
            axis = axis + len(shape) - batch if axis < 0 else axis
            if not 0 <= axis < len(shape) - batch:
                raise LoweringError(f"{self.name}: {_short(node)}: scan axis {axis} is out of range for "
                                    f"'{x}' of shape {list(shape)}")
            axes.append(axis)
            lengths.append(shape[axis + batch])
        if len(set(lengths)) > 1:
            raise LoweringError(f"{self.name}: {_short(node)}: its scan inputs have different sequence "
                                f"lengths {lengths}")
        length = lengths[0] if lengths else 0
        if length > MAX_ITERATIONS:
            raise LoweringError(f"{self.name}: {_short(node)}: {length} iterations; at most {MAX_ITERATIONS} "
                                "are unrolled")
        return axes, length

    def _scan_steps(self, node: onnx.NodeProto, prefix: str, body: onnx.GraphProto, states: list[str],
                    xs: list[str], axes: list[int], dirs: list[int],
                    length: int) -> tuple[list[str], list[list[str]]]:
        """Emit ``length`` instances of ``body``; the final states and each scan output's parts."""
        carried = len(states)
        scans: list[list[str]] = [[] for _ in range(len(body.output) - carried)]
        for t in range(length):
            step = f"{prefix}/{t}/"
            bindings = {formal.name: actual for formal, actual in zip(body.input, states)}
            for formal, x, axis, reverse in zip(body.input[carried:], xs, axes, dirs):
                bindings[formal.name] = self._take(x, length - 1 - t if reverse else t, axis, step + "slice")
            outs = self._inline(body, step, bindings)
            states = outs[:carried]
            for k, value in enumerate(outs[carried:]):
                scans[k].append(value)
        return states, scans

    def _scan8(self, node: onnx.NodeProto, body: onnx.GraphProto, count: int, attrs: dict) -> None:
        """Scan of opsets 8 (before 9): a batch axis 0 on every input and output; the scan inputs' sequence
        axis is 1; ``directions`` per scan input; no sequence_lens."""
        if node.input and node.input[0]:
            raise LoweringError(f"{self.name}: {_short(node)}: sequence_lens is not supported (only scans "
                                "over full, equal sequence lengths are unrolled)")
        inputs = list(node.input[1:])
        states, xs = inputs[:len(inputs) - count], inputs[len(inputs) - count:]
        dirs = list(attrs["directions"].ints) if "directions" in attrs else [0] * count
        _, length = self._scan_length(node, xs, [0] * count, batch=1)
        shape = self.folder.shape_of(xs[0]) if xs else None
        batch = shape[0] if shape else 0
        prefix = node.name or self._new("Scan")
        finals: list[list[str]] = [[] for _ in states]
        scans: list[list[str]] = [[] for _ in range(len(body.output) - len(states))]
        for b in range(batch):
            hint = f"{prefix}/b{b}"
            states_b = [self._take(s, b, 0, hint + "_state") for s in states]
            xs_b = [self._take(x, b, 0, hint + "_input") for x in xs]
            finals_b, scans_b = self._scan_steps(node, hint, body, states_b, xs_b, [0] * count, dirs, length)
            for j, value in enumerate(finals_b):
                finals[j].append(value)
            for k, parts in enumerate(scans_b):
                scans[k].append(self._new(f"{hint}/scan{k}"))
                self._stack(parts, 0, scans[k][-1], f"{hint}/scan{k}")
        for j, parts in enumerate(finals):
            self._stack(parts, 0, node.output[j] if j < len(node.output) else "", f"{prefix}/state{j}")
        for k, parts in enumerate(scans):
            index = len(states) + k
            self._stack(parts, 0, node.output[index] if index < len(node.output) else "", f"{prefix}/scan{k}")


def _short(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name or '<unnamed>'}'"


# ----------------------------------------------------------------------------------------- renaming


def _use(scopes: list[dict[str, str]], value: str) -> str:
    """The current name of ``value``: its innermost definition's, or the name itself (an outer value)."""
    for scope in reversed(scopes):
        if value in scope:
            return scope[value]
    return value


def _define(scopes: list[dict[str, str]], value: str, prefix: str, names: set[str]) -> str:
    if not value:
        return ""
    new = _unique(prefix + value, names)
    scopes[-1][value] = new
    return new


def _renamed(proto: onnx.NodeProto, prefix: str, scopes: list[dict[str, str]],
             names: set[str]) -> onnx.NodeProto:
    """A copy of ``proto`` with its inputs, outputs and name (and those inside its subgraphs) renamed for
    one inlined body instance."""
    out = onnx.NodeProto()
    out.CopyFrom(proto)
    out.name = _unique(prefix + (proto.name or proto.op_type), names)
    out.input[:] = [_use(scopes, x) if x else "" for x in proto.input]
    for attr in out.attribute:
        for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            _rename_graph(g, prefix, scopes, names)
    out.output[:] = [_define(scopes, y, prefix, names) for y in proto.output]
    return out


def _rename_graph(g: onnx.GraphProto, prefix: str, scopes: list[dict[str, str]], names: set[str]) -> None:
    """Rename a nested subgraph in place: its own values in a new scope, its outer references resolved."""
    scopes.append({})
    for vi in g.input:
        vi.name = _define(scopes, vi.name, prefix, names)
    for t in g.initializer:
        t.name = _define(scopes, t.name, prefix, names)
    nodes = [_renamed(n, prefix, scopes, names) for n in g.node]
    del g.node[:]
    g.node.extend(nodes)
    for vi in g.output:
        vi.name = _use(scopes, vi.name)
    kept = [vi for vi in g.value_info if vi.name in scopes[-1]]
    for vi in kept:
        vi.name = scopes[-1][vi.name]
    del g.value_info[:]
    g.value_info.extend(kept)
    scopes.pop()


# ----------------------------------------------------------------------------------------- checks


def _check_selections(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                      selections: list[_Selection], name: str) -> None:
    """A run-time If is computed both ways and selected with Where: refuse, naming the node, one whose
    branches give an output different element types or shapes (Where would broadcast or fail, where the
    If gives the taken branch's value)."""
    try:
        inferred = shape_inference.infer_shapes(_bound_copy(model, shapes))
    except Exception:
        return  # the strict inference that follows names the problem
    g = inferred.graph
    types = {vi.name: vi.type for vi in list(g.input) + list(g.value_info) + list(g.output)}
    for init in g.initializer:
        types[init.name] = helper.make_tensor_type_proto(init.data_type, list(init.dims))
    for sel in selections:
        t, e = types.get(sel.then_value), types.get(sel.else_value)
        if t is None or e is None:
            continue
        described = (_describe(t), _describe(e))
        if described[0] is None or described[1] is None:
            continue
        if described[0] != described[1]:
            raise LoweringError(f"{name}: {sel.label}: its condition is only known at run time and its "
                                f"branches give output {sel.index} as {described[0]} and {described[1]}; "
                                "only Ifs whose branches agree in type and shape are computed both ways")


def _describe(type_proto: onnx.TypeProto) -> str | None:
    """``float[5,1]``; None when the type or a dimension is not known."""
    if not type_proto.HasField("tensor_type"):
        return None
    tt = type_proto.tensor_type
    if not tt.elem_type or not tt.HasField("shape") or not all(d.HasField("dim_value") for d in tt.shape.dim):
        return None
    dims = ",".join(str(d.dim_value) for d in tt.shape.dim)
    return f"{onnx.TensorProto.DataType.Name(tt.elem_type).lower()}[{dims}]"

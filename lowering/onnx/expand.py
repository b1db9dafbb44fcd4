"""Replace ONNX nodes the compiler cannot import as they are by their ONNX function bodies.

Many recent ONNX ops (MeanVarianceNormalization, SwiGLU, RotaryEmbedding, CenterCropPad, and the
Attention features ``lowering::Attention`` does not take: past/present KV, softcap, sliding windows, the QK
output) are defined in ``onnx.defs`` by a function body of simpler ops. The importer asks, node by node,
whether it can import the node natively; a node it cannot import whose schema has a body, at the model's
opset, is replaced by that body (``expand_functions``)::

    Y = MeanVarianceNormalization<axes=[0, 2, 3]>(X)
        ->  mvn/axes = Constant<value_ints=[0, 2, 3]>(); mvn/X_RM = ReduceMean(X, mvn/axes); ...
            Y = Div(mvn/X_variance, mvn/Processed_STD)

The bodies come from onnx itself (``OpSchema.get_function_with_opset_version``, or for context-dependent
functions, whose body depends on the node's attributes and input types,
``get_context_dependent_function_with_opset_version``); nothing here writes an op's body by hand. The
schema's attribute defaults are bound first (a body refers to them with ``ref_attr_name``), formal inputs
and outputs map to the node's (an omitted optional one to ``''``), every body-internal value and node is
renamed with the node's name as prefix, and a body's nodes that themselves need expanding are expanded in
the next round. A body written for another opset than the model's is brought to the model's with
``onnx.version_converter``, only when one of its ops changed between the two.

Input types (which context-dependent bodies and the importer's decisions need) come from the model's
declarations; ONNX shape inference runs, at most once per round, only when a value needed is not declared,
so a model with nothing to expand costs nothing extra and is left byte-for-byte as it was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import onnx
from onnx import helper, shape_inference, version_converter

from ..errors import LoweringError

#: Rounds of expansion (bodies whose ops have bodies of their own); more means a body that never ends.
MAX_ROUNDS = 8


class TypeLookup:
    """TypeProtos of a model's values: declared ones (inputs, initializers, value_info, outputs, Constant
    outputs) at once, the others from one ONNX shape inference run on first need."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self._types: dict[str, onnx.TypeProto] | None = None
        self._inferred = False

    def get(self, name: str) -> onnx.TypeProto | None:
        if self._types is None:
            self._types = self._declared()
        if name not in self._types and not self._inferred:
            self._inferred = True
            try:
                inferred = shape_inference.infer_shapes(self.model)
            except Exception:  # a model inference cannot read: the values stay of unknown type
                inferred = None
            if inferred is not None:
                for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
                    if vi.type.WhichOneof("value") is not None:
                        self._types.setdefault(vi.name, vi.type)
        return self._types.get(name)

    def _declared(self) -> dict[str, onnx.TypeProto]:
        g = self.model.graph
        types = {vi.name: vi.type for vi in list(g.input) + list(g.value_info) + list(g.output)
                 if vi.type.WhichOneof("value") is not None}
        for init in g.initializer:
            types[init.name] = helper.make_tensor_type_proto(init.data_type, list(init.dims))
        for node in g.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output \
                    and node.attribute and node.attribute[0].name == "value":
                t = node.attribute[0].t
                types[node.output[0]] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
        return types


def _op(node: onnx.NodeProto) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def node_label(node: onnx.NodeProto) -> str:
    return f"node '{node.name or '<unnamed>'}' ({_op(node)})"


def expand_functions(model: onnx.ModelProto, name: str,
                     native: Callable[[onnx.NodeProto, TypeLookup], bool],
                     supported: Callable[[onnx.NodeProto], bool]) -> Counter[str]:
    """Replace, in place, every node of ``model``'s graph for which ``native(node, types)`` is false and
    whose op has an ONNX function body by that body, recursively. Returns how many of the model's own
    nodes were expanded, by op. Raises a LoweringError naming each expanded node whose body (all rounds
    done) still holds nodes ``supported`` refuses. ``name`` is how errors name the model."""
    versions = {("" if imp.domain == "ai.onnx" else imp.domain): imp.version for imp in model.opset_import}
    names: set[str] = set()  # every name in the model, gathered at the first expansion
    roots: dict[str, tuple[str, str]] = {}  # expanded node name -> (label, op) of the model node it came from
    counts: Counter[str] = Counter()
    for _ in range(MAX_ROUNDS):
        types = TypeLookup(model)
        nodes: list[onnx.NodeProto] = []
        changed = False
        for node in model.graph.node:
            if native(node, types):
                nodes.append(node)
                continue
            found = _function_body(node, versions, types, name)
            if found is None:
                nodes.append(node)
                continue
            if not names:
                _all_names(model.graph, names)
            root = roots.get(node.name)
            if root is None:
                root = (node_label(node), _op(node))
                counts[_op(node)] += 1
            expanded = _instantiate(model, node, *found, versions, types, names, name)
            for new in expanded:
                roots[new.name] = root
            nodes.extend(expanded)
            changed = True
        if not changed:
            break
        count = len(model.graph.node)
        model.graph.node.extend(nodes)  # copies, the kept nodes too, before their originals go
        del model.graph.node[:count]
    missing: dict[str, set[str]] = {}
    for node in model.graph.node:
        if node.name in roots and not supported(node):
            missing.setdefault(roots[node.name][0], set()).add(_op(node))
    if missing:
        raise LoweringError(f"{name}: " + "; ".join(
            f"{label} expanded into its ONNX function body, which needs unsupported ops: "
            + ", ".join(sorted(ops)) for label, ops in missing.items()))
    return counts


def expansion_summary(counts: Counter[str]) -> str:
    """The one line ``lower -v`` shows: "expanded 2 node(s) into their ONNX function bodies: Attention x2"."""
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))
    return f"expanded {sum(counts.values())} node(s) into their ONNX function bodies: {ops}"


# ----------------------------------------------------------------------------------------- the body


def _function_body(node: onnx.NodeProto, versions: dict[str, int], types: TypeLookup,
                   name: str) -> tuple[onnx.FunctionProto, onnx.NodeProto] | None:
    """The function body onnx defines for ``node`` at the model's opset and the call it is for (``node``
    with the schema's attribute defaults), or None when its op has none, or when a context-dependent
    body needs the type of an input that stays unknown (mostly one a custom op makes: the unsupported-op
    check then names both)."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = versions.get(domain)
    if version is None:
        return None
    try:
        schema = onnx.defs.get_schema(node.op_type, version, domain)
    except Exception:
        return None
    plain = [v for v in schema.function_opset_versions if v <= version]
    dependent = [v for v in schema.context_dependent_function_opset_versions if v <= version]
    call = _with_defaults(node, schema)
    try:
        if plain:
            body = onnx.FunctionProto.FromString(schema.get_function_with_opset_version(max(plain)))
        elif dependent:
            input_types = []
            for x in node.input:
                t = types.get(x) if x else onnx.TypeProto()
                if t is None:
                    return None
                input_types.append(t.SerializeToString())
            body = onnx.FunctionProto.FromString(schema.get_context_dependent_function_with_opset_version(
                max(dependent), call.SerializeToString(), input_types))
        else:
            return None
    except Exception as exc:  # the builder rejects the node (attributes, input types)
        raise LoweringError(f"{name}: {node_label(node)}: onnx cannot build its function body: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                            ) from None
    if not body.node:
        return None
    return body, call


def _with_defaults(node: onnx.NodeProto, schema) -> onnx.NodeProto:
    """A copy of ``node`` with the schema's default attribute values it does not set (the body reads them
    through ``ref_attr_name``)."""
    call = onnx.NodeProto()
    call.CopyFrom(node)
    present = {a.name for a in node.attribute}
    for attr_name, attr in schema.attributes.items():
        default = attr.default_value
        if attr_name not in present and default.type != onnx.AttributeProto.UNDEFINED:
            call.attribute.append(default)
    return call


def _instantiate(model: onnx.ModelProto, node: onnx.NodeProto, body: onnx.FunctionProto,
                 call: onnx.NodeProto, versions: dict[str, int], types: TypeLookup, names: set[str],
                 name: str) -> list[onnx.NodeProto]:
    """The body's nodes in place of ``node``: attributes bound, values renamed (prefix: the node's name),
    at the model's opset."""
    attrs = {a.name: a for a in body.attribute_proto}
    attrs.update({a.name: a for a in call.attribute})
    nodes = [_bind_attributes(n, attrs) for n in body.node]
    body_versions = {("" if imp.domain == "ai.onnx" else imp.domain): imp.version
                     for imp in body.opset_import}
    for dom, ver in body_versions.items():
        if dom not in versions:  # a domain only the body uses (the standard one is always there)
            versions[dom] = ver
            model.opset_import.append(helper.make_opsetid(dom, ver))
    if "" in body_versions and "" in versions and body_versions[""] != versions[""] \
            and not _same_semantics(nodes, body_versions[""], versions[""]):
        nodes = _convert(node, body, nodes, body_versions[""], versions[""], types, name)
    prefix = node.name or _unique(node.op_type, names)
    renamer = _Renamer(prefix + "/", names, body, node)
    return [renamer.node(n) for n in nodes]


def _bind_attributes(node: onnx.NodeProto, attrs: dict[str, onnx.AttributeProto]) -> onnx.NodeProto:
    """``node`` with each ``ref_attr_name`` replaced by the caller's attribute (dropped when the caller
    sets none and the function gives no default), also inside subgraph attributes."""
    out = onnx.NodeProto()
    out.CopyFrom(node)
    del out.attribute[:]
    for attr in node.attribute:
        if attr.ref_attr_name:
            source = attrs.get(attr.ref_attr_name)
            if source is None:
                continue
            bound = onnx.AttributeProto()
            bound.CopyFrom(source)
            bound.name = attr.name
            out.attribute.append(bound)
            continue
        copy = onnx.AttributeProto()
        copy.CopyFrom(attr)
        graphs = [copy.g] if attr.type == onnx.AttributeProto.GRAPH else list(copy.graphs)
        for g in graphs:
            bound_nodes = [_bind_attributes(n, attrs) for n in g.node]
            del g.node[:]
            g.node.extend(bound_nodes)
        out.attribute.append(copy)
    return out


def _same_semantics(nodes: list[onnx.NodeProto], old: int, new: int) -> bool:
    """Whether every standard op of ``nodes`` has the same definition at opsets ``old`` and ``new``."""
    for n in nodes:
        if n.domain not in ("", "ai.onnx"):
            continue
        try:
            if onnx.defs.get_schema(n.op_type, old).since_version != \
                    onnx.defs.get_schema(n.op_type, new).since_version:
                return False
        except Exception:
            return False
    return True


def _convert(node: onnx.NodeProto, body: onnx.FunctionProto, nodes: list[onnx.NodeProto], old: int,
             new: int, types: TypeLookup, name: str) -> list[onnx.NodeProto]:
    """``nodes`` (a body written for opset ``old``, attributes bound) brought to opset ``new`` with
    ``onnx.version_converter``, on a model whose inputs are the body's formal inputs (typed as the node's
    actual inputs where known). Initializers the converter adds come back as Constant nodes."""
    inputs = []
    for i, formal in enumerate(body.input):
        actual = node.input[i] if i < len(node.input) else ""
        t = types.get(actual) if actual else None
        vi = onnx.ValueInfoProto(name=formal)
        if t is not None:
            vi.type.CopyFrom(t)
        inputs.append(vi)
    outputs = [onnx.ValueInfoProto(name=formal) for formal in body.output]
    graph = helper.make_graph(nodes, "body", inputs, outputs)
    imports = [helper.make_opsetid(imp.domain, old if imp.domain in ("", "ai.onnx") else imp.version)
               for imp in body.opset_import]
    try:
        model = helper.make_model(graph, opset_imports=imports)
        converted = version_converter.convert_version(model, new)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoweringError(f"{name}: {node_label(node)}: its ONNX function body is written for opset {old} "
                            f"and onnx.version_converter cannot bring it to opset {new}: {first}") from None
    constants = [helper.make_node("Constant", [], [t.name], value=t) for t in converted.graph.initializer]
    return constants + list(converted.graph.node)


# ----------------------------------------------------------------------------------------- renaming


def _unique(hint: str, names: set[str]) -> str:
    candidate, i = hint, 0
    while candidate in names:
        i += 1
        candidate = f"{hint}_{i}"
    names.add(candidate)
    return candidate


def _all_names(graph: onnx.GraphProto, names: set[str] | None = None) -> set[str]:
    """Every value and node name in ``graph`` and its subgraphs (new names must not clash with any)."""
    names = set() if names is None else names
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        names.add(vi.name)
    names.update(t.name for t in graph.initializer)
    for n in graph.node:
        names.update(n.input)
        names.update(n.output)
        names.add(n.name)
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                _all_names(g, names)
    names.discard("")
    return names


class _Renamer:
    """Renames a body's values for one call site: formal inputs/outputs to the node's actual ones, every
    other value (and node) to ``prefix + name``, made unique in the model; subgraphs get their own scope."""

    def __init__(self, prefix: str, names: set[str], body: onnx.FunctionProto, node: onnx.NodeProto):
        self.prefix = prefix
        self.names = names
        scope = {}
        for i, formal in enumerate(body.input):
            scope[formal] = node.input[i] if i < len(node.input) else ""
        for i, formal in enumerate(body.output):
            if i < len(node.output) and node.output[i]:
                scope[formal] = node.output[i]
            # an omitted output is an internal value like any other: it gets a fresh name where defined
        self.scopes = [scope]

    def use(self, value: str) -> str:
        if not value:
            return ""
        for scope in reversed(self.scopes):
            if value in scope:
                return scope[value]
        return self.define(value)  # not defined by the body (invalid); renamed all the same

    def define(self, value: str) -> str:
        if not value:
            return ""
        scope = self.scopes[-1]
        if value not in scope:
            scope[value] = _unique(self.prefix + value, self.names)
        return scope[value]

    def node(self, proto: onnx.NodeProto) -> onnx.NodeProto:
        out = onnx.NodeProto()
        out.CopyFrom(proto)
        out.name = _unique(self.prefix + (proto.name or proto.op_type), self.names)
        out.input[:] = [self.use(x) for x in proto.input]
        for attr in out.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                self.graph(attr.g)
            for g in attr.graphs:
                self.graph(g)
        out.output[:] = [self.define(y) for y in proto.output]
        return out

    def graph(self, g: onnx.GraphProto) -> None:
        """Rename a subgraph in place: its own inputs, initializers and values in a new scope, its uses of
        outer values as the outer scope says."""
        self.scopes.append({})
        for vi in g.input:
            vi.name = self.define(vi.name)
        for t in g.initializer:
            t.name = self.define(t.name)
        nodes = [self.node(n) for n in g.node]
        del g.node[:]
        g.node.extend(nodes)
        for vi in g.output:
            vi.name = self.use(vi.name)
        kept = [vi for vi in g.value_info if vi.name in self.scopes[-1]]
        for vi in kept:
            vi.name = self.scopes[-1][vi.name]
        del g.value_info[:]
        g.value_info.extend(kept)
        self.scopes.pop()

"""ONNX ModelProto -> graph IR. Together with ``exporter.py`` the only modules that import ``onnx``.

Import validates the model (``onnx.checker``), unrolls control flow (If, Loop, Scan: ``control_flow.py``)
and expands ops the compiler only knows by their ONNX function bodies (``expand.py``), binds symbolic input
dimensions from ``shapes``, runs ONNX shape inference in strict mode with data propagation, names every
unsupported op at once, and builds the IR. ``Constant`` nodes become constant values directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from ..errors import LoweringError, UnsupportedOpsError
from ..ir import Attr, AttrKind, DType, Graph, Node, TensorType, Value
from ..opinfo import DOMAIN
from ..reference import ops as reference_ops
from .control_flow import has_control_flow, is_control_flow, unroll_control_flow
from .expand import TypeLookup, expand_functions, expansion_summary

MIN_OPSET, MAX_OPSET = 13, 21
#: Models up to this opset import when every op they use means the same as at MAX_OPSET (see NEWER_OPSETS).
NEWEST_OPSET = 28

#: Ops revised after MAX_OPSET whose revisions (up to NEWEST_OPSET) only widened the element types they
#: accept (bfloat16 in opset 22; float4e2m1, float8e8m0, int2/uint2, float6 in 23, 24, 25, 28), so a model
#: at a newer opset means what it means at MAX_OPSET. Attributes the revisions added, with the value that
#: keeps the opset-21 meaning (None: the attribute must be absent); the importer drops them when they have
#: that value. tests/conformance/test_importer_opsets.py checks this table against onnx.defs.
NEWER_OPSETS: dict[str, dict[str, object]] = {
    "AveragePool": {}, "Conv": {}, "GlobalAveragePool": {}, "GlobalMaxPool": {}, "MaxPool": {}, "Round": {},
    "TopK": {}, "Cast": {"round_mode": "up"},  # round_mode only applies to casts to float8e8m0
    "Constant": {}, "ConstantOfShape": {}, "Flatten": {}, "Identity": {}, "Pad": {}, "Reshape": {},
    "Shape": {}, "Size": {}, "Squeeze": {}, "Transpose": {}, "Unsqueeze": {},
    "DequantizeLinear": {"output_dtype": 0},  # 0: the output type is the scale's, as in opset 21
    "QuantizeLinear": {"precision": 0},  # 0: computed in the input's type, as in opset 21
    "Range": {"stash_type": 1},  # only applies to float16/bfloat16 ranges
    "Mod": {},  # opset 28 allows fmod=0 on floats (A - floor(A/B)*B); integer and fmod=1 unchanged
    # opset 22 added bfloat16 to these:
    **{op: {} for op in ("Cos", "Sin", "Tan", "Acos", "Asin", "Atan", "Cosh", "Sinh", "Acosh", "Asinh",
                         "Atanh", "Elu", "Selu", "HardSigmoid", "HardSwish", "Mish", "Softplus", "Softsign",
                         "ThresholdedRelu", "Dropout", "LpNormalization", "EyeLike",
                         "InstanceNormalization", "NegativeLogLikelihoodLoss", "GridSample", "RoiAlign",
                         "ConvTranspose", "Det", "LpPool", "MaxUnpool", "RNN", "GRU", "LSTM")},
    "ReverseSequence": {},  # opset 28 added bfloat16
    # opset 28 widened the types (BitShift: signed integers, defined for every shift amount) of these:
    "Celu": {}, "OneHot": {}, "DepthToSpace": {}, "BitShift": {}, "Einsum": {},
    "SpaceToDepth": {"mode": "DCR"},  # kept (IMPLEMENTED_ATTRS): the reference and cpu target do CRD too
    "ReduceLogSum": {}, "ReduceLogSumExp": {},  # opset 28 dropped their integer types; floats unchanged
}
#: Attributes a revision after MAX_OPSET added that the reference implements: kept whatever their value.
IMPLEMENTED_ATTRS: dict[str, frozenset[str]] = {"SpaceToDepth": frozenset({"mode"})}

#: Ops introduced after MAX_OPSET -> the opset whose definition the reference interpreter implements (a
#: model at a newer opset imports them while that definition is still current).
NEW_OPS: dict[str, int] = {"Swish": 24, "RMSNormalization": 23, "BitCast": 26, "CumProd": 26}

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: DType.FLOAT32,
    onnx.TensorProto.FLOAT16: DType.FLOAT16,
    onnx.TensorProto.DOUBLE: DType.FLOAT64,
    onnx.TensorProto.BFLOAT16: DType.BFLOAT16,
    onnx.TensorProto.INT8: DType.INT8,
    onnx.TensorProto.UINT8: DType.UINT8,
    onnx.TensorProto.INT16: DType.INT16,
    onnx.TensorProto.UINT16: DType.UINT16,
    onnx.TensorProto.INT32: DType.INT32,
    onnx.TensorProto.UINT32: DType.UINT32,
    onnx.TensorProto.INT64: DType.INT64,
    onnx.TensorProto.UINT64: DType.UINT64,
    onnx.TensorProto.BOOL: DType.BOOL,
}

_ONNX_CODES = {dtype: code for code, dtype in _ONNX_DTYPES.items()}


def load_model_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check an ONNX file, with external data. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise LoweringError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise LoweringError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node and not model.graph.output:
        raise LoweringError(f"{path}: not an ONNX model (no graph in the file)")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LoweringError(f"{path}: the model fails onnx.checker: {first}") from None
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise LoweringError(f"{path}: cannot load its external data: {exc}") from None
    return model


def load_model_bytes(data: bytes) -> onnx.ModelProto:
    """A ModelProto from serialized bytes (an artifact's ``graph.onnx`` member)."""
    return onnx.load_from_string(data)


def import_model(
    model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None, name: str = "model",
    log: Callable[[str], None] | None = None,
) -> Graph:
    """Build the IR from a checked ModelProto. ``name`` is how errors name the model; ``log`` (``lower
    -v``) hears which nodes were expanded into their ONNX function bodies and how many control-flow nodes
    were unrolled."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # binding shapes edits the proto; never touch the caller's
    if any(imp.domain in ("", "ai.onnx") for imp in copy.opset_import) and _opset_of(copy) < 9:
        # Scan before opset 9 has a batch axis onnx.version_converter does not convert: unroll it first
        unrolled = unroll_control_flow(copy, name, shapes or {}, _evaluate_proto, ops=frozenset({"Scan"}))
        if unrolled and log is not None:
            log(f"unrolled {unrolled} opset-{_opset_of(copy)} Scan node(s) into plain nodes")
    model = _upgrade_opset(copy, name)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    _unroll_and_expand(model, name, shapes or {}, log)
    _check_supported(model, name)
    _bind_input_shapes(model, shapes or {}, name)
    try:
        model = shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise LoweringError(f"{name}: ONNX shape inference failed: {str(exc).strip()}") from None
    _check_node_shapes(model, name)
    return _GraphBuilder(model, name).build()


def _opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def _upgrade_opset(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    if not any(imp.domain in ("", "ai.onnx") for imp in model.opset_import):
        return model  # no standard ops (ai.onnx.ml, training...): the unsupported-op check names them
    opset = _opset_of(model)
    if opset > NEWEST_OPSET:
        raise LoweringError(f"{name}: opset {opset} is newer than the newest supported ({NEWEST_OPSET})")
    if opset > MAX_OPSET:
        _check_newer_opset(model, opset, name)
        return model
    if opset >= MIN_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise LoweringError(
            f"{name}: opset {opset} is older than {MIN_OPSET} and could not be converted: {exc}"
        ) from None


def _check_newer_opset(model: onnx.ModelProto, opset: int, name: str) -> None:
    """A model at an opset after MAX_OPSET imports when each standard op it uses is unchanged since
    MAX_OPSET or only widened its types (NEWER_OPSETS); attributes added since are dropped when they keep
    the opset-MAX_OPSET meaning. Anything else is refused, naming the op and the opset that changed it."""
    changed = []
    for node in model.graph.node:
        if _domain(node):
            continue
        try:
            since = onnx.defs.get_schema(node.op_type, opset).since_version
        except Exception:
            continue  # not an op at this opset: onnx.checker or the unsupported-op check reports it
        if since <= MAX_OPSET or NEW_OPS.get(node.op_type) == since:
            continue
        added = NEWER_OPSETS.get(node.op_type)
        if added is None:
            if node.op_type in reference_ops.REGISTRY:  # others are reported as unsupported ops
                label = node.name or "<unnamed>"
                changed.append(f"{node.op_type} (node '{label}', revised in opset {since})")
            continue
        for attr in list(node.attribute):
            if attr.name not in added or attr.name in IMPLEMENTED_ATTRS.get(node.op_type, ()):
                continue
            value = onnx.helper.get_attribute_value(attr)
            value = value.decode() if isinstance(value, bytes) else value
            if value != added[attr.name]:
                changed.append(f"{node.op_type} (node '{node.name or '<unnamed>'}', {attr.name}={value!r})")
            else:
                node.attribute.remove(attr)
    if changed:
        raise LoweringError(f"{name}: opset {opset}: the newest op semantics supported are opset "
                            f"{MAX_OPSET}'s; changed since: {'; '.join(changed)}")


#: Ops the importer rewrites into others as it builds the IR (they never reach the IR).
IMPORT_REWRITES = frozenset({"Constant", "CastLike", "Attention"})

#: Attributes of the standard Attention (opsets 23-25) and the values the import into lowering::Attention
#: takes (None: any); a node with any other value is expanded into its ONNX function body instead
#: (``attention_refusal``).
ATTENTION_ATTRS: dict[str, object] = {
    "is_causal": None, "scale": None, "q_num_heads": None, "kv_num_heads": None, "softmax_precision": None,
    "softcap": 0.0, "qk_matmul_output_mode": 0, "left_window_size": -1, "right_window_size": -1,
}

#: Non-standard domains whose ops import when the reference interpreter defines them (ONNX Runtime's
#: quantized ops: QLinearAdd, QGemm, ...); any other domain is refused.
EXTRA_DOMAINS = frozenset({"com.microsoft"})


def _domain(node: onnx.NodeProto) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _qualified_op(node: onnx.NodeProto) -> str:
    return f"{_domain(node)}::{node.op_type}" if _domain(node) else node.op_type


def _is_supported(node: onnx.NodeProto) -> bool:
    """Whether the importer knows ``node``'s op (the reference defines it, or the import rewrites it)."""
    op = _qualified_op(node)
    return not (_domain(node) and _domain(node) not in EXTRA_DOMAINS) \
        and (op in reference_ops.REGISTRY or op in IMPORT_REWRITES)


def _check_supported(model: onnx.ModelProto, name: str) -> None:
    bad = [(n.name, _qualified_op(n)) for n in model.graph.node if not _is_supported(n)]
    if bad:
        raise UnsupportedOpsError(name, bad)


# ------------------------------------------------------------------------- control flow, function bodies


#: Rounds of unrolling control flow and expanding function bodies (a body of one holds the other: Range's
#: function body is a Loop, LinearAttention's holds a Scan).
MAX_UNROLL_ROUNDS = 8


def _unroll_and_expand(model: onnx.ModelProto, name: str, shapes: dict[str, tuple[int, ...]],
                       log: Callable[[str], None] | None) -> None:
    """Unroll If, Loop and Scan (``control_flow.py``) and expand function bodies, in turns, until neither
    is left. Body ops newer than MAX_OPSET go through the same check as the model's own."""
    for _ in range(MAX_UNROLL_ROUNDS):
        unrolled = unroll_control_flow(model, name, shapes, _evaluate_proto)
        if unrolled and log is not None:
            log(f"unrolled {unrolled} control-flow node(s) (If, Loop, Scan) into plain nodes")
        if unrolled and _opset_of(model) > MAX_OPSET \
                and any(imp.domain in ("", "ai.onnx") for imp in model.opset_import):
            _check_newer_opset(model, _opset_of(model), name)
        _expand_functions(model, name, log)
        if not has_control_flow(model.graph):
            return
    raise LoweringError(f"{name}: control flow still left after {MAX_UNROLL_ROUNDS} rounds of unrolling and "
                        "function expansion")


def _evaluate_proto(proto: onnx.NodeProto, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    """One standard node on numpy inputs, with the reference interpreter's semantics (constant folding for
    control-flow decisions)."""
    from ..reference.interpreter import evaluate_node

    attrs = {}
    for a in proto.attribute:
        converted = _convert_attr(a)
        if converted is None:
            raise ValueError(f"attribute '{a.name}' has an unsupported kind")
        attrs[a.name] = converted
    args = [None if x is None else Value(f"in{i}", const=np.asarray(x)) for i, x in enumerate(inputs)]
    outs = [Value(y or f"out{i}") for i, y in enumerate(proto.output)]
    node = Node(proto.op_type, args, outs, attrs, name=proto.name or proto.op_type, domain=_domain(proto))
    return evaluate_node(node, [None if x is None else np.asarray(x) for x in inputs])


# ------------------------------------------------------------------------- ONNX function-body expansion


def _expand_functions(model: onnx.ModelProto, name: str, log: Callable[[str], None] | None) -> None:
    """Replace the nodes the importer cannot take as they are (an op it does not know; an Attention
    ``lowering::Attention`` cannot express) by their ONNX function bodies, in place (``expand.py``).
    Body ops newer than MAX_OPSET go through the same check as the model's own."""
    counts = expand_functions(model, name, _imports_natively,
                              lambda node: _is_supported(node) or is_control_flow(node))
    if not counts:
        return
    if any(imp.domain in ("", "ai.onnx") for imp in model.opset_import) and _opset_of(model) > MAX_OPSET:
        _check_newer_opset(model, _opset_of(model), name)
    if log is not None:
        log(expansion_summary(counts))


def _imports_natively(node: onnx.NodeProto, types: TypeLookup) -> bool:
    """Whether the importer takes ``node`` as it is, without expanding it into its function body (control
    flow is unrolled instead)."""
    if is_control_flow(node):
        return True
    if _qualified_op(node) == "Attention":
        attrs = {}
        for a in node.attribute:
            value = onnx.helper.get_attribute_value(a)
            attrs[a.name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        outputs = [bool(o) for o in node.output]
        unknown = [AttentionArg(x, None, None) if x else None for x in node.input]
        if attention_refusal(attrs, unknown, outputs, final=False) is not None:
            return False  # attributes, inputs or outputs decide: no need for the element types
        return attention_refusal(attrs, [_attention_arg(x, types) if x else None for x in node.input],
                                 outputs, final=False) is None
    return _is_supported(node)


class AttentionArg(NamedTuple):
    """An Attention input as the import decision sees it."""

    name: str
    #: its element type; the ONNX type's name when the IR has no such type; None: unknown
    dtype: DType | str | None
    #: None: unknown (only the build's final check reads it)
    shape: tuple[int, ...] | None


def _attention_arg(name: str, types: TypeLookup) -> AttentionArg:
    t = types.get(name)
    if t is None or not t.HasField("tensor_type"):
        return AttentionArg(name, None, None)
    code = t.tensor_type.elem_type
    dtype = _ONNX_DTYPES.get(code) or (onnx.TensorProto.DataType.Name(code).lower() if code else None)
    return AttentionArg(name, dtype, None)


def attention_refusal(attrs: dict[str, object], args: list[AttentionArg | None], outputs: list[bool],
                      final: bool) -> str | None:
    """Why a standard Attention node with these attributes, inputs (None: omitted) and outputs (whether
    each is used) cannot be imported as ``lowering::Attention``; None when it can. Asked before the
    import (``final`` false), where a refusal sends the node to its ONNX function body instead: only what
    the body does and ``lowering::Attention`` does not (attributes, past/present KV, the QK output,
    element types; an unknown type does not refuse) decides there. Asked again as the node is built
    (``final``), where a refusal is the import error: also the checks of a valid model (ranks, heads),
    which the function body could not pass either."""
    for key, value in attrs.items():
        if key not in ATTENTION_ATTRS:
            return f"attribute '{key}'"
        wanted = ATTENTION_ATTRS[key]
        if wanted is not None and value != wanted:
            return f"{key}={value!r}"
    extra_in = [i for i, a in enumerate(args[4:], start=4) if a is not None]
    if extra_in:
        return "past_key/past_value/nonpad_kv_seqlen (input " + ", ".join(map(str, extra_in)) + ")"
    if any(outputs[1:]):
        return "present_key/present_value/qk_matmul_output (outputs 1-3)"
    q, k, v = (list(args) + [None] * 3)[:3]
    mask = args[3] if len(args) > 3 else None
    for x in (q, k, v, mask):
        if x is not None and x.dtype is not None and x.dtype not in (DType.FLOAT32, DType.BOOL):
            return f"a {getattr(x.dtype, 'value', x.dtype)} '{x.name}'"
    if not final:
        return None
    if any(x is None or x.shape is None for x in (q, k, v)):
        return "a Q, K or V of unknown shape"
    rank = len(q.shape)
    if rank not in (3, 4) or len(k.shape) != rank or len(v.shape) != rank:
        return f"Q, K, V of ranks {len(q.shape)}, {len(k.shape)}, {len(v.shape)} (4 or 3 each)"
    if rank == 3:
        hq, hkv = attrs.get("q_num_heads"), attrs.get("kv_num_heads")
        if not hq or not hkv:
            return "3-D Q, K, V without q_num_heads and kv_num_heads"
        if hq % hkv:
            return f"{hq} query heads over {hkv} key/value heads"
        for x, heads in zip((q, k, v), (hq, hkv, hkv)):
            if x.shape[2] % heads:
                return f"'{x.name}' hidden size {x.shape[2]} not a multiple of {heads} heads"
        return None
    if attrs.get("q_num_heads") or attrs.get("kv_num_heads"):
        return "q_num_heads/kv_num_heads with 4-D inputs"
    if not k.shape[1] or q.shape[1] % k.shape[1]:
        return f"{q.shape[1]} query heads over {k.shape[1]} key/value heads"
    return None


def _bind_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], name: str) -> None:
    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise LoweringError(
            f"{name}: --shape names {', '.join(unknown)}, which is not a model input "
            f"(inputs: {', '.join(inputs) or 'none'})"
        )
    for input_name, info in inputs.items():
        if not info.type.HasField("tensor_type"):
            raise LoweringError(f"{name}: input '{input_name}' is not a tensor")
        dims = info.type.tensor_type.shape.dim
        if input_name in shapes:
            wanted = shapes[input_name]
            if len(wanted) != len(dims):
                raise LoweringError(
                    f"{name}: --shape {input_name} has rank {len(wanted)}, the input has rank {len(dims)}"
                )
            for dim, size in zip(dims, wanted):
                if dim.HasField("dim_value") and dim.dim_value != size:
                    raise LoweringError(
                        f"{name}: --shape {input_name} sets a dimension to {size}, "
                        f"the model fixes it at {dim.dim_value}"
                    )
                dim.Clear()
                dim.dim_value = size
        for axis, dim in enumerate(dims):
            if not dim.HasField("dim_value"):
                symbol = dim.dim_param or "?"
                raise LoweringError(
                    f"{name}: input '{input_name}' dimension {axis} is symbolic ('{symbol}'); bind it "
                    f"with --shape {input_name}=" + "x".join(
                        str(d.dim_value) if d.HasField("dim_value") else "N" for d in dims)
                )


#: convolution ops -> the index of their weight input (the data input is input 0) and of their bias
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_CONV_BIAS = {"Conv": 2, "QLinearConv": 8}


def _known_shapes(graph: onnx.GraphProto) -> dict[str, list[int]]:
    shapes = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape") \
                and all(d.HasField("dim_value") and d.dim_value >= 0 for d in tt.shape.dim):
            shapes[vi.name] = [d.dim_value for d in tt.shape.dim]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _check_node_shapes(model: onnx.ModelProto, name: str) -> None:
    """Refuse, naming the node, convolutions whose attributes, bias or input disagree with the weight's
    shape, and Reshapes that change the element count. ONNX shape inference does not check them all (it
    computes negative sizes, ignores ``group``, trusts the Reshape target); the targets would otherwise
    fail deep inside (weight packing), or build code that reads out of bounds."""
    shapes = _known_shapes(model.graph)
    for node in model.graph.node:
        if node.op_type == "Reshape" and not _domain(node) and len(node.input) > 0 and node.output:
            x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
            if x is not None and y is not None and int(np.prod(x, dtype=np.float64)) != \
                    int(np.prod(y, dtype=np.float64)):
                raise LoweringError(f"{name}: node '{node.name or '<unnamed>'}' (Reshape) reshapes "
                                    f"'{node.input[0]}' of shape {x} into {y}: the element counts differ")
            continue
        w_index = _CONV_WEIGHT.get(node.op_type)
        if w_index is None or _domain(node) or len(node.input) <= w_index:
            continue
        label = f"{name}: node '{node.name or '<unnamed>'}' ({node.op_type})"
        attrs = {a.name: a for a in node.attribute}
        group = attrs["group"].i if "group" in attrs else 1
        if group < 1:
            raise LoweringError(f"{label} has group={group}; it must be at least 1")
        for key, least in (("strides", 1), ("dilations", 1), ("pads", 0)):
            if key in attrs and any(v < least for v in attrs[key].ints):
                raise LoweringError(f"{label} has {key}={list(attrs[key].ints)}; each must be at least "
                                    f"{least}")
        x_name, w_name = node.input[0], node.input[w_index]
        w, x = shapes.get(w_name), shapes.get(x_name)
        if w is None:
            continue
        if len(w) < 3:
            raise LoweringError(f"{label}: weight '{w_name}' has shape {w}; a convolution weight has rank 3 "
                                "or more (M x C/group x kernel...)")
        spatial = len(w) - 2
        for key, count in (("kernel_shape", spatial), ("strides", spatial), ("dilations", spatial),
                           ("pads", 2 * spatial)):
            if key in attrs and len(attrs[key].ints) != count:
                raise LoweringError(f"{label} has {key}={list(attrs[key].ints)}: {count} values expected for "
                                    f"the weight '{w_name}' of shape {w}")
        if "kernel_shape" in attrs and list(attrs["kernel_shape"].ints) != w[2:]:
            raise LoweringError(f"{label} has kernel_shape={list(attrs['kernel_shape'].ints)}, which "
                                f"disagrees with its weight '{w_name}' of shape {w}")
        if w[0] % group:
            raise LoweringError(f"{label}: weight '{w_name}' has {w[0]} output channels, not a multiple of "
                                f"group={group}")
        b_index = _CONV_BIAS.get(node.op_type)
        b = shapes.get(node.input[b_index]) if b_index is not None and len(node.input) > b_index \
            and node.input[b_index] else None
        if b is not None and b != [w[0]]:
            raise LoweringError(f"{label}: bias '{node.input[b_index]}' has shape {b}; the weight '{w_name}' "
                                f"of shape {w} needs [{w[0]}]")
        if x is not None and (len(x) != len(w) or x[1] != w[1] * group):
            raise LoweringError(f"{label}: input '{x_name}' has shape {x}, but the weight '{w_name}' of "
                                f"shape {w} with group={group} expects rank {len(w)} and {w[1] * group} "
                                "channels")


def _tensor_type(type_proto: onnx.TypeProto) -> TensorType | None:
    if not type_proto.HasField("tensor_type"):
        return None
    tt = type_proto.tensor_type
    dtype = _ONNX_DTYPES.get(tt.elem_type)
    if dtype is None or not tt.HasField("shape"):
        return None
    if not all(d.HasField("dim_value") for d in tt.shape.dim):
        return None
    return TensorType(dtype, tuple(int(d.dim_value) for d in tt.shape.dim))


def _convert_attr(proto: onnx.AttributeProto) -> Attr | None:
    kind = proto.type
    A = onnx.AttributeProto
    if kind == A.INT:
        return Attr(AttrKind.INT, int(proto.i))
    if kind == A.FLOAT:
        return Attr(AttrKind.FLOAT, float(proto.f))
    if kind == A.STRING:
        return Attr(AttrKind.STRING, proto.s.decode("utf-8"))
    if kind == A.INTS:
        return Attr(AttrKind.INTS, tuple(int(x) for x in proto.ints))
    if kind == A.FLOATS:
        return Attr(AttrKind.FLOATS, tuple(float(x) for x in proto.floats))
    if kind == A.STRINGS:
        return Attr(AttrKind.STRINGS, tuple(x.decode("utf-8") for x in proto.strings))
    if kind == A.TENSOR:
        return Attr(AttrKind.TENSOR, numpy_helper.to_array(proto.t))
    return None


class _GraphBuilder:
    def __init__(self, model: onnx.ModelProto, name: str):
        self.model = model
        self.name = name
        self.graph = Graph(name=model.graph.name or name, opset=min(_opset_of(model), MAX_OPSET))
        self.values: dict[str, Value] = {}
        self.types: dict[str, TensorType | None] = {}
        self.elem_types: dict[str, int] = {}  # ONNX element type codes, also of values of unknown shape

    def build(self) -> Graph:
        g = self.model.graph
        for vi in list(g.value_info) + list(g.output) + list(g.input):
            self._check_dims(vi)
            self.types[vi.name] = _tensor_type(vi.type)
            if vi.type.HasField("tensor_type"):
                self.elem_types[vi.name] = vi.type.tensor_type.elem_type
        for init in g.initializer:
            self._define(Value(init.name, const=self._to_array(init, init.name)))
        for inp in g.input:
            if inp.name in self.values:
                continue  # an initializer listed as an input (IR < 4 style) stays a constant
            value = Value(inp.name, self.types.get(inp.name))
            if value.type is None:
                raise LoweringError(f"{self.name}: input '{inp.name}' has an unsupported element type")
            self.graph.inputs.append(value)
            self._define(value)
        for proto in g.node:
            self._add_node(proto)
        for out in g.output:
            if out.name not in self.values:
                raise LoweringError(f"{self.name}: output '{out.name}' is not produced by any node")
            self.graph.outputs.append(self.values[out.name])
            self.graph.output_names.append(out.name)
        self._fill_missing_types()
        return self.graph

    def _check_dims(self, vi: onnx.ValueInfoProto) -> None:
        """A negative dimension (ONNX shape inference computes one for a window larger than its padded
        input) names the node that produces the tensor."""
        tt = vi.type.tensor_type
        dims = [d.dim_value for d in tt.shape.dim] if vi.type.HasField("tensor_type") else []
        if all(d >= 0 for d in dims):
            return
        producer = next((n for n in self.model.graph.node if vi.name in n.output), None)
        if producer is None:
            raise LoweringError(f"{self.name}: tensor '{vi.name}' has the shape {dims}, a negative dimension")
        raise LoweringError(f"{self.name}: node '{producer.name or '<unnamed>'}' ({producer.op_type}) gives "
                            f"'{vi.name}' the shape {dims}, a negative dimension (do its kernel_shape, "
                            "pads, strides and dilations fit its input?)")

    def _to_array(self, tensor: onnx.TensorProto, what: str) -> np.ndarray:
        try:
            array = numpy_helper.to_array(tensor)
        except Exception as exc:
            raise LoweringError(f"{self.name}: cannot read tensor '{what}': {exc}") from None
        try:
            DType.from_numpy(array.dtype)
        except ValueError as exc:
            raise LoweringError(f"{self.name}: tensor '{what}': {exc}") from None
        return np.ascontiguousarray(array).reshape(array.shape)  # ascontiguousarray makes 0-d arrays 1-d

    def _define(self, value: Value) -> None:
        self.values[value.name] = value
        self.graph.reserve_name(value.name)

    def _add_node(self, proto: onnx.NodeProto) -> None:
        label = f"node '{proto.name or '<unnamed>'}' ({proto.op_type})"
        if proto.op_type == "Constant":
            self._define(Value(proto.output[0], const=self._constant_value(proto, label)))
            return
        inputs = []
        for name in proto.input:
            if not name:
                inputs.append(None)
                continue
            if name not in self.values:
                raise LoweringError(f"{self.name}: {label} reads '{name}', which nothing defines")
            inputs.append(self.values[name])
        attrs = {}
        for a in proto.attribute:
            try:
                converted = _convert_attr(a)
            except UnicodeDecodeError:
                raise LoweringError(f"{self.name}: {label} attribute '{a.name}' is not valid UTF-8 text "
                                    "(a damaged model?)") from None
            if converted is None:
                raise LoweringError(f"{self.name}: {label} attribute '{a.name}' has an unsupported kind")
            attrs[a.name] = converted
        outputs = [Value(name or self.graph.unique_name("unused"), self.types.get(name))
                   for name in proto.output]
        op_type = proto.op_type
        if op_type == "CastLike" and not _domain(proto):  # Cast to the second input's element type
            like = inputs[1]
            code = _ONNX_CODES.get(like.type.dtype) if like is not None and like.type is not None \
                else self.elem_types.get(proto.input[1])
            if code not in _ONNX_DTYPES:
                raise LoweringError(f"{self.name}: {label} casts to the type of '{proto.input[1]}', "
                                    "which is unknown or unsupported")
            op_type, inputs, attrs = "Cast", inputs[:1], {"to": Attr(AttrKind.INT, code)}
        node_name = proto.name or self.graph.unique_name(proto.op_type.lower())
        self.graph.reserve_name(node_name)
        if op_type == "Attention" and not _domain(proto):
            self._attention(proto, label, node_name, inputs, attrs, outputs)
            return
        self.graph.append(Node(op_type, inputs, outputs, attrs, name=node_name,
                               domain=_domain(proto)))
        for out in outputs:
            self._define(out)

    def _attention(self, proto: onnx.NodeProto, label: str, name: str, inputs: list, attrs: dict,
                   outputs: list[Value]) -> None:
        """The standard Attention (opset 23+) as ``lowering::Attention``: 4-D Q/K/V [B, H, S, D] read
        as they are, 3-D [B, S, H*D] (``q_num_heads``/``kv_num_heads``) through a Reshape to [B, S, H, D]
        (fewer K/V heads than query heads: grouped-query attention)
        and the ``*_perm`` layouts; ``scale`` (default 1/sqrt(D)), ``is_causal`` (top-left aligned: a
        constant boolean mask when Sq != Sk), an additive float or a boolean ``attn_mask``. A fully masked
        row gives 0, as the ONNX definition says (``nan_to_zero``). Past/present KV, softcap, the QK
        output and sliding windows (``attention_refusal``) were expanded into the ONNX function body
        before; what only shows now (a symbolic dimension bound by ``--shape``) is refused here."""
        def refuse(why: str):
            raise LoweringError(f"{self.name}: {label}: {why} is not supported (the import into "
                                "lowering::Attention takes Q, K, V and attn_mask only)")

        values = {key: attr.value for key, attr in attrs.items()}
        args = [None if x is None else AttentionArg(x.name, x.type.dtype if x.type else None,
                                                    x.type.shape if x.type else None) for x in inputs]
        why = attention_refusal(values, args, [bool(n) for n in proto.output], final=True)
        if why is not None:
            refuse(why)
        q, k, v = inputs[:3]
        mask = inputs[3] if len(inputs) > 3 else None
        rank = q.type.rank
        new_attrs: dict[str, Attr] = {"nan_to_zero": Attr(AttrKind.INT, 1)}
        y = outputs[0]
        if rank == 3:
            hq, hkv = values.get("q_num_heads"), values.get("kv_num_heads")
            split = []
            for x, heads in zip((q, k, v), (hq, hkv, hkv)):
                b, s, hidden = x.type.shape
                split.append(self._attention_reshape(x, (b, s, heads, hidden // heads), name))
            q, k, v = split
            for perm in ("q_perm", "k_perm", "v_perm", "y_perm"):
                new_attrs[perm] = Attr(AttrKind.INTS, (0, 2, 1, 3))
            b, sq, _, dv = q.type.shape[0], q.type.shape[1], hq, v.type.shape[3]
            head_dim, sk = q.type.shape[3], k.type.shape[1]
            y4 = Value(self.graph.unique_name(f"{name}_y4"), TensorType(DType.FLOAT32, (b, sq, hq, dv)))
        else:
            head_dim, sq, sk = q.type.shape[3], q.type.shape[2], k.type.shape[2]
            y4 = y
        scale = values.get("scale")
        new_attrs["scale"] = Attr(AttrKind.FLOAT, float(1.0 / np.sqrt(head_dim) if scale is None else scale))
        float_mask = bool_mask = None
        if mask is not None:
            if mask.type.dtype is DType.BOOL:
                bool_mask = mask
            else:
                float_mask = mask
        if values.get("is_causal"):
            if sq == sk:
                new_attrs["causal"] = Attr(AttrKind.INT, 1)
            else:  # ONNX aligns the causal mask top-left; lowering::Attention bottom-right
                tril = Value(self.graph.unique_name(f"{name}_causal"), const=np.tril(np.ones((sq, sk), bool)))
                if bool_mask is None:
                    bool_mask = tril
                else:
                    both = Value(self.graph.unique_name(f"{name}_mask"),
                                 TensorType(DType.BOOL, np.broadcast_shapes(bool_mask.type.shape, (sq, sk))))
                    self.graph.append(Node("And", [bool_mask, tril], [both], {},
                                           name=self.graph.unique_name(f"{name}_and")))
                    bool_mask = both
        self.graph.append(Node("Attention", [q, k, v, float_mask, bool_mask], [y4], new_attrs, name=name,
                               domain=DOMAIN))
        if rank == 3:
            shape = Value(self.graph.unique_name(f"{name}_shape"), const=np.array(y.type.shape, np.int64))
            self.graph.append(Node("Reshape", [y4, shape], [y], {}, name=self.graph.unique_name(f"{name}_y")))
        self._define(y)

    def _attention_reshape(self, x: Value, shape: tuple[int, ...], name: str) -> Value:
        target = Value(self.graph.unique_name(f"{name}_{x.name}_shape"), const=np.array(shape, np.int64))
        out = Value(self.graph.unique_name(f"{name}_{x.name}_heads"), TensorType(x.type.dtype, shape))
        split = self.graph.unique_name(f"{name}_split")
        self.graph.append(Node("Reshape", [x, target], [out], {}, name=split))
        return out

    def _constant_value(self, proto: onnx.NodeProto, label: str) -> np.ndarray:
        a = proto.attribute[0] if proto.attribute else None
        if a is None:
            raise LoweringError(f"{self.name}: {label} has no value")
        if a.name == "value":
            return self._to_array(a.t, proto.output[0])
        scalar = {"value_float": np.float32(a.f), "value_int": np.int64(a.i)}
        lists = {"value_floats": (a.floats, np.float32), "value_ints": (a.ints, np.int64)}
        if a.name in scalar:
            return np.array(scalar[a.name])
        if a.name in lists:
            data, dtype = lists[a.name]
            return np.array(list(data), dtype=dtype)
        raise LoweringError(f"{self.name}: {label} attribute '{a.name}' is not supported")

    def _fill_missing_types(self) -> None:
        """Values ONNX shape inference left untyped get their type from one reference run."""
        missing = [v for n in self.graph.nodes for v in n.outputs if v.type is None]
        if not missing:
            return
        from ..reference.interpreter import run_graph

        feeds = {v.name: np.ones(v.type.shape, v.type.dtype.numpy) for v in self.graph.inputs}
        try:
            env = run_graph(self.graph, feeds, keep_all=True)
        except Exception as exc:
            raise LoweringError(
                f"{self.name}: cannot infer the shape of '{missing[0].name}' ({exc})"
            ) from None
        for v in missing:
            v.type = TensorType.of(np.asarray(env[v.name]))

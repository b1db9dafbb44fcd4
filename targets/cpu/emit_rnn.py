"""RNN, GRU and LSTM on the cpu target (kernel ``lw_rnn`` in ``kernels_rnn.c``, on the packed GEMM).

The node's attributes are read by ``lowering.reference.ops_rnn.rnn_spec``, the reference's own reader, so
the kernel and the reference share every default (activations, alpha/beta, clip, layout). A constant W
or R is prepacked here (per direction: W^T, and R^T, for GRU split into its z/r rows and its candidate
rows, the two GEMMs of a step); a run-time one is packed by the kernel into its workspace. B, P, the
initial states and ``sequence_lens`` are read where they live. The workspace holds the hoisted input
product of one direction (T*B*gates*H floats, up to ``HOIST_BYTES``), the states and gate buffers.
Outputs the graph does not read (Y, Y_h, Y_c) are not written.
"""

from __future__ import annotations

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.reference.ops_rnn import RNN_OPS, RnnSpec, RnnSpecError, rnn_flops, rnn_spec

from .pack import pack_b, packed_b_floats
from .registry import EmitContext, KernelCode, c_float, register

#: the most workspace the hoisted input products of one direction may take; beyond it each batch entry
#: computes its step's product in the recurrence (same arithmetic, same results)
HOIST_BYTES = 64 << 20

#: input roles, in ONNX order
ROLES = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")


def _used(node: Node, index: int) -> Value | None:
    """Output ``index`` when the graph reads it (a later node or a graph output), else None."""
    if len(node.outputs) <= index or node.outputs[index] is None:
        return None
    value = node.outputs[index]
    graph_outputs = {id(v) for v in node.graph.outputs} if node.graph is not None else set()
    return value if value.uses() or id(value) in graph_outputs else None


def _expected_shapes(node: Node, spec, steps: int, batch: int, inputs: int) -> dict[str, tuple[int, ...]]:
    d, h, gh = spec.directions, spec.hidden, spec.gates * spec.hidden
    state = (batch, d, h) if spec.layout else (d, batch, h)
    return {"W": (d, gh, inputs), "R": (d, gh, h), "B": (d, 2 * gh), "sequence_lens": (batch,),
            "initial_h": state, "initial_c": state, "P": (d, 3 * h)}


def check_rnn(node: Node) -> str | None:
    op = node.op
    try:
        spec = rnn_spec(node)
    except RnnSpecError as exc:
        return f"{op} {exc}"
    if op != "LSTM" and len(node.inputs) > 6 and any(v is not None for v in node.inputs[6:]):
        return f"{op} takes at most 6 inputs"
    x = node.input(0)
    if x is None or x.type is None or x.type.rank != 3:
        return f"{op} input X must be a rank-3 tensor"
    for i, value in enumerate(node.inputs[:len(ROLES)]):
        if value is None:
            continue
        want = DType.INT32 if ROLES[i] == "sequence_lens" else DType.FLOAT32
        if value.type is None or value.type.dtype is not want:
            kind = value.type.dtype.value if value.type is not None else "untyped"
            return f"{op} input {ROLES[i]} '{value.name}' is {kind}; the cpu target takes {want.value}"
    for value in node.outputs:
        if value is not None and value.type is not None and value.type.dtype is not DType.FLOAT32:
            return f"{op} output '{value.name}' is {value.type.dtype.value}; the cpu target computes float32"
    if node.input(1) is None or node.input(2) is None:
        return f"{op} needs W and R"
    steps, batch, inputs = x.type.shape if spec.layout == 0 else (x.type.shape[1], x.type.shape[0],
                                                                   x.type.shape[2])
    expected = _expected_shapes(node, spec, steps, batch, inputs)
    for i, role in enumerate(ROLES[1:], start=1):
        value = node.input(i)
        if value is not None and tuple(value.type.shape) != expected[role]:
            return (f"{op} input {role} '{value.name}' has shape {list(value.type.shape)}, expected "
                    f"{list(expected[role])} (hidden_size {spec.hidden}, {spec.directions} direction(s))")
    if min(steps, batch, inputs) == 0:
        return f"{op} over an empty input X {list(x.type.shape)}"
    return None


def rnn_workspace(spec: RnnSpec, steps: int, batch: int, inputs: int, nr: int, hoist: bool,
                  pack_w: bool, pack_r: bool) -> int:
    """Bytes of lw_rnn's workspace (the layout its comment gives)."""
    h, gh, gru = spec.hidden, spec.gates * spec.hidden, spec.op == "GRU"
    floats = (steps * batch * gh if hoist else batch * (gh + inputs)) + batch * (4 * h + gh)
    if pack_w:
        floats += packed_b_floats(inputs, gh, nr)
    if pack_r and gru:
        floats += packed_b_floats(h, 2 * h, nr) + packed_b_floats(h, h, nr)
    elif pack_r:
        floats += packed_b_floats(h, gh, nr)
    return 4 * floats


def _packed(ctx: EmitContext, value: Value, rows: slice | None = None) -> str:
    """The packed B operands (the transposes of ``rows`` of each direction's matrix), back to back."""
    if not value.is_const:
        return "NULL"
    mats = np.asarray(value.const, np.float32)
    parts = [pack_b(np.ascontiguousarray((m if rows is None else m[rows]).T), ctx.isa.nr).reshape(-1)
             for m in mats]
    return ctx.weights(np.concatenate(parts))


@register(*RNN_OPS, check=check_rnn, dtypes=None, outputs=3)
def emit_rnn(ctx: EmitContext, node: Node) -> KernelCode:
    spec = rnn_spec(node)
    x = node.input(0)
    steps, batch, inputs = x.type.shape if spec.layout == 0 else (x.type.shape[1], x.type.shape[0],
                                                                   x.type.shape[2])
    kind = {"RNN": 0, "GRU": 1, "LSTM": 2}[node.op]
    acts = [list(spec.activations[d]) for d in range(spec.directions)]
    acts += [acts[0]] * (2 - len(acts))
    slots = [a + [a[-1]] * (3 - len(a)) for a in acts]
    act = ", ".join("{" + ", ".join(str(s.code) for s in row) + "}" for row in slots)
    alpha = ", ".join("{" + ", ".join(c_float(s.alpha) for s in row) + "}" for row in slots)
    beta = ", ".join("{" + ", ".join(c_float(s.beta) for s in row) + "}" for row in slots)
    clip = spec.clip is not None
    gh = spec.gates * spec.hidden
    hoist = 4 * steps * batch * gh <= HOIST_BYTES
    geom = (f"static const lw_rnn_geom g = {{{kind}, {steps}, {batch}, {inputs}, {spec.hidden}, "
            f"{spec.directions}, {spec.gates}, {spec.layout}, {int(spec.reverse_only)}, "
            f"{int(spec.linear_before_reset)}, {int(spec.input_forget)}, {int(clip)}, {int(hoist)}, "
            f"{c_float(spec.clip if clip else 0.0)}, {{{act}}}, {{{alpha}}}, {{{beta}}}}};")
    opt = [node.input(i) for i in range(3, 8)]
    lens = "NULL" if opt[1] is None else ctx.ptr(opt[1], "int32_t")
    b, h0, c0, p = (ctx.opt_ptr(v) for v in (opt[0], opt[2], opt[3], opt[4]))
    outs = ", ".join("NULL" if v is None else ctx.out(v) for v in (_used(node, i) for i in range(3)))
    w, r, hs = node.input(1), node.input(2), spec.hidden
    gru = spec.op == "GRU"
    wpk = _packed(ctx, w)
    rpk = _packed(ctx, r, slice(0, 2 * hs) if gru else None)
    rhpk = _packed(ctx, r, slice(2 * hs, 3 * hs)) if gru else "NULL"
    workspace = rnn_workspace(spec, steps, batch, inputs, ctx.isa.nr, hoist, not w.is_const, not r.is_const)
    body = (f"{geom}\n"
            f"lw_rnn(ctx->nt, &g, {ctx.ptr(x)}, {ctx.ptr(w)}, {ctx.ptr(r)}, {wpk}, {rpk}, {rhpk}, {b}, "
            f"{lens}, {h0}, {c0}, {p}, {outs}, (float *)ctx->ws, ctx->status);")
    return KernelCode(body, flops=rnn_flops(spec, steps, batch, inputs), workspace=workspace)

"""Numpy semantics of the recurrent ops RNN, GRU and LSTM (see ``ops.py``).

One definition serves the three: ``rnn_spec`` reads a node's attributes into an ``RnnSpec`` (the gate
count, the activation of every slot of every direction with its alpha/beta, clip, layout...), which the cpu
target's lowering (``targets/cpu/emit_rnn.py``) reads too, so the two cannot disagree on a default.

Conventions (ONNX, as ONNX Runtime computes them):

- gate order in W/R/B: RNN ``i``; GRU ``z r h``; LSTM ``i o f c``; peepholes P: ``i o f``.
- ``activations`` lists f (RNN), f g (GRU) or f g h (LSTM) per direction, forward first; ``activation_alpha``
  and ``activation_beta`` are consumed in that order by the functions that take them (LeakyRelu,
  ThresholdedRelu, Elu: alpha; Affine, ScaledTanh, HardSigmoid: alpha and beta), the ONNX defaults when the
  list runs out.
- ``clip`` bounds every activation's input to [-clip, clip] (not the LSTM cell state going into h).
- ``sequence_lens``: a batch entry stops after its length; its Y steps past it are zero and Y_h / Y_c hold
  the state after its last step (the reverse direction starts at its last valid step); an entry of length
  0 ends with zero states, not its initial ones (as ONNX Runtime computes it).
- ``layout`` 1: X is [batch, seq, input], Y [batch, seq, dirs, hidden], initial/final states [batch, dirs,
  hidden].

The recurrence is computed in float64 and rounded to float32 at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Node
from .ops import register

#: activation name (lower case) -> (code shared with kernels_rnn.c, how many of alpha/beta it takes,
#: default alpha, default beta)
ACTIVATIONS: dict[str, tuple[int, int, float, float]] = {
    "sigmoid": (0, 0, 0.0, 0.0),
    "tanh": (1, 0, 0.0, 0.0),
    "relu": (2, 0, 0.0, 0.0),
    "affine": (3, 2, 1.0, 0.0),
    "leakyrelu": (4, 1, 0.01, 0.0),
    "thresholdedrelu": (5, 1, 1.0, 0.0),
    "scaledtanh": (6, 2, 1.0, 1.0),
    "hardsigmoid": (7, 2, 0.2, 0.5),
    "elu": (8, 1, 1.0, 0.0),
    "softsign": (9, 0, 0.0, 0.0),
    "softplus": (10, 0, 0.0, 0.0),
}

#: per op: gates, activation slots per direction and their defaults
RNN_OPS: dict[str, tuple[int, tuple[str, ...]]] = {
    "RNN": (1, ("Tanh",)),
    "GRU": (3, ("Sigmoid", "Tanh")),
    "LSTM": (4, ("Sigmoid", "Tanh", "Tanh")),
}


class RnnSpecError(ValueError):
    """A recurrent node's attributes are inconsistent (the message names what)."""


@dataclass(frozen=True)
class Activation:
    name: str
    code: int
    alpha: float
    beta: float


@dataclass(frozen=True)
class RnnSpec:
    op: str
    gates: int
    hidden: int
    directions: int
    reverse_only: bool  # direction "reverse": the single direction runs backwards
    layout: int
    clip: float | None
    linear_before_reset: bool
    input_forget: bool
    activations: tuple[tuple[Activation, ...], ...]  # [direction][slot]


def rnn_spec(node: Node) -> RnnSpec:
    """The attributes of an RNN/GRU/LSTM node, defaults applied, checked against its W input's shape."""
    gates, defaults = RNN_OPS[node.op]
    direction = node.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise RnnSpecError(f"direction '{direction}' is not forward, reverse or bidirectional")
    dirs = 2 if direction == "bidirectional" else 1
    hidden = node.attr("hidden_size")
    w = node.input(1)
    if hidden is None and w is not None and w.type is not None:
        hidden = w.type.shape[1] // gates
    if hidden is None or hidden <= 0:
        raise RnnSpecError("hidden_size is missing or not positive")
    names = node.attr("activations", None)
    names = tuple(defaults) * dirs if names is None else tuple(names)
    if len(names) != len(defaults) * dirs:
        raise RnnSpecError(f"{len(names)} activations given, {len(defaults) * dirs} expected "
                           f"({', '.join(defaults)} per direction)")
    alphas = list(node.attr("activation_alpha", ()) or ())
    betas = list(node.attr("activation_beta", ()) or ())
    acts = []
    for name in names:
        entry = ACTIVATIONS.get(name.lower())
        if entry is None:
            raise RnnSpecError(f"activation '{name}' is not one of the ONNX RNN activations")
        code, takes, alpha, beta = entry
        if takes >= 1 and alphas:
            alpha = alphas.pop(0)
        if takes >= 2 and betas:
            beta = betas.pop(0)
        acts.append(Activation(name.lower(), code, float(alpha), float(beta)))
    per_dir = len(defaults)
    clip = node.attr("clip", None)
    layout = int(node.attr("layout", 0))
    if layout not in (0, 1):
        raise RnnSpecError(f"layout {layout} is not 0 or 1")
    return RnnSpec(
        op=node.op, gates=gates, hidden=int(hidden), directions=dirs, reverse_only=direction == "reverse",
        layout=layout, clip=None if clip is None else float(clip),
        linear_before_reset=bool(node.attr("linear_before_reset", 0)),
        input_forget=bool(node.attr("input_forget", 0)),
        activations=tuple(tuple(acts[d * per_dir:(d + 1) * per_dir]) for d in range(dirs)),
    )


def _softplus(x):
    return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(np.minimum(x, 0))))


def activate(act: Activation, x: np.ndarray) -> np.ndarray:
    """One RNN activation function on float64 ``x``."""
    a, b = act.alpha, act.beta
    with np.errstate(all="ignore"):
        return {
            "sigmoid": lambda: 0.5 * (1.0 + np.tanh(0.5 * x)),
            "tanh": lambda: np.tanh(x),
            "relu": lambda: np.maximum(x, 0.0),
            "affine": lambda: a * x + b,
            "leakyrelu": lambda: np.where(x >= 0, x, a * x),
            "thresholdedrelu": lambda: np.where(x > a, x, 0.0),
            "scaledtanh": lambda: a * np.tanh(b * x),
            "hardsigmoid": lambda: np.clip(a * x + b, 0.0, 1.0),
            "elu": lambda: np.where(x >= 0, x, a * np.expm1(np.minimum(x, 0))),
            "softsign": lambda: x / (1.0 + np.abs(x)),
            "softplus": lambda: _softplus(x),
        }[act.name]()


def _clip(spec: RnnSpec, x: np.ndarray) -> np.ndarray:
    return x if spec.clip is None else np.clip(x, -spec.clip, spec.clip)


def _step(spec: RnnSpec, acts, xw, h, c, r, rb, p):
    """One time step of one direction for the whole batch: the new (h, c). ``xw`` is X_t W^T + Wb."""
    hs = spec.hidden
    f = acts[0]
    if spec.op == "RNN":
        return activate(f, _clip(spec, xw + h @ r.T + rb)), c
    if spec.op == "GRU":
        g = acts[1]
        hr = h @ r[:2 * hs].T + rb[:2 * hs]
        z = activate(f, _clip(spec, xw[:, :hs] + hr[:, :hs]))
        rr = activate(f, _clip(spec, xw[:, hs:2 * hs] + hr[:, hs:]))
        rh, rbh = r[2 * hs:], rb[2 * hs:]
        if spec.linear_before_reset:
            pre = xw[:, 2 * hs:] + rr * (h @ rh.T + rbh)
        else:
            pre = xw[:, 2 * hs:] + (rr * h) @ rh.T + rbh
        cand = activate(g, _clip(spec, pre))
        return (1.0 - z) * cand + z * h, c
    g, hh = acts[1], acts[2]
    gates = xw + h @ r.T + rb
    pi, po, pf = (np.zeros(hs) for _ in range(3)) if p is None else (p[:hs], p[hs:2 * hs], p[2 * hs:])
    i = activate(f, _clip(spec, gates[:, :hs] + pi * c))
    if spec.input_forget:
        fg = 1.0 - i
    else:
        fg = activate(f, _clip(spec, gates[:, 2 * hs:3 * hs] + pf * c))
    cand = activate(g, _clip(spec, gates[:, 3 * hs:]))
    c_new = fg * c + i * cand
    o = activate(f, _clip(spec, gates[:, hs:2 * hs] + po * c_new))
    return o * activate(hh, c_new), c_new


def _recurrent(node: Node, xs: list) -> list:
    spec = rnn_spec(node)
    x, w, r = (np.asarray(v, dtype=np.float64) for v in xs[:3])
    opt = list(xs[3:8]) + [None] * (8 - len(xs))
    b, seq_lens, init_h, init_c, peep = opt[:5]
    if spec.layout:
        x = x.transpose(1, 0, 2)
    steps, batch, _ = x.shape
    hs, gh, dirs = spec.hidden, spec.gates * spec.hidden, spec.directions

    def state(value):
        if value is None:
            return np.zeros((dirs, batch, hs))
        value = np.asarray(value, dtype=np.float64)
        return value.transpose(1, 0, 2) if spec.layout else value

    h0, c0 = state(init_h), state(init_c)
    lens = np.full(batch, steps, dtype=np.int64) if seq_lens is None else np.asarray(seq_lens, np.int64)
    if np.any(lens < 0) or np.any(lens > steps):
        raise ValueError(f"sequence_lens {lens.tolist()} outside [0, {steps}]")
    y = np.zeros((steps, dirs, batch, hs))
    y_h, y_c = np.zeros((dirs, batch, hs)), np.zeros((dirs, batch, hs))
    for d in range(dirs):
        backwards = d == 1 or spec.reverse_only
        wb = np.zeros(gh) if b is None else np.asarray(b[d, :gh], np.float64)
        rb = np.zeros(gh) if b is None else np.asarray(b[d, gh:], np.float64)
        p = None if peep is None else np.asarray(peep[d], np.float64)
        xw = x @ w[d].T + wb  # [steps, batch, gates * hidden], hoisted out of the recurrence
        h, c = h0[d].copy(), c0[d].copy()
        for s in range(steps):
            active = s < lens  # batch entries still running at their s-th step
            t = np.where(backwards, lens - 1 - s, s)
            t = np.clip(t, 0, steps - 1)
            xw_t = xw[t, np.arange(batch)]
            h_new, c_new = _step(spec, spec.activations[d], xw_t, h, c, r[d], rb, p)
            h = np.where(active[:, None], h_new, h)
            c = np.where(active[:, None], c_new, c)
            for bi in np.nonzero(active)[0]:
                y[t[bi], d, bi] = h[bi]
        empty = (lens == 0)[:, None]  # ONNX Runtime: an entry of length 0 ends with zero states
        y_h[d], y_c[d] = np.where(empty, 0.0, h), np.where(empty, 0.0, c)
    if spec.layout:
        y, y_h, y_c = y.transpose(2, 0, 1, 3), y_h.transpose(1, 0, 2), y_c.transpose(1, 0, 2)
    outs = [y, y_h, y_c][:len(node.outputs)]
    return [np.ascontiguousarray(o, dtype=np.float32) for o in outs]


for _op in RNN_OPS:
    register(_op)(_recurrent)


def rnn_flops(spec: RnnSpec, steps: int, batch: int, inputs: int) -> int:
    """Multiply-adds (x2) of the input and recurrent products, plus a few per gate element."""
    gh = spec.gates * spec.hidden
    return spec.directions * steps * batch * (2 * gh * (inputs + spec.hidden) + 8 * gh)


__all__ = ["ACTIVATIONS", "RNN_OPS", "Activation", "RnnSpec", "RnnSpecError", "activate", "rnn_flops",
           "rnn_spec"]

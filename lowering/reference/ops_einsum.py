"""Numpy semantics of Einsum, and the parse of its equation the cpu lowering shares (``einsum_plan``).

ONNX Einsum is numpy's: spaces are ignored, ``...`` stands for the broadcast leading dimensions of each
operand, a label repeated within one operand takes its diagonal, and without ``->`` the output is the
ellipsis dimensions followed by the labels used exactly once, in (ASCII) alphabetical order. Float
operands are summed in float64 and rounded to their type at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Node
from .ops import register


class EinsumError(ValueError):
    """An equation that does not fit its operands (the message says how)."""


@dataclass(frozen=True)
class EinsumPlan:
    """Every label of the equation (ellipsis dimensions are labels ``0``, ``1``, ...) with its size; the
    output labels in order; per operand, its label per dimension."""

    sizes: dict[str | int, int]
    output: tuple[str | int, ...]
    operands: tuple[tuple[str | int, ...], ...]

    @property
    def summed(self) -> tuple[str | int, ...]:
        return tuple(label for label in self.sizes if label not in self.output)


def _terms(term: str, rank: int | None, what: str) -> tuple[list[str | int], int]:
    """The labels of one term; ``rank`` (None for the output) resolves its ellipsis."""
    if term.count("...") > 1 or "." in term.replace("...", ""):
        raise EinsumError(f"{what} '{term}' has a malformed ellipsis")
    head, dots, tail = term.partition("...")
    for c in head + tail:
        if not c.isalpha():
            raise EinsumError(f"{what} '{term}' has the character '{c}', which is not a letter")
    if not dots:
        if rank is not None and len(term) != rank:
            raise EinsumError(f"{what} '{term}' names {len(term)} dimensions of a rank-{rank} operand")
        return list(term), 0
    if rank is None:
        return list(head) + ["..."] + list(tail), 0
    ell = rank - len(head) - len(tail)
    if ell < 0:
        raise EinsumError(f"{what} '{term}' names more dimensions than the operand's {rank}")
    return list(head) + ["..."] * ell + list(tail), ell


def einsum_plan(equation: str, shapes: list[tuple[int, ...]]) -> EinsumPlan:
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise EinsumError(f"equation '{equation}' has {len(terms)} operand terms for {len(shapes)} inputs")
    parsed, ell_rank = [], 0
    for i, (term, shape) in enumerate(zip(terms, shapes)):
        labels, ell = _terms(term, len(shape), f"operand {i} term")
        parsed.append(labels)
        ell_rank = max(ell_rank, ell)
    sizes: dict[str | int, int] = {}
    operands = []
    for labels, shape in zip(parsed, shapes):
        ell = labels.count("...")
        named, k = [], 0
        for label in labels:
            if label == "...":  # ellipsis dimensions align from the right across operands
                named.append(ell_rank - ell + k)
                k += 1
            else:
                named.append(label)
        for label, dim in zip(named, shape):
            old = sizes.get(label)
            if old is not None and old != dim and 1 not in (old, dim):
                raise EinsumError(f"label '{label}' is {old} in one place and {dim} in another")
            sizes[label] = dim if old is None or old == 1 else old
        operands.append(tuple(named))
    ellipsis = tuple(range(ell_rank))
    for e in ellipsis:
        sizes.setdefault(e, 1)
    if arrow:
        out_labels, _ = _terms(rhs, None, "output term")
        output: list[str | int] = []
        for label in out_labels:
            if label == "...":
                output.extend(ellipsis)
            elif label not in sizes:
                raise EinsumError(f"output label '{label}' is not an input label")
            elif label in output:
                raise EinsumError(f"output label '{label}' is repeated")
            else:
                output.append(label)
        if ell_rank and "..." not in out_labels:
            raise EinsumError(f"equation '{equation}' drops the ellipsis dimensions from its output")
    else:
        counts: dict[str, int] = {}
        for labels in parsed:
            for label in labels:
                if label != "...":
                    counts[label] = counts.get(label, 0) + 1
        output = list(ellipsis) + sorted(c for c, n in counts.items() if n == 1)
    order = {label: i for i, label in enumerate(output)}
    sizes = dict(sorted(sizes.items(), key=lambda kv: (order.get(kv[0], len(order)), str(kv[0]))))
    return EinsumPlan(sizes, tuple(output), tuple(operands))


@register("Einsum")
def einsum(node: Node, xs: list) -> list:
    equation = str(node.attr("equation"))
    plan = einsum_plan(equation, [tuple(np.shape(x)) for x in xs])
    letters = iter("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    names: dict[str | int, str] = {}
    for label in plan.sizes:
        names[label] = label if isinstance(label, str) else ""
    free = [c for c in letters if c not in plan.sizes]
    for label in plan.sizes:
        if not names[label]:
            names[label] = free.pop(0)
    spec = ",".join("".join(names[label] for label in labels) for labels in plan.operands)
    spec += "->" + "".join(names[label] for label in plan.output)
    kind = np.result_type(*xs)
    exact = kind.kind in "iub"  # integers and bool as they are; floats (bfloat16 too) in float64
    wide = [np.asarray(x) if exact else np.asarray(x).astype(np.float64) for x in xs]
    out = np.einsum(spec, *wide)
    return [np.asarray(out).astype(kind)]

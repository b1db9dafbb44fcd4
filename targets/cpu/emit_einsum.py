"""Einsum on the cpu target (kernel ``lw_einsum`` in ``kernels_einsum.c``).

The equation is parsed by the reference's own ``einsum_plan`` (``lowering.reference.ops_einsum``); this
turns it into one element stride per operand and label, which is all the kernel reads.
"""

from __future__ import annotations

import math

from lowering.ir import Node
from lowering.reference.ops_einsum import EinsumError, einsum_plan

from .registry import EmitContext, KernelCode, c_longs, register

#: the kernel's fixed bounds (LW_EINSUM_OPS, LW_EINSUM_LABELS in kernels_einsum.c)
MAX_OPERANDS, MAX_LABELS = 8, 16


def _plan(node: Node):
    return einsum_plan(str(node.attr("equation", "")), [tuple(v.type.shape) for v in node.inputs])


def check_einsum(node: Node) -> str | None:
    if not node.inputs or any(v is None for v in node.inputs):
        return "Einsum needs one or more inputs"
    try:
        plan = _plan(node)
    except EinsumError as exc:
        return f"Einsum {exc}"
    if len(node.inputs) > MAX_OPERANDS or len(plan.sizes) > MAX_LABELS:
        return (f"Einsum with {len(node.inputs)} operands and {len(plan.sizes)} labels (the cpu kernel takes "
                f"at most {MAX_OPERANDS} and {MAX_LABELS})")
    want = tuple(plan.sizes[label] for label in plan.output)
    if want != tuple(node.output.type.shape):
        return f"Einsum output shape {list(node.output.type.shape)} is not {list(want)}"
    return None


def _strides(shape: tuple[int, ...], labels, sizes) -> dict:
    """Element stride per label of one operand: dimensions sharing a label add up (the diagonal), a
    broadcast dimension (1 against a larger size) contributes 0."""
    out: dict = {}
    step = 1
    for dim, label in reversed(list(zip(shape, labels))):
        if not (dim == 1 and sizes[label] > 1):
            out[label] = out.get(label, 0) + step
        step *= dim
    return out


@register("Einsum", check=check_einsum)
def emit_einsum(ctx: EmitContext, node: Node) -> KernelCode:
    plan = _plan(node)
    summed = plan.summed
    strides = [_strides(tuple(v.type.shape), labels, plan.sizes)
               for v, labels in zip(node.inputs, plan.operands)]

    def table(labels) -> str:
        pad = [0] * (MAX_LABELS - len(labels))
        rows = [c_longs([s.get(label, 0) for label in labels] + pad) for s in strides]
        rows += [c_longs([0] * MAX_LABELS)] * (MAX_OPERANDS - len(rows))
        return "{" + ", ".join(rows) + "}"

    def sizes(labels) -> str:
        return c_longs([plan.sizes[label] for label in labels] + [1] * (MAX_LABELS - len(labels)))

    out_count = math.prod(plan.sizes[label] for label in plan.output)
    sum_count = math.prod(plan.sizes[label] for label in summed)
    ptrs = ", ".join(ctx.ptr(v) for v in node.inputs)
    body = (f"static const lw_einsum_geom g = {{{len(node.inputs)}, {len(plan.output)}, {len(summed)}, "
            f"{sizes(plan.output)}, {sizes(summed)}, {table(plan.output)}, {table(summed)}}};\n"
            f"const float *const x[{len(node.inputs)}] = {{{ptrs}}};\n"
            f"lw_einsum(ctx->nt, &g, x, {ctx.out(node.output)}, {out_count}, {sum_count});")
    return KernelCode(body, flops=len(node.inputs) * out_count * sum_count)

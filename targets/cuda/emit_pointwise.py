"""Elementwise lowering for the cuda target: one thread per output element.

Single elementwise ops and ``lowering::FusedElementwise`` bodies (the register encoding documented in
``targets/cpu/emit_elementwise.py``: registers 0..n-1 are the inputs, each body op appends one) with float
registers only in this slice: the C expressions are the cpu target's float tables (``FLOAT_UNARY_C``,
``FLOAT_BINARY_C``), whose ``lw_*`` helpers ``kernels_common.cuh`` defines on the device. Broadcasting is
resolved at compile time with the cpu target's ``collapse_broadcast``: each thread splits its output index
into the merged dimensions and reads every input through its strides (scalar constants are literals).
"""

from __future__ import annotations

import re

from lowering.ir import DType, Node, Value
from lowering.opinfo import BODY_OPS, DOMAIN, body_arity, body_param_count, elementwise_params
from targets.cpu.emit_elementwise import (
    FLOAT_BINARY_C,
    FLOAT_UNARY_C,
    POW_BY_CONSTANT,
    collapse_broadcast,
)
from targets.cpu.pack import batchnorm_scale_shift

from .registry import CudaEmitContext, KernelCode, c_float, linear_launch, numel, register

#: body ops with float operands and a float result that the cuda kernels compute
FLOAT_BODY_OPS = frozenset(FLOAT_UNARY_C) | frozenset(FLOAT_BINARY_C) | {"Mod"}


def _body_reason(node: Node, inputs: list[Value], ops: list[str], args: list[int], params: list[float]
                 ) -> str | None:
    unknown = sorted({op for op in ops if op not in FLOAT_BODY_OPS})
    if unknown:
        return f"cuda target: elementwise op(s) {', '.join(unknown)} are not supported (float registers only)"
    for v in list(inputs) + [node.output]:
        if v is None or v.type is None:
            return "a tensor has no static type"
        if v.type.dtype is not DType.FLOAT32:
            return f"'{v.name}' is {v.type.dtype.value}; the cuda target computes float32 tensors only"
    defined, args, params = len(inputs), list(args), list(params)
    for op in ops:
        arity, count = body_arity(op), body_param_count(op)
        if len(args) < arity or len(params) < count:
            return "FusedElementwise body_args/body_params do not match body_ops"
        if any(not 0 <= a < defined for a in args[:arity]):
            return f"FusedElementwise body op {op} reads a register that is not yet defined"
        if op == "Mod" and not params[0]:
            return "Mod of float32 tensors needs fmod=1"
        del args[:arity], params[:count]
        defined += 1
    if args or params:
        return "FusedElementwise body_args/body_params do not match body_ops"
    return None


def _expression(op: str, names: list[str], params: list[float], last_constant) -> str:
    if op == "Mod":
        return f"fmodf({names[0]}, {names[1]})"
    if op == "Pow" and last_constant is not None and float(last_constant) in POW_BY_CONSTANT:
        return POW_BY_CONSTANT[float(last_constant)].format(names[0])
    if op in FLOAT_BINARY_C:
        return FLOAT_BINARY_C[op].format(*names)
    return FLOAT_UNARY_C[op].format(names[0], **{f"p{i}": c_float(x) for i, x in enumerate(params)})


def emit_body(ctx: CudaEmitContext, node: Node, inputs: list[Value], ops: list[str], args: list[int],
              params: list[float]) -> KernelCode:
    """One thread per element of ``node.output`` computing ``ops`` over the broadcast ``inputs``."""
    shape = node.output.type.shape
    total = numel(shape)
    dims, strides = collapse_broadcast(shape, [v.type.shape for v in inputs])
    lines = ["const int i = lw_global_x();", f"if (i >= {total}) return;"]
    y = ctx.write(node.output)
    if len(dims) > 1:
        lines.append("int rem = i;")
        for d in reversed(range(1, len(dims))):
            lines.append(f"const int c{d} = rem % {dims[d]}; rem /= {dims[d]};")
        lines.append("const int c0 = rem;")
    args, params, reg, code = list(args), list(params), len(inputs), []
    constants = {k: v.const.reshape(-1)[0] for k, v in enumerate(inputs) if v.is_const and v.const.size == 1}
    for op in ops:
        arity, count = body_arity(op), body_param_count(op)
        operands, p = args[:arity], params[:count]
        del args[:arity], params[:count]
        expr = _expression(op, [f"r{a}" for a in operands], p, constants.get(operands[-1]))
        code.append(f"const float r{reg} = {expr};")
        reg += 1
    used = {int(r) for r in re.findall(r"\br(\d+)\b", " ".join(code))} | {reg - 1}
    for k, v in enumerate(inputs):
        if k not in used:
            continue  # (a Pow exponent inlined as a product, say)
        if k in constants:
            lines.append(f"const float r{k} = {c_float(constants[k])};")
            continue
        x = ctx.read(v, f"x{k}")
        if len(dims) == 1:
            index = "i" if strides[k][0] else "0"
        else:
            terms = [f"c{d}" if s == 1 else f"c{d} * {s}" for d, s in enumerate(strides[k]) if s]
            index = " + ".join(terms) or "0"
        lines.append(f"const float r{k} = {x}[{index}];")
    lines += code
    lines.append(f"{y}[i] = r{reg - 1};")
    grid, block = linear_launch(total)
    return KernelCode("\n".join(lines), grid, block, flops=total * len(ops))


def check_fused(node: Node) -> str | None:
    ops = list(node.attr("body_ops", ()))
    if not ops:
        return "FusedElementwise has an empty body"
    unknown = [op for op in ops if op not in BODY_OPS]
    if unknown:
        return f"cuda target: FusedElementwise body op {unknown[0]} is not supported"
    return _body_reason(node, list(node.inputs), ops, list(node.attr("body_args", ())),
                        list(node.attr("body_params", ())))


@register(f"{DOMAIN}::FusedElementwise", check=check_fused)
def emit_fused(ctx: CudaEmitContext, node: Node) -> KernelCode:
    return emit_body(ctx, node, list(node.inputs), list(node.attr("body_ops")),
                     list(node.attr("body_args", ())), list(node.attr("body_params", ())))


def standard_body(node: Node):
    """A standard elementwise node as a body (inputs, ops, args, params), None when its parameters are not
    compile-time constants; variadic Min/Max become a chain of binary ops."""
    params = elementwise_params(node)
    if params is None:
        return None
    if node.op in ("Min", "Max"):
        inputs = [v for v in node.inputs if v is not None]
        if len(inputs) == 1:
            return inputs, ["Identity"], [0], []
        chain = [0, 1] + [a for k in range(2, len(inputs)) for a in (len(inputs) + k - 2, k)]
        return inputs, [node.op] * (len(inputs) - 1), chain, []
    arity = body_arity(node.op)
    return list(node.inputs[:arity]), [node.op], list(range(arity)), list(params)


def check_standard(node: Node) -> str | None:
    if node.op not in FLOAT_BODY_OPS:
        return f"cuda target: {node.op} is not supported"
    body = standard_body(node)
    if body is None:
        return f"{node.op} bounds must be compile-time constants (scalars) on the cuda target"
    inputs, ops, args, params = body
    if len(inputs) < body_arity(ops[0]) or any(v is None for v in inputs):
        return f"{node.op} needs {body_arity(ops[0])} inputs"
    return _body_reason(node, inputs, ops, args, params)


@register(*sorted(FLOAT_BODY_OPS - {"Identity"}), check=check_standard)
def emit_standard(ctx: CudaEmitContext, node: Node) -> KernelCode:
    return emit_body(ctx, node, *standard_body(node))


@register(f"{DOMAIN}::Copy")
def emit_copy(ctx: CudaEmitContext, node: Node) -> KernelCode:
    total = numel(node.output.type.shape)
    x, y = ctx.read(node.input(0), "x"), ctx.write(node.output)
    grid, block = linear_launch(total)
    body = f"const int i = lw_global_x();\nif (i >= {total}) return;\n{y}[i] = {x}[i];"
    return KernelCode(body, grid, block)


def check_batchnorm(node: Node) -> str | None:
    if node.attr("training_mode", 0):
        return "BatchNormalization in training mode is not supported by the cuda target"
    if any(v is None or not v.is_const for v in node.inputs[1:5]):
        return "BatchNormalization scale, bias, mean and variance must be constants on the cuda target"
    if node.input(0).type.rank < 2:
        return "BatchNormalization needs an input of rank 2 or more"
    return None


@register("BatchNormalization", check=check_batchnorm, data_inputs=1)
def emit_batchnorm(ctx: CudaEmitContext, node: Node) -> KernelCode:
    shape = node.input(0).type.shape
    scale, shift = batchnorm_scale_shift(*(v.const for v in node.inputs[1:5]), node.attr("epsilon", 1e-5))
    total, channels, plane = numel(shape), shape[1], numel(shape[2:])
    x, y = ctx.read(node.input(0), "x"), ctx.write(node.output)
    s, t = ctx.weights(scale, "scale"), ctx.weights(shift, "shift")
    body = (f"const int i = lw_global_x();\nif (i >= {total}) return;\n"
            f"const int c = (i / {plane}) % {channels};\n{y}[i] = {x}[i] * {s}[c] + {t}[c];")
    grid, block = linear_launch(total)
    return KernelCode(body, grid, block, flops=2 * total)

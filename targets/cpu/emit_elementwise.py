"""Elementwise lowering for the cpu target: one specialised loop nest per node.

Every single elementwise op (Add, Relu, Equal, Where, Cast, ...) and ``lowering::FusedElementwise`` go
through one emitter. The body encoding is the one ``fused_elementwise`` in ``lowering/reference/ops_math.py``
defines: registers 0..n-1 are the node inputs, each op in ``body_ops`` appends a register, reading its
operands' register numbers from ``body_args`` and its float parameters from ``body_params``.

Registers are typed C locals (``float``, ``int64_t``, ..., bool as ``uint8_t`` 0/1, as numpy stores it):
each op's result type is ``opinfo.elementwise_result`` of its operands', so comparisons, logic, IsNaN,
Cast and Where sit in the same loop as the float math around them and a fused mask computation never
writes a bool tensor. The C expression of an op depends on its operand type where C differs from ONNX:
integer division truncates but must not trap on zero (it gives 0, as the reference does), float Min/Max
propagate NaN (as ONNX Runtime does), Abs/Sign on integers avoid the float functions, integer Add/Sub/Mul/Neg
wrap (computed unsigned, as numpy's do; C's signed overflow is undefined). A Pow whose exponent is a scalar
constant 1, 2, 3 or 0.5 becomes a product or a square root (vectorized; powf is not).

Element types: every integer type (int8..int64, uint8..uint64), bool, float32, float64 (double registers,
the double libm functions) and the 16-bit floats float16 and bfloat16, stored as their bit patterns and
computed in float registers: a load widens exactly, each op's result is rounded back to the 16-bit type
(``lw_hround``/``lw_bfround``, round to nearest even), so a fused chain gives numpy's per-op float16 results.

Broadcasting is resolved at compile time: dimensions of size one are dropped, neighbouring dimensions that
every input treats alike are merged, and the innermost merged dimension becomes a unit-stride (or hoisted
scalar) loop gcc vectorizes; the outer dimensions become one parallel loop over rows. Scalar constants are
inlined as exact literals.
"""

from __future__ import annotations

import re

import numpy as np

from lowering.ir import DType, Node, Value
from lowering.opinfo import (
    BODY_OPS,
    DOMAIN,
    FLOAT_DTYPES,
    FLOAT_MAX,
    ONNX_DTYPE_CODES,
    STORED_DTYPES,
    UNSIGNED_DTYPES,
    VARIADIC_OPS,
    body_arity,
    body_param_count,
    elementwise_params,
    elementwise_result,
)

from .emit_nn import check_batchnorm_training, emit_batchnorm_training
from .pack import batchnorm_scale_shift
from .registry import ALL_TYPES, C_TYPES, EmitContext, KernelCode, align, c_double, c_float, numel, register

FLOAT_UNARY_C = {
    "Relu": "lw_relu({0})",
    "LeakyRelu": "lw_leaky({0}, {p0})",
    "Clip": "lw_clip({0}, {p0}, {p1})",
    "Sigmoid": "lw_sigmoid({0})",
    "Tanh": "lw_tanhf({0})",
    "Neg": "-{0}",
    "Abs": "fabsf({0})",
    "Exp": "lw_expf({0})",
    "Sqrt": "sqrtf({0})",
    "Identity": "{0}",
    "Gelu": "lw_gelu({0}, {p0})",
    "Erf": "lw_erff({0})",
    "Reciprocal": "1.0f / {0}",
    "Log": "logf({0})",
    "Floor": "floorf({0})",
    "Ceil": "ceilf({0})",
    "Round": "rintf({0})",
    "Sign": "lw_signf({0})",
    **{op: f"{op.lower()}f({{0}})" for op in ("Cos", "Sin", "Tan", "Acos", "Asin", "Atan", "Cosh", "Sinh",
                                               "Acosh", "Asinh", "Atanh")},
    "Softplus": "({0} > 0.0f ? {0} + log1pf(lw_expf(-{0})) : log1pf(lw_expf({0})))",
    "Softsign": "{0} / (1.0f + fabsf({0}))",
    "HardSwish": "{0} * lw_clip({0} * (1.0f / 6.0f) + 0.5f, 0.0f, 1.0f)",
    "Mish": "{0} * lw_tanhf({0} > 0.0f ? {0} + log1pf(lw_expf(-{0})) : log1pf(lw_expf({0})))",
    "Elu": "({0} >= 0.0f ? {0} : {p0} * expm1f({0}))",
    "Celu": "({0} > 0.0f ? {0} : {p0} * expm1f({0} / {p0}))",
    "ThresholdedRelu": "({0} > {p0} ? {0} : 0.0f)",
    "Swish": "{0} * lw_sigmoid({p0} * {0})",
    "Selu": "{p1} * ({0} > 0.0f ? {0} : {p0} * expm1f({0}))",
    "HardSigmoid": "lw_clip({p0} * {0} + {p1}, 0.0f, 1.0f)",
    "Shrink": "({0} < -{p1} ? {0} + {p0} : {0} > {p1} ? {0} - {p0} : 0.0f)",
}
#: float64: the double libm functions, double literals (``{p0}`` is a double here)
DOUBLE_UNARY_C = {
    "Relu": "({0} < 0.0 ? 0.0 : {0})",
    "LeakyRelu": "({0} >= 0.0 ? {0} : {0} * {p0})",
    "Clip": "lw_clipd({0}, {p0}, {p1})",
    "Sigmoid": "lw_sigmoidd({0})",
    "Tanh": "tanh({0})",
    "Neg": "-{0}",
    "Abs": "fabs({0})",
    "Exp": "exp({0})",
    "Sqrt": "sqrt({0})",
    "Identity": "{0}",
    "Gelu": "lw_geld({0}, {p0})",
    "Erf": "erf({0})",
    "Reciprocal": "1.0 / {0}",
    "Log": "log({0})",
    "Floor": "floor({0})",
    "Ceil": "ceil({0})",
    "Round": "rint({0})",
    "Sign": "lw_signd({0})",
    **{op: f"{op.lower()}({{0}})" for op in ("Cos", "Sin", "Tan", "Acos", "Asin", "Atan", "Cosh", "Sinh",
                                              "Acosh", "Asinh", "Atanh")},
    "Softplus": "({0} > 0.0 ? {0} + log1p(exp(-{0})) : log1p(exp({0})))",
    "Softsign": "{0} / (1.0 + fabs({0}))",
    "HardSwish": "{0} * lw_clipd({0} * (1.0 / 6.0) + 0.5, 0.0, 1.0)",
    "Mish": "{0} * tanh({0} > 0.0 ? {0} + log1p(exp(-{0})) : log1p(exp({0})))",
    "Elu": "({0} >= 0.0 ? {0} : {p0} * expm1({0}))",
    "Celu": "({0} > 0.0 ? {0} : {p0} * expm1({0} / {p0}))",
    "ThresholdedRelu": "({0} > {p0} ? {0} : 0.0)",
    "Swish": "{0} * lw_sigmoidd({p0} * {0})",
    "Selu": "{p1} * ({0} > 0.0 ? {0} : {p0} * expm1({0}))",
    "HardSigmoid": "lw_clipd({p0} * {0} + {p1}, 0.0, 1.0)",
    "Shrink": "({0} < -{p1} ? {0} + {p0} : {0} > {p1} ? {0} - {p0} : 0.0)",
}
INTEGER_UNARY_C = {"Neg": "-{0}", "Abs": "({0} < 0 ? -{0} : {0})", "Sign": "(({0} > 0) - ({0} < 0))",
                   "Identity": "{0}"}
#: unsigned integers: no negative values (Neg wraps, done unsigned below)
UNSIGNED_UNARY_C = {"Neg": "-{0}", "Abs": "{0}", "Sign": "({0} > 0)", "Identity": "{0}"}
FLOAT_BINARY_C = {"Add": "{0} + {1}", "Sub": "{0} - {1}", "Mul": "{0} * {1}", "Div": "{0} / {1}",
                  "Min": "lw_minf({0}, {1})", "Max": "lw_maxf({0}, {1})", "Pow": "powf({0}, (float){1})",
                  "PRelu": "({0} < 0 ? {0} * {1} : {0})"}
DOUBLE_BINARY_C = {**FLOAT_BINARY_C, "Min": "lw_mind({0}, {1})", "Max": "lw_maxd({0}, {1})",
                   "Pow": "pow({0}, (double){1})"}
INTEGER_BINARY_C = {**FLOAT_BINARY_C, "Div": "({1} != 0 ? {0} / {1} : 0)", "Min": "({0} < {1} ? {0} : {1})",
                    "Max": "({0} > {1} ? {0} : {1})"}
#: integer ops that wrap in ONNX (numpy): computed in the unsigned type of the operands' width, so a signed
#: overflow is the two's complement wraparound, not undefined behaviour, and 16-bit operands (promoted to
#: int by C) cannot overflow int either
WRAPPING_OPS = {"Add": "{0} + {1}", "Sub": "{0} - {1}", "Mul": "{0} * {1}", "Neg": "0 - {0}"}
#: signed types whose MIN / -1 and MIN % -1 trap in C (narrower ones are promoted to int first)
TRAPPING_DTYPES = (DType.INT32, DType.INT64)
#: a 16-bit float op whose float result is already a value of its type needs no rounding
EXACT_HALF_OPS = frozenset({"Identity", "Neg", "Abs", "Relu", "Min", "Max", "Where", "Sign", "Floor", "Ceil",
                            "Round"})
TYPED_C = {
    "Equal": "{0} == {1}", "Less": "{0} < {1}", "LessOrEqual": "{0} <= {1}", "Greater": "{0} > {1}",
    "GreaterOrEqual": "{0} >= {1}", "And": "{0} & {1}", "Or": "{0} | {1}", "Xor": "{0} ^ {1}", "Not": "!{0}",
    "IsNaN": "{0} != {0}", "Where": "{0} ? {1} : {2}",
    "BitwiseAnd": "{0} & {1}", "BitwiseOr": "{0} | {1}", "BitwiseXor": "{0} ^ {1}", "BitwiseNot": "~{0}",
}
#: the unsigned type of the same width (a left shift is done unsigned: no overflow, the bits wrap)
UNSIGNED_C = {DType.INT8: "uint8_t", DType.UINT8: "uint8_t", DType.INT16: "uint16_t",
              DType.UINT16: "uint16_t", DType.INT32: "uint32_t", DType.UINT32: "uint32_t",
              DType.INT64: "uint64_t", DType.UINT64: "uint64_t"}
#: the unsigned type arithmetic on each integer type wraps in (at least unsigned int: no promotion to int)
WRAP_C = {**UNSIGNED_C, DType.INT8: "uint32_t", DType.UINT8: "uint32_t", DType.INT16: "uint32_t",
          DType.UINT16: "uint32_t"}
#: Pow by these constant exponents, without powf (x^0.5 is sqrt but for -inf and -0, as powf has it)
POW_BY_CONSTANT = {1.0: "{0}", 2.0: "{0} * {0}", 3.0: "{0} * {0} * {0}", 0.5: "lw_pow_half({0})"}
POW_HALF_DOUBLE = "lw_pow_halfd({0})"
#: the C type a register of each element type is computed in (float16 in float; the rest as stored)
REGISTER_C = {**C_TYPES, DType.FLOAT16: "float", DType.BFLOAT16: "float"}
#: how a stored element becomes a register value, and a register value a stored element
LOAD_C = {DType.FLOAT16: "lw_h2f({0})", DType.BFLOAT16: "lw_bf2f({0})"}
STORE_C = {DType.FLOAT16: "lw_f2h({0})", DType.BFLOAT16: "lw_f2bf({0})"}
#: the rounding of a float to each 16-bit float type (as a float)
ROUND_C = {DType.FLOAT16: "lw_hround({0})", DType.BFLOAT16: "lw_bfround({0})"}
ROW_CHUNK = 8192  # elements per parallel task when the inner dimension is long
PARALLEL_MIN = 32768  # elements below which a loop runs on one thread


def collapse_broadcast(out_shape: tuple[int, ...], in_shapes: list[tuple[int, ...]]):
    """Merged loop dims over the output and, per input, the element stride along each (0: broadcast)."""
    rank = len(out_shape)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in in_shapes]
    dims: list[int] = []
    flags: list[tuple[bool, ...]] = []
    for d in range(rank):
        if out_shape[d] == 1:
            continue
        full = tuple(p[d] != 1 for p in padded)
        if dims and flags[-1] == full:
            dims[-1] *= out_shape[d]
        else:
            dims.append(out_shape[d])
            flags.append(full)
    if not dims:
        dims, flags = [1], [tuple(True for _ in in_shapes)]
    strides = []
    for i in range(len(in_shapes)):
        step, per_dim = 1, [0] * len(dims)
        for d in reversed(range(len(dims))):
            if flags[d][i]:
                per_dim[d] = step
                step *= dims[d]
        strides.append(per_dim)
    return dims, strides


def c_scalar(value, dtype: DType) -> str:
    """An exact C literal of a scalar of ``dtype`` (a float16 one as the float its register holds)."""
    if dtype in (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16):
        return c_float(value)
    if dtype is DType.FLOAT64:
        return c_double(value)
    v = int(value)
    if dtype is DType.INT64:
        return "INT64_MIN" if v == -(1 << 63) else f"INT64_C({v})"
    if dtype is DType.UINT64:
        return f"UINT64_C({v})"
    if dtype is DType.UINT32:
        return f"{v}u"
    return "INT32_MIN" if v == -(1 << 31) else str(v)


def register_types(inputs: list[DType], ops: list[str], args: list[int], params: list[float]
                   ) -> list[DType] | str:
    """The element type of every register of a body, or why the body is not well typed."""
    types, args, params = list(inputs), list(args), list(params)
    for op in ops:
        arity, count = body_arity(op), body_param_count(op)
        if len(args) < arity or len(params) < count:
            return "FusedElementwise body_args/body_params do not match body_ops"
        operands = args[:arity]
        if any(not 0 <= a < len(types) for a in operands):
            return f"FusedElementwise body op {op} reads register {max(operands)}, which is not yet defined"
        result = elementwise_result(op, [types[a] for a in operands], tuple(params[:count]))
        if isinstance(result, str):
            return result
        types.append(result)
        del args[:arity], params[:count]
    if args or params:
        return "FusedElementwise body_args/body_params do not match body_ops"
    return types


def emit_body(
    ctx: EmitContext, node: Node, inputs: list[Value], ops: list[str], args: list[int], params: list[float]
) -> KernelCode:
    """The loop nest computing ``ops`` over broadcast ``inputs`` into ``node.output``."""
    out = node.output
    shape = out.type.shape
    if numel(shape) == 0:
        return KernelCode("(void)ctx;")
    types = register_types([v.type.dtype for v in inputs], ops, args, params)
    dims, strides = collapse_broadcast(shape, [v.type.shape for v in inputs])
    inner, outer = dims[-1], dims[:-1]
    rows = numel(outer)
    chunk = inner if inner <= 2 * ROW_CHUNK else ROW_CHUNK
    chunks = -(-inner // chunk)
    lines = [f"{C_TYPES[out.type.dtype]} *y = {ctx.out(out)};"]
    loads, hoisted, constants = [], [], {}
    for i, v in enumerate(inputs):
        ctype, rtype = C_TYPES[v.type.dtype], REGISTER_C[v.type.dtype]
        load = LOAD_C.get(v.type.dtype, "{0}")
        if v.is_const and v.const.size == 1:
            constants[i] = v.const.reshape(-1)[0]
            loads.append(f"const {rtype} r{i} = {c_scalar(constants[i], v.type.dtype)};")
            continue
        lines.append(f"const {ctype} *x{i} = {ctx.ptr(v)};")
        if strides[i][-1]:
            loads.append(f"const {rtype} r{i} = {load.format(f'x{i}r[j]')};")
        else:
            hoisted.append(f"const {rtype} r{i} = {load.format(f'x{i}r[0]')};")
    task = [
        f"const long row = t / {chunks}, j0 = (t % {chunks}) * {chunk};",
        f"const long j1 = j0 + {chunk} < {inner} ? j0 + {chunk} : {inner};",
    ]
    if outer:
        task.append("long rem = row;")
        for d in reversed(range(len(outer))):
            task.append(f"const long c{d} = rem % {outer[d]}; rem /= {outer[d]};")
    for i, v in enumerate(inputs):
        if i not in constants:
            offset = " + ".join(f"c{d} * {strides[i][d]}" for d in range(len(outer)) if strides[i][d]) or "0"
            task.append(f"const {C_TYPES[v.type.dtype]} *x{i}r = x{i} + {offset};")
    task.append(f"{C_TYPES[out.type.dtype]} *yr = y + row * {inner};")
    task += hoisted
    code = _register_code(types, ops, args, params, constants)
    used = set(re.findall(r"\br\d+\b", " ".join(code))) | {f"r{len(types) - 1}"}
    body = [line for line in loads if line.split(" = ")[0].split()[-1] in used] + code
    task.append("for (long j = j0; j < j1; j++) {")
    store = STORE_C.get(out.type.dtype, "{0}").format(f"r{len(types) - 1}")
    task += ["    " + line for line in body] + [f"    yr[j] = {store};", "}"]
    tasks = rows * chunks
    if numel(shape) >= PARALLEL_MIN and tasks > 1:
        lines.append("#pragma omp parallel for num_threads(ctx->nt) schedule(static) if (ctx->nt > 1)")
    lines.append(f"for (long t = 0; t < {tasks}; t++) {{")
    lines += ["    " + line for line in task] + ["}"]
    return KernelCode("\n".join(lines), flops=numel(shape) * len(ops))


def _register_code(types: list[DType], ops: list[str], args: list[int], params: list[float],
                   constants: dict) -> list[str]:
    """One ``const T rK = expr;`` line per body op (``types`` from ``register_types``)."""
    args, params = list(args), list(params)
    code, reg = [], len(types) - len(ops)
    for op in ops:
        arity, count = body_arity(op), body_param_count(op)
        operands, p = args[:arity], params[:count]
        del args[:arity], params[:count]
        expr = _expression(op, [types[a] for a in operands], [f"r{a}" for a in operands], p,
                           constants.get(operands[-1]))
        if types[reg] in ROUND_C and op not in EXACT_HALF_OPS and op != "Cast":
            expr = ROUND_C[types[reg]].format(expr)  # computed in float, rounded as each 16-bit float op is
        code.append(f"const {REGISTER_C[types[reg]]} r{reg} = {expr};")
        reg += 1
    return code


def _expression(op: str, dtypes: list[DType], names: list[str], params: list[float], last_constant) -> str:
    """The C expression of one body op on registers ``names`` of ``dtypes`` (``last_constant``: the value
    of the last operand when it is a scalar constant)."""
    is_float = dtypes[0] in FLOAT_DTYPES
    double = dtypes[0] is DType.FLOAT64
    if op == "Cast":
        return _cast(dtypes[0], ONNX_DTYPE_CODES[int(params[0])], names[0])
    if op == "IsInf":
        tests = [f"{names[0]} == INFINITY"] * bool(params[0]) + [f"{names[0]} == -INFINITY"] * bool(params[1])
        return " || ".join(tests) or "0"
    if op == "Mod":  # fmod=1: C's remainder (fmodf for floats); fmod=0: the divisor's sign
        a, b = names
        if is_float:
            return (f"fmod({a}, {b})" if params[0] else f"lw_fmod0d({a}, {b})") if double else \
                (f"fmodf({a}, {b})" if params[0] else f"lw_fmod0f({a}, {b})")
        if dtypes[0] in TRAPPING_DTYPES:  # MIN % -1 traps in C; any x % -1 is 0
            b = f"({b} == -1 ? 1 : {b})"
        if params[0] or dtypes[0] in UNSIGNED_DTYPES:  # unsigned: both definitions agree
            return f"({b} != 0 ? {a} % {b} : 0)"
        return f"lw_imod({a}, {b})"
    if op == "BitShift":
        a, b = names
        ctype, bits = C_TYPES[dtypes[0]], dtypes[0].itemsize * 8
        out_of_range = f"((int64_t){b} < 0 || (int64_t){b} >= {bits})"
        if params[0]:  # RIGHT: >> is arithmetic on gcc's signed types; -1 fill for a negative value
            return f"({ctype})({out_of_range} ? ({a} < 0 ? -1 : 0) : {a} >> {b})"
        unsigned = UNSIGNED_C[dtypes[0]]
        return f"({ctype})({out_of_range} ? 0 : ({unsigned})(({unsigned}){a} << {b}))"
    if op == "Pow" and last_constant is not None and float(last_constant) in POW_BY_CONSTANT \
            and (is_float or float(last_constant) != 0.5):
        if double and float(last_constant) == 0.5:
            return POW_HALF_DOUBLE.format(names[0])
        return POW_BY_CONSTANT[float(last_constant)].format(names[0])
    if op == "Pow" and not is_float:  # an integer base: pow in double, truncated to the base's type
        return f"({C_TYPES[dtypes[0]]})pow((double){names[0]}, (double){names[1]})"
    if op in TYPED_C:
        return TYPED_C[op].format(*names)
    if not is_float and op in WRAPPING_OPS:  # wraps in the type, as numpy does
        wide = WRAP_C[dtypes[0]]
        return f"({C_TYPES[dtypes[0]]})(" + WRAPPING_OPS[op].format(*(f"({wide}){n}" for n in names)) + ")"
    if op == "Div" and dtypes[0] in TRAPPING_DTYPES:  # MIN / -1 traps in C; numpy wraps (-x, unsigned)
        a, b = names
        negated = f"({C_TYPES[dtypes[0]]})(0 - ({WRAP_C[dtypes[0]]}){a})"
        return f"({b} == -1 ? {negated} : {b} != 0 ? {a} / {b} : 0)"
    if op in FLOAT_BINARY_C:
        table = DOUBLE_BINARY_C if double else FLOAT_BINARY_C if is_float else INTEGER_BINARY_C
        return table[op].format(*names)
    if double:
        literals = {f"p{i}": _double_param(x) for i, x in enumerate(params)}
        return DOUBLE_UNARY_C[op].format(names[0], **literals)
    table = FLOAT_UNARY_C if is_float else \
        UNSIGNED_UNARY_C if dtypes[0] in UNSIGNED_DTYPES else INTEGER_UNARY_C
    return table[op].format(names[0], **{f"p{i}": c_float(x) for i, x in enumerate(params)})


def _double_param(x: float) -> str:
    """A float parameter as a double literal; Clip's absent bounds (+-FLT_MAX) become +-DBL_MAX."""
    if abs(x) == FLOAT_MAX:
        return "DBL_MAX" if x > 0 else "(-DBL_MAX)"
    return c_double(x)


def _cast(source: DType, to: DType, name: str) -> str:
    """The C expression of a Cast of register ``name`` (of ``source``) to ``to`` (a register value)."""
    if to is DType.BOOL:
        return f"{name} != 0"
    if to is source:
        return name
    if to is DType.FLOAT16:
        if source is DType.FLOAT64:  # rounded once, from the double
            return f"lw_h2f(lw_d2h({name}))"
        return f"lw_hround((float){name})"  # ints above 2^24 are far beyond float16's range (inf) anyway
    if to is DType.BFLOAT16:  # through float, as ml_dtypes converts a double
        return f"lw_bfround((float){name})"
    return f"({REGISTER_C[to]}){name}"


def _body_types_reason(node: Node, inputs: list[Value], ops, args, params) -> str | None:
    """Why the cpu target cannot compute this body over these inputs into ``node.output``, or None."""
    for v in list(inputs) + [node.output]:
        if v is None or v.type is None:
            return "a tensor has no static type"
        if v.type.dtype not in STORED_DTYPES:
            return f"'{v.name}' is {v.type.dtype.value}, which the cpu elementwise kernels do not compute"
    types = register_types([v.type.dtype for v in inputs], ops, args, params)
    if isinstance(types, str):
        return types
    if types[-1] is not node.output.type.dtype:
        return (f"the body computes {types[-1].value} but the output '{node.output.name}' is "
                f"{node.output.type.dtype.value}")
    return None


def check_fused(node: Node) -> str | None:
    ops = list(node.attr("body_ops", ()))
    if not ops:
        return "FusedElementwise has an empty body"
    unknown = [op for op in ops if op not in BODY_OPS]
    if unknown:
        return f"FusedElementwise body op {unknown[0]} is not supported by the cpu target"
    return _body_types_reason(node, list(node.inputs), ops, list(node.attr("body_args", ())),
                              list(node.attr("body_params", ())))


@register(f"{DOMAIN}::FusedElementwise", check=check_fused, dtypes=None)
def emit_fused(ctx: EmitContext, node: Node) -> KernelCode:
    return emit_body(
        ctx,
        node,
        list(node.inputs),
        list(node.attr("body_ops")),
        list(node.attr("body_args", ())),
        list(node.attr("body_params", ())),
    )


def standard_body(node: Node) -> tuple[list[Value], list[str], list[int], list[float]] | None:
    """A standard elementwise node as a body: (inputs, ops, args, params); None when its parameters are not
    compile-time constants. Variadic Min/Max become a chain of binary ops."""
    if node.op in VARIADIC_OPS:  # Sum: a chain of Add; Mean: then a Div by the count (an inlined constant)
        inputs = [v for v in node.inputs if v is not None]
        n = len(inputs)
        if node.op == "Mean" and inputs[0].type is not None:
            inputs.append(Value(f"{node.name}_count", const=np.array(n, inputs[0].type.dtype.numpy)))
        m = len(inputs)  # body registers m, m + 1, ... are the ops' results
        ops, args = (["Add"] * (n - 1), [0, 1] + [a for k in range(2, n) for a in (m + k - 2, k)]) if n > 1 \
            else (["Identity"], [0])
        if m > n:
            ops, args = ops + ["Div"], args + [m + len(ops) - 1, n]
        return inputs, ops, args, []
    params = elementwise_params(node)
    x = node.input(0)
    if node.op == "Clip" and (params is None or (x is not None and x.type is not None
                                                 and x.type.dtype is not DType.FLOAT32)):
        # bounds computed at run time, or integer data: Max with the lower bound, then Min with the upper
        bounds = [(op, node.input(i)) for i, op in ((1, "Max"), (2, "Min"))]
        if x is not None and x.type is not None and x.type.dtype is DType.FLOAT32:  # absent: +-FLT_MAX
            bounds = [(op, v if v is not None else Value(f"{node.name}_{op.lower()}", const=np.float32(
                FLOAT_MAX if op == "Min" else -FLOAT_MAX).reshape(()))) for op, v in bounds]
        bounds = [(op, v) for op, v in bounds if v is not None]
        if not bounds:
            return [x], ["Identity"], [0], []
        n = len(bounds) + 1  # registers: x, the bounds, then each op's result
        args = [a for j in range(len(bounds)) for a in (0 if j == 0 else n + j - 1, j + 1)]
        return [x] + [v for _, v in bounds], [op for op, _ in bounds], args, []
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
    body = standard_body(node)
    if body is None:
        return f"{node.op} bounds must be compile-time constants (scalars) on the cpu target"
    inputs, ops, args, params = body
    if len(inputs) < body_arity(ops[0]) or any(v is None for v in inputs):
        return f"{node.op} needs {body_arity(ops[0])} inputs"
    return _body_types_reason(node, inputs, ops, args, params)


@register(*sorted(BODY_OPS - {"Identity"} | VARIADIC_OPS), check=check_standard, dtypes=None)
def emit_standard(ctx: EmitContext, node: Node) -> KernelCode:
    return emit_body(ctx, node, *standard_body(node))


@register(f"{DOMAIN}::Copy", dtypes=ALL_TYPES)
def emit_copy(ctx: EmitContext, node: Node) -> KernelCode:
    n = numel(node.output.type.shape) * node.output.type.dtype.itemsize
    return KernelCode(f"lw_copy(ctx->nt, {ctx.out(node.output)}, {ctx.ptr(node.input(0))}, {n});")


def check_batchnorm(node: Node) -> str | None:
    if node.attr("training_mode", 0):  # batch statistics and running-statistics outputs: emit_nn.py
        return check_batchnorm_training(node)
    graph_outputs = {id(v) for v in node.graph.outputs} if node.graph is not None else set()
    if any(v is not None and (v.uses() or id(v) in graph_outputs) for v in node.outputs[1:]):
        return "BatchNormalization outputs 1 and 2 are computed in training mode only"
    params = node.inputs[1:5]
    if len(params) < 4 or any(v is None or v.type is None or v.type.dtype is not DType.FLOAT32
                              for v in params):
        return "BatchNormalization needs float32 scale, bias, mean and variance"
    if node.input(0).type.rank < 2:
        return "BatchNormalization needs an input of rank 2 or more"
    return None


@register("BatchNormalization", check=check_batchnorm, data_inputs=1, outputs=3)
def emit_batchnorm(ctx: EmitContext, node: Node) -> KernelCode:
    if node.attr("training_mode", 0):
        return emit_batchnorm_training(ctx, node)
    shape = node.input(0).type.shape
    n, c, p = shape[0], shape[1], numel(shape[2:])
    eps = node.attr("epsilon", 1e-5)
    prologue, workspace = "", 0
    if all(v.is_const for v in node.inputs[1:5]):
        scale, shift = batchnorm_scale_shift(*(v.const for v in node.inputs[1:5]), eps)
        scale, shift = ctx.weights(scale), ctx.weights(shift)
    else:  # parameters computed at run time: the same float32 arithmetic as batchnorm_scale_shift
        s, b, m, v = (ctx.ptr(x) for x in node.inputs[1:5])
        prologue = (f"float *sc = (float *)ctx->ws, *sh = sc + {c};\n"
                    f"for (long i = 0; i < {c}; i++) {{\n"
                    f"    sc[i] = {s}[i] / sqrtf({v}[i] + {c_float(eps)});\n"
                    f"    sh[i] = {b}[i] - {m}[i] * sc[i];\n"
                    "}\n")
        scale, shift, workspace = "sc", "sh", align(8 * c)
    body = prologue + (
        f"lw_scale_shift(ctx->nt, {ctx.ptr(node.input(0))}, {ctx.out(node.output)}, {n}, {c}, {p}, "
        f"{scale}, {shift});"
    )
    return KernelCode(body, flops=2 * numel(shape), workspace=workspace)

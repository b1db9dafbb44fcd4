"""Conv / lowering::FusedConv whose weights are run-time tensors, for the cpu target.

The constant-weight convolutions (``emit_linear``) pack their weights at compile time. When the weights
are a graph input or computed in the graph (QLinearConv's dequantized weights once QLinearConv is
expanded to QDQ form, the ONNX function body of CausalConvWithState), nothing can be packed ahead:
``lw_conv_rt`` (``kernels_conv_runtime.c``) im2col's each image straight into the GEMM's packed B panels
and runs one ``lw_gemm`` batch over the groups, reading the weight tensor in place as the A operand (the
GEMM reads a runtime A through its strides at the packed speed, so the weights need no packing pass).
Bias (constant or run-time), residual and activation are the GEMM's epilogue. Convolutions with one
input channel per group (depthwise, the causal convolutions of sequence models) run a direct loop
instead (``lw_conv_rt_dw``): their GEMM would have one row. 1-D, 2-D and 3-D, any groups, strides,
dilations, pads and auto_pad.

``emit_linear.check_conv`` / ``emit_conv`` dispatch here when input 1 is not a constant.
"""

from __future__ import annotations

from lowering.ir import Node
from lowering.opinfo import DOMAIN, window_geometry

from .emit_linear import check_activation, conv_residual_strides, epilogue
from .registry import EmitContext, KernelCode, align, numel

ITEM_BYTES = 64  # upper bound of sizeof(lw_gemm_item)
#: the spatial ranks lw_rconv_geom holds
MAX_SPATIAL = 3


def rconv_geometry(node: Node) -> tuple[list[int], int]:
    """The fields of ``lw_rconv_geom`` (spatial axes lifted to 3, leading ones of size 1) and the
    multiply-accumulates per image."""
    xs, ws = node.input(0).type.shape, node.input(1).type.shape
    geo = window_geometry(node, tuple(xs[2:]), tuple(ws[2:]))
    lift = MAX_SPATIAL - (len(xs) - 2)

    def axes(values, fill: int) -> list[int]:
        return [fill] * lift + [int(v) for v in values]

    group = int(node.attr("group", 1))
    fields = [xs[0], xs[1], ws[0], group]
    fields += axes(xs[2:], 1) + axes(ws[2:], 1) + axes(geo.strides, 1) + axes(geo.dilations, 1)
    fields += axes(geo.pads_begin, 0) + axes(geo.out, 1)
    macs = ws[0] * numel(geo.out) * (xs[1] // group) * numel(ws[2:])
    return [int(f) for f in fields], macs


def c_rconv_geom(fields: list[int]) -> str:
    """A C initializer of lw_rconv_geom."""
    head = ", ".join(str(f) for f in fields[:4])
    arrays = ", ".join(
        "{" + ", ".join(str(f) for f in fields[4 + 3 * i: 7 + 3 * i]) + "}" for i in range(6)
    )
    return f"{{{head}, {arrays}}}"


def check_spatial_rank(node: Node) -> str | None:
    x = node.input(0)
    if x.type.rank not in (3, 4, 5):
        return (
            f"only 1-D, 2-D and 3-D convolutions (3-D to 5-D tensors) are supported by the cpu target, got "
            f"a rank-{x.type.rank} input"
        )
    return None


def check_conv_runtime(node: Node) -> str | None:
    """Why a float conv whose weights are not a constant cannot run on the cpu target (None: it can)."""
    reason = check_spatial_rank(node)
    if reason:
        return reason
    x, w = node.input(0), node.input(1)
    group = int(node.attr("group", 1))
    if w.type.rank != x.type.rank or x.type.shape[1] != w.type.shape[1] * group or w.type.shape[0] % group:
        return (
            f"weight '{w.name}' of shape {w.type.shape} does not fit input '{x.name}' of shape "
            f"{x.type.shape} with group={group}"
        )
    b = node.input(2)
    if b is not None and numel(b.type.shape) != w.type.shape[0]:
        return f"bias '{b.name}' of shape {b.type.shape} is not one value per output channel"
    r = node.input(3) if node.domain == DOMAIN else None
    if r is not None and conv_residual_strides(r.type.shape, node.output.type.shape) is None:
        return f"residual shape {r.type.shape} broadcasts over only some spatial axes; unsupported on cpu"
    return check_activation(node)


def emit_conv_runtime(ctx: EmitContext, node: Node) -> KernelCode:
    """The kernel of a (Fused)Conv with run-time weights (see the module docstring)."""
    fields, macs = rconv_geometry(node)
    n, c, m, g = fields[:4]
    out, bias = node.output, node.input(2)
    res = node.input(3) if node.domain == DOMAIN else None
    ns, rs, cs = conv_residual_strides(res.type.shape, out.type.shape) if res is not None else (0, 0, 0)
    epi = epilogue(node, bias=(1, 0), res=(rs, cs))
    kg = c // g * numel(fields[7:10])
    positions = numel(fields[19:22])
    panels = -(-positions // ctx.isa.nr)
    depthwise = c // g == 1 and g > 1  # lw_conv_rt_dw: direct, no workspace
    workspace = 0 if depthwise else align(g * ITEM_BYTES) + g * panels * kg * ctx.isa.nr * 4
    body = "\n".join([
        f"static const lw_rconv_geom g = {c_rconv_geom(fields)};",
        f"const lw_epilogue e = {epi};",
        f"lw_conv_rt(ctx->nt, &g, {ctx.ptr(node.input(0))}, {ctx.ptr(node.input(1))}, {ctx.opt_ptr(bias)}, "
        f"{ctx.opt_ptr(res)}, {ns}, {ctx.out(out)}, ctx->ws, &e);",
    ])
    return KernelCode(body, flops=2 * n * macs, workspace=workspace)

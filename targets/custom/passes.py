"""Graph passes of the custom target that decide ACCELERATOR.md C.4 fusion and on-chip residency.

The decisions are node attributes (the nodes keep their semantics: the cpu path and the reference ignore
them), which ``target._build_npu`` honours after re-checking them with :func:`plan_step`:

- ``FuseNpuEpilogues`` (``npu_fuse_epilogues``): a ``lowering::QConv`` whose only consumer is a
  ``lowering::QAdd`` whose other operand is computed before the conv (same NPU step) gets
  ``npu_fuse_add = <add name>`` (the add: ``npu_fused_into = <conv name>``): the add runs in the conv's
  epilogue (skip tile LOAD + EWISE), the conv's output never goes to DRAM.
- ``PlanNpuResidency`` (``npu_residency``): a QConv whose only consumer is the next layer, a QConv that reads
  every input row and column or a pooling layer (``MaxPool``, ``lowering::QAveragePool``: C.4 "pooling after
  conv"), gets ``npu_resident_out = <consumer name>`` when the consumer's padded input region, both layers'
  buffers and the rest fit in UB: the producer's ACT writes the tensor straight into the consumer's UB
  region (pad lines filled with the consumer's pad value: its input zero point, -128 for max pooling) and
  neither STORE nor LOAD is emitted; the pooling layer POOLs from that region and STOREs only its output.
  When a MaxPool's padded input region does not fit (ResNet-18's stem: 64x113x113), the pooling is fused
  per output tile instead (``npu_resident_out`` names the pool all the same): the conv's epilogue writes
  each tile's rows into a pooling slot (carrying the rows the next tile's windows overlap), POOLs them and
  STOREs only the pooled rows (``conv.Epilogue.pool``, ``tiling.pool_tiles``).

``--disable-pass npu_residency`` / ``npu_fuse_epilogues`` (CompileOptions.disabled_passes) switch them off.
"""

from __future__ import annotations

import dataclasses

from lowering.ir import Attr, Graph, Node, NodeMeta, TensorType, Value
from lowering.passmanager import Pass, PassContext, PassResult

FUSE_ATTR, FUSED_INTO, RESIDENT_ATTR = "npu_fuse_add", "npu_fused_into", "npu_resident_out"
QCONV, QADD = "lowering::QConv", "lowering::QAdd"
POOLS = frozenset({"MaxPool", "lowering::QAveragePool"})
FILL_RECORD_LINES = 10


@dataclasses.dataclass
class LayerPlan:
    """How one conv layer is fused (see ``conv.Epilogue``), without the DRAM tensors."""

    add: Node | None = None
    skip_index: int = 1
    in_base: int | None = None
    in_pos: str = ""                 # "bottom" | "top": where the UB-resident input region lies
    in_lines: int = 0
    in_pitch: int = 0                # a resident pooling input: UB lines between its rows
    in_geom: object = None           # a resident pooling input: the region's conv geometry
    out_region: tuple | None = None  # (base line, consumer geometry, pad value)
    out_pos: str = ""
    out_lines: int = 0
    consumer: Node | None = None
    pool: Node | None = None         # a MaxPool fused per output tile (the consumer, absorbed)
    saved_bytes: dict = dataclasses.field(default_factory=dict)

    def own(self, ub_lines: int) -> tuple[int, int]:
        """(first line, lines) of the layer's own UB buffers, between the resident regions."""
        bottom = (self.in_lines if self.in_pos == "bottom" else 0) + \
            (self.out_lines if self.out_pos == "bottom" else 0)
        return bottom, ub_lines - self.in_lines - self.out_lines


def _geom(cfg, node, lp: LayerPlan):
    from .conv import conv_geom

    base, own_lines = lp.own(cfg.ub_lines)
    from .conv import pool_tuple

    return dataclasses.replace(conv_geom(node, cfg), skip=lp.add is not None, in_ub=lp.in_base is not None,
                               out_ub=lp.out_region is not None, ub_lines=own_lines, pool=pool_tuple(lp.pool))


def _feasible(cfg, node, lp: LayerPlan) -> bool:
    from .packing import PB_RECORD_LINES
    from .tiling import search

    g = _geom(cfg, node, lp)
    pb = g.nb * PB_RECORD_LINES + 1 + (FILL_RECORD_LINES if lp.out_region is not None or lp.pool else 0)
    return g.ub_lines > 0 and pb <= cfg.pb_lines and search(cfg, g).plan is not None


def _pool_feasible(cfg, node, lp: LayerPlan) -> bool:
    from .vpu import _pool_geometry

    _, own_lines = lp.own(cfg.ub_lines)
    return own_lines // 2 >= _pool_geometry(node, avg=node.op != "MaxPool").ow


def _consumer_region(cfg, target, c: Node):
    """(region geometry, pad value, row pitch or 0) of consumer ``c``'s resident input, or None."""
    from .conv import conv_geom, region_reason
    from .vpu import pool_region

    if c.qualified_op == QCONV:
        gc, fill, pitch = conv_geom(c, cfg), int(c.attr("x_zero_point", 0)), 0
    elif c.qualified_op in POOLS and target.unsupported_reason(c) is None:
        try:
            gc, fill, pitch = pool_region(c, avg=c.op != "MaxPool", block=cfg.block)
        except ValueError:
            return None
    else:
        return None
    return None if region_reason(gc) is not None else (gc, fill, pitch)


def plan_step(cfg, target, nodes: list[Node], graph_outputs: set, decide_fusion: bool = False,
              decide_residency: bool = False, fusion: bool = True, residency: bool = True) -> dict:
    """Per conv node id: its :class:`LayerPlan`, for the nodes of one NPU step (in order). Annotated decisions
    are honoured when still legal (``decide_*``: every legal candidate is taken, greedily in order)."""
    from .target import _layout_view

    index = {id(n): i for i, n in enumerate(nodes)}
    by_name = {n.name: n for n in nodes if n.name}
    plans: dict[int, LayerPlan] = {}
    absorbed: set[int] = set()
    for conv in nodes if fusion else ():
        if conv.qualified_op != QCONV or not conv.name:
            continue
        uses = conv.output.uses()
        if len(uses) != 1 or id(conv.output) in graph_outputs:
            continue
        add = uses[0].node
        if not decide_fusion and by_name.get(conv.attr(FUSE_ATTR, "")) is not add:
            continue
        if add.qualified_op != QADD or id(add) not in index or index[id(add)] < index[id(conv)] \
                or id(add) in absorbed or target.unsupported_reason(add) is not None:
            continue
        skip_index = 1 - uses[0].index
        skip = add.input(skip_index)
        if skip is None or skip.is_const or skip is conv.output or skip.type is None \
                or tuple(skip.type.shape) != tuple(conv.output.type.shape):
            continue
        if skip.producer is not None and id(skip.producer) in index \
                and index[id(skip.producer)] > index[id(conv)]:
            continue
        lp = LayerPlan(add=add, skip_index=skip_index)
        if not _feasible(cfg, conv, lp):
            continue
        lp.saved_bytes["fused_add"] = 2 * _nbytes(cfg, conv.output)
        plans[id(conv)] = lp
        absorbed.add(id(add))
    layers = [n for n in nodes if not _layout_view(n) and id(n) not in absorbed]
    for p, c in zip(layers, layers[1:]) if residency else ():
        if p.qualified_op != QCONV or not c.name:
            continue
        if not decide_residency and p.attr(RESIDENT_ATTR, "") != c.name:
            continue
        uses = p.output.uses()
        lp_p = plans.get(id(p), LayerPlan())
        if lp_p.add is not None or len(uses) != 1 or uses[0].node is not c or uses[0].index != 0 \
                or id(p.output) in graph_outputs:
            continue
        region = _consumer_region(cfg, target, c)
        if region is None or not _plan_resident(cfg, p, c, region, plans, lp_p):
            _plan_pool_tiles(cfg, target, p, c, plans, lp_p, absorbed)
    return plans


def _plan_pool_tiles(cfg, target, p: Node, c: Node, plans: dict, lp_p: LayerPlan, absorbed: set) -> None:
    """Fuse MaxPool ``c`` into conv ``p``'s epilogue per output tile, if ``p`` can be tiled for it."""
    if c.op != "MaxPool" or c.domain or target.unsupported_reason(c) is not None or id(p) in plans \
            or lp_p.in_base is not None:
        return
    new_p = dataclasses.replace(lp_p, pool=c, consumer=c, saved_bytes=dict(lp_p.saved_bytes))
    try:
        if not _feasible(cfg, p, new_p):
            return
    except ValueError:
        return
    new_p.saved_bytes["pooled_tiles"] = 2 * _nbytes(cfg, p.output) - FILL_RECORD_LINES * cfg.line_bytes
    plans[id(p)] = new_p
    absorbed.add(id(c))


def _plan_resident(cfg, p: Node, c: Node, region, plans: dict, lp_p: LayerPlan) -> bool:
    """Keep conv ``p``'s output in UB as consumer ``c``'s input region, if everything fits."""
    from .conv import region_lines

    gc, fill, pitch = region
    ub = cfg.ub_lines
    size = region_lines(gc)
    pos = "top" if lp_p.in_pos == "bottom" else "bottom"
    base = 0 if pos == "bottom" else ub - size
    new_p = dataclasses.replace(lp_p, out_region=(base, gc, fill), out_pos=pos, out_lines=size,
                                consumer=c, saved_bytes=dict(lp_p.saved_bytes))
    lp_c = plans.get(id(c), LayerPlan())
    new_c = dataclasses.replace(lp_c, in_base=base, in_pos=pos, in_lines=size, in_pitch=pitch,
                                in_geom=gc, saved_bytes=dict(lp_c.saved_bytes))
    consumer_ok = _feasible(cfg, c, new_c) if c.qualified_op == QCONV else _pool_feasible(cfg, c, new_c)
    if not (_feasible(cfg, p, new_p) and consumer_ok):
        return False
    new_p.saved_bytes["resident_out"] = 2 * _nbytes(cfg, p.output) - FILL_RECORD_LINES * cfg.line_bytes
    plans[id(p)], plans[id(c)] = new_p, new_c
    return True


def _nbytes(cfg, value) -> int:
    """Bytes of an activation in the blocked layout."""
    from .builder import Act

    return Act(value.name, value.type.shape, 0, 0, 1.0, cfg.block).nbytes


def _npu_steps(graph: Graph, target):
    from .target import _steps

    outputs = {id(v) for v in graph.outputs}
    return [s for s in _steps(graph, target) if s.kind == "npu"], outputs


def _config(target, ctx: PassContext):
    from .target import accel_config

    cfg = accel_config(dict(ctx.options))
    target.cfg = cfg
    return cfg


class _NpuPlanPass(Pass):
    """Runs :func:`plan_step` on every NPU step with ``plan_options`` and records each layer's decision."""

    plan_options: dict = {}

    def __init__(self, target):
        self.target = target

    def record(self, conv: Node, lp: LayerPlan) -> str | None:
        """Annotate ``conv`` with its decision; return the change's description (None: nothing decided)."""
        raise NotImplementedError

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        cfg = _config(self.target, ctx)
        steps, outputs = _npu_steps(graph, self.target)
        changes = []
        for step in steps:
            plans = plan_step(cfg, self.target, step.nodes, outputs, **self.plan_options)
            for conv in step.nodes:
                lp = plans.get(id(conv))
                change = None if lp is None else self.record(conv, lp)
                if change:
                    changes.append(change)
        return PassResult(bool(changes), changes)


class FuseNpuEpilogues(_NpuPlanPass):
    """Residual-add fusion into the producing conv's epilogue (C.4); see the module docstring."""

    name = "npu_fuse_epilogues"
    plan_options = {"decide_fusion": True, "residency": False}

    def record(self, conv: Node, lp: LayerPlan) -> str | None:
        if lp.add is None:
            return None
        conv.set_attr(FUSE_ATTR, lp.add.name)
        lp.add.set_attr(FUSED_INTO, conv.name)
        return f"conv {conv.name} + add {lp.add.name} fused: saves {lp.saved_bytes['fused_add']} DRAM bytes"


class PlanNpuResidency(_NpuPlanPass):
    """Layer-to-layer UB residency (C.4); see the module docstring."""

    name = "npu_residency"
    plan_options = {"decide_residency": True}

    def record(self, conv: Node, lp: LayerPlan) -> str | None:
        if lp.consumer is None:
            return None
        conv.set_attr(RESIDENT_ATTR, lp.consumer.name)
        if lp.pool is not None:
            return (f"{conv.name} -> {lp.pool.name}: pooled per output tile in UB, only the pooled rows are "
                    f"stored: saves ~{lp.saved_bytes['pooled_tiles']} DRAM bytes")
        return (f"{conv.output.name} ({conv.name} -> {lp.consumer.name}) stays in UB "
                f"[{lp.out_pos}, {lp.out_lines} lines]: saves ~{lp.saved_bytes['resident_out']} DRAM bytes")


class PackNpuTaps(Pass):
    """A conv with few input channels (the stem's RGB) wastes the array's K rows: Cin = 3 uses 3 of 32, and
    every one of its kh*kw taps is a GEMM. When ``Cin*kw`` fits one channel block, this pass moves the kw
    horizontal taps into the channels: the host pads the input horizontally with the zero point and
    concatenates the ``kw`` column-strided slices (channel ``kx*Cin + c`` at column ``x`` is input column
    ``x*sw + kx - pl``), and the conv becomes ``kh x 1`` with stride ``(sh, 1)`` over ``Cin*kw`` channels
    (weights rearranged to match): the same products summed in another order, so bit-exact, with ``kw``
    times fewer GEMMs and, its input no longer padded from 3 to 32 channels per pixel, fewer DRAM bytes.
    ``--disable-pass npu_pack_taps`` keeps the conv as it is."""

    name = "npu_pack_taps"

    def __init__(self, target):
        self.target = target

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        cfg = _config(self.target, ctx)
        changes = []
        for node in list(graph.nodes):
            change = _pack_taps(graph, node, cfg, self.target)
            if change:
                changes.append(change)
        return PassResult(bool(changes), changes)


def _pack_taps(graph: Graph, node: Node, cfg, target) -> str | None:
    import numpy as np

    from .conv import conv_geom

    if node.qualified_op != QCONV or target.unsupported_reason(node) is not None:
        return None
    x, w = node.input(0), node.input(1).const
    g = conv_geom(node, cfg)
    if g.kw < 2 or g.cin * g.kw > cfg.block or g.cin * 2 > cfg.block or x.type.shape[0] != 1:
        return None
    zp = int(node.attr("x_zero_point", 0))
    i8 = x.type.dtype
    src, width = x, g.w
    meta = NodeMeta(sources=tuple(node.meta.sources))
    new_nodes = []
    if g.pl or g.pad_right:
        width = g.pl + g.w + g.pad_right
        pads = graph.constant(np.array([0, 0, 0, g.pl, 0, 0, 0, g.pad_right], np.int64), "npu_pack_pads")
        value = graph.constant(np.array(zp, np.int8), "npu_pack_zp")
        src = Value(graph.unique_name(f"{x.name}_npu_padded"), TensorType(i8, (1, g.cin, g.h, width)))
        new_nodes.append(Node("Pad", [x, pads, value], [src], {}, graph.unique_name(f"{node.name}_pack_pad"),
                              meta=meta))
    slices = []
    for kx in range(g.kw):
        const = {k: graph.constant(np.array([v], np.int64), f"npu_pack_{k}")
                 for k, v in (("starts", kx), ("ends", kx + (g.wo - 1) * g.sw + 1), ("axes", 3),
                              ("steps", g.sw))}
        out = Value(graph.unique_name(f"{x.name}_npu_tap{kx}"), TensorType(i8, (1, g.cin, g.h, g.wo)))
        new_nodes.append(Node("Slice", [src, const["starts"], const["ends"], const["axes"], const["steps"]],
                              [out], {}, graph.unique_name(f"{node.name}_pack_slice{kx}"), meta=meta))
        slices.append(out)
    packed = Value(graph.unique_name(f"{x.name}_npu_packed"), TensorType(i8, (1, g.cin * g.kw, g.h, g.wo)))
    new_nodes.append(Node("Concat", slices, [packed], {"axis": Attr.infer(1)},
                          graph.unique_name(f"{node.name}_pack_concat"), meta=meta))
    cout, cin, kh, kw = w.shape
    w2 = np.ascontiguousarray(w.transpose(0, 3, 1, 2).reshape(cout, kw * cin, kh, 1))
    for n in new_nodes:
        graph.insert_before(node, n)
        target.packing[n.name] = node.name
    node.replace_input(0, packed)
    node.replace_input(1, graph.constant(w2, f"{node.name}_packed_w"))
    node.set_attr("kernel_shape", (g.kh, 1))
    node.set_attr("strides", (g.sh, 1))
    node.set_attr("pads", (g.pt, 0, g.pb, 0))
    node.attrs.pop("auto_pad", None)
    node.set_attr("npu_packed_taps", g.kw)
    return (f"{node.name}: {g.kw} horizontal taps of {g.cin} channels packed into {g.cin * g.kw} channels "
            f"on the host ({g.kh}x1 conv, {g.kw}x fewer GEMMs)")

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

``--disable-pass npu_residency`` / ``npu_fuse_epilogues`` (CompileOptions.disabled_passes) switch them off.
"""

from __future__ import annotations

import dataclasses

from lowering.ir import Graph, Node
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
    saved_bytes: dict = dataclasses.field(default_factory=dict)

    def own(self, ub_lines: int) -> tuple[int, int]:
        """(first line, lines) of the layer's own UB buffers, between the resident regions."""
        bottom = (self.in_lines if self.in_pos == "bottom" else 0) + \
            (self.out_lines if self.out_pos == "bottom" else 0)
        return bottom, ub_lines - self.in_lines - self.out_lines


def _geom(cfg, node, lp: LayerPlan):
    from .conv import conv_geom

    base, own_lines = lp.own(cfg.ub_lines)
    return dataclasses.replace(conv_geom(node, cfg), skip=lp.add is not None, in_ub=lp.in_base is not None,
                               out_ub=lp.out_region is not None, ub_lines=own_lines)


def _feasible(cfg, node, lp: LayerPlan) -> bool:
    from .packing import PB_RECORD_LINES
    from .tiling import search

    g = _geom(cfg, node, lp)
    pb = g.nb * PB_RECORD_LINES + 1 + (FILL_RECORD_LINES if lp.out_region is not None else 0)
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
            gc, fill, pitch = pool_region(c, avg=c.op != "MaxPool")
        except ValueError:
            return None
    else:
        return None
    return None if region_reason(gc) is not None else (gc, fill, pitch)


def plan_step(cfg, target, nodes: list[Node], graph_outputs: set, decide_fusion: bool = False,
              decide_residency: bool = False, fusion: bool = True, residency: bool = True) -> dict:
    """Per conv node id: its :class:`LayerPlan`, for the nodes of one NPU step (in order). Annotated decisions
    are honoured when still legal (``decide_*``: every legal candidate is taken, greedily in order)."""
    from .conv import region_lines
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
    ub = cfg.ub_lines
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
        if region is None:
            continue
        gc, fill, pitch = region
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
            continue
        new_p.saved_bytes["resident_out"] = 2 * _nbytes(cfg, p.output) - FILL_RECORD_LINES * cfg.line_bytes
        plans[id(p)], plans[id(c)] = new_p, new_c
    return plans


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
        return (f"{conv.output.name} ({conv.name} -> {lp.consumer.name}) stays in UB "
                f"[{lp.out_pos}, {lp.out_lines} lines]: saves ~{lp.saved_bytes['resident_out']} DRAM bytes")

"""The custom target: quantized models on the simulated NPU-1 accelerator (ACCELERATOR.md), with the
layers it cannot run compiled by the cpu target (C.5 host fallback).

``CustomTarget.build`` reads the optimized graph IR and returns the artifact members

    custom/config.json          the accelerator configuration the programs are bound to (its hash)
    custom/npu<i>.npu           one NPU-1 program per accelerator segment (runtime/accel/program.py
                                container: instructions, DRAM image, tensor table, debug table, and the
                                compiler's per-layer predictions in its meta)
    custom/host<i>/model.so...  one cpu-target build per host segment (same members as the cpu target)

and the manifest entry ``runtime/backends/custom.py`` executes: the steps in order, each naming the values
it reads and writes (NPU tensors in the B.1 blocked layout, see ``builder.py``; host tensors as plain
arrays). Options read: ``accel_config`` (a preset name or a JSON file; default ``default``) and whatever the
cpu target reads (``isa``, ``cc``) for the host segments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from lowering.errors import LoweringError
from lowering.ir import Graph, Node, Value
from lowering.partition import Partition, Segment
from lowering.passmanager import PassContext, PassManager
from runtime.accel.config import PRESETS, AccelConfig, load_config
from runtime.accel.errors import AccelError

from ..base import Target, TargetBuild
from . import conv, vpu
from .builder import Act, ProgramBuilder

CONFIG = "custom/config.json"
FORMAT = 1

#: NPU op -> (lowering module, function); the lowering is called as f(builder, node, *inputs, output, stats)
_LOWERINGS = {
    "lowering::QConv": (conv, "lower_qconv"),
    "lowering::QMatMul": (conv, "lower_qmatmul"),
    "lowering::QAdd": (vpu, "lower_qadd"),
    "lowering::QMul": (vpu, "lower_qmul"),
    "MaxPool": (vpu, "lower_maxpool"),
    "lowering::QAveragePool": (vpu, "lower_qavgpool"),
    "lowering::QLut": (vpu, "lower_qlut"),
}
#: Ops that keep the blocked layout when they only drop/add unit dimensions (no instructions: an alias)
_LAYOUT_VIEWS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")
#: Ops that make a graph "quantized" for this target (their presence is required)
_INTEGER_OPS = ("lowering::QConv", "lowering::QMatMul", "lowering::QAdd", "lowering::QMul",
                "lowering::QAveragePool", "lowering::QLut")
_OUT_ZP = {"lowering::QConv": "out_zero_point", "lowering::QMatMul": "out_zero_point",
           "lowering::QAdd": "out_zero_point", "lowering::QMul": "out_zero_point",
           "lowering::QAveragePool": "out_zero_point"}
_IN_ZP = {"lowering::QConv": ("x_zero_point",), "lowering::QMatMul": ("a_zero_point", "b_zero_point"),
          "lowering::QAdd": ("a_zero_point", "b_zero_point"),
          "lowering::QMul": ("a_zero_point", "b_zero_point"),
          "lowering::QAveragePool": ("x_zero_point",)}


def accel_config(options: dict) -> AccelConfig:
    """The accelerator configuration named by ``options["accel_config"]`` (a preset or a JSON file)."""
    spec = options.get("accel_config") or "default"
    try:
        if spec in PRESETS:
            return load_config(preset_name=spec)
        if not Path(spec).is_file():
            raise LoweringError(f"--accel-config {spec}: not a preset ({', '.join(sorted(PRESETS))}) "
                                f"nor a JSON file")
        return load_config(spec)
    except AccelError as exc:
        raise LoweringError(f"--accel-config {spec}: {exc}") from None


def _layout_view(node: Node) -> bool:
    """A view op whose input and output have the same blocked bytes: only unit dims move (batch 1)."""
    if node.domain or node.op not in _LAYOUT_VIEWS or node.output.type is None or node.input(0).type is None:
        return False
    src, dst = node.input(0).type.shape, node.output.type.shape
    if node.input(0).type.dtype.value != "int8":
        return False
    return _as4(src) is not None and _as4(src) == _as4(dst)


def _as4(shape) -> tuple | None:
    """The 4-D blocked shape a logical shape is stored as (see builder.Act), or None if not storable."""
    shape = tuple(shape)
    if len(shape) == 4:
        return shape if shape[0] == 1 else None
    if len(shape) == 2:
        return (1, shape[1], shape[0], 1)
    return None


@dataclass
class Step:
    kind: str                       # "npu" | "host"
    nodes: list[Node] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    name: str = ""


class CustomTarget(Target):
    """NPU-1: int8 layers on the simulated accelerator, the rest on the host cpu target."""

    name: ClassVar[str] = "custom"

    def __init__(self, cfg: AccelConfig | None = None):
        self.cfg = cfg or load_config(preset_name="default")
        self.packing: dict[str, str] = {}      # host node of npu_pack_taps -> the conv it packs for

    def pipeline(self, options: dict) -> list:
        """The stem's tap packing and the C.4 decisions as graph passes (``--disable-pass npu_pack_taps`` /
        ``npu_fuse_epilogues`` / ``npu_residency``)."""
        from targets.cpu.target import legalize_passes

        from .passes import FuseNpuEpilogues, PackNpuTaps, PlanNpuResidency

        # host steps run on the cpu target: its type legalization first (float16/float64 host nodes)
        return [*legalize_passes(self), PackNpuTaps(self), FuseNpuEpilogues(self), PlanNpuResidency(self)]

    def unsupported_reason(self, node: Node) -> str | None:
        op = node.qualified_op
        if node.name in self.packing:
            return (f"packs the horizontal taps of conv '{self.packing[node.name]}' into channels for the "
                    f"NPU (npu_pack_taps); runs on the host")
        if _layout_view(node):
            return None
        if op in _LAYOUT_VIEWS:
            return f"{op} changes the blocked [C/32][H][W][32] layout (C.5); runs on the host"
        entry = _LOWERINGS.get(op)
        if entry is None:
            if op in ("QuantizeLinear", "DequantizeLinear"):
                return f"{op} converts between float and int8 at the model's boundary; runs on the host"
            return f"{op} has no NPU-1 kernel (C.5); runs on the host"
        if any(v is not None and not v.is_const and v.type is None for v in node.inputs):
            return "a tensor has no static type"
        for v in [node.output] + [v for v in node.inputs if v is not None and not v.is_const]:
            if v.type.dtype.value != "int8":
                return f"tensor '{v.name}' is {v.type.dtype.value}; the NPU computes on int8 tensors only"
            if _as4(v.type.shape) is None:
                return (f"tensor '{v.name}' has shape {list(v.type.shape)}; the NPU takes batch-1 4-D or "
                        f"2-D tensors")
        if entry[0] is conv:
            return conv.unsupported_reason(node, self.cfg)
        return entry[0].unsupported_reason(node)

    def host(self):
        from ..cpu.target import CpuTarget

        return CpuTarget()

    def partition(self, graph: Graph, options: dict, model_name: str = "model") -> Partition:
        """What runs where and why (the steps ``build`` compiles), for the compile report."""
        self.cfg = accel_config(options)
        result = Partition()
        for step in _steps(graph, self):
            placed = "custom" if step.kind == "npu" else "cpu"
            result.segments.append(Segment(placed, [n.name for n in step.nodes]))
            if step.kind == "host":
                result.fallbacks += [(n.label, self.unsupported_reason(n) or
                                      "its input is on the host (a layout view stays with its input)")
                                     for n in step.nodes]
        return result

    def build(self, graph: Graph, options: dict) -> TargetBuild:
        cfg = self.cfg = accel_config(options)
        if not any(n.qualified_op in _INTEGER_OPS for n in graph.nodes):
            raise LoweringError(
                f"{graph.name}: --target custom needs a quantized model (the NPU computes in int8) and this "
                f"one has no int8 layers; pass --quantize int8 --calibration DATA, or lower a QDQ model")
        steps = _steps(graph, self)
        files: dict[str, bytes] = {CONFIG: cfg.to_json().encode()}
        entries, kernels, requires = [], [], None
        for i, step in enumerate(steps):
            step.name = f"{step.kind}{i}"
            if step.kind == "npu":
                program, stats = _build_npu(cfg, step, self)
                member = f"custom/{step.name}.npu"
                files[member] = program.pack()
                entries.append({"kind": "npu", "name": step.name, "program": member,
                                "inputs": [v.name for v in step.inputs],
                                "outputs": [v.name for v in step.outputs]})
                kernels += [{"name": s.name, "op": s.op_type, "target": "npu", "segment": step.name,
                             **s.to_json()} for s in stats]
            else:
                build = _build_host(graph, step, self.host(), options)
                prefix = f"custom/{step.name}/"
                files.update({prefix + k.removeprefix("cpu/"): v for k, v in build.files.items()})
                entry = _relocate(build.manifest, prefix)
                requires = entry["requires"]
                entries.append({"kind": "host", "name": step.name, "entry": entry,
                                "nodes": [n.name for n in step.nodes],
                                "inputs": [v.name for v in step.inputs],
                                "outputs": [v.name for v in step.outputs]})
                kernels += [{**k, "target": "host", "segment": step.name} for k in build.kernels]
        names = list(graph.output_names) if len(graph.output_names) == len(graph.outputs) else \
            [v.name for v in graph.outputs]
        manifest = {
            "kind": "custom", "format": FORMAT, "config": CONFIG, "config_name": cfg.name,
            "config_hash": cfg.config_hash(), "steps": entries,
            "inputs": [v.name for v in graph.inputs], "outputs": [v.name for v in graph.outputs],
            "signature": {"inputs": [_tensor(v) for v in graph.inputs],
                          "outputs": [_tensor(v, n) for v, n in zip(graph.outputs, names)]},
        }
        if requires is not None:
            manifest["requires"] = requires
        return TargetBuild(self.name, files, manifest, kernels)


# ---- partitioning into steps ------------------------------------------------------------------------------
def _steps(graph: Graph, target: CustomTarget) -> list[Step]:
    """Consecutive nodes with the same placement form a step; each step's inputs are the non-constant
    values it reads from outside, its outputs the values read after it (or graph outputs)."""
    steps: list[Step] = []
    on_npu: set[int] = set()
    for node in graph.nodes:
        npu = target.unsupported_reason(node) is None
        if npu and _layout_view(node):   # an alias is only worth it when its input is already on the NPU
            npu = node.input(0).producer is not None and id(node.input(0).producer) in on_npu
        if npu:
            on_npu.add(id(node))
        kind = "npu" if npu else "host"
        if not steps or steps[-1].kind != kind:
            steps.append(Step(kind))
        steps[-1].nodes.append(node)
    graph_outputs = {id(v) for v in graph.outputs}
    for i, step in enumerate(steps):
        produced = {id(o) for n in step.nodes for o in n.outputs}
        later = {id(v) for s in steps[i + 1:] for n in s.nodes for v in n.inputs if v is not None}
        seen: set[int] = set()
        for n in step.nodes:
            for v in n.inputs:
                if v is not None and not v.is_const and id(v) not in produced and id(v) not in seen:
                    seen.add(id(v))
                    step.inputs.append(v)
        step.outputs = [o for n in step.nodes for o in n.outputs
                        if id(o) in later or id(o) in graph_outputs]
    return steps


# ---- accelerator segments ---------------------------------------------------------------------------------
def _zero_point(v: Value) -> int:
    """The int8 zero point of an activation, from its producer or a consumer's attributes."""
    p = v.producer
    if p is not None:
        key = _OUT_ZP.get(p.qualified_op)
        if key is not None:
            return int(p.attr(key))
        if p.op == "QuantizeLinear" and len(p.inputs) > 2 and p.input(2) is not None and p.input(2).is_const:
            return int(p.input(2).const.reshape(-1)[0])
        if p.op in ("MaxPool",) + _LAYOUT_VIEWS:
            return _zero_point(p.input(0))
    for use in v.uses():
        keys = _IN_ZP.get(use.node.qualified_op)
        if keys:
            return int(use.node.attr(keys[min(use.index, len(keys) - 1)], 0))
        if use.node.op in ("MaxPool",) + _LAYOUT_VIEWS:
            return _zero_point(use.node.output)
    return 0


def _scale(v: Value) -> float:
    p = v.producer
    if p is not None and p.op == "QuantizeLinear" and p.input(1) is not None and p.input(1).is_const:
        return float(p.input(1).const.reshape(-1)[0])
    for use in v.uses():
        if use.node.op == "DequantizeLinear" and use.node.input(1) is not None and use.node.input(1).is_const:
            return float(use.node.input(1).const.reshape(-1)[0])
    return 1.0


def _build_npu(cfg: AccelConfig, step: Step, target: CustomTarget | None = None):
    """One NPU-1 program for ``step``; the C.4 decisions annotated by the target's passes
    (``passes.py``) are honoured when still legal (re-checked by ``passes.plan_step``)."""
    from .passes import plan_step

    target = target or CustomTarget(cfg)
    b = ProgramBuilder(cfg, step.name)
    acts: dict[int, Act] = {}

    def alloc(v: Value) -> Act:
        if id(v) not in acts:
            acts[id(v)] = b.tensor(v.name, v.type.shape, _zero_point(v), _scale(v))
        return acts[id(v)]

    for v in step.inputs:
        alloc(v)
    for node in step.nodes:
        if _layout_view(node):
            acts[id(node.output)] = b.alias(node.output.name, alloc(node.input(0)), node.output.type.shape)
        else:
            alloc(node.output)
    b.seal_tensors()
    plans = plan_step(cfg, target, step.nodes, {id(v) for v in step.outputs})
    absorbed = {id(n) for lp in plans.values() for n in (lp.add, lp.pool) if n is not None}
    stats = []
    for node in step.nodes:
        if _layout_view(node) or id(node) in absorbed:
            continue
        module, fn = _LOWERINGS[node.qualified_op]
        lp = plans.get(id(node))
        sources = list(node.meta.sources or (node.name,))
        fused = None if lp is None else (lp.add or lp.pool)
        if fused is not None:
            sources += list(fused.meta.sources or (fused.name,))
        st = b.begin_layer(node.name or node.output.name, sources, node.op)
        ins = [acts[id(v)] for v in node.inputs if v is not None and not v.is_const]
        out = node.output if fused is None else fused.output
        st.geometry = {"inputs": [list(a.shape) for a in ins], "output": list(node.output.type.shape),
                       **{k: node.attr(k) for k in ("kernel_shape", "strides", "pads") if node.attr(k)}}
        try:
            if lp is None:
                getattr(module, fn)(b, node, *ins, acts[id(out)], st)
            elif node.qualified_op != "lowering::QConv":      # a pooling layer reading a resident input
                own_base, own_lines = lp.own(cfg.ub_lines)
                resident = vpu.ResidentInput(lp.in_base, lp.in_geom.u_need * lp.in_geom.wt, lp.in_pitch,
                                             own_base, own_lines)
                getattr(module, fn)(b, node, *ins, acts[id(out)], st, resident=resident)
                _fusion_stats(st, lp)
            else:
                own_base, own_lines = lp.own(cfg.ub_lines)
                skip = None if lp.add is None else acts[id(lp.add.input(lp.skip_index))]
                ep = conv.Epilogue(add=lp.add, skip=skip, skip_index=lp.skip_index, in_base=lp.in_base,
                                   out_region=lp.out_region, pool=lp.pool,
                                   own_base=own_base, own_lines=own_lines)
                conv.lower_qconv(b, node, *ins, acts[id(out)], st, ep)
                _fusion_stats(st, lp)
        except (AccelError, ValueError) as exc:
            raise LoweringError(f"custom target: cannot lower {node.label}: {exc}") from None
        stats.append(st)
    # C.3 for the segment: the tensors crossing its boundary once, plus every constant once
    boundary = {id(acts[id(v)]): acts[id(v)] for v in list(step.inputs) + list(step.outputs) if id(v) in acts}
    program = b.finish({"segment": step.name,
                        "compulsory_bytes": sum(a.nbytes for a in boundary.values()) + b.const_bytes,
                        "layer_compulsory_bytes": sum(s.compulsory_bytes for s in stats),
                        "predicted_dram_bytes": sum(s.predicted_dram_bytes for s in stats),
                        "predicted_cycles": sum(s.predicted_cycles for s in stats),
                        "saved_dram_bytes": sum(s.saved_dram_bytes for s in stats)})
    return program, stats


def _fusion_stats(st, lp) -> None:
    """Record a fused layer's C.4 decisions and the DRAM bytes each fused edge saves."""
    fused = {}
    if lp.add is not None:
        fused["add"] = lp.add.name
        st.notes.append(f"fused {lp.add.name} (QAdd) into the epilogue: saves {lp.saved_bytes['fused_add']} "
                        f"DRAM bytes")
    if lp.in_base is not None:
        fused["input_in_ub"] = [lp.in_pos, lp.in_lines]
        st.notes.append("input read from UB (resident, written by the previous layer)")
    if lp.pool is not None:
        fused["pool"] = lp.pool.name
        st.notes.append(f"fused {lp.pool.name} (MaxPool) per output tile: only the pooled rows are stored, "
                        f"saves ~{lp.saved_bytes['pooled_tiles']} DRAM bytes")
    if lp.out_region is not None:
        fused["output_in_ub"] = [lp.consumer.name, lp.out_pos, lp.out_lines]
        st.notes.append(f"output stays in UB for {lp.consumer.name}: saves ~{lp.saved_bytes['resident_out']} "
                        f"DRAM bytes")
    st.saved_dram_bytes = sum(lp.saved_bytes.values())
    st.tiling["fusion"] = fused
    st.tiling["saved_dram_bytes"] = dict(lp.saved_bytes)


# ---- host segments ----------------------------------------------------------------------------------------
def extract_subgraph(graph: Graph, nodes: list[Node], inputs: list[Value], outputs: list[Value],
                     name: str) -> Graph:
    """A standalone graph of ``nodes`` (copies; the original graph is untouched)."""
    sub = Graph(name=name, opset=graph.opset)
    mapping: dict[int, Value] = {}

    def get(v: Value | None) -> Value | None:
        if v is None:
            return None
        if id(v) not in mapping:
            mapping[id(v)] = Value(v.name, v.type, v.const)
            sub.reserve_name(v.name)
        return mapping[id(v)]

    sub.inputs = [get(v) for v in inputs]
    for n in nodes:
        outs = [Value(o.name, o.type) for o in n.outputs]
        for o, new in zip(n.outputs, outs):
            mapping[id(o)] = new
            sub.reserve_name(o.name)
        sub.append(Node(n.op, [get(v) for v in n.inputs], outs, dict(n.attrs), n.name, n.domain, n.meta))
        sub.reserve_name(n.name)
    sub.outputs = [mapping[id(v)] for v in outputs]
    sub.output_names = [v.name for v in outputs]
    return sub


def _build_host(graph: Graph, step: Step, host: Target, options: dict):
    from passes.memory.materialize_outputs import MaterializeOutputs
    from passes.memory.plan_memory import PlanMemory

    sub = extract_subgraph(graph, step.nodes, step.inputs, step.outputs, f"{graph.name}:{step.name}")
    PassManager([MaterializeOutputs(), PlanMemory()]).run(sub, PassContext())
    return host.build(sub, {k: v for k, v in options.items() if k != "accel_config"})


def _relocate(entry: dict, prefix: str) -> dict:
    """A cpu manifest entry with its member paths moved under ``prefix``."""
    out = json.loads(json.dumps(entry))
    for key in ("library", "source", "weights"):
        out[key] = prefix + out[key].removeprefix("cpu/")
    return out


def _tensor(value: Value, name: str | None = None) -> dict:
    return {"name": name or value.name, "dtype": value.type.dtype.value, "shape": list(value.type.shape)}

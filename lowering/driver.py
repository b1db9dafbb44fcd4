"""The top of the compiler: ONNX file -> IR -> passes -> partition -> target builds -> artifact."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .artifact import write_artifact
from .errors import LoweringError
from .ir import Graph
from .onnx.exporter import export_bytes
from .onnx.importer import import_model, load_model_proto
from .partition import partition
from .passmanager import PassContext, PassManager, PassRecord

if TYPE_CHECKING:
    from .quantize import QuantizeConfig


@dataclass(frozen=True)
class CompileOptions:
    """Everything that changes an artifact. Validated on construction."""

    targets: tuple[str, ...] = ("cpu",)
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    disabled_passes: frozenset[str] = frozenset()
    print_after: frozenset[str] = frozenset()
    verify_each: bool = False
    isa: str | None = None
    extra: tuple[tuple[str, object], ...] = field(default=())
    #: Quantize before compiling (a ``lowering.quantize.QuantizeConfig``), with the data at ``calibration``.
    quantize: QuantizeConfig | None = None
    calibration: str | None = None

    def __post_init__(self):
        if not self.targets:
            raise LoweringError("no target given (e.g. --target cpu)")
        if len(set(self.targets)) != len(self.targets):
            raise LoweringError(f"target listed twice in {','.join(self.targets)}")
        for name, dims in self.shapes:
            if not dims or any(d <= 0 for d in dims):
                raise LoweringError(f"--shape {name}: dimensions must be positive, got {dims}")
        if (self.quantize is None) != (self.calibration is None):
            raise LoweringError("--quantize int8 and --calibration DATA go together")

    def target_options(self) -> dict:
        opts = dict(self.extra)
        if self.isa:
            opts["isa"] = self.isa
        return opts

    def to_json(self) -> dict:
        """The options recorded in the manifest (those that change the output)."""
        opts = {"targets": list(self.targets), "shapes": {n: list(d) for n, d in self.shapes},
                "disabled_passes": sorted(self.disabled_passes), "isa": self.isa}
        if self.quantize is not None:  # the settings, not the data path (no paths in an artifact)
            opts["quantize"] = self.quantize.to_json()
        return opts


def load_onnx(path, shapes: dict | None = None) -> Graph:
    path = Path(path)
    return import_model(load_model_proto(path), shapes or {}, name=str(path))


def _pipeline(target) -> list:
    from passes.memory.materialize_outputs import MaterializeOutputs
    from passes.memory.plan_memory import PlanMemory
    from passes.pipeline import default_passes

    return default_passes() + target.pipeline({}) + [MaterializeOutputs(), PlanMemory()]


@dataclass
class CompileResult:
    path: Path
    manifest: dict
    report: dict


def compile_model(model, targets=("cpu",), output=None, log=lambda message: None, **kwargs) -> CompileResult:
    """Compile the ONNX file ``model`` for ``targets`` and write the artifact to ``output``."""
    from targets import get_target

    options = kwargs.pop("options", None) or CompileOptions(targets=tuple(targets), **kwargs)
    model_path = Path(model)
    if output is None:
        output = model_path.with_suffix(".lwr")
    clock = time.perf_counter()
    proto = load_model_proto(model_path)
    model_bytes = model_path.read_bytes()
    log(f"phase load: {time.perf_counter() - clock:.2f} s")
    shapes = dict(options.shapes)
    files: dict[str, bytes] = {}
    report: dict = {"targets": {}}
    if options.quantize is not None:
        proto, report["quantization"] = _quantize(model_path, options, log)
    manifest_targets: dict = {}
    signature = None
    for name in options.targets:
        target = get_target(name)
        clock = time.perf_counter()
        graph = import_model(proto, shapes, name=model_path.name)
        log(f"phase {name} import: {time.perf_counter() - clock:.2f} s")
        if signature is None:
            signature = _signature(graph)
            report["source"] = {"nodes": len(graph.nodes), "ops": graph.op_counts()}
        ctx = PassContext(options=options.target_options(), verify_each=options.verify_each,
                          print_after=options.print_after, disabled=options.disabled_passes, log=log)
        start = time.perf_counter()
        records: list[PassRecord] = PassManager(_pipeline(target)).run(graph, ctx)
        clock = time.perf_counter()
        log(f"phase {name} passes: {clock - start:.2f} s")
        placement = target.partition(graph, options.target_options(), model_name=model_path.name) \
            if hasattr(target, "partition") \
            else partition(graph, target, model_name=model_path.name)
        log(f"phase {name} partition: {time.perf_counter() - clock:.2f} s")
        build = target.build(graph, options.target_options())
        for phase, seconds in build.phases.items():
            log(f"phase {name} {phase}: {seconds:.2f} s")
        log(f"target {name}: built {len(build.kernels)} kernels in {time.perf_counter() - start:.2f} s")
        files.update(build.files)
        manifest_targets[name] = build.manifest
        report["targets"][name] = {
            "passes": [r.to_json() for r in records],
            "ops": graph.op_counts(),
            "kernels": build.kernels,
            "memory_plan": graph.memory_plan.to_json() if graph.memory_plan else None,
            "partition": placement.to_json(),
        }
        clock = time.perf_counter()
        files.setdefault("graph.onnx", export_bytes(graph))
        log(f"phase {name} export graph: {time.perf_counter() - clock:.2f} s")
    files["report.json"] = json.dumps(report, indent=2, sort_keys=True).encode() + b"\n"
    base = {
        "model": {"name": model_path.name, "sha256": hashlib.sha256(model_bytes).hexdigest()},
        "inputs": signature[0], "outputs": signature[1], "targets": manifest_targets,
        "options": options.to_json(),
    }
    clock = time.perf_counter()
    manifest = write_artifact(output, base, files)
    log(f"phase write artifact: {time.perf_counter() - clock:.2f} s")
    return CompileResult(Path(output), manifest, report)


def _quantize(model_path: Path, options: CompileOptions, log):
    """Quantize the model to a temporary QDQ model; return its checked proto and the quantization report.

    The artifact records the source (fp32) model's name and SHA-256, the quantization settings in the
    manifest's options, and the report (with the calibration data's and the QDQ model's SHA-256) in
    report.json.
    """
    from .quantize import quantize_model

    with tempfile.TemporaryDirectory(prefix="lowering-qdq-") as tmp:
        qdq = Path(tmp) / (model_path.stem + ".int8.onnx")
        result = quantize_model(model_path, options.calibration, qdq, options.quantize, log=log)
        log(f"quantized {model_path.name}: {result.report['qdq_model']['nodes']} nodes "
            f"({result.report['config']['method']} calibration)")
        return load_model_proto(qdq), result.report


def _signature(graph: Graph) -> tuple[list, list]:
    def entry(name, v):
        return {"name": name, "dtype": v.type.dtype.value, "shape": list(v.type.shape)}

    return ([entry(v.name, v) for v in graph.inputs],
            [entry(n, v) for n, v in zip(graph.output_names, graph.outputs)])

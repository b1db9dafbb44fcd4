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
    #: Quantize before compiling (a ``lowering.quantize.QuantizeConfig``), with the data at ``calibration``
    #: (None: generated random samples, with a warning).
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
        if self.quantize is None and self.calibration is not None:
            raise LoweringError("--calibration DATA needs --quantize int8")

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


@dataclass
class TargetOutput:
    """What one target contributes to an artifact: plain data, so it can be cached and built in parallel."""

    name: str
    files: dict[str, bytes]
    manifest: dict
    report: dict
    graph_onnx: bytes
    signature: tuple[list, list]
    source: dict
    #: the pass log lines of the build (replayed under -v on a cache hit)
    log: list[str] = field(default_factory=list)

    def to_cache(self) -> tuple[dict, dict[str, bytes]]:
        value = {"name": self.name, "manifest": self.manifest, "report": self.report,
                 "signature": list(self.signature), "source": self.source, "log": self.log,
                 "files": sorted(self.files)}
        return value, {**{f"file/{k}": v for k, v in self.files.items()}, "graph.onnx": self.graph_onnx}

    @classmethod
    def from_cache(cls, value: dict, blobs: dict[str, bytes]) -> TargetOutput:
        return cls(value["name"], {k: blobs[f"file/{k}"] for k in value["files"]}, value["manifest"],
                   value["report"], blobs["graph.onnx"], tuple(value["signature"]), value["source"],
                   list(value.get("log", [])))


def build_target(name: str, proto, model_name: str, options: CompileOptions, log=lambda m: None) \
        -> TargetOutput:
    """Import ``proto`` (an ONNX ModelProto), run the passes for target ``name`` and build it."""
    from targets import get_target

    target = get_target(name)
    lines: list[str] = []

    def record(message: str) -> None:
        lines.append(message)
        log(message)

    clock = time.perf_counter()
    graph = import_model(proto, dict(options.shapes), name=model_name, log=record)
    log(f"phase {name} import: {time.perf_counter() - clock:.2f} s")
    signature = _signature(graph)
    source = {"nodes": len(graph.nodes), "ops": graph.op_counts()}
    ctx = PassContext(options=options.target_options(), verify_each=options.verify_each,
                      print_after=options.print_after, disabled=options.disabled_passes, log=record)
    start = time.perf_counter()
    records: list[PassRecord] = PassManager(_pipeline(target)).run(graph, ctx)
    clock = time.perf_counter()
    log(f"phase {name} passes: {clock - start:.2f} s")
    placement = target.partition(graph, options.target_options(), model_name=model_name) \
        if hasattr(target, "partition") \
        else partition(graph, target, model_name=model_name)
    log(f"phase {name} partition: {time.perf_counter() - clock:.2f} s")
    build = target.build(graph, options.target_options())
    for phase, seconds in build.phases.items():
        log(f"phase {name} {phase}: {seconds:.2f} s")
    log(f"target {name}: built {len(build.kernels)} kernels in {time.perf_counter() - start:.2f} s")
    report = {
        "passes": [r.to_json() for r in records],
        "ops": graph.op_counts(),
        "kernels": build.kernels,
        "memory_plan": graph.memory_plan.to_json() if graph.memory_plan else None,
        "partition": placement.to_json(),
    }
    clock = time.perf_counter()
    graph_onnx = export_bytes(graph)
    log(f"phase {name} export graph: {time.perf_counter() - clock:.2f} s")
    # a JSON round trip, so that a fresh build and a cached one are the same plain data
    manifest, report, signature, source = json.loads(json.dumps([build.manifest, report, signature, source]))
    return TargetOutput(name, dict(build.files), manifest, report, graph_onnx, tuple(signature), source,
                        [m for m in lines if not m.startswith("//")])


def compile_model(model, targets=("cpu",), output=None, log=lambda message: None, **kwargs) -> CompileResult:
    """Compile the ONNX file ``model`` for ``targets`` and write the artifact to ``output``.

    ``cache``: a :class:`lowering.cache.BuildCache` (or a folder for one) whose entries are reused for
    unchanged targets and filled with new builds; None (the default) builds everything. ``jobs``: how many
    targets to build at once (threads: the slow part, the C/CUDA compiler, runs in subprocesses).
    ``progress``: called with one line per finished target. The artifact is byte-identical either way.
    """
    cache = kwargs.pop("cache", None)
    jobs = int(kwargs.pop("jobs", 1) or 1)
    progress = kwargs.pop("progress", None)
    options = kwargs.pop("options", None) or CompileOptions(targets=tuple(targets), **kwargs)
    if jobs < 1:
        raise LoweringError(f"--jobs must be >= 1, got {jobs}")
    if cache is not None and not hasattr(cache, "get"):
        from .cache import BuildCache

        cache = BuildCache(cache, log=log)
    if options.print_after:
        cache = _WriteOnly(cache) if cache is not None else None  # asked to see the IR: build for real
    model_path = Path(model)
    if output is None:
        output = model_path.with_suffix(".lwr")
    clock = time.perf_counter()
    proto = load_model_proto(model_path)
    _check_declared_shapes(proto, model_path.name, dict(options.shapes))
    model_bytes = model_path.read_bytes()
    log(f"phase load: {time.perf_counter() - clock:.2f} s")
    report: dict = {"targets": {}}
    digest = _model_digest(proto, model_bytes) if cache is not None else ""
    if options.quantize is not None:
        proto, report["quantization"], qdq_bytes = _quantize_cached(model_path, digest, options, cache, log)
        digest = hashlib.sha256(qdq_bytes).hexdigest()
    outputs = _build_targets(proto, digest, model_path.name, options, cache, jobs, log, progress)
    files: dict[str, bytes] = {}
    manifest_targets: dict = {}
    first = outputs[options.targets[0]]
    report["source"] = first.source
    for name in options.targets:
        out = outputs[name]
        files.update(out.files)
        manifest_targets[name] = out.manifest
        report["targets"][name] = out.report
    files["graph.onnx"] = first.graph_onnx
    files["report.json"] = json.dumps(report, indent=2, sort_keys=True).encode() + b"\n"
    base = {
        "model": {"name": model_path.name, "sha256": hashlib.sha256(model_bytes).hexdigest()},
        "inputs": first.signature[0], "outputs": first.signature[1], "targets": manifest_targets,
        "options": options.to_json(),
    }
    clock = time.perf_counter()
    manifest = write_artifact(output, base, files)
    log(f"phase write artifact: {time.perf_counter() - clock:.2f} s")
    return CompileResult(Path(output), manifest, report)


class _WriteOnly:
    """A cache that stores but never returns entries (``--print-after``: the passes must really run)."""

    def __init__(self, cache):
        self._cache = cache

    def get(self, key):
        return None

    def put(self, key, value, blobs):
        self._cache.put(key, value, blobs)


#: the most elements one declared tensor may have (2^34: 64 GiB of float32); more is a damaged model
MAX_ELEMENTS = 1 << 34


def _check_declared_shapes(proto, model_name: str, bound: dict) -> None:
    """Refuse declared shapes no build could honour (negative or absurd dimensions) before any work, with
    the tensor and dimension named. Symbolic dimensions are left to the importer (``--shape``)."""
    graph = proto.graph
    _check_names(proto, model_name)
    for kind, infos in (("input", graph.input), ("output", graph.output), ("value", graph.value_info)):
        for info in infos:
            if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
                continue
            if kind == "input" and info.name in bound:
                continue
            dims = info.type.tensor_type.shape.dim
            count = 1
            for i, d in enumerate(dims):
                if d.HasField("dim_value"):
                    if d.dim_value < 0:
                        raise LoweringError(f"{model_name}: {kind} '{info.name}' has a negative "
                                            f"dimension {i} ({d.dim_value})")
                    count *= d.dim_value
            if count > MAX_ELEMENTS:
                raise LoweringError(f"{model_name}: {kind} '{info.name}' declares {count:.3g} elements "
                                    f"(more than {MAX_ELEMENTS:.3g}); not a shape any target can build")
    for init in graph.initializer:
        if any(d < 0 for d in init.dims):
            raise LoweringError(f"{model_name}: initializer '{init.name}' has a negative dimension "
                                f"{list(init.dims)}")


def _check_names(proto, model_name: str) -> None:
    """Every name and op type must be text: the protobuf hands back the raw bytes of a string field that is
    not valid UTF-8 (a damaged file), which nothing downstream expects."""
    def check(value, what: str) -> None:
        if not isinstance(value, str):
            raise LoweringError(f"{model_name}: {what} {value[:40]!r} is not valid UTF-8 (a damaged model?)")

    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        check(graph.name, "the graph name")
        for info in list(graph.input) + list(graph.output) + list(graph.value_info):
            check(info.name, "tensor name")
        for init in graph.initializer:
            check(init.name, "initializer name")
        for i, node in enumerate(graph.node):
            check(node.name, f"the name of node {i}")
            check(node.op_type, f"the op type of node {i}")
            check(node.domain, f"the domain of node {i}")
            for name in list(node.input) + list(node.output):
                check(name, f"a tensor name of node {i}")
            for attr in node.attribute:
                check(attr.name, f"an attribute name of node {i}")
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    for opset in proto.opset_import:
        check(opset.domain, "an opset domain")
    check(proto.producer_name, "the producer name")
    check(proto.domain, "the model domain")


def _guarded_build(name: str, proto, model_name: str, options: CompileOptions, log) -> TargetOutput:
    """``build_target``, with any failure that is not already a LoweringError turned into one line naming
    the model, the target and where it happened (a damaged or unusual model reached code that does not
    expect it: a bug to report, but never a traceback for the user). The cause stays chained."""
    try:
        return build_target(name, proto, model_name, options, log)
    except LoweringError:
        raise
    except MemoryError:
        raise LoweringError(f"{model_name}: ran out of memory building target {name}") from None
    except Exception as exc:  # noqa: BLE001 - the boundary between a user's model and the compiler
        import traceback

        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if "/site-packages/" not in f.filename and "/lib/python" not in f.filename]
        where = own[-1] if own else frames[-1]
        location = f"{Path(where.filename).parent.name}/{Path(where.filename).name}:{where.lineno}"
        text = " ".join(str(exc).split())[:200]
        raise LoweringError(f"{model_name}: internal error building target {name} ({type(exc).__name__}: "
                            f"{text} at {location}); the model is probably malformed, please report it "
                            "with the model") from exc


def _model_digest(proto, model_bytes: bytes) -> str:
    """SHA-256 of the model file and, when it has external data, of the loaded initializers (their bytes
    live in other files)."""
    h = hashlib.sha256(model_bytes)
    if b"location" in model_bytes:  # cheap pre-check: only models with external data say "location"
        for init in proto.graph.initializer:
            h.update(hashlib.sha256(init.SerializeToString()).digest())
    return h.hexdigest()


def _target_key(name: str, model_digest: str, model_name: str, options: CompileOptions) -> str:
    from targets import get_target

    from .cache import entry_key, file_content_hash, target_source_hash, toolchain_identity

    target = get_target(name)
    opts = options.to_json()
    opts.pop("targets")
    target_opts = options.target_options()
    config = target_opts.get("accel_config")
    if isinstance(config, str) and Path(config).is_file():
        target_opts["accel_config_sha256"] = file_content_hash(config)
    return entry_key("target", name, model_digest, model_name, opts,
                     sorted(target_opts.items()), toolchain_identity(target, options.target_options()),
                     target_source_hash(target))


def _build_targets(proto, model_digest: str, model_name: str, options: CompileOptions, cache, jobs: int,
                   log, progress) -> dict[str, TargetOutput]:
    """Every target's output: from the cache, else built (``jobs`` at a time)."""
    outputs: dict[str, TargetOutput] = {}
    keys: dict[str, str] = {}
    todo: list[str] = []
    total = len(options.targets)
    for name in options.targets:
        if cache is not None:
            keys[name] = _target_key(name, model_digest, model_name, options)
            hit = cache.get(keys[name])
            if hit is not None:
                try:
                    outputs[name] = TargetOutput.from_cache(*hit)
                except (KeyError, TypeError, ValueError) as exc:
                    log(f"cache: ignoring malformed entry for {name} ({exc}); rebuilding")
                else:
                    log(f"target {name}: cache hit ({keys[name][:16]})")
                    for line in outputs[name].log:
                        log(f"  (cached) {line}")
                    if progress is not None:
                        progress(f"[{len(outputs)}/{total}] {name}: cache hit")
                    continue
        todo.append(name)

    def finished(name: str, out: TargetOutput, seconds: float) -> None:
        outputs[name] = out
        if cache is not None:
            cache.put(keys[name], *out.to_cache())
        if progress is not None:
            progress(f"[{len(outputs)}/{total}] {name}: built in {seconds:.1f} s")

    if jobs <= 1 or len(todo) <= 1:
        for name in todo:
            start = time.perf_counter()
            finished(name, _guarded_build(name, proto, model_name, options, log), time.perf_counter() - start)
        return outputs
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(jobs, len(todo)), thread_name_prefix="lower-build") as pool:
        pending = {pool.submit(_guarded_build, name, proto, model_name, options, log): name for name in todo}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    name = pending.pop(future)
                    finished(name, future.result(), time.perf_counter() - start)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return outputs


def _quantize_cached(model_path: Path, model_digest: str, options: CompileOptions, cache, log):
    """``_quantize`` through the cache: returns (QDQ proto, quantization report, QDQ model bytes)."""
    key = None
    if cache is not None:
        from .cache import entry_key, file_content_hash, package_source_hash

        calibration = Path(options.calibration) if options.calibration is not None else None
        if calibration is None or calibration.exists():  # generated samples are seeded: one key
            data = file_content_hash(calibration) if calibration is not None else "generated"
            key = entry_key("quantize", model_digest, model_path.name,
                            options.quantize.to_json(), data, package_source_hash())
            hit = cache.get(key)
            if hit is not None and "qdq.onnx" in hit[1] and isinstance(hit[0].get("report"), dict):
                from .onnx.importer import load_model_bytes

                log(f"quantize: cache hit ({key[:16]})")
                if options.calibration is None:
                    from .quantize.generated import warn

                    warn("no calibration data: the cached quantization was calibrated on generated random "
                         "samples; the int8 accuracy on real inputs is unknown (give --calibration DATA)")
                return load_model_bytes(hit[1]["qdq.onnx"]), hit[0]["report"], hit[1]["qdq.onnx"]
    proto, report, qdq_bytes = _quantize(model_path, options, log)
    if key is not None:
        cache.put(key, {"report": report}, {"qdq.onnx": qdq_bytes})
    return proto, report, qdq_bytes


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
        return load_model_proto(qdq), result.report, qdq.read_bytes()


def _signature(graph: Graph) -> tuple[list, list]:
    def entry(name, v):
        return {"name": name, "dtype": v.type.dtype.value, "shape": list(v.type.shape)}

    return ([entry(v.name, v) for v in graph.inputs],
            [entry(n, v) for n, v in zip(graph.output_names, graph.outputs)])

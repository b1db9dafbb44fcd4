"""Per-pass numerical bisect (``lower verify --bisect``) and IR dumps (``lower MODEL --dump-ir DIR``).

The bisect re-imports the model with the options the artifact records (shapes, disabled passes, ISA, the
custom target's accelerator config), runs the numpy reference interpreter on the imported graph and again
after every pass of the pipeline the artifact's target ran (``lowering.driver._pipeline``), all on the same
inputs, and compares every graph output with ONNX Runtime's (and with the previous stage's). The last row is
the artifact itself: the compiled target run by the runtime. The first row out of tolerance names the pass
(or the target's code generation) that broke the numbers.

A ``--quantize`` artifact was compiled from a QDQ model the artifact does not store: bisecting it against
its float source would measure the quantization error, not the passes, so that is refused; the QDQ model
(``lower quantize`` with the same settings) is what such a bisect compares against.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from pathlib import Path

import numpy as np

from .errors import LoweringError
from .verify import compare_arrays, onnxruntime_outputs

#: ONNX ops that make a model a quantized (QDQ or QOperator) one
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm",
                        "QLinearAdd", "QLinearMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"})


# ----------------------------------------------------------------------------------------- the pipeline

def run_pipeline(graph, target_name: str, *, disabled=frozenset(), options: dict | None = None,
                 after_pass=None, log=lambda m: None):
    """Run the pass pipeline target ``target_name`` runs (``lowering.driver._pipeline``) on ``graph`` in
    place, calling ``after_pass(name, graph, record)`` after every pass. Returns the pass records."""
    from targets import get_target

    from . import driver
    from .passmanager import PassContext, PassManager

    ctx = PassContext(options=dict(options or {}), disabled=frozenset(disabled), log=log,
                      after_pass=after_pass)
    return PassManager(driver._pipeline(get_target(target_name))).run(graph, ctx)


def pipeline_names(target_name: str, disabled=frozenset()) -> list[str]:
    """The names of the passes ``run_pipeline`` runs, in order (disabled ones left out)."""
    from targets import get_target

    from . import driver

    return [p.name for p in driver._pipeline(get_target(target_name)) if p.name not in disabled]


# ------------------------------------------------------------------------------------------- --dump-ir

def _file_name(index: int, name: str) -> str:
    return f"{index:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.txt"


def dump_ir(proto, model_name: str, options, directory: Path, log=lambda m: None) -> list[Path]:
    """Write the IR of ``proto`` (an ONNX ModelProto, the QDQ one for ``--quantize``) as imported
    (``00_import.txt``) and after every pass of ``options.targets[0]``'s pipeline (``NN_<pass>.txt``) into
    ``directory``, in the stable text form of ``lowering.ir.print_graph``. Earlier ``NN_*.txt`` files there
    are removed first. A pass that raises ends the dump (the files so far stay) and the error is raised."""
    from .ir import print_graph
    from .onnx.importer import import_model

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("[0-9][0-9]_*.txt"):
            old.unlink()
    except OSError as exc:
        raise LoweringError(f"--dump-ir {directory}: cannot write there ({exc.strerror or exc})") from None
    written: list[Path] = []

    def write(name: str, graph) -> None:
        path = directory / _file_name(len(written), name)
        path.write_text(print_graph(graph) + "\n")
        written.append(path)

    graph = import_model(proto, dict(options.shapes), name=model_name)
    write("import", graph)
    run_pipeline(graph, options.targets[0], disabled=options.disabled_passes,
                 options=options.target_options(), after_pass=lambda name, g, record: write(name, g), log=log)
    return written


# ---------------------------------------------------------------------------------------------- bisect

def _sqnr_db(got: np.ndarray, want: np.ndarray) -> float | None:
    """10·log10(signal / noise) of ``got`` against ``want``; None when they are equal (infinite) or when
    the shapes differ."""
    if got.shape != want.shape or want.size == 0:
        return None
    g, w = got.astype(np.float64), want.astype(np.float64)
    noise = float(np.sum((g - w) ** 2))
    if not math.isfinite(noise):
        return -math.inf
    if noise == 0.0:
        return None
    signal = float(np.sum(w ** 2))
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def _mean_abs(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape:
        return math.inf
    if not want.size:
        return 0.0
    g, w = got.astype(np.float64), want.astype(np.float64)
    diff = np.where(np.isnan(g) & np.isnan(w), 0.0, np.abs(g - w))
    return float(np.nanmean(diff))


def _compare(name: str, got, want, previous, rtol: float, atol: float) -> dict:
    got = np.asarray(got)
    want = np.asarray(want)
    row = compare_arrays(name, got, want, rtol, atol)
    row["mean_abs_error"] = _mean_abs(got, want)
    row["sqnr_db"] = _sqnr_db(got, want)
    if previous is not None:
        prev = np.asarray(previous)
        if prev.shape == got.shape:
            diff = compare_arrays(name, got, prev, rtol, atol)
            row["prev_max_abs_error"] = diff["max_abs_error"]
            row["prev_mean_abs_error"] = _mean_abs(got, prev)
        else:
            row["prev_max_abs_error"] = row["prev_mean_abs_error"] = math.inf
    else:
        row["prev_max_abs_error"] = row["prev_mean_abs_error"] = None
    return row


def _stage(name: str, kind: str, nodes: int | None, results, want: list, previous, names: list[str],
           rtol: float, atol: float, error: str | None = None) -> dict:
    if error is not None:
        return {"stage": name, "kind": kind, "nodes": nodes, "ok": False, "error": error, "outputs": []}
    outputs = [_compare(n, results[i], want[i], None if previous is None else previous[i], rtol, atol)
               for i, n in enumerate(names)]
    return {"stage": name, "kind": kind, "nodes": nodes, "ok": all(o["ok"] for o in outputs),
            "outputs": outputs}


def _check_quantized(artifact, model: Path, proto) -> str:
    """What a bisect of this artifact compares with: refuses a ``--quantize`` artifact's float source."""
    options = artifact.manifest.get("options", {})
    if "quantize" not in options:
        return "the ONNX model"
    name = artifact.manifest.get("model", {}).get("name", "MODEL.onnx")
    recorded = None
    if "report.json" in artifact.manifest.get("members", {}):
        try:
            report = json.loads(artifact.read("report.json"))
            recorded = report.get("quantization", {}).get("qdq_model", {}).get("sha256")
        except (ValueError, AttributeError):
            recorded = None
    ops = {n.op_type for n in proto.graph.node}
    if not ops & _QUANT_OPS:
        q = options["quantize"]
        flags = f"--method {q.get('method', 'minmax')}"
        if q.get("method") == "percentile" and q.get("percentile") is not None:
            flags += f" --percentile {q['percentile']}"
        if q.get("per_channel") is False:
            flags += " --per-tensor"
        if q.get("activation_type", "int8") != "int8":
            flags += f" --activation-type {q['activation_type']}"
        stem = Path(name).stem
        raise LoweringError(
            f"{artifact.path} was compiled with --quantize int8 from {name}, and the QDQ model it compiled "
            f"is not stored in the artifact: a bisect against the float model {model} would measure the "
            f"quantization error, not the passes. Write the QDQ model with the same settings (`lower "
            f"quantize {name} --calibration DATA {flags} -o {stem}.int8.onnx`, the same calibration data) "
            f"and pass it as --model"
            + (f" (the artifact's was SHA-256 {recorded[:16]}...)" if recorded else ""))
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    if recorded and digest == recorded:
        return "the QDQ model the artifact was compiled from"
    return "a QDQ model that is not the one the artifact was compiled from (SHA-256 differs)"


def _accel_options(artifact, target: str, tmp: Path) -> dict:
    """The target options the build ran the passes with, as far as the artifact records them."""
    options = artifact.manifest.get("options", {})
    opts: dict = {}
    if options.get("isa"):
        opts["isa"] = options["isa"]
    entry = artifact.targets.get(target)
    if target == "custom" and isinstance(entry, dict) and entry.get("config"):
        path = tmp / "accel_config.json"
        path.write_bytes(artifact.read(entry["config"]))
        opts["accel_config"] = str(path)
    return opts


def bisect(session, model: Path, feed: dict, rtol: float, atol: float, log=lambda m: None) -> dict:
    """Compare ONNX Runtime's outputs of ``model`` on ``feed`` with the reference interpreter's after import
    and after every pass of ``session.target``'s pipeline, then with the artifact (``session``) itself."""
    import onnxruntime as ort

    from .onnx.importer import import_model, load_model_proto
    from .reference import ReferenceError, run_graph

    model = Path(model)
    if not model.is_file():
        raise LoweringError(f"{model}: no such file")
    artifact = session.artifact
    manifest = artifact.manifest
    options = manifest.get("options", {})
    proto = load_model_proto(model)
    compared = _check_quantized(artifact, model, proto)
    shapes = {n: tuple(d) for n, d in (options.get("shapes") or {}).items()}
    disabled = frozenset(options.get("disabled_passes") or ())
    target = session.target
    names = [o.name for o in session.outputs]
    graph = import_model(proto, shapes, name=model.name)
    inputs = [v.name for v in graph.inputs]
    missing = [n for n in inputs if n not in feed]
    if missing:
        raise LoweringError(f"--inputs: no array for input(s) {', '.join(missing)} of {model.name} "
                            f"(given: {', '.join(sorted(feed)) or 'none'})")
    feed = {n: feed[n] for n in inputs}
    if list(graph.output_names) != names:
        raise LoweringError(f"{model.name}: outputs {', '.join(graph.output_names)} differ from the "
                            f"artifact's {', '.join(names)}")
    want = onnxruntime_outputs(model, feed, names)
    rows: list[dict] = []
    last: list | None = None

    def reference(name: str, kind: str, g) -> None:
        nonlocal last
        try:
            results = run_graph(g, feed)
        except ReferenceError as exc:
            rows.append(_stage(name, kind, len(g.nodes), None, want, last, names, rtol, atol,
                               error=f"the reference interpreter failed: {exc}"))
            return
        ordered = [results[n] for n in names]
        rows.append(_stage(name, kind, len(g.nodes), ordered, want, last, names, rtol, atol))
        last = ordered
        log(f"bisect: {name}: {'ok' if rows[-1]['ok'] else 'out of tolerance'}")

    reference("import", "import", graph)
    with tempfile.TemporaryDirectory(prefix="lowering-bisect-") as tmp:
        target_options = _accel_options(artifact, target, Path(tmp))
        planned = pipeline_names(target, disabled)
        try:
            run_pipeline(graph, target, disabled=disabled, options=target_options,
                         after_pass=lambda name, g, record: reference(name, "pass", g))
        except Exception as exc:  # noqa: BLE001 - a crashing pass is a finding, named in the table
            failed = planned[len(rows) - 1] if len(rows) - 1 < len(planned) else "?"
            text = " ".join(str(exc).split())[:300]
            rows.append(_stage(failed, "pass", None, None, want, last, names, rtol, atol,
                               error=f"the pass raised {type(exc).__name__}: {text}"))
    kernels = _kernel_count(artifact, target)
    try:
        got = session.run(None, feed)
    except Exception as exc:  # noqa: BLE001 - the artifact's failure is this row's finding
        rows.append(_stage(f"artifact ({target})", "artifact", kernels, None, want, last, names, rtol, atol,
                           error=f"the artifact failed to run: {type(exc).__name__}: {exc}"))
    else:
        rows.append(_stage(f"artifact ({target})", "artifact", kernels, got, want, last, names, rtol, atol))
    first = next((i for i, r in enumerate(rows) if not r["ok"]), None)
    built_from = manifest.get("model", {}).get("sha256")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    same_model = digest == built_from or compared.startswith("the QDQ model")
    result = {
        "model": str(model), "artifact": str(artifact.path), "target": target,
        "onnxruntime": ort.__version__, "rtol": rtol, "atol": atol, "compared_with": compared,
        "same_model": same_model, "shapes": {n: list(d) for n, d in shapes.items()},
        "disabled_passes": sorted(disabled), "outputs": names, "rows": rows,
        "ok": first is None, "first_failure": None if first is None else _failure(rows, first, same_model),
        "largest_sqnr_drop": _largest_sqnr_drop(rows),
    }
    return _finite(result)


def _kernel_count(artifact, target: str) -> int | None:
    """The artifact row's "nodes": the target's kernels, from report.json (None without one)."""
    if "report.json" not in artifact.manifest.get("members", {}):
        return None
    try:
        report = json.loads(artifact.read("report.json"))
        return len(report["targets"][target]["kernels"])
    except (KeyError, ValueError, TypeError):
        return None


def _failure(rows: list[dict], index: int, same_model: bool) -> dict:
    row = rows[index]
    if row["kind"] == "import":
        what = ("the import: the reference interpreter of the imported graph already disagrees with ONNX "
                "Runtime (an importer or reference-semantics bug, or a tolerance too tight for this model)")
    elif row["kind"] == "pass":
        what = f"pass '{row['stage']}'"
    else:
        what = (f"the {row['stage'][len('artifact ('):-1]} target's code generation: the artifact disagrees "
                "with ONNX Runtime while the reference interpreter of the optimized graph agrees")
        if not same_model:
            what += " (but MODEL is not the model the artifact was built from: its SHA-256 differs)"
    detail = row.get("error")
    if detail is None:
        bad = [o for o in row["outputs"] if not o["ok"]]
        detail = "; ".join(f"{o['name']}: max abs err {o['max_abs_error']:.3e}, "
                           f"{o['mismatched']}/{o['size']} out of tolerance"
                           + (f" ({o['error']})" if o.get("error") else "") for o in bad)
    return {"index": index, "stage": row["stage"], "kind": row["kind"], "what": what, "detail": detail}


#: the SQNR an exact stage counts as when looking for the largest drop (float32 rounding is ~140 dB)
_EXACT_DB = 200.0


def _largest_sqnr_drop(rows: list[dict]) -> dict | None:
    """The stage (pass or artifact) whose output SQNR against ONNX Runtime fell most from the stage before
    it (a quantized model's noisiest step); None when no SQNR fell."""
    best = None
    previous: dict[str, float] = {}
    for row in rows:
        for o in row["outputs"]:
            # exact (no noise) counts as _EXACT_DB, so that the first noisy stage's drop is finite
            s = _EXACT_DB if o.get("sqnr_db") is None and o["max_abs_error"] == 0 else o.get("sqnr_db")
            s = -math.inf if s is None else min(s, _EXACT_DB)
            before = previous.get(o["name"])
            if before is not None and s < before:
                drop = before - s
                if best is None or drop > best["drop_db"]:
                    best = {"stage": row["stage"], "output": o["name"], "drop_db": drop,
                            "before_db": None if before >= _EXACT_DB else before, "after_db": s}
            previous[o["name"]] = s
    return best


def _finite(value):
    """JSON-safe: infinite or NaN floats become None (``sqnr_db`` None means exact)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _num(value, fmt: str = ".2e") -> str:
    return "-" if value is None else format(value, fmt)


def format_bisect(result: dict) -> str:
    """The bisect as a table: one line per stage and output."""
    lines = [f"bisect: {Path(result['model']).name} ({result['compared_with']}) vs onnxruntime "
             f"{result['onnxruntime']}, target {result['target']} (rtol {result['rtol']:g}, "
             f"atol {result['atol']:g})"]
    if result["disabled_passes"]:
        lines.append(f"  disabled passes: {', '.join(result['disabled_passes'])}")
    header = (f"  {'#':>2} {'stage':<24} {'nodes':>5}  {'output':<12} {'max abs':>9} {'mean abs':>9} "
              f"{'prev max':>9} {'prev mean':>9} {'SQNR dB':>8}  ")
    lines.append(header)
    for i, row in enumerate(result["rows"]):
        head = f"  {i:>2} {row['stage'][:24]:<24} {_num(row['nodes'], 'd'):>5}  "
        if row.get("error"):
            lines.append(f"{head}FAIL: {row['error']}")
            continue
        for j, o in enumerate(row["outputs"]):
            prefix = head if j == 0 else " " * len(head)
            sqnr = "exact" if o["sqnr_db"] is None and o["max_abs_error"] == 0 else _num(o["sqnr_db"], ".1f")
            lines.append(f"{prefix}{o['name'][:12]:<12} {_num(o['max_abs_error']):>9} "
                         f"{_num(o['mean_abs_error']):>9} {_num(o['prev_max_abs_error']):>9} "
                         f"{_num(o['prev_mean_abs_error']):>9} {sqnr:>8}  {'ok' if o['ok'] else 'MISMATCH'}")
    if not result["same_model"]:
        lines.append(f"note: {Path(result['model']).name} is not the model the artifact was built from "
                     "(its SHA-256 differs)")
    drop = result.get("largest_sqnr_drop")
    if drop is not None and drop["drop_db"] is not None and drop["drop_db"] > 1.0 \
            and (drop["after_db"] is None or drop["after_db"] < 100.0):  # not float32 rounding noise
        after = _num(drop["after_db"], ".1f") if drop["after_db"] is not None else "-inf"
        lines.append(f"largest SQNR drop: {drop['stage']} ({drop['output']}: "
                     f"{_num(drop['before_db'], '.1f') if drop['before_db'] is not None else 'exact'} -> "
                     f"{after} dB)")
    failure = result["first_failure"]
    if failure is None:
        lines.append("PASS: every stage within tolerance")
    else:
        lines.append(f"FAIL: first failing stage, step {failure['index']}: {failure['what']}")
        lines.append(f"  {failure['detail']}")
    return "\n".join(lines)

"""The ``lower`` command line.

    lower MODEL.onnx --target cpu -o OUT.lwr      (the same as ``lower compile ...``)
    lower run OUT.lwr [--inputs in.npz] [--output out.npz] [--target custom --report R.json --trace T.json]
    lower verify OUT.lwr --model MODEL.onnx [--inputs in.npz] [--rtol R --atol A] [--bisect] [--json]
    lower inspect OUT.lwr [--json]
    lower disasm OUT.lwr [--step npu0]             (the custom target's NPU-1 programs)
    lower bench OUT.lwr --model MODEL.onnx [--threads N] [--json FILE] [--baseline-json PREV.json
                [--max-regression 5%]]       (exit 1 when slower than PREV by more than the margin)
    lower merge A.lwr B.lwr [...] -o ALL.lwr       (artifacts of one model built on different machines)
    lower report OUT.lwr -o report.html            (one HTML page: graph, passes, memory plan, NPU roofline)
    lower cache [--info | --clear | --max-bytes SIZE]   (the build cache: where, how big, trim or empty)
    lower quantize MODEL.onnx [--calibration DATA] [-o MODEL.int8.onnx] [--method minmax|percentile|entropy]

Exit codes: 0 ok, 1 verification failed, 2 bad input (a one-line error, no traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from . import __version__
from .cache_cli import cache_command
from .errors import LoweringError
from .inputs import index_bounds, random_input
from .report_html import report_command

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2
_QUANT_METHODS = ("minmax", "percentile", "entropy")  # lowering.quantize.METHODS, without importing it


class _DefaultToCompile(click.Group):
    """``lower MODEL ...`` means ``lower compile MODEL ...``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["compile"] + list(args)
        return super().parse_args(ctx, args)


def _parse_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = spec.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape:
        raise LoweringError(f"--shape '{spec}' is not of the form NAME=D1xD2x... (e.g. x=1x3x224x224)")
    return name, shape


@click.group(cls=_DefaultToCompile, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lower")
def cli():
    """Lower ONNX models to compiled artifacts and run them.

    \b
    lower MODEL.onnx --target cpu -o OUT.lwr    compile (same as `lower compile`)
    lower run OUT.lwr --inputs in.npz           run an artifact
    lower verify OUT.lwr --model MODEL.onnx     compare with ONNX Runtime (exit 1 on mismatch)
    lower inspect OUT.lwr                       manifest, passes, kernels, memory plan
    lower disasm OUT.lwr                        the custom target's NPU-1 programs, instruction by instruction
    lower bench OUT.lwr --model MODEL.onnx      latency against ONNX Runtime, same threads
    lower merge A.lwr B.lwr -o ALL.lwr          one artifact from per-target builds (a CI matrix)
    lower report OUT.lwr -o report.html         one HTML page: graph, passes, memory plan, NPU roofline
    lower cache --info                          the build cache: location, entries, size (also --clear)
    lower quantize MODEL.onnx --calibration D   calibrate and write an int8 QDQ ONNX model
    """


@cli.command("compile")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-t", "--target", "target", default="cpu", show_default=True,
              help="Comma-separated targets to build, e.g. cpu or custom (the simulated NPU-1).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Artifact path (default: MODEL with .lwr).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=DxDx...",
              help="Bind an input's symbolic dimensions, e.g. x=1x3x224x224. Repeatable.")
@click.option("--disable-pass", "disabled", multiple=True, metavar="PASS", help="Skip a pass. Repeatable.")
@click.option("--print-after", multiple=True, metavar="PASS", help="Print the IR after PASS. Repeatable.")
@click.option("--verify-each", is_flag=True, help="Verify the IR after every pass.")
@click.option("--cpu-arch", "--isa", "isa", default=None, metavar="ARCH",
              help="cpu target instruction set: native (the build machine's best level, the default), "
              "x86-64-v2, x86-64-v3, x86-64-v4 or x86-64-v4-vnni. The artifact records it; a CPU without "
              "those instructions refuses to load that target, naming the missing features.")
@click.option("-v", "--verbose", is_flag=True, help="Log every pass.")
@click.option("--quantize", "quantize", type=click.Choice(["int8"]), default=None,
              help="Quantize first (post-training static, QDQ), then compile the quantized model.")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="Calibration data for --quantize: a .npz keyed by input name (samples stacked on axis 0) "
                   "or a folder of them. Without it: generated random samples, with a warning.")
@click.option("--method", type=click.Choice(_QUANT_METHODS), default=None,
              help="Calibration method for --quantize (default: minmax).")
@click.option("--percentile", type=float, default=None,
              help="Percentile kept by --quantize with --method percentile (default: 99.999).")
@click.option("--per-channel/--per-tensor", "per_channel", default=None,
              help="--quantize: one weight scale per output channel (the default), or one per tensor.")
@click.option("--activation-type", type=click.Choice(["int8", "uint8"]), default=None,
              help="--quantize: activation integer type (default: int8).")
@click.option("--accel-config", "accel_config", default=None, metavar="PRESET_OR_JSON",
              help="NPU-1 configuration for --target custom: a preset (default, vta_like, gemmini_like, "
                   "tpu_v1_like) or a JSON config file (default: default).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build cache: targets whose model, options, compiler and lowering sources are unchanged "
                   "are reused, not rebuilt (default: $LOWERING_CACHE_DIR, else $XDG_CACHE_HOME/lowering, "
                   "else ~/.cache/lowering). The artifact is byte-identical either way.")
@click.option("--no-cache", is_flag=True, help="Build every target; neither read nor fill the build cache.")
@click.option("-j", "--jobs", type=int, default=1, show_default=True,
              help="Build up to N targets at once (the artifact is byte-identical to a serial build).")
@click.option("--dump-ir", "dump_ir", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Write the IR (the --print-after text form) of the first target as "
                                  "imported (DIR/00_import.txt) and after every pass (DIR/NN_<pass>.txt).")
def compile_command(model, target, output, shapes, disabled, print_after, verify_each, isa, verbose,
                    quantize, calibration, method, percentile, per_channel, activation_type, accel_config,
                    cache_dir, no_cache, jobs, dump_ir):
    """Compile MODEL (an ONNX file) into an artifact."""
    from .driver import CompileOptions, compile_model

    quantization = _quantize_options(quantize, calibration, method, percentile, per_channel, activation_type)
    targets = tuple(t.strip() for t in target.split(",") if t.strip())
    extra = _accel_config_option(accel_config, targets)
    options = CompileOptions(
        targets=targets,
        shapes=tuple(_parse_shape(s) for s in shapes), disabled_passes=frozenset(disabled),
        print_after=frozenset(print_after), verify_each=verify_each, isa=isa,
        quantize=quantization, calibration=str(calibration) if calibration is not None else None,
        extra=extra)
    log = (lambda m: click.echo(m, err=True)) if verbose or print_after else (lambda m: None)
    if jobs < 1:
        raise LoweringError(f"--jobs must be >= 1, got {jobs}")
    cache = None
    if not no_cache:
        from .cache import BuildCache, default_cache_dir

        cache = BuildCache(cache_dir if cache_dir is not None else default_cache_dir(), log=log)
    elif cache_dir is not None:
        raise LoweringError("--cache-dir and --no-cache contradict each other")
    progress = (lambda m: click.echo(m, err=True)) if _stderr_is_a_terminal() else None
    if dump_ir is not None:
        _dump_ir(model, options, dump_ir, cache, log)
    result = compile_model(model, output=output, options=options, log=log, cache=cache, jobs=jobs,
                           progress=progress)
    for name, entry in result.report["targets"].items():
        _print_target_summary(name, entry, result.report["source"]["nodes"])
    if "quantization" in result.report:
        from .quantize import format_report

        click.echo(format_report(result.report["quantization"]))
    click.echo(f"wrote {result.path}")


def _dump_ir(model: Path, options, directory: Path, cache, log) -> None:
    """``--dump-ir DIR``: import (and quantize, through the build cache when there is one) and run the first
    target's passes once more, writing the IR after each. A pass that fails stops the dump quietly: the
    build that follows reports the error."""
    from . import driver
    from .bisect import dump_ir

    proto = driver.load_model_proto(model)
    driver._check_declared_shapes(proto, model.name, dict(options.shapes))
    if options.quantize is not None:
        digest = driver._model_digest(proto, model.read_bytes()) if cache is not None else ""
        proto = driver._quantize_cached(model, digest, options, cache, log)[0]
    try:
        written = dump_ir(proto, model.name, options, directory)  # the build below logs the passes
    except LoweringError:
        raise
    except Exception as exc:  # noqa: BLE001 - the build below fails the same way, with its own message
        log(f"--dump-ir: stopped at a failing pass ({type(exc).__name__})")
        click.echo(f"wrote the IR up to the failing pass to {directory}", err=True)
        return
    click.echo(f"wrote {len(written)} IR dumps to {directory}")


def _stderr_is_a_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _accel_config_option(spec: str | None, targets: tuple[str, ...]) -> tuple:
    """``--accel-config`` as the target option ``accel_config`` (checked here: a preset or a valid JSON
    config file), or ``()`` when not given."""
    if spec is None:
        return ()
    if "custom" not in targets:
        raise LoweringError(f"--accel-config configures the NPU-1 of --target custom; the targets are "
                            f"{','.join(targets)}")
    from runtime.accel.config import PRESETS, load_config
    from runtime.accel.errors import AccelError

    if spec not in PRESETS:
        path = Path(spec)
        if not path.is_file():
            raise LoweringError(f"--accel-config {spec}: not a preset ({', '.join(sorted(PRESETS))}) nor a "
                                "JSON file")
        try:
            load_config(path)
        except (AccelError, OSError, UnicodeDecodeError, TypeError) as exc:
            raise LoweringError(f"--accel-config {spec}: {exc}") from None
        spec = str(path.resolve())
    return (("accel_config", spec),)


def _print_target_summary(name: str, entry: dict, source_nodes: int) -> None:
    """One target's line of the compile output, and what ran where and why (fallbacks grouped by reason)."""
    kernels = entry["kernels"]
    plan = entry["memory_plan"] or {}
    if name == "custom":
        npu = [k for k in kernels if k.get("target") == "npu"]
        segments = entry["partition"]["segments"]
        on_npu = sum(len(s["nodes"]) for s in segments if s["target"] == name)
        click.echo(f"{name}: {source_nodes} ONNX nodes -> {len(npu)} NPU-1 layers in "
                   f"{sum(s['target'] == name for s in segments)} accelerator segment(s), "
                   f"{len(kernels) - len(npu)} host kernels; predicted "
                   f"{sum(k.get('predicted_cycles', 0) for k in npu):,} cycles, "
                   f"{sum(k.get('predicted_dram_bytes', 0) for k in npu):,} DRAM bytes")
        placed = f"{on_npu} graph nodes on the NPU"
    else:
        click.echo(f"{name}: {source_nodes} ONNX nodes -> {len(kernels)} kernels, "
                   f"arena {plan.get('arena_bytes', 0) / 1024:.1f} KiB "
                   f"(naive {plan.get('naive_bytes', 0) / 1024:.1f} KiB, lower bound "
                   f"{plan.get('lower_bound_bytes', 0) / 1024:.1f} KiB)")
        placed = f"all nodes on {name}"
    fallbacks = entry["partition"]["fallbacks"]
    if not fallbacks:
        click.echo(f"  placement: {placed}")
        return
    click.echo(f"  placement: {placed}, {len(fallbacks)} on the host (cpu):")
    groups: dict[str, list[str]] = {}
    for f in fallbacks:
        groups.setdefault(f["reason"], []).append(f["node"])
    for reason, nodes in groups.items():
        shown = ", ".join(nodes[:2]) + (f" and {len(nodes) - 2} more" if len(nodes) > 2 else "")
        click.echo(f"    {shown} -> host: {reason}")


def _quantize_options(quantize, calibration, method, percentile=None, per_channel=None, activation_type=None):
    """The compile command's --quantize and its options (the same as `lower quantize`'s) as a
    QuantizeConfig (or None)."""
    given = {"--calibration": calibration, "--method": method, "--percentile": percentile,
             "--per-channel/--per-tensor": per_channel, "--activation-type": activation_type}
    if quantize is None:
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            raise LoweringError(f"{' and '.join(stray)} need{'s' if len(stray) == 1 else ''} --quantize int8")
        return None
    from .quantize import QuantizeConfig

    if percentile is not None and method != "percentile":
        raise LoweringError("--percentile needs --method percentile")
    return QuantizeConfig(method=method or "minmax", percentile=99.999 if percentile is None else percentile,
                          per_channel=True if per_channel is None else per_channel,
                          activation_type=activation_type or "int8")


def _load_inputs(path: Path | None, session, seed: int) -> dict[str, np.ndarray]:
    if path is None:
        rng = np.random.default_rng(seed)
        bounds = _index_bounds(session)
        return {i.name: random_input(rng, i.dtype, i.shape, bounds.get(i.name)) for i in session.inputs}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise LoweringError(f"{path}: cannot read inputs as .npz ({exc})") from None


def _index_bounds(session) -> dict[str, int]:
    """Gather-index inputs and their bounds (:func:`lowering.inputs.index_bounds`), read from the artifact's
    optimized graph; empty if it has none or cannot be read."""
    from .onnx.importer import import_model, load_model_bytes

    try:
        graph = import_model(load_model_bytes(session.artifact.read("graph.onnx")), name="graph.onnx")
    except Exception:  # an artifact without a readable graph: plain small integers
        return {}
    return index_bounds(graph)


def _open_session(artifact: Path, target: str | None, threads: int | None):
    import runtime

    return runtime.load(artifact, target=target, threads=threads)


@cli.command("run")
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--inputs", type=click.Path(dir_okay=False, path_type=Path), help=".npz keyed by input name "
              "(default: seeded random inputs).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write outputs to this .npz.")
@click.option("--target", default=None, help="Run this target (default: the best one available).")
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: all cores).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random inputs.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the run's report (the custom target: NPU-1 simulator report per segment and "
                   "totals): JSON, or with a path ending in .html one self-contained page with the "
                   "artifact's graph, passes and memory plan, the per-layer table, roofline and energy "
                   "(needs matplotlib: pip install 'lowering[report]').")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a Chrome trace (chrome://tracing, Perfetto) of the NPU-1 segments (custom target).")
@click.option("--profile", "profile_runs", type=int, default=None, metavar="RUNS",
              help="cpu target: time every kernel over RUNS inferences and print them, slowest first, with "
                   "GFLOP/s and GB/s (add --json-profile FILE for all of them).")
@click.option("--json-profile", "profile_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --profile: write the per-kernel table as JSON.")
def run_command(artifact, inputs, output, target, threads, seed, report_path, trace_path, profile_runs,
                profile_path):
    """Run ARTIFACT on inputs (or random data) and print its outputs.

    The simulated accelerator (target custom) runs only when asked for with --target custom; it then
    prints a summary of the simulation (cycles, MAC utilisation, DRAM traffic, energy)."""
    html_report = report_path is not None and report_path.suffix.lower() in (".html", ".htm")
    if html_report:
        from .report_html import require_matplotlib

        require_matplotlib()  # before a long simulation, not after it
    sess = _open_session(artifact, target, threads)
    feed = _load_inputs(inputs, sess, seed)
    if profile_path is not None and profile_runs is None:
        raise LoweringError("--json-profile needs --profile RUNS")
    if profile_runs is not None:
        _print_profile(sess, feed, profile_runs, profile_path)
    outs = sess.run(None, feed)
    click.echo(f"target: {sess.target}")
    for kind, why in sess.skipped.items():
        click.echo(f"  (skipped {kind}: {why})")
    report = sess.last_report
    if report is not None:
        for line in _report_summary(report):
            click.echo(line)
    for info, value in zip(sess.outputs, outs):
        flat = value.reshape(-1)
        preview = np.array2string(flat[:6], precision=5, separator=", ")
        more = " ..." if flat.size > 6 else ""
        click.echo(f"{info.name}: {value.dtype}{list(value.shape)} {preview}{more}")
    if output is not None:
        np.savez(output, **{info.name: v for info, v in zip(sess.outputs, outs)})
        click.echo(f"wrote {output}")
    if report_path is not None:
        if report is None:
            raise LoweringError(f"--report: target {sess.target} keeps no run report (try --target custom)")
        if html_report:
            from .report_html import write_run_page

            write_run_page(report_path, artifact, report, sess.target, trace_path)
        else:
            _write_json(report_path, report)
        click.echo(f"wrote {report_path}")
    if trace_path is not None:
        trace = sess.last_trace()
        if trace is None:
            raise LoweringError(f"--trace: target {sess.target} records no trace (try --target custom)")
        _write_json(trace_path, trace, indent=None)
        click.echo(f"wrote {trace_path}")


def _print_profile(sess, feed, runs: int, path: Path | None) -> None:
    """``lower run --profile``: per-kernel times joined with the report's kernel records."""
    from runtime.errors import TargetUnavailableError

    if runs < 1:
        raise LoweringError(f"--profile must be >= 1, got {runs}")
    try:
        rows = sess.profile(feed, runs=runs)
    except TargetUnavailableError as exc:
        raise LoweringError(f"--profile: {exc}") from None
    artifact = sess.artifact
    report = json.loads(artifact.read("report.json")) if "report.json" in artifact.manifest["members"] else {}
    records = {k["name"]: k for k in report.get("targets", {}).get(sess.target, {}).get("kernels", [])}
    total = sum(r["ms"] for r in rows) or 1e-12
    for r in rows:
        k = records.get(r["kernel"], {})
        seconds = r["ms"] / 1e3
        moved = k.get("bytes_read", 0) + k.get("bytes_written", 0)
        r.update(op=k.get("op", "?"), sources=k.get("sources", []), flops=k.get("flops", 0), bytes=moved,
                 share=r["ms"] / total, gflops=k.get("flops", 0) / seconds / 1e9 if seconds > 0 else 0.0,
                 gbytes=moved / seconds / 1e9 if seconds > 0 else 0.0)
    click.echo(f"profile: {sess.target}, {runs} run(s), {total:.3f} ms in {len(rows)} kernels "
               f"(mean per inference; slowest first)")
    click.echo(f"  {'kernel':<34} {'op':<26} {'ms':>8} {'share':>6} {'GFLOP/s':>8} {'GB/s':>7}")
    slowest = sorted(rows, key=lambda r: -r["ms"])
    for r in slowest[:25]:
        click.echo(f"  {r['kernel'][:34]:<34} {r['op'][:26]:<26} {r['ms']:8.3f} {100 * r['share']:5.1f}% "
                   f"{r['gflops']:8.1f} {r['gbytes']:7.1f}")
    if len(rows) > 25:
        click.echo(f"  ... {len(rows) - 25} more ({sum(r['ms'] for r in slowest[25:]):.3f} ms)")
    if path is not None:
        _write_json(path, {"target": sess.target, "runs": runs, "threads": sess._executor.threads or None,
                           "total_ms": total, "kernels": rows})
        click.echo(f"wrote {path}")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_json(path: Path, data, indent: int | None = 1) -> None:
    try:
        path.write_text(json.dumps(data, indent=indent, sort_keys=True, default=_json_default) + "\n")
    except OSError as exc:
        raise LoweringError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _report_summary(report: dict) -> list[str]:
    """A few lines from a custom-target run report: cycles, MAC utilisation, DRAM bytes, energy."""
    s = report["summary"]
    d, e = s["dram"], s["energy_pj"]
    ops = report.get("operators", {})
    comp = d.get("compulsory_bytes")
    lines = [f"npu: {s['segments']} segment(s), {s['cycles']:,} cycles ({s['time_us']:.1f} us at "
             f"config {s.get('config', '?')}), mac_util {100 * s['mac_util']:.1f}%, "
             f"{s['macs_useful']:,} MACs",
             f"npu DRAM: read {d['read_bytes']:,} B, write {d['write_bytes']:,} B, "
             f"total {d['bytes_total']:,} B"
             + (f" ({d['bytes_total'] / comp:.2f}x compulsory {comp:,} B)" if comp else ""),
             *([f"npu DRAM with the exhaustive search's fewest-bytes tilings: {d['best_tiling_bytes']:,} B "
                f"(chosen tilings {d['ratio_to_best_tiling']:.3f}x that)"]
               if d.get("best_tiling_bytes") else []),
             f"npu energy ({e['preset']}): {e['total'] / 1e6:.3f} uJ, {e['pj_per_mac']:.3f} pJ/MAC"]
    host = (report.get("wall") or {}).get("host") or []
    if host:
        lines.append(f"host: {len(host)} step(s), {sum(h['time_s'] for h in host) * 1e3:.3f} ms")
    if ops:
        lines.append(f"operators: npu {ops.get('npu')}"
                     + (f", host {ops['host']}" if ops.get("host") is not None else ""))
    return lines


@cli.command("verify")
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The source ONNX model (run with ONNX Runtime as the reference).")
@click.option("--inputs", type=click.Path(dir_okay=False, path_type=Path), help=".npz keyed by input name.")
@click.option("--rtol", type=float, default=1e-4, show_default=True)
@click.option("--atol", type=float, default=1e-4, show_default=True)
@click.option("--target", default=None, help="Verify this target (default: the best one available).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--bisect", is_flag=True,
              help="Per-pass numerical bisect: re-import MODEL with the artifact's recorded options, run the "
                   "reference interpreter after import and after every pass of the target's pipeline, then "
                   "the artifact, all against ONNX Runtime; name the first pass (or the target's code "
                   "generation) out of tolerance. For a quantized model, MODEL is the QDQ model and "
                   "--atol should allow one quantization step.")
@click.option("--emulate", is_flag=True,
              help="With --target cuda: run the cuda target's kernels on the CPU emulator (the same "
                   "kernels.cu compiled as host C++, every thread in turn, a block's threads meeting at "
                   "each barrier), for a machine without a GPU.")
def verify_command(artifact, model, inputs, rtol, atol, target, seed, as_json, bisect, emulate):
    """Run ARTIFACT and ONNX Runtime on the same inputs; exit 1 on mismatch.

    With --bisect: a table of every stage (import, each pass, the artifact) with each output's max and
    mean abs error against ONNX Runtime and against the stage before, and SQNR; exit 1 names the first
    stage out of tolerance."""
    from .verify import compare_with_onnxruntime

    if emulate:
        if target != "cuda" or bisect:
            raise LoweringError("--emulate needs --target cuda (and no --bisect)")
        from targets.cuda.emulate import EmulatedSession

        sess = EmulatedSession(artifact)
    else:
        sess = _open_session(artifact, target, None)
    feed = _load_inputs(inputs, sess, seed)
    if bisect:
        from .bisect import bisect as run_bisect
        from .bisect import format_bisect

        result = run_bisect(sess, model, feed, rtol=rtol, atol=atol)
        click.echo(json.dumps(result, indent=2) if as_json else format_bisect(result))
        sys.exit(EXIT_OK if result["ok"] else EXIT_MISMATCH)
    result = compare_with_onnxruntime(sess, model, feed, rtol=rtol, atol=atol)
    if not result["same_model"]:
        click.echo(f"note: {model} is not the model {artifact} was built from (its SHA-256 differs)",
                   err=True)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"target {result['target']} vs onnxruntime {result['onnxruntime']} "
                   f"(rtol {rtol:g}, atol {atol:g})")
        for o in result["outputs"]:
            click.echo(f"  {o['name']}: max abs err {o['max_abs_error']:.3e}, max rel err "
                       f"{o['max_rel_error']:.3e}, mismatched {o['mismatched']}/{o['size']} "
                       f"{'ok' if o['ok'] else 'MISMATCH'}")
        click.echo("PASS" if result["ok"] else "FAIL")
    sys.exit(EXIT_OK if result["ok"] else EXIT_MISMATCH)


@cli.command("inspect")
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and report as JSON.")
def inspect_command(artifact, as_json):
    """Show ARTIFACT's manifest, targets, passes, kernels and memory plan."""
    from .inspect import describe

    click.echo(describe(artifact, as_json=as_json))


@cli.command("disasm")
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--step", "steps", multiple=True, metavar="NAME",
              help="Only this NPU step (e.g. npu0). Repeatable.")
def disasm_command(artifact, steps):
    """List the NPU-1 programs of ARTIFACT's custom target: per NPU step, the tensor table and every
    instruction with its layer and ONNX nodes."""
    from runtime.accel.config import AccelConfig
    from runtime.accel.errors import AccelError
    from runtime.accel.program import disasm, unpack
    from runtime.artifact import open_artifact

    art = open_artifact(artifact)
    entry = art.targets.get("custom")
    if not isinstance(entry, dict) or entry.get("kind", "custom") != "custom":
        built = ", ".join(sorted(art.targets)) or "none"
        raise LoweringError(f"{artifact}: no custom target (built: {built}); compile with --target custom")
    try:
        cfg = AccelConfig.from_dict(json.loads(art.read(entry["config"]).decode()))
    except (KeyError, TypeError, ValueError) as exc:
        raise LoweringError(f"{artifact}: custom target: bad accelerator config ({exc})") from None
    npu = [s for s in entry.get("steps", []) if isinstance(s, dict) and s.get("kind") == "npu"]
    unknown = sorted(set(steps) - {s.get("name") for s in npu})
    if unknown:
        raise LoweringError(f"--step {', '.join(unknown)}: no such NPU step (NPU steps: "
                            f"{', '.join(str(s.get('name')) for s in npu) or 'none'})")
    for s in npu:
        if steps and s.get("name") not in steps:
            continue
        member = s.get("program")
        try:
            program = unpack(art.read(member), cfg)
        except AccelError as exc:
            raise LoweringError(f"{artifact}: step {s.get('name')}: member '{member}': {exc}") from None
        ins, outs = ", ".join(s.get("inputs", [])) or "-", ", ".join(s.get("outputs", [])) or "-"
        click.echo(f"; ==== step {s.get('name')} ({member}), config {cfg.name}: {ins} -> {outs}")
        click.echo(disasm(program), nl=False)


@cli.command("bench")
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="The ONNX model ONNX Runtime runs for comparison (the source, or its QDQ form).")
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path),
              help="custom target: a second artifact (e.g. built with --disable-pass npu_residency) whose "
                   "simulated cycles, DRAM bytes and energy are shown side by side with ARTIFACT's. A path "
                   "ending in .json means --baseline-json.")
@click.option("--baseline-json", "baseline_json", type=click.Path(dir_okay=False, path_type=Path),
              help="Performance gate: a previous `lower bench --json` result; exit 1 when ARTIFACT is slower "
                   "than it by more than --max-regression, compared relative to ONNX Runtime measured in the "
                   "same run (CI machines differ), and only when the slowdown exceeds the measurement noise.")
@click.option("--max-regression", default="5%", show_default=True, metavar="PCT",
              help="With --baseline-json: the slowdown allowed, e.g. 5% (or 5).")
@click.option("--threads", type=int, default=1, show_default=True, help="Intra-op threads, both sides.")
@click.option("--inputs", type=click.Path(dir_okay=False, path_type=Path), help=".npz keyed by input name.")
@click.option("--target", default=None, help="Benchmark this target (default: the best one available).")
@click.option("--warmup", type=int, default=3, show_default=True)
@click.option("--repeats", type=int, default=10, show_default=True, help="Minimum timed runs per side.")
@click.option("--min-seconds", type=float, default=2.0, show_default=True,
              help="Minimum measured time per side.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--interleave", type=click.Choice(["block", "run"]), default="block", show_default=True,
              help="Alternate the sides in blocks of ~0.25 s, each timed after 30 ms of untimed runs (both "
                   "runtimes' idle threads spin for a while after a run), or every run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the result as JSON to this file.")
def bench_command(artifact, model, baseline, baseline_json, max_regression, threads, inputs, target, warmup,
                  repeats, min_seconds, seed, interleave, json_path):
    """Time ARTIFACT against ONNX Runtime on the same inputs, interleaved, same thread count.

    With --baseline (custom target): the simulated cycles, DRAM traffic and energy of ARTIFACT and
    BASELINE side by side, on the same inputs.

    With --baseline-json PREV.json (a CI gate): exit 1 when ARTIFACT's time relative to ONNX Runtime grew
    by more than --max-regression and more than the noise of the two runs (both spreads are printed);
    --json writes this run's result, the next run's baseline.
    """
    from .bench import (
        BenchConfig,
        benchmark,
        format_gate,
        format_result,
        format_simulated,
        load_baseline,
        parse_margin,
        regression_gate,
        simulated,
    )

    if baseline is not None and baseline.suffix.lower() == ".json":
        if baseline_json is not None:
            raise LoweringError("--baseline X.json means --baseline-json X.json; give only one of them")
        baseline, baseline_json = None, baseline
    if baseline is not None and baseline_json is not None:
        raise LoweringError("--baseline (a second artifact, simulated) and --baseline-json (a timing gate) "
                            "do not go together")
    margin = parse_margin(max_regression)
    previous = load_baseline(baseline_json) if baseline_json is not None else None
    if baseline is not None:
        sessions = {"artifact": _open_session(artifact, target or "custom", threads),
                    "baseline": _open_session(baseline, target or "custom", threads)}
        result = simulated(sessions, _load_inputs(inputs, sessions["artifact"], seed))
        result["paths"] = {"artifact": str(artifact), "baseline": str(baseline)}
        click.echo(f"{artifact} vs {baseline} (simulated, target {sessions['artifact'].target})")
        click.echo(format_simulated(result))
        if json_path is not None:
            json_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        return
    if model is None:
        raise LoweringError("lower bench needs --model (the ONNX model ONNX Runtime runs), or --baseline "
                            "for a simulated side-by-side of two custom-target artifacts")
    config = BenchConfig(threads=threads, warmup=warmup, min_repeats=repeats,
                         max_repeats=max(repeats, 1000), min_seconds=min_seconds, interleave=interleave)
    sess = _open_session(artifact, target, threads)
    result = benchmark(sess, model, _load_inputs(inputs, sess, seed), config)
    click.echo(format_result(result))
    gate = None
    if previous is not None:
        gate = regression_gate(result, previous, margin)
        click.echo(format_gate(gate, baseline_json))
        result = {**result, "gate": {**gate, "baseline": str(baseline_json)}}
    if json_path is not None:
        _write_json(json_path, result, indent=2)
    if gate is not None and not gate["passed"]:
        sys.exit(EXIT_MISMATCH)


@cli.command("merge")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The merged artifact (written atomically; may be one of the inputs).")
@click.option("-v", "--verbose", is_flag=True, help="Say which targets come from which input.")
def merge_command(artifacts, output, verbose):
    """Combine ARTIFACTS of the same model built on different machines (e.g. a CI matrix: cuda on one
    runner, cpu on another) into one artifact with every target.

    Refused, with the field that differs: different source models (model.sha256), lowering versions,
    compile options (other than the target list) or signatures; a target present in two inputs unless
    byte-identical. Targets keep the order in which they first appear, so `lower merge cpu.lwr cuda.lwr`
    equals `lower --target cpu,cuda` byte for byte."""
    from .merge import merge_artifacts

    log = (lambda m: click.echo(m, err=True)) if verbose else (lambda m: None)
    manifest = merge_artifacts(list(artifacts), output, log=log)
    click.echo(f"wrote {output} (targets: {', '.join(manifest['options']['targets'])})")


@cli.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="A .npz keyed by input name, samples stacked along axis 0, or a folder of them (or of "
                   "one <input name>.npy per input). "
                   "Without it: 32 generated random samples, with a warning (the accuracy on real inputs "
                   "is then unknown).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="QDQ model path (default: MODEL with .int8.onnx).")
@click.option("--method", type=click.Choice(_QUANT_METHODS), default="minmax", show_default=True,
              help="How activation ranges are chosen from the calibration data.")
@click.option("--percentile", type=float, default=99.999, show_default=True,
              help="Percentile kept by --method percentile.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True,
              help="One weight scale per output channel, or one per weight tensor.")
@click.option("--activation-type", type=click.Choice(["int8", "uint8"]), default="int8", show_default=True,
              help="Activation integer type (asymmetric, per tensor).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the quantization report (JSON) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def quantize_command(model, calibration, output, method, percentile, per_channel, activation_type,
                     report_path, as_json):
    """Calibrate MODEL on DATA and write an int8 QDQ ONNX model that ONNX Runtime runs.

    Weights: symmetric int8, per output channel (or per tensor); activations: asymmetric, per tensor;
    bias: int32. Prints per-layer scales and SQNR, and output cosine / top-1 agreement against fp32.
    """
    from .quantize import QuantizeConfig, format_report, quantize_model

    config = QuantizeConfig(method=method, percentile=percentile, per_channel=per_channel,
                            activation_type=activation_type)
    if output is None:
        output = model.with_name(model.name[:-len(model.suffix)] + ".int8.onnx" if model.suffix
                                 else model.name + ".int8.onnx")
    result = quantize_model(model, calibration, output, config)
    text = json.dumps(result.report, indent=2, sort_keys=True)
    if report_path is not None:
        report_path.write_text(text + "\n")
    click.echo(text if as_json else format_report(result.report))
    if not as_json:
        click.echo(f"wrote {result.path}" + (f" and {report_path}" if report_path is not None else ""))


cli.add_command(report_command)
cli.add_command(cache_command)


def _one_line(exc: BaseException) -> str:
    """An error message on one line (tool output such as ONNX's shape inference or a C compiler's errors
    can span several): its lines joined with " | "."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines)


def main(argv=None) -> int:
    """Entry point of ``lower``: returns the exit code instead of raising for a user's mistake."""
    from runtime.errors import InvalidInputError, RuntimeLoadError

    try:
        cli.main(args=argv, prog_name="lower", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return EXIT_BAD_INPUT
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except (LoweringError, RuntimeLoadError, InvalidInputError) as exc:
        click.echo(f"error: {_one_line(exc)}", err=True)
        return EXIT_BAD_INPUT
    except RuntimeError as exc:
        from runtime.backends.custom import CustomStepError

        if not isinstance(exc, CustomStepError):
            raise
        click.echo(f"error: {_one_line(exc)}", err=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""The README's speed table: every zoo model compiled for the cpu target and timed against ONNX Runtime.

    python examples/export_zoo.py OUTDIR                       # export the models (needs torch)
    python examples/bench_zoo.py OUTDIR [--threads 1 2] [--models bert,vit] [--min-seconds 2]

For each model and thread count: ``lower OUTDIR/<model>.onnx --target cpu`` (once per model), then the
same measurement as ``lower bench OUTDIR/<model>.lwr --model OUTDIR/<model>.onnx --inputs
OUTDIR/<model>_input.npz --threads N`` (both sides in this process, alternating in blocks). Prints a
Markdown table (median latencies, speed-up = ONNX Runtime / lowering, p90 speed-up) with the geometric mean
of the speed-ups per thread count, and writes every result to OUTDIR/bench_zoo.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mlp", "resnet18", "mobilenetv2", "bert", "gpt2", "vit")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--min-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import runtime
    from lowering.bench import BenchConfig, benchmark
    from lowering.driver import CompileOptions, compile_model

    results = []
    for name in args.models.split(","):
        model = args.outdir / f"{name}.onnx"
        if not model.is_file():
            print(f"{model}: missing (run examples/export_zoo.py {args.outdir} first)", file=sys.stderr)
            return 2
        artifact = args.outdir / f"{name}.lwr"
        compile_model(model, output=artifact, options=CompileOptions(targets=("cpu",)))
        with np.load(args.outdir / f"{name}_input.npz") as data:
            feed = {k: data[k] for k in data.files}
        for threads in args.threads:
            sess = runtime.load(artifact, target="cpu", threads=threads)
            config = BenchConfig(threads=threads, min_seconds=args.min_seconds)
            result = benchmark(sess, model, feed, config)
            result["name"] = name
            results.append(result)
            print(f"{name} t{threads}: {result['lowering']['median_ms']:.3f} ms vs onnxruntime "
                  f"{result['onnxruntime']['median_ms']:.3f} ms: {result['speedup']:.2f}x", file=sys.stderr)
    (args.outdir / "bench_zoo.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(table(results, args.threads))
    return 0


def table(results: list[dict], threads: list[int]) -> str:
    lines = ["| model | threads | lowering median (ms) | ONNX Runtime median (ms) | speed-up "
             "| p90 speed-up |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['threads']} | {r['lowering']['median_ms']:.3f} | "
                     f"{r['onnxruntime']['median_ms']:.3f} | {r['speedup']:.2f}x | {r['speedup_p90']:.2f}x |")
    for t in threads:
        ups = [r["speedup"] for r in results if r["threads"] == t]
        if ups:
            geo = math.exp(sum(math.log(u) for u in ups) / len(ups))
            lines.append(f"| **geometric mean** | {t} | | | **{geo:.2f}x** | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""A fuzzing campaign; prints the outcome counts and every problem, exits 1 when there was one.

    python -m tests.fuzz [--models N] [--artifacts M] [--seed S] [--target T [--qdq]] [--real-cc]
                         [--workdir DIR]
    python -m tests.fuzz --hypothesis N [--artifacts M] [--real-cc] [--shrink] [--workdir DIR]

``--hypothesis N``: the hypothesis plans of ``strategies.py`` under the ``campaign`` profile, N mutated
models (and M artifacts, default N); every case runs and each problem is listed (``--shrink``: stop at the
first problem and shrink it to a minimal plan instead).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .mutators import base_model, fuzz_artifacts, fuzz_models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--models", type=int, default=500, help="mutated models through `lower`")
    parser.add_argument("--artifacts", type=int, default=2000, help="damaged artifacts through runtime.load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-cc", action="store_true", help="compile successes with the real C compiler")
    parser.add_argument("--target", default="cpu", help="the target(s) mutated models are built for")
    parser.add_argument("--qdq", action="store_true", help="mutate the int8 QDQ model (for --target custom)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep cases and problems here")
    parser.add_argument("--hypothesis", type=int, default=None, metavar="N",
                        help="hypothesis plans (campaign profile): N models, --artifacts (default N)")
    parser.add_argument("--shrink", action="store_true",
                        help="with --hypothesis: stop at the first problem and shrink it")
    args = parser.parse_args(argv)
    if args.hypothesis is not None:
        artifacts = args.artifacts if any(a.startswith("--artifacts") for a in (argv or sys.argv[1:])) \
            else args.hypothesis
        return _hypothesis(args.hypothesis, artifacts, args)
    import onnx

    from lowering.cli import main as lower

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lowering-fuzz-"))
    problems = 0
    start = time.perf_counter()
    if args.models:
        counts = fuzz_models(args.models, args.seed, workdir / "models", real_cc=args.real_cc,
                             target=args.target, qdq=args.qdq)
        problems += counts["problem"]
        print(f"models: {args.models} cases in {time.perf_counter() - start:.0f} s: "
              f"{dict(sorted(counts.items()))}")
    if args.artifacts:
        start = time.perf_counter()
        base = workdir / "base"
        base.mkdir(parents=True, exist_ok=True)
        onnx.save(base_model(args.seed), base / "m.onnx")
        if lower([str(base / "m.onnx"), "-o", str(base / "m.lwr")]) != 0:
            print("could not build the base artifact", file=sys.stderr)
            return 2
        counts = fuzz_artifacts(args.artifacts, args.seed, base / "m.lwr", workdir / "artifacts")
        problems += counts["problem"]
        print(f"artifacts: {args.artifacts} cases in {time.perf_counter() - start:.0f} s: "
              f"{dict(sorted(counts.items()))}")
    print(f"{problems} problem(s); cases kept under {workdir}")
    return 1 if problems else 0


def _hypothesis(models: int, artifacts: int, args) -> int:
    import os

    os.environ.setdefault("HYPOTHESIS_PROFILE", "campaign")
    try:
        from .strategies import PROFILE, PROFILE_ERROR, run_artifacts, run_models
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        print("error: --hypothesis needs hypothesis (pip install -e '.[dev]')", file=sys.stderr)
        return 2

    if PROFILE_ERROR:
        print(f"error: {PROFILE_ERROR}", file=sys.stderr)
        return 2

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lowering-fuzz-"))
    problems = 0
    for kind, count, run in (("models", models, run_models), ("artifacts", artifacts, run_artifacts)):
        if not count:
            continue
        start = time.perf_counter()
        options = {"real_cc": args.real_cc, "seed": args.seed} if kind == "models" else {}
        try:
            counts, found = run(workdir / kind, max_examples=count, raise_on_problem=args.shrink, **options)
        except AssertionError as exc:  # --shrink: hypothesis' minimal failing plan
            print(f"{kind}: problem (shrunk): {exc}")
            problems += 1
            continue
        for line in found:
            print(line)
        problems += counts["problem"]
        print(f"hypothesis ({PROFILE}) {kind}: {sum(counts.values()) - counts['problem']} cases in "
              f"{time.perf_counter() - start:.0f} s: {dict(sorted(counts.items()))}")
    print(f"{problems} problem(s); cases kept under {workdir}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

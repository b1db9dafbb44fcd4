"""A fuzzing campaign; prints the outcome counts and every problem, exits 1 when there was one.

    python -m tests.fuzz [--models N] [--artifacts M] [--seed S] [--target T [--qdq]] [--real-cc]
                         [--workdir DIR]
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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())

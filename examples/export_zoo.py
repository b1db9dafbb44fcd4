"""Export the benchmark models to ONNX, so anyone can reproduce the benchmark table.

    python examples/export_zoo.py OUTDIR [--exporter legacy|dynamo] [--opset N] [--models bert,gpt2]

writes ``OUTDIR/<model>.onnx`` and ``OUTDIR/<model>_input.npz`` (seeded example inputs keyed by input
name: token ids in range, an attention mask with padding) for the benchmark-size transformers of the test
zoo (``bert``: hidden 256, 4 layers, 4 heads, sequence 128; ``gpt2``: the same size; ``vit``: ViT-S/16 at
224x224) and three CNN baselines (``mlp``, ``resnet18``, ``mobilenetv2``). Then, per model::

    lower OUTDIR/bert.onnx --target cpu -o OUTDIR/bert.lwr
    lower bench OUTDIR/bert.lwr --model OUTDIR/bert.onnx --inputs OUTDIR/bert_input.npz --threads 1

Needs torch (``pip install -e .[torch]``); the models are plain torch code with seeded random weights
(``tests/zoo/models.py``), so no download is involved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("bert", "gpt2", "vit", "mlp", "resnet18", "mobilenetv2")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy")
    parser.add_argument("--opset", type=int, default=None, help="default: 17 (legacy), 18 (dynamo)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo model names")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # the zoo lives with the tests
    from tests.zoo.export import example_inputs, export

    opset = args.opset or (17 if args.exporter == "legacy" else 18)
    args.outdir.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        path = export(name, args.outdir / f"{name}.onnx", args.exporter, opset)
        np.savez(args.outdir / f"{name}_input.npz", **example_inputs(name))
        size = path.stat().st_size / 2 ** 20
        print(f"{name}: {path} ({size:.1f} MiB, {args.exporter} exporter, opset {opset})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a small CNN on scikit-learn's bundled handwritten digits and export it for quantization.

    python examples/digits/train.py [--out DIR] [--epochs 15] [--seed 0]

Writes into DIR (default: this folder):
  digits.onnx       the trained model (legacy torch exporter, opset 17), input "x" float32 (1, 1, 8, 8),
                    output "logits" (1, 10)
  calibration.npz   "x": the first --calibration-samples training images, shape (N, 1, 8, 8), float32
  test.npz          "x": the held-back images (N, 1, 8, 8) float32, "y": their labels (N,) int64

The data is ``sklearn.datasets.load_digits`` (1797 8x8 images shipped with scikit-learn, no download),
pixel values 0..16 scaled to [0, 1], split 70/30 with a fixed seed, stratified by label. Needs the
``[torch]`` extra (torch, scikit-learn). Then:

    lower quantize DIR/digits.onnx --calibration DIR/calibration.npz -o DIR/digits.int8.onnx
    python examples/digits/evaluate.py --dir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_data(seed: int):
    """(x_train, y_train, x_test, y_test): float32 images (N, 1, 8, 8) in [0, 1], int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def build_model():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),  # 32 x 4 x 4
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def train(x_train, y_train, epochs: int, seed: int, batch: int = 64, lr: float = 3e-3):
    import torch

    torch.manual_seed(seed)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=gen)
        for start in range(0, len(xs), batch):
            idx = order[start:start + batch]
            opt.zero_grad()
            loss_fn(model(xs[idx]), ys[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model, path: Path) -> None:
    import torch

    example = torch.zeros(1, 1, 8, 8)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"], do_constant_folding=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration-samples", type=int, default=300)
    args = parser.parse_args(argv)

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and never spins against other work
    try:
        x_train, y_train, x_test, y_test = load_data(args.seed)
        model = train(x_train, y_train, args.epochs, args.seed)
    finally:
        torch.set_num_threads(threads)
    args.out.mkdir(parents=True, exist_ok=True)
    export(model, args.out / "digits.onnx")
    np.savez(args.out / "calibration.npz", x=x_train[:args.calibration_samples])
    np.savez(args.out / "test.npz", x=x_test, y=y_test)
    summary = {"train_samples": len(x_train), "test_samples": len(x_test),
               "calibration_samples": min(args.calibration_samples, len(x_train)),
               "train_accuracy": accuracy(model, x_train, y_train),
               "test_accuracy": accuracy(model, x_test, y_test), "out": str(args.out)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

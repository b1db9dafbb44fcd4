"""Build the bundled example: ``examples/cnn.onnx``, ``examples/cnn_input.npz`` and ``cnn_calibration.npz``.

A small ResNet-style CIFAR-sized classifier (stem conv, two residual blocks, the second strided with a 1x1
projection, global average pool, Linear; about 14k parameters), seeded, its BatchNorm statistics
randomised so they matter, exported by torch's legacy (TorchScript) exporter at opset 17 with input
``input`` (1x3x32x32, float32) and output ``logits`` (1x10). The input file holds one seeded input under
the key ``input``; the calibration file (for ``--quantize int8``) eight more under the same key. The
weights are random: the model classifies nothing, it exists to be compiled.

Re-running writes the same bytes (the ``.npz`` is written with a fixed zip timestamp; ``np.savez`` would
stamp the current time). Needs the ``[torch]`` extra: ``pip install -e .[torch]``.

    python examples/make_example.py [--out-dir examples]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
import zipfile
from pathlib import Path

import numpy as np

SEED = 0
INPUT_SHAPE = (1, 3, 32, 32)
OPSET = 17
HERE = Path(__file__).resolve().parent


def build_model():
    import torch
    from torch import nn

    def conv_bn(cin, cout, k=3, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), nn.ReLU(), conv_bn(cout, cout))
            self.shortcut = conv_bn(cin, cout, 1, stride) if (cin, stride) != (cout, 1) else nn.Identity()

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    class SmallResNet(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 16), nn.ReLU())
            self.blocks = nn.Sequential(Block(16, 16), Block(16, 24, stride=2))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(24, classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))

    torch.manual_seed(SEED)
    model = SmallResNet()
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.9 + 0.3)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def make_input() -> np.ndarray:
    return np.random.default_rng(SEED).standard_normal(INPUT_SHAPE).astype(np.float32)


def make_calibration(samples: int = 8) -> np.ndarray:
    """Calibration data for ``--quantize int8`` (drawn like the example input, from another seed)."""
    return np.random.default_rng(SEED + 2).standard_normal((samples,) + INPUT_SHAPE[1:]).astype(np.float32)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` (``np.load`` reads it) but byte-for-byte reproducible: fixed member timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where to write (default: examples/)")
    args = parser.parse_args(argv)
    import torch

    model = build_model()
    x = make_input()
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, input_path = out_dir / "cnn.onnx", out_dir / "cnn_input.npz"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(onnx_path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True)
    save_npz(input_path, {"input": x})
    save_npz(out_dir / "cnn_calibration.npz", {"input": make_calibration()})
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes, {params} parameters, opset {OPSET})")
    print(f"wrote {input_path} ({input_path.stat().st_size} bytes); torch logits[0,:3] = {logits[0, :3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

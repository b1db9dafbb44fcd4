"""Export Hugging Face transformers models built from a config to ONNX, then lower and verify them.

    python examples/hf_transformers.py OUTDIR [--models bert,gpt2] [--exporter legacy|dynamo] [--seq 16]

builds ``transformers.BertModel`` and ``transformers.GPT2Model`` from small configs (hidden 128, 2 layers,
2 heads, intermediate 512, vocabulary 1000) with seeded random weights (``HF_HUB_OFFLINE=1``: nothing is
downloaded), exports each with ``torch.onnx.export`` (inputs ``input_ids`` and ``attention_mask``, static
shapes: batch 1, sequence ``--seq``) and writes ``OUTDIR/<model>.onnx`` and ``OUTDIR/<model>_input.npz``
(seeded token ids, a mask whose last quarter is padding). Then, per model, what a user does next::

    lower OUTDIR/bert.onnx --target cpu -o OUTDIR/bert.lwr
    lower verify OUTDIR/bert.lwr --model OUTDIR/bert.onnx --inputs OUTDIR/bert_input.npz

Outputs: BERT's ``last_hidden_state`` and ``pooler_output``, GPT-2's ``last_hidden_state``. Exits 1 when
any model fails to verify. Needs torch and transformers (``pip install -e .[torch]``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach the Hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("bert", "gpt2")
VOCAB, HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 1000, 128, 2, 2, 512, 64


def build(name: str):
    """The transformers model ``name`` from a small config, seeded random weights, eval mode, wrapped so
    that it takes ``(input_ids, attention_mask)`` positionally and returns plain tensors."""
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    torch.manual_seed(0)
    if name == "bert":
        model = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                     num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                                     max_position_embeddings=POSITIONS))
        outputs = ("last_hidden_state", "pooler_output")
    elif name == "gpt2":
        model = GPT2Model(GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                                     n_inner=INTERMEDIATE, n_positions=POSITIONS))
        outputs = ("last_hidden_state",)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")

    class Wrapper(torch.nn.Module):
        # transformers' forward takes many keyword arguments (use_cache, past_key_values...): pass the two
        # inputs by name, switch the KV cache off, and return a tuple rather than a ModelOutput.
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            kwargs = {"use_cache": False} if name == "gpt2" else {}
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            return tuple(getattr(out, o) for o in outputs)

    return Wrapper(model).eval(), outputs


def example_inputs(seq: int, seed: int = 0) -> dict:
    """Token ids in range and an attention mask whose last quarter is padding (batch 1)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((1, seq), np.int64)
    mask[:, seq - seq // 4:] = 0
    return {"input_ids": rng.integers(0, VOCAB, (1, seq)).astype(np.int64), "attention_mask": mask}


@contextlib.contextmanager
def quiet():
    """Silence the exporters' chatter (TracerWarnings, dynamo's progress lines)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export(name: str, outdir: Path, exporter: str, opset: int, seq: int) -> tuple[Path, Path, float]:
    """Write ``outdir/<name>.onnx`` and ``outdir/<name>_input.npz``; return their paths and the largest
    difference between torch's outputs and ONNX Runtime's on the example inputs (the export is right)."""
    import onnxruntime as ort
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model, outputs = build(name)
    feed = example_inputs(seq)
    args = tuple(torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask"))
    path, inputs = outdir / f"{name}.onnx", outdir / f"{name}_input.npz"
    kwargs: dict = {"input_names": list(feed), "output_names": list(outputs), "opset_version": opset}
    if exporter == "legacy":
        kwargs.update(dynamo=False, do_constant_folding=True)
    else:
        kwargs.update(dynamo=True, external_data=False, verbose=False)
    with quiet(), torch.no_grad():
        expected = [t.numpy() for t in model(*args)]
        torch.onnx.export(model, args, str(path), **kwargs)
    np.savez(inputs, **feed)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    return path, inputs, max(float(np.abs(g - e).max()) for g, e in zip(got, expected))


def lower(*argv) -> int:
    """Run the ``lower`` command line in this process, echoing it first."""
    from lowering.cli import main

    print("$ lower " + " ".join(str(a) for a in argv), flush=True)
    code = main([str(a) for a in argv])
    sys.stdout.flush()
    return code


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: bert, gpt2")
    parser.add_argument("--exporter", choices=("legacy", "dynamo"), default="legacy")
    parser.add_argument("--opset", type=int, default=None, help="default: 17 (legacy), 18 (dynamo)")
    parser.add_argument("--seq", type=int, default=16, help="sequence length (at most 64)")
    parser.add_argument("--target", default="cpu")
    args = parser.parse_args(argv)
    if not 4 <= args.seq <= POSITIONS:
        parser.error(f"--seq must be between 4 and {POSITIONS}")
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    opset = args.opset or (17 if args.exporter == "legacy" else 18)
    args.outdir.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.models.split(","):
        path, inputs, diff = export(name, args.outdir, args.exporter, opset, args.seq)
        size = path.stat().st_size / 2 ** 20
        print(f"{name}: {path} ({size:.1f} MiB, {args.exporter} exporter, opset {opset}); "
              f"ONNX Runtime vs torch max abs diff {diff:.2e}", flush=True)
        artifact = args.outdir / f"{name}.lwr"
        code = lower(path, "--target", args.target, "-o", artifact)
        if code == 0:
            code = lower("verify", artifact, "--model", path, "--inputs", inputs)
        print(f"{name}: {'PASS' if code == 0 else f'FAIL (exit {code})'}\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

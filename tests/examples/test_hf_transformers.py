"""examples/hf_transformers.py: Hugging Face BertModel and GPT2Model built from small configs (seeded random
weights, no download), exported to ONNX, lowered for cpu and verified against ONNX Runtime. Needs the
[torch] extra (torch and transformers)."""

import re

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from .conftest import EXAMPLES, run_script  # noqa: E402

pytestmark = [pytest.mark.e2e]


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_hf_models_export_lower_and_verify(tmp_path, exporter):
    models = "bert,gpt2" if exporter == "legacy" else "gpt2"  # dynamo: one model keeps the run short
    done = run_script(EXAMPLES / "hf_transformers.py", tmp_path, "--models", models, "--exporter", exporter,
                      "--seq", "16")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for name in models.split(","):
        assert re.search(rf"^{name}: PASS$", done.stdout, re.M), done.stdout
        for suffix in (".onnx", "_input.npz", ".lwr"):
            assert (tmp_path / f"{name}{suffix}").is_file(), suffix
        with np.load(tmp_path / f"{name}_input.npz") as data:
            assert data["input_ids"].shape == data["attention_mask"].shape == (1, 16)
            assert data["attention_mask"].min() == 0  # padding is exercised
        # the ONNX file agrees with torch before lower is involved
        diff = float(re.search(rf"^{name}: .*max abs diff (\S+)$", done.stdout, re.M).group(1))
        assert diff < 1e-4
    if "bert" in models:  # both of BERT's outputs are compared
        assert re.search(r"^  pooler_output: .* ok$", done.stdout, re.M), done.stdout

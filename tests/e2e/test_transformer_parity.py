"""The zoo's tiny BERT, GPT-2 and ViT, exported by both torch exporters, lowered for the cpu target and run
through the runtime, match ONNX Runtime within 1e-4; and ``fuse_transformer`` catches every LayerNorm,
GELU and attention pattern each export spells out (a regression in fusion changes these counts)."""

from collections import Counter

import numpy as np
import onnxruntime as ort
import pytest

import runtime
from lowering.driver import CompileOptions, compile_model
from tests.zoo.fixtures import zoo  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.target_cpu]

TOL = 1e-4
LAYERS = 2  # of every tiny model: one attention and one GELU per layer

#: (model, exporter, opset) -> what fuse_transformer rewrites (the kind that starts its change line)
CASES = {
    ("bert_tiny", "legacy", 17): {"attention": LAYERS, "GELU (none)": LAYERS},
    ("bert_tiny", "dynamo", 18): {"attention": LAYERS, "GELU (none)": LAYERS},
    # below opset 17 the legacy exporter spells LayerNorm out: 2 per layer and the embeddings' one
    ("bert_tiny", "legacy", 16): {"LayerNorm": 2 * LAYERS + 1, "attention": LAYERS, "GELU (none)": LAYERS},
    ("gpt2_tiny", "legacy", 17): {"causal attention": LAYERS, "GELU (tanh)": LAYERS},
    ("gpt2_tiny", "dynamo", 18): {"causal attention": LAYERS, "GELU (tanh)": LAYERS},
    # scaled_dot_product_attention: q and k^T each scaled by sqrt(scale) before the MatMul
    ("vit_tiny", "legacy", 17): {"attention": LAYERS, "GELU (none)": LAYERS},
    ("vit_tiny", "dynamo", 18): {"attention": LAYERS, "GELU (none)": LAYERS},
}


def fusions(report: dict) -> Counter:
    passes = report["targets"]["cpu"]["passes"]
    changes = [c for p in passes if p["name"] == "fuse_transformer" for c in p["changes"]]
    return Counter(c.split(" at ")[0] for c in changes)


@pytest.mark.parametrize("name, exporter, opset", list(CASES))
def test_transformer_matches_onnxruntime(zoo, tmp_path, name, exporter, opset):  # noqa: F811
    from tests.zoo.export import example_inputs

    path = zoo.get(name, exporter, opset)
    result = compile_model(path, output=tmp_path / "m.lwr",
                           options=CompileOptions(targets=("cpu",), verify_each=True))
    assert fusions(result.report) == CASES[name, exporter, opset]
    ops = result.report["targets"]["cpu"]["ops"]
    assert ops["lowering::Attention"] == LAYERS and "Softmax" not in ops and "Erf" not in ops
    assert ops["LayerNormalization"] == 2 * LAYERS + 1
    plan = result.report["targets"]["cpu"]["memory_plan"]
    assert plan["arena_bytes"] <= 1.1 * plan["lower_bound_bytes"]  # the memory plan is near its lower bound

    feed = example_inputs(name, seed=1)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)
    for threads in (1, 2):
        got = runtime.load(tmp_path / "m.lwr", threads=threads).run(None, feed)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)


def test_padding_mask_hides_padded_tokens(zoo, tmp_path):  # noqa: F811
    """BERT's additive mask: changing the ids of masked-out positions leaves the other positions' outputs
    unchanged (the fused attention gives those keys exactly zero weight)."""
    from tests.zoo.export import example_inputs

    path = zoo.get("bert_tiny", "legacy", 17)
    compile_model(path, output=tmp_path / "m.lwr", options=CompileOptions(targets=("cpu",)))
    sess = runtime.load(tmp_path / "m.lwr")
    feed = example_inputs("bert_tiny", seed=2)
    masked = feed["attention_mask"][0] == 0
    assert masked.any()
    other = dict(feed, input_ids=feed["input_ids"].copy())
    other["input_ids"][0, masked] = (other["input_ids"][0, masked] + 7) % 100
    first, second = sess.run(None, feed)[0], sess.run(None, other)[0]
    np.testing.assert_allclose(first[0, ~masked], second[0, ~masked], rtol=1e-5, atol=1e-6)

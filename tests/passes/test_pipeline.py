"""The default pipeline: names for --disable-pass, and a real torch export against ONNX Runtime."""

import warnings

import numpy as np
import pytest

from lowering.opinfo import DOMAIN
from lowering.passmanager import FixedPoint, PassContext, PassManager
from lowering.reference import run_graph
from passes.pipeline import default_passes
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity, run_passes

pytestmark = pytest.mark.unit


def _names(passes):
    names = []
    for p in passes:
        names.append(p.name)
        if isinstance(p, FixedPoint):
            names += _names(p.passes)
    return names


def test_every_pass_has_a_name_to_disable():
    assert _names(default_passes()) == [
        "simplify", "fold_shapes", "fold_constants", "dce", "fuse_transformer", "reduce_mean_to_pool",
        "fold_batchnorm", "expand_qoperators", "fold_qdq", "fold_constants", "fuse_epilogue",
        "fold_transpose", "fuse_elementwise", "dce"]


def test_disabled_passes_do_not_run():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    b.output(b.op("Relu", [b.op("Neg", [b.op("Identity", [x])])]))
    graph = b.graph
    disabled = frozenset({"fuse_elementwise", "simplify"})
    PassManager(default_passes()).run(graph, PassContext(disabled=disabled))
    assert [n.op for n in graph.nodes] == ["Identity", "Neg", "Relu"]
    graph = assert_parity(graph, default_passes(), expect_modified=True)
    assert [n.qualified_op for n in graph.nodes] == [f"{DOMAIN}::FusedElementwise"]


def _torch_cnn(tmp_path):
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.stem_bn = torch.nn.BatchNorm2d(8)
            self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.fc = torch.nn.Linear(8 * 4 * 4, 16)
            self.fc_bn = torch.nn.BatchNorm1d(16)
            self.head = torch.nn.Linear(16, 10)

        def forward(self, x):
            y = torch.relu(self.stem_bn(self.stem(x)))
            z = torch.relu(self.bn(self.conv(y)) + y)
            z = torch.nn.functional.max_pool2d(z, 2)
            z = z.view(z.size(0), -1)  # Shape -> Gather -> Unsqueeze -> Concat -> Reshape
            z = self.fc_bn(self.fc(z))
            return self.head(z * torch.sigmoid(z))

    torch.manual_seed(0)
    model = Block().eval()
    with torch.no_grad():
        for bn in (model.stem_bn, model.bn, model.fc_bn):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # do_constant_folding=False keeps the BatchNormalization nodes (the exporter otherwise folds them
        # into the Conv/Gemm weights itself in eval mode) and, with a dynamic batch, the shape chain.
        torch.onnx.export(model, (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, input_names=["x"],
                          output_names=["logits"], do_constant_folding=False,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path


def test_torch_cnn_matches_onnxruntime(tmp_path):
    path = _torch_cnn(tmp_path)
    ort = pytest.importorskip("onnxruntime")
    from lowering.onnx.importer import import_model, load_model_proto

    proto = load_model_proto(path)
    graph = import_model(proto, {"x": (2, 3, 8, 8)})
    before = graph.op_counts()
    assert before["BatchNormalization"] == 3 and before["Shape"] == 1
    messages = []
    assert run_passes(graph, default_passes(), log=messages.append)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_graph(graph, {"x": x})["logits"], expected, rtol=1e-4, atol=1e-4)

    assert graph.op_counts() == {
        f"{DOMAIN}::FusedConv": 2, f"{DOMAIN}::FusedElementwise": 1, f"{DOMAIN}::FusedGemm": 2,
        "MaxPool": 1, "Reshape": 1,
    }
    stem, block = graph.nodes[:2]
    assert stem.attr("activation") == "Relu" and block.attr("activation") == "Relu"
    assert block.input(3) is stem.output  # the residual
    assert block.meta.sources == ("/conv/Conv", "/bn/BatchNormalization", "/Add", "/Relu_1")
    assert graph.nodes[3].input(1).is_const  # the Reshape's folded target shape
    assert graph.output_names == ["logits"]

"""Write ``data/pt2e_small_cnn.onnx``: a small CNN quantized with PyTorch's PT2E flow and exported to QDQ
ONNX by the dynamo exporter.

    python -m tests.passes.quantization.make_pt2e_model      # needs torch and torchao

torch 2.13 no longer carries ``torch.ao.quantization.quantize_pt2e``: PT2E quantization lives in torchao
(``torchao.quantization.pt2e``), which is not a dependency of this project, so the test suite reads the
checked-in file (and re-exports only when torchao is installed). The flow: ``torch.export`` ->
``prepare_pt2e`` with the XNNPACK quantizer (symmetric per-channel int8 weights, asymmetric int8
activations) -> calibration on 8 seeded inputs -> ``convert_pt2e`` -> ``torch.export`` ->
``torch.onnx.export(dynamo=True, opset 18)``.
"""

from __future__ import annotations

from pathlib import Path

OUTPUT = Path(__file__).parent / "data" / "pt2e_small_cnn.onnx"
SHAPE = (1, 3, 16, 16)


def _model():
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            y = torch.relu(self.stem(x))
            y = torch.relu(self.conv2(torch.relu(self.conv1(y))) + y)
            y = torch.nn.functional.max_pool2d(y, 2)
            y = torch.relu(self.down(y))
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))

    torch.manual_seed(0)
    return SmallCNN().eval()


def export_pt2e_small_cnn(path: Path = OUTPUT) -> Path:
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    from tests.zoo.export import quiet

    model = _model()
    gen = torch.Generator().manual_seed(1)
    example = (torch.randn(SHAPE, generator=gen),)
    with quiet(), torch.no_grad():
        exported = torch.export.export(model, example).module()
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(exported, quantizer)
        for _ in range(8):
            prepared(torch.randn(SHAPE, generator=gen))
        converted = convert_pt2e(prepared)
        program = torch.export.export(converted, example)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(program, example, str(path), dynamo=True, opset_version=18, input_names=["x"],
                          output_names=["y"], external_data=False)
    _strip_metadata(path)
    return path


def _strip_metadata(path: Path) -> None:
    """Drop the exporter's per-node metadata (source stack traces): most of the file, none of the model."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


if __name__ == "__main__":
    print(export_pt2e_small_cnn())

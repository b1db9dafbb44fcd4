"""`lower verify --target cuda --emulate`: the cuda target checked against ONNX Runtime on a machine without a
GPU, through the CLI as the README's main job runs it."""

from pathlib import Path

from lowering.cli import main
from runtime.artifact import open_artifact
from targets.cuda.emulate import cooperative_kernels
from tests.zoo.fixtures import zoo  # noqa: F401  (pytest fixture)

from .harness import require_nvcc

ROOT = Path(__file__).resolve().parents[2]


def test_verify_emulated_cuda_target(tmp_path, capsys):
    require_nvcc()
    out = tmp_path / "cnn.lwr"
    assert main([str(ROOT / "examples" / "cnn.onnx"), "--target", "cpu,cuda", "-o", str(out)]) == 0
    args = ["verify", str(out), "--model", str(ROOT / "examples" / "cnn.onnx"),
            "--inputs", str(ROOT / "examples" / "cnn_input.npz")]
    capsys.readouterr()
    assert main(args + ["--target", "cuda", "--emulate"]) == 0
    stdout = capsys.readouterr().out
    assert "target cuda (emulated on the CPU)" in stdout and "PASS" in stdout
    # the emulator is only for the cuda target
    assert main(args + ["--target", "cpu", "--emulate"]) == 2
    assert "--emulate needs --target cuda" in capsys.readouterr().err


def test_emulate_without_a_cuda_target_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "cpu.lwr"
    assert main([str(ROOT / "examples" / "cnn.onnx"), "--target", "cpu", "-o", str(out)]) == 0
    capsys.readouterr()
    code = main(["verify", str(out), "--model", str(ROOT / "examples" / "cnn.onnx"), "--target", "cuda",
                 "--emulate"])
    assert code == 2 and "has no cuda target to emulate (built: cpu)" in capsys.readouterr().err


def test_verify_emulated_zoo_cnn_with_tiled_kernels(zoo, tmp_path, capsys):  # noqa: F811
    """The zoo's ResNet-style CNN: its 3x3 and 1x1 convs above the size threshold are the shared-memory
    tiled implicit GEMM, run on the emulator (block-cooperative fibers) and checked against ONNX Runtime."""
    require_nvcc()
    model = zoo.get("resnet_style", "legacy", 17)
    out = tmp_path / "resnet.lwr"
    assert main([str(model), "--target", "cuda", "-o", str(out)]) == 0
    entry = open_artifact(out).targets["cuda"]
    tiled = cooperative_kernels(open_artifact(out).read(entry["source"]).decode())
    assert len([s for s in entry["launch_plan"] if s["kernel"] in tiled]) >= 4
    capsys.readouterr()
    assert main(["verify", str(out), "--model", str(model), "--target", "cuda", "--emulate"]) == 0
    stdout = capsys.readouterr().out
    assert "target cuda (emulated on the CPU)" in stdout and "PASS" in stdout

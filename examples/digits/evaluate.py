"""Top-1 accuracy of the fp32 digits model against its int8 QDQ model, on the held-back images.

    python examples/digits/evaluate.py [--dir DIR] [--no-artifact] [--json] [--check]

Reads DIR/digits.onnx, DIR/digits.int8.onnx (from ``lower quantize``) and DIR/test.npz (from
``train.py``) and runs both models with ONNX Runtime, one image at a time (the model's batch is 1). The
criterion: int8 top-1 accuracy within 1 percentage point of fp32 (``--check`` exits 1 when it fails).

Unless ``--no-artifact``, it also tries to lower the int8 model for the cpu target and run the artifact
through the project's runtime; when the compiler cannot build it yet, it says why and carries on.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CRITERION_POINTS = 1.0


def _ort_accuracy(model: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = [int(np.argmax(sess.run(None, {name: x[i:i + 1]})[0])) for i in range(len(x))]
    return float(np.mean(np.array(preds) == y))


def _artifact_accuracy(qdq: Path, x: np.ndarray, y: np.ndarray) -> dict:
    """Lower the QDQ model for cpu and measure the artifact; guarded: a build failure is reported."""
    try:
        import runtime
        from lowering import compile as lower
        from lowering.errors import LoweringError
    except ImportError as exc:
        return {"status": "skipped", "reason": f"cannot import the compiler ({exc})"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "digits.int8.lwr"
        try:
            lower(qdq, targets=("cpu",), output=out)
        except LoweringError as exc:
            return {"status": "skipped", "reason": f"the cpu target cannot build it yet: {str(exc)[:300]}"}
        sess = runtime.load(out)
        name = sess.inputs[0].name
        preds = [int(np.argmax(sess.run(None, {name: x[i:i + 1]})[0])) for i in range(len(x))]
    return {"status": "ok", "accuracy": float(np.mean(np.array(preds) == y))}


def evaluate(folder: Path, artifact: bool = True) -> dict:
    folder = Path(folder)
    fp32, qdq, test = folder / "digits.onnx", folder / "digits.int8.onnx", folder / "test.npz"
    for path, how in ((fp32, "python examples/digits/train.py"), (test, "python examples/digits/train.py"),
                      (qdq, f"lower quantize {fp32} --calibration {folder / 'calibration.npz'} -o {qdq}")):
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing; make it with: {how}")
    with np.load(test, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    result = {"test_samples": int(len(y)), "fp32_accuracy": _ort_accuracy(fp32, x, y),
              "int8_accuracy": _ort_accuracy(qdq, x, y)}
    result["drop_points"] = 100.0 * (result["fp32_accuracy"] - result["int8_accuracy"])
    result["criterion"] = f"int8 top-1 within {CRITERION_POINTS:g} point of fp32"
    result["ok"] = result["drop_points"] <= CRITERION_POINTS
    if artifact:
        result["int8_cpu_artifact"] = _artifact_accuracy(qdq, x, y)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=HERE, help="folder with digits.onnx, digits.int8.onnx, "
                        "test.npz (default: this folder)")
    parser.add_argument("--no-artifact", action="store_true", help="skip lowering the int8 model for cpu")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when the criterion fails")
    args = parser.parse_args(argv)
    result = evaluate(args.dir, artifact=not args.no_artifact)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"held-back images: {result['test_samples']}")
        print(f"fp32 (ONNX Runtime):      top-1 {100 * result['fp32_accuracy']:.2f}%")
        print(f"int8 QDQ (ONNX Runtime):  top-1 {100 * result['int8_accuracy']:.2f}% "
              f"({-result['drop_points']:+.2f} points)")
        art = result.get("int8_cpu_artifact")
        if art is not None:
            shown = (f"top-1 {100 * art['accuracy']:.2f}%" if art["status"] == "ok"
                     else f"skipped ({art['reason']})")
            print(f"int8 cpu artifact:        {shown}")
        print(f"{result['criterion']}: {'PASS' if result['ok'] else 'FAIL'}")
    return 1 if args.check and not result["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())

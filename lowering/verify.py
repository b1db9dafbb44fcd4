"""Numerical parity of an artifact against ONNX Runtime (``lower verify``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import LoweringError


def onnxruntime_outputs(model: Path, feed: dict[str, np.ndarray], output_names: list[str]) -> list:
    import onnxruntime as ort

    if not Path(model).is_file():
        raise LoweringError(f"{model}: no such file")
    try:
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        return sess.run(output_names, feed)
    except Exception as exc:
        raise LoweringError(f"{model}: ONNX Runtime could not run it: {str(exc).strip()}") from None


def compare_arrays(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> dict:
    if got.shape != want.shape:
        return {"name": name, "ok": False, "size": int(want.size), "mismatched": int(want.size),
                "max_abs_error": float("inf"), "max_rel_error": float("inf"),
                "error": f"shape {list(got.shape)} != reference {list(want.shape)}"}
    g, w = got.astype(np.float64), want.astype(np.float64)
    close = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    diff = np.where(np.isnan(g) & np.isnan(w), 0.0, np.abs(g - w))
    rel = diff / np.maximum(np.abs(w), np.finfo(np.float32).tiny)
    return {"name": name, "ok": bool(close.all()), "size": int(w.size),
            "mismatched": int((~close).sum()),
            "max_abs_error": float(np.nanmax(diff)) if diff.size else 0.0,
            "max_rel_error": float(np.nanmax(rel)) if rel.size else 0.0}


def compare_with_onnxruntime(session, model: Path, feed: dict, rtol: float, atol: float) -> dict:
    """Run ``session`` (a runtime.Session) and ONNX Runtime on ``feed``; compare every output."""
    import hashlib

    import onnxruntime as ort

    built_from = session.artifact.manifest["model"]["sha256"]
    same_model = Path(model).is_file() and hashlib.sha256(Path(model).read_bytes()).hexdigest() == built_from
    names = [o.name for o in session.outputs]
    got = session.run(None, feed)
    want = onnxruntime_outputs(model, feed, names)
    outputs = [compare_arrays(n, g, w, rtol, atol) for n, g, w in zip(names, got, want)]
    return {"target": session.target, "onnxruntime": ort.__version__, "rtol": rtol, "atol": atol,
            "same_model": same_model,
            "ok": all(o["ok"] for o in outputs), "outputs": outputs}

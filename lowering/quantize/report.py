"""The quantization report: what was quantized, with which scales, and what it costs in accuracy.

Figures are measured with ONNX Runtime on the first ``config.report_samples`` calibration samples (a
bounded subset; ``evaluation.samples`` says how many were used): the fp32 model (after ORT's
pre-processing, which keeps node and tensor names) and the QDQ model are both run with the tensors of
interest added as extra graph outputs, and sums of squares are accumulated batch by batch. Both run with
ONNX Runtime's default graph optimizations, so the QDQ model runs ORT's integer kernels (QLinearConv and
friends, where ORT fuses them) as a user of the QDQ model would see it.

SQNR (dB) = 10·log10(Σ ref² / Σ (ref − q)²), ref the fp32 model's tensor and q the QDQ model's
dequantized tensor (the DequantizeLinear output after the layer's QuantizeLinear), with both sums floored
at (float64 eps)² as ONNX Runtime's ``qdq_loss_debug`` does, so it is always finite. A layer's SQNR
includes the error of every layer before it (the QDQ model runs quantized end to end).

JSON schema (every object's keys are sorted when written; lists keep graph order)::

    {
      "version": 1,
      "onnxruntime": str,                       # the ORT version that quantized and measured
      "config": {                               # QuantizeConfig.to_json()
        "activation_symmetric": false, "activation_type": "int8" | "uint8", "bias_type": "int32",
        "method": "minmax" | "percentile" | "entropy", "per_channel": bool,
        "percentile": float | null,             # only for method "percentile"
        "report_samples": int, "weight_symmetric": true, "weight_type": "int8"
      },
      "calibration": {
        "samples": int, "files": int, "batch": int,   # samples per run
        "chunk_batches": int,                   # batches per calibrator.collect_data call
        "sha256": str | null,                   # of the samples as fed (names, dtypes, shapes, bytes)
        "generated": bool                       # random inputs (no data given): accuracy unknown
      },
      "evaluation": {"samples": int, "source": str},
      "layers": [                               # one per Conv/Gemm/MatMul with a constant weight
        {
          "name": str, "op": str,
          "weight": {"tensor": str, "axis": int | null,  # null: one scale for the tensor
                     "channels": int, "scale_min": float, "scale_max": float, "symmetric": bool},
          "bias": {"tensor": str, "dtype": "int32"} | null,
          "input": {"tensor": str, "scale": float, "zero_point": int} | null,
          "output": {"tensor": str, "scale": float, "zero_point": int} | null,
          "sqnr_db": float | null               # null: the tensor could not be matched
        }
      ],
      "model": {
        "outputs": [
          {"name": str, "cosine_mean": float, "cosine_min": float,   # per sample (row), flattened
           "top1_agreement": float,            # fraction of argmax (last axis) equal to fp32's
           "sqnr_db": float}
        ],
        "cosine_min": float, "top1_agreement": float    # worst over the outputs
      },
      "quantized_ops": {op: count},             # nodes running between DequantizeLinear/QuantizeLinear
      "folded_activations": [{"node": str, "op": str}],  # Relu/Clip absorbed into an output range
      "float_ops": [{"node": str, "op": str, "reason": str,     # nodes that stayed float
                     "detail": str}],           # (detail: only for some reasons, e.g. the ranges)
      "qdq_model": {"sha256": str, "nodes": int, "quantize_linear": int, "dequantize_linear": int}
    }
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np

from .calibration import CalibrationData
from .policy import QUANTIZED_OPS, WEIGHTED_OPS, QuantizeConfig, float_reason

REPORT_VERSION = 1
_EPS2 = float(np.finfo(np.float64).eps) ** 2
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def build_report(fp32_path: Path, qdq_path: Path, data: CalibrationData, config: QuantizeConfig,
                 chunk_batches: int, excluded: dict[str, dict] | None = None) -> dict:
    """``excluded``: the nodes of quantized op types the policy kept float: ``{"reason", "detail"?}``."""
    import onnxruntime as ort
    from onnxruntime.quantization.onnx_model import ONNXModel

    from ..onnx.importer import load_model_proto

    fp32 = load_model_proto(fp32_path)
    qdq = load_model_proto(qdq_path)
    graph = _Graph(ONNXModel(qdq))
    fp32_tensors = {o for n in fp32.graph.node for o in n.output} | {i.name for i in fp32.graph.input}
    qdq_names = {n.name for n in qdq.graph.node}

    layers, pairs = [], []
    for node in graph.model.nodes():
        if node.op_type in WEIGHTED_OPS:
            layer = graph.layer(node, fp32_tensors)
            if layer is not None:
                row, pair = layer
                layers.append(row)
                pairs.append(pair)
    outputs = [o.name for o in fp32.graph.output]

    sums = _measure(ort, fp32, qdq, pairs, outputs, data, config.report_samples)
    for row, pair in zip(layers, pairs):
        row["sqnr_db"] = _sqnr(*sums["pairs"][pair]) if pair in sums["pairs"] else None
    model_outputs = []
    for name in outputs:
        s = sums["outputs"][name]
        model_outputs.append({
            "name": name,
            "cosine_mean": _round(float(np.mean(s["cos"]))),
            "cosine_min": _round(float(np.min(s["cos"]))),
            "top1_agreement": _round(s["agree"] / max(s["rows"], 1)),
            "sqnr_db": _sqnr(s["sig"], s["noise"]),
        })

    quantized, float_ops = Counter(), []
    for node in graph.model.nodes():
        if node.op_type in _QDQ or node.op_type == "Constant":
            continue
        if node.name in (excluded or {}) and not graph.is_quantized(node):
            float_ops.append({"node": node.name, "op": node.op_type, **excluded[node.name]})
        elif node.op_type not in QUANTIZED_OPS:
            float_ops.append({"node": node.name, "op": node.op_type, "reason": float_reason(node.op_type)})
        elif graph.is_quantized(node):
            quantized[node.op_type] += 1
        else:
            float_ops.append({"node": node.name, "op": node.op_type,
                              "reason": "left float by the quantizer: its input or output is not quantized "
                                        "(a neighbour stayed float, or the tensor has no known type)"})
    folded = [{"node": n.name, "op": n.op_type} for n in fp32.graph.node
              if n.op_type in ("Relu", "Clip") and n.name not in qdq_names]

    qdq_bytes = Path(qdq_path).read_bytes()
    ops = Counter(n.op_type for n in qdq.graph.node)
    return {
        "version": REPORT_VERSION,
        "onnxruntime": ort.__version__,
        "config": config.to_json(),
        "calibration": {"samples": data.samples, "files": len(data.files), "batch": data.batch,
                        "chunk_batches": chunk_batches, "sha256": data.sha256},
        "evaluation": {"samples": sums["samples"],
                       "source": f"the first {sums['samples']} calibration samples"},
        "layers": layers,
        "model": {
            "outputs": model_outputs,
            "cosine_min": min((o["cosine_min"] for o in model_outputs), default=None),
            "top1_agreement": min((o["top1_agreement"] for o in model_outputs), default=None),
        },
        "quantized_ops": dict(sorted(quantized.items())),
        "folded_activations": folded,
        "float_ops": float_ops,
        "qdq_model": {"sha256": hashlib.sha256(qdq_bytes).hexdigest(), "nodes": len(qdq.graph.node),
                      "quantize_linear": ops["QuantizeLinear"], "dequantize_linear": ops["DequantizeLinear"]},
    }


class _Graph:
    """Producer/consumer look-ups over the QDQ model, and the constants behind its Q/DQ nodes."""

    def __init__(self, model):
        self.model = model
        self.producer = model.output_name_to_node()
        self.consumers = model.input_name_to_nodes()
        self.initializers = model.get_initializer_name_set()

    def const(self, name: str) -> np.ndarray | None:
        return self.model.get_constant_value(name) if name else None

    def dq_of(self, tensor: str):
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def float_name(self, dq) -> str:
        """The float tensor a DequantizeLinear stands for: its QuantizeLinear's input."""
        q = self.producer.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.output[0]

    def is_quantized(self, node) -> bool:
        """Runs between a DequantizeLinear (data input) and a QuantizeLinear (every output)."""
        if not node.input or self.dq_of(node.input[0]) is None:
            return False
        return all(any(c.op_type == "QuantizeLinear" for c in self.consumers.get(o, [])) for o in node.output)

    def qparams(self, qnode, tensor: str) -> dict | None:
        scale = self.const(qnode.input[1])
        zp = self.const(qnode.input[2]) if len(qnode.input) > 2 else np.zeros((), np.int32)
        if scale is None or zp is None or scale.size != 1:
            return None
        return {"tensor": tensor, "scale": float(scale.reshape(())), "zero_point": int(zp.reshape(()))}

    def layer(self, node, fp32_tensors: set[str]):
        """The report row of a weighted node and the (fp32 tensor, QDQ tensor) pair measuring it."""
        if len(node.input) < 2:
            return None
        w_dq = self.dq_of(node.input[1])
        if w_dq is None or w_dq.input[0] not in self.initializers:
            return None  # not a constant weight (e.g. a MatMul of two activations), or left float
        w_scale = self.const(w_dq.input[1])
        w_zp = self.const(w_dq.input[2]) if len(w_dq.input) > 2 else np.zeros_like(w_scale, np.int32)
        axis = next((a.i for a in w_dq.attribute if a.name == "axis"), 1) if w_scale.size > 1 else None
        weight = {"tensor": _strip(w_dq.input[0], "_quantized"), "axis": axis, "channels": int(w_scale.size),
                  "scale_min": float(w_scale.min()), "scale_max": float(w_scale.max()),
                  "symmetric": bool(np.all(w_zp == 0))}
        bias = None
        if len(node.input) > 2 and node.input[2]:
            b_dq = self.dq_of(node.input[2])
            if b_dq is not None:
                b = self.const(b_dq.input[0])
                bias = {"tensor": node.input[2], "dtype": str(b.dtype) if b is not None else "unknown"}
        x_dq = self.dq_of(node.input[0])
        inp = self.qparams(x_dq, self.float_name(x_dq)) if x_dq is not None else None
        out_name = node.output[0]
        q = next((c for c in self.consumers.get(out_name, []) if c.op_type == "QuantizeLinear"), None)
        out, q_tensor = None, out_name
        if q is not None:
            dq = next((c for c in self.consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"),
                      None)
            q_tensor = dq.output[0] if dq is not None else out_name
            out = self.qparams(q, out_name)
        ref = out_name if out_name in fp32_tensors else q_tensor if q_tensor in fp32_tensors else None
        if out is not None and ref is not None:
            out["tensor"] = ref
        row = {"name": node.name, "op": node.op_type, "weight": weight, "bias": bias, "input": inp,
               "output": out, "sqnr_db": None}
        return row, (ref, q_tensor)


def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) else name


def _with_outputs(model, names: list[str]) -> bytes:
    """A copy of ``model`` with ``names`` added as (untyped) graph outputs, serialized."""
    copy = type(model)()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.add().name = name
            present.add(name)
    return copy.SerializeToString()


def _measure(ort, fp32, qdq, pairs, outputs, data: CalibrationData, limit: int) -> dict:
    pairs = [p for p in dict.fromkeys(pairs) if p[0] is not None]
    ref_names = list(dict.fromkeys(outputs + [p[0] for p in pairs]))
    q_names = list(dict.fromkeys(outputs + [p[1] for p in pairs]))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s_ref = ort.InferenceSession(_with_outputs(fp32, ref_names), opts, providers=["CPUExecutionProvider"])
    s_q = ort.InferenceSession(_with_outputs(qdq, q_names), opts, providers=["CPUExecutionProvider"])
    pair_sums = {p: [0.0, 0.0] for p in pairs}
    out_sums = {n: {"sig": 0.0, "noise": 0.0, "cos": [], "agree": 0, "rows": 0} for n in outputs}
    samples = 0
    for feed in data.batches(limit=limit):
        ref = dict(zip(ref_names, s_ref.run(ref_names, feed)))
        got = dict(zip(q_names, s_q.run(q_names, feed)))
        samples += data.batch
        for p in pairs:
            a, b = ref[p[0]].astype(np.float64), got[p[1]].astype(np.float64)
            if a.shape != b.shape:
                continue
            pair_sums[p][0] += float(np.sum(a * a))
            pair_sums[p][1] += float(np.sum((a - b) ** 2))
        for name in outputs:
            a, b = ref[name].astype(np.float64), got[name].astype(np.float64)
            s = out_sums[name]
            s["sig"] += float(np.sum(a * a))
            s["noise"] += float(np.sum((a - b) ** 2))
            rows_a = a.reshape(a.shape[0] if a.ndim > 1 else 1, -1)
            rows_b = b.reshape(rows_a.shape)
            s["cos"].extend(_cosine(x, y) for x, y in zip(rows_a, rows_b))
            last_a = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
            last_b = b.reshape(last_a.shape)
            s["agree"] += int(np.sum(np.argmax(last_a, axis=-1) == np.argmax(last_b, axis=-1)))
            s["rows"] += last_a.shape[0]
    return {"pairs": {p: tuple(v) for p, v in pair_sums.items()}, "outputs": out_sums, "samples": samples}


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 and ny == 0.0:
        return 1.0
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return float(np.dot(x, y) / (nx * ny))


def _sqnr(signal: float, noise: float) -> float:
    return _round(10.0 * math.log10(max(signal, _EPS2) / max(noise, _EPS2)))


def _round(x: float) -> float:
    return float(f"{x:.6g}")


# --- the readable table -------------------------------------------------------------------------------

def format_report(report: dict) -> str:
    """The report as a table for a terminal."""
    cfg = report["config"]
    method = cfg["method"] + (f" {cfg['percentile']:g}" if cfg["percentile"] is not None else "")
    generated = " generated random" if report["calibration"].get("generated") else ""
    lines = [f"int8 QDQ: {method} calibration on {report['calibration']['samples']}{generated} samples; "
             f"{'per-channel' if cfg['per_channel'] else 'per-tensor'} int8 weights, "
             f"{cfg['activation_type']} activations, int32 bias"]
    rows = [("layer", "op", "weight scale (min..max, channels)", "in scale/zp", "out scale/zp", "SQNR dB")]
    for layer in report["layers"]:
        w = layer["weight"]
        rows.append((
            layer["name"], layer["op"],
            f"{w['scale_min']:.3g}..{w['scale_max']:.3g} ({w['channels']})",
            _qp(layer["input"]), _qp(layer["output"]),
            "-" if layer["sqnr_db"] is None else f"{layer['sqnr_db']:.1f}",
        ))
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) if i < 5 else c.rjust(w)
                                          for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    else:
        lines.append("  no weighted layer was quantized")
    ev = report["evaluation"]
    for o in report["model"]["outputs"]:
        lines.append(f"output {o['name']}: cosine {o['cosine_mean']:.5f} (min {o['cosine_min']:.5f}), "
                     f"top-1 agreement {100 * o['top1_agreement']:.1f}%, SQNR {o['sqnr_db']:.1f} dB "
                     f"(vs fp32, {ev['source']})")
    if report["quantized_ops"]:
        lines.append("quantized: " + ", ".join(f"{op} x{n}" for op, n in report["quantized_ops"].items()))
    if report["folded_activations"]:
        ops = Counter(a["op"] for a in report["folded_activations"])
        lines.append("folded into output ranges: " + ", ".join(f"{op} x{n}" for op, n in sorted(ops.items())))
    if report["float_ops"]:
        groups = Counter((f["op"], f["reason"]) for f in report["float_ops"])
        lines.append("stayed float: " + "; ".join(f"{op} x{n} ({why})" for (op, why), n in groups.items()))
    else:
        lines.append("stayed float: none")
    return "\n".join(lines)


def _qp(q: dict | None) -> str:
    return "-" if q is None else f"{q['scale']:.4g}/{q['zero_point']}"

"""What gets quantized, and the settings of one quantization run.

The policy (DESIGN.md section 5, ACCELERATOR.md C.5): symmetric int8 weights, per output channel by
default; per-tensor asymmetric activations, int8 by default (the accelerator computes in int8) or uint8;
int32 bias with scale ``input_scale * weight_scale`` and zero point 0. The ops in :data:`QUANTIZED_OPS`
get QuantizeLinear/DequantizeLinear around them; every other op stays float between a DequantizeLinear
and the next QuantizeLinear, and the report says why (:func:`float_reason`). Two exceptions keep a node of
a listed type float, decided on the calibrated ranges by the quantizer: a ReduceMean that is not a global
pool, and an Add of two activations one of which would be erased at the output's int8 step (BERT's
additive attention mask next to the scores; ``quantizer._erased_input``).

This module imports neither onnx nor onnxruntime, so the QDQ-folding pass and the targets can read the
op list from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LoweringError

METHODS = ("minmax", "percentile", "entropy")
ACTIVATION_TYPES = ("int8", "uint8")

#: Ops quantized in the QDQ model. Compute ops with weights (int8 weights, int32 bias), element-wise
#: arithmetic, pooling, activations (Relu and Clip are folded into the producer's output range by
#: ONNX Runtime's quantizer when activations are asymmetric), and the data-movement ops that keep their
#: input's scale and zero point (ONNX Runtime quantizes those only when their input is quantized).
#: ReduceMean only when it averages every spatial axis (the dynamo exporter's global pooling, which the
#: compiler's ``reduce_mean_to_pool`` pass turns into GlobalAveragePool); see :func:`is_spatial_mean`.
#: LayerNormalization gets QDQ on its input, scale and output (ONNX Runtime's ``QDQNormalization``) but
#: runs in float between them (no integer kernel computes it): a model output produced by one (BERT's
#: last hidden state) then comes from a DequantizeLinear like every other output, at a known step.
QUANTIZED_OPS = (
    "Conv", "Gemm", "MatMul", "LayerNormalization",
    "Add", "Mul",
    "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh",
    "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat",
)
#: Ops with a weight operand: one report row each.
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")

_REASONS = {
    "Softmax": "no integer kernel (a cross-lane reduction and a division; it runs in float)",
    "LayerNormalization": "no integer kernel (mean/variance reduction; it runs in float)",
    "BatchNormalization": "no integer kernel (not folded into a Conv/Gemm; it runs in float)",
    "Div": "no integer kernel (division runs in float)",
    "Exp": "no integer kernel (it runs in float)",
    "Sqrt": "no integer kernel (it runs in float)",
    "Resize": "no integer kernel (it runs in float)",
}


def float_reason(op: str) -> str:
    """Why an op outside :data:`QUANTIZED_OPS` stays float."""
    return _REASONS.get(op, "no integer kernel")


def is_spatial_mean(axes: list[int] | None, rank: int | None) -> bool:
    """A ReduceMean over every spatial axis of an (N, C, spatial...) tensor: a global average pool."""
    if axes is None or rank is None or rank < 3:
        return False
    return sorted(a % rank for a in axes) == list(range(2, rank))


@dataclass(frozen=True)
class QuantizeConfig:
    """The settings of a quantization run (everything that changes the QDQ model or its report)."""

    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    activation_type: str = "int8"
    #: Calibration samples the report's SQNR / cosine / top-1 figures are measured on (the first ones).
    report_samples: int = 32
    #: Bytes of intermediate tensors held at once while calibrating (percentile/entropy keep every
    #: calibrated tensor of a chunk of batches before folding it into the histograms).
    memory_budget: int = 256 << 20

    def __post_init__(self):
        if self.method not in METHODS:
            raise LoweringError(f"unknown calibration method '{self.method}' (one of {', '.join(METHODS)})")
        if self.activation_type not in ACTIVATION_TYPES:
            raise LoweringError(f"unknown activation type '{self.activation_type}' "
                                f"(one of {', '.join(ACTIVATION_TYPES)})")
        if not 0.0 < self.percentile <= 100.0:
            raise LoweringError(f"--percentile must be in (0, 100], got {self.percentile:g}")
        if self.report_samples < 1:
            raise LoweringError(f"report_samples must be at least 1, got {self.report_samples}")
        if self.memory_budget < 1:
            raise LoweringError(f"memory_budget must be positive, got {self.memory_budget}")

    def to_json(self) -> dict:
        """The settings as recorded in a manifest and a report (the percentile only where it applies)."""
        return {
            "activation_symmetric": False,
            "activation_type": self.activation_type,
            "bias_type": "int32",
            "method": self.method,
            "per_channel": self.per_channel,
            "percentile": self.percentile if self.method == "percentile" else None,
            "report_samples": self.report_samples,
            "weight_symmetric": True,
            "weight_type": "int8",
        }

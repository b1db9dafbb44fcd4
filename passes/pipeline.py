"""The shared, target-independent optimization pipeline.

Order, and why:

1. ``simplify`` = FixedPoint(FoldShapes, FoldConstants, EliminateDeadCode): shapes become constants,
   constant subgraphs (exporters' Shape -> Gather -> Concat -> Reshape chains, weight transposes and
   casts) fold, no-op reshapes/identities disappear and what they fed dies. It comes first because the
   later passes match producer -> consumer adjacency (Conv -> BatchNormalization, Conv -> Add -> Relu),
   which these leftovers interrupt, and because they need constant weights and parameters. It iterates
   because each pass exposes work for the others (a folded Shape makes a Reshape's target constant...).
   Its constant folding keeps ``DequantizeLinear`` nodes: quantized weights stay integers for ``fold_qdq``.
1b. ``fuse_transformer``: decomposed LayerNorm, spelled-out GELU and attention chains become
   LayerNormalization, Gelu and ``lowering::Attention``: once their scales are folded constants, and
   before ``reduce_mean_to_pool`` (a rank-3 LayerNorm mean would become a pool) and the fusions below
   (the epilogue fusion takes a Gelu as a GEMM activation; a MatMul must still be a MatMul to match).
2. ``reduce_mean_to_pool``: a mean over all spatial axes (the dynamo exporter's global pooling) becomes
   GlobalAveragePool, once folding has made its axes constant, so targets need only the pool kernel.
3. ``fold_batchnorm`` before ``fuse_epilogue``: it matches the plain Conv/Gemm/MatMul ops, and the Conv it
   leaves behind (with new bias) is then canonicalized and gets its epilogue fused. A BatchNormalization
   it cannot fold becomes Mul+Add, which the elementwise fusion then takes.
4. ``expand_qoperators`` then ``fold_qdq`` (quantized models): QOperator ops (QLinearConv, ONNX Runtime's
   com.microsoft QLinearAdd, ...) become their QDQ form, and every DequantizeLinear -> op -> QuantizeLinear
   group that has an integer kernel becomes one of the ``lowering`` domain's integer ops (QConv, QMatMul,
   QAdd, ...). After simplification (they need constant weights, parameters and shapes) and before the
   fusions, which would otherwise swallow the float Conv/Add/Relu between the DequantizeLinear and
   QuantizeLinear. A second ``fold_constants`` (folding everything) then dequantizes the constant weights
   of ops that stayed float.
5. ``fuse_epilogue`` before ``fuse_elementwise``: bias adds, residual adds and activations after a
   Conv/Gemm belong in that kernel's epilogue (no extra pass over memory); were elementwise fusion first,
   it would group ``Add -> Relu`` into a separate kernel.
5b. ``fold_transpose`` after ``fuse_epilogue``: transpose pairs that compose to the identity cancel, and a
   transpose of an operand's last two axes folds into the fused GEMM's ``transA``/``transB`` (the flags
   exist only on the fused ops; ``fuse_transformer`` has already matched ``MatMul(Q, Transpose(K))``).
6. ``fuse_elementwise``: the remaining chains of elementwise ops.
7. ``dce``: the fusions remove what they replace; this catches anything left dead (cheap).

Every pass has a ``name`` so ``--disable-pass NAME`` disables it (``simplify`` disables the whole group;
``dce``, ``fold_shapes`` and ``fold_constants`` disable that pass wherever it appears).
"""

from __future__ import annotations

from lowering.passmanager import FixedPoint, Pass

from .cleanup.dce import EliminateDeadCode
from .cleanup.fold_constants import FoldConstants
from .cleanup.fold_shapes import FoldShapes
from .cleanup.reduce_mean_to_pool import RewriteReduceMeanAsPool
from .fusion.fold_batchnorm import FoldBatchNorm
from .fusion.fold_transpose import FoldTranspose
from .fusion.fuse_elementwise import FuseElementwise
from .fusion.fuse_epilogue import FuseEpilogues
from .fusion.fuse_transformer import FuseTransformerPatterns
from .quantization.expand_qoperators import ExpandQOperators
from .quantization.fold_qdq import FoldQDQ

#: What the simplification keeps unfolded: quantized weights stay integers for ``fold_qdq``.
KEEP_QUANTIZED = frozenset({"DequantizeLinear"})


def default_passes() -> list[Pass]:
    """A fresh list of the shared optimization passes, in order (see the module docstring)."""
    return [
        FixedPoint([FoldShapes(), FoldConstants(keep_ops=KEEP_QUANTIZED), EliminateDeadCode()], max_steps=8,
                   name="simplify"),
        FuseTransformerPatterns(),
        RewriteReduceMeanAsPool(),
        FoldBatchNorm(),
        ExpandQOperators(),
        FoldQDQ(),
        FoldConstants(),
        FuseEpilogues(),
        FoldTranspose(),
        FuseElementwise(),
        EliminateDeadCode(),
    ]

"""Small torch models covering the op list the compiler accepts.

Every entry of :data:`MODELS` is a zero-argument builder returning ``(module, inputs)``: the module in
eval mode with seeded weights (BatchNorm running statistics randomised so folding BN actually matters) and
its example inputs: either one shape tuple, batch first (one float32 input named ``x``; the CNNs), or a
tuple of :class:`InputSpec` (the transformers: int64 token ids, an attention mask). :func:`input_specs`
gives the second form for every model.

Each small model runs in well under a second at its input shape and exports to tens of KB of ONNX; the
ImageNet-size and benchmark-size transformers (``resnet18``, ``bert``, ``gpt2``, ``vit``...) take seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, static shape, element type and how example values are drawn.

    ``kind``: "normal" (float32 standard normal), "ids" (int64 uniform in ``[0, high)``), "mask" (int64
    ones with the last ``high`` positions of each row zero: padding an attention mask hides).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    kind: str = "normal"
    high: int = 0


Inputs = tuple[int, ...] | tuple[InputSpec, ...]
Builder = Callable[[], tuple[nn.Module, Inputs]]
MODELS: dict[str, Builder] = {}


def input_specs(name: str) -> tuple[InputSpec, ...]:
    """The inputs of zoo model ``name`` as :class:`InputSpec` s (a bare shape is one float input ``x``)."""
    _, inputs = MODELS[name]()
    if inputs and isinstance(inputs[0], InputSpec):
        return tuple(inputs)
    return (InputSpec("x", tuple(inputs)),)


def _register(name: str, shape: tuple[int, ...], seed: int):
    def wrap(cls):
        def build() -> tuple[nn.Module, tuple[int, ...]]:
            torch.manual_seed(seed)
            module = cls()
            randomize_bn(module, seed)
            return module.eval(), shape

        build.__name__ = f"build_{name}"
        build.__doc__ = cls.__doc__
        MODELS[name] = build
        return cls
    return wrap


def randomize_bn(module: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters (fresh ones are 0/1)."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.9 + 0.3)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
            dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


# --- the classics ------------------------------------------------------------------------------------

@_register("mlp", (1, 64), seed=1)
class MLP(nn.Module):
    """Linear/ReLU/Linear/ReLU/Linear/Softmax: Gemm chains and a last-axis Softmax."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(), nn.Linear(48, 10), nn.Softmax(dim=-1)
        )

    def forward(self, x):
        return self.net(x)


@_register("small_cnn", (1, 3, 32, 32), seed=2)
class SmallCNN(nn.Module):
    """Conv/BN/ReLU/MaxPool twice, Flatten, Linear/ReLU/Linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 8), nn.ReLU(), nn.MaxPool2d(2),
            conv_bn(8, 16), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 conv/BN, a 1x1 strided projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), nn.ReLU(), conv_bn(cout, cout, 3))
        self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


@_register("resnet_style", (1, 3, 32, 32), seed=3)
class ResNetStyle(nn.Module):
    """Stem conv, four basic blocks (two downsampling with 1x1 projections), global average pool, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16), nn.ReLU())
        self.blocks = nn.Sequential(
            BasicBlock(16, 16), BasicBlock(16, 24, stride=2), BasicBlock(24, 32, stride=2), BasicBlock(32, 32)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise 3x3, 1x1 linear project; residual add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            conv_bn(cin, hidden, 1), nn.ReLU6(),
            conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(),
            conv_bn(hidden, cout, 1),
        )

    def forward(self, x):
        y = self.body(x)
        return x + y if self.use_residual else y


@_register("mobilenet_style", (1, 3, 32, 32), seed=4)
class MobileNetStyle(nn.Module):
    """Strided stem, inverted residual blocks with depthwise convs and ReLU6, 1x1 head, pool, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1, 3),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            InvertedResidual(24, 32, 2, 4),
            InvertedResidual(32, 32, 1, 4),
        )
        self.head = nn.Sequential(conv_bn(32, 64, 1), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.pool(self.head(self.blocks(self.stem(x)))).flatten(1))


# --- models exercising the rest of the op list --------------------------------------------------------

@_register("activations", (1, 3, 32, 32), seed=5)
class Activations(nn.Module):
    """LeakyRelu, Sigmoid, Tanh, a Sigmoid gate (x * sigmoid(x)), a dilated conv."""

    def __init__(self):
        super().__init__()
        self.c1 = conv_bn(3, 8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.c3 = nn.Conv2d(8, 8, 3, padding=3, dilation=3, bias=False)
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.act(self.c1(x))
        y = torch.tanh(self.c2(y))
        y = self.c3(y)
        y = y * torch.sigmoid(y)  # SiLU spelled out
        return self.pool(y).flatten(1)


@_register("pooling", (1, 3, 32, 32), seed=6)
class Pooling(nn.Module):
    """AvgPool2d with padding, ceil_mode and both count_include_pad settings; MaxPool with ceil_mode.

    At 32x32 the ceil_mode windows at the bottom/right edge run past the (padded) input.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.avg_incl = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=True)
        self.avg_excl = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.max_ceil = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.avg_pad = nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)
        self.conv2 = nn.Conv2d(18, 8, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))  # 6 x 32 x 32
        a = self.avg_incl(y)  # 17 x 17
        b = self.avg_excl(y)  # 17 x 17
        c = self.avg_pad(self.max_ceil(y))  # 16 x 16 -> 17 x 17
        return self.conv2(torch.cat([a, b, c], dim=1))


@_register("grouped_concat", (1, 3, 32, 32), seed=7)
class GroupedConcat(nn.Module):
    """An inception-style block: branches (1x1, grouped 3x3, dilated 3x3, avg pool) concatenated."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16), nn.ReLU())
        self.b1 = nn.Sequential(conv_bn(16, 8, 1), nn.ReLU())
        self.b2 = nn.Sequential(conv_bn(16, 16, 3, groups=4), nn.ReLU())  # grouped, not depthwise
        self.b3 = nn.Sequential(conv_bn(16, 8, 3, dilation=2), nn.ReLU())
        self.b4 = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), nn.Conv2d(16, 8, 1))
        self.mix = nn.Conv2d(40, 16, 1, groups=2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.stem(x)
        y = torch.cat([self.b1(y), self.b2(y), self.b3(y), self.b4(y)], dim=1)
        y = torch.relu(self.mix(y))
        return self.fc(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))


@_register("shapes", (1, 3, 16, 16), seed=8)
class Shapes(nn.Module):
    """Transpose/permute, view/reshape with -1, squeeze/unsqueeze, sub/mul/div by constants, x @ W,
    Softmax over a non-last axis."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 8 x 8 x 8
        self.w = nn.Parameter(torch.randn(8, 12) * 0.3)
        self.scale = nn.Parameter(torch.rand(12) + 0.5)

    def forward(self, x):
        y = self.conv(x)  # N, 8, 8, 8
        n = y.shape[0]
        t = y.permute(0, 2, 3, 1)  # N, H, W, C
        t = t.reshape(n, -1, 8)  # N, 64, 8
        t = t @ self.w  # N, 64, 12: MatMul with a weight
        t = (t - 0.25) * self.scale / 1.5
        t = torch.softmax(t, dim=1)  # over the 64 positions, not the last axis
        s = t.unsqueeze(1)  # N, 1, 64, 12
        s = s.transpose(2, 3)  # N, 1, 12, 64
        s = s.squeeze(1)  # N, 12, 64
        gram = s @ s.transpose(1, 2)  # N, 12, 12: MatMul of two activations
        return gram.view(n, -1) / 2.0


@_register("arith", (1, 4, 8, 8), seed=9)
class Arith(nn.Module):
    """Broadcast elementwise arithmetic with constants and tensors, Abs/Neg/Exp/Sqrt, a clamp, Softmax on
    axis 1, a Linear on a 4D tensor (MatMul + Add)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(1, 4, 1, 1))
        self.lin = nn.Linear(8, 6)

    def forward(self, x):
        y = (x + self.bias) * 0.5 - 1.0
        y = torch.sqrt(torch.abs(y) + 1e-3) + torch.exp(-torch.abs(x))
        y = torch.clamp(y, -2.0, 3.0)
        y = torch.softmax(y, dim=1)
        return self.lin(y) / 3.0


@_register("batchnorm", (1, 3, 16, 16), seed=10)
class StandaloneBatchNorm(nn.Module):
    """BatchNorm where no exporter can fold it into a Conv/Gemm: after a ReLU, after a residual add, and
    a BatchNorm1d after a ReLU'd Linear. (Both exporters fold eval-mode Conv->BN, so the other models
    never show a BatchNormalization node.)"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.bn3 = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 5)

    def forward(self, x):
        y = self.bn1(torch.relu(self.conv1(x)))
        y = self.bn2(y + self.conv2(y))
        y = nn.functional.max_pool2d(y, 4)
        y = self.bn3(torch.relu(self.fc(y.flatten(1))))
        return self.out(y)


# --- ImageNet-size networks (benchmarks; seconds to export, tens of MB) -----------------------------------

@_register("resnet18", (1, 3, 224, 224), seed=11)
class ResNet18(nn.Module):
    """ResNet-18 (He et al.): 7x7/2 stem, 3x3/2 max pool, four stages of two basic blocks (64, 128, 256,
    512 channels), global average pool, 1000-way Linear. Random weights."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@_register("mobilenetv2", (1, 3, 224, 224), seed=12)
class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., width 1.0): the inverted-residual stages of the paper's table 2, 1x1
    head to 1280 channels, global average pool, 1000-way Linear. Random weights."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self):
        super().__init__()
        layers, cin = [nn.Sequential(conv_bn(3, 32, 3, 2), nn.ReLU6())], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidualT(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(conv_bn(cin, 1280, 1), nn.ReLU6()))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1280, 1000)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class _InvertedResidualT(InvertedResidual):
    """InvertedResidual, without the expansion conv when the expansion factor is 1 (as in the paper)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__(cin, cout, stride, expand)
        if expand == 1:
            self.body = nn.Sequential(*list(self.body.children())[2:])


# --- transformers (plain torch mirroring HuggingFace's module structure, so they export its patterns) -----

@dataclass(frozen=True)
class TransformerConfig:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    seq: int = 16
    vocab: int = 100
    image: int = 32
    patch: int = 8
    classes: int = 10


def _register_transformer(name: str, cls, config: TransformerConfig, seed: int):
    def build():
        torch.manual_seed(seed)
        module = cls(config)
        randomize_layernorm(module, seed)
        return module.eval(), module.inputs()

    build.__name__ = f"build_{name}"
    build.__doc__ = cls.__doc__
    MODELS[name] = build


def randomize_layernorm(module: nn.Module, seed: int) -> None:
    """Give every LayerNorm non-trivial affine parameters (fresh ones are 1/0, which hide a swapped
    scale/bias in a fusion)."""
    gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, H*D] -> [B, H, S, D] (HuggingFace's view + permute)."""
    return x.view(x.size()[:-1] + (heads, x.size(-1) // heads)).permute(0, 2, 1, 3)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, S, D] -> [B, S, H*D] (permute + contiguous + view)."""
    x = x.permute(0, 2, 1, 3).contiguous()
    return x.view(x.size()[:-2] + (x.size(-2) * x.size(-1),))


class BertSelfAttention(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.heads, self.head_dim = c.heads, c.hidden // c.heads
        self.query, self.key, self.value = (nn.Linear(c.hidden, c.hidden) for _ in range(3))

    def forward(self, h, extended_mask):
        q, k, v = (_split_heads(f(h), self.heads) for f in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = nn.functional.softmax(scores + extended_mask, dim=-1)
        return _merge_heads(torch.matmul(probs, v))


class BertLayer(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.attention = BertSelfAttention(c)
        self.attention_output = nn.Linear(c.hidden, c.hidden)
        self.attention_norm = nn.LayerNorm(c.hidden, eps=1e-12)
        self.intermediate = nn.Linear(c.hidden, c.intermediate)
        self.output = nn.Linear(c.intermediate, c.hidden)
        self.output_norm = nn.LayerNorm(c.hidden, eps=1e-12)

    def forward(self, h, extended_mask):
        h = self.attention_norm(self.attention_output(self.attention(h, extended_mask)) + h)
        return self.output_norm(self.output(nn.functional.gelu(self.intermediate(h))) + h)


class Bert(nn.Module):
    """BERT encoder (Devlin et al., HuggingFace BertModel's structure): word + position + token-type
    embeddings and LayerNorm, self-attention layers with an additive mask ``(1 - mask) * finfo.min``, erf
    GELU feed-forward, post-LN residuals, tanh pooler on the first token. Outputs: sequence, pooled."""

    output_names = ("last_hidden_state", "pooler_output")

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.config = c
        self.word_embeddings = nn.Embedding(c.vocab, c.hidden)
        self.position_embeddings = nn.Embedding(c.seq, c.hidden)
        self.token_type_embeddings = nn.Embedding(2, c.hidden)
        self.embeddings_norm = nn.LayerNorm(c.hidden, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(c.seq).unsqueeze(0), persistent=False)
        self.register_buffer("token_type_ids", torch.zeros(1, c.seq, dtype=torch.long), persistent=False)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.layers))
        self.pooler = nn.Linear(c.hidden, c.hidden)

    def inputs(self) -> tuple[InputSpec, ...]:
        c = self.config
        return (InputSpec("input_ids", (1, c.seq), "int64", "ids", c.vocab),
                InputSpec("attention_mask", (1, c.seq), "int64", "mask", max(1, c.seq // 8)))

    def forward(self, input_ids, attention_mask):
        s = input_ids.size(1)
        h = (self.word_embeddings(input_ids) + self.token_type_embeddings(self.token_type_ids[:, :s])
             + self.position_embeddings(self.position_ids[:, :s]))
        h = self.embeddings_norm(h)
        extended = attention_mask[:, None, None, :].to(h.dtype)
        extended = (1.0 - extended) * torch.finfo(h.dtype).min
        for layer in self.layers:
            h = layer(h, extended)
        return h, torch.tanh(self.pooler(h[:, 0]))


class Conv1D(nn.Module):
    """GPT-2's linear layer: weight [in, out], ``addmm(bias, x.view(-1, in), weight)``."""

    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_features, out_features) * 0.05)
        self.bias = nn.Parameter(torch.randn(out_features) * 0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.weight.size(1),)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


def gelu_new(x):
    """GPT-2's tanh GELU, spelled out as HuggingFace's NewGELUActivation."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Block(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.heads, self.hidden = c.heads, c.hidden
        self.ln_1 = nn.LayerNorm(c.hidden)
        self.c_attn = Conv1D(3 * c.hidden, c.hidden)
        self.attn_proj = Conv1D(c.hidden, c.hidden)
        self.ln_2 = nn.LayerNorm(c.hidden)
        self.c_fc = Conv1D(c.intermediate, c.hidden)
        self.mlp_proj = Conv1D(c.hidden, c.intermediate)
        causal = torch.tril(torch.ones((c.seq, c.seq), dtype=torch.bool)).view(1, 1, c.seq, c.seq)
        self.register_buffer("bias", causal, persistent=False)

    def attention(self, h):
        q, k, v = (_split_heads(t, self.heads) for t in self.c_attn(h).split(self.hidden, dim=2))
        w = torch.matmul(q, k.transpose(-1, -2))
        w = w / torch.full([], v.size(-1) ** 0.5, dtype=w.dtype)
        s = q.size(-2)
        causal = self.bias[:, :, :s, :s]
        w = torch.where(causal, w, torch.full([], torch.finfo(w.dtype).min, dtype=w.dtype))
        return self.attn_proj(_merge_heads(torch.matmul(nn.functional.softmax(w, dim=-1), v)))

    def forward(self, h):
        h = h + self.attention(self.ln_1(h))
        return h + self.mlp_proj(gelu_new(self.c_fc(self.ln_2(h))))


class GPT2(nn.Module):
    """GPT-2 decoder (Radford et al., HuggingFace GPT2LMHeadModel's structure): token + position
    embeddings (positions from ``torch.arange``), pre-LN blocks with a fused q/k/v projection split in
    three, a causal ``torch.where(tril, w, finfo.min)`` mask, tanh GELU, final LayerNorm and an LM head
    tied to the token embedding."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab, c.hidden)
        self.wpe = nn.Embedding(c.seq, c.hidden)
        self.h = nn.ModuleList(GPT2Block(c) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.hidden)
        with torch.no_grad():
            self.wte.weight.mul_(0.1)

    def inputs(self) -> tuple[InputSpec, ...]:
        return (InputSpec("input_ids", (1, self.config.seq), "int64", "ids", self.config.vocab),)

    def forward(self, input_ids):
        positions = torch.arange(0, input_ids.size(-1), dtype=torch.long).unsqueeze(0)
        h = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            h = block(h)
        return torch.matmul(self.ln_f(h), self.wte.weight.t())


class ViTLayer(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.heads = c.heads
        self.layernorm_before = nn.LayerNorm(c.hidden, eps=1e-12)
        self.query, self.key, self.value = (nn.Linear(c.hidden, c.hidden) for _ in range(3))
        self.attention_output = nn.Linear(c.hidden, c.hidden)
        self.layernorm_after = nn.LayerNorm(c.hidden, eps=1e-12)
        self.intermediate = nn.Linear(c.hidden, c.intermediate)
        self.output = nn.Linear(c.intermediate, c.hidden)

    def forward(self, h):
        x = self.layernorm_before(h)
        q, k, v = (_split_heads(f(x), self.heads) for f in (self.query, self.key, self.value))
        h = h + self.attention_output(_merge_heads(nn.functional.scaled_dot_product_attention(q, k, v)))
        return h + self.output(nn.functional.gelu(self.intermediate(self.layernorm_after(h))))


class ViT(nn.Module):
    """Vision Transformer (Dosovitskiy et al., HuggingFace ViTForImageClassification's structure): Conv2d
    patch embedding, flatten + transpose, a class token, position embeddings, pre-LN blocks through
    ``scaled_dot_product_attention``, erf GELU, final LayerNorm, classifier on the class token."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.config = c
        patches = (c.image // c.patch) ** 2
        self.patch_embeddings = nn.Conv2d(3, c.hidden, c.patch, c.patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, c.hidden) * 0.02)
        self.position_embeddings = nn.Parameter(torch.randn(1, patches + 1, c.hidden) * 0.02)
        self.layers = nn.ModuleList(ViTLayer(c) for _ in range(c.layers))
        self.layernorm = nn.LayerNorm(c.hidden, eps=1e-12)
        self.classifier = nn.Linear(c.hidden, c.classes)

    def inputs(self) -> tuple[InputSpec, ...]:
        return (InputSpec("pixel_values", (1, 3, self.config.image, self.config.image)),)

    def forward(self, pixel_values):
        h = self.patch_embeddings(pixel_values).flatten(2).transpose(1, 2)
        h = torch.cat((self.cls_token.expand(h.shape[0], -1, -1), h), dim=1) + self.position_embeddings
        for layer in self.layers:
            h = layer(h)
        return self.classifier(self.layernorm(h)[:, 0, :])


TINY = TransformerConfig(hidden=64, layers=2, heads=2, intermediate=128)
BENCH = TransformerConfig(hidden=256, layers=4, heads=4, intermediate=1024, seq=128, vocab=1000)
VIT_S16 = TransformerConfig(hidden=384, layers=12, heads=6, intermediate=1536, image=224, patch=16,
                            classes=1000)
_register_transformer("bert_tiny", Bert, TINY, seed=21)
_register_transformer("gpt2_tiny", GPT2, TINY, seed=22)
_register_transformer("vit_tiny", ViT, TINY, seed=23)
_register_transformer("bert", Bert, BENCH, seed=24)
_register_transformer("gpt2", GPT2, BENCH, seed=25)
_register_transformer("vit", ViT, VIT_S16, seed=26)

"""Small torch models covering the op list the compiler accepts.

Every entry of :data:`MODELS` is a zero-argument builder returning ``(module, input_shape)``: the module in
eval mode with seeded weights (BatchNorm running statistics randomised so folding BN actually matters) and
the fixed example input shape, batch first. The input is always one float32 tensor.

Each model runs in well under a second at its input shape and exports to tens of KB of ONNX.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Builder = Callable[[], tuple[nn.Module, tuple[int, ...]]]
MODELS: dict[str, Builder] = {}


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

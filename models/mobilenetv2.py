"""MobileNetV2, plain or with an attention layer closing every inverted residual block (the
paper's MobileNetV2, SE-MobileNetV2 and ECA-MobileNetV2)."""

from typing import Any, List, Optional, Sequence

import torch
from torch import nn

from .attention import ChannelAttention, attention_kind, create_attention
from .features import FeatureInfo, FeatureSpec
from .kernel_size import KernelSizeSpec, parse_kernel_sizes
from .registry import register_model
from .resnet import refuse_pretrained

__all__ = [
    "MobileNetV2",
    "InvertedResidual",
    "mobilenet_v2",
    "se_mobilenet_v2",
    "eca_mobilenet_v2",
    "INVERTED_RESIDUAL_SETTING",
    "SE_REDUCTION",
]

SE_REDUCTION = 8
"""SE-MobileNetV2's r, as the paper's (the ResNets' SE uses 16)."""

INVERTED_RESIDUAL_SETTING = (
    # expansion t, output channels c, repeats n, first stride s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """The block; its attention, if any, is the last layer of ``conv``, after the projection's
    BatchNorm, on the block's output channels, whether or not the block is residual (the
    official ECA-MobileNetV2's place, ``features.N.conv.K``). The BatchNorm's output is a
    temporary that only the attention reads, so the block lets the layer write over it
    (``ChannelAttention.inplace``), as torchvision's blocks let a ReLU."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, attention: Optional[ChannelAttention]) -> None:
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden_dim, kernel_size=1))
        layers += [
            ConvBNReLU(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        if attention is not None:
            attention.inplace = True
            layers.append(attention)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with any registered attention (or none), and timm's backbone interface: ``feature_info`` (the last block
    at each stride: 16, 24, 32, 96 and 320 channels at strides 2 to 32), ``forward_features``
    (the 1280-channel map before pooling) and ``reset_classifier``."""

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        attention: str = "none",
        kernel_sizes: Optional[Sequence[int]] = None,
        **attention_kwargs: Any,
    ) -> None:
        """``attention`` names a registered layer (``models.attention``) for every block;
        ``kernel_sizes`` gives one k per block (17 of them) to one that takes a kernel size:
        by default k = 1 for the stages whose nominal width is below 96 channels and 3 from
        there on, as in the released ECA-MobileNetV2. ``attention_kwargs`` go to every layer."""
        super().__init__()
        takes_kernel_size = attention_kind(attention).takes_kernel_size
        if kernel_sizes is not None and not takes_kernel_size:
            raise TypeError(f"attention {attention!r} has no kernel size to set")
        input_channel = int(32 * width_mult)
        self.last_channel = int(1280 * max(1.0, width_mult))
        if kernel_sizes is None:
            kernel_sizes = [1 if c < 96 else 3 for _, c, n, _ in INVERTED_RESIDUAL_SETTING for _ in range(n)]
        kernel_sizes = list(kernel_sizes)
        features: List[nn.Module] = [ConvBNReLU(3, input_channel, stride=2)]
        last_block_at_stride = {}
        stride = 2
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = int(c * width_mult)
            stride *= s
            for index in range(n):
                layer_kwargs = dict(attention_kwargs, k_size=kernel_sizes[len(features) - 1]) if takes_kernel_size else attention_kwargs
                block_attention = create_attention(attention, output_channel, **layer_kwargs)
                features.append(InvertedResidual(input_channel, output_channel, s if index == 0 else 1, t, block_attention))
                input_channel = output_channel
            last_block_at_stride[stride] = FeatureSpec(
                num_chs=output_channel, reduction=stride, module=f"features.{len(features) - 1}"
            )
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.forward_steps = tuple(f"features.{index}" for index in range(len(features)))
        self.feature_info = FeatureInfo(last_block_at_stride.values())
        self.num_features = self.last_channel
        self.num_classes = num_classes
        self.classifier = nn.Sequential(nn.Dropout(0.25), nn.Linear(self.last_channel, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """As the original: He-normal (fan_out) convolutions, N(0, 0.01) classifier, zero biases;
        attention layers keep their own initialisation (see ``ResNet._init_weights``)."""
        attention_parts = {id(part) for layer in self.modules() if isinstance(layer, ChannelAttention) for part in layer.modules()}
        for module in self.modules():
            if id(module) in attention_parts:
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last 1x1 convolution's 1280-channel map, before pooling."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x).mean(dim=(2, 3)))

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for ``num_classes``, initialised as the original's (N(0, 0.01), zero
        bias); 0 removes it, and ``forward`` returns the pooled features."""
        self.num_classes = num_classes
        if num_classes > 0:
            linear = nn.Linear(self.num_features, num_classes)
            nn.init.normal_(linear.weight, 0, 0.01)
            nn.init.zeros_(linear.bias)
            self.classifier[1] = linear
        else:
            self.classifier[1] = nn.Identity()


def block_output_channels(width_mult: float = 1.0) -> List[int]:
    return [int(c * width_mult) for _, c, n, _ in INVERTED_RESIDUAL_SETTING for _ in range(n)]


@register_model
def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, pretrained: bool = False) -> MobileNetV2:
    """MobileNetV2 without attention (torchvision's layout; the classifier's Dropout is 0.25, as
    the paper trained all three MobileNetV2 rows)."""
    refuse_pretrained("mobilenet_v2", pretrained)
    return MobileNetV2(num_classes, width_mult)


@register_model
def se_mobilenet_v2(
    num_classes: int = 1000, width_mult: float = 1.0, pretrained: bool = False, **attention_kwargs: Any
) -> MobileNetV2:
    """SE-MobileNetV2: SE with r = 8 and, as the paper counts it, no biases (``bias=True``: SENet's)."""
    refuse_pretrained("se_mobilenet_v2", pretrained)
    return MobileNetV2(num_classes, width_mult, "se", **{"reduction": SE_REDUCTION, **attention_kwargs})


@register_model
def eca_mobilenet_v2(
    num_classes: int = 1000,
    width_mult: float = 1.0,
    pretrained: bool = False,
    k_size: Optional[KernelSizeSpec] = None,
) -> MobileNetV2:
    """ECA-MobileNetV2 as released (k = 1 below 96 channels, else 3).

    ``k_size="adaptive"`` applies Eq. 12 to each block's output channels instead; a sequence
    of 17 odd sizes sets each inverted residual block's k (as read from a checkpoint).
    """
    refuse_pretrained("eca_mobilenet_v2", pretrained)
    kernel_sizes = None if k_size is None else parse_kernel_sizes(k_size, block_output_channels(width_mult))
    return MobileNetV2(num_classes, width_mult, "eca", kernel_sizes)

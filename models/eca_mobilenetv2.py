"""ECA-MobileNetV2: MobileNetV2 with an ECA layer closing every inverted residual block."""

from typing import List, Optional, Sequence

import torch
from torch import nn

from .eca import EfficientChannelAttention, KernelSizeSpec, parse_kernel_sizes
from .features import FeatureInfo, FeatureSpec
from .registry import register_model

__all__ = ["ECAMobileNetV2", "InvertedResidual", "eca_mobilenet_v2", "INVERTED_RESIDUAL_SETTING"]

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
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, k_size: int) -> None:
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
            EfficientChannelAttention(oup, k_size),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class ECAMobileNetV2(nn.Module):
    """MobileNetV2 with ECA, and timm's backbone interface: ``feature_info`` (the last block
    at each stride: 16, 24, 32, 96 and 320 channels at strides 2 to 32), ``forward_features``
    (the 1280-channel map before pooling) and ``reset_classifier``."""

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        kernel_sizes: Optional[Sequence[int]] = None,
    ) -> None:
        """``kernel_sizes`` gives one k per inverted residual block (17 of them); by default
        k = 1 for the stages whose nominal width is below 96 channels and 3 from there on,
        as in the released model."""
        super().__init__()
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
                k_size = kernel_sizes[len(features) - 1]
                features.append(InvertedResidual(input_channel, output_channel, s if index == 0 else 1, t, k_size))
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
        """As the original: He-normal (fan_out) convolutions, N(0, 0.01) classifier, zero biases."""
        for module in self.modules():
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
def eca_mobilenet_v2(
    num_classes: int = 1000,
    width_mult: float = 1.0,
    pretrained: bool = False,
    k_size: Optional[KernelSizeSpec] = None,
) -> ECAMobileNetV2:
    """ECA-MobileNetV2 as released (k = 1 below 96 channels, else 3).

    ``k_size="adaptive"`` applies Eq. 9 to each block's output channels instead; a sequence
    of 17 odd sizes sets each inverted residual block's k (as read from a checkpoint).
    """
    if pretrained:
        raise ValueError(
            "eca_mobilenet_v2(pretrained=True): weights are never downloaded; build the model "
            "and load a released checkpoint file instead (main.py --pretrained PATH)"
        )
    kernel_sizes = None if k_size is None else parse_kernel_sizes(k_size, block_output_channels(width_mult))
    return ECAMobileNetV2(num_classes, width_mult, kernel_sizes)

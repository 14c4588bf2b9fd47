"""The Squeeze-and-Excitation block (Hu et al., CVPR 2018), ECA's main point of comparison."""

import torch
from torch import nn

from .base import ChannelAttention

__all__ = ["SqueezeExcitation"]


class SqueezeExcitation(ChannelAttention):
    """Gate each channel by a two-layer bottleneck MLP over all channels' pooled responses.

    Global average pooling, FC(C -> C / r), ReLU, FC(C / r -> C), sigmoid, channel-wise
    scale: the all-to-all mixing through a reduced dimension that ECA replaces with a k-tap
    1D convolution. The ECA-Net paper counts SE without biases (2 C^2 / r per block, Table 2;
    SENet-50's 26.77M in Table 3), and that is the default; ``bias=True`` gives the biased
    layers SENet's authors trained (and torchvision's ``SqueezeExcitation``), 26.79M at ResNet-50.
    """

    block_attribute = "se"
    layout_variants = ({"bias": True},)

    def __init__(self, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        if reduction < 1 or channels < reduction:
            raise ValueError(f"SE reduction must be between 1 and channels={channels}, got {reduction}")
        self.channels = channels
        self.reduction = reduction
        self.fc1 = nn.Linear(channels, channels // reduction, bias=bias)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(channels // reduction, channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(self.relu(self.fc1(pooled))))
        return x * gate[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, bias={self.fc1.bias is not None}"

"""The Squeeze-and-Excitation block (Hu et al., CVPR 2018), ECA's main point of comparison."""

import torch
from torch import nn

__all__ = ["SqueezeExcitation"]


class SqueezeExcitation(nn.Module):
    """Gate each channel by a two-layer bottleneck MLP over all channels' pooled responses.

    This is the SE block as its authors describe and trained it: global average pooling,
    FC(C -> C / r) with bias, ReLU, FC(C / r -> C) with bias, sigmoid, channel-wise scale.
    The dimensionality reduction and the all-to-all mixing are exactly what ECA replaces
    with a k-tap 1D convolution, so both blocks sit at the same place in a ResNet.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1 or channels < reduction:
            raise ValueError(f"SE reduction must be between 1 and channels={channels}, got {reduction}")
        self.channels = channels
        self.reduction = reduction
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(self.relu(self.fc1(pooled))))
        return x * gate[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"

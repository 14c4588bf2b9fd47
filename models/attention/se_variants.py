"""The SE variants of the paper's Table 2: SE's gate with its MLP taken apart.

Each gates X channel-wise by sigma(f(y)), y = GAP(X), where SE sits, and none has a bias:
SE-Var1 has no f at all; SE-Var2, SE-Var3 and SE-GC1..3 are one grouped C -> C layer with
no hidden layer, differing only in the number of groups G (C^2 / G weights).
"""

from typing import Optional

import torch
from torch import nn

from .base import ChannelAttention

__all__ = ["ParameterFreeGate", "GroupedChannelGate"]


class ParameterFreeGate(ChannelAttention):
    """SE-Var1: sigma(y) itself is the gate; no parameters, so no mixing across channels."""

    block_attribute = "se"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class GroupedChannelGate(ChannelAttention):
    """sigma(W y) with W block-diagonal in G groups: a bias-free ``Conv1d(C, C, 1, groups=G)``.

    G = C is SE-Var2's w (.) y (a grouped conv with groups = C, as the paper's author
    describes it), G = 1 is SE-Var3's full C x C layer, G = 16 SE-GC1; SE-GC2 and SE-GC3
    fix the channels per group instead (16 and 8, so G = C / 16 and C / 8). The weights are
    ``fc.weight`` of shape (C, C / G, 1).
    """

    block_attribute = "se"

    def __init__(self, channels: int, groups: Optional[int] = None, channels_per_group: Optional[int] = None) -> None:
        super().__init__()
        if (groups is None) == (channels_per_group is None):
            raise ValueError("give either groups or channels_per_group")
        if groups is None:
            if channels_per_group < 1 or channels % channels_per_group:
                raise ValueError(f"{channels} channels do not split into groups of {channels_per_group}")
            groups = channels // channels_per_group
        if groups < 1 or channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} groups")
        self.channels = channels
        self.groups = groups
        self.fc = nn.Conv1d(channels, channels, kernel_size=1, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3)).unsqueeze(-1)))  # (N, C, 1)
        return x * gate.unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}"

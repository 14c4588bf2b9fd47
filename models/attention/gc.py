"""GCNet's global context block (Cao et al., ICCVW 2019 / TPAMI 2020)."""

from typing import Any, Dict, Mapping, Tuple

import torch
from torch import nn

from .base import ChannelAttention

__all__ = ["GlobalContextBlock"]


class GlobalContextBlock(ChannelAttention):
    """Add one global context vector, transformed, to every position.

    Context modelling: a 1 x 1 conv C -> 1 gives each position a logit, softmax over the
    positions, and the softmax-weighted sum of the features is the context (C x 1 x 1).
    Transform: 1 x 1 conv C -> C / r, LayerNorm over (C / r, 1, 1), ReLU, 1 x 1 conv
    C / r -> C, all convs with bias; fusion: addition (not a gate). r = 16 by default, as
    GCNet's ResNets use it (its detectors also come with r = 4); a checkpoint's r is read from
    its hidden width (:meth:`settings_from_shapes`). The last conv starts at zero, as in GCNet,
    so the block starts as the identity. Per block: 2 C^2 / r + 2 C + 1 + 3 C / r parameters.
    Keys and computation are GCNet's ``ContextBlock`` with ``pooling_type='att'`` and
    ``fusion_types=('channel_add',)`` (its ``ratio`` is 1 / r).
    """

    block_attribute = "gc"
    global_average_pooling = False

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1 or channels < reduction:
            raise ValueError(f"GC reduction must be between 1 and channels={channels}, got {reduction}")
        hidden = channels // reduction
        self.channels = channels
        self.reduction = reduction
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add_conv[-1].weight)
        nn.init.zeros_(self.channel_add_conv[-1].bias)

    @classmethod
    def settings_from_shapes(cls, shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, Any]:
        """``reduction``: C over the hidden width, from the first transform conv's (C / r, C, 1, 1)."""
        shape = shapes.get("channel_add_conv.0.weight")
        if shape is None or len(shape) != 4 or shape[0] < 1:
            return {}
        return {"reduction": shape[1] // shape[0]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        weights = torch.softmax(self.conv_mask(x).view(batch, 1, height * width), dim=-1)
        context = torch.matmul(x.reshape(batch, channels, height * width), weights.transpose(1, 2))
        return x + self.channel_add_conv(context.view(batch, channels, 1, 1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"

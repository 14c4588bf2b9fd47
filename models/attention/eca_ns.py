"""ECA-NS, the paper's non-shared ECA (Table 2, Eq. 7): every channel learns its own k taps."""

import torch
import torch.nn.functional as F
from torch import nn

from .base import ChannelAttention

__all__ = ["NonSharedChannelAttention"]


class NonSharedChannelAttention(ChannelAttention):
    """ECA with C x k weights instead of k: channel c gates itself by its own k taps over
    channels c - (k - 1) / 2 ... c + (k - 1) / 2 of the pooled responses (zero beyond the ends).

    The paper's ablation for weight sharing: same neighbourhood as ECA, but no sharing
    across channels. The taps are stored as a depthwise ``Conv1d(C, C, k, groups=C)``
    weight of shape (C, 1, k) under ``conv.weight``, as in the original ``eca_ns.py``.
    """

    block_attribute = "eca"
    kernel_size_parameter = "conv.weight"

    def __init__(self, channels: int, k_size: int = 3) -> None:
        super().__init__()
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"ECA-NS kernel size must be a positive odd integer, got {k_size}")
        self.channels = channels
        self.k_size = k_size
        self.conv = nn.Conv1d(channels, channels, kernel_size=k_size, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.k_size - 1) // 2
        pooled = F.pad(x.mean(dim=(2, 3)), (pad, pad))
        channels = x.shape[1]
        # (batch, C, k): channel c's window. Stacked slices rather than ``unfold``, which ONNX's
        # TorchScript-based exporter cannot export when the batch size is dynamic.
        neighbourhoods = torch.stack([pooled[:, tap : tap + channels] for tap in range(self.k_size)], dim=-1)
        gate = torch.sigmoid(self.conv(neighbourhoods))  # (batch, C, 1): each channel's own taps
        return x * gate[:, :, :, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}"

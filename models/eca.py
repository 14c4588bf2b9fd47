"""The Efficient Channel Attention (ECA) layer and the paper's adaptive kernel size."""

import math
from typing import List, Sequence, Union

import torch
from torch import nn

__all__ = [
    "EfficientChannelAttention",
    "eca_layer",
    "adaptive_kernel_size",
    "parse_kernel_sizes",
    "KernelSizeSpec",
]

KernelSizeSpec = Union[str, Sequence[Union[int, str]]]
"""Per-stage ECA kernel sizes: ``"3557"``, ``[3, 5, 5, 7]``, ``list("3557")`` or ``"adaptive"``."""


def adaptive_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """Eq. 9 of the paper: k = |log2(C) + b| / gamma, rounded to the nearest odd integer above.

    Unlike timm, the result is not clamped to at least 3: for C <= 8 the paper's formula
    gives k = 1 or 3 and that is what is returned.
    """
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    t = int(abs(math.log2(channels) + b) / gamma)
    return t if t % 2 else t + 1


def parse_kernel_sizes(k_size: KernelSizeSpec, stage_channels: Sequence[int]) -> List[int]:
    """Turn any accepted k specification into one odd kernel size per stage.

    ``"adaptive"`` applies Eq. 9 to each stage's channel count (every ECA layer of a stage
    sees the same number of channels). Anything malformed is a ValueError naming the problem.
    """
    if isinstance(k_size, str) and k_size.lower() == "adaptive":
        return [adaptive_kernel_size(channels) for channels in stage_channels]
    entries = list(k_size)
    if len(entries) != len(stage_channels):
        raise ValueError(
            f"k_size {_show(k_size)} has {len(entries)} entries; this model has "
            f"{len(stage_channels)} stages, so give {len(stage_channels)} odd kernel sizes "
            f"(e.g. {'3' * len(stage_channels)}) or 'adaptive'"
        )
    sizes = []
    for stage, entry in enumerate(entries, start=1):
        if isinstance(entry, bool) or not isinstance(entry, (int, str)):
            raise ValueError(f"k_size {_show(k_size)}: stage {stage} entry {entry!r} is not an integer")
        if isinstance(entry, str):
            if not entry.isdigit():
                raise ValueError(f"k_size {_show(k_size)}: stage {stage} entry {entry!r} is not a digit")
            entry = int(entry)
        if entry < 1 or entry % 2 == 0:
            raise ValueError(
                f"k_size {_show(k_size)}: stage {stage} has k={entry}; every k must be a positive odd integer"
            )
        sizes.append(entry)
    return sizes


def _show(k_size: KernelSizeSpec) -> str:
    return repr(k_size) if isinstance(k_size, str) else repr(list(k_size))


class EfficientChannelAttention(nn.Module):
    """Gate each channel by a 1D convolution over its neighbours' pooled responses.

    Global average pooling gives one value per channel; a bias-free Conv1d of size k with
    zero padding mixes each channel with its k - 1 neighbours; a sigmoid turns that into a
    gate that scales the input channel-wise. The only parameters are the k taps, stored as
    ``conv.weight`` of shape (1, 1, k), exactly as in the released checkpoints.
    """

    def __init__(self, channels: int, k_size: int = 3) -> None:
        super().__init__()
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"ECA kernel size must be a positive odd integer, got {k_size}")
        self.channels = channels
        self.k_size = k_size
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        pooled = x.mean(dim=(2, 3)).view(batch, 1, channels)
        gate = torch.sigmoid(self.conv(pooled)).view(batch, channels, 1, 1)
        return x * gate

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}"


eca_layer = EfficientChannelAttention
"""The original implementation's public name, kept so ``from models import eca_layer`` works."""

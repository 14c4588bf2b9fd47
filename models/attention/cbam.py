"""CBAM, the Convolutional Block Attention Module (Woo et al., ECCV 2018): channel, then spatial."""

import torch
from torch import nn

from .base import ChannelAttention

__all__ = ["CBAM"]


class CBAM(ChannelAttention):
    """A channel gate, then a spatial gate, as the CBAM paper's Eq. 1-3 write them.

    Channel: sigma(MLP(AvgPool(F)) + MLP(MaxPool(F))), one MLP C -> C / r -> C (ReLU between)
    shared by both pooled vectors. Spatial, on the channel-gated map F':
    sigma(f7x7([AvgPool_c(F'); MaxPool_c(F')])), a 7 x 7 convolution over the channel-wise mean
    and max. The paper's equations have no biases and no normalisation, and that is the
    default (the ECA-Net paper's CBAM-50 count, 26.77M, is this one's); ``bias=True`` and
    ``spatial_batch_norm=True`` give the official code's layer (Jongchan/attention-module's
    ``CBAM``): its biased MLP and its BatchNorm after the 7 x 7 conv, with the official
    momentum of 0.01 (whose count the ECA-Net poster's CBAM-34 row, 20.943M, fits). The
    official code pools [max; mean] for the spatial gate where this layer pools [mean; max], so
    its weights load with the conv's two input channels swapped (``models/cbam_official.py``),
    after which both compute the same.
    """

    block_attribute = "cbam"
    layout_variants = ({"bias": True}, {"bias": True, "spatial_batch_norm": True})

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        spatial_kernel_size: int = 7,
        bias: bool = False,
        spatial_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if reduction < 1 or channels < reduction:
            raise ValueError(f"CBAM reduction must be between 1 and channels={channels}, got {reduction}")
        if spatial_kernel_size < 1 or spatial_kernel_size % 2 == 0:
            raise ValueError(f"CBAM's spatial kernel size must be a positive odd integer, got {spatial_kernel_size}")
        self.channels = channels
        self.reduction = reduction
        self.fc1 = nn.Linear(channels, channels // reduction, bias=bias)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(channels // reduction, channels, bias=bias)
        self.spatial = nn.Conv2d(
            2, 1, spatial_kernel_size, padding=(spatial_kernel_size - 1) // 2, bias=False
        )
        self.spatial_bn = nn.BatchNorm2d(1, momentum=0.01) if spatial_batch_norm else None

    def _mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_gate = torch.sigmoid(self._mlp(x.mean(dim=(2, 3))) + self._mlp(x.amax(dim=(2, 3))))
        x = x * channel_gate[:, :, None, None]
        descriptor = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        spatial = self.spatial(descriptor)
        if self.spatial_bn is not None:
            spatial = self.spatial_bn(spatial)
        return x * torch.sigmoid(spatial)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"

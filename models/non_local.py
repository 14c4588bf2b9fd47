"""The non-local block (Wang, Girshick, Gupta, He, CVPR 2018) and ResNet-50 with one of them: the
"+ 1 NL" backbone of Table 5, which the ECA-Net paper copied from GCNet's paper.

Both papers put one block in a Mask R-CNN's ResNet-50 "right before the last residual block of
res4" (the Non-local paper's words; GCNet's "+1 NL" follows it): here ``layer3`` holds its first
five blocks, the non-local block as ``layer3.5``, then the last block as ``layer3.6``. GCNet's
repository has no config for that detector; its MMDetection plugin ``NonLocal2D`` is the block
(``mmdet/models/plugins/non_local.py``), with a BatchNorm after its output conv as both papers
have it for detection (which the "+ 1 NL" row's 46.50M counts: 2,100,736 parameters per block).
"""

import math
from typing import Any

import torch
from torch import nn

from .registry import register_model
from .resnet import ResNet, refuse_pretrained, resnet

__all__ = ["NonLocal2d", "nl_resnet50"]


class NonLocal2d(nn.Module):
    """``x + BN(W_z y)``, where ``y_i`` sums ``g(x_j)`` over all positions j weighted by
    ``softmax_j(theta(x_i) . phi(x_j) / sqrt(C'))`` (the embedded Gaussian with the scale of
    mmcv's NonLocal2d; MMDetection v1's plugin multiplied by sqrt(C') instead, a bug mmcv fixed).

    theta, phi and g are 1 x 1 convs C -> C' = C / reduction with bias; W_z is a 1 x 1 conv
    C' -> C without bias (a BatchNorm follows). As the plugin, theta, phi and g start from
    N(0, 0.01) and W_z from zero, so the block starts as the identity.
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        if reduction < 1 or channels < reduction:
            raise ValueError(f"non-local reduction must be between 1 and channels={channels}, got {reduction}")
        inner = channels // reduction
        self.channels, self.inner = channels, inner
        self.g = nn.Conv2d(channels, inner, kernel_size=1)
        self.theta = nn.Conv2d(channels, inner, kernel_size=1)
        self.phi = nn.Conv2d(channels, inner, kernel_size=1)
        self.conv_out = nn.Conv2d(inner, channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        for conv in (self.g, self.theta, self.phi):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv_out.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        queries = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        keys = self.phi(x).flatten(2)  # (N, C', HW)
        values = self.g(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        weights = torch.softmax(torch.matmul(queries, keys) / math.sqrt(self.inner), dim=-1)
        context = torch.matmul(weights, values).transpose(1, 2).reshape(batch, self.inner, height, width)
        return x + self.bn(self.conv_out(context))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, inner={self.inner}"


@register_model
def nl_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with one non-local block right before the last residual block of layer3 (res4)."""
    refuse_pretrained("nl_resnet50", pretrained)
    model = resnet(50, "none", num_classes, **kwargs)
    *first, last = model.layer3.children()
    model.layer3 = nn.Sequential(*first, NonLocal2d(last.conv3.out_channels), last)
    return model

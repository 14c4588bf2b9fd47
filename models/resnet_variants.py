"""The ResNets ECA is compared against, built by the same ``ResNet`` class as ECA-ResNet.

Only the attention module in each residual block differs, so a comparison is one model
name apart: none (torchvision's ResNet, key for key), SE (reduction 16) or ECA-NS (the
non-shared ECA of the paper's Table 1). Every module sits where ECA does: after the
block's last BatchNorm, before the residual addition.
"""

from typing import Optional

from torch import nn

from .eca import KernelSizeSpec
from .eca_ns import NonSharedChannelAttention
from .eca_resnet import DEFAULT_KERNEL_SIZES, RESNET_LAYOUTS, ResNet, refuse_pretrained, stage_kernel_sizes
from .registry import register_model
from .se import SqueezeExcitation

__all__ = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "se_resnet50",
    "se_resnet101",
    "se_resnet152",
    "eca_ns_resnet50",
]

SE_REDUCTION = 16


def _plain_resnet(name: str, depth: int, num_classes: int, pretrained: bool) -> ResNet:
    refuse_pretrained(name, pretrained)
    block, layers = RESNET_LAYOUTS[depth]
    return ResNet(block, layers, num_classes)


def _se_resnet(name: str, depth: int, num_classes: int, pretrained: bool) -> ResNet:
    refuse_pretrained(name, pretrained)
    block, layers = RESNET_LAYOUTS[depth]

    def se_for_stage(channels: int, stage: int) -> nn.Module:
        return SqueezeExcitation(channels, SE_REDUCTION)

    return ResNet(block, layers, num_classes, attention=se_for_stage, attention_name="se")


@register_model
def resnet18(num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ResNet-18 without attention; its state_dict is torchvision's ``resnet18``'s."""
    return _plain_resnet("resnet18", 18, num_classes, pretrained)


@register_model
def resnet34(num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ResNet-34 without attention; its state_dict is torchvision's ``resnet34``'s."""
    return _plain_resnet("resnet34", 34, num_classes, pretrained)


@register_model
def resnet50(num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ResNet-50 without attention; its state_dict is torchvision's ``resnet50``'s."""
    return _plain_resnet("resnet50", 50, num_classes, pretrained)


@register_model
def resnet101(num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ResNet-101 without attention; its state_dict is torchvision's ``resnet101``'s."""
    return _plain_resnet("resnet101", 101, num_classes, pretrained)


@register_model
def resnet152(num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ResNet-152 without attention; its state_dict is torchvision's ``resnet152``'s."""
    return _plain_resnet("resnet152", 152, num_classes, pretrained)


@register_model
def se_resnet50(num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """SE-ResNet-50 (reduction 16, biased excitation layers as SENet's authors trained it)."""
    return _se_resnet("se_resnet50", 50, num_classes, pretrained)


@register_model
def se_resnet101(num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """SE-ResNet-101 (reduction 16, biased excitation layers)."""
    return _se_resnet("se_resnet101", 101, num_classes, pretrained)


@register_model
def se_resnet152(num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """SE-ResNet-152 (reduction 16, biased excitation layers)."""
    return _se_resnet("se_resnet152", 152, num_classes, pretrained)


@register_model
def eca_ns_resnet50(
    k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False
) -> ResNet:
    """ECA-NS-ResNet-50: C x k taps per layer instead of ECA's k.

    ``k_size`` takes every form ECA-ResNet's does and defaults to ECA-ResNet-50's released
    3557, so that ECA and ECA-NS differ only in weight sharing.
    """
    refuse_pretrained("eca_ns_resnet50", pretrained)
    block, layers = RESNET_LAYOUTS[50]
    kernel_sizes = stage_kernel_sizes(block, DEFAULT_KERNEL_SIZES["eca_resnet50"] if k_size is None else k_size)

    def eca_ns_for_stage(channels: int, stage: int) -> nn.Module:
        return NonSharedChannelAttention(channels, kernel_sizes[stage])

    return ResNet(block, layers, num_classes, attention=eca_ns_for_stage, attention_name="eca")

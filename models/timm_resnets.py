"""timm's ResNet-D/T family with ECA and SE, under timm's names, and timm's checkpoint layout.

The most used ECA weights are timm's (``ecaresnet50d``, ``ecaresnet50t``, ``ecaresnet101d``,
``ecaresnet26t``, ``ecaresnet269d``, ``ecaresnetlight``: ``model.safetensors`` or
``pytorch_model.bin`` from the Hugging Face hub, or the ``.pth`` files of timm's releases).
Their networks are this project's ResNet with three of its switches (``models.ResNet``): a deep
stem of three 3x3 convolutions (``stem="deep"``: 32, 32, 64 channels; ``"deep_tiered"``: 24,
32, 64, the "T"), the shortcut's stride as a 2x2 average pool (``avg_down``, the "D"), and
other numbers of blocks. Their ECA layers are the paper's, with k from Eq. 12 (gamma 2, beta 1),
which timm clamps to at least 3; at these widths (256 channels and more) Eq. 12 never gives
less, so ``k_size="adaptive"`` is timm's k (5, 5, 5, 7). ``seresnet152d`` is the same family
with timm's biased SE layers.

timm keeps any attention of a block under ``se`` and writes SE's excitation as 1x1
convolutions; :func:`from_timm` maps both onto the layers here (timm's ``seresnet50`` is then
``se_resnet50(bias=True)``, its ``resnet50`` needs nothing: torchvision's keys).
"""

from typing import Any, Optional, Sequence

from .kernel_size import KernelSizeSpec
from .layout import AdaptedStateDict, StateDict, register_state_dict_adapter
from .registry import register_model
from .resnet import Bottleneck, ResNet, refuse_pretrained

__all__ = ["from_timm"]


def _resnet_d(
    name: str, layers: Sequence[int], attention: str, stem: str, num_classes: int, pretrained: bool, **kwargs: Any
) -> ResNet:
    refuse_pretrained(name, pretrained)
    return ResNet(Bottleneck, layers, num_classes, attention=attention, stem=stem, stem_width=32, avg_down=True, **kwargs)


def _adaptive(k_size: Optional[KernelSizeSpec]) -> KernelSizeSpec:
    """``k_size``, or Eq. 12 at each stage's width: timm's k for these models."""
    return "adaptive" if k_size is None else k_size


@register_model
def ecaresnet26t(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm's ECA-ResNet-26-T: Bottleneck blocks 2-2-2-2, the tiered deep stem, average-pool shortcuts; k by Eq. 12."""
    return _resnet_d("ecaresnet26t", (2, 2, 2, 2), "eca", "deep_tiered", num_classes, pretrained, k_size=_adaptive(k_size), **kwargs)


@register_model
def ecaresnet50d(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm's ECA-ResNet-50-D: ResNet-50's blocks, the deep stem, average-pool shortcuts; k by Eq. 12."""
    return _resnet_d("ecaresnet50d", (3, 4, 6, 3), "eca", "deep", num_classes, pretrained, k_size=_adaptive(k_size), **kwargs)


@register_model
def ecaresnet50t(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm's ECA-ResNet-50-T: ResNet-50's blocks, the tiered deep stem, average-pool shortcuts; k by Eq. 12."""
    return _resnet_d("ecaresnet50t", (3, 4, 6, 3), "eca", "deep_tiered", num_classes, pretrained, k_size=_adaptive(k_size), **kwargs)


@register_model
def ecaresnet101d(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm's ECA-ResNet-101-D: ResNet-101's blocks, the deep stem, average-pool shortcuts; k by Eq. 12."""
    return _resnet_d("ecaresnet101d", (3, 4, 23, 3), "eca", "deep", num_classes, pretrained, k_size=_adaptive(k_size), **kwargs)


@register_model
def ecaresnet269d(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm's ECA-ResNet-269-D: Bottleneck blocks 3-30-48-8, the deep stem, average-pool shortcuts; k by Eq. 12."""
    return _resnet_d("ecaresnet269d", (3, 30, 48, 8), "eca", "deep", num_classes, pretrained, k_size=_adaptive(k_size), **kwargs)


@register_model
def ecaresnetlight(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm's ECA-ResNet-light: Bottleneck blocks 1-1-11-3, the 7x7 stem, average-pool shortcuts; k by Eq. 12."""
    return _resnet_d("ecaresnetlight", (1, 1, 11, 3), "eca", "7x7", num_classes, pretrained, k_size=_adaptive(k_size), **kwargs)


@register_model
def seresnet152d(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm's SE-ResNet-152-D: ResNet-152's blocks, the deep stem, average-pool shortcuts, biased SE (r = 16)."""
    return _resnet_d("seresnet152d", (3, 8, 36, 3), "se", "deep", num_classes, pretrained, **{"bias": True, **kwargs})


@register_state_dict_adapter
def from_timm(state_dict: StateDict) -> Optional[AdaptedStateDict]:
    """timm's layout: a block's ECA under ``se`` (``se.conv.weight``, (1, 1, k)), and SE's
    excitation as 1x1 convolutions (``se.fc1/fc2.weight``, (C/r, C, 1, 1)); None for any other."""
    eca = any(key.endswith(".se.conv.weight") for key in state_dict)
    se_convolutions = any(key.endswith(".se.fc1.weight") and value.dim() == 4 for key, value in state_dict.items())
    if not (eca or se_convolutions):
        return None
    converted = {}
    for key, value in state_dict.items():
        key = key.replace(".se.conv.", ".eca.conv.")
        if key.endswith((".se.fc1.weight", ".se.fc2.weight")) and value.dim() == 4:
            value = value.flatten(1)  # a 1x1 convolution's (out, in, 1, 1) as a Linear's (out, in)
        converted[key] = value
    return AdaptedStateDict(converted, source="timm")

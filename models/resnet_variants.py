"""Every ``<attention>_resnet<depth>``: one registered name per attention and ResNet depth.

All are the one ``ResNet`` class, so a comparison is one name apart: ``resnet50`` (no
attention, torchvision's ResNet key for key), ``se_resnet50`` (the paper's SE: reduction 16,
no biases; ``se_resnet50(bias=True)`` is SENet's own biased block), ``se_var1_resnet50`` ...
``se_gc3_resnet50`` (Table 2's variants), ``eca_ns_resnet50``, ``eca_resnet50``,
``cbam_resnet50`` and ``gc_resnet50`` (GCNet's blocks in layer2..4), at depths 18, 34, 50,
101 and 152. Keyword arguments beyond ``num_classes`` go to every attention layer.
"""

from typing import Any, Callable, Optional

from .attention import attention_kind, list_attentions
from .kernel_size import KernelSizeSpec
from .registry import register_model
from .resnet import DEFAULT_KERNEL_SIZES, RESNET_LAYOUTS, ResNet, refuse_pretrained

__all__ = ["resnet", "resnet_model_name"]


def resnet_model_name(attention: str, depth: int) -> str:
    """The registered name of ResNet-``depth`` with ``attention`` (``"none"``: ``resnet50``)."""
    return f"resnet{depth}" if attention == "none" else f"{attention}_resnet{depth}"


def resnet(depth: int, attention: str = "none", num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-``depth`` (18, 34, 50, 101, 152) with a registered attention in its blocks."""
    if depth not in RESNET_LAYOUTS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
    block, layers = RESNET_LAYOUTS[depth]
    return ResNet(block, layers, num_classes, attention=attention, **kwargs)


def _constructor(attention: str, depth: int) -> Callable[..., ResNet]:
    name = resnet_model_name(attention, depth)
    if attention_kind(attention).takes_kernel_size:
        default_k = DEFAULT_KERNEL_SIZES[f"eca_resnet{depth}"]

        def constructor(
            k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any
        ) -> ResNet:
            refuse_pretrained(name, pretrained)
            return resnet(depth, attention, num_classes, k_size=default_k if k_size is None else k_size, **kwargs)

        constructor.__doc__ = (
            f"ResNet-{depth} with {attention} layers; k_size (per stage, or 'adaptive') defaults to the "
            f"released ECA-ResNet-{depth}'s {default_k}."
        )
    else:

        def constructor(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
            refuse_pretrained(name, pretrained)
            return resnet(depth, attention, num_classes, **kwargs)

        constructor.__doc__ = f"ResNet-{depth} with {attention} layers." if attention != "none" else (
            f"ResNet-{depth} without attention; its state_dict is torchvision's resnet{depth}'s."
        )
    constructor.__name__ = constructor.__qualname__ = name
    return constructor


for _attention in list_attentions():
    for _depth in RESNET_LAYOUTS:
        register_model(_constructor(_attention, _depth))

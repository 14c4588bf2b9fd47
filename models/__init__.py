"""ECA-Net models: the attention layers the paper compares (``models.attention``), one ResNet
and one MobileNetV2 that take any of them, and a registry of every named model.

Every registered model is also an attribute: ``models.eca_resnet50``, ``models.cbam_resnet101``.
"""

from typing import Any

# The other code bases' networks and checkpoint layouts, and Table 5's non-local ResNet: importing them registers them.
from . import cbam_official, gcnet, non_local, senet, timm_resnets  # noqa: F401
from .attention import (
    CBAM,
    ChannelAttention,
    EfficientChannelAttention,
    GlobalContextBlock,
    GroupedChannelGate,
    NonSharedChannelAttention,
    ParameterFreeGate,
    SqueezeExcitation,
    attention_names,
    create_attention,
    eca_layer,
)
from .features import FeatureInfo, FeatureListNet
from .kernel_size import adaptive_kernel_size, parse_kernel_sizes
from .mobilenetv2 import MobileNetV2
from .registry import create_model, get_model_constructor, list_models, register_model
from .resnet import DEFAULT_KERNEL_SIZES, ResNet, resnet, resnet_model_name

model_names = list_models()
"""Every registered model name, sorted."""


def __getattr__(name: str) -> Any:
    """``models.<registered name>`` is that model's constructor."""
    if name in model_names:
        return get_model_constructor(name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = [
    "ChannelAttention",
    "EfficientChannelAttention",
    "eca_layer",
    "NonSharedChannelAttention",
    "SqueezeExcitation",
    "ParameterFreeGate",
    "GroupedChannelGate",
    "CBAM",
    "GlobalContextBlock",
    "attention_names",
    "create_attention",
    "adaptive_kernel_size",
    "parse_kernel_sizes",
    "ResNet",
    "MobileNetV2",
    "DEFAULT_KERNEL_SIZES",
    "resnet",
    "resnet_model_name",
    "FeatureInfo",
    "FeatureListNet",
    "create_model",
    "get_model_constructor",
    "list_models",
    "register_model",
    "model_names",
] + model_names

"""ECA-Net models: the ECA layer, ECA-ResNets and ECA-MobileNetV2, and the ResNets they are
compared against (plain, SE, ECA-NS), behind one registry."""

from .eca import EfficientChannelAttention, adaptive_kernel_size, eca_layer, parse_kernel_sizes
from .eca_mobilenetv2 import ECAMobileNetV2, eca_mobilenet_v2
from .eca_ns import NonSharedChannelAttention
from .eca_resnet import (
    DEFAULT_KERNEL_SIZES,
    ResNet,
    eca_resnet18,
    eca_resnet34,
    eca_resnet50,
    eca_resnet101,
    eca_resnet152,
)
from .features import FeatureInfo, FeatureListNet
from .registry import create_model, list_models, register_model
from .resnet_variants import (
    eca_ns_resnet50,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    se_resnet50,
    se_resnet101,
    se_resnet152,
)
from .se import SqueezeExcitation

model_names = list_models()
"""Every registered model name, sorted."""

__all__ = [
    "EfficientChannelAttention",
    "eca_layer",
    "adaptive_kernel_size",
    "parse_kernel_sizes",
    "ResNet",
    "ECAMobileNetV2",
    "DEFAULT_KERNEL_SIZES",
    "eca_resnet18",
    "eca_resnet34",
    "eca_resnet50",
    "eca_resnet101",
    "eca_resnet152",
    "eca_mobilenet_v2",
    "NonSharedChannelAttention",
    "FeatureInfo",
    "FeatureListNet",
    "SqueezeExcitation",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "se_resnet50",
    "se_resnet101",
    "se_resnet152",
    "eca_ns_resnet50",
    "create_model",
    "list_models",
    "register_model",
    "model_names",
]

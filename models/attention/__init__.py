"""The attention layers the paper compares, each a plain module, and a registry of them by name.

``create_attention("cbam", 256)`` builds one; the networks (``models.ResNet``,
``models.MobileNetV2``) take a registered name and build one per block. Names: none, se,
se_var1, se_var2, se_var3, se_gc1, se_gc2, se_gc3, eca_ns, eca, cbam, gc.
"""

from .base import ChannelAttention
from .cbam import CBAM
from .eca import EfficientChannelAttention, capturing_graph, eca_layer
from .eca_ns import NonSharedChannelAttention
from .gc import GlobalContextBlock
from .registry import AttentionKind, attention_kind, create_attention, list_attentions, register_attention
from .se import SqueezeExcitation
from .se_variants import GroupedChannelGate, ParameterFreeGate

attention_names = list_attentions()
"""Every registered attention name, sorted."""

__all__ = [
    "ChannelAttention",
    "EfficientChannelAttention",
    "eca_layer",
    "capturing_graph",
    "NonSharedChannelAttention",
    "SqueezeExcitation",
    "ParameterFreeGate",
    "GroupedChannelGate",
    "CBAM",
    "GlobalContextBlock",
    "AttentionKind",
    "attention_kind",
    "create_attention",
    "list_attentions",
    "register_attention",
    "attention_names",
]

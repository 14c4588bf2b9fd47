"""Attention layers by name, as timm's ``attn_layer``: networks take a name and build the layers."""

import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from .base import ChannelAttention
from .cbam import CBAM
from .eca import EfficientChannelAttention
from .eca_ns import NonSharedChannelAttention
from .gc import GlobalContextBlock
from .se import SqueezeExcitation
from .se_variants import GroupedChannelGate, ParameterFreeGate

__all__ = ["AttentionKind", "register_attention", "attention_kind", "list_attentions", "create_attention"]

ALL_RESNET_STAGES = (0, 1, 2, 3)


@dataclass(frozen=True)
class AttentionKind:
    """One registered attention: how to build a layer for C channels, and where it goes."""

    name: str
    layer: Optional[Callable[..., ChannelAttention]]
    """Called as ``layer(channels, **kwargs)``; None for ``"none"``, which builds nothing."""
    takes_kernel_size: bool = False
    """Whether the layer takes ``k_size`` (ECA, ECA-NS), so networks pass their per-stage k."""
    resnet_stages: Tuple[int, ...] = ALL_RESNET_STAGES
    """ResNet stages (0 = layer1 ... 3 = layer4) whose blocks carry it; GCNet's sit in layer2..4."""


_kinds: Dict[str, AttentionKind] = {}


def register_attention(kind: AttentionKind) -> AttentionKind:
    """Make ``kind`` buildable by name (networks' ``attention=``, ``create_attention``); a name is registered once."""
    if kind.name in _kinds:
        raise ValueError(f"attention {kind.name!r} is registered twice")
    _kinds[kind.name] = kind
    return kind


def list_attentions() -> List[str]:
    """Every registered name, sorted, ``"none"`` included."""
    return sorted(_kinds)


def attention_kind(name: str) -> AttentionKind:
    """The registered attention; an unknown name is a ValueError that lists the valid ones."""
    try:
        return _kinds[name]
    except KeyError:
        raise ValueError(f"unknown attention {name!r}; choose one of: {', '.join(list_attentions())}") from None


def create_attention(name: str, channels: int, **kwargs: Any) -> Optional[ChannelAttention]:
    """A layer of the named attention for ``channels`` channels (None for ``"none"``)."""
    kind = attention_kind(name)
    if kind.layer is None:
        if kwargs:
            raise ValueError(f"attention 'none' takes no arguments, got {', '.join(sorted(kwargs))}")
        return None
    return kind.layer(channels, **kwargs)


for _kind in (
    AttentionKind("none", None),
    AttentionKind("se", SqueezeExcitation),
    AttentionKind("se_var1", ParameterFreeGate),
    AttentionKind("se_var2", functools.partial(GroupedChannelGate, channels_per_group=1)),
    AttentionKind("se_var3", functools.partial(GroupedChannelGate, groups=1)),
    AttentionKind("se_gc1", functools.partial(GroupedChannelGate, groups=16)),
    AttentionKind("se_gc2", functools.partial(GroupedChannelGate, channels_per_group=16)),
    AttentionKind("se_gc3", functools.partial(GroupedChannelGate, channels_per_group=8)),
    AttentionKind("eca_ns", NonSharedChannelAttention, takes_kernel_size=True),
    AttentionKind("eca", EfficientChannelAttention, takes_kernel_size=True),
    AttentionKind("cbam", CBAM),
    AttentionKind("gc", GlobalContextBlock, resnet_stages=(1, 2, 3)),
):
    register_attention(_kind)

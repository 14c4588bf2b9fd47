"""An attention layer written outside the package, as a user would write it in their own file:
a ChannelAttention subclass registered by name, a ResNet-18 with it registered as a model, and
an adapter for the layer's older checkpoints, all through the public API.

Importing this module registers them (for the whole process): ``mix_gate``, ``mix_gate_resnet18``.
"""

from typing import Any, Optional

import torch
from torch import nn

import models
from models.attention import AttentionKind, ChannelAttention, register_attention
from models.kernel_size import KernelSizeSpec
from models.layout import StateDict, register_state_dict_adapter


class ChannelMixGate(ChannelAttention):
    """sigma(conv1d_k(GAP(x)) + b): ECA's gate with an optional bias, kept under its own name.

    It says what the project needs to know of it in class attributes: the block keeps it as
    ``gate``, k is the last dimension of ``mix.weight``, and ``bias=True`` adds a key.
    """

    block_attribute = "gate"
    kernel_size_parameter = "mix.weight"
    layout_variants = ({"bias": True},)

    def __init__(self, channels: int, k_size: int = 3, bias: bool = False) -> None:
        super().__init__()
        self.mix = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.mix(x.mean(dim=(2, 3)).unsqueeze(1)))  # (N, 1, C)
        return x * gate.transpose(1, 2).unsqueeze(-1)


register_attention(AttentionKind("mix_gate", ChannelMixGate, takes_kernel_size=True))


@models.register_model
def mix_gate_resnet18(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, **kwargs: Any) -> models.ResNet:
    """ResNet-18 with a ChannelMixGate in every block (k = 3 in every stage unless given)."""
    return models.resnet(18, "mix_gate", num_classes, k_size=k_size, **kwargs)


@register_state_dict_adapter
def from_channel_gate_keys(state_dict: StateDict) -> Optional[StateDict]:
    """The gate's first checkpoints kept it under ``channel_gate``."""
    if not any(".channel_gate." in key for key in state_dict):
        return None
    return {key.replace(".channel_gate.", ".gate."): value for key, value in state_dict.items()}

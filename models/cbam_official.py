"""CBAM's ResNets as their authors released them: the official code's checkpoints
(Jongchan/attention-module, ``ResidualNet(..., 'CBAM')``; ``RESNET50_CBAM_new_name_wrap.pth``)
load into ``cbam_resnet<depth>(bias=True, spatial_batch_norm=True)``.

The trunk keeps torchvision's names; each block's CBAM is ``cbam.ChannelGate.mlp.1/3`` (the
shared MLP's Linear layers: ``mlp.0`` is a Flatten, ``mlp.2`` the ReLU) and
``cbam.SpatialGate.spatial.conv/bn`` (the 7 x 7 conv and its BatchNorm). The official spatial
gate concatenates [max; mean] over channels where ``models.CBAM`` concatenates [mean; max], as
the paper writes it, so the conv's two input channels are swapped on the way in: the one CBAM
layer here then computes the official function exactly.
"""

from typing import Optional

from .layout import AdaptedStateDict, StateDict, register_state_dict_adapter

__all__ = ["from_official_cbam"]

_OFFICIAL_NAMES = (
    ("ChannelGate.mlp.1.", "fc1."),
    ("ChannelGate.mlp.3.", "fc2."),
    ("SpatialGate.spatial.conv.", "spatial."),
    ("SpatialGate.spatial.bn.", "spatial_bn."),
)
"""The official CBAM module's names under a block's ``cbam.``, and models.CBAM's."""


@register_state_dict_adapter
def from_official_cbam(state_dict: StateDict) -> Optional[AdaptedStateDict]:
    """The official CBAM code's keys as ``models.CBAM``'s, its spatial conv's input channels in
    [mean; max] order; None for any other layout."""
    if not any(key.endswith(".cbam.ChannelGate.mlp.1.weight") for key in state_dict):
        return None
    converted = {}
    for key, value in state_dict.items():
        block, found, name = key.partition(".cbam.")
        if found:
            for official, own in _OFFICIAL_NAMES:
                if name.startswith(official):
                    name = own + name[len(official) :]
            if name == "spatial.weight":
                value = value[:, [1, 0]]  # [max; mean] -> [mean; max]
            key = f"{block}.cbam.{name}"
        converted[key] = value
    return AdaptedStateDict(converted, source="official CBAM")

"""GCNet's GC-ResNets as their authors released them: the backbones of GCNet's MMDetection v1
Mask R-CNNs (xvjiarui/GCNet, ``mask_rcnn_r16_gcb_c3-c5_r50_fpn_1x_20190602-c550c707.pth`` and
its r4 sibling) load into ``gc_resnet<depth>`` as classifier backbones.

GCNet's ResNet is torchvision's (stride on the 3 x 3 conv, a padded stem max-pool) under
``backbone.``, with a ``ContextBlock`` in every block of layer2..4 under ``context_block.``:
``conv_mask``, then ``channel_add_conv.0/1/3`` (conv, LayerNorm, conv; 2 is the ReLU). That
block acts on the output of ``bn3``, before the residual addition, as ``models.GlobalContextBlock``
does with the same names, so the weights only move from ``context_block`` to the block's ``gc``
slot. Its ratio (1/16 or 1/4) is not written down: the layout inference reads it from the
hidden width (``GlobalContextBlock.settings_from_shapes``). The files hold no classifier; a
whole detector file is read for its backbone here, and as the detector it is by
``utils.detection.checkpoint.load_detector`` (``models.detection.layout``).
"""

from typing import Optional

from .layout import AdaptedStateDict, StateDict, register_state_dict_adapter

__all__ = ["GCNET_SOURCE", "from_gcnet_mmdet_backbone", "gcnet_block_keys"]

GCNET_SOURCE = "GCNet MMDetection"
"""The layout's name, as ``load_model`` reports it."""

_BACKBONE = "backbone."


def gcnet_block_keys(state_dict: StateDict) -> Optional[StateDict]:
    """GCNet's ``context_block`` keys as the ``gc`` slot's, every other key as it is; None for a
    state_dict with no ``backbone.`` key that holds a context block (any other layout)."""
    if not any(key.startswith(_BACKBONE) and ".context_block." in key for key in state_dict):
        return None
    return {key.replace(".context_block.", ".gc."): value for key, value in state_dict.items()}


@register_state_dict_adapter
def from_gcnet_mmdet_backbone(state_dict: StateDict) -> Optional[AdaptedStateDict]:
    """The backbone of a GCNet MMDetection v1 file (a whole detector, or its ``backbone.`` keys
    alone) in ``gc_resnet<depth>``'s keys, without a classifier; the neck and heads are left out."""
    renamed = gcnet_block_keys(state_dict)
    if renamed is None:
        return None
    backbone = {key[len(_BACKBONE) :]: value for key, value in renamed.items() if key.startswith(_BACKBONE)}
    return AdaptedStateDict(backbone, source=GCNET_SOURCE)

"""GCNet's released Mask R-CNNs (xvjiarui/GCNet, an MMDetection v1 fork) as ``maskrcnn_gc_resnet50_fpn``.

Their files are MMDetection v1's (``{'meta', 'state_dict'}``, the keys of the paper's own
detectors) except in the backbone, whose blocks in layer2..4 keep a GC block under
``context_block``: moved to the block's ``gc`` slot (``models.gcnet``), they are this project's
MMDetection v1 layout, and the ratio (``r16`` or ``r4`` configs) is read from the shapes.
"""

from typing import Optional

from models.gcnet import gcnet_block_keys
from models.layout import StateDict

from .layout import register_detector_state_dict_adapter

__all__ = ["from_gcnet_mmdet"]


@register_detector_state_dict_adapter
def from_gcnet_mmdet(state_dict: StateDict) -> Optional[StateDict]:
    """A GCNet detector's MMDetection v1 keys with its GC blocks where ``maskrcnn_gc_resnet50_fpn`` keeps them; None for any other file."""
    return gcnet_block_keys(state_dict)

"""Parameters and FLOPs of the COCO detectors, counted as the ECA-Net paper's detection table was.

The paper counted its MMDetection v1 detectors with that version's ``tools/get_flops.py``:
trainable parameters, and multiply-accumulates of one 1 x 3 x 1280 x 800 image through the
detector's "dummy forward", both in SI units. Its counter (``mmdet/utils/flops_counter.py``)
hooks every module and adds up, over every call, a per-type count; functional calls count
nothing. These are not the classification table's rules (thop as of 2019, see
``utils.counting.complexity``): BatchNorm is 2 per element, a Linear layer has no addition term and a
module called several times counts every call.

The detectors here are torchvision's, whose modules sit where MMDetection v1's did except
in four places, which the counter translates: the RPN head's ReLU (``_mmdet_v1_functional``),
the box head's ReLUs (``_count_box_head``), the ECA layer's pooling
(``_count_attention_pooling``) and the block's last ReLU that ECA applies itself
(``_count_fused_block_relu``). Only shapes matter: built and counted under
:func:`shapes_only`, a 60M-parameter detector takes under a second, and a real one on any
device gives the same count, only slower.
"""

import math
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, List, Optional, Set, Tuple, Type

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.rpn import RPNHead

from models import ChannelAttention
from models.resnet import BasicBlock, Bottleneck

__all__ = [
    "MMDET_V1_RULES",
    "DUMMY_INPUT",
    "DUMMY_PROPOSALS",
    "DUMMY_MASK_ROIS",
    "DetectorComplexity",
    "shapes_only",
    "count_trainable_parameters",
    "dummy_forward",
    "measure_detector",
    "paper_si_units",
]

Rule = Callable[[nn.Module, Tuple[torch.Tensor, ...], torch.Tensor], int]

DUMMY_INPUT = (1, 3, 1280, 800)
"""get_flops.py's default ``--shape 1280 800``: height 1280, width 800."""

DUMMY_PROPOSALS = 1000
"""RoIs through the box head in MMDetection v1's ``forward_dummy`` (``torch.randn(1000, 4)``)."""

DUMMY_MASK_ROIS = 100
"""The first 100 of those through the mask head."""


def _count_conv(m: nn.modules.conv._ConvNd, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    """Kernel x input channels per group x output channels per output position, and the bias.

    ConvTranspose2d counts the same way, over its output positions: v1's counter matched
    it as a convolution.
    """
    positions = y.numel() // m.out_channels
    per_position = math.prod(m.kernel_size) * (m.in_channels // m.groups) * m.out_channels
    return positions * (per_position + (m.out_channels if m.bias is not None else 0))


def _count_output(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    return y.numel()


def _count_input(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    return x[0].numel()


def _count_batchnorm(m: nn.modules.batchnorm._BatchNorm, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    return x[0].numel() * (2 if m.affine else 1)


def _count_linear(m: nn.Linear, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    """Every input element times every output feature; the bias is free."""
    return x[0].numel() * m.out_features


def _count_attention_pooling(m: ChannelAttention, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    """The global average pooling of an attention layer that starts from one (``global_average_pooling``): its input elements.

    The ECA layer of the paper's detectors pooled with an ``nn.AdaptiveAvgPool2d`` module,
    the whole +0.11G of ECA-Net50 over ResNet-50; the layers here pool with ``x.mean``,
    which no hook sees. Their Conv1d or Linear layers are modules and count themselves.
    """
    return x[0].numel() if m.global_average_pooling else 0


def _count_fused_block_relu(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    """A residual block's last ReLU, where its attention layer applies it in its own fused call.

    In the paper's ResNet the block called its ``nn.ReLU`` module after the residual addition,
    one op per output element; here ECA (a layer that ``fuses_residual``) does attention,
    addition and ReLU in one in-place call, so the module is not called for it. Other blocks
    call it and count it there.
    """
    attention = m.attention_layer
    return y.numel() if attention is not None and attention.fuses_residual else 0


def _count_box_head(m: TwoMLPHead, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    """The ReLU after each shared FC, one op per output element.

    MMDetection v1's box head applied them with an ``nn.ReLU`` module, which its counter
    counted; torchvision's TwoMLPHead uses ``F.relu``. Its Linear layers count themselves.
    """
    rois = y.shape[0]
    return rois * (m.fc6.out_features + m.fc7.out_features)


def _count_nothing(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    return 0


MMDET_V1_RULES: Dict[Type[nn.Module], Rule] = {
    nn.Conv1d: _count_conv,
    nn.Conv2d: _count_conv,
    nn.ConvTranspose2d: _count_conv,
    nn.ReLU: _count_output,
    nn.ReLU6: _count_output,
    nn.LeakyReLU: _count_output,
    nn.PReLU: _count_output,
    nn.ELU: _count_output,
    nn.MaxPool1d: _count_input,
    nn.MaxPool2d: _count_input,
    nn.AvgPool1d: _count_input,
    nn.AvgPool2d: _count_input,
    nn.AdaptiveMaxPool2d: _count_input,
    nn.AdaptiveAvgPool2d: _count_input,
    nn.BatchNorm1d: _count_batchnorm,
    nn.BatchNorm2d: _count_batchnorm,
    nn.Linear: _count_linear,
    nn.Upsample: _count_output,
    ChannelAttention: _count_attention_pooling,
    BasicBlock: _count_fused_block_relu,
    Bottleneck: _count_fused_block_relu,
    TwoMLPHead: _count_box_head,
}
"""Per-module counts of MMDetection v1's flops counter, plus the translations for this
project's modules; a type's nearest base class with a rule gives it (every ChannelAttention
its pooling). Any other type (RoIAlign, Sigmoid, containers) counts nothing."""


def _rule_for(module: nn.Module) -> Optional[Rule]:
    """The rule of the module's type or of its nearest base class that has one."""
    for cls in type(module).__mro__:
        if cls in MMDET_V1_RULES:
            return MMDET_V1_RULES[cls]
    return None


def _mmdet_v1_functional(model: nn.Module) -> Set[nn.Module]:
    """Modules of torchvision's detectors that were functional calls in MMDetection v1.

    The RPN head's ReLU: torchvision's RPNHead has an ``nn.ReLU`` after its 3x3 conv where
    v1's applied ``F.relu``, which its counter did not see (256 x 85,260 ops at 1280 x 800).
    """
    return {
        module
        for head in model.modules()
        if isinstance(head, RPNHead)
        for module in head.modules()
        if isinstance(module, nn.ReLU)
    }


def shapes_only() -> ContextManager:
    """Tensors made inside have shapes and no storage: build and count a detector in it.

    Counting needs only shapes, and a ResNet-101 Mask R-CNN costs 350 GMACs to run for real.
    These fake tensors claim the CPU as their device; the meta device would do as well but
    the ECA layer asks whether autocast is enabled on the input's device, and "meta" has no
    autocast state to ask about. Nothing made inside may be used after the block.
    """
    return FakeTensorMode()


@dataclass(frozen=True)
class DetectorComplexity:
    """One detector's counts for one dummy input."""

    trainable_params: int
    params: int
    flops: int


def count_trainable_parameters(model: nn.Module) -> int:
    """The paper's Param. column: only parameters that train (the frozen stem and layer1 do not)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def dummy_forward(detector: nn.Module, image: torch.Tensor) -> None:
    """MMDetection v1's ``forward_dummy`` on a torchvision detector.

    Backbone and FPN, then RetinaNet's head on every level; or the RPN head on every level,
    ``DUMMY_PROPOSALS`` RoI features through the box head and the first ``DUMMY_MASK_ROIS``
    through the mask head. RoIAlign counts nothing and v1's proposals were random, so the
    heads get features of RoIAlign's output shape directly: only shapes are counted, and
    the meta device, which cannot run RoIAlign's data-dependent level mapping, works.
    """
    features = list(detector.backbone(image).values())
    if isinstance(detector, RetinaNet):
        detector.head(features)
        return
    if not isinstance(detector, FasterRCNN):
        raise TypeError(f"cannot count {type(detector).__name__}: not a Faster/Mask R-CNN or RetinaNet")
    detector.rpn.head(features)
    roi_heads = detector.roi_heads
    channels = detector.backbone.out_channels
    box_features = image.new_zeros(DUMMY_PROPOSALS, channels, *_pooled_size(roi_heads.box_roi_pool))
    roi_heads.box_predictor(roi_heads.box_head(box_features))
    if isinstance(detector, MaskRCNN):
        mask_features = image.new_zeros(DUMMY_MASK_ROIS, channels, *_pooled_size(roi_heads.mask_roi_pool))
        roi_heads.mask_predictor(roi_heads.mask_head(mask_features))


def _pooled_size(pooler: nn.Module) -> List[int]:
    size = pooler.output_size
    return list(size) if isinstance(size, (tuple, list)) else [size, size]


def _count(detector: nn.Module, height: int, width: int) -> int:
    """The dummy forward's total, in eval mode (BatchNorm must not update its statistics).

    Hooks are removed and every module's mode restored afterwards and, unlike thop, nothing
    is added to the modules, so the detector is left as it was.
    """
    total = 0
    skipped = _mmdet_v1_functional(detector)

    def hook(module: nn.Module, inputs: Tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _rule_for(module)(module, inputs, output)

    handles = [
        module.register_forward_hook(hook)
        for module in detector.modules()
        if module not in skipped and _rule_for(module) is not None
    ]
    modes = {module: module.training for module in detector.modules()}
    reference = next(detector.parameters())
    try:
        detector.eval()
        with torch.no_grad():
            dummy_forward(detector, torch.zeros(1, 3, height, width, dtype=reference.dtype, device=reference.device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return total


def measure_detector(
    detector: nn.Module, height: int = DUMMY_INPUT[2], width: int = DUMMY_INPUT[3]
) -> DetectorComplexity:
    """The paper's counts of one detector for one 1 x 3 x height x width image; the detector is left as it was."""
    return DetectorComplexity(
        trainable_params=count_trainable_parameters(detector),
        params=sum(p.numel() for p in detector.parameters()),
        flops=_count(detector, height, width),
    )


def paper_si_units(count: int, prefix: str) -> str:
    """The detection table's units, MMDetection v1's: two decimals of 10^6 ("M") or 10^9 ("G")."""
    exponent = {"M": 6, "G": 9}[prefix]
    return f"{count / 10**exponent:.2f}{prefix}"

"""The paper's COCO detectors on torchvision's models: Faster R-CNN, Mask R-CNN, RetinaNet.

Every detector takes torchvision's detection interface. Object labels are 1..C for all of
them (0 is never an object): the R-CNNs' class 0 is background, and RetinaNet's class
channel c is label c + 1, as in MMDetection v1. Every detector is defined by name below as
``{fasterrcnn,maskrcnn,retinanet}_{body}_fpn``.
"""

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import boxes as box_ops

from models.kernel_size import KernelSizeSpec

from .backbone import build_resnet_fpn
from .mmdet_v1 import (
    IMAGE_MEAN,
    IMAGE_STD,
    MAX_SIZE,
    MIN_SIZE,
    RETINANET_ANCHORS,
    RPN_ANCHORS,
    MMDetV1AnchorGenerator,
    MMDetV1BoxPredictor,
    MMDetV1RegionProposalNetwork,
    MMDetV1RetinaNetRegressionHead,
    MMDetV1RoIAlign,
    MMDetV1RPNHead,
    MMDetV1Transform,
    init_heads_as_mmdet_v1,
)
from .registry import register_detector

__all__ = ["MMDetV1RetinaNet", "DETECTORS", "BODIES", "RCNN_NUM_CLASSES", "RETINANET_NUM_CLASSES"]

RCNN_NUM_CLASSES = 81
"""80 COCO categories and background (label 0)."""
RETINANET_NUM_CLASSES = 80
"""80 sigmoid channels, no background."""

DETECTORS = ("fasterrcnn", "maskrcnn", "retinanet")

BODIES: Dict[str, Optional[str]] = {
    "eca_resnet18": "3577",
    "eca_resnet34": "3357",
    "eca_resnet50": "3377",
    "eca_resnet101": "3357",
    "resnet50": None,
    "resnet101": None,
    "se_resnet50": None,
    "se_resnet101": None,
    "gc_resnet50": None,
    "nl_resnet50": None,
}
"""Backbone body -> default k: the released detectors' (ECA-50: 3377, unlike the ImageNet
release's 3557; ECA-101: 3357), the ImageNet releases' for 18/34; None: no ECA layers. GCNet's
and the non-local ResNet-50 carry only Mask R-CNNs, the detector of Table 5's rows copied from GCNet."""

_COMMON_SETTINGS: Dict[str, Any] = {
    "min_size": MIN_SIZE,
    "max_size": MAX_SIZE,
    "image_mean": IMAGE_MEAN,
    "image_std": IMAGE_STD,
}

_RCNN_SETTINGS: Dict[str, Any] = {
    # MMDetection v1's test_cfg: RPN 1000 per level before NMS 0.7 (per level), 1000 after;
    # RoI head score > 0.05, per-class NMS 0.5, 100 per image. Training: 2000 / 2000.
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_nms_thresh": 0.7,
    "box_score_thresh": 0.05,
    "box_nms_thresh": 0.5,
    "box_detections_per_img": 100,
}

_RETINANET_SETTINGS: Dict[str, Any] = {
    "score_thresh": 0.05,
    "nms_thresh": 0.5,
    "detections_per_img": 100,
    "topk_candidates": 1000,
}


class MMDetV1RetinaNet(RetinaNet):
    """torchvision's RetinaNet with MMDetection v1's label offset and test-time selection.

    Labels are 1..C outside (channel c is label c + 1). At test time each level keeps the
    ``topk_candidates`` anchors with the highest best-class score, then every class above
    ``score_thresh`` of those (torchvision keeps the top (anchor, class) pairs instead).
    """

    def compute_loss(self, targets: List[Dict[str, Tensor]], head_outputs: Dict[str, Tensor], anchors: List[Tensor]) -> Dict[str, Tensor]:
        channel_targets = [{**target, "labels": target["labels"] - 1} for target in targets]
        return super().compute_loss(channel_targets, head_outputs, anchors)

    def postprocess_detections(
        self,
        head_outputs: Dict[str, List[Tensor]],
        anchors: List[List[Tensor]],
        image_shapes: List[tuple],
    ) -> List[Dict[str, Tensor]]:
        detections = []
        for index, image_shape in enumerate(image_shapes):
            boxes, scores = [], []
            for logits, regression, level_anchors in zip(
                head_outputs["cls_logits"], head_outputs["bbox_regression"], anchors[index]
            ):
                level_scores, level_regression = torch.sigmoid(logits[index]), regression[index]
                if level_scores.shape[0] > self.topk_candidates:
                    top = level_scores.max(dim=1).values.topk(self.topk_candidates).indices
                    level_scores, level_regression, level_anchors = level_scores[top], level_regression[top], level_anchors[top]
                level_boxes = self.box_coder.decode_single(level_regression, level_anchors)
                boxes.append(box_ops.clip_boxes_to_image(level_boxes, image_shape))
                scores.append(level_scores)
            all_scores = torch.cat(scores)
            anchor_index, channel = torch.nonzero(all_scores > self.score_thresh, as_tuple=True)
            image_boxes = torch.cat(boxes)[anchor_index]
            image_scores = all_scores[anchor_index, channel]
            image_labels = channel + 1
            keep = box_ops.batched_nms(image_boxes, image_scores, image_labels, self.nms_thresh)[: self.detections_per_img]
            detections.append({"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": image_labels[keep]})
        return detections


def _build(
    detector: str,
    body: str,
    k_size: Optional[KernelSizeSpec],
    num_classes: Optional[int],
    pretrained: bool,
    detector_kwargs: Dict[str, Any],
    body_settings: Optional[Dict[str, Any]] = None,
) -> torch.nn.Module:
    """A torchvision detector around this project's ResNet with MMDetection v1's settings and
    conventions; ``detector_kwargs`` override the settings (e.g. small min/max sizes),
    ``body_settings`` go to the body's constructor (GCNet's ``reduction``)."""
    name = f"{detector}_{body}_fpn"
    if pretrained:
        raise ValueError(
            f"{name}(pretrained=True): weights are never downloaded; load a file with "
            "utils.detection.checkpoint.load_detector (a detector) or load_backbone_weights (an ImageNet checkpoint)"
        )
    if k_size is not None and BODIES[body] is None:
        raise ValueError(f"{name}: {body} has no ECA layers, so k_size does not apply")
    retinanet = detector == "retinanet"
    if num_classes is None:
        num_classes = RETINANET_NUM_CLASSES if retinanet else RCNN_NUM_CLASSES
    minimum = 1 if retinanet else 2
    if num_classes < minimum:
        raise ValueError(f"{name}: num_classes must be at least {minimum}, got {num_classes}")
    backbone = build_resnet_fpn(body, BODIES[body] if k_size is None else k_size, retinanet_levels=retinanet, **(body_settings or {}))
    if retinanet:
        settings = {**_COMMON_SETTINGS, **_RETINANET_SETTINGS, **detector_kwargs}
        settings.setdefault("anchor_generator", MMDetV1AnchorGenerator(**RETINANET_ANCHORS))
        model = MMDetV1RetinaNet(backbone, num_classes=num_classes, **settings)
        model.head.regression_head = MMDetV1RetinaNetRegressionHead(
            backbone.out_channels, model.anchor_generator.num_anchors_per_location()[0]
        )
    else:
        settings = {**_COMMON_SETTINGS, **_RCNN_SETTINGS, **detector_kwargs}
        settings.setdefault("rpn_anchor_generator", MMDetV1AnchorGenerator(**RPN_ANCHORS))
        settings.setdefault(
            "rpn_head", MMDetV1RPNHead(backbone.out_channels, settings["rpn_anchor_generator"].num_anchors_per_location()[0])
        )
        settings.setdefault("box_roi_pool", MMDetV1RoIAlign(7))
        settings.setdefault("box_predictor", MMDetV1BoxPredictor(1024, num_classes))  # after TwoMLPHead's 1024
        if detector == "maskrcnn":
            settings.setdefault("mask_roi_pool", MMDetV1RoIAlign(14))
            settings.setdefault("mask_predictor", MaskRCNNPredictor(256, 256, num_classes))
        # torchvision takes num_classes only to build the predictors, given here.
        model = (MaskRCNN if detector == "maskrcnn" else FasterRCNN)(backbone, num_classes=None, **settings)
        model.rpn = MMDetV1RegionProposalNetwork.replacing(model.rpn)
    model.transform = MMDetV1Transform.replacing(model.transform)
    init_heads_as_mmdet_v1(model)
    return model


@register_detector
def fasterrcnn_eca_resnet18_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Faster R-CNN over eca_resnet18 with an FPN, as MMDetection v1's (81 classes with background; k_size defaults to 3577)."""
    return _build("fasterrcnn", "eca_resnet18", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def fasterrcnn_eca_resnet34_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Faster R-CNN over eca_resnet34 with an FPN, as MMDetection v1's (81 classes with background; k_size defaults to 3357)."""
    return _build("fasterrcnn", "eca_resnet34", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def fasterrcnn_eca_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Faster R-CNN over eca_resnet50 with an FPN, as MMDetection v1's (81 classes with background; k_size defaults to 3377)."""
    return _build("fasterrcnn", "eca_resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def fasterrcnn_eca_resnet101_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Faster R-CNN over eca_resnet101 with an FPN, as MMDetection v1's (81 classes with background; k_size defaults to 3357)."""
    return _build("fasterrcnn", "eca_resnet101", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def fasterrcnn_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Faster R-CNN over resnet50 with an FPN, as MMDetection v1's (81 classes with background)."""
    return _build("fasterrcnn", "resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def fasterrcnn_resnet101_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Faster R-CNN over resnet101 with an FPN, as MMDetection v1's (81 classes with background)."""
    return _build("fasterrcnn", "resnet101", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def fasterrcnn_se_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Faster R-CNN over se_resnet50 with an FPN, as MMDetection v1's (81 classes with background)."""
    return _build("fasterrcnn", "se_resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def fasterrcnn_se_resnet101_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Faster R-CNN over se_resnet101 with an FPN, as MMDetection v1's (81 classes with background)."""
    return _build("fasterrcnn", "se_resnet101", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def maskrcnn_eca_resnet18_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Mask R-CNN over eca_resnet18 with an FPN, as MMDetection v1's (81 classes with background; k_size defaults to 3577)."""
    return _build("maskrcnn", "eca_resnet18", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def maskrcnn_eca_resnet34_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Mask R-CNN over eca_resnet34 with an FPN, as MMDetection v1's (81 classes with background; k_size defaults to 3357)."""
    return _build("maskrcnn", "eca_resnet34", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def maskrcnn_eca_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Mask R-CNN over eca_resnet50 with an FPN, as MMDetection v1's (81 classes with background; k_size defaults to 3377)."""
    return _build("maskrcnn", "eca_resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def maskrcnn_eca_resnet101_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Mask R-CNN over eca_resnet101 with an FPN, as MMDetection v1's (81 classes with background; k_size defaults to 3357)."""
    return _build("maskrcnn", "eca_resnet101", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def maskrcnn_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Mask R-CNN over resnet50 with an FPN, as MMDetection v1's (81 classes with background)."""
    return _build("maskrcnn", "resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def maskrcnn_resnet101_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Mask R-CNN over resnet101 with an FPN, as MMDetection v1's (81 classes with background)."""
    return _build("maskrcnn", "resnet101", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def maskrcnn_se_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Mask R-CNN over se_resnet50 with an FPN, as MMDetection v1's (81 classes with background)."""
    return _build("maskrcnn", "se_resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def maskrcnn_gc_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None,
    num_classes: Optional[int] = None,
    pretrained: bool = False,
    reduction: int = 16,
    **detector_kwargs: Any,
) -> torch.nn.Module:
    """Mask R-CNN over gc_resnet50 with an FPN, as GCNet's MMDetection v1 configs ``mask_rcnn_r16_gcb_c3-c5_r50_fpn``
    (81 classes with background; GC blocks in layer2..4 with ratio 1 / reduction: 4 for its ``r4`` configs)."""
    return _build("maskrcnn", "gc_resnet50", k_size, num_classes, pretrained, detector_kwargs, {"reduction": reduction})


@register_detector
def maskrcnn_nl_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Mask R-CNN over nl_resnet50 with an FPN, as MMDetection v1's (81 classes with background; one non-local block
    right before the last residual block of res4: Table 5's "+ 1 NL")."""
    return _build("maskrcnn", "nl_resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def maskrcnn_se_resnet101_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """Mask R-CNN over se_resnet101 with an FPN, as MMDetection v1's (81 classes with background)."""
    return _build("maskrcnn", "se_resnet101", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def retinanet_eca_resnet18_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """RetinaNet over eca_resnet18 with an FPN, as MMDetection v1's (80 classes; k_size defaults to 3577)."""
    return _build("retinanet", "eca_resnet18", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def retinanet_eca_resnet34_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """RetinaNet over eca_resnet34 with an FPN, as MMDetection v1's (80 classes; k_size defaults to 3357)."""
    return _build("retinanet", "eca_resnet34", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def retinanet_eca_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """RetinaNet over eca_resnet50 with an FPN, as MMDetection v1's (80 classes; k_size defaults to 3377)."""
    return _build("retinanet", "eca_resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def retinanet_eca_resnet101_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """RetinaNet over eca_resnet101 with an FPN, as MMDetection v1's (80 classes; k_size defaults to 3357)."""
    return _build("retinanet", "eca_resnet101", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def retinanet_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """RetinaNet over resnet50 with an FPN, as MMDetection v1's (80 classes)."""
    return _build("retinanet", "resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def retinanet_resnet101_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """RetinaNet over resnet101 with an FPN, as MMDetection v1's (80 classes)."""
    return _build("retinanet", "resnet101", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def retinanet_se_resnet50_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """RetinaNet over se_resnet50 with an FPN, as MMDetection v1's (80 classes)."""
    return _build("retinanet", "se_resnet50", k_size, num_classes, pretrained, detector_kwargs)


@register_detector
def retinanet_se_resnet101_fpn(
    k_size: Optional[KernelSizeSpec] = None, num_classes: Optional[int] = None, pretrained: bool = False, **detector_kwargs: Any
) -> torch.nn.Module:
    """RetinaNet over se_resnet101 with an FPN, as MMDetection v1's (80 classes)."""
    return _build("retinanet", "se_resnet101", k_size, num_classes, pretrained, detector_kwargs)

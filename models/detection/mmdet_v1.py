"""MMDetection v1's conventions, where torchvision's differ and the released weights depend on them.

MMDetection v1 boxes are inclusive (a box from x1 to x2 is ``x2 - x1 + 1`` pixels wide).
Written as ``(x1, y1, x2 + 1, y2 + 1)`` they are torchvision's exclusive boxes, and then
torchvision's BoxCoder, IoU, NMS and ``roi_align(aligned=False)`` compute exactly what
MMDetection v1's did. So the inclusive details live here, at the two places where they do
not cancel out: the anchors (whose rounded corners are inclusive) and the resizing of boxes
between the input image and the network's (v1 scales inclusive corners by one scale factor).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetRegressionHead
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, box_area
from torchvision.ops.poolers import LevelMapper

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "MIN_SIZE",
    "MAX_SIZE",
    "RPN_ANCHORS",
    "RETINANET_ANCHORS",
    "mmdet_v1_base_anchors",
    "inclusive_to_exclusive",
    "MMDetV1AnchorGenerator",
    "MMDetV1Transform",
    "MMDetV1RegionProposalNetwork",
    "MMDetV1RPNHead",
    "MMDetV1BoxPredictor",
    "MMDetV1RoIAlign",
    "MMDetV1LevelMapper",
    "MMDetV1RetinaNetRegressionHead",
    "init_heads_as_mmdet_v1",
    "RETINANET_SMOOTH_L1_BETA",
]

RETINANET_SMOOTH_L1_BETA = 0.11
"""RetinaNet's box regression loss in MMDetection v1 (torchvision's RetinaNet uses L1)."""

IMAGE_MEAN = [123.675 / 255, 116.28 / 255, 103.53 / 255]
IMAGE_STD = [58.395 / 255, 57.12 / 255, 57.375 / 255]
"""MMDetection v1's normalisation of 0..255 RGB, for torchvision's 0..1 images."""

MIN_SIZE, MAX_SIZE = 800, 1333
"""Images are resized to fit 1333 x 800, keeping their aspect ratio."""

RPN_ANCHORS = {"strides": (4, 8, 16, 32, 64), "scales": (8.0,), "ratios": (0.5, 1.0, 2.0)}
RETINANET_ANCHORS = {
    "strides": (8, 16, 32, 64, 128),
    "scales": tuple(4.0 * 2.0 ** (i / 3) for i in range(3)),  # octave base scale 4, 3 scales per octave
    "ratios": (0.5, 1.0, 2.0),
}


def mmdet_v1_base_anchors(stride: int, scales: Sequence[float], ratios: Sequence[float]) -> Tensor:
    """The anchors of one cell as MMDetection v1 made them: inclusive corners, float32, rounded.

    Base size = stride, centre (stride - 1) / 2, width stride * scale / sqrt(ratio) and height
    stride * scale * sqrt(ratio) (ratio = h / w), ratio-major then scale. Always on the CPU
    (also when a model is built on the meta device); forward moves them to the features'.
    """
    size = float(stride)
    centre = 0.5 * (size - 1)
    h_ratios = torch.sqrt(torch.tensor(ratios, dtype=torch.float32, device="cpu"))
    w_ratios = 1 / h_ratios
    scales_t = torch.tensor(scales, dtype=torch.float32, device="cpu")
    widths = (size * w_ratios[:, None] * scales_t[None, :]).view(-1)
    heights = (size * h_ratios[:, None] * scales_t[None, :]).view(-1)
    return torch.stack(
        [centre - 0.5 * (widths - 1), centre - 0.5 * (heights - 1), centre + 0.5 * (widths - 1), centre + 0.5 * (heights - 1)],
        dim=-1,
    ).round()


def inclusive_to_exclusive(boxes: Tensor) -> Tensor:
    """MMDetection v1's (x1, y1, x2, y2) as torchvision's: x2 and y2 one further."""
    return boxes + boxes.new_tensor([0, 0, 1, 1])


class MMDetV1AnchorGenerator(AnchorGenerator):
    """torchvision's anchor generator with MMDetection v1's base anchors and fixed strides.

    The grid order is already v1's (row by row, the cell's anchors innermost). The strides
    are the configured ones: torchvision derives them as padded image size // feature size,
    which is wrong wherever the stride-2 convolutions round a size up (P6/P7 of RetinaNet).
    """

    def __init__(self, strides: Sequence[int], scales: Sequence[float], ratios: Sequence[float]) -> None:
        super().__init__(
            sizes=tuple(tuple(stride * scale for scale in scales) for stride in strides),
            aspect_ratios=(tuple(ratios),) * len(strides),
        )
        self.strides = tuple(int(stride) for stride in strides)
        self.cell_anchors = [inclusive_to_exclusive(mmdet_v1_base_anchors(s, scales, ratios)) for s in self.strides]

    def forward(self, image_list: ImageList, feature_maps: List[Tensor]) -> List[Tensor]:
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"{len(feature_maps)} feature maps for anchors of {len(self.strides)} strides")
        grid_sizes = [list(feature_map.shape[-2:]) for feature_map in feature_maps]
        device = feature_maps[0].device
        strides = [[torch.tensor(stride, dtype=torch.int64, device=device)] * 2 for stride in self.strides]
        self.set_cell_anchors(_box_dtype(feature_maps[0]), device)
        anchors = torch.cat(self.grid_anchors(grid_sizes, strides))
        return [anchors for _ in image_list.image_sizes]


class MMDetV1Transform(GeneralizedRCNNTransform):
    """Normalise, resize and pad as MMDetection v1 did.

    The resized size is ``int(side * scale + 0.5)`` with one scale factor for both axes
    (torchvision floors ``side * scale``); boxes are scaled as v1's inclusive corners
    (``x1 * s``, ``(x2 - 1) * s + 1`` in exclusive terms) and detections go back to the
    input image by dividing those by the same scale. Padding: bottom-right, to a multiple
    of ``size_divisible`` (32), as torchvision does.
    """

    @classmethod
    def replacing(cls, transform: GeneralizedRCNNTransform) -> "MMDetV1Transform":
        """This transform with the settings of ``transform`` (min/max size, mean, std, padding)."""
        return cls(
            transform.min_size,
            transform.max_size,
            transform.image_mean,
            transform.image_std,
            transform.size_divisible,
            transform.fixed_size,
        )

    def scale_factor(self, height: int, width: int, short_side: Optional[int] = None) -> float:
        """v1's ``mmcv.imrescale`` factor: fit the short side to ``short_side`` and the long one to ``max_size``."""
        short_side = self.min_size[-1] if short_side is None else short_side
        return min(short_side / min(height, width), self.max_size / max(height, width))

    def resize(self, image: Tensor, target: Optional[Dict[str, Tensor]] = None) -> Tuple[Tensor, Optional[Dict[str, Tensor]]]:
        if self.fixed_size is not None:
            return super().resize(image, target)
        height, width = image.shape[-2:]
        short_side = self.torch_choice(self.min_size) if self.training else self.min_size[-1]
        scale = self.scale_factor(height, width, short_side)
        size = [int(height * scale + 0.5), int(width * scale + 0.5)]
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if target is None:
            return image, target
        target = dict(target)
        target["boxes"] = _scale_inclusive(target["boxes"], scale)
        if "masks" in target:
            masks = target["masks"]
            target["masks"] = F.interpolate(masks[:, None].float(), size=size)[:, 0].to(masks.dtype)
        return image, target

    def postprocess(
        self,
        result: List[Dict[str, Tensor]],
        image_shapes: List[Tuple[int, int]],
        original_image_sizes: List[Tuple[int, int]],
    ) -> List[Dict[str, Tensor]]:
        if self.training:
            return result
        if self.fixed_size is not None:
            return super().postprocess(result, image_shapes, original_image_sizes)
        for prediction, original_size in zip(result, original_image_sizes):
            scale = self.scale_factor(*original_size)
            prediction["boxes"] = _clip_to_image(_scale_inclusive(prediction["boxes"], 1 / scale), original_size)
            if "masks" in prediction:
                prediction["masks"] = paste_masks_in_image(prediction["masks"], prediction["boxes"], original_size)
        return result


def _box_dtype(tensor: Tensor) -> torch.dtype:
    """At least float32 for anything that becomes box coordinates: bfloat16 has 8 bits of
    mantissa (steps of 4 px at 800 px), float16 10; features are in those under autocast."""
    return torch.promote_types(tensor.dtype, torch.float32)


def _clip_to_image(boxes: Tensor, size: Tuple[int, int]) -> Tensor:
    """Within the image, and never inverted: a sliver under one pixel that v1's inclusive
    scaling turns inside out (height (h - 1) / s + 1 < 0) becomes an empty box instead."""
    height, width = size
    x1, y1, x2, y2 = boxes.unbind(1)
    x1, y1 = x1.clamp(0, width), y1.clamp(0, height)
    return torch.stack((x1, y1, torch.maximum(x2.clamp(0, width), x1), torch.maximum(y2.clamp(0, height), y1)), dim=1)


def _scale_inclusive(boxes: Tensor, scale: float) -> Tensor:
    """Exclusive boxes scaled as MMDetection v1 scaled their inclusive corners."""
    if boxes.numel() == 0:
        return boxes
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * scale, y1 * scale, (x2 - 1) * scale + 1, (y2 - 1) * scale + 1), dim=1)


class MMDetV1RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN, but anchors that cross the image's border take no part in training.

    MMDetection v1's RPN (``allowed_border=0``) assigns targets only to anchors wholly inside
    the resized, unpadded image; the others are neither positives nor negatives. Test time is
    unchanged.
    """

    @classmethod
    def replacing(cls, rpn: RegionProposalNetwork) -> "MMDetV1RegionProposalNetwork":
        """This RPN with the head, anchors and settings of ``rpn``."""
        return cls(
            rpn.anchor_generator,
            rpn.head,
            rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold,
            rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction,
            rpn._pre_nms_top_n,
            rpn._post_nms_top_n,
            rpn.nms_thresh,
            rpn.score_thresh,
        )

    def forward(
        self, images: ImageList, features: Dict[str, Tensor], targets: Optional[List[Dict[str, Tensor]]] = None
    ) -> Tuple[List[Tensor], Dict[str, Tensor]]:
        # assign_targets_to_anchors is not given the image sizes; they are kept for it here.
        self._image_sizes = images.image_sizes
        return super().forward(images, features, targets)

    def assign_targets_to_anchors(
        self, anchors: List[Tensor], targets: List[Dict[str, Tensor]]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        labels, matched_gt_boxes = [], []
        for anchors_per_image, target, (height, width) in zip(anchors, targets, self._image_sizes):
            inside = (anchors_per_image[:, :2] >= 0).all(dim=1) & (anchors_per_image[:, 2] <= width) & (anchors_per_image[:, 3] <= height)
            image_labels = torch.full((anchors_per_image.shape[0],), -1.0, device=anchors_per_image.device)
            image_boxes = torch.zeros_like(anchors_per_image)
            if inside.any():
                (inside_labels,), (inside_boxes,) = super().assign_targets_to_anchors([anchors_per_image[inside]], [target])
                image_labels[inside] = inside_labels
                image_boxes[inside] = inside_boxes
            labels.append(image_labels)
            matched_gt_boxes.append(image_boxes)
        return labels, matched_gt_boxes


class MMDetV1RPNHead(RPNHead):
    """torchvision's RPN head, its outputs in at least float32 so that proposals decoded from
    them keep their precision under autocast."""

    def forward(self, x: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        objectness, deltas = super().forward(x)
        return [o.to(_box_dtype(o)) for o in objectness], [d.to(_box_dtype(d)) for d in deltas]


class MMDetV1BoxPredictor(FastRCNNPredictor):
    """torchvision's box predictor, its outputs in at least float32 (detections are decoded from them)."""

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        scores, deltas = super().forward(x)
        return scores.to(_box_dtype(scores)), deltas.to(_box_dtype(deltas))


class MMDetV1RetinaNetRegressionHead(RetinaNetRegressionHead):
    """torchvision's RetinaNet box branch with v1's smooth-L1 loss (beta 0.11) instead of L1,
    its deltas in at least float32 (boxes are decoded from them)."""

    def forward(self, x: List[Tensor]) -> Tensor:
        deltas = super().forward(x)
        return deltas.to(_box_dtype(deltas))

    def compute_loss(
        self, targets: List[Dict[str, Tensor]], head_outputs: Dict[str, Tensor], anchors: List[Tensor], matched_idxs: List[Tensor]
    ) -> Tensor:
        losses = []
        for target, regression, image_anchors, matched in zip(targets, head_outputs["bbox_regression"], anchors, matched_idxs):
            foreground = torch.where(matched >= 0)[0]
            wanted = self.box_coder.encode_single(target["boxes"][matched[foreground]], image_anchors[foreground])
            loss = F.smooth_l1_loss(regression[foreground], wanted, beta=RETINANET_SMOOTH_L1_BETA, reduction="sum")
            losses.append(loss / max(1, foreground.numel()))
        return sum(losses) / max(1, len(targets))


def init_heads_as_mmdet_v1(model: nn.Module) -> None:
    """MMDetection v1's initialisation where torchvision's differs: Xavier-uniform FPN convs
    and shared box-head FCs, N(0, 0.01) class scores and N(0, 0.001) box deltas, zero biases.

    Only weights that training starts from; released weights overwrite all of them.
    """
    for module in model.backbone.fpn.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is None:
        return
    for fc in (roi_heads.box_head.fc6, roi_heads.box_head.fc7):
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)
    for layer, std in ((roi_heads.box_predictor.cls_score, 0.01), (roi_heads.box_predictor.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)


class MMDetV1LevelMapper(LevelMapper):
    """v1's FPN level of a RoI: ``floor(log2(sqrt(area) / 56 + 1e-6))``, clamped to the levels.

    The area of the inclusive box, which is the exclusive box's area here. torchvision's
    mapper adds its epsilon after the logarithm, which differs at the level boundaries.
    """

    FINEST_SCALE = 56

    def __init__(self, levels: int) -> None:
        super().__init__(k_min=0, k_max=levels - 1)

    def __call__(self, boxlists: List[Tensor]) -> Tensor:
        scale = torch.sqrt(torch.cat([box_area(boxes) for boxes in boxlists]))
        return torch.floor(torch.log2(scale / self.FINEST_SCALE + 1e-6)).clamp(0, self.k_max).to(torch.int64)


class MMDetV1RoIAlign(MultiScaleRoIAlign):
    """RoIAlign over the FPN levels at their fixed strides (v1's SingleRoIExtractor).

    torchvision's MultiScaleRoIAlign infers each level's scale from the first batch it sees
    (feature size / unpadded image size, rounded to a power of two) and keeps it: wrong for
    small images (40 px high, padded to 64: P5 is 2 px, taken as 1/16) and then for every
    later batch. Here the scales are fixed when the model is built.
    """

    def __init__(self, output_size: int, sampling_ratio: int = 2, strides: Sequence[int] = (4, 8, 16, 32)) -> None:
        super().__init__([str(level) for level in range(len(strides))], output_size, sampling_ratio)
        self.scales = [1.0 / stride for stride in strides]
        self.map_levels = MMDetV1LevelMapper(len(strides))

"""The paper's COCO detectors (Faster R-CNN, Mask R-CNN, RetinaNet) over ECA-ResNet and its
baselines, as torchvision models configured like MMDetection v1's, in their own registry."""

from . import gcnet  # noqa: F401  (registers the adapter of GCNet's released files)
from .coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from .detectors import BODIES, DETECTORS, RCNN_NUM_CLASSES, RETINANET_NUM_CLASSES, MMDetV1RetinaNet
from .registry import create_detector, list_detectors

detector_names = list_detectors()
"""Every registered detector name, sorted."""

__all__ = [
    "create_detector",
    "list_detectors",
    "detector_names",
    "COCO_CLASSES",
    "COCO_CATEGORY_IDS",
    "BODIES",
    "DETECTORS",
    "RCNN_NUM_CLASSES",
    "RETINANET_NUM_CLASSES",
    "MMDetV1RetinaNet",
]

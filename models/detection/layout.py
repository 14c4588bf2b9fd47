"""What a detector's state_dict says about the detector: MMDetection v1's key names as this
project's (torchvision's), and the registered detector, body, per-stage k, body settings and
classes the weights imply.

The body is recognised as the classification model whose layout it has (``models.layout``),
so its attention is read through the attention interface, never from key names: its settings
too (GCNet's reduction ratio, read from the shapes).

A detector file written by other code whose keys differ from MMDetection v1's or this project's
becomes one of them through an adapter, :func:`register_detector_state_dict_adapter`, as
classifiers' files do through ``models.layout.register_state_dict_adapter``. How to add one:

- write a function of the state_dict as the file stores it (MMDetection's keys: ``backbone.``,
  ``neck.``, ``rpn_head.``, ...) that recognises its layout by key patterns and shapes, never by
  a file name or config text, and returns None for every other layout (each adapter is asked
  in turn, before the MMDetection v1 keys are converted);
- for its layout, return the state_dict in MMDetection v1's keys as the paper's files have them
  (or in this project's torchvision keys), the tensors renamed and reshaped so that a detector
  registered here computes the same;
- decorate it with :func:`register_detector_state_dict_adapter` in a module beside the detector
  it converts to, imported by ``models/detection/__init__.py`` (GCNet's released Mask R-CNNs:
  ``models/detection/gcnet.py``).
"""

import re
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from models import layout
from models.kernel_size import KernelSizeSpec, format_kernel_sizes
from models.layout import LayoutError, StateDict
from models.registry import list_models
from models.resnet import RESNET_LAYOUTS, BasicBlock, Bottleneck

from .detectors import BODIES, DETECTORS
from .registry import list_detectors

__all__ = [
    "CLASS_SPECIFIC",
    "BODY_PREFIX",
    "DetectorStateDictAdapter",
    "register_detector_state_dict_adapter",
    "adapt_detector_state_dict",
    "is_mmdet_v1",
    "mmdet_v1_to_torchvision",
    "infer_detector",
    "detector_and_body",
    "stage_kernel_sizes",
]

BODY_PREFIX = "backbone.body."
"""Where a detector keeps its ResNet body's keys (torchvision's BackboneWithFPN)."""

_MMDET_V1_RULES: Sequence[Tuple[str, str]] = (
    (r"^backbone\.", BODY_PREFIX),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"backbone.fpn.inner_blocks.\1.0."),
    (r"^rpn_head\.rpn_conv\.", "rpn.head.conv.0.0."),
    (r"^rpn_head\.rpn_cls\.", "rpn.head.cls_logits."),
    (r"^rpn_head\.rpn_reg\.", "rpn.head.bbox_pred."),
    (r"^bbox_head\.shared_fcs\.0\.", "roi_heads.box_head.fc6."),
    (r"^bbox_head\.shared_fcs\.1\.", "roi_heads.box_head.fc7."),
    (r"^bbox_head\.fc_cls\.", "roi_heads.box_predictor.cls_score."),
    (r"^bbox_head\.fc_reg\.", "roi_heads.box_predictor.bbox_pred."),
    (r"^mask_head\.convs\.(\d+)\.conv\.", r"roi_heads.mask_head.\1.0."),
    (r"^mask_head\.upsample\.", "roi_heads.mask_predictor.conv5_mask."),
    (r"^mask_head\.conv_logits\.", "roi_heads.mask_predictor.mask_fcn_logits."),
    (r"^bbox_head\.cls_convs\.(\d+)\.conv\.", r"head.classification_head.conv.\1.0."),
    (r"^bbox_head\.reg_convs\.(\d+)\.conv\.", r"head.regression_head.conv.\1.0."),
    (r"^bbox_head\.retina_cls\.", "head.classification_head.cls_logits."),
    (r"^bbox_head\.retina_reg\.", "head.regression_head.bbox_reg."),
)
"""MMDetection v1 key prefix -> torchvision's; the FPN's output convs are handled apart
(``neck.fpn_convs.i`` is an output conv up to the last lateral, then P6, P7)."""

_FPN_CONV = re.compile(r"^neck\.fpn_convs\.(\d+)\.conv\.(.*)$")
_LATERAL = re.compile(r"^neck\.lateral_convs\.(\d+)\.")

CLASS_SPECIFIC = {
    "fasterrcnn": ("roi_heads.box_predictor.",),
    "maskrcnn": ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
    "retinanet": ("head.classification_head.cls_logits.",),
}
"""Each detector's tensors whose shapes depend on the number of classes (left out to fine-tune on other classes)."""


DetectorStateDictAdapter = Callable[[StateDict], Optional[StateDict]]
"""A foreign detector layout's converter: the state_dict in MMDetection v1's (or this project's) keys, or None."""

_detector_adapters: List[DetectorStateDictAdapter] = []


def register_detector_state_dict_adapter(adapter: DetectorStateDictAdapter) -> DetectorStateDictAdapter:
    """Decorator: convert detector files of a foreign layout, registered beside the detector they
    convert to (see the module docstring). An adapter must return None for every state_dict that
    is not its layout, since each is asked in turn."""
    _detector_adapters.append(adapter)
    return adapter


def adapt_detector_state_dict(state_dict: StateDict) -> StateDict:
    """``state_dict`` in MMDetection v1's or this project's keys: the first registered adapter's conversion, or itself."""
    for adapter in _detector_adapters:
        converted = adapter(state_dict)
        if converted is not None:
            return converted
    return state_dict


def is_mmdet_v1(state_dict: StateDict) -> bool:
    """Whether the keys are an MMDetection detector's (``backbone.*`` beside ``neck.*`` or a v1 head)."""
    return any(key.startswith("backbone.") for key in state_dict) and any(
        key.startswith(("neck.", "rpn_head.", "bbox_head.")) for key in state_dict
    )


def mmdet_v1_to_torchvision(state_dict: StateDict) -> StateDict:
    """An MMDetection v1 detector's state_dict keyed as this project's torchvision detector's;
    a LayoutError for a key that belongs to no part of the paper's detectors."""
    laterals = {int(m.group(1)) for m in map(_LATERAL.match, state_dict) if m}
    converted: StateDict = OrderedDict()
    for key, value in state_dict.items():
        converted[_convert_key(key, len(laterals))] = value
    return converted


def _convert_key(key: str, laterals: int) -> str:
    fpn_conv = _FPN_CONV.match(key)
    if fpn_conv:
        index, rest = int(fpn_conv.group(1)), fpn_conv.group(2)
        if index < laterals:
            return f"backbone.fpn.layer_blocks.{index}.0.{rest}"
        return f"backbone.fpn.extra_blocks.p{6 + index - laterals}.{rest}"
    for pattern, replacement in _MMDET_V1_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise LayoutError(f"the MMDetection v1 key {key!r} belongs to no part of the paper's detectors")


def detector_and_body(arch: str) -> Tuple[str, str]:
    """(``maskrcnn``, ``eca_resnet50``) for the registered ``maskrcnn_eca_resnet50_fpn``."""
    for detector in DETECTORS:
        for body in BODIES:
            if arch == f"{detector}_{body}_fpn":
                return detector, body
    raise ValueError(f"{arch!r} is no registered detector")


def infer_detector(state_dict: StateDict) -> Tuple[str, Dict[str, Any]]:
    """The registered detector and its builder kwargs (``num_classes``, ``k_size``, the body's
    settings such as GCNet's ``reduction``) that hold these torchvision-keyed weights; a
    LayoutError when the layout fits none."""
    if "head.classification_head.cls_logits.weight" in state_dict:
        detector = "retinanet"
        anchors = state_dict["head.regression_head.bbox_reg.weight"].shape[0] // 4
        num_classes = state_dict["head.classification_head.cls_logits.weight"].shape[0] // anchors
    elif "roi_heads.box_predictor.cls_score.weight" in state_dict:
        detector = "maskrcnn" if "roi_heads.mask_predictor.mask_fcn_logits.weight" in state_dict else "fasterrcnn"
        num_classes = state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0]
    else:
        raise LayoutError("it has no detection head (RetinaNet's classification head or an R-CNN box predictor)")
    body, body_settings = _infer_body(state_dict)
    arch = f"{detector}_{body}_fpn"
    if arch not in list_detectors():
        raise LayoutError(f"its backbone is {body}, which no registered {detector} detector has")
    kwargs: Dict[str, Any] = {"num_classes": num_classes, **body_settings}
    k_size = _body_kernel_sizes(body, state_dict)
    if k_size is not None:
        kwargs["k_size"] = k_size
    return arch, kwargs


def _body(state_dict: StateDict) -> StateDict:
    return {key[len(BODY_PREFIX) :]: value for key, value in state_dict.items() if key.startswith(BODY_PREFIX)}


def _blocks_per_stage(body: StateDict) -> Tuple[int, ...]:
    blocks: Dict[int, set] = {}
    for key in body:
        found = re.match(r"^layer([1-4])\.(\d+)\.", key)
        if found:
            blocks.setdefault(int(found.group(1)), set()).add(int(found.group(2)))
    return tuple(len(blocks.get(stage, ())) for stage in range(1, 5))


def _infer_body(state_dict: StateDict) -> Tuple[str, Dict[str, Any]]:
    """The registered body (a key of ``BODIES``) under ``backbone.body.`` and the settings it is
    built with: the one whose layout the weights have, or, where none has it exactly (a damaged
    file), the one whose keys differ least with its defaults, so that loading names the keys
    that differ. A LayoutError when the blocks are no ResNet's or the body is a model no
    registered detector has."""
    body = _body(state_dict)
    for name in BODIES:
        settings = layout.backbone_settings(name, body)
        if settings is not None:
            return name, settings
    counts = _blocks_per_stage(body)
    block = Bottleneck if "layer1.0.conv3.weight" in body else BasicBlock
    depths = [depth for depth, (kind, layers) in RESNET_LAYOUTS.items() if kind is block and tuple(layers) == counts]
    if not depths:
        raise LayoutError(f"its backbone has {counts} blocks per stage, which is no ResNet's")
    other = next((name for name in list_models() if name not in BODIES and layout.fits_backbone(name, body)), None)
    if other is not None:
        raise LayoutError(f"its backbone is {other}, which no registered detector has (bodies: {', '.join(BODIES)})")
    return min(BODIES, key=lambda name: len(layout.backbone_keys(name) ^ body.keys())), {}


def _body_kernel_sizes(body: str, state_dict: StateDict) -> Optional[str]:
    """One k per stage, as ``--ksize`` takes it, from the weights of the body's kernel-size layers
    (the only place a file's k is written down); None for a body without them. A LayoutError
    when a stage's layers differ: a detector takes one k per stage."""
    weights = _body(state_dict)
    names = layout.kernel_layer_names(body)
    held = [(name, weights[key].shape[-1]) for name, key in zip(names, layout.kernel_parameter_keys(body)) if key in weights]
    return _one_per_stage(names, held) if names else None


def stage_kernel_sizes(body: str, k_size: KernelSizeSpec) -> str:
    """The per-stage k, as ``--ksize`` takes it, of ``body`` built with ``k_size`` (the constructor's
    ValueError or TypeError for a k it does not take)."""
    names = layout.kernel_layer_names(body)
    return _one_per_stage(names, list(zip(names, layout.model_kernel_sizes(body, k_size))))


def _one_per_stage(names: List[str], sizes: List[Tuple[str, int]]) -> str:
    """The k of each stage that ``names`` (the kernel-size layers) sit in, from (layer, k) pairs."""
    stages: Dict[str, List[int]] = {layout.stage_of(name): [] for name in names}
    for name, size in sizes:
        stages[layout.stage_of(name)].append(size)
    for stage, stage_sizes in stages.items():
        if len(set(stage_sizes)) != 1:
            raise LayoutError(f"its ECA layers in {stage} have k {sorted(set(stage_sizes))}; a detector takes one k per stage")
    return format_kernel_sizes([stage_sizes[0] for stage_sizes in stages.values()])

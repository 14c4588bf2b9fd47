"""Detection checkpoint files: the paper's released MMDetection v1 files, detect.py's own, and
ImageNet classification checkpoints as the starting point of a detector's backbone.

Everything is read through ``utils.checkpoint.load_checkpoint_file`` (never runs code). The
detector, the backbone's depth and attention, its per-stage ECA k and the number of classes
are read from the weights' keys and shapes, so no file needs flags; a file that holds
something else gets one line saying what it holds.
"""

import re
import warnings
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from torch import nn

from models.detection import BODIES, COCO_CLASSES, create_detector, detector_names
from models.resnet import RESNET_LAYOUTS, BasicBlock, Bottleneck, stage_kernel_sizes
from utils.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    PathLike,
    StateDict,
    extract_state_dict,
    format_kernel_sizes,
    infer_arch,
    infer_model_kwargs,
    load_checkpoint_file,
    load_model,
)

__all__ = [
    "load_detector",
    "infer_detector",
    "mmdet_v1_to_torchvision",
    "load_backbone_weights",
    "classification_arch_and_k",
]

_MMDET_V1_RULES: Sequence[Tuple[str, str]] = (
    (r"^backbone\.", "backbone.body."),
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

_CLASS_SPECIFIC = {
    "fasterrcnn": ("roi_heads.box_predictor.",),
    "maskrcnn": ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
    "retinanet": ("head.classification_head.cls_logits.",),
}
"""The tensors whose shapes depend on the number of classes (left out to fine-tune on other classes)."""


def mmdet_v1_to_torchvision(state_dict: StateDict) -> StateDict:
    """An MMDetection v1 detector's state_dict keyed as this project's torchvision detector's."""
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
    raise CheckpointError(f"the MMDetection v1 key {key!r} belongs to no part of the paper's detectors")


def _is_mmdet_v1(state_dict: StateDict) -> bool:
    return any(key.startswith("backbone.") for key in state_dict) and any(
        key.startswith(("neck.", "rpn_head.", "bbox_head.")) for key in state_dict
    )


def _what_else(state_dict: StateDict) -> Optional[str]:
    """What a state_dict holds when it is not a detector this project knows, or None."""
    if any(key.startswith("roi_head.") for key in state_dict):
        return (
            "a newer MMDetection (v2 or later) detector: its heads are under roi_head.*; this project "
            "loads the paper's MMDetection v1 files and detect.py's own checkpoints"
        )
    if any(key.startswith("backbone.") for key in state_dict):
        return None
    try:
        arch = infer_arch(state_dict)
    except CheckpointError:
        return None
    return f"an ImageNet classification model ({arch}), not a detector; start a detector's backbone from it with --backbone-weights"


def infer_detector(state_dict: StateDict) -> Tuple[str, Dict[str, Any]]:
    """The registered detector and its builder kwargs (``k_size``, ``num_classes``) that hold
    these torchvision-keyed weights; a CheckpointError when the layout fits none."""
    if "head.classification_head.cls_logits.weight" in state_dict:
        detector = "retinanet"
        anchors = state_dict["head.regression_head.bbox_reg.weight"].shape[0] // 4
        num_classes = state_dict["head.classification_head.cls_logits.weight"].shape[0] // anchors
    elif "roi_heads.box_predictor.cls_score.weight" in state_dict:
        detector = "maskrcnn" if "roi_heads.mask_predictor.mask_fcn_logits.weight" in state_dict else "fasterrcnn"
        num_classes = state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0]
    else:
        raise CheckpointError("it has no detection head (RetinaNet's classification head or an R-CNN box predictor)")
    body = _infer_body(state_dict)
    kwargs: Dict[str, Any] = {"num_classes": num_classes}
    if BODIES[body] is not None:
        kwargs["k_size"] = _stage_kernel_sizes(state_dict)
    return f"{detector}_{body}_fpn", kwargs


def _infer_body(state_dict: StateDict) -> str:
    blocks: Dict[int, set] = {}
    for key in state_dict:
        found = re.match(r"^backbone\.body\.layer([1-4])\.(\d+)\.", key)
        if found:
            blocks.setdefault(int(found.group(1)), set()).add(int(found.group(2)))
    counts = tuple(len(blocks.get(stage, ())) for stage in range(1, 5))
    block = Bottleneck if "backbone.body.layer1.0.conv3.weight" in state_dict else BasicBlock
    depths = [depth for depth, (kind, layers) in RESNET_LAYOUTS.items() if kind is block and tuple(layers) == counts]
    if not depths:
        raise CheckpointError(f"its backbone has {counts} blocks per stage, which is no ResNet's")
    if any(".eca.conv.weight" in key for key in state_dict):
        attention = "eca_"
    elif any(".se." in key for key in state_dict):
        attention = "se_"
    else:
        attention = ""
    body = f"{attention}resnet{depths[0]}"
    if body not in BODIES:
        raise CheckpointError(f"its backbone is {body}, which no registered detector has (bodies: {', '.join(BODIES)})")
    return body


def _stage_kernel_sizes(state_dict: StateDict) -> str:
    """One k per stage from the ECA weights' shapes (the only place a file's k is written down)."""
    sizes: List[int] = []
    for stage in range(1, 5):
        stage_sizes = {
            value.shape[-1]
            for key, value in state_dict.items()
            if key.startswith(f"backbone.body.layer{stage}.") and key.endswith(".eca.conv.weight")
        }
        if len(stage_sizes) != 1:
            raise CheckpointError(f"its ECA layers in layer{stage} have k {sorted(stage_sizes)}; a detector takes one k per stage")
        sizes.append(stage_sizes.pop())
    return format_kernel_sizes(sizes)


def load_detector(
    path: PathLike,
    arch: Optional[str] = None,
    k_size: Any = None,
    num_classes: Optional[int] = None,
    **detector_kwargs: Any,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the detector a file holds and load its weights strictly.

    Reads the paper's MMDetection v1 files (mmcv's ``{'meta', 'state_dict'[, 'optimizer']}``)
    and detect.py's checkpoints. ``arch`` and ``k_size``, when given, must agree with the
    weights (one line says what the file holds); a different ``num_classes`` leaves the
    class-specific layers out, to fine-tune on other classes, with a CheckpointWarning.
    ``info``: ``arch``, the builder ``kwargs``, ``epoch``, the loaded ``checkpoint``,
    ``format`` (``"mmdet_v1"`` or ``"project"``) and ``classes`` (names of labels 1..C, or None).
    ``detector_kwargs`` (min_size, max_size, thresholds, ...) go to the builder, over a project
    checkpoint's own ``detector_kwargs`` entry; they are not weights, so nothing checks them.
    """
    checkpoint = load_checkpoint_file(path)
    state_dict = extract_state_dict(checkpoint)
    held = _what_else(state_dict)
    if held is not None:
        raise CheckpointError(f"{path} holds {held}")
    if _is_mmdet_v1(state_dict):
        file_format = "mmdet_v1"
        try:
            state_dict = mmdet_v1_to_torchvision(state_dict)
        except CheckpointError as error:
            raise CheckpointError(f"{path} fits no detector: {error}") from None
    elif any(key.startswith("backbone.body.") for key in state_dict):
        file_format = "project"
    else:
        first = next(iter(state_dict), "none")
        raise CheckpointError(f"{path} holds no detector this project knows ({len(state_dict)} tensors, first {first!r})")
    try:
        held_arch, kwargs = infer_detector(state_dict)
    except CheckpointError as error:
        raise CheckpointError(f"{path} fits no detector: {error}") from None
    if arch is not None and arch not in detector_names:
        raise CheckpointError(f"unknown detector {arch!r}; choose one of: {', '.join(detector_names)}")
    if arch is not None and arch != held_arch:
        raise CheckpointError(f"{path} holds {held_arch} weights, not {arch}; use -a {held_arch} or leave -a out")
    if k_size is not None:
        _check_kernel_sizes(path, held_arch, k_size, kwargs.get("k_size"))
    detector = held_arch.split("_", 1)[0]
    left_out: Tuple[str, ...] = ()
    if num_classes is not None and num_classes != kwargs["num_classes"]:
        warnings.warn(
            f"{path} has {kwargs['num_classes']} classes; with {num_classes} its class-specific layers are left out "
            "and trained from scratch",
            CheckpointWarning,
            stacklevel=2,
        )
        kwargs["num_classes"] = num_classes
        left_out = _CLASS_SPECIFIC[detector]
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(left_out)}
    saved_kwargs = checkpoint.get("detector_kwargs") if isinstance(checkpoint.get("detector_kwargs"), dict) else {}
    kwargs.update({**saved_kwargs, **detector_kwargs})
    model = create_detector(held_arch, **kwargs)
    _load_strictly(path, held_arch, model, state_dict, left_out)
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    return model, {
        "arch": held_arch,
        "kwargs": kwargs,
        "epoch": checkpoint.get("epoch", meta.get("epoch")),
        "checkpoint": checkpoint,
        "format": file_format,
        "classes": _class_names(checkpoint.get("classes", meta.get("CLASSES"))),
    }


def _check_kernel_sizes(path: PathLike, arch: str, k_size: Any, held: Optional[str]) -> None:
    """One line when an explicit k contradicts the file's (read from its ECA weights)."""
    if held is None:
        raise CheckpointError(f"{path} holds {arch}, which has no ECA layers; leave --ksize out")
    block = RESNET_LAYOUTS[int(arch.split("resnet", 1)[1].split("_", 1)[0])][0]
    try:
        wanted = format_kernel_sizes(stage_kernel_sizes(block, k_size))
    except ValueError as error:
        raise CheckpointError(f"--ksize for {arch}: {error}") from None
    if wanted != held:
        raise CheckpointError(
            f"{path}: the checkpoint has k={held} where --ksize gives k={wanted}; use --ksize {held} or leave --ksize out"
        )


def _load_strictly(path: PathLike, arch: str, model: nn.Module, state_dict: StateDict, left_out: Tuple[str, ...] = ()) -> None:
    """load_state_dict, with any mismatch said in one line instead of torch's paragraph.

    Keys under ``left_out`` may be missing (class-specific layers dropped for fine-tuning).
    """
    own = model.state_dict()
    missing = [key for key in own if key not in state_dict and not key.startswith(left_out)]
    unexpected = [key for key in state_dict if key not in own]
    reshaped = [key for key in own if key in state_dict and own[key].shape != state_dict[key].shape]
    if missing or unexpected or reshaped:
        problems = [
            f"{len(keys)} {what} (first {keys[0]!r})"
            for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape"))
            if keys
        ]
        raise CheckpointError(f"{path} does not fit {arch}: {', '.join(problems)}")
    model.load_state_dict(state_dict, strict=not left_out)


def _class_names(names: Any) -> Optional[List[str]]:
    """Label names as a list; MMDetection v1's COCO names (``traffic_light``) as COCO spells them."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        return None
    if [name.replace("_", " ") for name in names] == list(COCO_CLASSES):
        return list(COCO_CLASSES)
    return list(names)


# --- an ImageNet classification checkpoint as the start of a detector's backbone -------------


def classification_arch_and_k(path: PathLike) -> Tuple[str, Optional[str]]:
    """The classification model a file holds and its per-stage k (None without ECA), read from
    the weights as main.py does: for building a detector whose body takes the whole file."""
    state_dict = extract_state_dict(load_checkpoint_file(path))
    what = _what_else(state_dict)
    if what is None or not what.startswith("an ImageNet"):
        raise CheckpointError(f"{path} holds no ImageNet classification model" + (f"; it holds {what}" if what else ""))
    arch = infer_arch(state_dict)
    k_size = infer_model_kwargs(arch, state_dict).get("k_size")
    return arch, None if k_size is None else format_kernel_sizes(k_size)


def load_backbone_weights(detector: nn.Module, path: PathLike) -> str:
    """Copy an ImageNet checkpoint's body (everything but the classifier) into ``detector``'s
    backbone body, as the paper's detectors started; returns the line to log.

    The file is read by ``utils.checkpoint.load_model`` (released files, main.py's, bare
    state_dicts). Its model must be the detector's body; where only its ECA k differs, the
    other tensors load and the line says which ECA layers stay as initialised and the k_size
    to build the detector with to take them all.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        try:
            classifier, info = load_model(path)
        except CheckpointError as error:
            raise CheckpointError(_classification_refusal(path, error)) from None
    body = detector.backbone.body
    own = body.state_dict()
    source = {key: value for key, value in classifier.state_dict().items() if not key.startswith("fc.")}
    if set(source) != set(own):
        body_arch = _infer_body({f"backbone.body.{key}": value for key, value in own.items()})
        suggestion = f"{_detector_kind(detector)}_{info['arch']}_fpn"
        hint = f"use -a {suggestion}" if suggestion in detector_names else "no registered detector has that backbone"
        raise CheckpointError(f"{path} holds {info['arch']} weights but the detector's backbone is {body_arch}; {hint}")
    fitting = {key: value for key, value in source.items() if own[key].shape == value.shape}
    body.load_state_dict(fitting, strict=False)
    line = f"=> backbone from {path}: {info['arch']}, {len(fitting)} tensors (its classifier left out)"
    if len(fitting) < len(source):
        file_k = format_kernel_sizes(info["kwargs"]["k_size"])
        own_k = _stage_kernel_sizes({f"backbone.body.{key}": value for key, value in own.items()})
        line += (
            f"; its ECA k {file_k} differs from the detector's {own_k}: {len(source) - len(fitting)} ECA layers "
            f"stay as initialised (build with k_size {file_k} to load them all)"
        )
    return line


def _detector_kind(detector: nn.Module) -> str:
    if hasattr(detector, "head") and hasattr(detector.head, "classification_head"):
        return "retinanet"
    return "maskrcnn" if getattr(detector.roi_heads, "mask_head", None) is not None else "fasterrcnn"


def _classification_refusal(path: PathLike, error: CheckpointError) -> str:
    """Why a file is no backbone start: a detector gets its own line, anything else load_model's."""
    try:
        state_dict = extract_state_dict(load_checkpoint_file(path))
    except CheckpointError:
        return str(error)
    if _is_mmdet_v1(state_dict) or any(key.startswith("backbone.body.") for key in state_dict):
        return f"{path} holds a detector, not an ImageNet classification model; evaluate or fine-tune it with --resume"
    return str(error)

"""Detection checkpoint files: the paper's released MMDetection v1 files, detect.py's own, and
ImageNet classification checkpoints as the starting point of a detector's backbone.

Everything is read through ``utils.checkpoint.load_checkpoint_file`` (never runs code). The
detector, the backbone's depth and attention, its per-stage ECA k (GCNet's ratio) and the number
of classes are read from the weights' keys and shapes (``models.detection.layout``), so no file needs
flags; a file that holds something else gets one line saying what it holds.
"""

import warnings
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from models.detection import COCO_CLASSES, create_detector, detector_names
from models.detection.layout import (
    BODY_PREFIX,
    CLASS_SPECIFIC,
    adapt_detector_state_dict,
    detector_and_body,
    infer_detector,
    is_mmdet_v1,
    mmdet_v1_to_torchvision,
    stage_kernel_sizes,
)
from models.kernel_size import format_kernel_sizes
from models.layout import LayoutError, classifier_name
from utils.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    PathLike,
    StateDict,
    extract_state_dict,
    infer_arch,
    infer_model_kwargs,
    load_checkpoint_file,
    load_model,
)

__all__ = [
    "load_detector",
    "load_backbone_weights",
    "classification_arch_and_k",
]


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


def load_detector(
    path: PathLike,
    arch: Optional[str] = None,
    k_size: Any = None,
    num_classes: Optional[int] = None,
    **detector_kwargs: Any,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the detector a file holds and load its weights strictly.

    Reads the paper's MMDetection v1 files (mmcv's ``{'meta', 'state_dict'[, 'optimizer']}``),
    those of other code that a registered adapter converts (GCNet's Mask R-CNNs:
    ``models.detection.layout.register_detector_state_dict_adapter``) and detect.py's
    checkpoints. ``arch`` and ``k_size``, when given, must agree with the
    weights (one line says what the file holds); a different ``num_classes`` leaves the
    class-specific layers out, to fine-tune on other classes, with a CheckpointWarning.
    ``info``: ``arch``, the builder ``kwargs``, ``epoch``, the loaded ``checkpoint``,
    ``format`` (``"mmdet_v1"`` or ``"project"``) and ``classes`` (names of labels 1..C, or None).
    ``detector_kwargs`` (min_size, max_size, thresholds, ...) go to the builder, over a project
    checkpoint's own ``detector_kwargs`` entry; they are not weights, so nothing checks them.
    """
    checkpoint = load_checkpoint_file(path)
    state_dict = adapt_detector_state_dict(extract_state_dict(checkpoint))
    held = _what_else(state_dict)
    if held is not None:
        raise CheckpointError(f"{path} holds {held}")
    if is_mmdet_v1(state_dict):
        file_format = "mmdet_v1"
        try:
            state_dict = mmdet_v1_to_torchvision(state_dict)
        except LayoutError as error:
            raise CheckpointError(f"{path} fits no detector: {error}") from None
    elif any(key.startswith(BODY_PREFIX) for key in state_dict):
        file_format = "project"
    else:
        first = next(iter(state_dict), "none")
        raise CheckpointError(f"{path} holds no detector this project knows ({len(state_dict)} tensors, first {first!r})")
    try:
        held_arch, kwargs = infer_detector(state_dict)
    except LayoutError as error:
        raise CheckpointError(f"{path} fits no detector: {error}") from None
    if arch is not None and arch not in detector_names:
        raise CheckpointError(f"unknown detector {arch!r}; choose one of: {', '.join(detector_names)}")
    if arch is not None and arch != held_arch:
        raise CheckpointError(f"{path} holds {held_arch} weights, not {arch}; use -a {held_arch} or leave -a out")
    if k_size is not None:
        _check_kernel_sizes(path, held_arch, k_size, kwargs.get("k_size"))
    detector, _ = detector_and_body(held_arch)
    left_out: Tuple[str, ...] = ()
    if num_classes is not None and num_classes != kwargs["num_classes"]:
        warnings.warn(
            f"{path} has {kwargs['num_classes']} classes; with {num_classes} its class-specific layers are left out "
            "and trained from scratch",
            CheckpointWarning,
            stacklevel=2,
        )
        kwargs["num_classes"] = num_classes
        left_out = CLASS_SPECIFIC[detector]
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
    try:
        wanted = stage_kernel_sizes(detector_and_body(arch)[1], k_size)
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
    classifier_prefix = classifier_name(info["arch"]) + "."
    source = {key: value for key, value in classifier.state_dict().items() if not key.startswith(classifier_prefix)}
    own_arch, own_kwargs = infer_detector(detector.state_dict())
    detector_kind, body_arch = detector_and_body(own_arch)
    if set(source) != set(own):
        suggestion = f"{detector_kind}_{info['arch']}_fpn"
        hint = f"use -a {suggestion}" if suggestion in detector_names else "no registered detector has that backbone"
        raise CheckpointError(f"{path} holds {info['arch']} weights but the detector's backbone is {body_arch}; {hint}")
    fitting = {key: value for key, value in source.items() if own[key].shape == value.shape}
    body.load_state_dict(fitting, strict=False)
    line = f"=> backbone from {path}: {info['arch']}, {len(fitting)} tensors (its classifier left out)"
    if len(fitting) < len(source):
        file_k = format_kernel_sizes(info["kwargs"]["k_size"])
        line += (
            f"; its ECA k {file_k} differs from the detector's {own_kwargs['k_size']}: {len(source) - len(fitting)} ECA layers "
            f"stay as initialised (build with k_size {file_k} to load them all)"
        )
    return line


def _classification_refusal(path: PathLike, error: CheckpointError) -> str:
    """Why a file is no backbone start: a detector gets its own line, anything else load_model's."""
    try:
        state_dict = extract_state_dict(load_checkpoint_file(path))
    except CheckpointError:
        return str(error)
    if is_mmdet_v1(state_dict) or any(key.startswith(BODY_PREFIX) for key in state_dict):
        return f"{path} holds a detector, not an ImageNet classification model; evaluate or fine-tune it with --resume"
    return str(error)

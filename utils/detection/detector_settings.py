"""What a detector is built from, apart from its weights: constructor settings given as
``KEY=VALUE`` (checked against what the class really takes), the classes it tells apart, and
the settings a checkpoint can hold."""

import inspect
from typing import Any, Dict, Sequence, Set

from torch import nn

from utils.console import UsageError


def parse_detector_args(pairs: Sequence[str]) -> Dict[str, Any]:
    """``KEY=VALUE`` strings as constructor keyword arguments (int, float or bool values)."""
    parsed: Dict[str, Any] = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key.isidentifier():
            raise UsageError(f"--detector-arg {pair!r}: expected KEY=VALUE, e.g. box_batch_size_per_image=128")
        if text.lower() in ("true", "false"):
            parsed[key] = text.lower() == "true"
            continue
        for kind in (int, float):
            try:
                parsed[key] = kind(text)
                break
            except ValueError:
                continue
        else:
            raise UsageError(f"--detector-arg {pair!r}: the value must be a number or true/false")
    return parsed


def constructor_settings(detector: type) -> Set[str]:
    """The keyword arguments a torchvision detector class takes (its transform's included):
    torchvision passes unknown ones on and ignores them, so a typo would go unnoticed."""
    names = {"size_divisible", "fixed_size"}  # GeneralizedRCNNTransform's, reached through **kwargs
    for cls in detector.__mro__:
        if "__init__" in vars(cls):
            names |= {name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                      if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}
    return names - {"self", "backbone", "num_classes"}


def is_rcnn(arch: str) -> bool:
    """R-CNNs count the background as a class; RetinaNet does not."""
    return not arch.startswith("retinanet")


def predicts_masks(detector: nn.Module) -> bool:
    """Whether the detector segments too (a Mask R-CNN's mask head): its data then needs masks,
    and COCO evaluates its segmentations beside its boxes."""
    roi_heads = getattr(detector, "roi_heads", None)
    return roi_heads is not None and roi_heads.has_mask()


def object_classes(arch: str, kwargs: Dict[str, Any]) -> int:
    """The object categories a detector tells apart (background not counted)."""
    return kwargs["num_classes"] - int(is_rcnn(arch))


def plain_values(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Constructor kwargs a checkpoint can hold under weights_only (``k_size`` as a string or list)."""
    return {key: value for key, value in kwargs.items() if isinstance(value, (str, int, float, bool, list, tuple))}

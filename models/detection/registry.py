"""A name -> constructor registry for detectors, apart from the classification one.

Kept separate so that ``models.model_names`` (main.py's ``-a`` choices, the classification
checkpoint inference) never sees a detector, and detect.py never sees a classifier.
"""

from typing import Callable, Dict, List

from torch import nn

__all__ = ["register_detector", "create_detector", "list_detectors"]

_detector_constructors: Dict[str, Callable[..., nn.Module]] = {}


def register_detector(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make ``constructor`` reachable by its function name, as ``models.register_model``."""
    name = constructor.__name__
    if name in _detector_constructors:
        raise ValueError(f"detector {name!r} is registered twice")
    _detector_constructors[name] = constructor
    return constructor


def list_detectors() -> List[str]:
    return sorted(_detector_constructors)


def create_detector(name: str, **kwargs) -> nn.Module:
    """Build a registered detector; an unknown name is a ValueError that lists the valid ones."""
    try:
        constructor = _detector_constructors[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of: {', '.join(list_detectors())}") from None
    return constructor(**kwargs)

"""A name -> constructor registry, so scripts can build any model from a command-line string."""

from typing import Callable, Dict, List, Optional, Sequence

from torch import nn

from .features import FeatureListNet

__all__ = ["register_model", "create_model", "get_model_constructor", "list_models"]

_model_constructors: Dict[str, Callable[..., nn.Module]] = {}


def register_model(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make ``constructor`` reachable by its function name."""
    name = constructor.__name__
    if name in _model_constructors:
        raise ValueError(f"model {name!r} is registered twice")
    _model_constructors[name] = constructor
    return constructor


def list_models() -> List[str]:
    return sorted(_model_constructors)


def get_model_constructor(name: str) -> Callable[..., nn.Module]:
    """The registered constructor; an unknown name is a ValueError that lists the valid ones."""
    try:
        return _model_constructors[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None


def create_model(
    name: str, features_only: bool = False, out_indices: Optional[Sequence[int]] = None, **kwargs
) -> nn.Module:
    """Build a registered model (an unknown name is :func:`get_model_constructor`'s ValueError).

    ``features_only`` gives the backbone instead, as timm does: a :class:`FeatureListNet`
    returning the feature maps ``out_indices`` picks from the model's ``feature_info``
    (default: all of them) as a list.
    """
    model = get_model_constructor(name)(**kwargs)
    if not features_only:
        return model
    return FeatureListNet(model, range(len(model.feature_info)) if out_indices is None else out_indices)

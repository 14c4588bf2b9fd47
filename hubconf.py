"""torch.hub entry points: one per registered model, loading a checkpoint file when given one.

    model = torch.hub.load("/path/to/this/repo", "eca_resnet50", source="local",
                           weights="eca_resnet50_k3557.pth.tar")

Weights are never downloaded: ``weights`` is a local checkpoint file (a released one, one
saved by main.py, or a bare state_dict), read by the same loader as main.py's, which takes
the ECA kernel sizes and the class count from the file. Without ``weights`` the model is
freshly initialised and keyword arguments go to its constructor.
"""

import typing  # as a module, not its names: every public callable here is listed as an entry point

from torch import nn

import models as _models
from utils.checkpoint import load_model as _load_model

dependencies = ["torch", "torchvision"]


def _entry_point(name: str) -> typing.Callable[..., nn.Module]:
    def entry(weights: typing.Optional[str] = None, **kwargs: typing.Any) -> nn.Module:
        if weights is None:
            return _models.create_model(name, **kwargs)
        model, _ = _load_model(weights, arch=name, **kwargs)
        return model

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"{name}; weights=PATH loads that checkpoint file (k_size and num_classes, if given, must agree "
        f"with it), weights=None builds the model freshly initialised with the given constructor arguments."
    )
    return entry


for _name in _models.model_names:
    globals()[_name] = _entry_point(_name)

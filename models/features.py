"""The classifiers as backbones, in timm's convention: ``feature_info`` and ``features_only``."""

from collections import OrderedDict
from typing import Iterable, List, Sequence, TypedDict

import torch
from torch import nn

__all__ = ["FeatureSpec", "FeatureInfo", "FeatureListNet"]


class FeatureSpec(TypedDict):
    """One feature map: its channels, its stride against the input, the module that outputs it."""

    num_chs: int
    reduction: int
    module: str


class FeatureInfo(List[FeatureSpec]):
    """timm's ``model.feature_info``: one :class:`FeatureSpec` per feature map, shallow to deep."""

    def channels(self) -> List[int]:
        return [spec["num_chs"] for spec in self]

    def reduction(self) -> List[int]:
        return [spec["reduction"] for spec in self]

    def module_name(self) -> List[str]:
        return [spec["module"] for spec in self]


class FeatureListNet(nn.Module):
    """A classifier's stem and stages that returns the feature maps ``out_indices`` picks, as a list.

    ``out_indices`` index the classifier's ``feature_info`` (ResNets: 0 the stem, 1-4 the
    stages). The head and the stages after the last picked map are left out; the modules
    kept are the classifier's own (not copies) under their own names, so its state_dict keys
    hold here too. ``model`` must name, in ``forward_steps``, the submodules its features
    pass through in order (a dotted name reaches into an ``nn.Sequential``).
    """

    def __init__(self, model: nn.Module, out_indices: Iterable[int]) -> None:
        super().__init__()
        available: FeatureInfo = model.feature_info
        out_indices = tuple(out_indices)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or not all(
            0 <= index < len(available) for index in out_indices
        ):
            raise ValueError(
                f"out_indices {out_indices}: give increasing indices from 0 to {len(available) - 1} "
                f"into {type(model).__name__}'s features {available.module_name()}"
            )
        self.feature_info = FeatureInfo(available[index] for index in out_indices)
        returned = set(self.feature_info.module_name())
        steps: Sequence[str] = model.forward_steps
        self.steps = list(steps[: max(steps.index(name) for name in returned) + 1])
        self.returned = [step in returned for step in self.steps]
        for name in OrderedDict.fromkeys(step.split(".", 1)[0] for step in self.steps):
            inner = [step.split(".", 1)[1] for step in self.steps if step.startswith(name + ".")]
            module = model.get_submodule(name)
            if inner:  # the first blocks of a Sequential, under their own indices
                module = nn.Sequential(OrderedDict((index, module.get_submodule(index)) for index in inner))
            self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features = []
        for step, returned in zip(self.steps, self.returned):
            x = self.get_submodule(step)(x)
            if returned:
                features.append(x)
        return features

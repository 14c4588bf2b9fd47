"""Training recipes as data: named, versioned sets of main.py settings, each value with its source.

``main.py --recipe NAME`` fills every setting the command line leaves out from the recipe, and
every setting no recipe names from :data:`DEFAULTS` (each ingredient off); an explicit flag
always wins. The resolved settings go into the run directory (``recipe.json``) and every
checkpoint, and ``--print-recipe`` shows them with where each came from.

A recipe changes only when its source does: a correction is a new ``version``, so a run records
which reading of its source it followed. Sizes (``train_crop_size``, ``val_resize_size``,
``val_crop_size``) are given in pixels at a 224-pixel test crop, as the sources give them, and
scale with ``--image-size`` (the test crop), so that a recipe carries over to small images.
"""

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from utils.checkpoint import atomic_write
from utils.console import UsageError
from utils.data.transforms import eval_resize

__all__ = [
    "Cited",
    "Recipe",
    "DEFAULTS",
    "RECIPES",
    "REFERENCE_SIZE",
    "SIZE_SETTINGS",
    "DEFAULT_RECIPE",
    "model_family",
    "FAMILY_SETTINGS",
    "RECIPE_FILE",
    "ResolvedSetting",
    "ResolvedRecipe",
    "resolve_recipe",
    "explicit_settings",
    "apply_recipe",
    "save_recipe",
    "format_recipe",
    "recipe_of_checkpoint",
]

RECIPE_FILE = "recipe.json"

REFERENCE_SIZE = 224
"""The test crop the sources' sizes are given at."""

SIZE_SETTINGS = ("train_crop_size", "val_resize_size", "val_crop_size")


@dataclass(frozen=True)
class Cited:
    """A setting's value and where it is written down."""

    value: Any
    source: str


@dataclass(frozen=True)
class Recipe:
    """A named, versioned set of settings (main.py's argument names), each :class:`Cited`.

    ``families`` holds a model family's own values (:func:`model_family`), over the recipe's:
    the paper trained MobileNetV2 with its own schedule.
    """

    name: str
    version: int
    summary: str
    source: str
    values: Mapping[str, Cited]
    families: Mapping[str, Mapping[str, Cited]] = field(default_factory=dict)

    def settings(self, family: str) -> Mapping[str, Cited]:
        return {**self.values, **self.families.get(family, {})}


DEFAULTS: Mapping[str, Any] = {
    "epochs": 100,
    "batch_size": 256,
    "lr": 0.1,
    "opt": "sgd",
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 1e-4,
    "norm_weight_decay": None,
    "bias_weight_decay": None,
    "sched": "step",
    "lr_step": 30,
    "lr_gamma": 0.1,
    "min_lr": 0.0,
    "warmup_epochs": 0,
    "warmup_factor": 0.01,
    "loss": "ce",
    "label_smoothing": 0.0,
    "mixup_alpha": 0.0,
    "cutmix_alpha": 0.0,
    "auto_augment": "none",
    "ra_magnitude": 9,
    "random_erase": 0.0,
    "ra_reps": 1,
    "drop_path": 0.0,
    "ema_decay": None,
    "ema_steps": 32,
    "clip_grad": None,
    "accum_steps": 1,
    "train_crop_size": None,
    "val_resize_size": None,
    "val_crop_size": None,
}
"""Every setting a recipe may give, at the value that leaves its ingredient out (None: not set;
the sizes then follow ``--image-size`` as the paper's pipeline does, the weight decay of norm
layers and biases is ``weight_decay``). The numbers are the paper's ResNet recipe."""

ECA_PAPER = "ECA-Net (Wang et al., CVPR 2020), Sec. 4.1"
RSB = "ResNet strikes back (Wightman, Touvron, Jegou 2021, arXiv:2110.00476), Table 1"
MMPRETRAIN_RSB = (
    "mmpretrain's RSB configs (configs/resnet/resnet50_8xb256-rsb-a{1,2,3}*, schedules/imagenet_bs2048_rsb.py), "
    "which reproduce Table 1"
)
TORCHVISION_V2 = (
    "torchvision's ResNet-50 IMAGENET1K_V2 recipe: 'How to Train State-Of-The-Art Models Using TorchVision's "
    "Latest Primitives' (pytorch.org blog, V. Vryniotis, 2021), its list of parameters and train.py command"
)
TORCHVISION_TRAIN = "torchvision's references/classification/train.py, which that recipe runs"
RAND_AUGMENT = (
    "{table}: 'Rand Augment {level}/0.5', magnitude {level} of 10 with noise 0.5, two operations; torchvision's "
    "RandAugment has no magnitude noise and 31 magnitude bins (0..30), so {magnitude} of 30"
)


def _rsb(procedure: str, level: int, **values: Any) -> Dict[str, Cited]:
    """One of Table 1's three procedures: what the three share, then this column's own values."""
    table = f"{RSB}, column {procedure}"
    magnitude = level * 30 // 10
    shared = {
        "batch_size": Cited(2048, table),
        "opt": Cited("lamb", table),
        "sched": Cited("cosine", f"{table}: 'LR decay: cosine'"),
        "warmup_epochs": Cited(5, table),
        "warmup_factor": Cited(1e-4, f"{MMPRETRAIN_RSB}: LinearLR(start_factor=0.0001) over the warm-up"),
        "min_lr": Cited(1e-6, f"{MMPRETRAIN_RSB}: CosineAnnealingLR(eta_min=1e-6)"),
        "loss": Cited("bce", f"{table}: 'BCE loss'"),
        "cutmix_alpha": Cited(1.0, table),
        "auto_augment": Cited("ra", RAND_AUGMENT.format(table=table, level=level, magnitude=magnitude)),
        "ra_magnitude": Cited(magnitude, RAND_AUGMENT.format(table=table, level=level, magnitude=magnitude)),
        "norm_weight_decay": Cited(0.0, f"{MMPRETRAIN_RSB}: norm_decay_mult=0"),
        "bias_weight_decay": Cited(0.0, f"{MMPRETRAIN_RSB}: bias_decay_mult=0"),
        "val_resize_size": Cited(236, f"{table}: 'Test crop ratio 0.95', 224 / 0.95 = 235.8 (mmpretrain: 236)"),
        "val_crop_size": Cited(224, f"{table}: 'Test Res 224'"),
    }
    own = {name: Cited(value, table) for name, value in values.items()}
    if "ra_reps" in values:
        own["ra_reps"] = Cited(values["ra_reps"], f"{table}: 'Repeated Aug', 3 repeats as DeiT's and mmpretrain's RepeatAugSampler")
    return {**shared, **own}


RECIPES: Dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="paper",
            version=1,
            summary="the paper's: SGD, lr /10 every 30 epochs, random-resized crop and flip (MobileNetV2: its own)",
            source=ECA_PAPER,
            values={
                "epochs": Cited(100, ECA_PAPER),
                "batch_size": Cited(256, ECA_PAPER),
                "lr": Cited(0.1, ECA_PAPER),
                "opt": Cited("sgd", ECA_PAPER),
                "momentum": Cited(0.9, ECA_PAPER),
                "weight_decay": Cited(1e-4, ECA_PAPER),
                "sched": Cited("step", ECA_PAPER),
                "lr_step": Cited(30, ECA_PAPER),
                "lr_gamma": Cited(0.1, ECA_PAPER),
            },
            families={
                "mobilenet": {
                    "epochs": Cited(400, f"{ECA_PAPER}, MobileNetV2"),
                    "batch_size": Cited(96, f"{ECA_PAPER}, MobileNetV2"),
                    "lr": Cited(0.045, f"{ECA_PAPER}, MobileNetV2"),
                    "weight_decay": Cited(4e-5, f"{ECA_PAPER}, MobileNetV2"),
                    "lr_step": Cited(1, f"{ECA_PAPER}, MobileNetV2: 'linear decay rate of 0.98' per epoch"),
                    "lr_gamma": Cited(0.98, f"{ECA_PAPER}, MobileNetV2"),
                }
            },
        ),
        Recipe(
            name="torchvision-v2",
            version=1,
            summary="torchvision's ResNet-50 v2 (80.86% top-1): SGD, warm-up + cosine, TrivialAugment, "
            "Mixup/CutMix, label smoothing, EMA, repeated augmentation, train 176 / test 224",
            source=TORCHVISION_V2,
            values={
                "epochs": Cited(600, TORCHVISION_V2),
                "batch_size": Cited(1024, f"{TORCHVISION_V2}: 8 GPUs x batch_size=128"),
                "lr": Cited(0.5, TORCHVISION_V2),
                "opt": Cited("sgd", TORCHVISION_V2),
                "momentum": Cited(0.9, TORCHVISION_V2),
                "weight_decay": Cited(2e-5, TORCHVISION_V2),
                "norm_weight_decay": Cited(0.0, TORCHVISION_V2),
                "sched": Cited("cosine", f"{TORCHVISION_V2}: lr_scheduler='cosineannealinglr'"),
                "min_lr": Cited(0.0, f"{TORCHVISION_TRAIN}: --lr-min 0.0"),
                "warmup_epochs": Cited(5, TORCHVISION_V2),
                "warmup_factor": Cited(0.01, f"{TORCHVISION_V2}: lr_warmup_method='linear', lr_warmup_decay=0.01"),
                "label_smoothing": Cited(0.1, TORCHVISION_V2),
                "mixup_alpha": Cited(0.2, TORCHVISION_V2),
                "cutmix_alpha": Cited(1.0, TORCHVISION_V2),
                "auto_augment": Cited("ta_wide", TORCHVISION_V2),
                "random_erase": Cited(0.1, TORCHVISION_V2),
                "ra_reps": Cited(4, f"{TORCHVISION_V2}: ra_sampler=True, ra_reps=4"),
                "ema_decay": Cited(0.99998, f"{TORCHVISION_V2}: model_ema=True, model_ema_decay=0.99998"),
                "ema_steps": Cited(32, f"{TORCHVISION_V2}: model_ema_steps=32"),
                "train_crop_size": Cited(176, TORCHVISION_V2),
                "val_resize_size": Cited(232, TORCHVISION_V2),
                "val_crop_size": Cited(224, TORCHVISION_V2),
            },
        ),
        Recipe(
            name="rsb-a1",
            version=1,
            summary="ResNet strikes back A1 (80.4%): LAMB, BCE, 600 epochs, RandAugment, Mixup/CutMix, "
            "label smoothing, stochastic depth, repeated augmentation",
            source=RSB,
            values=_rsb("A1", 7, epochs=600, lr=5e-3, weight_decay=0.01, label_smoothing=0.1, drop_path=0.05, ra_reps=3,
                        mixup_alpha=0.2, train_crop_size=224),
        ),
        Recipe(
            name="rsb-a2",
            version=1,
            summary="ResNet strikes back A2 (79.8%): LAMB, BCE, 300 epochs, RandAugment, Mixup/CutMix, "
            "stochastic depth, repeated augmentation",
            source=RSB,
            values=_rsb("A2", 7, epochs=300, lr=5e-3, weight_decay=0.02, drop_path=0.05, ra_reps=3, mixup_alpha=0.1,
                        train_crop_size=224),
        ),
        Recipe(
            name="rsb-a3",
            version=1,
            summary="ResNet strikes back A3 (78.1%): LAMB, BCE, 100 epochs at 160 px (test 224), RandAugment, Mixup/CutMix",
            source=RSB,
            values=_rsb("A3", 6, epochs=100, lr=8e-3, weight_decay=0.02, mixup_alpha=0.1, train_crop_size=160),
        ),
    )
}
"""Every recipe by name."""

DEFAULT_RECIPE = "paper"


FAMILY_SETTINGS = frozenset({"epochs", "batch_size", "lr", "opt", "momentum", "nesterov", "weight_decay", "sched", "lr_step", "lr_gamma"})
"""The settings a model family may hold its own values for: the optimisation's. The data's and the
model's (sizes, augmentation, stochastic depth) are alike for every family, so main.py can read
them before it knows the model (a checkpoint's)."""


def _check_sources() -> None:
    """Every recipe names only settings :data:`DEFAULTS` knows (a typo would be silently ignored),
    and its families only :data:`FAMILY_SETTINGS`."""
    for recipe in RECIPES.values():
        for values in (recipe.values, *recipe.families.values()):
            unknown = set(values) - set(DEFAULTS)
            if unknown:
                raise ValueError(f"recipe {recipe.name} names unknown settings: {', '.join(sorted(unknown))}")
        for family, values in recipe.families.items():
            if set(values) - FAMILY_SETTINGS:
                raise ValueError(f"recipe {recipe.name}'s {family} values may only be optimisation settings")


_check_sources()


def model_family(arch: str) -> str:
    """The family a recipe may hold its own values for: ``mobilenet`` for the MobileNetV2s, else ``resnet``."""
    return "mobilenet" if "mobilenet" in arch else "resnet"


@dataclass(frozen=True)
class ResolvedSetting:
    """A setting's value and where it came from: ``flag`` (the command line), ``recipe`` (with
    its ``source``), ``default`` (the ingredient left out) or ``--image-size``."""

    value: Any
    origin: str
    source: str = ""


@dataclass(frozen=True)
class ResolvedRecipe:
    """The settings a run trains with, as its run directory and checkpoints record them."""

    name: str
    version: int
    settings: Mapping[str, ResolvedSetting]

    def record(self) -> Dict[str, Any]:
        """Plain values for ``recipe.json`` and checkpoints."""
        return {
            "name": self.name,
            "version": self.version,
            "settings": {name: {"value": s.value, "origin": s.origin, "source": s.source} for name, s in self.settings.items()},
        }

    def values(self) -> Dict[str, Any]:
        return {name: setting.value for name, setting in self.settings.items()}


def _scaled(size: int, image_size: int) -> int:
    """A source's size at a 224-pixel test crop, at ``image_size`` instead (exact at 224)."""
    return size if image_size == REFERENCE_SIZE else max(1, int(round(size * image_size / REFERENCE_SIZE)))


def _paper_size(name: str, image_size: int) -> int:
    """The paper's pipeline: train and test crops of ``image_size``, resize to image_size / 0.875 (256 for 224)."""
    return eval_resize(image_size) if name == "val_resize_size" else image_size


def resolve_recipe(name: str, arch: str, explicit: Mapping[str, Any], image_size: int = REFERENCE_SIZE) -> ResolvedRecipe:
    """Every setting of :data:`DEFAULTS`: the ``explicit`` value where given (not None), else
    the recipe's (its ``arch`` family's first), else the default; the sizes at ``image_size``."""
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    cited = recipe.settings(model_family(arch))
    settings: Dict[str, ResolvedSetting] = {}
    for setting, default in DEFAULTS.items():
        if explicit.get(setting) is not None:
            settings[setting] = ResolvedSetting(explicit[setting], "flag")
        elif setting in cited:
            value = _scaled(cited[setting].value, image_size) if setting in SIZE_SETTINGS else cited[setting].value
            settings[setting] = ResolvedSetting(value, "recipe", cited[setting].source)
        elif setting in SIZE_SETTINGS:
            settings[setting] = ResolvedSetting(_paper_size(setting, image_size), "--image-size")
        else:
            settings[setting] = ResolvedSetting(default, "default")
    return ResolvedRecipe(recipe.name, recipe.version, settings)


def explicit_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The settings as the command line gave them (None: left to the recipe), read before
    :func:`apply_recipe` fills them in."""
    return {name: getattr(args, name) for name in DEFAULTS}


def apply_recipe(args: argparse.Namespace, arch: str, explicit: Mapping[str, Any]) -> ResolvedRecipe:
    """Set every setting of ``args`` to its value from ``args.recipe`` for ``arch``, where the
    command line (``explicit``) left it out."""
    resolved = resolve_recipe(args.recipe, arch, explicit, args.image_size)
    for name, value in resolved.values().items():
        setattr(args, name, value)
    return resolved


def save_recipe(run_dir: str, resolved: ResolvedRecipe) -> None:
    """``recipe.json`` in the run directory: the settings the run trains with and where each came from."""
    text = json.dumps(resolved.record(), indent=2) + "\n"
    atomic_write(os.path.join(run_dir, RECIPE_FILE), lambda handle: handle.write(text.encode()))


def format_recipe(resolved: ResolvedRecipe) -> List[str]:
    """``--print-recipe``'s lines: the recipe, then each setting, its value and where it came from."""
    recipe = RECIPES[resolved.name]
    lines = [f"recipe {resolved.name} (version {resolved.version}): {recipe.summary}", f"source: {recipe.source}"]
    width = max(len(name) for name in resolved.settings)
    for name, setting in resolved.settings.items():
        detail = setting.source[len(recipe.source):].lstrip(",: ") if setting.source.startswith(recipe.source) else setting.source
        where = {"recipe": f"recipe{': ' + detail if detail else ''}", "flag": "command line"}.get(setting.origin, setting.origin)
        lines.append(f"  {name:<{width}}  {_shown(setting.value):<10}  {where}")
    return lines


def _shown(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def recipe_of_checkpoint(checkpoint: Mapping[str, Any]) -> Optional[Tuple[str, int]]:
    """(name, version) of the recipe a checkpoint was trained with, None for one written before recipes."""
    recipe = checkpoint.get("recipe")
    if not isinstance(recipe, Mapping):
        return None
    return str(recipe.get("name")), int(recipe.get("version", 0))

"""Building the model a checkpoint holds.

The architecture, the per-layer ECA kernel sizes and the number of classes are read from the
weights' shapes (``models.layout``: what a state_dict says about its model), so a released file
needs no flags; where the caller's explicit choice contradicts the file, one line says what
the file holds and what to pass.
"""

import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from torch import nn

import models
from models import layout
from models.kernel_size import format_kernel_sizes

from .files import CheckpointError, CheckpointWarning, PathLike, StateDict, extract_state_dict, load_checkpoint_file, strip_prefixes

__all__ = [
    "infer_arch",
    "format_kernel_sizes",
    "infer_model_kwargs",
    "adapted_state_dict",
    "load_model",
]


def infer_arch(state_dict: StateDict, hint: Optional[str] = None, settings: Optional[Mapping[str, Any]] = None) -> str:
    """The registered model whose layout (keys, block types, depths, widths) the weights have
    (``models.layout.infer_arch``), or a CheckpointError naming the closest model and how the
    weights differ from it.

    ``hint`` (e.g. the checkpoint's own ``arch`` string) is tried first and wins a tie;
    ``settings`` are what an adapter says the weights' layout implies.
    """
    state_dict = strip_prefixes(state_dict)
    arch = layout.infer_arch(state_dict, hint, settings)
    if arch is None:
        raise CheckpointError(f"the checkpoint's weights match no known model; closest: {layout.closest_model(state_dict, settings)}")
    return arch


def infer_model_kwargs(
    arch: str, state_dict: StateDict, settings: Optional[Mapping[str, Any]] = None, backbone: bool = False
) -> Dict[str, Any]:
    """The constructor arguments (``num_classes``; ``k_size`` for ECA models; ``bias=True`` and the
    like for a layer's declared layout variant; GCNet's ``reduction`` and the like from the
    shapes; an adapter's ``settings``) that make ``models.create_model(arch, **kwargs)`` hold
    exactly these weights, less the classifier with ``backbone`` (``models.layout.infer_model_kwargs``);
    a CheckpointError otherwise."""
    state_dict = strip_prefixes(state_dict)
    if not backbone and not layout.fits(arch, state_dict, settings):
        raise CheckpointError(f"the checkpoint's weights are not {arch}'s; they are {infer_arch(state_dict, settings=settings)}'s")
    try:
        return layout.infer_model_kwargs(arch, state_dict, settings, backbone)
    except layout.LayoutError as error:
        raise CheckpointError(str(error)) from None


def adapted_state_dict(checkpoint: Dict[str, Any]) -> layout.AdaptedStateDict:
    """A loaded checkpoint's weights in this project's keys (``models.layout.adapt_state_dict``:
    official CBAM, Cadene's SENet, timm, ... files become the model here that computes the same)."""
    return layout.adapt_state_dict(extract_state_dict(checkpoint))


def load_model(
    path: PathLike,
    arch: Optional[str] = None,
    k_size: Any = None,
    num_classes: Optional[int] = None,
    strict: bool = True,
    features_only: bool = False,
    out_indices: Optional[Sequence[int]] = None,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model a checkpoint file holds and load its weights.

    ``arch``, ``k_size`` and ``num_classes`` may be left out: they are read from the weights,
    also those of another code base's file that a registered adapter converts
    (``models.layout.adapt_state_dict``).
    Given explicitly, they must agree with the weights (a CheckpointError says what the file
    holds and what to pass), except ``num_classes``: a different count leaves the classifier
    freshly initialised, for fine-tuning. A wrong ``arch`` string inside the file is ignored
    with a CheckpointWarning. ``strict=False`` instead builds ``arch`` as asked and loads the
    tensors whose names and shapes fit, warning how many did not. ``features_only`` returns
    the backbone (``models.FeatureListNet``, ``out_indices`` as in ``models.create_model``)
    and says in a CheckpointWarning that the classifier is left out. A file of a backbone alone
    (GCNet's, a detector's) loads all but the classifier, which stays as initialised (a
    CheckpointWarning says so unless ``features_only``).

    ``info`` holds ``arch``, the constructor ``kwargs``, the file's ``epoch`` and
    ``best_prec1`` (a float or None), the loaded ``checkpoint`` dict itself, so a caller
    can go on to restore an optimizer without reading the file twice (less the optimizer state
    of another code base's file, see :func:`_without_foreign_training_state`), and ``source``:
    the layout an adapter converted ("official CBAM", "timm"), None for this project's keys.
    """
    checkpoint = load_checkpoint_file(path)
    adapted = adapted_state_dict(checkpoint)
    state_dict, settings = adapted.state_dict, adapted.settings
    file_arch = checkpoint.get("arch") if isinstance(checkpoint.get("arch"), str) else None
    if arch is not None and arch not in models.list_models():
        raise CheckpointError(f"unknown model {arch!r}; choose one of: {', '.join(models.list_models())}")
    if arch is not None and not layout.fits(arch, state_dict, settings) and layout.backbone_settings(arch, state_dict, settings) is None:
        if strict:
            held = _held_arch(path, adapted, file_arch)
            raise CheckpointError(f"{path} holds {held} weights, not {arch}; use -a {held} or leave -a out")
        return _load_partially(path, checkpoint, state_dict, arch, k_size, num_classes)
    if arch is None:
        arch = _held_arch(path, adapted, file_arch)
    if file_arch is not None and file_arch != arch and adapted.source is None:
        warnings.warn(
            f"{path} says arch {file_arch!r} but its weights are {arch}'s; loading them as {arch}",
            CheckpointWarning,
            stacklevel=2,
        )
    headless = not layout.fits(arch, state_dict, settings)
    kwargs = infer_model_kwargs(arch, state_dict, settings, backbone=headless)
    if k_size is not None:
        _check_kernel_sizes(path, arch, k_size, state_dict, kwargs.get("k_size"))
    classifier = layout.classifier_name(arch)
    if headless:
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        if not features_only:
            warnings.warn(
                f"{path} holds {arch}'s backbone without a classifier: '{classifier}' stays as initialised",
                CheckpointWarning,
                stacklevel=2,
            )
    elif num_classes is not None and num_classes != kwargs["num_classes"]:
        warnings.warn(
            f"{path} has a {kwargs['num_classes']}-class classifier; with {num_classes} classes "
            f"'{classifier}' is left out and trained from scratch",
            CheckpointWarning,
            stacklevel=2,
        )
        kwargs["num_classes"] = num_classes
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(classifier + ".")}
    model = models.create_model(arch, **kwargs)
    model.load_state_dict(state_dict, strict=len(state_dict) == len(model.state_dict()))
    if features_only:
        warnings.warn(f"{path}: features only, the classifier '{classifier}' is left out", CheckpointWarning, stacklevel=2)
        model = models.FeatureListNet(model, range(len(model.feature_info)) if out_indices is None else out_indices)
    if adapted.source is not None:
        checkpoint = _without_foreign_training_state(path, checkpoint, adapted.source)
    return model, _info(arch, kwargs, checkpoint, adapted.source)


def _held_arch(path: PathLike, adapted: layout.AdaptedStateDict, file_arch: Optional[str]) -> str:
    """The model the weights are (or are the backbone of), or one line naming the file, its layout, and the closest model."""
    arch = layout.infer_arch(adapted.state_dict, file_arch, adapted.settings) or layout.infer_arch(
        adapted.state_dict, file_arch, adapted.settings, backbone=True
    )
    if arch is None:
        where = f"{path} ({adapted.source} layout)" if adapted.source is not None else str(path)
        raise CheckpointError(f"{where} matches no known model; closest: {layout.closest_model(adapted.state_dict, adapted.settings)}")
    return arch


def _without_foreign_training_state(path: PathLike, checkpoint: Dict[str, Any], source: str) -> Dict[str, Any]:
    """The checkpoint less its optimizer state, which another code base wrote for its own
    parameter order: a resumed run keeps the epoch and best score, and its momentum starts
    again, which a CheckpointWarning says when the file held momentum to lose."""
    optimizer = checkpoint.get("optimizer")
    if optimizer is None:
        return checkpoint
    if isinstance(optimizer, dict) and optimizer.get("state"):
        warnings.warn(
            f"{path}: the {source} file's optimizer state is in that code's parameter order, so it is left out "
            "(a resumed run's momentum starts again)",
            CheckpointWarning,
            stacklevel=3,
        )
    return {key: value for key, value in checkpoint.items() if key != "optimizer"}


def _load_partially(
    path: PathLike,
    checkpoint: Dict[str, Any],
    state_dict: StateDict,
    arch: str,
    k_size: Any,
    num_classes: Optional[int],
) -> Tuple[nn.Module, Dict[str, Any]]:
    kwargs: Dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if k_size is not None:
        kwargs["k_size"] = k_size
    model = models.create_model(arch, **kwargs)
    own = model.state_dict()
    fitting = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    warnings.warn(
        f"{path} does not fit {arch}: loaded {len(fitting)} of its {len(own)} tensors, the rest stay as initialised",
        CheckpointWarning,
        stacklevel=3,
    )
    return model, _info(arch, kwargs, checkpoint)


def _info(arch: str, kwargs: Dict[str, Any], checkpoint: Dict[str, Any], source: Optional[str] = None) -> Dict[str, Any]:
    best = checkpoint.get("best_prec1")
    return {
        "arch": arch,
        "kwargs": kwargs,
        "epoch": checkpoint.get("epoch"),
        "best_prec1": float(best) if best is not None else None,
        "checkpoint": checkpoint,
        "source": source,
    }


def _check_kernel_sizes(path: PathLike, arch: str, k_size: Any, state_dict: StateDict, spec: Any) -> None:
    """One line naming the first layer where an explicit ``k_size`` disagrees with the file."""
    try:
        wanted = layout.model_kernel_sizes(arch, k_size)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"--ksize for {arch}: {error}") from None
    held = layout.checkpoint_kernel_sizes(arch, state_dict)
    names = layout.kernel_layer_names(arch)
    per_stage = spec is not None and len(spec) < len(names)
    for name, want, have in zip(names, wanted, held):
        if want != have:
            where = layout.stage_of(name) if per_stage else name
            raise CheckpointError(
                f"{path}: the checkpoint has k={have} in {where} where --ksize gives k={want}; "
                f"use --ksize {format_kernel_sizes(spec)} or leave --ksize out"
            )

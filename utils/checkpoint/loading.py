"""Building the model a checkpoint holds.

The architecture, the per-layer ECA kernel sizes and the number of classes are read from the
weights' shapes, so a released file needs no flags; where the caller's explicit choice
contradicts the file, one line says what the file holds and what to pass.
"""

import warnings
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

import models

from .files import CheckpointError, CheckpointWarning, PathLike, StateDict, extract_state_dict, load_checkpoint_file, strip_prefixes

__all__ = [
    "infer_arch",
    "format_kernel_sizes",
    "infer_model_kwargs",
    "load_model",
]


def _is_kernel_layer(module: nn.Module) -> bool:
    """ECA-like layers: a ``k_size`` and a Conv1d ``conv`` whose last weight dimension is k."""
    return isinstance(getattr(module, "k_size", None), int) and isinstance(getattr(module, "conv", None), nn.Conv1d)


def _classifier_name(model: nn.Module) -> str:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]


LAYOUT_VARIANTS: Tuple[Tuple[Tuple[str, Any], ...], ...] = ((("bias", True),), (("bias", True), ("spatial_batch_norm", True)))
"""Constructor settings that change a model's keys, tried when its default layout does not fit:
SENet's own biased SE layers (``se_resnet50(bias=True)``) and the official CBAM code's layer."""


@lru_cache(maxsize=None)
def _layout(arch: str, variant: Tuple[Tuple[str, Any], ...] = ()) -> Tuple[Dict[str, Tuple[int, ...]], Tuple[str, ...], str]:
    """(key -> shape with k and class dimensions blanked, kernel-layer names, classifier name).

    Built on the meta device: no memory, no initialisation cost, whatever the depth.
    """
    with torch.device("meta"):
        model = models.create_model(arch, **dict(variant))
    kernel_layers = tuple(name for name, module in model.named_modules() if _is_kernel_layer(module))
    classifier = _classifier_name(model)
    masked = {f"{name}.conv.weight" for name in kernel_layers}
    shapes = {}
    for key, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if key in masked:
            shape = shape[:-1] + (-1,)
        elif key in (f"{classifier}.weight", f"{classifier}.bias"):
            shape = (-1,) + shape[1:]
        shapes[key] = shape
    return shapes, kernel_layers, classifier


def _fits_layout(shapes: Dict[str, Tuple[int, ...]], state_dict: StateDict) -> bool:
    if shapes.keys() != state_dict.keys():
        return False
    return all(
        len(expected) == state_dict[key].dim()
        and all(e == -1 or e == s for e, s in zip(expected, state_dict[key].shape))
        for key, expected in shapes.items()
    )


def _fitting_variant(arch: str, state_dict: StateDict) -> Optional[Tuple[Tuple[str, Any], ...]]:
    """The constructor settings (``()`` for the defaults) under which ``arch`` holds exactly these
    weights, or None. Variants are built only when the weights hold more keys than the default."""
    default = _layout(arch)[0]
    if _fits_layout(default, state_dict):
        return ()
    if not default.keys() < state_dict.keys():
        return None
    for variant in LAYOUT_VARIANTS:
        try:
            shapes = _layout(arch, variant)[0]
        except (TypeError, ValueError):  # the model takes no such setting
            continue
        if _fits_layout(shapes, state_dict):
            return variant
    return None


def _fits(arch: str, state_dict: StateDict) -> bool:
    return _fitting_variant(arch, state_dict) is not None


def infer_arch(state_dict: StateDict, hint: Optional[str] = None) -> str:
    """The registered model whose layout (keys, block types, depths, widths) the weights have.

    ``hint`` (e.g. the checkpoint's own ``arch`` string) is tried first and wins a tie.
    """
    state_dict = strip_prefixes(state_dict)
    if hint in models.model_names and _fits(hint, state_dict):
        return hint
    for arch in models.model_names:
        if _fits(arch, state_dict):
            return arch
    raise CheckpointError(
        f"the checkpoint's weights ({len(state_dict)} tensors, first {next(iter(state_dict), 'none')!r}) "
        f"match none of the known models: {', '.join(models.model_names)}"
    )


def _checkpoint_kernel_sizes(arch: str, state_dict: StateDict) -> List[int]:
    return [state_dict[f"{name}.conv.weight"].shape[-1] for name in _layout(arch)[1]]


def _model_kernel_sizes(arch: str, k_size: Any) -> List[int]:
    with torch.device("meta"):
        model = models.create_model(arch, k_size=k_size)
    return [module.k_size for module in model.modules() if _is_kernel_layer(module)]


def _stage(layer_name: str) -> str:
    """The top-level module a layer sits in (``layer2`` for ``layer2.3.eca``)."""
    return layer_name.split(".", 1)[0]


def _kernel_size_spec(arch: str, layer_names: Sequence[str], sizes: List[int]) -> Optional[List[int]]:
    """The constructor's ``k_size`` that rebuilds exactly these per-layer sizes, if one exists.

    Tried in turn: one k per top-level stage (ECA-ResNets), then one k per layer
    (ECA-MobileNetV2); each candidate is checked by building the model on the meta device.
    """
    stages: Dict[str, List[int]] = {}
    for name, size in zip(layer_names, sizes):
        stages.setdefault(_stage(name), []).append(size)
    candidates = []
    if all(len(set(stage_sizes)) == 1 for stage_sizes in stages.values()):
        candidates.append([stage_sizes[0] for stage_sizes in stages.values()])
    candidates.append(list(sizes))
    for candidate in candidates:
        try:
            if _model_kernel_sizes(arch, candidate) == sizes:
                return candidate
        except (TypeError, ValueError):
            continue
    return None


def format_kernel_sizes(sizes: Sequence[int]) -> str:
    """As ``--ksize`` takes them: ``3557``, or comma-separated when some k has two digits."""
    return "".join(map(str, sizes)) if all(k < 10 for k in sizes) else ",".join(map(str, sizes))


def infer_model_kwargs(arch: str, state_dict: StateDict) -> Dict[str, Any]:
    """The constructor arguments (``num_classes``; ``k_size`` for ECA models; ``bias=True`` and the
    like for a :data:`LAYOUT_VARIANTS` layout) that make ``models.create_model(arch, **kwargs)``
    hold exactly these weights."""
    state_dict = strip_prefixes(state_dict)
    if not _fits(arch, state_dict):
        raise CheckpointError(f"the checkpoint's weights are not {arch}'s; they are {infer_arch(state_dict)}'s")
    variant = _fitting_variant(arch, state_dict)
    _, layer_names, classifier = _layout(arch, variant)
    kwargs: Dict[str, Any] = {"num_classes": state_dict[f"{classifier}.weight"].shape[0], **dict(variant)}
    if layer_names:
        sizes = _checkpoint_kernel_sizes(arch, state_dict)
        spec = _kernel_size_spec(arch, layer_names, sizes)
        if spec is None:
            raise CheckpointError(
                f"the checkpoint's ECA kernel sizes {format_kernel_sizes(sizes)} cannot be built by {arch} "
                "(its k_size is one size per stage)"
            )
        kwargs["k_size"] = spec
    return kwargs


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

    ``arch``, ``k_size`` and ``num_classes`` may be left out: they are read from the weights.
    Given explicitly, they must agree with the weights (a CheckpointError says what the file
    holds and what to pass), except ``num_classes``: a different count leaves the classifier
    freshly initialised, for fine-tuning. A wrong ``arch`` string inside the file is ignored
    with a CheckpointWarning. ``strict=False`` instead builds ``arch`` as asked and loads the
    tensors whose names and shapes fit, warning how many did not. ``features_only`` returns
    the backbone (``models.FeatureListNet``, ``out_indices`` as in ``models.create_model``)
    and says in a CheckpointWarning that the classifier is left out.

    ``info`` holds ``arch``, the constructor ``kwargs``, the file's ``epoch`` and
    ``best_prec1`` (a float or None), and the loaded ``checkpoint`` dict itself, so a caller
    can go on to restore an optimizer without reading the file twice.
    """
    checkpoint = load_checkpoint_file(path)
    state_dict = extract_state_dict(checkpoint)
    file_arch = checkpoint.get("arch") if isinstance(checkpoint.get("arch"), str) else None
    if arch is not None and arch not in models.model_names:
        raise CheckpointError(f"unknown model {arch!r}; choose one of: {', '.join(models.model_names)}")
    if arch is not None and not _fits(arch, state_dict):
        if strict:
            held = infer_arch(state_dict, hint=file_arch)
            raise CheckpointError(f"{path} holds {held} weights, not {arch}; use -a {held} or leave -a out")
        return _load_partially(path, checkpoint, state_dict, arch, k_size, num_classes)
    if arch is None:
        arch = infer_arch(state_dict, hint=file_arch)
    if file_arch is not None and file_arch != arch:
        warnings.warn(
            f"{path} says arch {file_arch!r} but its weights are {arch}'s; loading them as {arch}",
            CheckpointWarning,
            stacklevel=2,
        )
    kwargs = infer_model_kwargs(arch, state_dict)
    if k_size is not None:
        _check_kernel_sizes(path, arch, k_size, state_dict, kwargs.get("k_size"))
    classifier = _layout(arch)[2]
    if num_classes is not None and num_classes != kwargs["num_classes"]:
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
    return model, _info(arch, kwargs, checkpoint)


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


def _info(arch: str, kwargs: Dict[str, Any], checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    best = checkpoint.get("best_prec1")
    return {
        "arch": arch,
        "kwargs": kwargs,
        "epoch": checkpoint.get("epoch"),
        "best_prec1": float(best) if best is not None else None,
        "checkpoint": checkpoint,
    }


def _check_kernel_sizes(path: PathLike, arch: str, k_size: Any, state_dict: StateDict, spec: Any) -> None:
    """One line naming the first layer where an explicit ``k_size`` disagrees with the file."""
    try:
        wanted = _model_kernel_sizes(arch, k_size)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"--ksize for {arch}: {error}") from None
    held = _checkpoint_kernel_sizes(arch, state_dict)
    names = _layout(arch)[1]
    per_stage = spec is not None and len(spec) < len(names)
    for name, want, have in zip(names, wanted, held):
        if want != have:
            where = _stage(name) if per_stage else name
            raise CheckpointError(
                f"{path}: the checkpoint has k={have} in {where} where --ksize gives k={want}; "
                f"use --ksize {format_kernel_sizes(spec)} or leave --ksize out"
            )

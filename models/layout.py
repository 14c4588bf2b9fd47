"""What a state_dict says about the model it came from: the registered architecture, and the
constructor arguments that rebuild it (classes, each kernel-size layer's k, the settings that
change an attention layer's keys).

A registered model's layout is read off the model itself, built on the meta device (no memory,
no initialisation): its keys and shapes, with the dimensions a checkpoint chooses left open (the
classifier's classes; the k of each layer that says where it keeps one, see
``ChannelAttention.kernel_size_parameter``), and the settings its attention layers declare in
``ChannelAttention.layout_variants``. Nothing here names a model or an attention: a model is
recognised once it is registered, with whatever attention it holds.

A checkpoint written by other code (another project's key names) becomes this project's keys
through an adapter registered beside the model it converts to, :func:`register_state_dict_adapter`;
the inference below then reads it like any other.
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from torch import nn

from .attention import ChannelAttention
from .kernel_size import KernelSizeSpec, format_kernel_sizes
from .registry import create_model, list_models

__all__ = [
    "LayoutError",
    "StateDictAdapter",
    "register_state_dict_adapter",
    "adapt_state_dict",
    "fits",
    "fits_backbone",
    "backbone_keys",
    "infer_arch",
    "infer_model_kwargs",
    "classifier_name",
    "kernel_layer_names",
    "kernel_parameter_keys",
    "checkpoint_kernel_sizes",
    "model_kernel_sizes",
    "stage_of",
]

StateDict = Mapping[str, torch.Tensor]
Settings = Tuple[Tuple[str, Any], ...]
"""Constructor keyword arguments as a hashable, ordered tuple of (name, value) pairs."""

StateDictAdapter = Callable[[StateDict], Optional[StateDict]]
"""A foreign layout's converter: the state_dict in this project's keys, or None when it is not that layout."""


class LayoutError(ValueError):
    """A state_dict fits a model's keys but no setting its constructor can build; ``str()`` is one line."""


_adapters: List[StateDictAdapter] = []


def register_state_dict_adapter(adapter: StateDictAdapter) -> StateDictAdapter:
    """Decorator: convert checkpoints of a foreign layout (timm's ``checkpoint_filter_fn``), registered
    beside the model they convert to. An adapter must return None for every state_dict that is
    not its layout, since each is asked in turn."""
    _adapters.append(adapter)
    return adapter


def adapt_state_dict(state_dict: StateDict) -> StateDict:
    """``state_dict`` in this project's keys: the first registered adapter's conversion, or itself."""
    for adapter in _adapters:
        converted = adapter(state_dict)
        if converted is not None:
            return converted
    return state_dict


@dataclass(frozen=True)
class _Layout:
    shapes: Dict[str, Tuple[int, ...]]
    """Key -> shape, -1 where a checkpoint chooses (the classifier's classes, a kernel size k)."""
    kernel_layers: Tuple[Tuple[str, str], ...]
    """(layer name, key of the parameter whose last dimension is its k), in model order."""
    classifier: str
    variants: Tuple[Settings, ...]
    """The settings other than the defaults that the model's attention layers declare."""


def _classifier(model: nn.Module) -> str:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]


@lru_cache(maxsize=None)
def _layout(arch: str, settings: Settings = ()) -> _Layout:
    with torch.device("meta"):
        model = create_model(arch, **dict(settings))
    attention = [(name, module) for name, module in model.named_modules() if isinstance(module, ChannelAttention)]
    kernel_layers = tuple(
        (name, f"{name}.{layer.kernel_size_parameter}") for name, layer in attention if layer.kernel_size_parameter is not None
    )
    variants = tuple(dict.fromkeys(tuple(variant.items()) for _, layer in attention for variant in layer.layout_variants))
    classifier = _classifier(model)
    open_k = {key for _, key in kernel_layers}
    shapes = {}
    for key, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if key in open_k:
            shape = shape[:-1] + (-1,)
        elif key in (f"{classifier}.weight", f"{classifier}.bias"):
            shape = (-1,) + shape[1:]
        shapes[key] = shape
    return _Layout(shapes, kernel_layers, classifier, variants)


def _fits_layout(shapes: Dict[str, Tuple[int, ...]], state_dict: StateDict) -> bool:
    if shapes.keys() != state_dict.keys():
        return False
    return all(
        len(expected) == state_dict[key].dim() and all(e == -1 or e == s for e, s in zip(expected, state_dict[key].shape))
        for key, expected in shapes.items()
    )


def _fitting_settings(arch: str, state_dict: StateDict) -> Optional[Settings]:
    """The settings (``()`` for the defaults) under which ``arch`` holds exactly these weights,
    or None. The declared variants are built only when the weights hold more keys than the default."""
    default = _layout(arch)
    if _fits_layout(default.shapes, state_dict):
        return ()
    if not default.shapes.keys() < state_dict.keys():
        return None
    return next((variant for variant in default.variants if _fits_layout(_layout(arch, variant).shapes, state_dict)), None)


def fits(arch: str, state_dict: StateDict) -> bool:
    """Whether the registered model ``arch`` holds exactly these keys, in these shapes, under some setting."""
    return _fitting_settings(arch, state_dict) is not None


def _backbone_shapes(arch: str) -> Dict[str, Tuple[int, ...]]:
    classifier = _layout(arch).classifier + "."
    return {key: shape for key, shape in _layout(arch).shapes.items() if not key.startswith(classifier)}


def fits_backbone(arch: str, state_dict: StateDict) -> bool:
    """Whether the weights are exactly ``arch``'s, with its default settings, less its classifier
    (a detector's body: torchvision's IntermediateLayerGetter leaves the head out)."""
    return _fits_layout(_backbone_shapes(arch), state_dict)


def backbone_keys(arch: str) -> Set[str]:
    """The keys of ``arch`` less its classifier's."""
    return set(_backbone_shapes(arch))


def infer_arch(state_dict: StateDict, hint: Optional[str] = None) -> Optional[str]:
    """The registered model whose layout (keys, block types, depths, widths) the weights have, or
    None. ``hint`` (e.g. the checkpoint's own ``arch`` string) is tried first and wins a tie."""
    names = list_models()
    if hint in names and fits(hint, state_dict):
        return hint
    return next((arch for arch in names if fits(arch, state_dict)), None)


def classifier_name(arch: str) -> str:
    """The module whose outputs are the classes (``fc``, ``classifier.1``)."""
    return _layout(arch).classifier


def kernel_layer_names(arch: str) -> List[str]:
    """The layers with a kernel size k, in model order (``layer1.0.eca``, ...)."""
    return [name for name, _ in _layout(arch).kernel_layers]


def kernel_parameter_keys(arch: str) -> List[str]:
    """The keys whose last dimension is a layer's k, in the order of :func:`kernel_layer_names`."""
    return [key for _, key in _layout(arch).kernel_layers]


def checkpoint_kernel_sizes(arch: str, state_dict: StateDict) -> List[int]:
    """Each kernel-size layer's k as the weights have it (they must fit ``arch``)."""
    return [state_dict[key].shape[-1] for key in kernel_parameter_keys(arch)]


def model_kernel_sizes(arch: str, k_size: KernelSizeSpec) -> List[int]:
    """Each kernel-size layer's k in ``arch`` built with ``k_size``; the constructor's
    ValueError or TypeError for a k it does not take."""
    with torch.device("meta"):
        model = create_model(arch, k_size=k_size)
    return [layer.channel_kernel_size() for layer in model.modules() if isinstance(layer, ChannelAttention) and layer.kernel_size_parameter]


def stage_of(layer_name: str) -> str:
    """The top-level module a layer sits in (``layer2`` for ``layer2.3.eca``)."""
    return layer_name.split(".", 1)[0]


def _kernel_size_spec(arch: str, layer_names: Sequence[str], sizes: List[int]) -> Optional[List[int]]:
    """The constructor's ``k_size`` that rebuilds exactly these per-layer sizes, if one exists.

    Tried in turn: one k per top-level stage (ECA-ResNets), then one k per layer
    (ECA-MobileNetV2); each candidate is checked by building the model on the meta device.
    """
    stages: Dict[str, List[int]] = {}
    for name, size in zip(layer_names, sizes):
        stages.setdefault(stage_of(name), []).append(size)
    candidates = []
    if all(len(set(stage_sizes)) == 1 for stage_sizes in stages.values()):
        candidates.append([stage_sizes[0] for stage_sizes in stages.values()])
    candidates.append(list(sizes))
    for candidate in candidates:
        try:
            if model_kernel_sizes(arch, candidate) == sizes:
                return candidate
        except (TypeError, ValueError):  # not a form this constructor takes
            continue
    return None


def infer_model_kwargs(arch: str, state_dict: StateDict) -> Dict[str, Any]:
    """The constructor arguments (``num_classes``; ``k_size`` for a model with kernel-size layers;
    ``bias=True`` and the like for a declared layout variant) that make
    ``models.create_model(arch, **kwargs)`` hold exactly these weights, which must fit ``arch``.
    A LayoutError when no ``k_size`` builds the weights' kernel sizes."""
    settings = _fitting_settings(arch, state_dict)
    if settings is None:
        raise ValueError(f"the weights do not fit {arch}")
    layout = _layout(arch, settings)
    kwargs: Dict[str, Any] = {"num_classes": state_dict[f"{layout.classifier}.weight"].shape[0], **dict(settings)}
    if layout.kernel_layers:
        sizes = checkpoint_kernel_sizes(arch, state_dict)
        spec = _kernel_size_spec(arch, kernel_layer_names(arch), sizes)
        if spec is None:
            raise LayoutError(
                f"the checkpoint's ECA kernel sizes {format_kernel_sizes(sizes)} cannot be built by {arch} "
                "(its k_size is one size per stage)"
            )
        kwargs["k_size"] = spec
    return kwargs

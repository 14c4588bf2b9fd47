"""What a state_dict says about the model it came from: the registered architecture, and the
constructor arguments that rebuild it (classes, each kernel-size layer's k, the settings that
change an attention layer's keys).

A registered model's layout is read off the model itself, built on the meta device (no memory,
no initialisation): its keys and shapes, with the dimensions a checkpoint chooses left open (the
classifier's classes; the k of each layer that says where it keeps one, see
``ChannelAttention.kernel_size_parameter``), the settings its attention layers declare in
``ChannelAttention.layout_variants``, and those their weights' shapes show
(``ChannelAttention.settings_from_shapes``: GCNet's reduction ratio). Nothing here names a
model or an attention: a model is recognised once it is registered, with whatever attention it holds.

A checkpoint written by other code (another project's key names) becomes this project's keys
through an adapter registered beside the model it converts to, :func:`register_state_dict_adapter`;
the inference below then reads it like any other. How to add one:

- write a function of the state_dict (keys as stored, wrapper prefixes such as ``module.``
  removed) that recognises its layout by key patterns and shapes, never by a file name or an
  ``arch`` string, and returns None for every other layout (each adapter is asked in turn);
- for its layout, return an :class:`AdaptedStateDict`: the weights renamed, reshaped and
  reordered into the keys of the model here that computes the same function, the layout's
  name for people (``source``: "official CBAM", "Cadene SENet"), and the constructor
  ``settings`` the layout implies that the keys cannot show (the SENet authors' stride on the
  first 1x1 convolution) or that the shapes show but no declared layout variant covers (a
  ratio); a plain state_dict is accepted too, as keys only;
- decorate it with :func:`register_state_dict_adapter` in the module that defines (or names)
  that model, which ``models/__init__.py`` imports, so it is registered wherever models are.

A network whose settings change what it computes but none of its keys says so in an
``unkeyed_settings`` attribute (``models.ResNet``'s): such a model is inferred for a checkpoint
only when an adapter implies exactly those settings, or when the file names it (its ``arch``).
"""

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Type, Union

import torch
from torch import nn

from .attention import ChannelAttention
from .kernel_size import KernelSizeSpec, format_kernel_sizes
from .registry import create_model, list_models

__all__ = [
    "LayoutError",
    "AdaptedStateDict",
    "StateDictAdapter",
    "register_state_dict_adapter",
    "adapt_state_dict",
    "with_batch_norm_counters",
    "LayoutDifference",
    "closest_model",
    "fits",
    "fits_backbone",
    "backbone_settings",
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


class LayoutError(ValueError):
    """A state_dict fits a model's keys but no setting its constructor can build; ``str()`` is one line."""


@dataclass(frozen=True)
class AdaptedStateDict:
    """A checkpoint as a model here holds it: what :func:`adapt_state_dict` returns."""

    state_dict: StateDict
    """The weights in this project's keys and shapes."""
    source: Optional[str] = None
    """The layout the file was written in, as people name it ("official CBAM", "timm"); None:
    this project's own keys (its checkpoints, the original ECA-Net's, torchvision's)."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Constructor settings the layout implies beyond its keys: the model is built with them."""


StateDictAdapter = Callable[[StateDict], Optional[Union[AdaptedStateDict, StateDict]]]
"""A foreign layout's converter: the checkpoint in this project's terms, or None when it is not that layout."""


_adapters: List[StateDictAdapter] = []


def register_state_dict_adapter(adapter: StateDictAdapter) -> StateDictAdapter:
    """Decorator: convert checkpoints of a foreign layout (timm's ``checkpoint_filter_fn``), registered
    beside the model they convert to (see the module docstring). An adapter must return None for
    every state_dict that is not its layout, since each is asked in turn."""
    _adapters.append(adapter)
    return adapter


def adapt_state_dict(state_dict: StateDict) -> AdaptedStateDict:
    """``state_dict`` in this project's terms: the first registered adapter's conversion, or itself
    (``source`` None). An adapter that returns a plain state_dict is named by its function."""
    for adapter in _adapters:
        converted = adapter(state_dict)
        if isinstance(converted, AdaptedStateDict):
            return converted
        if converted is not None:
            return AdaptedStateDict(converted, source=adapter.__name__)
    return AdaptedStateDict(state_dict)


def with_batch_norm_counters(state_dict: StateDict) -> StateDict:
    """The weights with a zero ``num_batches_tracked`` beside every BatchNorm that lacks one, as
    ``BatchNorm`` itself fills them in when it loads a file written before PyTorch 0.4.1."""
    completed = {}
    for key, value in state_dict.items():
        completed[key] = value
        if key.endswith(".running_var"):
            counter = key[: -len("running_var")] + "num_batches_tracked"
            if counter not in state_dict:
                completed[counter] = torch.tensor(0)
    return completed


@dataclass(frozen=True)
class _Layout:
    shapes: Dict[str, Tuple[int, ...]]
    """Key -> shape, -1 where a checkpoint chooses (the classifier's classes, a kernel size k)."""
    kernel_layers: Tuple[Tuple[str, str], ...]
    """(layer name, key of the parameter whose last dimension is its k), in model order."""
    classifier: str
    variants: Tuple[Settings, ...]
    """The settings other than the defaults that the model's attention layers declare."""
    unkeyed: Settings
    """The model's ``unkeyed_settings``: what it computes differently from the same keys."""
    attention_layers: Tuple[Tuple[str, Type[ChannelAttention]], ...]
    """(layer name, its class) of every attention layer, in model order."""


def _classifier(model: nn.Module) -> str:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]


@lru_cache(maxsize=None)
def _layout(arch: str, settings: Settings = ()) -> Optional[_Layout]:
    """``arch`` built with ``settings`` on the meta device, as a layout; None when its constructor
    does not take these settings."""
    try:
        with torch.device("meta"):
            model = create_model(arch, **dict(settings))
    except (TypeError, ValueError):
        if not settings:
            raise
        return None
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
    unkeyed = tuple(getattr(model, "unkeyed_settings", {}).items())
    attention_layers = tuple((name, type(layer)) for name, layer in attention)
    return _Layout(shapes, kernel_layers, classifier, variants, unkeyed, attention_layers)


def _fits_shape(expected: Tuple[int, ...], tensor: torch.Tensor) -> bool:
    return len(expected) == tensor.dim() and all(e == -1 or e == s for e, s in zip(expected, tensor.shape))


def _fits_layout(shapes: Dict[str, Tuple[int, ...]], state_dict: StateDict) -> bool:
    if shapes.keys() != state_dict.keys():
        return False
    return all(_fits_shape(expected, state_dict[key]) for key, expected in shapes.items())


def _held_shapes(layout: _Layout, backbone: bool) -> Dict[str, Tuple[int, ...]]:
    """The layout's shapes, less the classifier's keys for a ``backbone``."""
    if not backbone:
        return layout.shapes
    classifier = layout.classifier + "."
    return {key: shape for key, shape in layout.shapes.items() if not key.startswith(classifier)}


def _shape_settings(layout: _Layout, state_dict: StateDict) -> Settings:
    """The settings the weights of the layout's attention layers show by their shapes
    (``ChannelAttention.settings_from_shapes``); ``()`` when none do, or when layers disagree."""
    layer_names = {name for name, _ in layout.attention_layers}
    if not layer_names:
        return ()
    shapes: Dict[str, Dict[str, Tuple[int, ...]]] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        for end in range(1, len(parts)):
            name = ".".join(parts[:end])
            if name in layer_names:
                shapes.setdefault(name, {})[".".join(parts[end:])] = tuple(value.shape)
                break
    found: Dict[str, Any] = {}
    for name, layer_type in layout.attention_layers:
        for setting, value in layer_type.settings_from_shapes(shapes.get(name, {})).items():
            if found.setdefault(setting, value) != value:
                return ()
    return tuple(found.items())


def _as_settings(settings: Optional[Mapping[str, Any]]) -> Settings:
    return tuple((settings or {}).items())


def _merged(settings: Settings, variant: Settings) -> Settings:
    return tuple({**dict(settings), **dict(variant)}.items())


def _fitting_settings(arch: str, state_dict: StateDict, implied: Settings = (), backbone: bool = False) -> Optional[Settings]:
    """The settings (``implied``, those the attention layers' shapes show, and a declared variant
    if the weights need one) under which ``arch`` holds exactly these weights (less its
    classifier for a ``backbone``), or None. The variants are built only when the weights hold
    more keys than the model without them."""
    base = _layout(arch, implied)
    if base is None:
        return None
    if _fits_layout(_held_shapes(base, backbone), state_dict):
        return implied
    shown = _shape_settings(base, state_dict)
    if shown:
        implied = _merged(shown, implied)
        base = _layout(arch, implied)
        if base is None:
            return None
        if _fits_layout(_held_shapes(base, backbone), state_dict):
            return implied
    if not _held_shapes(base, backbone).keys() < state_dict.keys():
        return None
    for variant in base.variants:
        settings = _merged(implied, variant)
        layout = _layout(arch, settings)
        if layout is not None and _fits_layout(_held_shapes(layout, backbone), state_dict):
            return settings
    return None


def fits(arch: str, state_dict: StateDict, settings: Optional[Mapping[str, Any]] = None) -> bool:
    """Whether the registered model ``arch``, built with ``settings`` (what an adapter says the
    layout implies), holds exactly these keys, in these shapes, under some declared variant."""
    return _fitting_settings(arch, state_dict, _as_settings(settings)) is not None


def backbone_settings(arch: str, state_dict: StateDict, settings: Optional[Mapping[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The constructor settings beyond ``settings`` (an adapter's) under which the weights are
    exactly ``arch``'s less its classifier (a detector's body: torchvision's
    IntermediateLayerGetter leaves the head out; a backbone-only file), ``{}`` for its defaults,
    or None when they are not. ``k_size`` is not among them: a backbone keeps its k in its weights."""
    implied = _as_settings(settings)
    fitting = _fitting_settings(arch, state_dict, implied, backbone=True)
    if fitting is None:
        return None
    return {name: value for name, value in fitting if (name, value) not in implied}


def fits_backbone(arch: str, state_dict: StateDict) -> bool:
    """Whether the weights are exactly ``arch``'s less its classifier, under some setting (:func:`backbone_settings`)."""
    return backbone_settings(arch, state_dict) is not None


def backbone_keys(arch: str) -> Set[str]:
    """The keys of ``arch`` less its classifier's."""
    return set(_held_shapes(_layout(arch), backbone=True))


def infer_arch(
    state_dict: StateDict, hint: Optional[str] = None, settings: Optional[Mapping[str, Any]] = None, backbone: bool = False
) -> Optional[str]:
    """The registered model whose layout (keys, block types, depths, widths) the weights have, or
    None; with ``backbone``, the one whose layout less its classifier they have (a file of
    features only, such as a detector's backbone). ``hint`` (e.g. the checkpoint's own ``arch``
    string) is tried first and wins a tie.

    ``settings`` are what an adapter says the layout implies. Otherwise a model only qualifies if
    its ``unkeyed_settings`` are among them (none for this project's own keys), and one whose
    defaults are those settings wins over one that needs them passed (``se_resnet50_caffe``
    over ``se_resnet50`` for the SENet authors' file).
    """
    implied = _as_settings(settings)
    names = list_models()
    if hint in names and _fitting_settings(hint, state_dict, implied, backbone) is not None:
        return hint
    fitting = [
        arch
        for arch in names
        if _fitting_settings(arch, state_dict, implied, backbone) is not None and set(_layout(arch, implied).unkeyed) <= set(implied)
    ]
    own = [arch for arch in fitting if _layout(arch).unkeyed == _layout(arch, implied).unkeyed]
    return next(iter(own or fitting), None)


@dataclass(frozen=True)
class LayoutDifference:
    """How a state_dict differs from a registered model's keys and shapes."""

    arch: str
    missing: Tuple[str, ...]
    unexpected: Tuple[str, ...]
    reshaped: Tuple[Tuple[str, Tuple[int, ...], Tuple[int, ...]], ...]
    """(key, the weights' shape, the model's shape; -1 where any size fits)."""

    @property
    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.reshaped)

    def __str__(self) -> str:
        """One line: ``cbam_resnet50 (3 keys missing, first 'x'; 1 unexpected, first 'y'; 1 of another
        shape, first 'layer1.0.conv1.weight' (64, 64, 3, 3) where (64, 64, 1, 1))``."""
        parts = []
        if self.missing:
            parts.append(f"{_keys(len(self.missing))} missing, first {self.missing[0]!r}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected, first {self.unexpected[0]!r}")
        if self.reshaped:
            key, held, expected = self.reshaped[0]
            parts.append(f"{len(self.reshaped)} of another shape, first {key!r} {_shape(held)} where {_shape(expected)}")
        return f"{self.arch} ({'; '.join(parts)})"


def _keys(count: int) -> str:
    return f"{count} key" if count == 1 else f"{count} keys"


def _shape(shape: Tuple[int, ...]) -> str:
    return "(" + ", ".join("any" if size == -1 else str(size) for size in shape) + ("," if len(shape) == 1 else "") + ")"


def _difference(arch: str, layout: _Layout, state_dict: StateDict) -> LayoutDifference:
    return LayoutDifference(
        arch,
        tuple(key for key in layout.shapes if key not in state_dict),
        tuple(key for key in state_dict if key not in layout.shapes),
        tuple(
            (key, tuple(state_dict[key].shape), expected)
            for key, expected in layout.shapes.items()
            if key in state_dict and not _fits_shape(expected, state_dict[key])
        ),
    )


def closest_model(state_dict: StateDict, settings: Optional[Mapping[str, Any]] = None) -> LayoutDifference:
    """The registered model (with its declared variants) whose keys and shapes differ least from
    the weights', and how: for saying in one line why a checkpoint fits no model."""
    implied = _as_settings(settings)
    candidates = []
    for arch in list_models():
        base = _layout(arch, implied)
        if base is None:
            continue
        layouts = [base] + [_layout(arch, _merged(implied, variant)) for variant in base.variants]
        candidates += [_difference(arch, layout, state_dict) for layout in layouts if layout is not None]
    return min(candidates, key=lambda difference: difference.size)


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


def infer_model_kwargs(
    arch: str, state_dict: StateDict, settings: Optional[Mapping[str, Any]] = None, backbone: bool = False
) -> Dict[str, Any]:
    """The constructor arguments (``num_classes``; ``k_size`` for a model with kernel-size layers;
    ``bias=True`` and the like for a declared layout variant; ``reduction`` and the like that the
    attention layers' shapes show; the adapter's ``settings`` that ``arch`` does not have by
    default) that make ``models.create_model(arch, **kwargs)`` hold exactly these weights, which
    must fit ``arch`` (less its classifier with ``backbone``: then no ``num_classes``). A
    LayoutError when no ``k_size`` builds the weights' kernel sizes."""
    implied = _as_settings(settings)
    fitting = _fitting_settings(arch, state_dict, implied, backbone)
    if fitting is None:
        raise ValueError(f"the weights do not fit {arch}")
    layout = _layout(arch, fitting)
    own = set(_layout(arch).unkeyed)
    kwargs: Dict[str, Any] = {} if backbone else {"num_classes": state_dict[f"{layout.classifier}.weight"].shape[0]}
    kwargs.update((name, value) for name, value in fitting if (name, value) not in own)
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

"""What a network, a counter and the checkpoint loader ask of an attention layer: the interface
every layer here implements, and a layer written anywhere else can implement too."""

from typing import Any, Dict, Mapping, Optional, Tuple

from torch import nn

__all__ = ["ChannelAttention"]


class ChannelAttention(nn.Module):
    """An attention layer that rescales a feature map; ``forward(x)`` returns the rescaled map.

    Every network calls every layer this way (MobileNetV2's blocks, the ResNet blocks, also
    inside the detectors), except that a ResNet block hands a layer that ``fuses_residual``
    its whole ending. The class attributes below are what the rest of the project reads; a
    new layer sets those that differ from the defaults and is registered by name with
    ``models.attention.register_attention``.
    """

    __constants__ = ["fuses_residual"]

    block_attribute: str = "attention"
    """The name a residual block keeps the layer under, so that state_dict keys read as the
    checkpoints of its family do (``layer1.0.eca.conv.weight``, ``layer1.0.se.fc1.weight``)."""

    fuses_residual: bool = False
    """Whether the layer also computes a residual block's whole ending, ``relu(layer(x) + identity)``,
    when called as ``layer(x, identity, overwrite_identity, sample_scale=None)`` (ECA's in-place fast
    path, which may write over either input; ``sample_scale``, (N, 1, 1, 1), is stochastic depth's
    per-sample factor on the branch, ``relu(layer(x) * sample_scale + identity)``, and a scripted
    block always passes it). Blocks then call that form instead of the three steps. A
    TorchScript constant, so a scripted block compiles only the call its layer takes; both
    forms are module calls, so FLOP counters' hooks see them."""

    inplace: bool = False
    """Whether ``layer(x)`` may write its result over ``x``, as ``nn.ReLU(inplace=True)`` does. A
    network sets it on a layer whose input is a temporary that nothing else keeps (MobileNetV2's
    blocks, on the projection's BatchNorm output); a layer that does not compute in place
    ignores it (ECA does, and then saves nothing full-size for backward that the next layer
    does not save anyway)."""

    global_average_pooling: bool = True
    """Whether the layer starts from one mean per channel, GAP(x) (SE, ECA, CBAM and the Table 2
    variants; not GCNet's softmax-weighted context). The papers' counters counted that pooling
    as a module; the layers here pool with ``x.mean``, which no hook sees, so the counters
    add it for the layers that say so."""

    kernel_size_parameter: Optional[str] = None
    """For a layer with a kernel size k across channels (ECA, ECA-NS): the parameter whose last
    dimension is k (``"conv.weight"``), the only place a checkpoint writes k down."""

    layout_variants: Tuple[Dict[str, Any], ...] = ()
    """Constructor settings other than the defaults under which the layer holds other
    state_dict keys (SENet's biased SE: ``{"bias": True}``). Networks pass such settings on to
    every layer, so a checkpoint with those keys is built with them."""

    @classmethod
    def settings_from_shapes(cls, shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, Any]:
        """The constructor settings that one layer's weight shapes show, for a setting that changes
        shapes but no key (GCNet's reduction ratio): ``shapes`` maps the layer's keys (``conv.weight``,
        relative to the layer) to their shapes. The checkpoint loader builds a model whose weights
        do not fit its defaults with the settings its layers read here, so that a file says its
        own ratio. Networks pass such settings on to every layer, so all of a model's layers must
        read the same. A layer without such a setting returns none (the default)."""
        return {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Keep ``fuses_residual`` a TorchScript constant in a subclass that names its own
        ``__constants__``: a scripted block finds its attention layer by that constant."""
        super().__init_subclass__(**kwargs)
        if "fuses_residual" not in cls.__constants__:
            cls.__constants__ = [*cls.__constants__, "fuses_residual"]

    def channel_kernel_size(self) -> Optional[int]:
        """k, read from ``kernel_size_parameter``; None for a layer without one."""
        if self.kernel_size_parameter is None:
            return None
        return self.get_parameter(self.kernel_size_parameter).shape[-1]

"""Parameter and FLOP counts in the ECA-Net paper's convention, with today's thop beside them.

The paper's table came from thop as it was in mid-2019, profiling one 1x3x224x224 image and
printing binary units (M = 1024^2, G = 1024^3). Today's thop counts multiply-accumulates with
other per-module rules (ReLU nothing, Linear in_features per output, functional pooling
unseen), so it cannot give the paper's numbers. The 2019 rules live here as thop
``custom_ops``: the same profiler walks the model and only the per-module arithmetic differs,
down to 2019's habit of keeping only the last call of a module called several times.
Module types without a 2019 rule count whatever today's thop counts for them. Attention
layers are found as ``models.ChannelAttention`` modules, wherever they were written, and
counted by what that interface says of them.
"""

import copy
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Type

import torch
from thop import profile
from torch import nn

from models import ChannelAttention
from models.resnet import BasicBlock, Bottleneck

__all__ = [
    "PAPER_RULES",
    "paper_rules",
    "Complexity",
    "measure",
    "count_parameters",
    "attention_share",
    "paper_flops",
    "thop_macs",
    "binary_units",
    "si_units",
    "printed_like",
    "agreement",
]

ThopRule = Callable[[nn.Module, Tuple[torch.Tensor, ...], torch.Tensor], None]


def _set(module: nn.Module, ops: int) -> None:
    """Overwrite, not add: 2019 thop's hooks assigned ``m.total_ops`` on every call, so a
    module called several times counted only its last call (see ``_count_residual_block``)."""
    module.total_ops.fill_(ops)


def _counted(module: nn.Module) -> int:
    """What thop's final walk takes for ``module``: its own count, and below it unless its rule
    already summed its submodules (the rules of ``_AGGREGATES``)."""
    own = round(module.total_ops.item())
    if isinstance(module, _AGGREGATES):
        return own
    return own + sum(_counted(child) for child in module.children())


def _conv_ops(in_channels_per_group: int, kernel_elements: int, has_bias: bool, output_elements: int) -> int:
    return in_channels_per_group * output_elements * (kernel_elements + int(has_bias))


def _avgpool_ops(kernel_elements: int, output_elements: int) -> int:
    """kernel_elements additions and one division per output element."""
    return (kernel_elements + 1) * output_elements


def _count_conv(m: nn.modules.conv._ConvNd, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    kernel_elements = math.prod(m.kernel_size)
    _set(m, _conv_ops(m.in_channels // m.groups, kernel_elements, m.bias is not None, y.numel()))


def _count_batchnorm(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    """Subtract the mean, divide by the deviation, scale and shift: 4 per element."""
    _set(m, 4 * x[0].numel())


def _count_activation(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    _set(m, x[0].numel())


def _count_avgpool(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    kernel = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * (y.dim() - 2)
    _set(m, _avgpool_ops(math.prod(kernel), y.numel()))


def _count_adaptive_avgpool(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    kernel = math.prod(size_in // size_out for size_in, size_out in zip(x[0].shape[2:], y.shape[2:]))
    _set(m, _avgpool_ops(kernel, y.numel()))


def _count_linear(m: nn.Linear, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    """in_features multiplications and in_features - 1 additions per output; the bias is free."""
    _set(m, (2 * m.in_features - 1) * y.numel())


def _count_nothing(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    _set(m, 0)


def _count_attention(m: ChannelAttention, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    """An attention layer as 2019 code built it: for one that starts from GAP(x)
    (``global_average_pooling``: SE, ECA, CBAM, ...) an AdaptiveAvgPool2d(1) module, then its layers.

    The layers here pool functionally (``x.mean``), which thop cannot see, so the rule sits
    on the whole layer and adds the pooling that the 2019 module counted to what the layer's
    own submodules (ECA's Conv1d, SE's Linear and ReLU) have just counted under these rules
    in this forward pass; thop then takes the layer as one module and does not descend.
    Sigmoid, the channel-wise multiply and GCNet's softmax pooling (functional in its code
    too) counted nothing in 2019 either.
    """
    features = x[0]
    pooling = _avgpool_ops(math.prod(features.shape[2:]), features.shape[0] * features.shape[1]) if m.global_average_pooling else 0
    _set(m, pooling + sum(_counted(child) for child in m.children()))


def _count_residual_block(m: nn.Module, x: Tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
    """A ResNet block: its layers' counts, with its one shared ReLU counted on the block's output.

    The block calls ``self.relu`` two or three times, and 2019 thop kept the last call only:
    the ReLU after the residual addition, one op per output element. ECA-Net50's 3.86G and
    ECA-Net152's 10.83G need that (adding up every call gives 3.87G and 10.84G). Where the
    ECA layer fuses that last ReLU into its own in-place call, the module's last call is an
    earlier one, so the rule counts the ReLU from the block's output rather than from its calls.
    """
    layers = sum(_counted(child) for child in m.children() if child is not m.relu)
    _set(m, layers + y.numel())


_AGGREGATES = (ChannelAttention, BasicBlock, Bottleneck)
"""Modules whose 2019 rule sums their submodules, so thop counts them whole."""

PAPER_RULES: Dict[Type[nn.Module], ThopRule] = {
    nn.Conv1d: _count_conv,
    nn.Conv2d: _count_conv,
    nn.Conv3d: _count_conv,
    nn.BatchNorm1d: _count_batchnorm,
    nn.BatchNorm2d: _count_batchnorm,
    nn.BatchNorm3d: _count_batchnorm,
    nn.ReLU: _count_activation,
    nn.ReLU6: _count_activation,
    nn.LeakyReLU: _count_activation,
    nn.AvgPool1d: _count_avgpool,
    nn.AvgPool2d: _count_avgpool,
    nn.AvgPool3d: _count_avgpool,
    nn.AdaptiveAvgPool1d: _count_adaptive_avgpool,
    nn.AdaptiveAvgPool2d: _count_adaptive_avgpool,
    nn.AdaptiveAvgPool3d: _count_adaptive_avgpool,
    nn.Linear: _count_linear,
    nn.MaxPool1d: _count_nothing,
    nn.MaxPool2d: _count_nothing,
    nn.MaxPool3d: _count_nothing,
    nn.Dropout: _count_nothing,
    nn.Sigmoid: _count_nothing,
    BasicBlock: _count_residual_block,
    Bottleneck: _count_residual_block,
}
"""thop custom_ops reproducing the counts of thop as of mid-2019, which the paper's table used;
:func:`paper_rules` adds the attention layers'."""


def paper_rules(model: nn.Module) -> Dict[Type[nn.Module], ThopRule]:
    """:data:`PAPER_RULES` and the attention rule for the type of every ChannelAttention in
    ``model`` (thop matches a module's exact type, so each layer class needs its own entry)."""
    attention_types = {type(module) for module in model.modules() if isinstance(module, ChannelAttention)}
    return {**PAPER_RULES, **{attention_type: _count_attention for attention_type in attention_types}}


@dataclass(frozen=True)
class Complexity:
    """One model's counts for one input size."""

    params: int
    attention_params: int
    attention_layers: Dict[str, int]
    paper_flops: int
    thop_macs: int


def count_parameters(model: nn.Module) -> int:
    """Exact parameter count; the paper's 24.37M is this divided by 1024^2."""
    return sum(p.numel() for p in model.parameters())


def attention_share(model: nn.Module) -> Tuple[int, Dict[str, int]]:
    """Parameters in the model's channel-attention layers, and how many layers of each type.

    This is what attention costs in weights on top of the plain network: 80 for ECA-ResNet-50
    against SE-ResNet-50's 2,530,992.
    """
    layers = [m for m in model.modules() if isinstance(m, ChannelAttention)]
    return sum(count_parameters(m) for m in layers), dict(Counter(type(m).__name__ for m in layers))


def _thop_ops(scratch: nn.Module, input_size: int, custom_ops: Dict[Type[nn.Module], ThopRule]) -> int:
    """thop's op count for one 3-channel image; thop switches to eval mode and no_grad itself.

    ``scratch`` must be a copy nobody keeps: thop leaves ``total_ops``/``total_params``
    buffers on every module it has no rule for (and its hooks everywhere if the forward
    pass fails), which would change the caller's state_dict.
    """
    image = torch.zeros(1, 3, input_size, input_size)
    # thop adds a root's own count to its children's; as a child, a bare layer counts as in a network.
    ops, _ = profile(nn.Sequential(scratch), inputs=(image,), custom_ops=custom_ops, verbose=False)
    return round(ops)


def paper_flops(model: nn.Module, input_size: int = 224) -> int:
    """FLOPs as the paper counted them (thop's mid-2019 rules), for one image."""
    return _thop_ops(copy.deepcopy(model), input_size, paper_rules(model))


def thop_macs(model: nn.Module, input_size: int = 224) -> int:
    """Multiply-accumulates as the installed thop counts them, for one image."""
    return _thop_ops(copy.deepcopy(model), input_size, {})


def measure(model: nn.Module, input_size: int = 224) -> Complexity:
    """Every count of one model for one input_size x input_size image; the model is left as it was."""
    attention_params, attention_layers = attention_share(model)
    scratch = copy.deepcopy(model)
    return Complexity(
        params=count_parameters(model),
        attention_params=attention_params,
        attention_layers=attention_layers,
        paper_flops=_thop_ops(scratch, input_size, paper_rules(scratch)),
        thop_macs=_thop_ops(scratch, input_size, {}),
    )


def _scaled(count: int, base: int) -> str:
    """Two decimals, at most four significant digits: the paper's 24.37M, 3.86G and 319.9M."""
    for exponent, suffix in ((3, "G"), (2, "M"), (1, "K")):
        if count >= base**exponent:
            value = count / base**exponent
            integer_digits = len(str(int(value)))
            return f"{value:.{max(0, min(2, 4 - integer_digits))}f}{suffix}"
    return str(count)


def binary_units(count: int) -> str:
    """The paper's convention: K = 1024, M = 1024^2, G = 1024^3."""
    return _scaled(count, 1024)


def si_units(count: int) -> str:
    """SI units, as today's thop and torchvision report: K = 10^3, M = 10^6, G = 10^9."""
    return _scaled(count, 1000)


def printed_like(count: int, printed: str, base: int = 1024) -> str:
    """``count`` in the unit and number of decimals of a number as a table printed it
    (``"26.77M"``, ``"319.4M"``, the poster's ``"11.148M"``), in ``base``-based units."""
    suffix = printed[-1]
    exponent = {"K": 1, "M": 2, "G": 3}.get(suffix)
    if exponent is None:
        raise ValueError(f"{printed!r} has no K, M or G unit")
    decimals = len(printed[:-1].partition(".")[2])
    return f"{count / base**exponent:.{decimals}f}{suffix}"


def agreement(count: int, printed: Optional[str]) -> str:
    """How a count agrees with a printed one: ``"="`` in the paper's 1024-based units,
    ``"= (SI)"`` only in SI units (a number copied from a peer's paper), ``"≠"``, ``"?"`` unknown."""
    if printed is None:
        return "?"
    if printed_like(count, printed) == printed:
        return "="
    if printed_like(count, printed, base=1000) == printed:
        return "= (SI)"
    return "≠"

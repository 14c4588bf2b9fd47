"""The ResNet of every ResNet model here, with any registered attention in its residual blocks.

The ResNet is torchvision's, with one addition: each residual block may carry an attention
layer (``models.attention``), applied after the block's last BatchNorm and before the
residual addition, where SE and ECA sit. The block keeps it under the layer's
``block_attribute``, so state_dict keys are the released checkpoints' for ECA
(``layer1.0.eca.conv.weight``) and torchvision's with no attention. ECA-ResNet-18..152 with
the released checkpoints' kernel sizes are ``eca_resnet18`` ... here, and so is every other
``<attention>_resnet<depth>``: one class, so a comparison is one name apart. Keyword arguments
beyond ``num_classes`` (and ``k_size``) go to every attention layer (``se_resnet50(bias=True)``).
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from .attention import ChannelAttention, attention_kind, create_attention
from .features import FeatureInfo, FeatureSpec
from .kernel_size import KernelSizeSpec, parse_kernel_sizes
from .registry import register_model

__all__ = [
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "DEFAULT_KERNEL_SIZES",
    "RESNET_LAYOUTS",
    "refuse_pretrained",
    "stage_kernel_sizes",
    "resnet",
    "resnet_model_name",
    "make_stem",
    "make_downsample",
]

DEFAULT_KERNEL_SIZES = {
    "eca_resnet18": "3577",
    "eca_resnet34": "3357",
    "eca_resnet50": "3557",
    "eca_resnet101": "3357",
    "eca_resnet152": "3357",
}
"""The per-stage k of each released checkpoint (the original code defaulted to 3333)."""


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class _AttentiveBlock(nn.Module):
    """Holds the optional attention layer under the name its checkpoints use, and ends the block."""

    __jit_unused_properties__ = ["attention_layer"]

    def _add_attention_and_downsample(
        self, attention: Optional[ChannelAttention], downsample: Optional[nn.Module], drop_path: float = 0.0
    ) -> None:
        """The attention layer under its ``block_attribute``, then the downsample branch: the
        order of the released checkpoints' keys (``layer1.0.eca.conv.weight`` before
        ``layer1.0.downsample.0.weight``). The block's other attributes must exist already.
        ``drop_path``: the probability of stochastic depth (``torchvision.ops.StochasticDepth``,
        per sample), which holds no weights."""
        self.attention_name = None
        if attention is not None:
            slot = attention.block_attribute
            if not slot.isidentifier() or hasattr(self, slot) or slot == "downsample":
                raise ValueError(
                    f"{type(attention).__name__}.block_attribute {slot!r} is not a free attribute name of {type(self).__name__}"
                )
            self.add_module(slot, attention)
            self.attention_name = slot
        self.downsample = downsample
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path else None

    @property
    def attention_layer(self) -> Optional[ChannelAttention]:
        """The block's attention layer (also ``block.<its block_attribute>``, ``block.eca``); None without one."""
        return None if self.attention_name is None else self._modules[self.attention_name]

    def _attend_add_relu(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """The block's ending: attention on ``out``, stochastic depth (in training), the residual
        addition, the ReLU.

        An attention layer that ``fuses_residual`` (ECA) does all of it in one call, in place
        in eager mode, which saves no extra activation for backward; it may overwrite ``out``
        (the last BatchNorm's output) or, in a block with a downsample branch, ``identity``
        (that branch's output), both temporaries here. Stochastic depth reaches it as the
        per-sample factors ``StochasticDepth`` draws (its drop of a tensor of ones), which
        the layer folds into its gate; other blocks multiply the branch by the same factors.

        TorchScript finds a submodule by a literal name only, and cannot test a module's
        class: there the loop over the children is unrolled when the block is compiled, and
        ``hasattr`` of ChannelAttention's constant, decided then too, keeps the attention's
        call alone. Eager mode looks the layer up by its name directly.
        """
        overwrite_identity = self.downsample is not None
        scale: Optional[torch.Tensor] = None
        if self.drop_path is not None and self.training:
            scale = self.drop_path(out.new_ones(out.shape[0], 1, 1, 1))
        if torch.jit.is_scripting():
            for layer in self.children():
                if hasattr(layer, "fuses_residual"):
                    if layer.fuses_residual:
                        return layer(out, identity, overwrite_identity, scale)
                    out = layer(out)
            return self.relu(out + identity if scale is None else out * scale + identity)
        attention = self.attention_layer
        if attention is not None:
            if attention.fuses_residual:
                if scale is None:
                    return attention(out, identity, overwrite_identity)
                return attention(out, identity, overwrite_identity, scale)
            out = attention(out)
        return self.relu(out + identity if scale is None else out * scale + identity)


class BasicBlock(_AttentiveBlock):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        attention: Optional[ChannelAttention] = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self._add_attention_and_downsample(attention, downsample, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        if self.downsample is not None:
            identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self._attend_add_relu(self.bn2(self.conv2(out)), identity)


class Bottleneck(_AttentiveBlock):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        attention: Optional[ChannelAttention] = None,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        """``stride_in_1x1``: the stride on the first 1x1 convolution instead of the 3x3 (the
        original ResNet's and Caffe's place, where the SENet authors trained theirs)."""
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes, stride if stride_in_1x1 else 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1 if stride_in_1x1 else stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride
        self._add_attention_and_downsample(attention, downsample, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        if self.downsample is not None:
            identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self._attend_add_relu(self.bn3(self.conv3(out)), identity)


Block = Type[Union[BasicBlock, Bottleneck]]

RESNET_LAYOUTS: Dict[int, Tuple[Block, Tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
"""Depth -> (block, blocks per stage), shared by every ResNet variant so they differ only in attention."""


def make_stem(kind: str = "7x7", width: int = 32) -> Tuple[nn.Module, int]:
    """The stem's convolutions and how many channels they give: torchvision's 7x7 (``"7x7"``,
    64), or three 3x3 convolutions, the first with stride 2, of ``width``, ``width`` and
    ``2 * width`` channels (``"deep"``: ResNet-C/D) or ``3 * (width // 4)``, ``width`` and
    ``2 * width`` (``"deep_tiered"``: ResNet-T), with BatchNorm and ReLU between them; the
    ResNet's ``bn1`` and ``relu`` follow. Keys ``conv1.0/1/3/4/6``, as timm's."""
    if kind == "7x7":
        return nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False), 64
    if kind not in ("deep", "deep_tiered"):
        raise ValueError(f"stem must be '7x7', 'deep' or 'deep_tiered', got {kind!r}")
    first = 3 * (width // 4) if kind == "deep_tiered" else width
    layers = [conv3x3(3, first, stride=2), nn.BatchNorm2d(first), nn.ReLU(inplace=True)]
    layers += [conv3x3(first, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True), conv3x3(width, 2 * width)]
    return nn.Sequential(*layers), 2 * width


def make_downsample(inplanes: int, out_planes: int, stride: int, avg_down: bool = False) -> nn.Sequential:
    """A stage's shortcut projection: torchvision's strided 1x1 convolution and BatchNorm, or with
    ``avg_down`` (ResNet-D) a 2x2 average pool that takes the stride, so that no input position
    is skipped, then a 1x1 convolution and BatchNorm (keys ``downsample.1/2``; the pool is an
    Identity where the stride is 1)."""
    if not avg_down:
        return nn.Sequential(conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
    pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride != 1 else nn.Identity()
    return nn.Sequential(pool, conv1x1(inplanes, out_planes), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """A ResNet for 3-channel inputs of at least 32 x 32 pixels (global pooling is adaptive).

    Beside ``forward`` it has timm's interface for reuse as a backbone: ``feature_info``
    (the stem's and each stage's output: channels, stride, module), ``forward_features``
    (the last stage's map, before pooling) and ``reset_classifier``.
    """

    stage_planes = (64, 128, 256, 512)
    forward_steps = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    """The children ``forward_features`` runs, in order (what ``FeatureListNet`` runs)."""
    unkeyed_settings: Dict[str, Any]
    """The constructor settings other than the defaults that change what the network computes
    but none of its keys (``stride_in_1x1``, ``caffe_stem_pool``); ``models.layout`` reads them."""

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        attention: str = "none",
        k_size: Optional[KernelSizeSpec] = None,
        drop_path_rate: float = 0.0,
        stem: str = "7x7",
        stem_width: int = 32,
        avg_down: bool = False,
        stride_in_1x1: bool = False,
        caffe_stem_pool: bool = False,
        **attention_kwargs: Any,
    ) -> None:
        """``attention`` names a registered layer (``models.attention``), built for every block
        of the stages it belongs in (all four; GCNet's: layer2..4); ``k_size`` is the per-stage k
        of one that takes a kernel size (ECA, ECA-NS; default 3333), any of the forms
        ``parse_kernel_sizes`` reads; ``attention_kwargs`` go to every layer (SE's ``bias=True``).
        ``drop_path_rate``: stochastic depth, rising linearly from 0 in the first block to this
        in the last, as timm's and torchvision's ResNets and ConvNeXts do (no weights change).

        The switches of the ResNet family, torchvision's ResNet when left out: ``stem``
        ``"deep"`` or ``"deep_tiered"`` (three 3x3 convolutions, ``stem_width`` wide, of ResNet-D
        and -T; :func:`make_stem`), ``avg_down`` (the shortcut's stride as a 2x2 average pool, of
        ResNet-D; :func:`make_downsample`), ``stride_in_1x1`` (Bottleneck's stride on its first
        1x1 convolution) and ``caffe_stem_pool`` (the stem's max-pool unpadded, rounding up), the
        last two of the SENet authors' Caffe-trained networks.
        """
        super().__init__()
        kind = attention_kind(attention)
        if k_size is not None and not kind.takes_kernel_size:
            raise TypeError(f"attention {attention!r} has no kernel size to set")
        kernel_sizes = stage_kernel_sizes(block, "3333" if k_size is None else k_size) if kind.takes_kernel_size else None
        if stride_in_1x1 and block is not Bottleneck:
            raise ValueError("stride_in_1x1 puts the stride on a Bottleneck's first 1x1 convolution; BasicBlock has none")
        self.avg_down = avg_down
        self.stride_in_1x1 = stride_in_1x1
        self.unkeyed_settings = {
            name: True for name, value in (("stride_in_1x1", stride_in_1x1), ("caffe_stem_pool", caffe_stem_pool)) if value
        }
        self.conv1, self.inplanes = make_stem(stem, stem_width)
        stem_channels = self.inplanes
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        if caffe_stem_pool:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        else:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        total_blocks = sum(layers)
        drop_paths = [drop_path_rate * index / max(total_blocks - 1, 1) for index in range(total_blocks)]
        stages = []
        for stage, (planes, blocks) in enumerate(zip(self.stage_planes, layers)):
            stride = 1 if stage == 0 else 2
            stage_attention, layer_kwargs = (attention, dict(attention_kwargs)) if stage in kind.resnet_stages else ("none", {})
            if kernel_sizes is not None:
                layer_kwargs["k_size"] = kernel_sizes[stage]
            first = sum(layers[:stage])
            stage_drop_paths = drop_paths[first : first + blocks]
            stages.append(self._make_layer(block, planes, blocks, stride, stage_attention, layer_kwargs, stage_drop_paths))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * block.expansion
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
        self.feature_info = FeatureInfo(
            [FeatureSpec(num_chs=stem_channels, reduction=2, module="relu")]
            + [
                FeatureSpec(num_chs=planes * block.expansion, reduction=4 * 2**stage, module=f"layer{stage + 1}")
                for stage, planes in enumerate(self.stage_planes)
            ]
        )
        self._init_weights()

    def _make_layer(
        self, block: Block, planes: int, blocks: int, stride: int, attention: str, attention_kwargs: Dict[str, Any],
        drop_paths: Sequence[float],
    ) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = make_downsample(self.inplanes, out_planes, stride, self.avg_down)
        block_settings = {"stride_in_1x1": True} if self.stride_in_1x1 else {}
        layers = []
        for index in range(blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    stride if index == 0 else 1,
                    downsample if index == 0 else None,
                    create_attention(attention, out_planes, **attention_kwargs),
                    drop_paths[index],
                    **block_settings,
                )
            )
            self.inplanes = out_planes
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        """As the original: He-normal convolutions (std sqrt(2 / (k*k*out))), BatchNorm 1 and 0.

        Attention layers keep their own initialisation (ECA's Conv1d and SE's Linear layers
        PyTorch's default, as in the code that trained the released checkpoints; GCNet's and
        CBAM's their papers'), and so does the classifier.
        """
        attention_parts = {id(part) for layer in self.modules() if isinstance(layer, ChannelAttention) for part in layer.modules()}
        for module in self.modules():
            if id(module) in attention_parts:
                continue
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for ``num_classes``; 0 removes it, and
        ``forward`` returns the pooled features."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def stage_kernel_sizes(block: Block, k_size: KernelSizeSpec) -> List[int]:
    """One ECA kernel size per stage, from any accepted spec (``"adaptive"`` uses each stage's width)."""
    return parse_kernel_sizes(k_size, [planes * block.expansion for planes in ResNet.stage_planes])


def refuse_pretrained(name: str, pretrained: bool) -> None:
    """``pretrained=True`` is kept in the signatures for the original's positional calls, but
    nothing is ever downloaded: say how to load a file instead."""
    if pretrained:
        raise ValueError(
            f"{name}(pretrained=True): weights are never downloaded; build the model and load "
            "a released checkpoint file instead (main.py --pretrained PATH)"
        )


def resnet_model_name(attention: str, depth: int) -> str:
    """The registered name of ResNet-``depth`` with ``attention`` (``"none"``: ``resnet50``)."""
    return f"resnet{depth}" if attention == "none" else f"{attention}_resnet{depth}"


def resnet(depth: int, attention: str = "none", num_classes: int = 1000, **kwargs: Any) -> ResNet:
    """ResNet-``depth`` (18, 34, 50, 101, 152) with a registered attention in its blocks."""
    if depth not in RESNET_LAYOUTS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
    block, layers = RESNET_LAYOUTS[depth]
    return ResNet(block, layers, num_classes, attention=attention, **kwargs)


def _registered(name: str, depth: int, attention: str, num_classes: int, pretrained: bool, **kwargs: Any) -> ResNet:
    refuse_pretrained(name, pretrained)
    return resnet(depth, attention, num_classes, **kwargs)


def _released_k(depth: int, k_size: Optional[KernelSizeSpec]) -> KernelSizeSpec:
    """``k_size``, or the released ECA-ResNet-``depth``'s per-stage k (ECA-NS too, for a like comparison)."""
    return DEFAULT_KERNEL_SIZES[f"eca_resnet{depth}"] if k_size is None else k_size


# --- no attention: torchvision's ResNets -----------------------------------------------------


@register_model
def resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 without attention; its state_dict is torchvision's resnet18's."""
    return _registered("resnet18", 18, "none", num_classes, pretrained, **kwargs)


@register_model
def resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 without attention; its state_dict is torchvision's resnet34's."""
    return _registered("resnet34", 34, "none", num_classes, pretrained, **kwargs)


@register_model
def resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 without attention; its state_dict is torchvision's resnet50's."""
    return _registered("resnet50", 50, "none", num_classes, pretrained, **kwargs)


@register_model
def resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 without attention; its state_dict is torchvision's resnet101's."""
    return _registered("resnet101", 101, "none", num_classes, pretrained, **kwargs)


@register_model
def resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 without attention; its state_dict is torchvision's resnet152's."""
    return _registered("resnet152", 152, "none", num_classes, pretrained, **kwargs)


# --- SE, the paper's (bias-free) -------------------------------------------------------------


@register_model
def se_resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-18 as the paper counts it: SE with r = 16 and no biases (``bias=True``: SENet's own)."""
    return _registered("se_resnet18", 18, "se", num_classes, pretrained, **kwargs)


@register_model
def se_resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-34 as the paper counts it: SE with r = 16 and no biases (``bias=True``: SENet's own)."""
    return _registered("se_resnet34", 34, "se", num_classes, pretrained, **kwargs)


@register_model
def se_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-50 as the paper counts it: SE with r = 16 and no biases (``bias=True``: SENet's own)."""
    return _registered("se_resnet50", 50, "se", num_classes, pretrained, **kwargs)


@register_model
def se_resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-101 as the paper counts it: SE with r = 16 and no biases (``bias=True``: SENet's own)."""
    return _registered("se_resnet101", 101, "se", num_classes, pretrained, **kwargs)


@register_model
def se_resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-152 as the paper counts it: SE with r = 16 and no biases (``bias=True``: SENet's own)."""
    return _registered("se_resnet152", 152, "se", num_classes, pretrained, **kwargs)


# --- Table 2's SE variants -------------------------------------------------------------------


@register_model
def se_var1_resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with SE-Var1 gates (Table 2): sigma(GAP(x)), no parameters."""
    return _registered("se_var1_resnet18", 18, "se_var1", num_classes, pretrained, **kwargs)


@register_model
def se_var1_resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with SE-Var1 gates (Table 2): sigma(GAP(x)), no parameters."""
    return _registered("se_var1_resnet34", 34, "se_var1", num_classes, pretrained, **kwargs)


@register_model
def se_var1_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with SE-Var1 gates (Table 2): sigma(GAP(x)), no parameters."""
    return _registered("se_var1_resnet50", 50, "se_var1", num_classes, pretrained, **kwargs)


@register_model
def se_var1_resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 with SE-Var1 gates (Table 2): sigma(GAP(x)), no parameters."""
    return _registered("se_var1_resnet101", 101, "se_var1", num_classes, pretrained, **kwargs)


@register_model
def se_var1_resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 with SE-Var1 gates (Table 2): sigma(GAP(x)), no parameters."""
    return _registered("se_var1_resnet152", 152, "se_var1", num_classes, pretrained, **kwargs)


@register_model
def se_var2_resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with SE-Var2 gates (Table 2): one weight per channel."""
    return _registered("se_var2_resnet18", 18, "se_var2", num_classes, pretrained, **kwargs)


@register_model
def se_var2_resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with SE-Var2 gates (Table 2): one weight per channel."""
    return _registered("se_var2_resnet34", 34, "se_var2", num_classes, pretrained, **kwargs)


@register_model
def se_var2_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with SE-Var2 gates (Table 2): one weight per channel."""
    return _registered("se_var2_resnet50", 50, "se_var2", num_classes, pretrained, **kwargs)


@register_model
def se_var2_resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 with SE-Var2 gates (Table 2): one weight per channel."""
    return _registered("se_var2_resnet101", 101, "se_var2", num_classes, pretrained, **kwargs)


@register_model
def se_var2_resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 with SE-Var2 gates (Table 2): one weight per channel."""
    return _registered("se_var2_resnet152", 152, "se_var2", num_classes, pretrained, **kwargs)


@register_model
def se_var3_resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with SE-Var3 gates (Table 2): one C x C layer, no reduction."""
    return _registered("se_var3_resnet18", 18, "se_var3", num_classes, pretrained, **kwargs)


@register_model
def se_var3_resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with SE-Var3 gates (Table 2): one C x C layer, no reduction."""
    return _registered("se_var3_resnet34", 34, "se_var3", num_classes, pretrained, **kwargs)


@register_model
def se_var3_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with SE-Var3 gates (Table 2): one C x C layer, no reduction."""
    return _registered("se_var3_resnet50", 50, "se_var3", num_classes, pretrained, **kwargs)


@register_model
def se_var3_resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 with SE-Var3 gates (Table 2): one C x C layer, no reduction."""
    return _registered("se_var3_resnet101", 101, "se_var3", num_classes, pretrained, **kwargs)


@register_model
def se_var3_resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 with SE-Var3 gates (Table 2): one C x C layer, no reduction."""
    return _registered("se_var3_resnet152", 152, "se_var3", num_classes, pretrained, **kwargs)


@register_model
def se_gc1_resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with SE-GC1 gates (Table 2): a C x C layer in 16 groups."""
    return _registered("se_gc1_resnet18", 18, "se_gc1", num_classes, pretrained, **kwargs)


@register_model
def se_gc1_resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with SE-GC1 gates (Table 2): a C x C layer in 16 groups."""
    return _registered("se_gc1_resnet34", 34, "se_gc1", num_classes, pretrained, **kwargs)


@register_model
def se_gc1_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with SE-GC1 gates (Table 2): a C x C layer in 16 groups."""
    return _registered("se_gc1_resnet50", 50, "se_gc1", num_classes, pretrained, **kwargs)


@register_model
def se_gc1_resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 with SE-GC1 gates (Table 2): a C x C layer in 16 groups."""
    return _registered("se_gc1_resnet101", 101, "se_gc1", num_classes, pretrained, **kwargs)


@register_model
def se_gc1_resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 with SE-GC1 gates (Table 2): a C x C layer in 16 groups."""
    return _registered("se_gc1_resnet152", 152, "se_gc1", num_classes, pretrained, **kwargs)


@register_model
def se_gc2_resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with SE-GC2 gates (Table 2): a C x C layer in groups of 16 channels."""
    return _registered("se_gc2_resnet18", 18, "se_gc2", num_classes, pretrained, **kwargs)


@register_model
def se_gc2_resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with SE-GC2 gates (Table 2): a C x C layer in groups of 16 channels."""
    return _registered("se_gc2_resnet34", 34, "se_gc2", num_classes, pretrained, **kwargs)


@register_model
def se_gc2_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with SE-GC2 gates (Table 2): a C x C layer in groups of 16 channels."""
    return _registered("se_gc2_resnet50", 50, "se_gc2", num_classes, pretrained, **kwargs)


@register_model
def se_gc2_resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 with SE-GC2 gates (Table 2): a C x C layer in groups of 16 channels."""
    return _registered("se_gc2_resnet101", 101, "se_gc2", num_classes, pretrained, **kwargs)


@register_model
def se_gc2_resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 with SE-GC2 gates (Table 2): a C x C layer in groups of 16 channels."""
    return _registered("se_gc2_resnet152", 152, "se_gc2", num_classes, pretrained, **kwargs)


@register_model
def se_gc3_resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with SE-GC3 gates (Table 2): a C x C layer in groups of 8 channels."""
    return _registered("se_gc3_resnet18", 18, "se_gc3", num_classes, pretrained, **kwargs)


@register_model
def se_gc3_resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with SE-GC3 gates (Table 2): a C x C layer in groups of 8 channels."""
    return _registered("se_gc3_resnet34", 34, "se_gc3", num_classes, pretrained, **kwargs)


@register_model
def se_gc3_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with SE-GC3 gates (Table 2): a C x C layer in groups of 8 channels."""
    return _registered("se_gc3_resnet50", 50, "se_gc3", num_classes, pretrained, **kwargs)


@register_model
def se_gc3_resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 with SE-GC3 gates (Table 2): a C x C layer in groups of 8 channels."""
    return _registered("se_gc3_resnet101", 101, "se_gc3", num_classes, pretrained, **kwargs)


@register_model
def se_gc3_resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 with SE-GC3 gates (Table 2): a C x C layer in groups of 8 channels."""
    return _registered("se_gc3_resnet152", 152, "se_gc3", num_classes, pretrained, **kwargs)


# --- ECA-NS ----------------------------------------------------------------------------------


@register_model
def eca_ns_resnet18(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with ECA-NS (Table 2: k taps per channel); k_size (per stage, or 'adaptive') defaults to ECA-ResNet-18's 3577."""
    return _registered("eca_ns_resnet18", 18, "eca_ns", num_classes, pretrained, k_size=_released_k(18, k_size), **kwargs)


@register_model
def eca_ns_resnet34(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with ECA-NS (Table 2: k taps per channel); k_size (per stage, or 'adaptive') defaults to ECA-ResNet-34's 3357."""
    return _registered("eca_ns_resnet34", 34, "eca_ns", num_classes, pretrained, k_size=_released_k(34, k_size), **kwargs)


@register_model
def eca_ns_resnet50(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with ECA-NS (Table 2: k taps per channel); k_size (per stage, or 'adaptive') defaults to ECA-ResNet-50's 3557."""
    return _registered("eca_ns_resnet50", 50, "eca_ns", num_classes, pretrained, k_size=_released_k(50, k_size), **kwargs)


@register_model
def eca_ns_resnet101(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 with ECA-NS (Table 2: k taps per channel); k_size (per stage, or 'adaptive') defaults to ECA-ResNet-101's 3357."""
    return _registered("eca_ns_resnet101", 101, "eca_ns", num_classes, pretrained, k_size=_released_k(101, k_size), **kwargs)


@register_model
def eca_ns_resnet152(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 with ECA-NS (Table 2: k taps per channel); k_size (per stage, or 'adaptive') defaults to ECA-ResNet-152's 3357."""
    return _registered("eca_ns_resnet152", 152, "eca_ns", num_classes, pretrained, k_size=_released_k(152, k_size), **kwargs)


# --- ECA: the released ECA-ResNets -----------------------------------------------------------


@register_model
def eca_resnet18(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ECA-ResNet-18; k_size (per stage, or 'adaptive') defaults to the released checkpoint's 3577."""
    return _registered("eca_resnet18", 18, "eca", num_classes, pretrained, k_size=_released_k(18, k_size), **kwargs)


@register_model
def eca_resnet34(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ECA-ResNet-34; k_size (per stage, or 'adaptive') defaults to the released checkpoint's 3357."""
    return _registered("eca_resnet34", 34, "eca", num_classes, pretrained, k_size=_released_k(34, k_size), **kwargs)


@register_model
def eca_resnet50(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ECA-ResNet-50; k_size (per stage, or 'adaptive') defaults to the released checkpoint's 3557."""
    return _registered("eca_resnet50", 50, "eca", num_classes, pretrained, k_size=_released_k(50, k_size), **kwargs)


@register_model
def eca_resnet101(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ECA-ResNet-101; k_size (per stage, or 'adaptive') defaults to the released checkpoint's 3357."""
    return _registered("eca_resnet101", 101, "eca", num_classes, pretrained, k_size=_released_k(101, k_size), **kwargs)


@register_model
def eca_resnet152(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ECA-ResNet-152; k_size (per stage, or 'adaptive') defaults to the released checkpoint's 3357."""
    return _registered("eca_resnet152", 152, "eca", num_classes, pretrained, k_size=_released_k(152, k_size), **kwargs)


# --- CBAM ------------------------------------------------------------------------------------


@register_model
def cbam_resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with CBAM as its paper writes it, no biases (``bias=True, spatial_batch_norm=True``: the official code's)."""
    return _registered("cbam_resnet18", 18, "cbam", num_classes, pretrained, **kwargs)


@register_model
def cbam_resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with CBAM as its paper writes it, no biases (``bias=True, spatial_batch_norm=True``: the official code's)."""
    return _registered("cbam_resnet34", 34, "cbam", num_classes, pretrained, **kwargs)


@register_model
def cbam_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with CBAM as its paper writes it, no biases (``bias=True, spatial_batch_norm=True``: the official code's)."""
    return _registered("cbam_resnet50", 50, "cbam", num_classes, pretrained, **kwargs)


@register_model
def cbam_resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 with CBAM as its paper writes it, no biases (``bias=True, spatial_batch_norm=True``: the official code's)."""
    return _registered("cbam_resnet101", 101, "cbam", num_classes, pretrained, **kwargs)


@register_model
def cbam_resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 with CBAM as its paper writes it, no biases (``bias=True, spatial_batch_norm=True``: the official code's)."""
    return _registered("cbam_resnet152", 152, "cbam", num_classes, pretrained, **kwargs)


# --- GCNet -----------------------------------------------------------------------------------


@register_model
def gc_resnet18(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with GCNet's global context blocks (r = 16) in layer2..4."""
    return _registered("gc_resnet18", 18, "gc", num_classes, pretrained, **kwargs)


@register_model
def gc_resnet34(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with GCNet's global context blocks (r = 16) in layer2..4."""
    return _registered("gc_resnet34", 34, "gc", num_classes, pretrained, **kwargs)


@register_model
def gc_resnet50(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with GCNet's global context blocks (r = 16) in layer2..4."""
    return _registered("gc_resnet50", 50, "gc", num_classes, pretrained, **kwargs)


@register_model
def gc_resnet101(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-101 with GCNet's global context blocks (r = 16) in layer2..4."""
    return _registered("gc_resnet101", 101, "gc", num_classes, pretrained, **kwargs)


@register_model
def gc_resnet152(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-152 with GCNet's global context blocks (r = 16) in layer2..4."""
    return _registered("gc_resnet152", 152, "gc", num_classes, pretrained, **kwargs)

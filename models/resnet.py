"""The ResNet of every ResNet model here, with any registered attention in its residual blocks.

The ResNet is torchvision's, with one addition: each residual block may carry an attention
layer (``models.attention``), applied after the block's last BatchNorm and before the
residual addition, where SE and ECA sit. The block keeps it under the layer's
``block_attribute``, so state_dict keys are the released checkpoints' for ECA
(``layer1.0.eca.conv.weight``) and torchvision's with no attention. ECA-ResNet-18..152 with
the released checkpoints' kernel sizes are ``eca_resnet18`` ... here; every other
``<attention>_resnet<depth>`` is in ``models.resnet_variants``.
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn

from .attention import ChannelAttention, attention_kind, create_attention
from .features import FeatureInfo, FeatureSpec
from .kernel_size import KernelSizeSpec, parse_kernel_sizes

__all__ = [
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "DEFAULT_KERNEL_SIZES",
    "RESNET_LAYOUTS",
    "refuse_pretrained",
    "stage_kernel_sizes",
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

    attention_names = ("eca", "se", "cbam", "gc")
    """The ``block_attribute`` names the block ending looks for."""

    def _set_attention(self, attention: Optional[ChannelAttention]) -> None:
        self.attention_name = None if attention is None else attention.block_attribute
        if attention is None:
            return
        if attention.block_attribute not in self.attention_names:
            raise ValueError(
                f"{type(attention).__name__}.block_attribute must be one of {self.attention_names}, "
                f"got {attention.block_attribute!r}"
            )
        setattr(self, attention.block_attribute, attention)

    def _attend_add_relu(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """The block's ending: attention on ``out``, the residual addition, the ReLU.

        An attention layer that ``fuses_residual`` (ECA) does all three in one call, in place
        in eager mode, which saves no extra activation for backward; it may overwrite ``out``
        (the last BatchNorm's output) or, in a block with a downsample branch, ``identity``
        (that branch's output), both temporaries here. The layer is looked up by name and
        its flag read with ``hasattr`` (a stand-in module without the flag, such as the
        benchmark's original-code ECA, takes the plain ending); TorchScript resolves both,
        and the flag, a constant, when it compiles the block.
        """
        overwrite_identity = self.downsample is not None
        if hasattr(self, "eca"):
            if hasattr(self.eca, "fuses_residual"):
                if self.eca.fuses_residual:
                    return self.eca(out, identity, overwrite_identity)
            out = self.eca(out)
        elif hasattr(self, "se"):
            if self.se.fuses_residual:
                return self.se(out, identity, overwrite_identity)
            out = self.se(out)
        elif hasattr(self, "cbam"):
            if self.cbam.fuses_residual:
                return self.cbam(out, identity, overwrite_identity)
            out = self.cbam(out)
        elif hasattr(self, "gc"):
            if self.gc.fuses_residual:
                return self.gc(out, identity, overwrite_identity)
            out = self.gc(out)
        return self.relu(out + identity)


class BasicBlock(_AttentiveBlock):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        attention: Optional[ChannelAttention] = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._set_attention(attention)
        self.downsample = downsample
        self.stride = stride

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
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._set_attention(attention)
        self.downsample = downsample
        self.stride = stride

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


class ResNet(nn.Module):
    """A ResNet for 3-channel inputs of at least 32 x 32 pixels (global pooling is adaptive).

    Beside ``forward`` it has timm's interface for reuse as a backbone: ``feature_info``
    (the stem's and each stage's output: channels, stride, module), ``forward_features``
    (the last stage's map, before pooling) and ``reset_classifier``.
    """

    stage_planes = (64, 128, 256, 512)
    forward_steps = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    """The children ``forward_features`` runs, in order (what ``FeatureListNet`` runs)."""

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        attention: str = "none",
        k_size: Optional[KernelSizeSpec] = None,
        **attention_kwargs: Any,
    ) -> None:
        """``attention`` names a registered layer (``models.attention``), built for every block
        of the stages it belongs in (all four; GCNet's: layer2..4); ``k_size`` is the per-stage k
        of one that takes a kernel size (ECA, ECA-NS; default 3333), any of the forms
        ``parse_kernel_sizes`` reads; ``attention_kwargs`` go to every layer (SE's ``bias=True``).
        """
        super().__init__()
        kind = attention_kind(attention)
        if k_size is not None and not kind.takes_kernel_size:
            raise TypeError(f"attention {attention!r} has no kernel size to set")
        kernel_sizes = stage_kernel_sizes(block, "3333" if k_size is None else k_size) if kind.takes_kernel_size else None
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        for stage, (planes, blocks) in enumerate(zip(self.stage_planes, layers)):
            stride = 1 if stage == 0 else 2
            stage_attention, layer_kwargs = (attention, dict(attention_kwargs)) if stage in kind.resnet_stages else ("none", {})
            if kernel_sizes is not None:
                layer_kwargs["k_size"] = kernel_sizes[stage]
            stages.append(self._make_layer(block, planes, blocks, stride, stage_attention, layer_kwargs))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * block.expansion
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
        self.feature_info = FeatureInfo(
            [FeatureSpec(num_chs=64, reduction=2, module="relu")]
            + [
                FeatureSpec(num_chs=planes * block.expansion, reduction=4 * 2**stage, module=f"layer{stage + 1}")
                for stage, planes in enumerate(self.stage_planes)
            ]
        )
        self._init_weights()

    def _make_layer(
        self, block: Block, planes: int, blocks: int, stride: int, attention: str, attention_kwargs: Dict[str, Any]
    ) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
        layers = []
        for index in range(blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    stride if index == 0 else 1,
                    downsample if index == 0 else None,
                    create_attention(attention, out_planes, **attention_kwargs),
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

"""ECA-ResNet-18/34/50/101/152, layer for layer the network of the released checkpoints.

The ResNet here is torchvision's, with one addition: each residual block may carry a
channel-attention module, applied after the block's last BatchNorm and before the residual
addition. With ECA it is registered as ``eca`` so that the state_dict keys are exactly the
released checkpoints' (``layer1.0.eca.conv.weight``); with no attention the state_dict is
torchvision's.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn

from .eca import EfficientChannelAttention, KernelSizeSpec, parse_kernel_sizes
from .features import FeatureInfo, FeatureSpec
from .registry import register_model

__all__ = [
    "ResNet",
    "BasicBlock",
    "Bottleneck",
    "DEFAULT_KERNEL_SIZES",
    "RESNET_LAYOUTS",
    "refuse_pretrained",
    "stage_kernel_sizes",
    "eca_resnet18",
    "eca_resnet34",
    "eca_resnet50",
    "eca_resnet101",
    "eca_resnet152",
]

AttentionFactory = Callable[[int, int], nn.Module]
"""Builds a block's attention module from (channels, stage index 0..3)."""

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
    """Holds the optional attention module under the name the checkpoints expect."""

    attention_names = ("eca", "se")
    """The names the released checkpoints and SENet's use; the block ending looks for each."""

    def _set_attention(self, attention: Optional[nn.Module], attention_name: str) -> None:
        if attention_name not in self.attention_names:
            raise ValueError(f"attention_name must be one of {self.attention_names}, got {attention_name!r}")
        self.attention_name = attention_name if attention is not None else None
        if attention is not None:
            setattr(self, attention_name, attention)

    def _attend_add_relu(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """The block's ending: attention on ``out``, the residual addition, the ReLU.

        ECA does all three in one call, in place in eager mode, which saves no extra
        activation for backward; it may overwrite ``out`` (the last BatchNorm's output) or,
        in a block with a downsample branch, ``identity`` (that branch's output), both
        temporaries here. The attention is looked up by name with ``hasattr`` and
        ``isinstance``, which TorchScript resolves when it compiles the block.
        """
        if hasattr(self, "eca"):
            if isinstance(self.eca, EfficientChannelAttention):
                return self.eca(out, identity, self.downsample is not None)
            out = self.eca(out)
        elif hasattr(self, "se"):
            out = self.se(out)
        return self.relu(out + identity)


class BasicBlock(_AttentiveBlock):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        attention: Optional[nn.Module] = None,
        attention_name: str = "eca",
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._set_attention(attention, attention_name)
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
        attention: Optional[nn.Module] = None,
        attention_name: str = "eca",
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._set_attention(attention, attention_name)
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
        attention: Optional[AttentionFactory] = None,
        attention_name: str = "eca",
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        for stage, (planes, blocks) in enumerate(zip(self.stage_planes, layers)):
            stride = 1 if stage == 0 else 2
            stages.append(self._make_layer(block, planes, blocks, stride, stage, attention, attention_name))
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
        self,
        block: Block,
        planes: int,
        blocks: int,
        stride: int,
        stage: int,
        attention: Optional[AttentionFactory],
        attention_name: str,
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
                    attention(out_planes, stage) if attention is not None else None,
                    attention_name,
                )
            )
            self.inplanes = out_planes
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        """As the original: He-normal convolutions (std sqrt(2 / (k*k*out))), BatchNorm 1 and 0.

        The ECA Conv1d and the classifier keep PyTorch's default initialisation, as they did
        in the code that trained the released checkpoints.
        """
        for module in self.modules():
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


def _eca_resnet(
    name: str, depth: int, k_size: Optional[KernelSizeSpec], num_classes: int, pretrained: bool
) -> ResNet:
    refuse_pretrained(name, pretrained)
    block, layers = RESNET_LAYOUTS[depth]
    kernel_sizes = stage_kernel_sizes(block, DEFAULT_KERNEL_SIZES[name] if k_size is None else k_size)

    def eca_for_stage(channels: int, stage: int) -> nn.Module:
        return EfficientChannelAttention(channels, kernel_sizes[stage])

    return ResNet(block, layers, num_classes, attention=eca_for_stage, attention_name="eca")


@register_model
def eca_resnet18(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ECA-ResNet-18; k_size defaults to the released checkpoint's 3577."""
    return _eca_resnet("eca_resnet18", 18, k_size, num_classes, pretrained)


@register_model
def eca_resnet34(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ECA-ResNet-34; k_size defaults to the released checkpoint's 3357."""
    return _eca_resnet("eca_resnet34", 34, k_size, num_classes, pretrained)


@register_model
def eca_resnet50(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ECA-ResNet-50; k_size defaults to the released checkpoint's 3557."""
    return _eca_resnet("eca_resnet50", 50, k_size, num_classes, pretrained)


@register_model
def eca_resnet101(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ECA-ResNet-101; k_size defaults to the released checkpoint's 3357."""
    return _eca_resnet("eca_resnet101", 101, k_size, num_classes, pretrained)


@register_model
def eca_resnet152(k_size: Optional[KernelSizeSpec] = None, num_classes: int = 1000, pretrained: bool = False) -> ResNet:
    """ECA-ResNet-152; k_size defaults to the released checkpoint's 3357."""
    return _eca_resnet("eca_resnet152", 152, k_size, num_classes, pretrained)

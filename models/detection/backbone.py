"""ResNet bodies of this project (ECA, SE, GC, non-local or none) with an FPN, configured as MMDetection v1's.

The body is the classification model itself, from ``models.create_model``, so its ECA layers
(and their memory-saving fast path) are the classification code's; torchvision's
IntermediateLayerGetter leaves out ``avgpool`` and ``fc``. As MMDetection v1's
``frozen_stages=1`` / ``norm_eval=True``: the stem and layer1 do not train, and every
BatchNorm stays in eval mode (fixed running statistics) while its affine parameters in
layer2..4 train.
"""

from typing import Any, List, Optional, Sequence, Tuple

from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool

import models
from models.kernel_size import KernelSizeSpec
from models.resnet import ResNet

__all__ = ["ResNetFPN", "LastLevelP6P7FromC5", "build_resnet_fpn", "stage_channels", "FPN_CHANNELS"]

FPN_CHANNELS = 256


class LastLevelP6P7FromC5(ExtraFPNBlock):
    """RetinaNet's extra levels in MMDetection v1: P6 = 3x3 stride-2 conv on C5, P7 = the same on P6.

    No ReLU between P6 and P7 (torchvision's LastLevelP6P7 applies one, which changes P7).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, results: List[Tensor], x: List[Tensor], names: List[str]) -> Tuple[List[Tensor], List[str]]:
        p6 = self.p6(x[-1])
        p7 = self.p7(p6)
        return results + [p6, p7], names + ["p6", "p7"]


class ResNetFPN(BackboneWithFPN):
    """torchvision's BackboneWithFPN around this project's ResNet, with MMDetection v1's freezing."""

    def __init__(
        self,
        body: ResNet,
        stages: Sequence[int],
        extra_blocks: ExtraFPNBlock,
        frozen_stages: int = 1,
    ) -> None:
        block_channels = stage_channels(body)
        super().__init__(
            body,
            return_layers={f"layer{stage}": str(index) for index, stage in enumerate(stages)},
            in_channels_list=[block_channels[stage - 1] for stage in stages],
            out_channels=FPN_CHANNELS,
            extra_blocks=extra_blocks,
        )
        frozen = [self.body.conv1, self.body.bn1] + [getattr(self.body, f"layer{s}") for s in range(1, frozen_stages + 1)]
        for module in frozen:
            module.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "ResNetFPN":
        """Train the FPN and the unfrozen layers, but keep every BatchNorm's statistics fixed."""
        super().train(mode)
        for module in self.body.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


def stage_channels(body: ResNet) -> List[int]:
    """Output channels of layer1..layer4 (C2..C5)."""
    return [planes * type(body.layer1[0]).expansion for planes in ResNet.stage_planes]


def build_resnet_fpn(body_name: str, k_size: Optional[KernelSizeSpec], retinanet_levels: bool, **body_settings: Any) -> ResNetFPN:
    """A ResNetFPN around ``models.create_model(body_name, **body_settings)`` (``k_size`` only for ECA bodies).

    The R-CNNs' FPN takes C2..C5 and adds P6 = max_pool2d(P5, 1, stride 2) (torchvision's
    LastLevelMaxPool); RetinaNet's takes C3..C5 and adds P6 and P7 from C5.
    """
    body = models.create_model(body_name, **body_settings, **({} if k_size is None else {"k_size": k_size}))
    if retinanet_levels:
        return ResNetFPN(body, (2, 3, 4), LastLevelP6P7FromC5(stage_channels(body)[-1], FPN_CHANNELS))
    return ResNetFPN(body, (1, 2, 3, 4), LastLevelMaxPool())

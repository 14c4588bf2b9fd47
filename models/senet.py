"""The SE-ResNets as SENet's authors released them, and the SE checkpoints of other code.

SENet's authors trained their SE-ResNet-50/101/152 in Caffe, whose ResNets differ from
torchvision's in two places that change no key: the stride of each downsampling block is on
its first 1x1 convolution, and the stem's max-pool is unpadded and rounds up
(``MaxPool2d(3, 2, ceil_mode=True)``). ``se_resnet50_caffe`` and its depths are that network:
this project's ResNet with biased SE layers and those two switches (``stride_in_1x1``,
``caffe_stem_pool``). The head pools adaptively where theirs is ``AvgPool2d(7)``: the same at
224 x 224, and any input size here. Their weights, as Cadene's pretrainedmodels converted them
(``se_resnet50-ce0d4300.pth``, ``se_resnet101-7e38fcc6.pth``, ``se_resnet152-d17c99b7.pth``;
timm's ``legacy_seresnet*`` keep the same keys), load through :func:`from_cadene_senet`; the
Table 3 SENet rows' accuracies are this network's.

moskomule/senet.pytorch's SE-ResNet-50 (``seresnet50-60a8950a85b2b.pkl``) is torchvision's
ResNet-50 with bias-free SE layers, which is ``se_resnet50`` itself: :func:`from_moskomule_senet`
renames its layers.
"""

from typing import Any, Optional

from .layout import AdaptedStateDict, StateDict, register_state_dict_adapter, with_batch_norm_counters
from .registry import register_model
from .resnet import ResNet, refuse_pretrained, resnet

__all__ = ["CAFFE_SETTINGS", "from_cadene_senet", "from_moskomule_senet"]

CAFFE_SETTINGS = {"stride_in_1x1": True, "caffe_stem_pool": True}
"""The ResNet switches of the SENet authors' Caffe-trained networks."""


def _caffe_se_resnet(name: str, depth: int, num_classes: int, pretrained: bool, **kwargs: Any) -> ResNet:
    refuse_pretrained(name, pretrained)
    return resnet(depth, "se", num_classes, **{"bias": True, **CAFFE_SETTINGS, **kwargs})


@register_model
def se_resnet50_caffe(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-50 as SENet's authors trained it (biased SE, stride on the 1x1, Caffe's stem pool); loads se_resnet50-ce0d4300.pth."""
    return _caffe_se_resnet("se_resnet50_caffe", 50, num_classes, pretrained, **kwargs)


@register_model
def se_resnet101_caffe(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-101 as SENet's authors trained it (biased SE, stride on the 1x1, Caffe's stem pool); loads se_resnet101-7e38fcc6.pth."""
    return _caffe_se_resnet("se_resnet101_caffe", 101, num_classes, pretrained, **kwargs)


@register_model
def se_resnet152_caffe(num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> ResNet:
    """SE-ResNet-152 as SENet's authors trained it (biased SE, stride on the 1x1, Caffe's stem pool); loads se_resnet152-d17c99b7.pth."""
    return _caffe_se_resnet("se_resnet152_caffe", 152, num_classes, pretrained, **kwargs)


@register_state_dict_adapter
def from_cadene_senet(state_dict: StateDict) -> Optional[AdaptedStateDict]:
    """Cadene's SENet layout: the stem under ``layer0``, SE as ``se_module.fc1/fc2`` 1x1
    convolutions with biases, the classifier ``last_linear``, no BatchNorm counters (converted
    before PyTorch had them). Its network is the Caffe one (:data:`CAFFE_SETTINGS`)."""
    if "layer0.conv1.weight" not in state_dict or "last_linear.weight" not in state_dict:
        return None
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("layer0."):
            key = key[len("layer0.") :]
        elif key.startswith("last_linear."):
            key = "fc." + key[len("last_linear.") :]
        key = key.replace(".se_module.", ".se.")
        if key.endswith((".se.fc1.weight", ".se.fc2.weight")):
            value = value.flatten(1)  # a 1x1 convolution's (out, in, 1, 1) as a Linear's (out, in)
        converted[key] = value
    return AdaptedStateDict(with_batch_norm_counters(converted), source="Cadene SENet", settings=CAFFE_SETTINGS)


@register_state_dict_adapter
def from_moskomule_senet(state_dict: StateDict) -> Optional[AdaptedStateDict]:
    """moskomule/senet.pytorch's layout: SE as ``se.fc.0`` and ``se.fc.2``, bias-free Linear layers."""
    if not any(key.endswith(".se.fc.0.weight") for key in state_dict):
        return None
    converted = {key.replace(".se.fc.0.", ".se.fc1.").replace(".se.fc.2.", ".se.fc2."): value for key, value in state_dict.items()}
    return AdaptedStateDict(converted, source="moskomule SENet")

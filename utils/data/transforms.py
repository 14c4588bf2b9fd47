"""The image transforms: the paper's PIL pipeline, the fast uint8 one, and normalising on the device.

Two pipelines take the same random draws from torch's CPU generator in the same order (the
crop box as RandomResizedCrop draws it, then the flip as RandomHorizontalFlip does), so with the
same seed they cut the same boxes:

- ``pil``: the original's. PIL images are cropped and resized, then ``ToTensor`` and
  ``Normalize`` make float32 tensors in the worker. Evaluation uses it by default: released
  checkpoints reproduce their published numbers only with the exact pixels they were measured on.
- ``fast``: uint8 tensors (TorchCodec decodes to them, see utils.data.decode) are cropped and
  resized with ``transforms.v2``'s kernels and stay uint8 (4x fewer bytes to collate, pin and
  copy); :func:`normalize_` makes them float32 on the device. The resize is torch's uint8
  antialiased bilinear, a port of Pillow's, so pixels differ from PIL's by rounding only.
"""

import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torchvision import transforms
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from utils.reproducibility import cpu_draws_seeded

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIPELINES",
    "AUTO_AUGMENTS",
    "Augmentation",
    "NO_AUGMENTATION",
    "BatchMix",
    "build_transform",
    "CropDraw",
    "RandomCropFlip",
    "resized_crop_flip",
    "FastEvalTransform",
    "fast_transform",
    "normalize_",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIPELINES = ("fast", "pil")


_BILINEAR = v2.InterpolationMode.BILINEAR

AUTO_AUGMENTS: Dict[str, Callable[[int], List[v2.Transform]]] = {
    "none": lambda magnitude: [],
    # RandAugment: two operations, each at ``magnitude`` of its 31 bins.
    "ra": lambda magnitude: [v2.RandAugment(magnitude=magnitude, interpolation=_BILINEAR)],
    "ta_wide": lambda magnitude: [v2.TrivialAugmentWide(interpolation=_BILINEAR)],
}
"""Automatic augmentation policies by torchvision's reference names -> the transforms of the
policy at a magnitude (which only RandAugment reads), for PIL images and uint8 tensors alike.
A new policy is one entry here: ``--auto-augment`` offers every name."""

MEAN_PIXEL = [int(round(255 * mean)) for mean in IMAGENET_MEAN]
"""What random erasing fills uint8 images with: ImageNet's mean colour, which normalising makes
(nearly) 0, the value torchvision's recipe erases normalised images with."""


@dataclass(frozen=True)
class Augmentation:
    """What a training sample gets after its crop and flip, from ``torchvision.transforms.v2``:
    an ``auto_augment`` policy (one of :data:`AUTO_AUGMENTS`; RandAugment at ``ra_magnitude`` of
    its 31 bins), then random erasing with probability ``random_erase``. Both interpolate
    bilinearly, as torchvision's recipes and the crops here do."""

    auto_augment: str = "none"
    ra_magnitude: int = 9
    random_erase: float = 0.0

    def policy(self) -> List[v2.Transform]:
        """The policy's transforms (none: no transform), for PIL images or uint8 tensors alike."""
        return AUTO_AUGMENTS[self.auto_augment](self.ra_magnitude)

    @property
    def changes_images(self) -> bool:
        """Whether it does anything after the crop and flip (a RandAugment magnitude alone does not)."""
        return bool(self.policy()) or self.random_erase > 0

    def erasing(self, value: Sequence[float]) -> List[v2.Transform]:
        """Random erasing that fills with ``value``, if on."""
        return [v2.RandomErasing(p=self.random_erase, value=list(value))] if self.random_erase else []


NO_AUGMENTATION = Augmentation()
"""The paper's: the crop and the flip alone."""


def eval_resize(image_size: int) -> int:
    """The short side evaluation resizes to before the centre crop: 256 for 224."""
    return int(round(image_size / 0.875))


def build_transform(
    train: bool, image_size: int = 224, min_scale: float = 0.08, augmentation: Augmentation = NO_AUGMENTATION,
    resize: Optional[int] = None,
) -> transforms.Compose:
    """The paper's (torchvision's) ImageNet pipeline at any size, on PIL images.

    Train: RandomResizedCrop with area scale in [min_scale, 1] and a horizontal flip, then the
    ``augmentation`` (random erasing on the normalised tensor, filling 0, as torchvision's recipe).
    Val: resize the short side to ``resize`` (default image_size / 0.875: 256 for 224), then a
    centre crop of image_size.
    """
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size, scale=(min_scale, 1.0)),
                transforms.RandomHorizontalFlip(),
                *augmentation.policy(),
                transforms.ToTensor(),
                normalize,
                *augmentation.erasing([0.0, 0.0, 0.0]),
            ]
        )
    return transforms.Compose(
        [
            transforms.Resize(resize or eval_resize(image_size)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            normalize,
        ]
    )


class CropDraw(NamedTuple):
    """One training sample's augmentation: the crop box in the source image and the flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


class RandomCropFlip:
    """RandomResizedCrop + RandomHorizontalFlip(0.5) on uint8 CxHxW tensors (``transforms.v2``),
    then the ``augmentation`` on the uint8 crop (random erasing fills ImageNet's mean colour).

    :meth:`draw` needs only the image's size, so a worker can draw a sample's crop from a JPEG
    header and leave the pixels to the device (utils.data.decode); calling the transform draws
    and applies it in one go.
    """

    def __init__(self, image_size: int, min_scale: float = 0.08, augmentation: Augmentation = NO_AUGMENTATION) -> None:
        self.size = image_size
        self.crop = v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True)
        self.augment = [*augmentation.policy(), *augmentation.erasing(MEAN_PIXEL)]

    def draw(self, height: int, width: int) -> CropDraw:
        """The box exactly as RandomResizedCrop draws it for an image of this size, then the flip."""
        stand_in = torch.empty(1, 1, 1).expand(3, height, width)  # a size, no pixels
        box = self.crop.make_params([stand_in])
        flip = bool(torch.rand(1) < 0.5)  # RandomHorizontalFlip(0.5)'s draw
        return CropDraw(box["top"], box["left"], box["height"], box["width"], flip)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = resized_crop_flip(image, self.draw(*image.shape[-2:]), self.size)
        for transform in self.augment:
            image = transform(image)
        return image


def resized_crop_flip(image: torch.Tensor, draw: CropDraw, size: int) -> torch.Tensor:
    """Cut ``draw``'s box out of a uint8 CxHxW image, resize it to size x size (bilinear,
    antialiased) and flip it if drawn; on any device.

    On the CPU the box is copied to channels_last first: torch's uint8 resize (AVX2) works on
    interleaved pixels, and handing it a contiguous HxWxC crop instead of a strided view of the
    whole image makes the step ~1.4x faster, with bitwise the same result. (On CUDA the resize
    copies to float32 anyway.)
    """
    box = image[..., draw.top : draw.top + draw.height, draw.left : draw.left + draw.width].unsqueeze(0)
    if box.device.type == "cpu":
        box = box.contiguous(memory_format=torch.channels_last)
    resized = F.resize(box, [size, size], antialias=True)[0]
    return resized.flip(-1) if draw.flip else resized


class FastEvalTransform:
    """Resize the short side to ``resize`` (default image_size / 0.875), then a centre crop of
    image_size, on uint8 CxHxW tensors."""

    def __init__(self, image_size: int, resize: Optional[int] = None) -> None:
        self.size = image_size
        self.resize = resize or eval_resize(image_size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        resized = F.resize(image.unsqueeze(0).contiguous(memory_format=torch.channels_last), [self.resize], antialias=True)
        return F.center_crop(resized, [self.size, self.size])[0]


def fast_transform(
    train: bool, image_size: int, min_scale: float = 0.08, augmentation: Augmentation = NO_AUGMENTATION,
    resize: Optional[int] = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fast pipeline's transform for a split: uint8 CxHxW in, uint8 3 x image_size x image_size out."""
    return RandomCropFlip(image_size, min_scale, augmentation) if train else FastEvalTransform(image_size, resize)


class BatchMix:
    """Mixup and CutMix of a normalised batch on its device (``transforms.v2.MixUp``/``CutMix``):
    with both on, one of the two per batch at equal odds, as torchvision's and timm's recipes
    pick. Returns the mixed images and each image's per-class target weights (summing to one).

    The draws (the mixing weight, CutMix's box, the choice) are torch's CPU generator's, seeded
    per call (``seed``: the run's, epoch's, step's and process's, utils.reproducibility.step_seed),
    so that a resumed run mixes as the run that never stopped did.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        choices: List[v2.Transform] = []
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if not choices:
            raise ValueError("BatchMix needs mixup_alpha or cutmix_alpha above 0")
        self.transform = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
        with cpu_draws_seeded(seed):
            return self.transform(images, labels)


@functools.lru_cache(maxsize=None)
def _mean_std(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's mean and std as (1, 3, 1, 1) tensors on ``device``, made once: a fresh tensor
    per batch would be a blocking host-to-device copy every step."""
    shape = (1, 3, 1, 1)
    return (torch.tensor(IMAGENET_MEAN).view(shape).to(device), torch.tensor(IMAGENET_STD).view(shape).to(device))


def normalize_(images: torch.Tensor) -> torch.Tensor:
    """Normalise a float32 batch of 0..255 pixel values in place, as ``ToTensor`` + ``Normalize``
    do per image in the PIL pipeline, with the same operations in the same order: on the CPU
    the result is bitwise theirs."""
    mean, std = _mean_std(images.device)
    return images.div_(255).sub_(mean).div_(std)

"""The datasets: ImageNet-style ImageFolders in either pipeline, or synthetic data of the same shape.

Images come in two pipelines (utils.data.transforms): ``pil``, the original's float32 tensors, and
``fast``, uint8 tensors decoded by TorchCodec (utils.data.decode) that the training loop
normalises on the device. A file that cannot be decoded becomes an :class:`UnreadableImage`
(utils.data.decode's, which keeps the decoder's message) instead of an exception, so that one
corrupt file does not end a days-long epoch.
"""

import os
from typing import Any, Optional, Tuple, Union

import torch
from torch.utils.data import Dataset
from torchvision import datasets

from utils.console import EXIT_BAD_INPUT, OneLineError
from utils.data.decode import UNREADABLE, EncodedCrops, UnreadableImage, read_encoded, read_rgb, unreadable_reason
from utils.data.transforms import NO_AUGMENTATION, Augmentation, build_transform, fast_transform

__all__ = [
    "DATASET_PIPELINES",
    "IMAGENET_VAL_SIZE",
    "IMAGENET_TRAIN_SIZE",
    "DataError",
    "SyntheticImages",
    "UnreadableImage",
    "SkippingImageFolder",
    "image_folder",
    "build_dataset",
]

IMAGENET_TRAIN_SIZE = 1_281_167


IMAGENET_VAL_SIZE = 50_000


class DataError(OneLineError):
    """The data cannot be used; ``str()`` is one line meant for the user."""

    exit_status = EXIT_BAD_INPUT


class SyntheticImages(Dataset):
    """Normalised-looking random images with cyclic labels, generated per index (no disk, no decoding).

    For measuring training speed without a dataset (``--dummy``); sample i is the same every time.
    """

    def __init__(self, length: int, num_classes: int, image_size: int) -> None:
        self.length = length
        self.num_classes = num_classes
        self.image_size = image_size
        self.classes = [str(c) for c in range(num_classes)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(index)
        image = torch.randn(3, self.image_size, self.image_size, generator=generator)
        return image, index % self.num_classes


class SkippingImageFolder(datasets.ImageFolder):
    """An ImageFolder that returns an :class:`UnreadableImage` for a file its loader cannot
    decode (corrupt, truncated, not an image) instead of raising inside a worker."""

    def __getitem__(self, index: int) -> Union[Tuple[Any, int], UnreadableImage]:
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except UNREADABLE as error:
            return UnreadableImage(path, unreadable_reason(error))
        return self.transform(image), target


DATASET_PIPELINES = ("fast", "pil", "encoded")
"""``encoded``: the ``--decode-device`` training samples, for :class:`DeviceDecodedLoader`."""


def image_folder(
    folder: str, train: bool, image_size: int, min_scale: float = 0.08, pipeline: str = "pil",
    augmentation: Augmentation = NO_AUGMENTATION, resize: Optional[int] = None,
) -> SkippingImageFolder:
    """``folder/<class>/<image>`` with the training or evaluation transform of ``pipeline`` (one
    of :data:`DATASET_PIPELINES`): crops of ``image_size``, training ones with ``augmentation``
    after the crop and flip (not in the ``encoded`` pipeline, which crops on the device),
    evaluation ones from the short side resized to ``resize`` (default image_size / 0.875)."""
    if pipeline == "pil":
        transform, loader = build_transform(train, image_size, min_scale, augmentation, resize), datasets.folder.default_loader
    elif pipeline == "fast":
        transform, loader = fast_transform(train, image_size, min_scale, augmentation, resize), read_rgb
    else:
        transform, loader = EncodedCrops(image_size, min_scale), read_encoded
    return SkippingImageFolder(folder, transform, loader=loader)


def build_dataset(
    root: str, split: str, image_size: int, min_scale: float = 0.08, pipeline: str = "pil",
    augmentation: Augmentation = NO_AUGMENTATION, resize: Optional[int] = None,
) -> SkippingImageFolder:
    """``root/split`` as an :func:`image_folder` with the split's transform; problems are DataErrors."""
    if not os.path.isdir(root):
        raise DataError(f"data directory {root} does not exist")
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise DataError(f"{root} has no {split}/ folder (expected {split}/<class>/<image>.JPEG)")
    try:
        return image_folder(folder, split == "train", image_size, min_scale, pipeline, augmentation, resize)
    except (FileNotFoundError, RuntimeError) as error:
        raise DataError(f"{folder}: {str(error).splitlines()[0]}") from None

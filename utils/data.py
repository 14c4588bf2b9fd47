"""Datasets, transforms and loaders: ImageNet-style ImageFolders or synthetic data of the same shape.

The data order is a pure function of (seed, epoch, rank), and each training sample's
augmentation a pure function of (seed, epoch, dataset index): a run resumed at any step sees
exactly the batches an uninterrupted run would have, whatever the number of workers (``-j``)
and whichever worker drew the sample.

Loaders yield ``(images, targets, unreadable)``: a corrupt or truncated image file does not end
a days-long epoch; it is dropped from its batch and its path comes back in ``unreadable``, through
the batch itself so that it survives worker processes. The caller decides to skip or stop.
"""

import os
from typing import Any, Callable, Iterator, List, NamedTuple, Optional, Sequence, Sized, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate
from torchvision import datasets, transforms

from .distributed import DistributedContext
from .reproducibility import epoch_seed, sample_seed, seed_worker

__all__ = [
    "DataError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENET_TRAIN_SIZE",
    "IMAGENET_VAL_SIZE",
    "build_transform",
    "build_dataset",
    "UnreadableImage",
    "SkippingImageFolder",
    "collate_readable",
    "SyntheticImages",
    "ShardSampler",
    "SeededSamples",
    "ResumableSampler",
    "build_loader",
    "start_epoch",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_TRAIN_SIZE = 1_281_167
IMAGENET_VAL_SIZE = 50_000


class DataError(Exception):
    """The data cannot be used; ``str()`` is one line meant for the user."""


def build_transform(train: bool, image_size: int = 224, min_scale: float = 0.08) -> transforms.Compose:
    """The paper's (torchvision's) ImageNet pipeline at any size.

    Train: RandomResizedCrop with area scale in [min_scale, 1] and a horizontal flip.
    Val: resize the short side to image_size / 0.875 (256 for 224), then a centre crop.
    """
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size, scale=(min_scale, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )
    return transforms.Compose(
        [
            transforms.Resize(int(round(image_size / 0.875))),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            normalize,
        ]
    )


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


class UnreadableImage(NamedTuple):
    """Stands in for a sample whose file could not be decoded."""

    path: str


class SkippingImageFolder(datasets.ImageFolder):
    """An ImageFolder that returns an :class:`UnreadableImage` for a file PIL cannot decode
    (corrupt, truncated, not an image) instead of raising inside a worker."""

    def __getitem__(self, index: int) -> Union[Tuple[Any, int], UnreadableImage]:
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except (OSError, ValueError, SyntaxError):  # what PIL raises for undecodable files
            return UnreadableImage(path)
        return self.transform(image), target


def collate_readable(batch: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Default collation of the readable samples, plus the paths of the unreadable ones.

    A batch with no readable sample has zero images, for the caller to skip.
    """
    unreadable = [sample.path for sample in batch if isinstance(sample, UnreadableImage)]
    readable = [sample for sample in batch if not isinstance(sample, UnreadableImage)]
    if not readable:
        return torch.empty(0), torch.empty(0, dtype=torch.long), unreadable
    images, targets = default_collate(readable)
    return images, targets, unreadable


def build_dataset(root: str, split: str, image_size: int, min_scale: float = 0.08) -> SkippingImageFolder:
    """``root/split`` as an ImageFolder with the split's transform; problems are DataErrors."""
    if not os.path.isdir(root):
        raise DataError(f"data directory {root} does not exist")
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise DataError(f"{root} has no {split}/ folder (expected {split}/<class>/<image>.JPEG)")
    try:
        return SkippingImageFolder(folder, build_transform(split == "train", image_size, min_scale))
    except (FileNotFoundError, RuntimeError) as error:
        raise DataError(f"{folder}: {str(error).splitlines()[0]}") from None


class ShardSampler(Sampler):
    """Every ``world_size``-th index from ``rank``, in order, without the padding
    DistributedSampler adds, so that summed evaluation counts are exact."""

    def __init__(self, dataset: Sized, context: DistributedContext) -> None:
        self.indices = range(context.rank, len(dataset), context.world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededSamples(Dataset):
    """Draws each sample with torch's random generator seeded from (seed, epoch, index).

    Random transforms (torchvision's crops and flips use torch's CPU generator) then give a
    sample the same augmentation whichever worker process loads it, with any number of
    workers, and after a resume. The generator's state is put back after each sample, so
    loading in the main process (``-j 0``) does not disturb the training's own random numbers.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        # The CPU generator alone: torch.manual_seed would also seed every accelerator, ~100x slower.
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, self.epoch, index))
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can begin an epoch part-way through (``start``, in samples of
    this rank), so that a mid-epoch resume skips the batches already trained without loading them."""

    start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def build_loader(
    dataset: Dataset,
    train: bool,
    batch_size: int,
    workers: int,
    seed: int,
    context: DistributedContext,
    pin_memory: bool,
    collate_fn: Optional[Callable[[Sequence[Any]], Any]] = None,
) -> DataLoader:
    """Training loaders shuffle per (seed, epoch) across ranks and seed each sample's
    augmentation (:class:`SeededSamples`); evaluation loaders shard in order.

    Batches are ``(images, targets, unreadable paths)``; see :func:`collate_readable`, the
    default ``collate_fn`` (detection passes one that keeps images and targets as lists).

    Call :func:`start_epoch` before iterating a training loader.
    """
    sampler: Sampler
    if train:
        sampler = ResumableSampler(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed)
        dataset = SeededSamples(dataset, seed)
    else:
        sampler = ShardSampler(dataset, context)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate_fn or collate_readable,
        worker_init_fn=seed_worker,
        generator=torch.Generator(),
    )


def start_epoch(loader: DataLoader, epoch: int, step: int = 0) -> None:
    """Fix this epoch's data order and augmentations, starting after the first ``step`` batches
    (a mid-epoch resume); ``len(loader)`` is then the number of batches left."""
    sampler: ResumableSampler = loader.sampler
    sampler.set_epoch(epoch)
    sampler.start = min(step * loader.batch_size, sampler.num_samples)
    loader.dataset.epoch = epoch
    loader.generator.manual_seed(epoch_seed(sampler.seed, epoch, sampler.rank))

"""The loaders: batches in an order that is a pure function of (seed, epoch, rank), each training
sample's augmentation a pure function of (seed, epoch, dataset index), so that a run resumed at
any step sees exactly the batches an uninterrupted run would have, whatever the number of
workers (``-j``) and whichever worker drew the sample.

Loaders yield ``(images, targets, unreadable)``: a corrupt or truncated image file is dropped
from its batch and comes back in ``unreadable`` as ``PATH (REASON)`` (the decoder's message),
through the batch itself so that it survives worker processes. The caller decides to skip or stop. With ``--decode-device`` the
training loader's workers hand over JPEG bytes and crop boxes instead, and
:class:`DeviceDecodedLoader` decodes each batch on the device.
"""

from typing import Any, Callable, Iterator, List, Optional, Sequence, Sized, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

from utils.data.decode import EncodedBatch, UnreadableImage, decode_on_device
from utils.distributed import DistributedContext
from utils.reproducibility import cpu_draws_seeded, epoch_seed, sample_seed, seed_worker

__all__ = [
    "IN_FLIGHT_BATCHES",
    "split_unreadable",
    "collate_readable",
    "collate_encoded",
    "DeviceDecodedLoader",
    "ShardSampler",
    "SeededSamples",
    "ResumableSampler",
    "RepeatedAugmentationSampler",
    "build_loader",
    "start_epoch",
]


def split_unreadable(batch: Sequence[Any]) -> Tuple[List[Any], List[str]]:
    """(the readable samples, ``PATH (REASON)`` of each unreadable one)."""
    unreadable = [str(sample) for sample in batch if isinstance(sample, UnreadableImage)]
    return [sample for sample in batch if not isinstance(sample, UnreadableImage)], unreadable


def collate_readable(batch: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Default collation of the readable samples, plus ``PATH (REASON)`` of the unreadable ones.

    A batch with no readable sample has zero images, for the caller to skip.
    """
    readable, unreadable = split_unreadable(batch)
    if not readable:
        return torch.empty(0), torch.empty(0, dtype=torch.long), unreadable
    images, targets = default_collate(readable)
    return images, targets, unreadable


def collate_encoded(batch: Sequence[Any]) -> Tuple[EncodedBatch, torch.Tensor, List[str]]:
    """:func:`collate_readable` for the ``--decode-device`` samples."""
    readable, unreadable = split_unreadable(batch)
    targets = torch.tensor([target for _, target in readable], dtype=torch.long)
    return EncodedBatch([image for image, _ in readable]), targets, unreadable


class DeviceDecodedLoader:
    """A training DataLoader of :class:`EncodedBatch`es whose batches come out decoded,
    cropped, resized and flipped on ``device`` (utils.data.decode.decode_on_device): uint8 batches
    as the fast pipeline's, plus the files that turned out unreadable there.

    Everything else (length, sampler, batch size, :func:`start_epoch`) is the DataLoader's.
    """

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader = loader
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, List[str]]]:
        for batch, targets, unreadable in self.loader:
            images, kept, failed = decode_on_device(batch.items(), self.device)
            yield images, targets[kept], unreadable + failed


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

    Samples are asked for by ``(epoch, draw)`` (:class:`ResumableSampler` yields these): the
    workers persist across epochs, so the epoch travels with each index rather than as state
    set in the main process, which a worker's copy of the dataset would never see. ``draw`` is
    the dataset index, plus ``copy * len(dataset)`` for the further copies of a sample that
    :class:`RepeatedAugmentationSampler` draws: the same image, its own augmentation.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        epoch, draw = key
        with cpu_draws_seeded(sample_seed(self.seed, epoch, draw)):
            return self.dataset[draw % len(self.dataset)]


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can begin an epoch part-way through (``start``, in samples of
    this rank), so that a mid-epoch resume skips the batches already trained without loading
    them. It yields ``(epoch, index)`` keys for :class:`SeededSamples`."""

    start = 0

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter([(self.epoch, index) for index in list(super().__iter__())[self.start :]])

    def __len__(self) -> int:
        return self.num_samples - self.start


class RepeatedAugmentationSampler(ResumableSampler):
    """Repeated augmentation (Hoffer et al. 2020; DeiT's RASampler, torchvision's ``--ra-sampler``):
    each epoch shuffles the dataset per (seed, epoch), takes every sample ``repeats`` times in a
    row and deals the list round-robin to the processes, so that the copies of a sample land on
    different processes (on one process, in one batch), each with its own augmentation. An epoch
    has as many samples as without repetition (the list is cut there), so its length, lr
    schedule and checkpoints are those of an ordinary epoch; it resumes part-way as
    :class:`ResumableSampler` does.
    """

    def __init__(self, dataset: Sized, repeats: int, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.repeats = repeats

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        size = len(self.dataset)
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(size, generator=generator).tolist()
        draws = [index + copy * size for index in order for copy in range(self.repeats)]
        while len(draws) < self.total_size:  # fewer samples than processes: wrap around, as DistributedSampler pads
            draws += draws[: self.total_size - len(draws)]
        mine = draws[self.rank : self.total_size : self.num_replicas]
        return iter([(self.epoch, draw) for draw in mine[self.start :]])


IN_FLIGHT_BATCHES = 8
"""Batches the workers of one loader prepare ahead, at least: enough to ride out slow batches
(large images) with few workers; more workers get DataLoader's 2 each. uint8 batches make
them cheap: 8 batches of 256 crops of 224 x 224 are 1.2 GB of float32 but 308 MB of uint8."""


def build_loader(
    dataset: Dataset,
    train: bool,
    batch_size: int,
    workers: int,
    seed: int,
    context: DistributedContext,
    pin_memory: bool,
    collate_fn: Optional[Callable[[Sequence[Any]], Any]] = None,
    decode_device: Optional[torch.device] = None,
    repeats: int = 1,
) -> Union[DataLoader, DeviceDecodedLoader]:
    """Training loaders shuffle per (seed, epoch) across ranks and seed each sample's
    augmentation (:class:`SeededSamples`), with ``repeats`` > 1 each sample that many times
    (:class:`RepeatedAugmentationSampler`); evaluation loaders shard in order. Workers persist
    across epochs.

    Batches are ``(images, targets, unreadable files)``; see :func:`collate_readable`, the
    default ``collate_fn`` (detection passes one that keeps images and targets as lists).
    ``decode_device``: the dataset is the ``encoded`` pipeline's, decoded there
    (:class:`DeviceDecodedLoader`).

    Call :func:`start_epoch` before iterating a training loader.
    """
    sampler: Sampler
    if train and repeats > 1:
        sampler = RepeatedAugmentationSampler(dataset, repeats, num_replicas=context.world_size, rank=context.rank, seed=seed)
        dataset = SeededSamples(dataset, seed)
    elif train:
        sampler = ResumableSampler(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed)
        dataset = SeededSamples(dataset, seed)
    else:
        sampler = ShardSampler(dataset, context)
    if decode_device is not None:
        collate_fn = collate_encoded
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate_fn or collate_readable,
        worker_init_fn=seed_worker,
        generator=torch.Generator(),
        persistent_workers=workers > 0,
        prefetch_factor=max(2, -(-IN_FLIGHT_BATCHES // workers)) if workers else None,
    )
    return loader if decode_device is None else DeviceDecodedLoader(loader, decode_device)


def start_epoch(loader: Union[DataLoader, DeviceDecodedLoader], epoch: int, step: int = 0) -> None:
    """Fix this epoch's data order and augmentations, starting after the first ``step`` batches
    (a mid-epoch resume); ``len(loader)`` is then the number of batches left."""
    sampler: ResumableSampler = loader.sampler
    sampler.set_epoch(epoch)
    sampler.start = min(step * loader.batch_size, sampler.num_samples)
    loader.generator.manual_seed(epoch_seed(sampler.seed, epoch, sampler.rank))

"""The detection training epoch, the 1x learning-rate schedule, and the COCO evaluation pass.

The counterpart of :mod:`utils.training.engine` for torchvision's detection interface: batches are
lists of images and target dicts, the model returns a dict of losses in training and a list
of detections in evaluation. What both loops share comes from :mod:`utils.training.engine` itself:
unreadable images are skipped or stop the run (``--bad-images``), and a non-finite loss is
recorded on the device without a host sync and read where the loop syncs anyway (progress
lines, the end of the epoch), so it stops training before anything is saved.
"""

import bisect
import functools
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.distributed import DistributedContext, all_reduce_sum, gather_objects
from utils.longrun.preemption import StopSignal
from utils.longrun.resume import CheckpointSchedule, EpochProgress
from utils.training.engine import StepControl, optimizer_step, readable_batches, report_unreadable, set_learning_rate
from utils.training.metrics import format_duration

from .coco import CocoDetection
from .coco_eval import detections_to_results, evaluate_coco, merge_results

__all__ = [
    "DetectionSchedule",
    "LossTotals",
    "move_to_device",
    "train_one_epoch",
    "predict_dataset",
    "evaluate",
]

Log = Callable[[str], None]
Target = Dict[str, Any]


class DetectionSchedule:
    """MMDetection v1's 1x schedule: lr / 10 after the decay epochs, and a linear warm-up over
    the first ``warmup_iters`` steps of the run from ``warmup_ratio`` of the lr.

    The lr is a pure function of (epoch, step), so a resumed run follows it exactly.
    """

    def __init__(
        self,
        base_lr: float,
        steps_per_epoch: int,
        decay_epochs: Sequence[int] = (8, 11),
        gamma: float = 0.1,
        warmup_iters: int = 500,
        warmup_ratio: float = 1.0 / 3.0,
    ) -> None:
        self.base_lr = base_lr
        self.steps_per_epoch = steps_per_epoch
        self.decay_epochs = sorted(decay_epochs)
        self.gamma = gamma
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio

    def epoch_lr(self, epoch: int) -> float:
        """The lr after warm-up in this epoch (what the CSV records)."""
        return self.base_lr * self.gamma ** bisect.bisect_right(self.decay_epochs, epoch)

    def __call__(self, epoch: int, step: int) -> float:
        lr = self.epoch_lr(epoch)
        iteration = epoch * self.steps_per_epoch + step
        if iteration < self.warmup_iters:
            # v1's 'linear' warm-up: lr * (1 - (1 - i / warmup_iters) * (1 - ratio)).
            lr *= 1.0 - (1.0 - iteration / self.warmup_iters) * (1.0 - self.warmup_ratio)
        return lr


class LossTotals:
    """Image-weighted sums of each loss (and their total) on the device, read only when printed.

    The loss names come with the first step (they depend on the detector); a resumed epoch
    restores the sums of the steps before it with :meth:`restore`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.names: List[str] = []
        self.sums: Optional[torch.Tensor] = None
        self.images = 0
        self.start = time.perf_counter()
        self.earlier_seconds = 0.0

    def restore(self, sums: torch.Tensor, images: int, seconds: float) -> None:
        """Continue from a mid-epoch checkpoint's sums, image count and seconds."""
        self.sums = sums.to(self.device, torch.float64).clone()
        self.images = images
        self.earlier_seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start + self.earlier_seconds

    def row(self, size: int) -> torch.Tensor:
        """The sums (zeros before any step) and the image count, as one float64 row."""
        sums = self.sums if self.sums is not None else torch.zeros(size, dtype=torch.float64, device=self.device)
        return torch.cat([sums, sums.new_tensor([float(self.images)])])

    def update(self, losses: Dict[str, torch.Tensor], total: torch.Tensor, images: int) -> torch.Tensor:
        """Add one step; returns that step's values (total first) as one device tensor."""
        if not self.names:
            self.names = ["loss", *losses]
        if self.sums is None:
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
        values = torch.stack([total.detach(), *(losses[name].detach() for name in self.names[1:])]).double()
        self.sums += values * images
        self.images += images
        return values

    def summary(self, context: Optional[DistributedContext] = None, names: Sequence[str] = ()) -> Dict[str, float]:
        """Averages per image so far; with a context, over all processes (every rank must call it).

        ``names`` gives the loss names when this process has not trained a step (all ranks
        must reduce tensors of one size).
        """
        names = self.names or list(names)
        if not names and self.sums is not None:  # a resumed epoch that had no step left to run
            names = ["loss", *(f"loss_{index}" for index in range(1, len(self.sums)))]
        sums = self.sums.clone() if self.sums is not None else torch.zeros(len(names), dtype=torch.float64, device=self.device)
        counts = torch.tensor([float(self.images)], dtype=torch.float64, device=self.device)
        if context is not None:
            all_reduce_sum(sums, context)
            all_reduce_sum(counts, context)
        count = counts.item()
        elapsed = self.elapsed()
        averages = {name: value / max(count, 1.0) for name, value in zip(names, sums.tolist())}
        return {**averages, "images": int(count), "images_per_s": count / elapsed if elapsed > 0 else 0.0, "seconds": elapsed}


def move_to_device(
    images: Sequence[torch.Tensor], targets: Sequence[Target], device: torch.device
) -> Tuple[List[torch.Tensor], List[Target]]:
    """Images and the tensors of each target dict onto ``device`` (other values stay as they are)."""
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [
        {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value for key, value in target.items()}
        for target in targets
    ]
    return images, targets


def _loss_line(values: torch.Tensor, totals: Dict[str, float], names: Sequence[str]) -> str:
    current = values.tolist()
    parts = [f"loss {current[0]:.4f} ({totals['loss']:.4f})"]
    parts += [f"{name.removeprefix('loss_')} {value:.4f}" for name, value in zip(names[1:], current[1:])]
    return "  ".join(parts)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    epoch: int,
    schedule: DetectionSchedule,
    context: DistributedContext,
    log: Log,
    print_freq: int = 20,
    amp_dtype: Optional[torch.dtype] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    clip_grad_norm: Optional[float] = 35.0,
    bad_images: str = "skip",
    resume_from: Optional[EpochProgress] = None,
    stop: Optional[StopSignal] = None,
    checkpoints: Optional[CheckpointSchedule] = None,
    save_progress: Optional[Callable[[EpochProgress], None]] = None,
) -> Dict[str, float]:
    """Train one pass over ``loader`` with the lr of ``schedule`` at every step.

    Returns each loss averaged per image over all processes, ``images_per_s``, ``seconds``
    and the number of ``unreadable`` files skipped. Raises NonFiniteLossError if the loss
    diverged, before the caller saves anything.

    Long runs work as utils.training.engine.train_one_epoch's: ``resume_from`` continues an epoch a
    mid-epoch checkpoint stopped (the loader started after its steps); with ``save_progress``
    the epoch calls it on every rank with its :class:`EpochProgress` at the steps
    ``checkpoints`` names and when ``stop`` has caught a signal, then raises TrainingStopped.
    A progress row per process holds the loss sums, the image count and the skipped files.
    """
    model.train()
    totals = LossTotals(device)
    first_step = unreadable_before = 0
    if resume_from is not None:
        own = resume_from.totals[context.rank]
        totals.restore(own[:-2], int(own[-2].item()), resume_from.seconds)
        first_step, unreadable_before = resume_from.step, int(own[-1].item())
    steps = first_step + len(loader)
    unreadable: List[str] = []
    control = StepControl(epoch, steps, print_freq, loader.batch_size, device, context, stop, checkpoints, save_progress)
    lr = schedule(epoch, first_step)
    for step, images, targets in readable_batches(loader, bad_images, unreadable, first_step):
        lr = schedule(epoch, step)
        set_learning_rate(optimizer, lr)
        images, targets = move_to_device(images, targets, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer_step(loss, optimizer, scaler, clip_grad_norm)
        values = totals.update(losses, loss, len(images))
        printing, saving = control.after_step(step, loss)
        if printing:
            running = totals.summary()
            eta = (time.perf_counter() - totals.start) / (step - first_step + 1) * (steps - step - 1)
            log(
                f"Epoch: [{epoch}][{step:>{len(str(steps))}}/{steps}]  {_loss_line(values, running, totals.names)}  "
                f"lr {lr:.5g}  {running['images_per_s'] * context.world_size:.1f} img/s  eta {format_duration(eta)}"
            )
        if saving:
            size = len(_agreed_loss_names(totals.names, context))
            control.save(step, totals.row(size), len(unreadable) + unreadable_before, totals.elapsed())
    control.finish()
    loss_names = _agreed_loss_names(totals.names, context)
    summary = totals.summary(context, loss_names)
    summary["unreadable"] = report_unreadable(unreadable, device, context, log, f"Epoch: [{epoch}]", unreadable_before)
    summary["lr"] = schedule.epoch_lr(epoch)
    return summary


def _agreed_loss_names(names: List[str], context: DistributedContext) -> List[str]:
    """The loss names of any process that trained a step, so every rank reduces one tensor size."""
    return next((found for found in gather_objects(names, context) if found), names)


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    context: DistributedContext,
    log: Log,
    to_results: Callable[[Iterable[Tuple[int, Dict[str, torch.Tensor]]]], List[Dict[str, Any]]],
    print_freq: int = 20,
    amp_dtype: Optional[torch.dtype] = None,
    bad_images: str = "skip",
) -> Tuple[List[Dict[str, Any]], List[int], int]:
    """Run the model over this process's share of ``loader``; returns (COCO result entries, the
    ids of the images it ran on, the number of unreadable files all processes skipped).

    Each batch's detections become COCO result entries right away (``to_results`` takes
    ``(image_id, detections)`` pairs): masks are RLE-encoded per batch, so a whole
    validation set's full-size mask probabilities are never held at once.
    Pass the unwrapped model under DDP (ranks may hold different numbers of batches).
    """
    model.eval()
    results: List[Dict[str, Any]] = []
    image_ids: List[int] = []
    steps = len(loader)
    unreadable: List[str] = []
    start = time.perf_counter()
    images_done = 0
    for step, images, targets in readable_batches(loader, bad_images, unreadable):
        images = [image.to(device, non_blocking=True) for image in images]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
        outputs = [{key: value.float().cpu() for key, value in output.items()} for output in outputs]
        batch_ids = [int(target["image_id"]) for target in targets]
        results.extend(to_results(list(zip(batch_ids, outputs))))
        image_ids.extend(batch_ids)
        images_done += len(images)
        if print_freq and (step % print_freq == 0 or step == steps - 1):
            elapsed = time.perf_counter() - start
            rate = images_done / elapsed if elapsed > 0 else 0.0
            eta = elapsed / (step + 1) * (steps - step - 1)
            log(f"Test: [{step:>{len(str(steps))}}/{steps}]  {rate * context.world_size:.1f} img/s  eta {format_duration(eta)}")
    return results, image_ids, report_unreadable(unreadable, device, context, log, "Test:")


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    dataset: CocoDetection,
    device: torch.device,
    context: DistributedContext,
    log: Log,
    iou_types: Sequence[str] = ("bbox",),
    results_file: Optional[str] = None,
    print_freq: int = 20,
    amp_dtype: Optional[torch.dtype] = None,
    bad_images: str = "skip",
) -> Optional[Dict[str, List[float]]]:
    """COCO evaluation of ``model`` on ``dataset`` with pycocotools, the detections of all
    processes gathered on rank 0, which prints the summary and the `` * bbox AP`` lines and
    writes ``results_file``. Returns the 12 COCOeval stats per IoU type on rank 0, None elsewhere.

    Images that could not be read are left out of the evaluation, not counted as misses.
    """
    to_results = functools.partial(detections_to_results, category_ids=dataset.category_ids)
    results, image_ids, _ = predict_dataset(model, loader, device, context, log, to_results, print_freq, amp_dtype, bad_images)
    gathered_results = gather_objects(results, context)
    gathered_ids = gather_objects(image_ids, context)
    if not context.is_main:
        return None
    evaluated = sorted({image_id for ids in gathered_ids for image_id in ids})
    return evaluate_coco(dataset.coco, merge_results(gathered_results), iou_types, results_file, evaluated, log)

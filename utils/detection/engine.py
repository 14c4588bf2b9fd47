"""COCO detection as a task of the shared training run (see utils/training/run.py), and the
COCO evaluation pass.

The counterpart of :mod:`utils.training.classification` for torchvision's detection interface:
batches are lists of images and target dicts, the model returns a dict of losses in training
and a list of detections in evaluation. The training epoch itself is
:func:`utils.training.engine.train_one_epoch`, which every task shares: unreadable images are
skipped or stop the run (``--bad-images``), and a non-finite loss is recorded on the device
without a host sync and read where the loop syncs anyway (progress lines, the end of the
epoch), so it stops training before anything is saved.
"""

import functools
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.distributed import DistributedContext, all_reduce_sum, gather_objects
from utils.longrun.resume import EpochProgress
from utils.training.config import RunConfig
from utils.training.engine import readable_batches, report_unreadable
from utils.training.metrics import format_duration

from .coco import CocoDetection
from .coco_eval import detections_to_results, evaluate_coco, merge_results

__all__ = [
    "CSV_FIELDS",
    "LossTotals",
    "DetectionTask",
    "move_to_device",
    "predict_dataset",
    "evaluate",
]

Target = Dict[str, Any]

CSV_FIELDS = (
    "epoch", "lr", "train_loss", "train_images_per_s",
    "val_bbox_AP", "val_bbox_AP50", "val_bbox_AP75", "val_segm_AP", "val_segm_AP50", "val_segm_AP75", "epoch_seconds",
)
"""detect.py's log.csv columns: AP in percent, nan for epochs without an evaluation (--eval-interval) and segm without masks."""


class LossTotals:
    """A training epoch's image-weighted sums of each loss (and their total) on the device, read
    only when printed, and its progress line.

    The loss names come with the first step (they depend on the detector); a resumed epoch
    restores the sums of the steps before it with :meth:`restore`.
    """

    def __init__(self, config: RunConfig) -> None:
        self.device = config.device
        self.world_size = config.context.world_size
        self.names: List[str] = []
        self.sums: Optional[torch.Tensor] = None
        self.images = 0
        self.values: Optional[torch.Tensor] = None
        self.start = time.perf_counter()
        self.earlier_seconds = 0.0
        self.first_step = 0

    def restore(self, row: torch.Tensor, progress: EpochProgress) -> None:
        """Continue from a mid-epoch checkpoint's row (the sums, then the image count) after its steps and seconds."""
        self.sums = row[:-1].to(self.device, torch.float64).clone()
        self.images = int(row[-1].item())
        self.earlier_seconds = progress.seconds
        self.first_step = progress.step

    def elapsed(self) -> float:
        return time.perf_counter() - self.start + self.earlier_seconds

    def row(self, context: DistributedContext) -> torch.Tensor:
        """The sums (zeros before any step) and the image count, as one float64 row of the same
        size on every rank (a collective: the loss names are agreed first)."""
        size = len(_agreed_loss_names(self.names, context))
        sums = self.sums if self.sums is not None else torch.zeros(size, dtype=torch.float64, device=self.device)
        return torch.cat([sums, sums.new_tensor([float(self.images)])])

    def update(self, loss: torch.Tensor, record: Tuple[Dict[str, torch.Tensor], int]) -> None:
        """Add one step: its total ``loss`` and ``record``, (the detector's losses, the image count)."""
        losses, images = record
        if not self.names:
            self.names = ["loss", *losses]
        if self.sums is None:
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
        self.values = torch.stack([loss.detach(), *(losses[name].detach() for name in self.names[1:])]).double()
        self.sums += self.values * images
        self.images += images

    def progress_line(self, epoch: int, step: int, steps: int, lr: float) -> str:
        """The step's losses (the total also as the average so far), lr, speed and time left."""
        running = self._averages()
        eta = (time.perf_counter() - self.start) / (step - self.first_step + 1) * (steps - step - 1)
        current = self.values.tolist()
        losses = [f"loss {current[0]:.4f} ({running['loss']:.4f})"]
        losses += [f"{name.removeprefix('loss_')} {value:.4f}" for name, value in zip(self.names[1:], current[1:])]
        return (
            f"Epoch: [{epoch}][{step:>{len(str(steps))}}/{steps}]  {'  '.join(losses)}  "
            f"lr {lr:.5g}  {running['images_per_s'] * self.world_size:.1f} img/s  eta {format_duration(eta)}"
        )

    def summary(self, context: DistributedContext) -> Dict[str, float]:
        """Averages per image over all processes (every rank must call it)."""
        return self._averages(context, _agreed_loss_names(self.names, context))

    def _averages(self, context: Optional[DistributedContext] = None, names: Sequence[str] = ()) -> Dict[str, float]:
        """Averages per image so far; with a context, over all processes.

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


def _agreed_loss_names(names: List[str], context: DistributedContext) -> List[str]:
    """The loss names of any process that trained a step, so every rank reduces one tensor size."""
    return next((found for found in gather_objects(names, context) if found), names)


class DetectionTask:
    """Training a torchvision detector (it returns its losses), evaluated with pycocotools on
    ``val_set`` through ``val_loader`` with ``eval_model`` (the unwrapped model under DDP) for
    ``iou_types``, the detections written to ``results_file``; the best epoch is the one with the
    best bbox AP."""

    best_key = "best_ap"
    no_best = -1.0
    csv_fields: Sequence[str] = CSV_FIELDS

    def __init__(
        self, val_loader: DataLoader, val_set: CocoDetection, eval_model: nn.Module, iou_types: Sequence[str], results_file: str
    ) -> None:
        self.val_loader = val_loader
        self.val_set = val_set
        self.eval_model = eval_model
        self.iou_types = iou_types
        self.results_file = results_file

    def forward(
        self, model: nn.Module, images: Sequence[torch.Tensor], targets: Sequence[Target], config: RunConfig, position: Tuple[int, int]
    ) -> Tuple[torch.Tensor, Any]:
        images, targets = move_to_device(images, targets, config.device)
        with torch.autocast(config.device.type, dtype=config.amp_dtype, enabled=config.amp_dtype is not None):
            losses = model(images, targets)
        return sum(losses.values()), (losses, len(images))

    def epoch_totals(self, config: RunConfig) -> LossTotals:
        return LossTotals(config)

    def evaluate(self, config: RunConfig) -> Optional[Dict[str, List[float]]]:
        return evaluate(self.eval_model, self.val_loader, self.val_set, config, self.iou_types, self.results_file)

    def score(self, stats: Dict[str, List[float]]) -> float:
        return stats["bbox"][0]

    def describe_best(self, best: float) -> str:
        return f"best bbox AP {100 * max(best, 0.0):.1f}"

    def epoch_row(
        self, epoch: int, lr: float, train: Dict[str, float], stats: Optional[Dict[str, List[float]]]
    ) -> Dict[str, float]:
        row = {"epoch": epoch, "lr": lr, "train_loss": train["loss"], "train_images_per_s": train["images_per_s"],
               "epoch_seconds": train["seconds"]}
        for iou_type in ("bbox", "segm"):
            values = (stats or {}).get(iou_type)
            for index, suffix in enumerate(("AP", "AP50", "AP75")):
                row[f"val_{iou_type}_{suffix}"] = 100 * values[index] if values else float("nan")
        return row


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


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    loader: DataLoader,
    config: RunConfig,
    to_results: Callable[[Iterable[Tuple[int, Dict[str, torch.Tensor]]]], List[Dict[str, Any]]],
) -> Tuple[List[Dict[str, Any]], List[int], int]:
    """Run the model over this process's share of ``loader``; returns (COCO result entries, the
    ids of the images it ran on, the number of unreadable files all processes skipped).

    Each batch's detections become COCO result entries right away (``to_results`` takes
    ``(image_id, detections)`` pairs): masks are RLE-encoded per batch, so a whole
    validation set's full-size mask probabilities are never held at once.
    Pass the unwrapped model under DDP (ranks may hold different numbers of batches).
    """
    model.eval()
    device, amp_dtype, print_freq = config.device, config.amp_dtype, config.print_freq
    results: List[Dict[str, Any]] = []
    image_ids: List[int] = []
    steps = len(loader)
    unreadable: List[str] = []
    start = time.perf_counter()
    images_done = 0
    for step, images, targets in readable_batches(loader, config.bad_images, unreadable):
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
            rate = images_done / elapsed * config.context.world_size if elapsed > 0 else 0.0
            eta = elapsed / (step + 1) * (steps - step - 1)
            config.log(f"Test: [{step:>{len(str(steps))}}/{steps}]  {rate:.1f} img/s  eta {format_duration(eta)}")
    return results, image_ids, report_unreadable(unreadable, config, "Test:")


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    dataset: CocoDetection,
    config: RunConfig,
    iou_types: Sequence[str] = ("bbox",),
    results_file: Optional[str] = None,
) -> Optional[Dict[str, List[float]]]:
    """COCO evaluation of ``model`` on ``dataset`` with pycocotools, the detections of all
    processes gathered on rank 0, which prints the summary and the `` * bbox AP`` lines and
    writes ``results_file``. Returns the 12 COCOeval stats per IoU type on rank 0, None elsewhere.

    Images that could not be read are left out of the evaluation, not counted as misses.
    """
    context = config.context
    to_results = functools.partial(detections_to_results, category_ids=dataset.category_ids)
    results, image_ids, _ = predict_dataset(model, loader, config, to_results)
    gathered_results = gather_objects(results, context)
    gathered_ids = gather_objects(image_ids, context)
    if not context.is_main:
        return None
    evaluated = sorted({image_id for ids in gathered_ids for image_id in ids})
    return evaluate_coco(dataset.coco, merge_results(gathered_results), iou_types, results_file, evaluated, config.log)

"""Image classification as a task of the shared training run: a batch's forward pass and loss
(cross-entropy, label-smoothed or not, or binary cross-entropy; on Mixup/CutMix targets when the
batch is mixed), the running loss, Prec@1 and Prec@5 behind its progress lines, the evaluation
pass (of the model, and of its EMA beside it), and what an epoch's log row and checkpoint say
(see utils/training/run.py)."""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from utils.data.transforms import BatchMix, normalize_
from utils.distributed import DistributedContext
from utils.longrun.resume import EpochProgress
from utils.longrun.run_log import CSV_FIELDS
from utils.reproducibility import step_seed
from utils.training.config import RunConfig
from utils.training.engine import readable_batches, report_unreadable
from utils.training.metrics import RunningTotals, format_duration

__all__ = ["model_input", "LOSSES", "build_criterion", "BinaryCrossEntropy", "EMA_CSV_FIELDS", "ClassificationTask", "evaluate"]

EMA_CSV_FIELDS = ("ema_val_loss", "ema_val_prec1", "ema_val_prec5")
"""log.csv's columns for the EMA's evaluation, after the model's, in a run with an EMA."""


def model_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch on the device in the model's memory format. float32 batches (the PIL pipeline,
    --dummy) are already normalised; uint8 batches (the fast pipeline) cross as uint8, a
    quarter of the bytes, and become float32 and normalised there (utils.data.transforms.normalize_)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if images.dtype != torch.uint8:
        return images.to(device, non_blocking=True, memory_format=memory_format)
    images = images.to(device, non_blocking=True)
    return normalize_(images.to(torch.float32, memory_format=memory_format))


class BinaryCrossEntropy(nn.Module):
    """Binary cross-entropy of each class's logit against its target, as ResNet strikes back
    trains: the targets are the labels one-hot, or a mixed batch's class weights, smoothed as
    ``CrossEntropyLoss(label_smoothing=s)`` smooths them (``t (1 - s) + s / classes``); the
    mean over samples and classes (``binary_cross_entropy_with_logits``'s, as timm's)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = logits.shape[-1]
        if not target.is_floating_point():
            target = F.one_hot(target, classes).to(logits.dtype)
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / classes
        return F.binary_cross_entropy_with_logits(logits, target)


LOSSES: Dict[str, Callable[[float], nn.Module]] = {
    "ce": lambda label_smoothing: nn.CrossEntropyLoss(label_smoothing=label_smoothing),
    "bce": BinaryCrossEntropy,
}
"""Training losses by name -> the loss at a label smoothing; each takes class indices or per-class
target weights (a mixed batch's). A new loss is one entry here: ``--loss`` offers every name."""


def build_criterion(loss: str, label_smoothing: float = 0.0) -> nn.Module:
    """The training loss :data:`LOSSES` names. Without smoothing, ``ce`` is the paper's ``nn.CrossEntropyLoss()``."""
    return LOSSES[loss](label_smoothing)


def _output_and_loss(
    model: nn.Module, criterion: nn.Module, images: torch.Tensor, target: torch.Tensor, config: RunConfig
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(output, loss) of a batch already on the device, under autocast when ``config.amp_dtype`` is set."""
    with torch.autocast(config.device.type, dtype=config.amp_dtype, enabled=config.amp_dtype is not None):
        output = model(images)
        return output, criterion(output, target)


def _forward(
    model: nn.Module, criterion: nn.Module, images: torch.Tensor, target: torch.Tensor, config: RunConfig
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, loss, target on the device) for one batch as the loader gives it."""
    images = model_input(images, config.device, config.channels_last)
    target = target.to(config.device, non_blocking=True)
    return (*_output_and_loss(model, criterion, images, target, config), target)


class _EpochTotals:
    """A training epoch's :class:`RunningTotals` (summed loss, top-1 and top-5 hits, images) and its progress line."""

    def __init__(self, config: RunConfig) -> None:
        self.running = RunningTotals(config.device)
        self.world_size = config.context.world_size
        self.loss: Optional[torch.Tensor] = None

    def update(self, loss: torch.Tensor, record: Tuple[torch.Tensor, torch.Tensor]) -> None:
        output, target = record
        self.running.update(loss, output, target)
        self.loss = loss

    def restore(self, row: torch.Tensor, progress: EpochProgress) -> None:
        self.running.restore(row, progress.seconds)

    def row(self, context: DistributedContext) -> torch.Tensor:
        return self.running.sums

    def elapsed(self) -> float:
        return self.running.elapsed()

    def progress_line(self, epoch: int, step: int, steps: int, lr: float) -> str:
        running = self.running.summary()
        eta = running["seconds"] / (step + 1) * (steps - step - 1)
        return (
            f"Epoch: [{epoch}][{step:>{len(str(steps))}}/{steps}]  loss {self.loss.item():.4f} ({running['loss']:.4f})  "
            f"Prec@1 {running['prec1']:6.2f}  Prec@5 {running['prec5']:6.2f}  lr {lr:.5g}  "
            f"{running['images_per_s'] * self.world_size:.0f} img/s  eta {format_duration(eta)}"
        )

    def summary(self, context: DistributedContext) -> Dict[str, float]:
        return self.running.summary(context)


class ClassificationTask:
    """Training a classifier with ``criterion`` (cross-entropy for the paper's recipes), on
    batches Mixup/CutMix-ed by ``mix`` when given, evaluated on ``val_loader`` with
    ``eval_model`` (the unwrapped model under DDP), and with ``ema_model`` (an EMA of the
    weights) beside it when given; the best epoch is the one whose model (not EMA) has the best
    validation Prec@1. Training Prec@1 counts each image's own label, also in a mixed batch."""

    best_key = "best_prec1"
    no_best = 0.0

    def __init__(
        self,
        criterion: nn.Module,
        val_loader: DataLoader,
        eval_model: nn.Module,
        mix: Optional[BatchMix] = None,
        ema_model: Optional[nn.Module] = None,
    ) -> None:
        self.criterion = criterion
        self.val_loader = val_loader
        self.eval_model = eval_model
        self.mix = mix
        self.ema_model = ema_model
        self.csv_fields: Sequence[str] = CSV_FIELDS + (EMA_CSV_FIELDS if ema_model is not None else ())

    def forward(
        self, model: nn.Module, images: torch.Tensor, target: torch.Tensor, config: RunConfig, position: Tuple[int, int]
    ) -> Tuple[torch.Tensor, Any]:
        images = model_input(images, config.device, config.channels_last)
        target = target.to(config.device, non_blocking=True)
        if self.mix is None:
            mixed, goal = images, target
        else:
            mixed, goal = self.mix(images, target, step_seed(config.seed, *position, config.context.rank))
        output, loss = _output_and_loss(model, self.criterion, mixed, goal, config)
        return loss, (output, target)

    def epoch_totals(self, config: RunConfig) -> _EpochTotals:
        return _EpochTotals(config)

    def evaluate(self, config: RunConfig) -> Dict[str, Any]:
        stats: Dict[str, Any] = evaluate(self.eval_model, self.criterion, self.val_loader, config)
        if self.ema_model is not None:
            stats["ema"] = evaluate(self.ema_model, self.criterion, self.val_loader, config, label="EMA ")
        return stats

    def score(self, stats: Dict[str, Any]) -> float:
        return stats["prec1"]

    def describe_best(self, best: float) -> str:
        return f"best Prec@1 {best:.3f}"

    def epoch_row(self, epoch: int, lr: float, train: Dict[str, float], val: Dict[str, Any]) -> Dict[str, float]:
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train["loss"],
            "train_prec1": train["prec1"],
            "train_prec5": train["prec5"],
            "train_images_per_s": train["images_per_s"],
            "val_loss": val["loss"],
            "val_prec1": val["prec1"],
            "val_prec5": val["prec5"],
            "epoch_seconds": train["seconds"] + val["seconds"] + val.get("ema", {}).get("seconds", 0.0),
        }
        if "ema" in val:
            row.update({f"ema_val_{name}": val["ema"][name] for name in ("loss", "prec1", "prec5")})
        return row


@torch.no_grad()
def evaluate(model: nn.Module, criterion: nn.Module, loader: DataLoader, config: RunConfig, label: str = "") -> Dict[str, float]:
    """Loss, Prec@1 and Prec@5 over the readable evaluation images, summed exactly across processes;
    the result line is `` * <label>Prec@1 ...``.

    Pass the unwrapped model under DDP: ranks may hold different numbers of batches, and a
    DDP forward would wait for collectives the other ranks never join. ``config.print_freq`` 0
    prints only the result.
    """
    model.eval()
    totals = RunningTotals(config.device)
    steps = len(loader)
    unreadable: List[str] = []
    for step, images, target in readable_batches(loader, config.bad_images, unreadable):
        output, loss, target = _forward(model, criterion, images, target, config)
        totals.update(loss, output, target)
        if config.print_freq and step % config.print_freq == 0 and step != steps - 1:
            running = totals.summary()
            config.log(f"Test: [{step:>{len(str(steps))}}/{steps}]  loss {running['loss']:.4f}  "
                       f"Prec@1 {running['prec1']:6.2f}  Prec@5 {running['prec5']:6.2f}")
    result = {**totals.summary(config.context), "unreadable": report_unreadable(unreadable, config, "Test:")}
    config.log(f" * {label}Prec@1 {result['prec1']:.3f} Prec@5 {result['prec5']:.3f}")
    return result

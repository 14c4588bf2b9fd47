"""One training epoch, one evaluation pass, and the step learning-rate schedule.

The training step stays lean: non-blocking copies, ``zero_grad(set_to_none=True)``, and no
host sync except when a progress line is printed.

A non-finite loss stops training, but checking ``loss.isfinite()`` on the host every step would
stall the GPU queue every step. Instead the first bad step is recorded on the device
(``torch.where``, no sync) and read where the loop syncs anyway: at each progress line and at
the end of the epoch, before anything is saved. Up to ``print_freq`` steps run on broken
weights before the stop; none of them reaches a checkpoint.

The same all_reduce carries rank 0's stop decision (utils.longrun.preemption): after a SIGTERM or
SIGUSR1 the epoch saves a mid-epoch checkpoint through the caller's ``save_progress`` and raises
TrainingStopped. ``checkpoints`` adds mid-epoch saves every N steps; ``resume_from`` continues
an epoch from such a checkpoint (start the loader there with ``start_epoch(loader, epoch, step)``).
"""

from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.console import OneLineError
from utils.data.datasets import DataError
from utils.data.transforms import normalize_
from utils.distributed import DistributedContext, all_gather_rows, all_reduce_sum
from utils.longrun.preemption import StopSignal, TrainingStopped, stop_vote
from utils.longrun.resume import CheckpointSchedule, EpochProgress
from utils.training.metrics import RunningTotals, format_duration

__all__ = [
    "NonFiniteLossError",
    "step_learning_rate",
    "set_learning_rate",
    "model_input",
    "readable_batches",
    "report_unreadable",
    "optimizer_step",
    "StepControl",
    "train_one_epoch",
    "evaluate",
]

Log = Callable[[str], None]


class NonFiniteLossError(OneLineError):
    """Training diverged (the loss became inf or nan); ``str()`` is one line meant for the user."""


def step_learning_rate(base_lr: float, epoch: int, step_size: int, gamma: float) -> float:
    """The original schedule: ``base_lr * gamma ** (epoch // step_size)`` (0.1 every 30 epochs
    for ResNets; 0.98 every epoch for MobileNetV2)."""
    return base_lr * gamma ** (epoch // step_size)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def model_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch on the device in the model's memory format. float32 batches (the PIL pipeline,
    --dummy) are already normalised; uint8 batches (the fast pipeline) cross as uint8, a
    quarter of the bytes, and become float32 and normalised there (utils.data.transforms.normalize_)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if images.dtype != torch.uint8:
        return images.to(device, non_blocking=True, memory_format=memory_format)
    images = images.to(device, non_blocking=True)
    return normalize_(images.to(torch.float32, memory_format=memory_format))


def _forward(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    device: torch.device,
    channels_last: bool,
    amp_dtype: Optional[torch.dtype],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, loss, target on the device) for one batch, under autocast when ``amp_dtype`` is set."""
    images = model_input(images, device, channels_last)
    target = target.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        output = model(images)
        return output, criterion(output, target), target


def readable_batches(
    loader: DataLoader, bad_images: str, unreadable: List[str], first_step: int = 0
) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
    """(step, images, targets) of the batches with images, steps counted from ``first_step`` (a
    resumed epoch); unreadable files are collected in ``unreadable`` with ``bad_images="skip"``,
    or stop the run with ``"error"``. Targets may be a tensor (classification) or a list of
    target dicts (detection)."""
    for step, (images, target, skipped) in enumerate(loader, start=first_step):
        if skipped and bad_images == "error":
            raise DataError(f"cannot read image {skipped[0]} (--bad-images skip would skip it)")
        unreadable.extend(skipped)
        if len(target):
            yield step, images, target


def report_unreadable(
    unreadable: List[str], device: torch.device, context: DistributedContext, log: Log, where: str, earlier: int = 0
) -> int:
    """Log how many files all processes skipped (``earlier``: this process's count before a
    mid-epoch resume); returns that count."""
    count = int(all_reduce_sum(torch.tensor(len(unreadable) + earlier, device=device), context).item())
    if count:
        example = f", e.g. {unreadable[0]}" if unreadable else ""
        log(f"{where} skipped {count} unreadable image file(s){example}")
    return count


def _sync_point(first_bad_step: torch.Tensor, stop: Optional[StopSignal], epoch: int, step: int, context: DistributedContext) -> bool:
    """At a step where the loop syncs anyway, one all_reduce answers two questions on every
    process: has any process seen a non-finite loss (then raise, before anything is saved, so
    that no process goes on to a collective the others never join), and has rank 0 been asked
    to stop (the return value)."""
    flags = all_reduce_sum(torch.stack([first_bad_step.ge(0).long(), stop_vote(stop, context, first_bad_step.device)]), context)
    seen, stopping = flags.tolist()
    if seen:
        local = int(first_bad_step.item())
        where = f"at epoch {epoch}, step {local}" if local >= 0 else f"on another process by epoch {epoch}, step {step}"
        raise NonFiniteLossError(
            f"the training loss became non-finite {where}; stopped before saving, so the checkpoints "
            "of earlier epochs are kept (try a lower --lr, then --resume)"
        )
    return bool(stopping)


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler] = None,
    clip_grad_norm: Optional[float] = None,
) -> None:
    """Backward and update: loss scaling with a GradScaler (fp16), and the gradients' norm
    clipped to ``clip_grad_norm`` when given (unscaled first, so the bound means the same)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad_norm:
            scaler.unscale_(optimizer)
            _clip_gradients(optimizer, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip_grad_norm:
            _clip_gradients(optimizer, clip_grad_norm)
        optimizer.step()


def _clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_norm)


class StepControl:
    """What both training loops (classification and detection) decide after each step: print a
    progress line, save a mid-epoch checkpoint, stop on a signal, stop on a non-finite loss.

    Alone, a process reads its signal flag every step for free; under DDP the flags travel in
    the one all_reduce made where the loop syncs anyway (progress lines and mid-epoch saves).
    With ``save_progress``, it is called (on every rank) with the epoch's :class:`EpochProgress`
    at the steps ``checkpoints`` names and when ``stop`` has caught a signal, after which
    :meth:`save` raises TrainingStopped.
    """

    def __init__(
        self,
        epoch: int,
        steps: int,
        print_freq: int,
        batch_size: int,
        device: torch.device,
        context: DistributedContext,
        stop: Optional[StopSignal] = None,
        checkpoints: Optional[CheckpointSchedule] = None,
        save_progress: Optional[Callable[[EpochProgress], None]] = None,
    ) -> None:
        self.epoch = epoch
        self.steps = steps
        self.print_freq = print_freq
        self.global_batch = batch_size * context.world_size
        self.device = device
        self.context = context
        self.stop = stop if save_progress is not None else None
        self.checkpoints = checkpoints if save_progress is not None else None
        self.save_progress = save_progress
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.stopping = False

    def after_step(self, step: int, loss: torch.Tensor) -> Tuple[bool, bool]:
        """(print a progress line now, call :meth:`save` now), after recording on the device
        whether this step's loss is finite (no host sync)."""
        self.first_bad_step = torch.where(self.first_bad_step.lt(0) & ~loss.detach().isfinite(), step, self.first_bad_step)
        printing = step % self.print_freq == 0 or step == self.steps - 1
        saving = self.checkpoints is not None and self.checkpoints.due(self.epoch, step, self.steps)
        signalled = not self.context.enabled and self.stop is not None and self.stop.requested is not None
        if printing or saving or signalled:
            self.stopping = _sync_point(self.first_bad_step, self.stop, self.epoch, step, self.context)
        return printing, saving or self.stopping

    def save(self, step: int, sums: torch.Tensor, skipped: int, elapsed: float) -> None:
        """Save where the epoch stands after ``step`` (every process's running ``sums`` and count
        of ``skipped`` files travel in the checkpoint), then raise TrainingStopped if stopping."""
        count = torch.tensor([float(skipped)], dtype=torch.float64, device=self.device)
        rows = all_gather_rows(torch.cat([sums, count]), self.context)
        self.save_progress(EpochProgress(self.epoch, step + 1, self.steps, self.global_batch, rows, elapsed))
        if self.stopping:
            raise TrainingStopped(self.stop.requested or "process 0's signal", self.epoch, step + 1, self.steps)

    def finish(self) -> None:
        """Raise NonFiniteLossError on every process if any process saw a non-finite loss."""
        _sync_point(self.first_bad_step, None, self.epoch, self.steps - 1, self.context)


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    device: torch.device,
    epoch: int,
    context: DistributedContext,
    log: Log,
    print_freq: int = 10,
    amp_dtype: Optional[torch.dtype] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    channels_last: bool = False,
    bad_images: str = "skip",
    resume_from: Optional[EpochProgress] = None,
    stop: Optional[StopSignal] = None,
    checkpoints: Optional[CheckpointSchedule] = None,
    save_progress: Optional[Callable[[EpochProgress], None]] = None,
) -> Dict[str, float]:
    """Train for one pass over ``loader``; returns the epoch's averages over all processes and
    the number of ``unreadable`` files skipped. Raises NonFiniteLossError if the loss diverged.

    With ``save_progress``, the epoch calls it (on every rank) with its :class:`EpochProgress`
    at the steps ``checkpoints`` names and when ``stop`` has caught a signal; after the latter
    it raises TrainingStopped.
    """
    model.train()
    totals = RunningTotals(device)
    first_step = unreadable_before = 0
    if resume_from is not None:
        own = resume_from.totals[context.rank].to(device)
        totals.restore(own[:4], resume_from.seconds)
        first_step, unreadable_before = resume_from.step, int(own[4].item())
    steps = first_step + len(loader)
    lr = optimizer.param_groups[0]["lr"]
    unreadable: List[str] = []
    control = StepControl(epoch, steps, print_freq, loader.batch_size, device, context, stop, checkpoints, save_progress)
    for step, images, target in readable_batches(loader, bad_images, unreadable, first_step):
        output, loss, target = _forward(model, criterion, images, target, device, channels_last, amp_dtype)
        optimizer_step(loss, optimizer, scaler)
        totals.update(loss, output, target)
        printing, saving = control.after_step(step, loss)
        if printing:
            running = totals.summary()
            eta = running["seconds"] / (step + 1) * (steps - step - 1)
            log(
                f"Epoch: [{epoch}][{step:>{len(str(steps))}}/{steps}]  loss {loss.item():.4f} ({running['loss']:.4f})  "
                f"Prec@1 {running['prec1']:6.2f}  Prec@5 {running['prec5']:6.2f}  lr {lr:.5g}  "
                f"{running['images_per_s'] * context.world_size:.0f} img/s  eta {format_duration(eta)}"
            )
        if saving:
            control.save(step, totals.sums, len(unreadable) + unreadable_before, totals.elapsed())
    control.finish()
    summary = totals.summary(context)
    return {**summary, "unreadable": report_unreadable(unreadable, device, context, log, f"Epoch: [{epoch}]", unreadable_before)}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: DataLoader,
    device: torch.device,
    context: DistributedContext,
    log: Log,
    print_freq: int = 10,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    bad_images: str = "skip",
) -> Dict[str, float]:
    """Loss, Prec@1 and Prec@5 over the readable evaluation images, summed exactly across processes.

    Pass the unwrapped model under DDP: ranks may hold different numbers of batches, and a
    DDP forward would wait for collectives the other ranks never join.
    """
    model.eval()
    totals = RunningTotals(device)
    steps = len(loader)
    unreadable: List[str] = []
    for step, images, target in readable_batches(loader, bad_images, unreadable):
        output, loss, target = _forward(model, criterion, images, target, device, channels_last, amp_dtype)
        totals.update(loss, output, target)
        if print_freq and step % print_freq == 0 and step != steps - 1:
            running = totals.summary()
            log(f"Test: [{step:>{len(str(steps))}}/{steps}]  loss {running['loss']:.4f}  "
                f"Prec@1 {running['prec1']:6.2f}  Prec@5 {running['prec5']:6.2f}")
    result = {**totals.summary(context), "unreadable": report_unreadable(unreadable, device, context, log, "Test:")}
    log(f" * Prec@1 {result['prec1']:.3f} Prec@5 {result['prec5']:.3f}")
    return result

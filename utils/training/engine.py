"""The training epoch every task shares, and the pieces its loops share with evaluation.

A task supplies what differs (:class:`TrainingTask`): the forward pass and loss of a batch, and
the running totals behind its progress lines, its mid-epoch checkpoints and its epoch summary
(:class:`EpochTotals`); classification's are in utils/training/classification.py, detection's in
utils/detection/engine.py. The epoch is one skeleton for all: continue inside an epoch, advance
the lr schedule, step, report, save, stop (:func:`train_one_epoch`).

The training step stays lean: non-blocking copies, ``zero_grad(set_to_none=True)``, and no
host sync except when a progress line is printed.

A non-finite loss stops training, but checking ``loss.isfinite()`` on the host every step would
stall the GPU queue every step. Instead the first bad step is recorded on the device
(``torch.where``, no sync) and read where the loop syncs anyway: at each progress line and at
the end of the epoch, before anything is saved. Up to ``print_freq`` steps run on broken
weights before the stop; none of them reaches a checkpoint.

The same all_reduce carries rank 0's stop decision (utils.longrun.preemption): after a SIGTERM or
SIGUSR1 the epoch saves a mid-epoch checkpoint through the caller's ``checkpoints`` and raises
TrainingStopped. They also save every N steps; ``resume_from`` continues an epoch from such a
checkpoint (start the loader there with ``utils.longrun.resume.begin_epoch``).
"""

from typing import Any, Dict, Iterator, List, Optional, Protocol, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.console import OneLineError
from utils.data.datasets import DataError
from utils.distributed import DistributedContext, all_gather_rows, all_reduce_sum
from utils.longrun.preemption import StopSignal, TrainingStopped, stop_vote
from utils.longrun.resume import EpochProgress, MidEpochCheckpoints
from utils.training.config import RunConfig
from utils.training.optim import Optimization

__all__ = [
    "NonFiniteLossError",
    "EpochTotals",
    "TrainingTask",
    "readable_batches",
    "report_unreadable",
    "StepControl",
    "train_one_epoch",
]


class NonFiniteLossError(OneLineError):
    """Training diverged (the loss became inf or nan); ``str()`` is one line meant for the user."""


class EpochTotals(Protocol):
    """One process's running totals over a training epoch, kept on the device (read only where
    the loop syncs anyway)."""

    def update(self, loss: torch.Tensor, record: Any) -> None:
        """Add a step: its loss and the task's ``record`` of it (what :meth:`TrainingTask.forward` gave)."""

    def restore(self, row: torch.Tensor, progress: EpochProgress) -> None:
        """Continue from this process's :meth:`row` as a mid-epoch checkpoint of ``progress`` holds it."""

    def row(self, context: DistributedContext) -> torch.Tensor:
        """The totals as one float64 row for a mid-epoch checkpoint; every rank calls it (it may be a collective)."""

    def elapsed(self) -> float:
        """Seconds of the epoch so far, those before a mid-epoch resume included."""

    def progress_line(self, epoch: int, step: int, steps: int, lr: float) -> str:
        """The line printed after ``step`` of ``steps``."""

    def summary(self, context: DistributedContext) -> Dict[str, float]:
        """The epoch's averages over all processes, ``images_per_s`` and ``seconds`` among them (a collective)."""


class TrainingTask(Protocol):
    """What one kind of training supplies to :func:`train_one_epoch`."""

    def forward(
        self, model: nn.Module, inputs: Any, targets: Any, config: RunConfig, position: Tuple[int, int]
    ) -> Tuple[torch.Tensor, Any]:
        """(loss, record) of one batch: the loss to step on, and what the totals need of the step.
        ``position`` is the batch's (epoch, step), for draws that must follow it (Mixup's)."""

    def epoch_totals(self, config: RunConfig) -> EpochTotals:
        """Fresh totals for a training epoch."""


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


def report_unreadable(unreadable: List[str], config: RunConfig, where: str, earlier: int = 0) -> int:
    """Log how many files all processes skipped (``earlier``: this process's count before a
    mid-epoch resume); returns that count."""
    count = int(all_reduce_sum(torch.tensor(len(unreadable) + earlier, device=config.device), config.context).item())
    if count:
        example = f", e.g. {unreadable[0]}" if unreadable else ""
        config.log(f"{where} skipped {count} unreadable image file(s){example}")
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


class StepControl:
    """What the training epoch decides after each step: print a progress line, save a
    mid-epoch checkpoint, stop on a signal, stop on a non-finite loss.

    Alone, a process reads its signal flag every step for free; under DDP the flags travel in
    the one all_reduce made where the loop syncs anyway (progress lines and mid-epoch saves).
    With ``checkpoints``, their ``save`` is called (on every rank) with the epoch's
    :class:`EpochProgress` at the steps their schedule names and when their ``stop`` has caught
    a signal, after which :meth:`save` raises TrainingStopped.
    """

    def __init__(
        self, epoch: int, steps: int, batch_size: int, config: RunConfig, checkpoints: Optional[MidEpochCheckpoints] = None
    ) -> None:
        self.epoch = epoch
        self.steps = steps
        self.print_freq = config.print_freq
        self.global_batch = batch_size * config.context.world_size
        self.device = config.device
        self.context = config.context
        self.checkpoints = checkpoints
        self.stop = checkpoints.stop if checkpoints is not None else None
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=config.device)
        self.stopping = False
        self.save_pending = False

    def after_step(self, step: int, loss: torch.Tensor, updated: bool = True) -> Tuple[bool, bool]:
        """(print a progress line now, call :meth:`save` now), after recording on the device
        whether this step's loss is finite (no host sync). A save due at a step that left
        accumulated gradients un-applied (``updated`` False) waits for the step that applies
        them: a checkpoint holds no gradients."""
        self.first_bad_step = torch.where(self.first_bad_step.lt(0) & ~loss.detach().isfinite(), step, self.first_bad_step)
        printing = step % self.print_freq == 0 or step == self.steps - 1
        due = self.checkpoints is not None and self.checkpoints.schedule.due(self.epoch, step, self.steps)
        self.save_pending = (self.save_pending or due) and step < self.steps - 1  # the epoch's checkpoint follows its last step
        signalled = not self.context.enabled and self.stop is not None and self.stop.requested is not None
        if printing or due or signalled:
            stopping = _sync_point(self.first_bad_step, self.stop, self.epoch, step, self.context)
            self.stopping = self.stopping or stopping
        return printing, updated and (self.save_pending or self.stopping)

    def save(self, step: int, totals: torch.Tensor, skipped: int, elapsed: float) -> None:
        """Save where the epoch stands after ``step`` (every process's ``totals`` row and count
        of ``skipped`` files travel in the checkpoint), then raise TrainingStopped if stopping."""
        count = torch.tensor([float(skipped)], dtype=torch.float64, device=self.device)
        rows = all_gather_rows(torch.cat([totals, count]), self.context)
        self.checkpoints.save(EpochProgress(self.epoch, step + 1, self.steps, self.global_batch, rows, elapsed))
        self.save_pending = False
        if self.stopping:
            raise TrainingStopped(self.stop.requested or "process 0's signal", self.epoch, step + 1, self.steps)

    def finish(self) -> None:
        """Raise NonFiniteLossError on every process if any process saw a non-finite loss."""
        _sync_point(self.first_bad_step, None, self.epoch, self.steps - 1, self.context)


def train_one_epoch(
    task: TrainingTask,
    model: nn.Module,
    loader: DataLoader,
    epoch: int,
    optimization: Optimization,
    config: RunConfig,
    resume_from: Optional[EpochProgress] = None,
    checkpoints: Optional[MidEpochCheckpoints] = None,
) -> Dict[str, float]:
    """Train one pass over ``loader``, the lr schedule advanced to every step; returns the task's
    averages over all processes and the number of ``unreadable`` files skipped. Raises
    NonFiniteLossError if the loss diverged, before anything is saved.

    ``resume_from`` continues an epoch a mid-epoch checkpoint stopped (the loader started after
    its steps); with ``checkpoints`` the epoch saves where it stands at the steps they name and
    when a signal came, after which it raises TrainingStopped. A checkpoint's progress row per
    process holds the task's totals and the count of skipped files.
    """
    context = config.context
    model.train()
    totals = task.epoch_totals(config)
    first_step = unreadable_before = 0
    if resume_from is not None:
        own = resume_from.totals[context.rank].to(config.device)
        totals.restore(own[:-1], resume_from)
        first_step, unreadable_before = resume_from.step, int(own[-1].item())
    steps = first_step + len(loader)
    unreadable: List[str] = []
    control = StepControl(epoch, steps, loader.batch_size, config, checkpoints)
    optimization.advance(epoch, min(first_step, steps - 1))  # the lr of the epoch's end when no step is left to run
    for step, inputs, targets in readable_batches(loader, config.bad_images, unreadable, first_step):
        optimization.advance(epoch, step)
        loss, record = task.forward(model, inputs, targets, config, (epoch, step))
        updated = optimization.step(loss, step, steps)
        totals.update(loss, record)
        printing, saving = control.after_step(step, loss, updated)
        if printing:
            config.log(totals.progress_line(epoch, step, steps, optimization.lr))
        if saving:
            control.save(step, totals.row(context), len(unreadable) + unreadable_before, totals.elapsed())
    control.finish()
    summary = totals.summary(context)
    summary["unreadable"] = report_unreadable(unreadable, config, f"Epoch: [{epoch}]", unreadable_before)
    return summary

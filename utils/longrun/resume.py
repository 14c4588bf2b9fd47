"""Where a run continues from: ``--resume auto``, the position inside an epoch that a mid-epoch
checkpoint records, what a run takes over from its checkpoint, and the schedule of those checkpoints.

A run directory holds up to two resumable files: ``checkpoint.pth.tar`` at the end of each
epoch and ``checkpoint_step.pth.tar`` inside one (every ``--checkpoint-every`` steps, and when
a signal stops the run). Each records its :class:`RunPosition`; ``--resume auto`` takes the
later one, or starts fresh when there is none, so the same command line serves the first start
and every restart. A damaged one is set aside and the other used (or none), so that a job
requeued after its last save was damaged still goes on.
"""

import argparse
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import torch

from utils.checkpoint import CheckpointError, CheckpointWarning, load_checkpoint_file
from utils.console import UsageError
from utils.data.loaders import start_epoch
from utils.longrun.preemption import StopSignal

__all__ = [
    "EPOCH_CHECKPOINT",
    "STEP_CHECKPOINT",
    "DAMAGED_SUFFIX",
    "RunPosition",
    "add_long_run_arguments",
    "checkpoint_position",
    "latest_checkpoint",
    "resolve_resume",
    "CheckpointSchedule",
    "EpochProgress",
    "MidEpochCheckpoints",
    "RunStart",
    "begin_epoch",
]

EPOCH_CHECKPOINT = "checkpoint.pth.tar"
STEP_CHECKPOINT = "checkpoint_step.pth.tar"
DAMAGED_SUFFIX = ".damaged"


@dataclass(frozen=True, order=True)
class RunPosition:
    """``step`` steps of ``epoch`` done (``step`` 0: the epoch has not started). Ordered in training time."""

    epoch: int
    step: int = 0


def add_long_run_arguments(parser: argparse.ArgumentParser, resume_help: str) -> None:
    """The flags of a run that outlives its processes: ``--resume`` (a path, or ``auto``: see
    :func:`resolve_resume`) and ``--checkpoint-every`` (mid-epoch checkpoints: :class:`CheckpointSchedule`)."""
    parser.add_argument("--resume", default="", type=str, metavar="PATH", help=resume_help)
    parser.add_argument("--checkpoint-every", default=None, type=int, metavar="N",
                        help=f"also save {STEP_CHECKPOINT} every N training steps, inside epochs "
                        "(default: only at the end of each epoch, and when SIGTERM or SIGUSR1 stops the run)")


def checkpoint_position(path: str) -> RunPosition:
    """Where a checkpoint file stands; a CheckpointError if it is damaged (checked as every load
    checks it, with its tensors memory-mapped rather than read)."""
    checkpoint = load_checkpoint_file(path, mmap=True)
    return RunPosition(int(checkpoint.get("epoch", 0)), int(checkpoint.get("step", 0)))


def latest_checkpoint(run_dir: str) -> Optional[str]:
    """The intact checkpoint in ``run_dir`` that is furthest into training, or None when there is none.

    A damaged or unreadable one is moved aside to ``<name>.damaged`` with a warning, so that a
    requeued job goes on from the one before it (or starts afresh) instead of stopping, and
    the file is kept for a look.
    """
    intact, damaged = [], []
    for path in (os.path.join(run_dir, name) for name in (EPOCH_CHECKPOINT, STEP_CHECKPOINT)):
        if not os.path.isfile(path):
            continue
        try:
            intact.append((checkpoint_position(path), path))
        except CheckpointError as error:
            damaged.append((path, error))
    latest = max(intact)[1] if intact else None
    for path, error in damaged:
        _set_aside(path, error, latest)
    return latest


def _set_aside(path: str, error: CheckpointError, latest: Optional[str]) -> None:
    """Rename a damaged checkpoint out of the way and say so, and what the run does instead."""
    try:
        os.replace(path, path + DAMAGED_SUFFIX)
        moved = f"moved to {path + DAMAGED_SUFFIX}"
    except FileNotFoundError:  # another process of this run moved it, and said so, first
        return
    except OSError as failure:
        moved = f"left in place (it cannot be renamed: {failure.strerror})"
    continuing = f"continuing from {latest}" if latest else "starting afresh: no intact checkpoint left"
    warnings.warn(f"--resume auto: {error}; {moved}, {continuing}", CheckpointWarning)


def resolve_resume(resume: str, run_dir: str, evaluating: bool = False) -> str:
    """``--resume`` as a path: ``auto`` becomes the run directory's latest intact checkpoint, or
    ``""`` (start fresh) when it has none, a UsageError when ``evaluating`` (nothing to evaluate);
    anything else is returned as it is, to be loaded (and refused if damaged) without falling
    back to another file."""
    if resume != "auto":
        return resume
    latest = latest_checkpoint(run_dir) or ""
    if not latest and evaluating:
        raise UsageError(f"--resume auto: {run_dir} holds no checkpoint to evaluate")
    return latest


class CheckpointSchedule:
    """Every ``every`` training steps, counted over the whole run, except an epoch's last step
    (the end-of-epoch checkpoint follows it). ``every=None`` never."""

    def __init__(self, every: Optional[int]) -> None:
        self.every = every

    def due(self, epoch: int, step: int, steps: int) -> bool:
        """Whether to save after ``step`` (0-based) of ``epoch``, an epoch of ``steps`` steps."""
        if not self.every or step >= steps - 1:
            return False
        return (epoch * steps + step + 1) % self.every == 0


@dataclass
class EpochProgress:
    """How far an epoch got, with what a resumed epoch needs to end as if it never stopped.

    ``totals`` has one row per process, whatever that process accumulates over the epoch (e.g.
    summed loss, hits, images, skipped files): each process continues its own row, so the
    epoch's averages come out bitwise the same. ``batch_size`` is the total over processes:
    the position only means the same samples with the same batch size and process count.
    """

    epoch: int
    step: int
    steps: int
    batch_size: int
    totals: torch.Tensor
    seconds: float

    @property
    def position(self) -> RunPosition:
        return RunPosition(self.epoch, self.step)

    def state(self) -> Dict[str, Any]:
        """Plain values and tensors to store in a checkpoint (``epoch``/``step`` at its top level)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "epoch_progress": {
                "steps": self.steps,
                "batch_size": self.batch_size,
                "totals": self.totals.cpu(),
                "seconds": self.seconds,
            },
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> Optional["EpochProgress"]:
        """The progress a mid-epoch checkpoint holds; None for an end-of-epoch one."""
        progress = checkpoint.get("epoch_progress")
        if not checkpoint.get("step") or progress is None:
            return None
        return cls(
            epoch=int(checkpoint["epoch"]),
            step=int(checkpoint["step"]),
            steps=int(progress["steps"]),
            batch_size=int(progress["batch_size"]),
            totals=progress["totals"],
            seconds=float(progress["seconds"]),
        )

    def check_layout(self, steps: int, batch_size: int, world_size: int) -> None:
        """Raise CheckpointError unless this run splits the epoch as the stopped one did."""
        saved = (self.steps, self.batch_size, self.totals.shape[0])
        if saved != (steps, batch_size, world_size):
            raise CheckpointError(
                f"the checkpoint stopped inside epoch {self.epoch} of a run with -b {self.batch_size} on "
                f"{self.totals.shape[0]} process(es), {self.steps} steps per epoch; this run has -b {batch_size} "
                f"on {world_size} process(es), {steps} steps: continue with the same settings, or from the end "
                f"of the last finished epoch with --resume <run>/{EPOCH_CHECKPOINT}"
            )


@dataclass(frozen=True)
class MidEpochCheckpoints:
    """How an epoch saves where it stands: ``save`` (called on every rank with the epoch's
    :class:`EpochProgress`) at the steps ``schedule`` names, and when ``stop`` has caught a signal."""

    save: Callable[[EpochProgress], None]
    stop: Optional[StopSignal]
    schedule: CheckpointSchedule


@dataclass(frozen=True)
class RunStart:
    """Where a training run begins: at ``epoch`` (inside it after ``progress``'s steps, for a
    mid-epoch checkpoint) with the ``best`` score so far, the RNG states to restore (``rng``),
    and whether it continues a checkpoint (``resumed``: a fresh run starts a new log)."""

    epoch: int
    best: float
    progress: Optional[EpochProgress] = None
    rng: Optional[Dict[str, Any]] = None
    resumed: bool = False

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], best_key: str, no_best: float) -> "RunStart":
        """Where ``checkpoint`` stopped; its best score is under ``best_key`` (``no_best`` if absent)."""
        return cls(
            epoch=int(checkpoint.get("epoch", 0)),
            best=float(checkpoint.get(best_key, no_best)),
            progress=EpochProgress.from_checkpoint(checkpoint),
            rng=checkpoint.get("rng"),
            resumed=True,
        )

    def __str__(self) -> str:
        """``epoch 3``, or ``epoch 3, step 20/100`` inside an epoch."""
        progress = self.progress
        return f"epoch {self.epoch}" + (f", step {progress.step}/{progress.steps}" if progress else "")


def begin_epoch(loader: Any, epoch: int, progress: Optional[EpochProgress], batch_size: int, world_size: int) -> Optional[EpochProgress]:
    """Set ``loader`` up for ``epoch``: from its start, or after the steps ``progress`` (a
    mid-epoch checkpoint of this epoch) had done. Returns that progress, or None; raises
    CheckpointError if this run would split the epoch differently from the stopped one."""
    resume_from = progress if progress is not None and progress.epoch == epoch else None
    start_epoch(loader, epoch, resume_from.step if resume_from else 0)
    if resume_from is not None:
        resume_from.check_layout(resume_from.step + len(loader), batch_size, world_size)
    return resume_from

"""The run directory: where it is, what a fresh run may find in it, the files each epoch
leaves there (the log row, ``checkpoint.pth.tar``, ``model_best.pth.tar``) and those a stop
leaves (``checkpoint_step.pth.tar``), for every training script."""

import os
from types import TracebackType
from typing import Any, Callable, Dict, Optional, Sequence, Type

import torch

from utils.checkpoint import copy_checkpoint, remove_stale_temporaries, save_checkpoint
from utils.console import UsageError
from utils.distributed import DistributedContext, run_on_main
from utils.longrun.preemption import EXIT_STOPPED, StopSignal, TrainingStopped, stop_agreed
from utils.longrun.resume import EPOCH_CHECKPOINT, STEP_CHECKPOINT, EpochProgress
from utils.longrun.run_log import CSV_FIELDS, RunLog

__all__ = ["run_directory", "prepare_run_dir", "RunDirectory", "report_stop"]

State = Callable[..., Dict[str, Any]]  # what a checkpoint holds, given where in training it is taken

BEST_CHECKPOINT = "model_best.pth.tar"


def run_directory(output_dir: Optional[str], arch: str, action: str = "") -> str:
    """``output_dir``, else ``runs/<arch>[_<action>]`` as the original named its runs."""
    return output_dir or os.path.join("runs", f"{arch}_{action}" if action else arch)


def prepare_run_dir(run_dir: str, resuming: bool, log: Callable[[str], None]) -> str:
    """Create the run directory, prove it writable now (not after the first epoch) and remove
    the temporary files of a save that was killed half-way.

    A fresh run never overwrites an earlier run's checkpoints: days of training are not lost
    to a forgotten ``--resume``.
    """
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as error:
        raise UsageError(f"run directory {run_dir} is not writable ({error.strerror})") from None
    previous = [os.path.join(run_dir, name) for name in (EPOCH_CHECKPOINT, STEP_CHECKPOINT)]
    if not resuming and any(os.path.exists(path) for path in previous):
        raise UsageError(
            f"{run_dir} already holds a run's checkpoint; continue it with --resume auto, "
            "or start a new run with another --output-dir"
        )
    for name in remove_stale_temporaries(run_dir):
        log(f"=> removed {os.path.join(run_dir, name)}, left by a save that was interrupted")
    return run_dir


class RunDirectory:
    """What a training run leaves in its directory, written by rank 0 (every rank learns if a
    write failed): after each epoch its log row and ``checkpoint.pth.tar``, inside an epoch
    ``checkpoint_step.pth.tar``. ``state(**position)`` is what a checkpoint holds, ``position``
    saying where in training it was taken.

    The log (``fields`` its columns) continues at ``first_epoch`` (see
    :class:`~utils.longrun.run_log.RunLog`); use the directory as a context manager, which closes it.
    """

    def __init__(
        self, path: str, state: State, context: DistributedContext, device: torch.device,
        first_epoch: int = 0, fields: Sequence[str] = CSV_FIELDS,
    ) -> None:
        self.path = path
        self.state = state
        self.context = context
        self.device = device
        self.run_log = RunLog(path, first_epoch, fields) if context.is_main else None

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], error: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> None:
        if self.run_log is not None:
            self.run_log.close()

    def save_progress(self, progress: EpochProgress) -> None:
        """A mid-epoch checkpoint of ``progress`` (call it on every rank)."""
        path = os.path.join(self.path, STEP_CHECKPOINT)
        run_on_main(lambda: save_checkpoint(self.state(**progress.state()), path), self.context, self.device, f"to write {path}")

    def end_epoch(self, epoch: int, epochs: int, row: Dict[str, float], is_best: bool, stop: StopSignal) -> None:
        """Log the epoch and save its checkpoint (call it on every rank), then raise TrainingStopped
        on every rank if rank 0 caught a signal and epochs remain."""
        run_on_main(lambda: self._finish_epoch(row, self.state(epoch=epoch + 1), is_best), self.context, self.device,
                    f"to save epoch {epoch}")
        if epoch + 1 < epochs and stop_agreed(stop, self.context, self.device):
            raise TrainingStopped(stop.requested or "process 0's signal", epoch)

    def _finish_epoch(self, row: Dict[str, float], state: Dict[str, Any], is_best: bool) -> None:
        """Log the epoch, then save its checkpoint, in that order: killed in between, the run
        resumes before this epoch, runs it again and logs it once more, replacing the row.

        The epoch's checkpoint supersedes any mid-epoch one, which is removed; a copy goes to
        ``model_best.pth.tar`` when the epoch is the best so far.
        """
        self.run_log.log_epoch(row)
        path = os.path.join(self.path, EPOCH_CHECKPOINT)
        save_checkpoint(state, path)
        if is_best:
            copy_checkpoint(path, os.path.join(self.path, BEST_CHECKPOINT))
        step_checkpoint = os.path.join(self.path, STEP_CHECKPOINT)
        if os.path.exists(step_checkpoint):
            os.unlink(step_checkpoint)


def report_stop(stopped: TrainingStopped, run_dir: str, log: Callable[[str], None]) -> int:
    """Say where a stopped run saved itself and how to continue; the exit status for it."""
    saved = os.path.join(run_dir, STEP_CHECKPOINT if stopped.step is not None else EPOCH_CHECKPOINT)
    log(f"=> {stopped}; saved {saved}; continue with --resume auto (exit status {EXIT_STOPPED})")
    return EXIT_STOPPED

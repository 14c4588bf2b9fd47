"""The run directory: where it is, what a fresh run may find in it, the files each epoch
leaves there (the log row, ``checkpoint.pth.tar``, ``model_best.pth.tar``) and those a stop
leaves (``checkpoint_step.pth.tar``), for every training script."""

import os
from typing import Any, Callable, Dict, Optional

import torch

from utils.checkpoint import copy_checkpoint, remove_stale_temporaries, save_checkpoint
from utils.console import UsageError
from utils.distributed import DistributedContext, run_on_main
from utils.longrun.preemption import EXIT_STOPPED, StopSignal, TrainingStopped, stop_agreed
from utils.longrun.resume import EPOCH_CHECKPOINT, STEP_CHECKPOINT, EpochProgress
from utils.longrun.run_log import RunLog

__all__ = ["run_directory", "prepare_run_dir", "finish_epoch", "end_epoch", "progress_saver", "report_stop"]

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


def finish_epoch(run_dir: str, run_log: RunLog, row: Dict[str, float], state: Dict[str, Any], is_best: bool) -> None:
    """Log the epoch, then save its checkpoint, in that order: killed in between, the run
    resumes before this epoch, runs it again and logs it once more, replacing the row.

    The epoch's checkpoint supersedes any mid-epoch one, which is removed; a copy goes to
    ``model_best.pth.tar`` when the epoch is the best so far.
    """
    run_log.log_epoch(row)
    path = os.path.join(run_dir, EPOCH_CHECKPOINT)
    save_checkpoint(state, path)
    if is_best:
        copy_checkpoint(path, os.path.join(run_dir, BEST_CHECKPOINT))
    step_checkpoint = os.path.join(run_dir, STEP_CHECKPOINT)
    if os.path.exists(step_checkpoint):
        os.unlink(step_checkpoint)


def end_epoch(
    run_dir: str, run_log: Optional[RunLog], row: Dict[str, float], state: State, epoch: int, epochs: int, is_best: bool,
    stop: StopSignal, context: DistributedContext, device: torch.device,
) -> None:
    """:func:`finish_epoch` on rank 0 (every rank learns if it failed), then raise TrainingStopped
    on every rank if rank 0 caught a signal and epochs remain."""
    run_on_main(lambda: finish_epoch(run_dir, run_log, row, state(epoch=epoch + 1), is_best), context, device,
                f"to save epoch {epoch}")
    if epoch + 1 < epochs and stop_agreed(stop, context, device):
        raise TrainingStopped(stop.requested or "process 0's signal", epoch)


def progress_saver(run_dir: str, state: State, context: DistributedContext, device: torch.device) -> Callable[[EpochProgress], None]:
    """The ``save_progress`` of the training loops: a mid-epoch checkpoint, written by rank 0."""

    def save_progress(progress: EpochProgress) -> None:
        path = os.path.join(run_dir, STEP_CHECKPOINT)
        run_on_main(lambda: save_checkpoint(state(**progress.state()), path), context, device, f"to write {path}")

    return save_progress


def report_stop(stopped: TrainingStopped, run_dir: str, log: Callable[[str], None]) -> int:
    """Say where a stopped run saved itself and how to continue; the exit status for it."""
    saved = os.path.join(run_dir, STEP_CHECKPOINT if stopped.step is not None else EPOCH_CHECKPOINT)
    log(f"=> {stopped}; saved {saved}; continue with --resume auto (exit status {EXIT_STOPPED})")
    return EXIT_STOPPED

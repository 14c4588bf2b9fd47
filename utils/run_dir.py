"""The run directory: where it is, what a fresh run may find in it, and the files each epoch
leaves there (the log row, ``checkpoint.pth.tar``, ``model_best.pth.tar``)."""

import os
from typing import Any, Callable, Dict, Optional

from .checkpoint import copy_checkpoint, remove_stale_temporaries, save_checkpoint
from .console import UsageError
from .resume import EPOCH_CHECKPOINT, STEP_CHECKPOINT
from .run_log import RunLog

__all__ = ["run_directory", "prepare_run_dir", "finish_epoch"]

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

"""Stopping a run cleanly when the cluster asks: SIGTERM (preemption, time limit, torchrun
shutting down) and SIGUSR1 (SLURM's ``--signal=USR1@120`` warning).

A signal only sets a flag; the training loop reads it between steps, saves a checkpoint of
exactly that point and exits with :data:`EXIT_STOPPED`. Reading the flag costs nothing, so a
single process checks it after every step. Under DDP every rank must stop after the same step,
so rank 0 decides and the others follow: its flag travels in one all_reduce that the loop makes
only where it syncs anyway (progress lines, checkpoint steps, the end of an epoch). A stop
therefore comes at most ``print_freq`` steps after the signal, plus the save.

A second signal while the checkpoint is being written changes nothing: the save is atomic,
and once a stop is requested, later stop signals are ignored until the process exits, so that a
second SIGTERM (SLURM and torchrun may each send one) cannot turn the clean exit into a kill.
"""

import signal
from types import FrameType, TracebackType
from typing import Optional, Sequence, Type

import torch

from utils.console import EXIT_STOPPED
from utils.distributed import DistributedContext, all_reduce_sum

__all__ = ["EXIT_STOPPED", "STOP_SIGNALS", "StopSignal", "TrainingStopped", "stop_vote", "stop_agreed"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignal:
    """Records the first stop signal instead of dying of it; use as a context manager around
    training. On exit it restores the previous handlers, unless a signal came: then the stop
    signals are left ignored (SIG_IGN, which Python keeps while it shuts down, unlike a Python
    handler), as the process is on its way out; child processes started after that would
    inherit the ignoring.

    ``requested`` is the signal's name (``"SIGTERM"``) once one arrived, else None.
    """

    def __init__(self, signals: Sequence[signal.Signals] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.requested: Optional[str] = None
        self._previous: dict = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        # Only a flag: printing here could re-enter a print the main thread was in.
        if self.requested is None:
            self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopSignal":
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], error: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if self.requested is None else signal.SIG_IGN)
        self._previous.clear()


class TrainingStopped(Exception):
    """Training stopped on a signal after saving a checkpoint of where it stopped.

    ``epoch`` and ``step`` say where: ``step`` steps of ``epoch`` are done (``step`` is None
    when the stop came at the end of the epoch, after its checkpoint).
    """

    def __init__(self, signal_name: str, epoch: int, step: Optional[int] = None, steps: Optional[int] = None) -> None:
        self.signal_name = signal_name
        self.epoch = epoch
        self.step = step
        self.steps = steps
        where = f"after epoch {epoch}" if step is None else f"in epoch {epoch} after step {step}/{steps}"
        super().__init__(f"stopped by {signal_name} {where}")


def stop_vote(stop: Optional[StopSignal], context: DistributedContext, device: torch.device) -> torch.Tensor:
    """This process's vote as a 0-d long tensor: 1 on rank 0 once a signal arrived, else 0.

    Summed over the processes (alone or inside a larger all_reduce, as utils.training.engine does with
    its non-finite-loss check) it is rank 0's decision, the same on every rank.
    """
    return torch.tensor(int(stop is not None and stop.requested is not None and context.is_main), device=device)


def stop_agreed(stop: Optional[StopSignal], context: DistributedContext, device: torch.device) -> bool:
    """Whether every process stops now (rank 0 decides). A collective under DDP: call it on all
    ranks at the same step, at a point where the loop syncs anyway."""
    if not context.enabled:
        return stop is not None and stop.requested is not None
    return bool(all_reduce_sum(stop_vote(stop, context, device), context).item())

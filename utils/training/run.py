"""The run every training script shares (main.py, detect.py, and whatever trains next): its
command line's common flags, its process group and start, and its epochs, each trained,
evaluated, logged and checkpointed.

An entry script wires the parts (as DeiT's main.py does): its own flags and data, the model, the
:class:`Optimization` and a task (classification's in utils/training/classification.py,
detection's in utils/detection/engine.py), which it hands to :func:`train_and_evaluate`. What a
task supplies is :class:`Task`; what a checkpoint holds is :func:`train_and_evaluate`'s ``state``.
"""

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils.console import UsageError, exit_status_of, show_warnings_as_one_line
from utils.distributed import (
    DistributedContext,
    check_distributed_arguments,
    cleanup,
    confirm_parameters_agree,
    init_distributed,
    peer_loss_reported,
)
from utils.longrun.preemption import StopSignal, TrainingStopped
from utils.longrun.resume import CheckpointSchedule, MidEpochCheckpoints, RunStart, begin_epoch
from utils.longrun.run_dir import RunDirectory, report_stop
from utils.reproducibility import capture_rng_state, restore_rng_state, seed_everything
from utils.training.config import RunConfig, main_process_log
from utils.training.device import amp_settings, select_device
from utils.training.engine import TrainingTask, train_one_epoch
from utils.training.optim import Optimization

__all__ = [
    "Task",
    "TrainingPlan",
    "add_process_arguments",
    "check_process_arguments",
    "run_command",
    "start_process",
    "run_start",
    "train_and_evaluate",
]

Run = Callable[[argparse.Namespace, DistributedContext], int]


class Task(TrainingTask, Protocol):
    """What a kind of training supplies to the run, besides :class:`TrainingTask`'s forward
    pass and totals: its evaluation, the score that picks the best epoch (kept in checkpoints
    under ``best_key``; ``no_best`` before any), and its log.csv row (``csv_fields``)."""

    best_key: str
    no_best: float
    csv_fields: Sequence[str]

    def evaluate(self, config: RunConfig) -> Optional[Dict[str, Any]]:
        """The evaluation's results, or None on the ranks that do not hold them."""

    def score(self, stats: Dict[str, Any]) -> float:
        """The number a better epoch has more of."""

    def describe_best(self, best: float) -> str:
        """``best Prec@1 76.130``: the best score, as the run's last line says it."""

    def epoch_row(self, epoch: int, lr: float, train: Dict[str, float], val: Optional[Dict[str, Any]]) -> Dict[str, float]:
        """The epoch's log row (``val`` None for an epoch without an evaluation)."""


@dataclass(frozen=True)
class TrainingPlan:
    """What the run is asked to do, and what its checkpoints say about it besides the weights:
    ``epochs`` in all into ``run_dir``, ``batch_size`` images per step over all processes (a
    mid-epoch resume must split the epoch alike), an evaluation every ``eval_interval`` epochs
    and after the last, a mid-epoch checkpoint every ``checkpoint_every`` steps; the ``arch``,
    the command line as plain values (``saved_args``) and the task's ``checkpoint_extras``
    (e.g. a detector's constructor settings and class names)."""

    run_dir: str
    epochs: int
    batch_size: int
    arch: str
    saved_args: Dict[str, Any]
    checkpoint_every: Optional[int] = None
    eval_interval: int = 1
    checkpoint_extras: Mapping[str, Any] = field(default_factory=dict)


def add_process_arguments(parser: argparse.ArgumentParser, gpu_help: str) -> None:
    """The flags :func:`start_process` reads besides ``-p`` and ``--bad-images``: the seed, the GPU, mixed precision."""
    parser.add_argument("--seed", default=None, type=int, help="seed everything, for reproducible runs")
    parser.add_argument("--gpu", default=None, type=int, help=gpu_help)
    parser.add_argument("--amp", action="store_true", help="mixed precision: bf16, or fp16 with loss scaling")


def check_process_arguments(args: argparse.Namespace) -> None:
    """A UsageError for a ``--gpu`` that is not there, or process-group flags that cannot work."""
    if args.gpu is not None and not (torch.cuda.is_available() and 0 <= args.gpu < torch.cuda.device_count()):
        available = f"{torch.cuda.device_count()} GPU(s) visible" if torch.cuda.is_available() else "CUDA is not available"
        raise UsageError(f"--gpu {args.gpu}: {available}")
    check_distributed_arguments(args)


def run_command(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], validate: Callable[[argparse.Namespace], None], run: Run
) -> int:
    """A training script from its command line to its exit status: the flags of
    :func:`add_process_arguments` and ``validate(args)`` checked before anything starts, then
    ``run(args, context)`` inside this process's group (torchrun, ``--world-size``, or none),
    left however it ends. Warnings and errors meant for the user are one line each; a collective
    failing because another process died is a PeerFailedError."""
    args = parser.parse_args(argv)
    show_warnings_as_one_line()

    def validated_run() -> int:
        check_process_arguments(args)
        validate(args)
        context = init_distributed(args.world_size, args.dist_url, args.rank, args.dist_backend)
        try:
            with peer_loss_reported(context):
                return run(args, context)
        finally:
            cleanup(context)

    return exit_status_of(validated_run, f"{parser.prog}: error")


def start_process(
    args: argparse.Namespace, context: DistributedContext, channels_last: bool = False, cudnn_benchmark: bool = False
) -> Tuple[RunConfig, Optional[torch.amp.GradScaler]]:
    """This process's :class:`RunConfig` from the flags every training script has (``--gpu``,
    ``--amp``, ``-p``, ``--bad-images``) and the GradScaler fp16 needs (None otherwise). Seeds
    everything with ``--seed`` and keeps cuDNN deterministic; without, lets it pick the fastest
    kernels if ``cudnn_benchmark``."""
    device = select_device(args.gpu, context)
    amp_dtype, scaler = amp_settings(args.amp, device)
    if args.seed is not None:
        seed_everything(args.seed)
        torch.backends.cudnn.deterministic = True
    elif cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    log = main_process_log(context)
    config = RunConfig(context, device, log, args.print_freq, amp_dtype, channels_last, args.bad_images, args.seed or 0)
    return config, scaler


def run_start(checkpoint: Optional[Mapping[str, Any]], optimization: Optimization, task: Task, first_epoch: int = 0) -> RunStart:
    """Where the run begins: at ``first_epoch`` for a fresh run (``checkpoint`` None), else where
    ``checkpoint`` stopped, with its optimizer state (and best score, RNG states, mid-epoch progress)."""
    if checkpoint is None:
        return RunStart(first_epoch, task.no_best)
    optimization.resume(checkpoint)
    return RunStart.from_checkpoint(checkpoint, task.best_key, task.no_best)


def train_and_evaluate(
    task: Task,
    model: nn.Module,
    train_model: nn.Module,
    optimization: Optimization,
    train_loader: DataLoader,
    config: RunConfig,
    plan: TrainingPlan,
    start: RunStart,
) -> int:
    """Train ``train_model`` (``model`` wrapped for training: DDP, DataParallel, compiled) from
    ``start`` to ``plan.epochs``; returns the exit status.

    Every epoch is trained, evaluated, logged and checkpointed (``checkpoint.pth.tar``,
    ``model_best.pth.tar`` for the best score so far), inside it every ``checkpoint_every``
    steps; a SIGTERM or SIGUSR1 stops the run after a checkpoint of that step (see
    utils.longrun). The checkpoints hold ``model``'s weights, as the bare model saves them.
    """
    context, log = config.context, config.log
    best = start.best

    def state(**position: Any) -> Dict[str, Any]:
        """What a checkpoint holds; ``position`` says where in training it was taken."""
        return {
            "arch": plan.arch,
            "state_dict": model.state_dict(),
            **plan.checkpoint_extras,
            task.best_key: best,
            **optimization.state(),
            "args": plan.saved_args,
            "rng": capture_rng_state(),
            **position,
        }

    first_epoch = start.epoch if start.resumed else 0
    with RunDirectory(plan.run_dir, state, context, config.device, first_epoch, task.csv_fields) as run_dir:
        if start.rng is not None:
            restore_rng_state(start.rng)
        try:
            with StopSignal() as stop:
                checkpoints = MidEpochCheckpoints(run_dir.save_progress, stop, CheckpointSchedule(plan.checkpoint_every))
                for epoch in range(start.epoch, plan.epochs):
                    resume_from = begin_epoch(train_loader, epoch, start.progress, plan.batch_size, context.world_size)
                    train_stats = train_one_epoch(task, train_model, train_loader, epoch, optimization, config, resume_from, checkpoints)
                    evaluating = (epoch + 1) % plan.eval_interval == 0 or epoch + 1 == plan.epochs
                    val_stats = task.evaluate(config) if evaluating else None
                    score = task.score(val_stats) if val_stats is not None else task.no_best
                    is_best = score > best
                    best = max(score, best)
                    row = task.epoch_row(epoch, optimization.lr, train_stats, val_stats)
                    run_dir.end_epoch(epoch, plan.epochs, row, is_best, stop)
        except TrainingStopped as stopped:
            return report_stop(stopped, plan.run_dir, log)
    confirm_parameters_agree(model, context, log)
    log(f"=> {task.describe_best(best)}; checkpoints in {plan.run_dir}")
    return 0

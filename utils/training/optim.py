"""Optimizers and learning-rate schedules by name, built from ``torch.optim`` and
``torch.optim.lr_scheduler``, and the training step that applies them.

Adding an optimizer or a schedule is an entry in :data:`OPTIMIZERS` or :data:`SCHEDULES`.

A schedule follows the run's position, not a count of its own calls: before each training step
it is stepped up to (epoch, step), so a resumed run, at an epoch or inside one, replays the same
torch scheduler from the base lr and reaches bitwise the lr of the run that never stopped.
Checkpoints therefore hold no scheduler state (files written before schedules were torch's
resume alike), and a run resumed with other schedule flags (``--lr-step``) follows them from
where it stands. Replaying costs about 10 us a step: two seconds for twelve COCO epochs.
"""

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.optim import Optimizer, lr_scheduler

from utils.checkpoint import CheckpointError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "ScheduleKind",
    "build_optimizer",
    "linear_warmup_then_multistep",
    "LearningRateSchedule",
    "Optimization",
]

OPTIMIZERS: Dict[str, Callable[..., Optimizer]] = {
    # The paper's, for ImageNet and COCO alike: momentum 0.9, weight decay.
    "sgd": torch.optim.SGD,
}
"""name -> the optimizer's constructor, called with the parameters (or parameter groups) and keyword hyper-parameters."""


def build_optimizer(name: str, parameters: Iterable[Any], **hyperparameters: Any) -> Optimizer:
    """The optimizer :data:`OPTIMIZERS` names, over ``parameters``."""
    return OPTIMIZERS[name](parameters, **hyperparameters)


@dataclass(frozen=True)
class ScheduleKind:
    """How a named schedule is built: ``build(optimizer, **options)``, plus ``steps_per_epoch=``
    for one that steps every training step (``per_step``); else it steps once an epoch."""

    build: Callable[..., lr_scheduler.LRScheduler]
    per_step: bool = False


def linear_warmup_then_multistep(
    optimizer: Optimizer,
    steps_per_epoch: int,
    milestones: Sequence[int],
    gamma: float = 0.1,
    warmup_steps: int = 500,
    warmup_factor: float = 1.0 / 3.0,
) -> lr_scheduler.LRScheduler:
    """MMDetection v1's 1x schedule, per step: the lr times ``gamma`` from each epoch in
    ``milestones`` on, and over the run's first ``warmup_steps`` steps a linear rise from
    ``warmup_factor`` of it (v1's 'linear' warm-up). Where the two overlap they multiply, as in v1."""
    decay = lr_scheduler.MultiStepLR(optimizer, [epoch * steps_per_epoch for epoch in milestones], gamma)
    if not warmup_steps:
        return decay
    warmup = lr_scheduler.LinearLR(optimizer, warmup_factor, 1.0, warmup_steps)
    return lr_scheduler.ChainedScheduler([warmup, decay], optimizer)


SCHEDULES: Dict[str, ScheduleKind] = {
    # lr x gamma every step_size epochs: the paper's ResNet recipe (x0.1 every 30 epochs) and, at
    # step_size 1, its MobileNetV2 recipe (x0.98 every epoch: StepLR(1) is ExponentialLR, bitwise).
    "step": ScheduleKind(lr_scheduler.StepLR),
    # detect.py's: MMDetection v1's 1x (see linear_warmup_then_multistep).
    "warmup_multistep": ScheduleKind(linear_warmup_then_multistep, per_step=True),
}
"""name -> how that schedule is built and how often it steps."""

_STEP_BEFORE_OPTIMIZER = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"
"""torch's warning when a scheduler's first step() comes before any optimizer step: what a resumed
run's replay does on purpose (and a GradScaler's skipped first step)."""


class LearningRateSchedule:
    """The schedule :data:`SCHEDULES` names on ``optimizer``, driven by the run's position.

    ``steps_per_epoch`` (the whole epoch's, however far a resumed epoch got) turns an (epoch,
    step) position into the scheduler's for one that steps every training step. The torch
    scheduler is built at the first :meth:`advance`, from the lr the optimizer was made with.
    """

    def __init__(self, optimizer: Optimizer, name: str, steps_per_epoch: int = 1, **options: Any) -> None:
        self.optimizer = optimizer
        self.kind = SCHEDULES[name]
        self.options: Mapping[str, Any] = {**options, "steps_per_epoch": steps_per_epoch} if self.kind.per_step else options
        self.steps_per_epoch = steps_per_epoch
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self._scheduler: Optional[lr_scheduler.LRScheduler] = None
        self._position = 0

    def restart(self) -> None:
        """Back to the base lr, to be replayed from the run's start: after the optimizer's state
        was loaded from a checkpoint, whose lr (and torch's ``initial_lr``) belong to the stopped run."""
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr
            group.pop("initial_lr", None)
        self._scheduler = None

    def advance(self, epoch: int, step: int = 0) -> None:
        """Step the scheduler up to ``step`` steps into ``epoch`` (to ``epoch`` for a schedule
        that steps once an epoch), replaying every step before it on its first call."""
        position = epoch * self.steps_per_epoch + step if self.kind.per_step else epoch
        if self._scheduler is None:
            self._scheduler, self._position = self.kind.build(self.optimizer, **self.options), 0
        if position <= self._position:
            return
        if self._position == 0:  # only a scheduler's first step() warns; the filters stay untouched after it
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_STEP_BEFORE_OPTIMIZER)
                self._step_to(position)
        else:
            self._step_to(position)

    def _step_to(self, position: int) -> None:
        while self._position < position:
            self._scheduler.step()
            self._position += 1

    @property
    def lr(self) -> float:
        """The first parameter group's lr now (the one progress lines and log.csv show)."""
        return self.optimizer.param_groups[0]["lr"]


class Optimization:
    """What a training step does to the weights, and what a checkpoint keeps of it.

    :meth:`step` is backward and update: the loss scaled with a GradScaler (fp16), the
    gradients' norm clipped to ``clip_grad_norm`` when given (unscaled first, so the bound
    means the same), the optimizer's step. It is the one place for what changes the update
    (gradient accumulation, an EMA of the weights). :meth:`advance` moves the lr schedule to the
    run's position before each step.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: LearningRateSchedule,
        scaler: Optional[torch.amp.GradScaler] = None,
        clip_grad_norm: Optional[float] = None,
    ) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.scaler = scaler
        self.clip_grad_norm = clip_grad_norm

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                self._clip_gradients()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.clip_grad_norm:
                self._clip_gradients()
            self.optimizer.step()

    def _clip_gradients(self) -> None:
        nn.utils.clip_grad_norm_([p for group in self.optimizer.param_groups for p in group["params"]], self.clip_grad_norm)

    def advance(self, epoch: int, step: int = 0) -> None:
        self.schedule.advance(epoch, step)

    @property
    def lr(self) -> float:
        return self.schedule.lr

    def state(self) -> Dict[str, Any]:
        """The checkpoint's ``optimizer`` and ``scaler`` entries."""
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def resume(self, checkpoint: Mapping[str, Any]) -> None:
        """Restore the optimizer (and loss scaler) from a checkpoint; the lr schedule is replayed
        from the base lr at the next :meth:`advance`. A CheckpointError if the state does not fit."""
        if "optimizer" in checkpoint:
            try:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            except (ValueError, KeyError) as error:
                raise CheckpointError(f"the checkpoint's optimizer state does not fit this model ({error})") from None
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.schedule.restart()

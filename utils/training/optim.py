"""Optimizers and learning-rate schedules by name, built from ``torch.optim`` and
``torch.optim.lr_scheduler``, and the training step that applies them (with gradient
accumulation, clipping and an EMA of the weights, ``torch.optim.swa_utils``).

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
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.optim import Optimizer, lr_scheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from utils.checkpoint import CheckpointError
from utils.console import UsageError

__all__ = [
    "OptimizerKind",
    "OPTIMIZERS",
    "SCHEDULES",
    "ScheduleKind",
    "NORM_LAYERS",
    "build_optimizer",
    "parameter_groups",
    "step_decay",
    "cosine_decay",
    "linear_warmup_then_multistep",
    "LearningRateSchedule",
    "ema_decay_per_update",
    "WeightAverage",
    "Optimization",
]


def _lamb(parameters: Iterable[Any], **hyperparameters: Any) -> Optimizer:
    """timm's LAMB (``timm.optim.Lamb``, maintained with timm; torch has none). timm is optional:
    only the LAMB recipes need it."""
    try:
        from timm.optim import Lamb
    except ImportError:
        raise UsageError("--opt lamb takes LAMB from timm, which is not installed: pip install timm") from None
    return Lamb(parameters, **hyperparameters)


@dataclass(frozen=True)
class OptimizerKind:
    """How a named optimizer is built: ``build(parameters, lr=..., weight_decay=..., **options)``,
    with only the ``options`` it ``takes`` of those a caller passes (SGD's momentum, say)."""

    build: Callable[..., Optimizer]
    takes: Tuple[str, ...] = ()


OPTIMIZERS: Dict[str, OptimizerKind] = {
    # The paper's, for ImageNet and COCO alike: momentum 0.9, weight decay; torchvision's v2 recipe too.
    "sgd": OptimizerKind(torch.optim.SGD, ("momentum", "nesterov")),
    # Decoupled weight decay (Loshchilov & Hutter), torch's defaults otherwise.
    "adamw": OptimizerKind(torch.optim.AdamW),
    # ResNet strikes back's (You et al.'s layer-wise adaptive Adam), timm's defaults otherwise.
    "lamb": OptimizerKind(_lamb),
}
"""name -> how that optimizer is built."""


def build_optimizer(name: str, parameters: Iterable[Any], lr: float, weight_decay: float = 0.0, **options: Any) -> Optimizer:
    """The optimizer :data:`OPTIMIZERS` names, over ``parameters`` (or parameter groups); the
    ``options`` it does not take (SGD's momentum for AdamW) are left out."""
    kind = OPTIMIZERS[name]
    return kind.build(parameters, lr=lr, weight_decay=weight_decay, **{key: options[key] for key in kind.takes if key in options})


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
"""The layers whose parameters ``norm_weight_decay`` covers (BatchNorm, SyncBatchNorm and InstanceNorm
derive from ``_NormBase``), as torchvision's references tell normalization layers apart."""


def parameter_groups(
    model: nn.Module, weight_decay: float, norm_weight_decay: Optional[float] = None, bias_weight_decay: Optional[float] = None
) -> List[Dict[str, Any]]:
    """The model's parameters in groups by weight decay: norm layers' at ``norm_weight_decay``,
    biases at ``bias_weight_decay`` (this one first where both apply), the rest at
    ``weight_decay``; a None leaves those with the rest. One group when both are None: the
    optimizer then holds exactly what ``model.parameters()`` gives it."""
    if norm_weight_decay is None and bias_weight_decay is None:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    groups: Dict[str, Dict[str, Any]] = {
        "decay": {"params": [], "weight_decay": weight_decay},
        "norm": {"params": [], "weight_decay": norm_weight_decay},
        "bias": {"params": [], "weight_decay": bias_weight_decay},
    }
    seen = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            if bias_weight_decay is not None and name == "bias":
                groups["bias"]["params"].append(parameter)
            elif norm_weight_decay is not None and isinstance(module, NORM_LAYERS):
                groups["norm"]["params"].append(parameter)
            else:
                groups["decay"]["params"].append(parameter)
    return [group for group in groups.values() if group["params"]]


@dataclass(frozen=True)
class ScheduleKind:
    """How a named schedule is built: ``build(optimizer, **options)``, plus ``steps_per_epoch=``
    for one that steps every training step (``per_step``); else it steps once an epoch. With
    ``takes``, only those of the options a caller passes (a caller may pass every schedule's)."""

    build: Callable[..., lr_scheduler.LRScheduler]
    per_step: bool = False
    takes: Optional[Tuple[str, ...]] = None


def _warmup_then(
    optimizer: Optimizer, decay: lr_scheduler.LRScheduler, warmup_epochs: int, warmup_factor: float
) -> lr_scheduler.LRScheduler:
    """``decay`` after a linear warm-up from ``warmup_factor`` of the lr over ``warmup_epochs``
    (torchvision's 'linear' warm-up), counted from its end; ``decay`` alone without one."""
    if not warmup_epochs:
        return decay
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=warmup_factor, total_iters=warmup_epochs)
    return lr_scheduler.SequentialLR(optimizer, [warmup, decay], milestones=[warmup_epochs])


def step_decay(
    optimizer: Optimizer, step_size: int, gamma: float, warmup_epochs: int = 0, warmup_factor: float = 0.01
) -> lr_scheduler.LRScheduler:
    """lr x ``gamma`` every ``step_size`` epochs (``StepLR``), after any warm-up."""
    return _warmup_then(optimizer, lr_scheduler.StepLR(optimizer, step_size, gamma), warmup_epochs, warmup_factor)


def cosine_decay(
    optimizer: Optimizer, epochs: int, min_lr: float = 0.0, warmup_epochs: int = 0, warmup_factor: float = 0.01
) -> lr_scheduler.LRScheduler:
    """A half cosine from the lr to ``min_lr`` over the epochs after the warm-up (``CosineAnnealingLR``),
    as torchvision's and timm's recipes step it: once an epoch."""
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs - warmup_epochs, 1), eta_min=min_lr)
    return _warmup_then(optimizer, cosine, warmup_epochs, warmup_factor)


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
    "step": ScheduleKind(step_decay, takes=("step_size", "gamma", "warmup_epochs", "warmup_factor")),
    # torchvision's v2 and ResNet strikes back's: warm-up, then a cosine to min_lr.
    "cosine": ScheduleKind(cosine_decay, takes=("epochs", "min_lr", "warmup_epochs", "warmup_factor")),
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
        if self.kind.takes is not None:
            options = {key: value for key, value in options.items() if key in self.kind.takes}
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


def ema_decay_per_update(decay: float, batch_size: int, every: int, epochs: int) -> float:
    """torchvision's reading of ``--model-ema-decay``: the decay for ``batch_size`` images (all
    processes) per step, an update every ``every`` steps and ``epochs`` epochs, so that the
    average spans the same share of training however long it is:
    ``1 - min(1, (1 - decay) * (batch_size * every / epochs))``."""
    return 1.0 - min(1.0, (1.0 - decay) * (batch_size * every / epochs))


class WeightAverage:
    """An exponential moving average of a model's weights and buffers (BatchNorm statistics
    included): ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(decay)`` and
    ``use_buffers=True``, updated after every ``every``-th optimizer update of an epoch
    (the first, the ``every + 1``-th, ...). During the lr warm-up it copies the weights instead,
    as torchvision's recipe does. ``module`` is the averaged model, to evaluate and save."""

    def __init__(self, model: nn.Module, decay: float, every: int = 1) -> None:
        self.model = model
        self.every = every
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    def after_update(self, update: int, warming_up: bool) -> None:
        """After the epoch's ``update``-th optimizer update (0-based)."""
        if update % self.every:
            return
        self.averaged.update_parameters(self.model)
        if warming_up:
            self.averaged.n_averaged.fill_(0)  # the next update copies again

    def state_dict(self) -> Dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            self.averaged.load_state_dict(state)
        except (RuntimeError, KeyError) as error:
            raise CheckpointError(f"the checkpoint's EMA weights do not fit this model ({str(error).splitlines()[0]})") from None


class Optimization:
    """What a training step does to the weights, and what a checkpoint keeps of it.

    :meth:`step` is backward and, at the end of each group of ``accumulation`` steps, the
    update: the loss scaled with a GradScaler (fp16), the gradients' norm clipped to
    ``clip_grad_norm`` when given (unscaled first, so the bound means the same), the
    optimizer's step, the ``average``'s (an EMA of the weights). It is the one place for what
    changes the update. :meth:`advance` moves the lr schedule to the run's position before each step.

    Accumulating, each step's loss counts ``1 / n`` of its group's (``n`` steps; the epoch's last
    group may be shorter), so the gradients are the mean over the group's images as one large
    batch's would be. A group never spans two epochs.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: LearningRateSchedule,
        scaler: Optional[torch.amp.GradScaler] = None,
        clip_grad_norm: Optional[float] = None,
        accumulation: int = 1,
        average: Optional[WeightAverage] = None,
        warmup_epochs: int = 0,
    ) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.scaler = scaler
        self.clip_grad_norm = clip_grad_norm
        self.accumulation = accumulation
        self.average = average
        self.warmup_epochs = warmup_epochs
        self._epoch = 0

    def step(self, loss: torch.Tensor, step: int = 0, steps: int = 1) -> bool:
        """Backward for ``step`` of the epoch's ``steps``; the update if its group ends there.
        Returns whether the weights were updated (where a checkpoint may be taken)."""
        first = step - step % self.accumulation
        group = min(self.accumulation, steps - first)
        if step == first:
            self.optimizer.zero_grad(set_to_none=True)
        if group > 1:
            loss = loss / group
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if step < first + group - 1:
            return False
        if self.scaler is not None:
            if self.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                self._clip_gradients()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.clip_grad_norm:
                self._clip_gradients()
            self.optimizer.step()
        if self.average is not None:
            self.average.after_update(step // self.accumulation, self._epoch < self.warmup_epochs)
        return True

    def _clip_gradients(self) -> None:
        nn.utils.clip_grad_norm_([p for group in self.optimizer.param_groups for p in group["params"]], self.clip_grad_norm)

    def advance(self, epoch: int, step: int = 0) -> None:
        self._epoch = epoch
        self.schedule.advance(epoch, step)

    @property
    def lr(self) -> float:
        return self.schedule.lr

    def state(self) -> Dict[str, Any]:
        """The checkpoint's ``optimizer`` and ``scaler`` entries, and ``ema`` with an average."""
        state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        if self.average is not None:
            state["ema"] = self.average.state_dict()
        return state

    def resume(self, checkpoint: Mapping[str, Any]) -> None:
        """Restore the optimizer (and loss scaler, and EMA) from a checkpoint; the lr schedule is
        replayed from the base lr at the next :meth:`advance`. A CheckpointError if the state
        does not fit; an EMA missing from the checkpoint starts from the resumed weights."""
        if "optimizer" in checkpoint:
            try:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            except (ValueError, KeyError) as error:
                raise CheckpointError(f"the checkpoint's optimizer state does not fit this model ({error})") from None
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        if self.average is not None and checkpoint.get("ema") is not None:
            self.average.load_state_dict(checkpoint["ema"])
        self.schedule.restart()

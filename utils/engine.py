"""One training epoch, one evaluation pass, and the step learning-rate schedule.

The training step stays lean: non-blocking copies, ``zero_grad(set_to_none=True)``, and no
host sync except when a progress line is printed.
"""

from typing import Callable, Dict, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from .distributed import DistributedContext
from .metrics import RunningTotals, format_duration

__all__ = ["step_learning_rate", "set_learning_rate", "train_one_epoch", "evaluate"]

Log = Callable[[str], None]


def step_learning_rate(base_lr: float, epoch: int, step_size: int, gamma: float) -> float:
    """The original schedule: ``base_lr * gamma ** (epoch // step_size)`` (0.1 every 30 epochs
    for ResNets; 0.98 every epoch for MobileNetV2)."""
    return base_lr * gamma ** (epoch // step_size)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _to_device(images: torch.Tensor, target: torch.Tensor, device: torch.device, channels_last: bool):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, target.to(device, non_blocking=True)


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
) -> Dict[str, float]:
    """Train for one pass over ``loader``; returns the epoch's averages over all processes."""
    model.train()
    totals = RunningTotals(device)
    steps = len(loader)
    lr = optimizer.param_groups[0]["lr"]
    for step, (images, target) in enumerate(loader):
        images, target = _to_device(images, target, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = model(images)
            loss = criterion(output, target)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        totals.update(loss, output, target)
        if step % print_freq == 0 or step == steps - 1:
            running = totals.summary()
            eta = running["seconds"] / (step + 1) * (steps - step - 1)
            log(
                f"Epoch: [{epoch}][{step:>{len(str(steps))}}/{steps}]  loss {loss.item():.4f} ({running['loss']:.4f})  "
                f"Prec@1 {running['prec1']:6.2f}  Prec@5 {running['prec5']:6.2f}  lr {lr:.5g}  "
                f"{running['images_per_s'] * context.world_size:.0f} img/s  eta {format_duration(eta)}"
            )
    return totals.summary(context)


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
) -> Dict[str, float]:
    """Loss, Prec@1 and Prec@5 over the whole evaluation set, summed exactly across processes.

    Pass the unwrapped model under DDP: ranks may hold different numbers of batches, and a
    DDP forward would wait for collectives the other ranks never join.
    """
    model.eval()
    totals = RunningTotals(device)
    steps = len(loader)
    for step, (images, target) in enumerate(loader):
        images, target = _to_device(images, target, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            output = model(images)
            loss = criterion(output, target)
        totals.update(loss, output, target)
        if print_freq and step % print_freq == 0 and step != steps - 1:
            running = totals.summary()
            log(f"Test: [{step:>{len(str(steps))}}/{steps}]  loss {running['loss']:.4f}  Prec@1 {running['prec1']:6.2f}  Prec@5 {running['prec5']:6.2f}")
    result = totals.summary(context)
    log(f" * Prec@1 {result['prec1']:.3f} Prec@5 {result['prec5']:.3f}")
    return result

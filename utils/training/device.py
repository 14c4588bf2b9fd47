"""Where a model runs: the device of this process, the mixed-precision dtype, and the wrapper
(DistributedDataParallel, DataParallel, torch.compile) around the bare model that checkpoints save."""

from typing import Optional, Tuple

import torch
from torch import nn

from utils.distributed import DistributedContext

__all__ = ["select_device", "amp_settings", "wrap_model"]


def select_device(gpu: Optional[int], context: DistributedContext) -> torch.device:
    """The CPU without CUDA; under DDP the process's local GPU; else ``gpu`` or the current one."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if context.enabled:
        return torch.device("cuda", context.local_rank)
    return torch.device("cuda", gpu if gpu is not None else torch.cuda.current_device())


def amp_settings(enabled: bool, device: torch.device) -> Tuple[Optional[torch.dtype], Optional[torch.amp.GradScaler]]:
    """bf16 where supported (no loss scaling needed), else fp16 with a GradScaler."""
    if not enabled:
        return None, None
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def wrap_model(
    model: nn.Module,
    device: torch.device,
    context: DistributedContext,
    one_gpu: bool = False,
    channels_last: bool = False,
    compile_model: bool = False,
) -> Tuple[nn.Module, nn.Module]:
    """(the model to train, the model to evaluate); the bare model stays what checkpoints save.

    Without DDP and ``one_gpu``, a CUDA model is spread over every visible GPU with DataParallel.
    """
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    compiled = torch.compile(model) if compile_model else model
    if context.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(compiled, device_ids=device_ids), compiled
    if device.type == "cuda" and not one_gpu:
        parallel = nn.DataParallel(compiled)
        return parallel, parallel
    return compiled, compiled

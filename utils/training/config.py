"""How this process runs its loops, in one object: the loops of every task take a
:class:`RunConfig` rather than the same half-dozen settings threaded through each signature."""

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from utils.distributed import DistributedContext

__all__ = ["Log", "RunConfig", "main_process_log"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunConfig:
    """Where the loops run and how: the process group, the device, where progress lines go
    (``log``, silent on every rank but 0) and how often (``print_freq`` steps), autocast's
    dtype (None: full precision), the memory format of image batches, and what an unreadable
    image does (``"skip"`` it and count it, or stop with an ``"error"``); the run's ``seed``
    (``--seed``, 0 without), which seeds the draws that follow the run's position."""

    context: DistributedContext
    device: torch.device
    log: Log
    print_freq: int = 10
    amp_dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    bad_images: str = "skip"
    seed: int = 0


def main_process_log(context: DistributedContext) -> Log:
    """Print (flushed, so that a log read while the run goes on is current) on rank 0 only."""
    if context.is_main:
        return lambda line: print(line, flush=True)
    return lambda line: None

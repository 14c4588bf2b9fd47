"""Top-k accuracy and the running sums behind the progress lines.

Sums stay on the device as tensors: reading them (one host sync) happens only when a line
is printed or an epoch ends, never per step.
"""

import time
from typing import Dict, Optional, Sequence

import torch

from utils.distributed import DistributedContext, all_reduce_sum

__all__ = ["correct_topk", "RunningTotals", "format_duration"]


def correct_topk(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> torch.Tensor:
    """How many samples have their target among the top k logits, for each k (k capped at the class count)."""
    maxk = min(max(topk), output.shape[1])
    predictions = output.topk(maxk, dim=1).indices
    hits = predictions.eq(target.view(-1, 1))
    return torch.stack([hits[:, : min(k, maxk)].any(dim=1).sum() for k in topk])


class RunningTotals:
    """Summed loss and top-1/top-5 hits over the samples seen so far, plus throughput."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss * n, top-1 hits, top-5 hits, n
        self.start = time.perf_counter()

    def update(self, loss: torch.Tensor, output: torch.Tensor, target: torch.Tensor) -> None:
        batch = target.shape[0]
        hits = correct_topk(output.detach(), target).double()
        self.sums[0] += loss.detach().double() * batch
        self.sums[1:3] += hits
        self.sums[3] += batch

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def restore(self, sums: torch.Tensor, seconds: float) -> None:
        """Continue from a mid-epoch checkpoint's sums (``self.sums`` as saved) and elapsed time,
        so that the epoch's averages come out as if it had never stopped."""
        self.sums.copy_(sums)
        self.start = time.perf_counter() - seconds

    def summary(self, context: Optional[DistributedContext] = None) -> Dict[str, float]:
        """Averages so far; with a context, over all processes (every rank must call it)."""
        sums = self.sums.clone()
        if context is not None:
            all_reduce_sum(sums, context)
        loss, top1, top5, count = sums.tolist()
        elapsed = self.elapsed()
        count_safe = max(count, 1.0)
        return {
            "loss": loss / count_safe,
            "prec1": 100.0 * top1 / count_safe,
            "prec5": 100.0 * top5 / count_safe,
            "count": int(count),
            "images_per_s": count / elapsed if elapsed > 0 else 0.0,
            "seconds": elapsed,
        }


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

"""Process-group setup for one process, torchrun (env://) or an explicit --world-size/--dist-url,
and the few collective helpers training needs."""

import argparse
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

from utils.console import OneLineError, UsageError

__all__ = [
    "DistributedContext",
    "PeerFailedError",
    "add_distributed_arguments",
    "check_distributed_arguments",
    "init_distributed",
    "describe_processes",
    "all_reduce_sum",
    "all_gather_rows",
    "gather_objects",
    "run_on_main",
    "peer_loss_reported",
    "barrier",
    "cleanup",
    "parameters_agree",
    "confirm_parameters_agree",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits. ``enabled`` is False for a plain single-process run."""

    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        """Only this process writes logs and checkpoints."""
        return self.rank == 0


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags :func:`init_distributed` reads, for a run started without torchrun."""
    parser.add_argument("--world-size", default=1, type=int, help="number of processes (without torchrun)")
    parser.add_argument("--rank", default=0, type=int, help="this process's rank (without torchrun)")
    parser.add_argument("--dist-url", default="tcp://127.0.0.1:23456", type=str, help="rendezvous URL (without torchrun)")
    parser.add_argument("--dist-backend", default=None, type=str, choices=["nccl", "gloo"],
                        help="default: nccl with CUDA, gloo without")


def check_distributed_arguments(args: argparse.Namespace) -> None:
    """A UsageError for flags of :func:`add_distributed_arguments` that cannot work, before any process group exists."""
    if not 0 <= args.rank < max(args.world_size, 1):
        raise UsageError(f"--rank {args.rank} is outside --world-size {args.world_size}")
    if args.dist_backend == "nccl" and not torch.cuda.is_available():
        raise UsageError("--dist-backend nccl needs CUDA; use gloo on CPU-only machines")


def describe_processes(context: DistributedContext) -> str:
    """``, 2 processes (gloo)`` under DDP, else nothing: the end of a run's first line."""
    return f", {context.world_size} processes ({context.backend})" if context.enabled else ""


def _launched_by_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(world_size: int, dist_url: Optional[str], rank: int, backend: Optional[str]) -> DistributedContext:
    """Join a process group if torchrun started us or ``world_size > 1``; else stay single-process.

    The backend defaults to nccl when CUDA is available and gloo otherwise, so the same
    command line works on GPU nodes and on CPU-only machines.
    """
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if _launched_by_torchrun():
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
        rendezvous = {"store": _torchrun_store(rank, world_size)}
    elif world_size > 1:
        local_rank = rank % max(torch.cuda.device_count(), 1)
        rendezvous = {"init_method": dist_url}
    else:
        return DistributedContext()
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, world_size=world_size, rank=rank, **rendezvous)
    return DistributedContext(True, rank, world_size, local_rank, backend)


def _torchrun_store(rank: int, world_size: int) -> dist.Store:
    """torchrun's key-value store, seen through a prefix of its own for each restart.

    After an elastic restart the agent's store still holds the previous workers' addresses
    under the same keys: a new worker that reads one pairs with a dead or dying process and
    fails, or waits for it until the collective timeout. A prefix per restart count keeps
    each group of workers to its own keys.
    """
    agent_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=rank == 0 and not agent_hosts_store,
        timeout=default_pg_timeout,
        multi_tenant=True,
    )
    return dist.PrefixStore(f"restart_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum a tensor over all processes (in place; a no-op when not distributed)."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Every process's 1-D ``tensor``, one row per rank (one row when not distributed)."""
    if not context.enabled:
        return tensor.unsqueeze(0).clone()
    rows = [torch.empty_like(tensor) for _ in range(context.world_size)]
    dist.all_gather(rows, tensor)
    return torch.stack(rows)


def gather_objects(value: Any, context: DistributedContext) -> List[Any]:
    """Every process's ``value`` (picklable), one entry per rank, on every rank."""
    if not context.enabled:
        return [value]
    gathered: List[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


class PeerFailedError(OneLineError):
    """Another process failed at a step all processes share; ``str()`` is one line meant for the user."""


def run_on_main(action: Callable[[], None], context: DistributedContext, device: torch.device, what: str) -> None:
    """Run ``action`` (e.g. writing a checkpoint) on rank 0 only, then let every rank know whether
    it failed (one all_reduce, which also serves as a barrier): rank 0 re-raises its error, the
    others raise PeerFailedError, so that no process trains on alone into a collective that
    will never complete."""
    error: Optional[BaseException] = None
    if context.is_main:
        try:
            action()
        except Exception as caught:  # re-raised below, after the others have heard of it
            error = caught
    failed = all_reduce_sum(torch.tensor(int(error is not None), device=device), context)
    if error is not None:
        raise error
    if failed.item():
        raise PeerFailedError(f"process 0 failed {what}; see its error")


def _communication_failure(error: BaseException) -> Optional[str]:
    """The collective's own words, if ``error`` or an error it was raised while handling (the
    survivor's DataLoader workers die of the same SIGTERM) is a collective that failed."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if isinstance(error, dist.DistError) or (isinstance(error, RuntimeError) and "/gloo/" in text):
            first_line = (text.strip().splitlines() or [type(error).__name__])[0]
            return re.sub(r"^\[[^\]]*\] ", "", first_line).split(". ")[0]
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def peer_loss_reported(context: DistributedContext) -> Iterator[None]:
    """Turn a collective that fails because another process died (killed, out of memory, a lost
    node) into PeerFailedError, one line for the survivor, instead of a traceback from inside the
    backward pass; the run continues with ``--resume auto``, by hand or by torchrun's restarts."""
    try:
        yield
    except Exception as error:
        cause = _communication_failure(error) if context.enabled else None
        if cause is None:
            raise
        raise PeerFailedError(
            f"process {context.rank} lost contact with another process of the run ({cause}); "
            "run the same command with --resume auto to continue from the last checkpoint "
            "(torchrun --max-restarts does that by itself)"
        ) from error


def barrier(context: DistributedContext) -> None:
    """Wait for every process; on nccl, on this process's own GPU (never a guessed one)."""
    if context.enabled:
        dist.barrier(device_ids=[context.local_rank] if context.backend == "nccl" else None)


def cleanup(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def parameters_agree(model: torch.nn.Module, context: DistributedContext) -> bool:
    """Whether every process holds the same parameters (a DDP sanity check at the end of training).

    Compares a per-tensor (sum, sum of squares) fingerprint in float64 rather than the weights
    themselves, so the check costs one small all_gather whatever the model size; any real
    divergence between ranks changes it, though it is not a bitwise comparison.
    """
    if not context.enabled:
        return True
    fingerprint = torch.stack(
        [torch.stack([p.detach().double().sum(), p.detach().double().square().sum()]) for p in model.parameters()]
    )
    gathered = [torch.empty_like(fingerprint) for _ in range(context.world_size)]
    dist.all_gather(gathered, fingerprint)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def confirm_parameters_agree(model: torch.nn.Module, context: DistributedContext, log: Callable[[str], None]) -> None:
    """After DDP training: say that every process ends with the same weights, or raise."""
    if not context.enabled:
        return
    if not parameters_agree(model, context):
        raise RuntimeError("the processes ended training with different weights; DistributedDataParallel lost sync")
    log(f"=> weights identical on all {context.world_size} processes")

"""Seeding and the RNG states a checkpoint carries, so that a resumed run continues exactly.

The states are stored as tensors, ints and tuples only: checkpoints load with
``torch.load(weights_only=True)``, which refuses numpy arrays.
"""

import contextlib
import random
from typing import Any, Dict, Iterator

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "capture_rng_state",
    "restore_rng_state",
    "seed_worker",
    "epoch_seed",
    "sample_seed",
    "step_seed",
    "cpu_draws_seeded",
]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, rank), e.g. for data-loader workers."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % (2**63)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: a well-mixed 63-bit function of (run seed, epoch,
    dataset index), so that the crop a sample gets does not depend on which worker drew it."""
    return _mixed(seed, epoch, index)


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The seed of one training step's batch-level draws (Mixup/CutMix) on one process: a pure
    function of (run seed, epoch, step, rank), so that a resumed run draws what the run that
    never stopped drew, and processes draw independently."""
    return _mixed(seed, epoch, step, rank, _STEP_SALT)


_STEP_SALT = 0x5354_4550  # keeps step seeds apart from sample seeds


def _mixed(*parts: int) -> int:
    value = 0
    for part in parts:
        value = _mix64(value ^ (part & _MASK64))
    return value >> 1


@contextlib.contextmanager
def cpu_draws_seeded(seed: int) -> Iterator[None]:
    """Torch's CPU generator seeded with ``seed`` inside the block and put back as it was after,
    so that the block's random draws are a pure function of ``seed`` and disturb no other's.
    Only the CPU generator: ``torch.manual_seed`` would also seed every accelerator, ~100x slower."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """SplitMix64's finaliser: every input bit flips about half of the output bits."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def capture_rng_state() -> Dict[str, Any]:
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`; the CUDA states are restored where the devices match."""
    random.setstate(_as_tuples(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples back that a round trip may have made lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: torch already seeds each worker; give python and numpy the same seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)

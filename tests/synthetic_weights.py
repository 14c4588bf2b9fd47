"""The fidelity fixtures' rule for synthetic weights and input (tests/fixtures/README.md)."""

import math
import zlib
from typing import Dict, Sequence

import numpy as np
import torch


def uniform(seed: int, n: int) -> np.ndarray:
    """splitmix64 of seed, seed+1, ...: n float64 values in [0, 1)."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) + np.arange(n, dtype=np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
        z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


def synthetic_tensor(key: str, shape: Sequence[int]) -> torch.Tensor:
    """The float64 value the rule gives ``key`` (without any ``module.`` prefix)."""
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    u = uniform(zlib.crc32(key.encode()), n).reshape(shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        value = 0.5 + u
    elif key.endswith("running_mean") or key.endswith(".bias"):
        value = (u - 0.5) * 0.2
    elif key.endswith(".weight") and len(shape) == 1:
        value = 0.5 + u
    else:
        fan_in = int(np.prod(shape[1:]))
        value = (2 * u - 1) * math.sqrt(3 / fan_in)
    return torch.from_numpy(np.ascontiguousarray(value))


def synthetic_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The synthetic checkpoint for ``model``'s layout, rounded to float32 as the rule says."""
    state = {}
    for key, tensor in model.state_dict().items():
        value = synthetic_tensor(key, list(tensor.shape))
        state[key] = value if value.dtype == torch.int64 else value.float()
    return state


def synthetic_input(batch: int = 2, size: int = 160) -> torch.Tensor:
    values = 2 * uniform(zlib.crc32(b"input"), batch * 3 * size * size) - 1
    return torch.from_numpy(values.reshape(batch, 3, size, size))

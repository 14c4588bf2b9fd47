"""ECA's kernel sizes: the paper's adaptive k (Eq. 12, arXiv v1's Eq. 9) and the per-stage k specifications
that the ECA networks' constructors, ``--ksize`` and the checkpoint loader take, read and written."""

import math
from typing import List, Sequence, Union

__all__ = ["adaptive_kernel_size", "parse_kernel_sizes", "format_kernel_sizes", "KernelSizeSpec"]

KernelSizeSpec = Union[str, Sequence[Union[int, str]]]
"""Per-stage ECA kernel sizes: ``"3557"``, ``[3, 5, 5, 7]``, ``list("3557")`` or ``"adaptive"``."""


def adaptive_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """Eq. 12 of the paper (Eq. 9 in arXiv v1): k = |log2(C) + b| / gamma, rounded to the nearest odd integer above.

    Unlike timm, the result is not clamped to at least 3: for C <= 8 the paper's formula
    gives k = 1 or 3 and that is what is returned.
    """
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    t = int(abs(math.log2(channels) + b) / gamma)
    return t if t % 2 else t + 1


def parse_kernel_sizes(k_size: KernelSizeSpec, stage_channels: Sequence[int]) -> List[int]:
    """Turn any accepted k specification into one odd kernel size per stage.

    ``"adaptive"`` applies Eq. 12 to each stage's channel count (every ECA layer of a stage
    sees the same number of channels). Anything malformed is a ValueError naming the problem.
    """
    if isinstance(k_size, str) and k_size.lower() == "adaptive":
        return [adaptive_kernel_size(channels) for channels in stage_channels]
    entries = list(k_size)
    if len(entries) != len(stage_channels):
        raise ValueError(
            f"k_size {_show(k_size)} has {len(entries)} entries; this model has "
            f"{len(stage_channels)} stages, so give {len(stage_channels)} odd kernel sizes "
            f"(e.g. {'3' * len(stage_channels)}) or 'adaptive'"
        )
    sizes = []
    for stage, entry in enumerate(entries, start=1):
        if isinstance(entry, bool) or not isinstance(entry, (int, str)):
            raise ValueError(f"k_size {_show(k_size)}: stage {stage} entry {entry!r} is not an integer")
        if isinstance(entry, str):
            if not entry.isdigit():
                raise ValueError(f"k_size {_show(k_size)}: stage {stage} entry {entry!r} is not a digit")
            entry = int(entry)
        if entry < 1 or entry % 2 == 0:
            raise ValueError(
                f"k_size {_show(k_size)}: stage {stage} has k={entry}; every k must be a positive odd integer"
            )
        sizes.append(entry)
    return sizes


def format_kernel_sizes(sizes: Sequence[int]) -> str:
    """As ``--ksize`` takes them: ``3557``, or comma-separated when some k has two digits."""
    return "".join(map(str, sizes)) if all(k < 10 for k in sizes) else ",".join(map(str, sizes))


def _show(k_size: KernelSizeSpec) -> str:
    return repr(k_size) if isinstance(k_size, str) else repr(list(k_size))

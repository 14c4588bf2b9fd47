"""Checkpoint files: reading without running code, and writing atomically.

Loading never runs code (``weights_only=True``) and accepts the released checkpoints (legacy
serialization, ``module.`` keys, a tensor ``best_prec1``), the files that timm's and
torchvision's training scripts write (their ``args``, an ``argparse.Namespace``, is a plain
attribute bag and allowed), and ``.safetensors`` files (timm's and Hugging Face's weights),
recognised by their header, not their name. Damaged files are refused before their weights are
used (utils.checkpoint.integrity): a zip-format file's records must match their CRC-32s, and no
file may hold NaN, infinity or a negative BatchNorm variance. Saved checkpoints carry the
SHA-256 of their tensor data, which :func:`verify_checkpoint_file`
(``scripts/verify_checkpoints.py``) checks on a copy.
"""

import argparse
import os
import pickle
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import safetensors.torch
import torch

from utils.console import EXIT_BAD_INPUT, EXIT_FAILED, OneLineError

from .integrity import DIGEST_KEY, IntegrityError, UnreadableArchive, check_archive, implausible_tensor, tensor_digest

__all__ = [
    "CheckpointError",
    "CheckpointSaveError",
    "CheckpointWarning",
    "load_checkpoint_file",
    "verify_checkpoint_file",
    "strip_prefixes",
    "extract_state_dict",
    "atomic_write",
    "remove_stale_temporaries",
    "save_checkpoint",
    "copy_checkpoint",
    "checkpoint_args",
    "PathLike",
    "StateDict",
]

PathLike = Union[str, "os.PathLike[str]"]


StateDict = Dict[str, torch.Tensor]


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Added by DataParallel/DistributedDataParallel and by torch.compile, in any nesting order."""


_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


_UNSAFE_OPERATIONS = ("reduce for unrecognized function", "Can only create new object", "Can only build")
"""How torch's weights-only unpickler words its refusal of code (an import, a call, an object),
as opposed to a file that is simply not a pickle."""


_SAFE_GLOBALS = [argparse.Namespace]
"""Classes the weights-only unpickler may build beyond tensors and plain containers: each only
holds attributes (timm's and torchvision's ``train.py`` store their ``args`` as a Namespace)."""

SAFETENSORS_FORMAT = "safetensors"
"""What :func:`_read_checked` reports as the number of checked records of a safetensors file,
which records no checksum."""


class CheckpointError(OneLineError):
    """A checkpoint cannot be used as asked; ``str()`` is one line meant for the user."""

    exit_status = EXIT_BAD_INPUT


class CheckpointSaveError(CheckpointError):
    """A checkpoint could not be written (disk full, no permission, ...); the previous file is intact."""

    exit_status = EXIT_FAILED


class CheckpointWarning(UserWarning):
    """Something in a checkpoint was ignored or guessed; the load still went ahead."""


def load_checkpoint_file(path: PathLike, mmap: bool = False) -> Dict[str, Any]:
    """Read a checkpoint onto the CPU without ever executing code from it.

    A bare state_dict comes back wrapped as ``{"state_dict": ...}`` so that callers see one
    shape of dict. Missing, unreadable, non-checkpoint, unsafe and damaged files (see
    utils.checkpoint.integrity) are CheckpointErrors. ``mmap`` maps a zip-format file's tensors instead
    of reading them, for a look at a large file that goes no further.
    """
    return _read_checked(Path(path), mmap)[0]


def _read_checked(path: Path, mmap: bool = False) -> Tuple[Dict[str, Any], Union[int, str, None]]:
    """The checkpoint, and how many zip records matched their CRC-32 (None: a legacy file;
    :data:`SAFETENSORS_FORMAT`: a safetensors file)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists() else f"checkpoint {path} is not a file")
    try:
        if _is_safetensors(path):
            return _checked(path, _read_safetensors(path)), SAFETENSORS_FORMAT
        records = check_archive(str(path))
    except UnreadableArchive as error:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint, or it is truncated: {error}") from None
    except IntegrityError as error:
        raise CheckpointError(f"{path} is damaged: {error}; use an intact copy") from None
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and records is not None)
    except Exception as error:  # torch's unpickler raises anything (IndexError, ...) on garbage
        unsafe = _unsafe_content(error)
        if unsafe is not None:
            raise CheckpointError(
                f"refusing to load {path}: it would {unsafe}, which could run code; "
                "only tensors and plain containers are loaded"
            ) from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint, or it is truncated") from None
    return _checked(path, checkpoint), records


def _is_safetensors(path: Path) -> bool:
    """Whether the file starts as safetensors files do: an 8-byte little-endian header length,
    then the JSON header's ``{`` (a torch.save file starts with a pickle opcode or ``PK``)."""
    with open(path, "rb") as handle:
        start = handle.read(9)
    return len(start) == 9 and start[8:9] == b"{" and struct.unpack("<Q", start[:8])[0] > 1


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file (it holds nothing else, so nothing in it runs code)."""
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except safetensors.SafetensorError as error:
        raise CheckpointError(f"{path} is not a safetensors file, or it is truncated ({error})") from None


def _checked(path: Path, checkpoint: Any) -> Dict[str, Any]:
    """The loaded checkpoint as a dict holding a state_dict, once nothing in it is implausible."""
    problem = implausible_tensor(checkpoint)
    if problem is not None:
        raise CheckpointError(f"{path} is unusable: {problem} (a damaged file, or a run that diverged)")
    if isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        checkpoint = {"state_dict": checkpoint}
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict", checkpoint.get("model")), dict):
        raise CheckpointError(f"{path} holds no model weights (expected a state_dict or a dict with 'state_dict')")
    return checkpoint


def verify_checkpoint_file(path: PathLike) -> str:
    """What a checkpoint file was checked against, as a phrase, or a CheckpointError saying what is wrong.

    On top of what every load checks, the SHA-256 of the tensor data that save_checkpoint
    recorded is recomputed: a copy that passes holds exactly the tensors that were saved.
    """
    path = Path(path)
    checkpoint, records = _read_checked(path)
    recorded = checkpoint.get(DIGEST_KEY)
    if recorded is not None and recorded != tensor_digest({k: v for k, v in checkpoint.items() if k != DIGEST_KEY}):
        raise CheckpointError(f"{path} is damaged: its tensor data do not match the SHA-256 recorded when it was saved")
    if records is None:
        checksums = "legacy format: no checksum recorded"
    elif records == SAFETENSORS_FORMAT:
        checksums = "safetensors format: no checksum recorded"
    else:
        crc = f"{records} zip records match their CRC-32" if records else "zip format without CRC-32s"
        checksums = crc + ("; tensor data match the SHA-256 recorded at save" if recorded is not None else "; no SHA-256 recorded")
    return f"{checksums}; tensors finite, BatchNorm running variances non-negative"


def _unsafe_content(error: Exception) -> Optional[str]:
    """What a refused pickle asked to do (e.g. ``import posix.system``), or None when the load
    failed for another reason (garbage, truncation), so that only real payloads are called unsafe."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    message = str(error)
    found = _UNSAFE_GLOBAL.search(message)
    if found:
        return f"import {found.group(1)}"
    return "build a Python object" if any(operation in message for operation in _UNSAFE_OPERATIONS) else None


def strip_prefixes(state_dict: StateDict) -> StateDict:
    """The same weights with the wrapper prefixes (``module.``, ``_orig_mod.``) removed from every key."""
    stripped = {}
    for key, value in state_dict.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        stripped[key] = value
    return stripped


def extract_state_dict(checkpoint: Dict[str, Any]) -> StateDict:
    """The model weights of a loaded checkpoint, keyed as an unwrapped model names them."""
    state_dict = checkpoint.get("state_dict", checkpoint.get("model", checkpoint))
    return strip_prefixes(state_dict)


_TEMPORARY_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")
"""What :func:`atomic_write` names its temporary files: ``.<name>.<8 random characters>.tmp``."""


def atomic_write(path: PathLike, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same directory, fsync it, then rename it over
    ``path``: a crash at any moment leaves either the old file or the new one, never half.

    Any OS error (no space, file too large, no permission) removes the temporary file, leaves
    ``path`` as it was, and becomes a one-line CheckpointSaveError naming the file and the cause.
    """
    path = Path(path)
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp_name, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException as error:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        cause = _os_error_cause(error)
        if cause is None:
            raise
        raise CheckpointSaveError(f"cannot write {path}: {cause}; the previous {path.name}, if any, is unchanged") from None


def _os_error_cause(error: BaseException) -> Optional[str]:
    """The OS's words for a failed write (torch.save wraps them in a RuntimeError), or None for other errors."""
    while error is not None:
        if isinstance(error, OSError):
            return error.strerror or str(error)
        if isinstance(error, RuntimeError) and "file write failed" in str(error):
            return str(error).splitlines()[0]
        error = error.__cause__ or error.__context__
    return None


def remove_stale_temporaries(directory: PathLike) -> List[str]:
    """Delete the temporary files that a save killed half-way left in ``directory``; returns their names.

    Call it when a run starts, before anything is written: no save is in flight then.
    """
    removed = []
    for entry in sorted(os.listdir(directory)):
        if _TEMPORARY_NAME.fullmatch(entry) and os.path.isfile(os.path.join(directory, entry)):
            os.unlink(os.path.join(directory, entry))
            removed.append(entry)
    return removed


def _umask() -> int:
    """The process umask (only readable by setting it), so checkpoints get the usual permissions, not mkstemp's 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(state: Dict[str, Any], path: PathLike) -> None:
    """Save atomically; ``state["state_dict"]`` is written without wrapper prefixes whatever
    wrapped the model, so every checkpoint loads into a bare model.

    The SHA-256 of the tensor data goes into the file itself (``tensor_sha256``), not beside
    it: it is written, renamed, copied and deleted with the file, so it can never be stale.
    """
    if "state_dict" in state:
        state = {**state, "state_dict": strip_prefixes(state["state_dict"])}
    state = {key: value for key, value in state.items() if key != DIGEST_KEY}
    state[DIGEST_KEY] = tensor_digest(state)
    atomic_write(path, lambda handle: torch.save(state, handle))


def copy_checkpoint(source: PathLike, destination: PathLike) -> None:
    """Atomically copy a saved checkpoint (e.g. to ``model_best.pth.tar``) without re-serialising,
    so the copy carries the same recorded SHA-256."""
    with open(source, "rb") as src:
        atomic_write(destination, lambda handle: shutil.copyfileobj(src, handle))


def checkpoint_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The command-line arguments as plain values, so that checkpoints load with weights_only=True."""
    return {key: value for key, value in vars(args).items() if isinstance(value, (str, int, float, bool, type(None)))}

"""Checkpoint files and the models they hold.

``files`` reads and writes them (safely, atomically, checked by ``integrity``); ``loading``
builds the model a file holds. The public names are re-exported here, so that
``utils.checkpoint.load_model`` is the one name users and scripts call.
"""

from .files import (
    CheckpointError,
    CheckpointSaveError,
    CheckpointWarning,
    PathLike,
    StateDict,
    atomic_write,
    checkpoint_args,
    copy_checkpoint,
    extract_state_dict,
    load_checkpoint_file,
    remove_stale_temporaries,
    save_checkpoint,
    strip_prefixes,
    verify_checkpoint_file,
)
from .loading import format_kernel_sizes, infer_arch, infer_model_kwargs, load_model

__all__ = [
    "CheckpointError",
    "CheckpointSaveError",
    "CheckpointWarning",
    "PathLike",
    "StateDict",
    "atomic_write",
    "checkpoint_args",
    "copy_checkpoint",
    "extract_state_dict",
    "load_checkpoint_file",
    "remove_stale_temporaries",
    "save_checkpoint",
    "strip_prefixes",
    "verify_checkpoint_file",
    "format_kernel_sizes",
    "infer_arch",
    "infer_model_kwargs",
    "load_model",
]

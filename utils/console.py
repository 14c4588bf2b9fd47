"""How the command-line tools talk to their users: one-line errors for bad input and the exit
status each error ends a tool with, one-line warnings, the exit statuses of the training
scripts, the command-line form of k, and argparse types that refuse bad values in one line."""

import argparse
import sys
import warnings
from typing import Callable, List, NoReturn, Optional, Tuple, Type, Union

__all__ = [
    "EXIT_FAILED",
    "EXIT_BAD_INPUT",
    "EXIT_STOPPED",
    "OneLineError",
    "UsageError",
    "OneLineErrorParser",
    "TRAINING_EXIT_STATUSES",
    "training_parser",
    "exit_status_of",
    "parse_ksize",
    "positive_int",
    "non_negative_int",
    "device_argument",
    "show_warnings_as_one_line",
]

EXIT_FAILED = 1
"""The work failed: training diverged, a file could not be written, a peer process was lost, an export did not match."""

EXIT_BAD_INPUT = 2
"""The input cannot be used: arguments, data or checkpoint files (argparse's own status for a bad command line)."""

EXIT_STOPPED = 75
"""Exit status after a signal stop with its checkpoint saved: sysexits' EX_TEMPFAIL, "try again
later". scripts/slurm/train.sbatch requeues the job on it."""


class OneLineError(Exception):
    """An error meant for the user: ``str()`` is one line, ``exit_status`` the status the tool
    exits with. Each kind says its own status, so that every tool maps it alike (:func:`exit_status_of`)."""

    exit_status = EXIT_FAILED


class UsageError(OneLineError):
    """A bad command line or input; ``str()`` is one line meant for the user."""

    exit_status = EXIT_BAD_INPUT


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr, not the usage block: the full help is one ``--help`` away."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def exit_status_of(
    action: Callable[[], int], prefix: str, bad_input: Tuple[Type[Exception], ...] = ()
) -> int:
    """Run a tool's ``action`` and return its exit status: the action's own, or, for a
    :class:`OneLineError` (or one of ``bad_input``, exceptions the tool reads its input with, such
    as OSError), the error's, after one line ``<prefix>: <error>`` on stderr instead of a traceback."""
    try:
        return action()
    except OneLineError as error:
        print(f"{prefix}: {error}", file=sys.stderr)
        return error.exit_status
    except bad_input as error:
        print(f"{prefix}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


TRAINING_EXIT_STATUSES = f"""exit status:
  0   done
  {EXIT_FAILED}   training diverged (non-finite loss), or a checkpoint could not be written (disk full, ...)
  {EXIT_BAD_INPUT}   bad input: arguments, data or checkpoint files
  {EXIT_STOPPED}  stopped by SIGTERM or SIGUSR1 after saving a checkpoint of that step: continue with --resume auto
"""
"""The ``--help`` epilog of main.py and detect.py, which share their exits."""


def training_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A training script's parser: one-line errors, the exit statuses in ``--help``."""
    return OneLineErrorParser(
        description=description, prog=prog, epilog=TRAINING_EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def parse_ksize(text: Optional[str]) -> Optional[Union[str, List[str]]]:
    """``3557`` or ``adaptive`` as models take them; ``3,5,11,7`` for two-digit sizes."""
    if text is None:
        return None
    return [entry.strip() for entry in text.split(",")] if "," in text else text


def positive_int(text: str) -> int:
    """argparse type of a count that must be at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    """argparse type of a count where 0 means none."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text!r}")
    return int(text)


def device_argument(text: str) -> str:
    """argparse type of ``--device``: a device torch knows and this machine has (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; e.g. cpu, cuda, cuda:1") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA devices")
    return text


def show_warnings_as_one_line(prefix: str = "warning") -> None:
    """Print every warning as ``<prefix>: message`` on stderr.

    A checkpoint warning (a wrong ``arch`` string in a released file, a classifier left out)
    is news for the user; Python's default adds the file and line of the code that warned.
    """

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prefix}: {message}", file=sys.stderr, flush=True)

    warnings.showwarning = show

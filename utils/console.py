"""How the command-line tools talk to their users: one-line errors for bad input, one-line
warnings, the exit statuses of the training scripts, and the command-line form of k."""

import argparse
import sys
import warnings
from typing import List, NoReturn, Optional, Union

from utils.longrun.preemption import EXIT_STOPPED

__all__ = ["UsageError", "OneLineErrorParser", "TRAINING_EXIT_STATUSES", "parse_ksize", "show_warnings_as_one_line"]


class UsageError(Exception):
    """A bad command line or input; ``str()`` is one line meant for the user."""


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr, not the usage block: the full help is one ``--help`` away."""
        self.exit(2, f"{self.prog}: error: {message}\n")


TRAINING_EXIT_STATUSES = f"""exit status:
  0   done
  1   training diverged (non-finite loss), or a checkpoint could not be written (disk full, ...)
  2   bad input: arguments, data or checkpoint files
  {EXIT_STOPPED}  stopped by SIGTERM or SIGUSR1 after saving a checkpoint of that step: continue with --resume auto
"""
"""The ``--help`` epilog of main.py and detect.py, which share their exits."""


def parse_ksize(text: Optional[str]) -> Optional[Union[str, List[str]]]:
    """``3557`` or ``adaptive`` as models take them; ``3,5,11,7`` for two-digit sizes."""
    if text is None:
        return None
    return [entry.strip() for entry in text.split(",")] if "," in text else text


def show_warnings_as_one_line(prefix: str = "warning") -> None:
    """Print every warning as ``<prefix>: message`` on stderr.

    A checkpoint warning (a wrong ``arch`` string in a released file, a classifier left out)
    is news for the user; Python's default adds the file and line of the code that warned.
    """

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prefix}: {message}", file=sys.stderr, flush=True)

    warnings.showwarning = show

"""How the command-line tools show warnings to their users."""

import sys
import warnings

__all__ = ["show_warnings_as_one_line"]


def show_warnings_as_one_line(prefix: str = "warning") -> None:
    """Print every warning as ``<prefix>: message`` on stderr.

    A checkpoint warning (a wrong ``arch`` string in a released file, a classifier left out)
    is news for the user; Python's default adds the file and line of the code that warned.
    """

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prefix}: {message}", file=sys.stderr, flush=True)

    warnings.showwarning = show

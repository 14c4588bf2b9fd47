"""The project's scripts run as users run them, in a subprocess, the same way in every test file."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300
"""Seconds a script may take before the test fails instead of hanging the suite."""

Arg = Union[str, int, float, os.PathLike]

PEERS = ROOT / "tests" / "fixtures" / "peers"
"""The peers' checkpoint fixtures: their layouts, their own code's outputs, and make_checkpoint.py."""


def script_env(**variables: str) -> Dict[str, str]:
    """This process's environment with ``variables`` set, and for every script one thread
    (OMP_NUM_THREADS=1: pytest-xdist's workers already fill the cores, and a script of two threads
    per worker on two cores waits for the others) and unbuffered output (PYTHONUNBUFFERED=1: a test
    that reads a script's output as it comes gets each line when it is printed)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **variables}


def script_command(script: Arg, *args: Arg) -> List[str]:
    """``python SCRIPT ARGS...`` with this interpreter: ``script`` is a path from the repository
    root (``main.py``, ``scripts/run_table.py``), or ``-m`` with the module first in ``args``."""
    return [sys.executable, str(script), *map(str, args)]


def run_script(
    script: Arg, *args: Arg, env: Optional[Dict[str, str]] = None, timeout: float = TIMEOUT, **run_kwargs
) -> subprocess.CompletedProcess:
    """Run ``script`` from the repository root and wait for it: its exit status and its output as
    text. ``env`` defaults to :func:`script_env`; ``run_kwargs`` go to subprocess.run."""
    return subprocess.run(
        script_command(script, *args),
        cwd=ROOT,
        env=script_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **run_kwargs,
    )


def start_script(script: Arg, *args: Arg, env: Optional[Dict[str, str]] = None, **popen_kwargs) -> subprocess.Popen:
    """:func:`run_script`'s process without waiting for it, for a test that signals it or reads its
    output while it runs; ``popen_kwargs`` (stdout, stderr, start_new_session) go to Popen."""
    return subprocess.Popen(script_command(script, *args), cwd=ROOT, env=script_env() if env is None else env, text=True, **popen_kwargs)


def run_code(code: str, *args: Arg, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS...`` in a fresh interpreter that can import the project (the repository
    root on PYTHONPATH), for a test that needs a process of its own: one that hides a package
    before anything imports it, say."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return run_script("-c", code, *args, env=script_env(PYTHONPATH=path), timeout=timeout)


def exit_status(main: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """A script's ``main(argv)`` run in this process, as its exit status: what it returns, or the
    status of the SystemExit argparse raises for a bad command line."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def peer_checkpoint_writer():
    """``tests/fixtures/peers/make_checkpoint.py`` as a module (a script beside the fixtures, not a
    package): it writes each fixture's file in the peer's own format."""
    spec = importlib.util.spec_from_file_location("peer_make_checkpoint", PEERS / "make_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

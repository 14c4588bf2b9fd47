import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def pytest_configure(config):
    """Under pytest-xdist each worker computes on one thread: the workers already fill the cores,
    and two processes of two threads each on two cores wait for each other."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Runs in this process use one thread, as the subprocesses (helpers.script_env): the thread
    count can change how a convolution sums, and so the last bits of the weights. A module that
    compares in-process runs with subprocess runs bitwise uses it for all its tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""The one exit-status mapping every command-line tool uses: each error kind says its status."""

import pytest

from utils.checkpoint import CheckpointError, CheckpointSaveError
from utils.console import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    TRAINING_EXIT_STATUSES,
    OneLineErrorParser,
    UsageError,
    device_argument,
    exit_status_of,
    non_negative_int,
    positive_int,
)
from utils.data.datasets import DataError
from utils.distributed import PeerFailedError
from utils.export import ExportError
from utils.training.engine import NonFiniteLossError


def raising(error):
    def action():
        raise error

    return action


@pytest.mark.parametrize(
    "error, status",
    [
        (UsageError("--lr must be positive"), 2),
        (CheckpointError("x.pth is damaged"), 2),
        (DataError("/data has no val/ folder"), 2),
        (CheckpointSaveError("cannot write x.pth: No space left on device"), 1),
        (NonFiniteLossError("the training loss became non-finite"), 1),
        (PeerFailedError("process 1 lost contact"), 1),
        (ExportError("the exported model differs"), 1),
    ],
)
def test_each_error_is_one_line_and_its_own_status(error, status, capsys):
    assert exit_status_of(raising(error), "tool.py: error") == status
    assert capsys.readouterr().err == f"tool.py: error: {error}\n"


def test_the_statuses_are_the_ones_the_help_epilog_promises():
    assert (EXIT_FAILED, EXIT_BAD_INPUT) == (1, 2)
    assert "\n  1   training diverged" in TRAINING_EXIT_STATUSES and "\n  2   bad input" in TRAINING_EXIT_STATUSES


def test_a_tools_own_input_errors_are_bad_input_and_anything_else_a_traceback(capsys):
    assert exit_status_of(raising(OSError("cannot write out/x.png")), "predict", bad_input=(ValueError, OSError)) == 2
    assert capsys.readouterr().err == "predict: cannot write out/x.png\n"
    with pytest.raises(OSError):
        exit_status_of(raising(OSError("a bug")), "export.py: error")
    with pytest.raises(ZeroDivisionError):
        exit_status_of(raising(ZeroDivisionError("a bug")), "predict", bad_input=(ValueError, OSError))


def test_the_actions_own_status_passes_through(capsys):
    assert exit_status_of(lambda: 75, "main.py: error") == 75
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (positive_int, "0", "expected a positive integer, got '0'"),
        (positive_int, "-3", "expected a positive integer, got '-3'"),
        (non_negative_int, "two", "expected 0 or a positive integer, got 'two'"),
        (device_argument, "foo", "unknown device 'foo'; e.g. cpu, cuda, cuda:1"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag(kind, text, message, capsys):
    parser = OneLineErrorParser(prog="tool.py")
    parser.add_argument("--value", type=kind)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--value", text])
    assert stop.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err == f"tool.py: error: argument --value: {message}\n"


def test_good_values_pass():
    assert (positive_int("4"), non_negative_int("0"), device_argument("cpu")) == (4, 0, "cpu")

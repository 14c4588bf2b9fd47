"""The training runs behind a paper table: one main.py run per row and seed, each in its own run
directory, launched alike (here, under torchrun, or as a SLURM job), and read back when done.

A run is finished when its end-of-epoch checkpoint has reached the run's last epoch; its
result is the best epoch's validation Top-1 and Top-5 from ``log.csv`` (the epoch whose
weights ``model_best.pth.tar`` holds: the first with the highest Top-1).
"""

import csv
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from utils.checkpoint import CheckpointError, load_checkpoint_file
from utils.console import UsageError
from utils.longrun.resume import EPOCH_CHECKPOINT
from utils.paper.report import RowResult
from utils.paper.tables import PaperRow

__all__ = [
    "LAUNCHERS",
    "RESERVED_MAIN_FLAGS",
    "TableRun",
    "check_passthrough",
    "main_arguments",
    "launch_command",
    "run_finished",
    "best_epoch",
    "run_here",
    "submit",
    "row_result",
]

LAUNCHERS = ("local", "torchrun", "slurm")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SBATCH_SCRIPT = os.path.join(ROOT, "scripts", "slurm", "train.sbatch")

RESERVED_MAIN_FLAGS = (
    "-a", "--arch", "--ksize", "--epochs", "--seed", "--output-dir", "--resume", "--evaluate", "-e", "--dummy", "--recipe",
)
"""main.py flags the table sets itself (the same for every row, or the row's own)."""


@dataclass(frozen=True)
class TableRun:
    """One row of a table trained with one seed."""

    row: str
    seed: int
    arch: str
    ksize: Optional[str]
    run_dir: str

    @property
    def name(self) -> str:
        return f"{self.row} seed {self.seed}"


def _sets_reserved(name: str) -> bool:
    """Whether main.py reads ``name`` as a reserved flag: argparse also takes a long option's
    prefix (``--output`` for ``--output-dir``, ``--see`` for ``--seed``)."""
    if name in RESERVED_MAIN_FLAGS:
        return True
    return name.startswith("--") and len(name) > 2 and any(flag.startswith(name) for flag in RESERVED_MAIN_FLAGS if flag.startswith("--"))


def check_passthrough(flags: Sequence[str]) -> None:
    """main.py flags after ``--`` may not set what the table sets per row: one UsageError line."""
    for flag in flags:
        name = flag.split("=", 1)[0]
        if _sets_reserved(name):
            raise UsageError(f"-- {name}: run_table.py sets it for every row (use its own options: --recipe, --epochs, --seeds, --out)")


def main_arguments(run: TableRun, data: str, epochs: Optional[int], passthrough: Sequence[str]) -> List[str]:
    """main.py's arguments for the run, without the data directory (train.sbatch adds it last)."""
    arguments = ["-a", run.arch, "--output-dir", run.run_dir, "--seed", str(run.seed), "--resume", "auto"]
    if run.ksize is not None:
        arguments += ["--ksize", run.ksize]
    if epochs is not None:
        arguments += ["--epochs", str(epochs)]
    return arguments + list(passthrough)


def launch_command(launcher: str, nproc_per_node: int, arguments: Sequence[str], data: str) -> List[str]:
    """The command line that trains one run in this process's session ('local' or 'torchrun')."""
    main_py = os.path.join(ROOT, "main.py")
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc_per_node),
                main_py, data, *arguments]
    return [sys.executable, main_py, data, *arguments]


def _die_with_parent() -> None:
    """A run outlives nothing: if the table's process dies, SIGTERM makes main.py save and stop."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def run_here(command: Sequence[str]) -> int:
    """Run one training to its end, its output on this process's; its exit status."""
    return subprocess.run(list(command), cwd=ROOT, preexec_fn=_die_with_parent).returncode


def submit(run: TableRun, arguments: Sequence[str], data: str, job_name: str) -> str:
    """``sbatch scripts/slurm/train.sbatch`` for the run (it passes main.py flags through); the job id."""
    environment = {**os.environ, "DATA": data, "ARCH": run.arch, "RUN_DIR": run.run_dir}
    # train.sbatch sets -a and --output-dir from ARCH and RUN_DIR, and adds --resume auto itself.
    flags = _without(arguments, ("-a", "--output-dir", "--resume"))
    command = ["sbatch", "--parsable", "--job-name", job_name, "--output", os.path.join(run.run_dir, "slurm-%j.out"),
               SBATCH_SCRIPT, *flags]
    os.makedirs(run.run_dir, exist_ok=True)
    try:
        result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    except FileNotFoundError:
        raise UsageError("--launcher slurm: sbatch is not on PATH") from None
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise UsageError(f"sbatch refused {run.name}: {message}")
    return result.stdout.strip().split(";")[0]


def _without(arguments: Sequence[str], flags: Tuple[str, ...]) -> List[str]:
    """``arguments`` less each flag in ``flags`` and its value."""
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in flags:
            skip = True
        else:
            kept.append(argument)
    return kept


def run_finished(run_dir: str, epochs: Optional[int]) -> bool:
    """Whether the run has trained its last epoch: ``epochs``, or (None) the epochs it was started with."""
    path = os.path.join(run_dir, EPOCH_CHECKPOINT)
    if not os.path.isfile(path):
        return False
    try:
        checkpoint = load_checkpoint_file(path, mmap=True)
    except CheckpointError:  # not finished: main.py --resume auto moves a damaged file aside and says why
        return False
    target = epochs if epochs is not None else checkpoint.get("args", {}).get("epochs")
    return target is not None and int(checkpoint.get("epoch", 0)) >= int(target)


def best_epoch(run_dir: str) -> Optional[Tuple[float, float]]:
    """(Top-1, Top-5) of the run's best validation epoch from log.csv; None without a logged epoch."""
    path = os.path.join(run_dir, "log.csv")
    if not os.path.isfile(path):
        return None
    with open(path, newline="") as handle:
        rows = [(float(row["val_prec1"]), float(row["val_prec5"])) for row in csv.DictReader(handle)]
    if not rows:
        return None
    return max(rows, key=lambda row: row[0])


def row_result(row: PaperRow, label: str, runs: Sequence[TableRun], epochs: Optional[int], counts: Tuple[int, int]) -> RowResult:
    """The row as its finished runs have it: every seed's best epoch, and how many seeds are done."""
    finished = [run for run in runs if run_finished(run.run_dir, epochs)]
    results = [result for result in (best_epoch(run.run_dir) for run in finished) if result is not None]
    status = "done" if len(finished) == len(runs) else f"{len(finished)}/{len(runs)} seeds" if finished else "pending"
    return RowResult(row, label, runs[0].arch, status, *counts, tuple(top1 for top1, _ in results), tuple(top5 for _, top5 in results))

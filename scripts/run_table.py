"""Train every row of one of the paper's tables alike and write the table back, the paper's numbers beside.

    python scripts/run_table.py variants /data/imagenet --epochs 100 --seeds 1 2 3   # Table 2 at ResNet-50
    python scripts/run_table.py sota /data/imagenet --depth 101 --rows resnet eca_net
    python scripts/run_table.py kernel-size /data/imagenet -- -b 128 --amp          # main.py flags after --
    python scripts/run_table.py variants /data/imagenet --recipe rsb-a3              # every row under a modern recipe
    python scripts/run_table.py mobilenet /data/imagenet --launcher slurm           # one SLURM job per row and seed
    python scripts/run_table.py mobilenet /data/imagenet --collect                  # the table from finished runs

TABLE is variants (Table 2), sota (Table 3 at --depth), kernel-size (Figure 4) or mobilenet
(Table 3's MobileNetV2 rows). Each row and seed is one main.py run in its own run directory,
OUT/runs/<row>/seed<S>, with the same settings: main.py's --recipe (the paper's unless --recipe
names another), --epochs, the seed, and the main.py flags after --. OUT/table.md, table.csv and
the table's chart, table.png and table.pdf (the paper's Figure 1, Top-1 against parameters with
circle area = FLOPs; Figure 4, Top-1 against k, for kernel-size), are rewritten after every run.
Interrupted, the same command continues: finished runs are skipped and an unfinished one resumes
(--resume auto).
"""

import argparse
import csv
import io
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torchvision.datasets.folder import find_classes  # noqa: E402

import models  # noqa: E402
from utils.checkpoint import atomic_write  # noqa: E402
from utils.console import OneLineErrorParser, UsageError, exit_status_of, parse_ksize, positive_int  # noqa: E402
from utils.counting.complexity import count_parameters, paper_flops  # noqa: E402
from utils.longrun.preemption import EXIT_STOPPED  # noqa: E402
from utils.paper.report import RowResult, TableChart, accuracy_figure, kernel_size_figure, write_table  # noqa: E402
from utils.paper.runs import (  # noqa: E402
    LAUNCHERS,
    TableRun,
    check_passthrough,
    launch_command,
    main_arguments,
    row_result,
    run_finished,
    run_here,
    submit,
)
from utils.paper.tables import (  # noqa: E402
    DEPTHS,
    KERNEL_SIZE,
    MOBILENET,
    MOBILENET_TABLE,
    SOTA,
    TABLES,
    VARIANTS,
    PaperRow,
    PaperTable,
    registered_model_name,
    section_key,
    table_rows,
)
from utils.training.metrics import format_duration  # noqa: E402
from utils.training.recipes import DEFAULT_RECIPE, RECIPES  # noqa: E402

COUNT_INPUT_SIZE = 224
"""Param. and FLOPs are counted as the paper's were, at 1x3x224x224, whatever size the runs train at."""
SLURM_JOBS = "slurm_jobs.csv"
CHARTS: Dict[str, TableChart] = {
    VARIANTS.key: accuracy_figure,
    SOTA.key: accuracy_figure,
    MOBILENET_TABLE.key: accuracy_figure,
    KERNEL_SIZE.key: kernel_size_figure,
}
"""Each table drawn as the paper draws its numbers: Figure 1's accuracy against parameters, or Figure 4's against k."""


@dataclass(frozen=True)
class PlannedRow:
    row: PaperRow
    label: str
    runs: Tuple[TableRun, ...]
    """Empty when the row has no model to train (``reason`` says why)."""
    reason: str = ""


def split_passthrough(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """run_table.py's own arguments, and main.py's after the first ``--``."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    index = argv.index("--")
    return argv[:index], argv[index + 1:]



def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    own, passthrough = split_passthrough(sys.argv[1:] if argv is None else argv)
    parser = OneLineErrorParser(prog="run_table.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("table", metavar="TABLE", help=f"one of: {', '.join(TABLES)}")
    parser.add_argument("data", metavar="DIR", help="dataset root with train/ and val/ ImageFolders, as main.py takes it")
    parser.add_argument("--depth", default="50", choices=[*map(str, DEPTHS), MOBILENET],
                        help="the ResNet of the rows (default 50); 'mobilenet': Table 3's MobileNetV2 rows")
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="train only these rows, named as the table's in lower case")
    parser.add_argument("--recipe", choices=RECIPES,
                        help=f"main.py's training recipe for every row (default: main.py's, {DEFAULT_RECIPE})")
    parser.add_argument("--epochs", type=positive_int, help="epochs of every run (default: the recipe's, the paper's 100 for ResNets)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="S",
                        help="one run per seed and row; the table gives mean +- std over seeds (default: 0)")
    parser.add_argument("--out", metavar="DIR", help="where the runs and the table go (default runs/table_<TABLE>)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local",
                        help="local: main.py here; torchrun: --nproc-per-node processes here; slurm: sbatch "
                        "scripts/slurm/train.sbatch per run, then --collect (default local)")
    parser.add_argument("--nproc-per-node", type=positive_int, default=1, help="processes per run with --launcher torchrun")
    parser.add_argument("--collect", action="store_true", help="only build the table from the runs' directories")
    args = parser.parse_args(own)
    if args.table not in TABLES:
        parser.error(f"unknown table {args.table!r}; choose one of: {', '.join(TABLES)}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: a seed is given twice")
    args.out = args.out or os.path.join("runs", f"table_{args.table}")
    return args, passthrough


def dataset_classes(data: str) -> int:
    """The class count of DIR/train, checking that DIR is what main.py takes (one UsageError line if not)."""
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(data, split)):
            raise UsageError(f"{data} has no {split}/ folder (expected {split}/<class>/<image>.JPEG)" if os.path.isdir(data)
                             else f"data directory {data} does not exist")
    try:
        return len(find_classes(os.path.join(data, "train"))[0])
    except FileNotFoundError as error:
        raise UsageError(f"{data}/train: {error}") from None


def depth_of(table: PaperTable, depth: str) -> Optional[int]:
    """--depth as the table takes it: None for MobileNetV2's rows."""
    return None if depth == MOBILENET or not table.has_depth else int(depth)


def plan(table: PaperTable, depth: Optional[int], chosen: Optional[Sequence[str]], seeds: Sequence[int], out: str) -> List[PlannedRow]:
    """The table's rows at ``depth`` (only ``chosen`` ones if given) with a run per seed; rows without a model get a reason.

    A row asked for by name that cannot be trained is a UsageError; in a whole table it is skipped.
    """
    rows = table_rows(table, depth)
    if chosen:
        known = [row.key for row in rows]
        unknown = [key for key in chosen if key not in known]
        if unknown:
            where = "" if depth is None else f" at ResNet-{depth}"
            raise UsageError(f"{table.key}{where} has no row {unknown[0]!r}; its rows: {', '.join(known)}")
        rows = tuple(row for row in rows if row.key in chosen)
    planned = []
    for row in rows:
        label = row.label_at(depth)
        try:
            arch = registered_model_name(row, depth)
        except ValueError as error:
            if chosen:
                raise UsageError(str(error)) from None
            planned.append(PlannedRow(row, label, (), "no model here" if row.model is None else "not registered"))
            continue
        runs = tuple(TableRun(row.key, seed, arch, row.ksize, os.path.join(out, "runs", row.key, f"seed{seed}")) for seed in seeds)
        planned.append(PlannedRow(row, label, runs))
    return planned


def count(run: TableRun, classes: int) -> Tuple[int, int]:
    """Parameters and the paper's FLOPs of the run's model at the dataset's class count."""
    kwargs: Dict[str, object] = {"num_classes": classes}
    if run.ksize is not None:
        kwargs["k_size"] = parse_ksize(run.ksize)
    model = models.create_model(run.arch, **kwargs)
    return count_parameters(model), paper_flops(model, COUNT_INPUT_SIZE)


def results(planned: Sequence[PlannedRow], counts: Dict[str, Tuple[int, int]], epochs: Optional[int]) -> List[RowResult]:
    return [
        row_result(entry.row, entry.label, entry.runs, epochs, counts[entry.row.key]) if entry.runs
        else RowResult(entry.row, entry.label, None, entry.reason)
        for entry in planned
    ]


def setup_lines(args: argparse.Namespace, table: PaperTable, depth: Optional[int], classes: int, passthrough: Sequence[str]) -> List[str]:
    epochs = f"{args.epochs} epoch{'' if args.epochs == 1 else 's'}" if args.epochs else "the recipe's epochs"
    flags = f", main.py flags `{' '.join(passthrough)}`" if passthrough else ""
    flags = f", recipe `{args.recipe}`{flags}" if args.recipe else flags
    where = "" if depth is None else f" at ResNet-{depth}"
    paper = "as the paper prints them" if section_key(depth) in table.sections else "the paper has no numbers at this depth"
    return [
        f"Every row{where} trained alike on `{args.data}` ({classes} classes): {epochs}, seeds {' '.join(map(str, args.seeds))}{flags}.",
        "Top-1 / Top-5: validation accuracy of each run's best epoch (log.csv; the weights model_best.pth.tar holds), "
        "mean +- sample std over the finished seeds.",
        f"Param. / FLOPs: utils/counting/complexity.py (the paper's 2019 thop rules) at 1x3x{COUNT_INPUT_SIZE}x{COUNT_INPUT_SIZE} and "
        f"{classes} classes (the paper's: 1000), in the paper's units (M = 2^20, G = 2^30). Paper columns: {paper}.",
    ]


def read_jobs(path: str) -> Dict[str, str]:
    """run directory -> SLURM job id, of the runs submitted before."""
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as handle:
        return {row["run_dir"]: row["job"] for row in csv.DictReader(handle)}


def jobs_csv(jobs: Dict[str, str]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["run_dir", "job"])
    writer.writerows(jobs.items())
    return text.getvalue()


def submit_all(planned: Sequence[PlannedRow], args: argparse.Namespace, passthrough: Sequence[str], data: str) -> None:
    """One sbatch per unfinished run not submitted before; the job ids go to OUT/slurm_jobs.csv."""
    jobs_path = os.path.join(args.out, SLURM_JOBS)
    jobs = read_jobs(jobs_path)
    for entry in planned:
        for run in entry.runs:
            if run_finished(run.run_dir, args.epochs):
                print(f"=> {run.name}: finished, skipped", flush=True)
            elif run.run_dir in jobs:
                print(f"=> {run.name}: submitted before as job {jobs[run.run_dir]}; skipped (remove its line from {jobs_path} "
                      "to submit it again)", flush=True)
            else:
                job = submit(run, main_arguments(run, data, args.epochs, passthrough), data, f"eca-{args.table}-{run.row}-s{run.seed}")
                jobs[run.run_dir] = job
                text = jobs_csv(jobs)
                atomic_write(jobs_path, lambda handle, text=text: handle.write(text.encode()))
                print(f"=> {run.name}: submitted as job {job} ({run.run_dir})", flush=True)


def train_all(planned: Sequence[PlannedRow], args: argparse.Namespace, passthrough: Sequence[str], data: str,
              write: Callable[[], None]) -> int:
    """Every unfinished run in turn, here; the table rewritten after each. main.py's exit status if one fails."""
    row_count = sum(bool(entry.runs) for entry in planned)
    pending = [run for entry in planned for run in entry.runs if not run_finished(run.run_dir, args.epochs)]
    done_here: List[float] = []
    row_number = 0
    for entry in planned:
        if not entry.runs:
            continue
        row_number += 1
        for run in entry.runs:
            ksize = f" --ksize {run.ksize}" if run.ksize else ""
            where = f"row {row_number}/{row_count} {entry.row.key} ({run.arch}{ksize}) seed {run.seed}"
            if run not in pending:
                print(f"=> {where}: finished, skipped", flush=True)
                continue
            remaining = len(pending) - len(done_here)
            eta = f"ETA {format_duration(sum(done_here) / len(done_here) * remaining)}" if done_here else "ETA after the first run"
            print(f"=> {where}: training, {remaining} of {len(pending)} runs left, {eta}", flush=True)
            started = time.monotonic()
            command = launch_command(args.launcher, args.nproc_per_node, main_arguments(run, data, args.epochs, passthrough), data)
            status = run_here(command)
            if status != 0:
                write()
                stopped = " (stopped: run the same command to continue)" if status == EXIT_STOPPED else ""
                print(f"run_table.py: error: {run.name}: main.py exited with status {status}{stopped}; "
                      f"its run directory: {run.run_dir}", file=sys.stderr)
                return status
            done_here.append(time.monotonic() - started)
            write()
    return 0


def run(args: argparse.Namespace, passthrough: Sequence[str]) -> int:
    check_passthrough(passthrough)
    table = TABLES[args.table]
    depth = depth_of(table, args.depth)
    data = os.path.abspath(args.data)
    classes = dataset_classes(data)
    setup = setup_lines(args, table, depth, classes, passthrough)
    if args.recipe:
        passthrough = ["--recipe", args.recipe, *passthrough]
    planned = plan(table, depth, args.rows, args.seeds, os.path.abspath(args.out))
    skipped = [f"{entry.row.key} ({entry.reason})" for entry in planned if not entry.runs]
    if skipped:
        print(f"=> skipped rows: {', '.join(skipped)}", flush=True)
    counts = {entry.row.key: count(entry.runs[0], classes) for entry in planned if entry.runs}
    title = table.title + ("" if depth is None else f", ResNet-{depth}") + f", trained on {os.path.basename(data)}"

    def write() -> None:
        paths = write_table(args.out, title, setup, results(planned, counts, args.epochs), table.notes, CHARTS[table.key])
        print(f"=> wrote {', '.join(paths)}", flush=True)

    if args.collect:
        write()
        return 0
    if args.launcher == "slurm":
        submit_all(planned, args, passthrough, data)
        write()
        print(f"=> when the jobs are done: {collect_command(args)}", flush=True)
        return 0
    write()
    return train_all(planned, args, passthrough, data, write)


def collect_command(args: argparse.Namespace) -> str:
    """The command that builds this table from its runs once they are done: the same table, rows,
    seeds, epochs, recipe and output, with --collect."""
    words = ["python", "scripts/run_table.py", args.table, args.data, "--depth", str(args.depth), "--out", args.out]
    if args.rows:
        words += ["--rows", *args.rows]
    words += ["--seeds", *map(str, args.seeds)]
    if args.epochs is not None:
        words += ["--epochs", str(args.epochs)]
    if args.recipe:
        words += ["--recipe", args.recipe]
    return shlex.join([*words, "--collect"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, passthrough = parse_args(argv)
    return exit_status_of(lambda: run(args, passthrough), "run_table.py: error")


if __name__ == "__main__":
    sys.exit(main())

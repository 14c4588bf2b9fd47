"""Training curves of several runs side by side, as a chart (PNG and PDF): loss, Top-1 and the
learning rate against the epoch, read from each run directory's log.csv (main.py writes it).

    python scripts/plot_runs.py runs/table_variants/runs/*/seed0 --out variants_curves.png
    python scripts/plot_runs.py runs/eca_resnet50 runs/se_resnet50 --labels ECA SE

One colour per run, validation solid and training dashed (training loss and Top-1 are the
epoch's running means over augmented images, as main.py prints them). A run is named by the
shortest end of its path that tells it from the others (eca/seed0, se/seed0) unless --labels
names them; a run that has not finished an epoch yet is named in the summary line and left out.
"""

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.console import OneLineErrorParser, UsageError, exit_status_of  # noqa: E402
from utils.paper.charts import LinePanel, LineSeries, chart_paths, line_chart, save_chart  # noqa: E402


@dataclass(frozen=True)
class Panel:
    title: str
    y_label: str
    columns: Tuple[Tuple[str, str], ...]
    """(log.csv column, kind): validation first, so that it is drawn solid."""
    log_y: bool = False


PANELS = (
    Panel("loss", "cross-entropy loss", (("val_loss", "validation"), ("train_loss", "training"))),
    Panel("Top-1", "Top-1 (%)", (("val_prec1", "validation"), ("train_prec1", "training"))),
    Panel("learning rate", "learning rate", (("lr", ""),), log_y=True),
)
COLUMNS = ("epoch", *(column for panel in PANELS for column, _ in panel.columns))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineErrorParser(prog="plot_runs.py", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="main.py run directories (each with its log.csv)")
    parser.add_argument("--labels", nargs="+", metavar="NAME", help="the runs' names in the chart, one per RUN_DIR")
    parser.add_argument("--out", default="curves.png", metavar="FILE",
                        help="the chart's PNG; its PDF goes beside, NAME.pdf (default curves.png)")
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.runs):
        parser.error(f"--labels: {len(args.labels)} names for {len(args.runs)} runs")
    return args


def run_names(run_dirs: Sequence[str]) -> List[str]:
    """The shortest ends of the runs' paths that differ from each other: eca/seed0, se/seed0."""
    parts = [Path(os.path.abspath(run_dir)).parts for run_dir in run_dirs]
    for length in range(1, max(map(len, parts)) + 1):
        names = ["/".join(path[-length:]) for path in parts]
        if len(set(names)) == len(names):
            return names
    repeated = next(run_dir for number, run_dir in enumerate(run_dirs) if parts[number] in parts[:number])
    raise UsageError(f"{repeated} is given twice")


def read_log(run_dir: str) -> Dict[str, List[float]]:
    """log.csv's columns that the chart draws, as numbers; one UsageError line for a run that has none."""
    path = os.path.join(run_dir, "log.csv")
    if not os.path.isdir(run_dir):
        raise UsageError(f"run directory {run_dir} does not exist")
    if not os.path.isfile(path):
        raise UsageError(f"{run_dir} has no log.csv (main.py writes it after each epoch)")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise UsageError(f"{path} has no {missing[0]} column: plot_runs.py draws main.py's runs")
        rows = list(reader)
    try:
        return {column: [float(row[column]) for row in rows] for column in COLUMNS}
    except (TypeError, ValueError):
        raise UsageError(f"{path}: a row is not all numbers") from None


def panels(logs: Dict[str, Dict[str, List[float]]]) -> List[LinePanel]:
    drawn = []
    for panel in PANELS:
        series = [LineSeries(name, log[column], log["epoch"], kind) for name, log in logs.items() for column, kind in panel.columns]
        positive = all(value > 0 for line in series for value in line.values)
        drawn.append(LinePanel(panel.title, series, panel.y_label, log_y=panel.log_y and positive))
    return drawn


def plot(args: argparse.Namespace) -> int:
    try:
        chart_paths(args.out)
    except ValueError as error:
        raise UsageError(f"--out {error}") from None
    names = args.labels or run_names(args.runs)
    if len(set(names)) != len(names):
        raise UsageError(f"--labels: {next(name for number, name in enumerate(names) if name in names[:number])} is given twice")
    logs = {name: read_log(run_dir) for name, run_dir in zip(names, args.runs)}
    waiting = [name for name, log in logs.items() if not log["epoch"]]
    logged = {name: log for name, log in logs.items() if log["epoch"]}
    if not logged:
        raise UsageError("no run has finished an epoch yet")
    png, pdf = save_chart(line_chart(panels(logged), "epoch", columns=len(PANELS), panel_size=(3.4, 3.2), integer_x=True), args.out)
    epochs = max(len(log["epoch"]) for log in logged.values())
    not_yet = f"; no epoch yet: {', '.join(waiting)}" if waiting else ""
    print(f"=> {png} and {pdf}: {len(logged)} run(s), up to {epochs} epoch{'' if epochs == 1 else 's'}{not_yet}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return exit_status_of(lambda: plot(args), "plot_runs.py: error")


if __name__ == "__main__":
    sys.exit(main())

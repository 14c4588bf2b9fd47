"""A paper table rebuilt from this project's runs, written as Markdown and CSV, the paper's numbers
beside ours, and drawn as the paper draws it (PNG and PDF): Top-1 against parameters with circle
area = FLOPs (Figure 1), or Top-1 against the kernel size k (Figure 4).

Every file is written atomically: a table rewritten after each row is always whole.
"""

import csv
import io
import os
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from matplotlib.figure import Figure

from utils.checkpoint import atomic_write
from utils.counting.complexity import binary_units
from utils.paper.charts import KernelSizePoint, ReferenceLine, ScatterPoint, accuracy_chart, kernel_size_chart, save_chart
from utils.paper.tables import PaperRow

__all__ = [
    "RowResult",
    "TableChart",
    "mean_and_spread",
    "format_accuracy",
    "markdown_table",
    "markdown_lines",
    "csv_text",
    "accuracy_figure",
    "kernel_size_figure",
    "write_table",
    "TABLE_FILES",
]

TABLE_FILES = ("table.md", "table.csv", "table.png", "table.pdf")

CSV_FIELDS = (
    "row", "label", "model", "ksize", "status", "seeds", "params", "params_exact", "flops", "flops_exact",
    "top1_mean", "top1_std", "top5_mean", "top5_std", "top1_per_seed", "top5_per_seed",
    "paper_param_expression", "paper_params", "paper_flops", "paper_top1", "paper_top5",
)


@dataclass(frozen=True)
class RowResult:
    """What this project has for one row of a table: its model's counts and each finished seed's accuracy."""

    row: PaperRow
    label: str
    model: Optional[str]
    status: str
    """'done', 'n/m seeds', 'pending', or why the row has no runs ('not registered', 'no model here')."""
    params: Optional[int] = None
    flops: Optional[int] = None
    top1: Tuple[float, ...] = ()
    top5: Tuple[float, ...] = ()


def mean_and_spread(values: Sequence[float]) -> Optional[Tuple[float, Optional[float]]]:
    """Mean and sample standard deviation (None for one value); None for no values."""
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def format_accuracy(values: Sequence[float]) -> str:
    """'77.43 +- 0.12' over seeds, '77.43' for one, '-' for none."""
    summary = mean_and_spread(values)
    if summary is None:
        return "-"
    mean, spread = summary
    return f"{mean:.2f}" if spread is None else f"{mean:.2f} +- {spread:.2f}"


def _paper(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _optional_units(count: Optional[int]) -> str:
    return "-" if count is None else binary_units(count)


def _columns(results: Sequence[RowResult]) -> List[Tuple[str, Callable[[RowResult], str]]]:
    """The Markdown columns: ours, then the paper's where the table prints them."""
    columns = [
        ("row", lambda result: result.label),
        ("model", lambda result: f"`{result.model}`" + (f" k={result.row.ksize}" if result.row.ksize else "") if result.model else "-"),
        ("Param.", lambda result: _optional_units(result.params)),
        ("FLOPs", lambda result: _optional_units(result.flops)),
        ("Top-1", lambda result: format_accuracy(result.top1)),
        ("Top-5", lambda result: format_accuracy(result.top5)),
        ("runs", lambda result: result.status),
    ]
    paper = [
        ("paper #Param (module)", "param_expression"),
        ("paper Param.", "params"),
        ("paper FLOPs", "flops"),
        ("paper Top-1", "top1"),
        ("paper Top-5", "top5"),
    ]
    for title, name in paper:
        if name in ("top1", "top5") or any(getattr(result.row, name) is not None for result in results):
            columns.append((title, lambda result, name=name: _paper(getattr(result.row, name))))
    return columns


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    """A Markdown table's lines: the header, its rule, one line per row of cells. Every table the
    project writes (a run table, paramflops.py's) goes through here."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]


def markdown_lines(title: str, setup: Sequence[str], results: Sequence[RowResult], notes: Sequence[str]) -> List[str]:
    """The table in Markdown: a title, how it was made, one line per row, the paper's notes."""
    columns = _columns(results)
    lines = [f"# {title}", "", *setup, ""]
    lines += markdown_table([name for name, _ in columns], ([cell(result) for _, cell in columns] for result in results))
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return lines


def _csv_row(result: RowResult) -> Dict[str, str]:
    def number(value: Optional[float]) -> str:
        return "" if value is None else f"{value:.4f}"

    top1, top5 = mean_and_spread(result.top1), mean_and_spread(result.top5)
    row = result.row
    return {
        "row": row.key,
        "label": result.label,
        "model": result.model or "",
        "ksize": row.ksize or "",
        "status": result.status,
        "seeds": str(len(result.top1)),
        "params": "" if result.params is None else binary_units(result.params),
        "params_exact": "" if result.params is None else str(result.params),
        "flops": "" if result.flops is None else binary_units(result.flops),
        "flops_exact": "" if result.flops is None else str(result.flops),
        "top1_mean": number(top1 and top1[0]),
        "top1_std": number(top1 and top1[1]),
        "top5_mean": number(top5 and top5[0]),
        "top5_std": number(top5 and top5[1]),
        "top1_per_seed": " ".join(f"{value:.4f}" for value in result.top1),
        "top5_per_seed": " ".join(f"{value:.4f}" for value in result.top5),
        "paper_param_expression": row.param_expression or "",
        "paper_params": row.params or "",
        "paper_flops": row.flops or "",
        "paper_top1": "" if row.top1 is None else f"{row.top1:.2f}",
        "paper_top5": "" if row.top5 is None else f"{row.top5:.2f}",
    }


def csv_text(results: Sequence[RowResult]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_csv_row(result) for result in results)
    return text.getvalue()


TableChart = Callable[[Sequence[RowResult], str], Figure]
"""Draws a table's finished rows under a title: :func:`accuracy_figure` or :func:`kernel_size_figure`."""


def accuracy_figure(results: Sequence[RowResult], title: str) -> Figure:
    """The paper's Figure 1 from a table's rows: Top-1 against parameters, circle area = FLOPs, the spread over seeds as error bars."""
    points = []
    for result in results:
        summary = mean_and_spread(result.top1)
        if summary is not None and result.params is not None:
            points.append(ScatterPoint(result.params / 2**20, summary[0], result.label, summary[1], result.flops,
                                       "" if result.flops is None else binary_units(result.flops)))
    return accuracy_chart(points, title, "Parameters (M = 2^20)", "Top-1 (%)")


def _fixed_k(ksize: str) -> int:
    """The one k of a per-stage --ksize that repeats it ('5555' -> 5)."""
    if len(set(ksize)) != 1 or not ksize.isdigit():
        raise ValueError(f"--ksize {ksize} has no single k")
    return int(ksize[0])


def kernel_size_figure(results: Sequence[RowResult], title: str) -> Figure:
    """The paper's Figure 4 from a table's rows: Top-1 at each fixed k and the adaptive k; a row without
    a --ksize (SENet) is a horizontal line."""
    points, references = [], []
    for result in results:
        summary = mean_and_spread(result.top1)
        if summary is None:
            continue
        ksize = result.row.ksize
        if ksize is None:
            references.append(ReferenceLine(result.label, *summary))
        else:
            points.append(KernelSizePoint(None if ksize == "adaptive" else _fixed_k(ksize), *summary))
    series = next((result.model for result in results if result.row.ksize and result.model), "")
    return kernel_size_chart(points, references, series, title)


def write_table(out_dir: str, title: str, setup: Sequence[str], results: Sequence[RowResult], notes: Sequence[str],
                chart: TableChart) -> List[str]:
    """table.md, table.csv, and the ``chart`` as table.png and table.pdf in ``out_dir``, each replaced whole; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    markdown, table_csv, png, _ = (os.path.join(out_dir, name) for name in TABLE_FILES)
    atomic_write(markdown, lambda handle: handle.write(("\n".join(markdown_lines(title, setup, results, notes)) + "\n").encode()))
    atomic_write(table_csv, lambda handle: handle.write(csv_text(results).encode()))
    return [markdown, table_csv, *save_chart(chart(results, title), png)]

"""Evaluate checkpoint files side by side on an ImageNet-style val set: the released ECA-Nets and the
models the paper compares, as their authors released them, in one table.

    python scripts/evaluate_released.py released/ --data /data/imagenet --csv side_by_side.csv --markdown side_by_side.md

Each file's architecture, settings, ECA kernel sizes and class count are read from its weights:
another code base's layout (the official CBAM code's, Cadene's SENet, moskomule's, timm's) is
converted by the adapter registered beside its model, and file names are not trusted, so no file
needs flags. Evaluation is main.py's: the same loader, transform (resize 256, centre crop 224) and
loop. Each row says the file's layout, the model, Top-1 and Top-5, Param. and FLOPs as
paramflops.py counts them (the paper's binary units, at --image-size), images/s (forward passes of
--batch-size random images after one to warm up; --speed-batches 0 leaves it out), and the
published numbers where there are some: the original README's for the released ECA-Nets, else
those of Table 3's row whose model holds the same weights (its SENet-50 row is the SENet authors'
network, its CBAM-50 row the official CBAM code's). A checkpoint that cannot be loaded gets an error
row and exit status 2 (1 for other errors); the others are still evaluated.
"""

import argparse
import csv
import io
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # noqa: E402
from models import layout  # noqa: E402
from utils.checkpoint import CheckpointError, atomic_write, format_kernel_sizes, load_model  # noqa: E402
from utils.checkpoint.integrity import DIGEST_KEY  # noqa: E402
from utils.console import (  # noqa: E402
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    OneLineErrorParser,
    device_argument,
    exit_status_of,
    non_negative_int,
    positive_int,
    show_warnings_as_one_line,
)
from utils.counting.complexity import binary_units, count_parameters, paper_flops  # noqa: E402
from utils.data.datasets import build_dataset  # noqa: E402
from utils.data.loaders import build_loader  # noqa: E402
from utils.distributed import DistributedContext  # noqa: E402
from utils.paper.report import markdown_table  # noqa: E402
from utils.paper.tables import DEPTHS, SOTA, model_name, table_rows  # noqa: E402
from utils.training.classification import evaluate  # noqa: E402
from utils.training.config import RunConfig  # noqa: E402

RELEASED: Dict[str, Tuple[str, float, float]] = {
    "eca_resnet18": ("ECA-Net18", 70.92, 89.93),
    "eca_resnet34": ("ECA-Net34", 74.21, 91.83),
    "eca_resnet50": ("ECA-Net50", 77.42, 93.62),
    "eca_resnet101": ("ECA-Net101", 78.65, 94.34),
    "eca_resnet152": ("ECA-Net152", 78.92, 94.55),
    "eca_mobilenet_v2": ("ECA-MobileNet_v2", 72.56, 90.81),
}
"""arch -> (the original README's name, its top-1, its top-5), single 224 x 224 centre crop."""

CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".pkl", ".bin", ".safetensors")

COLUMNS = ["checkpoint", "layout", "arch", "k", "top-1", "top-5", "Param.", "FLOPs", "images/s",
           "paper", "paper top-1", "paper top-5", "diff top-1", "diff top-5"]  # fmt: skip
"""The table's columns, as printed and in the Markdown file."""

CSV_FIELDS = ["checkpoint", "layout", "arch", "k", "top1", "top5", "params", "flops", "images_per_second",
              "paper", "paper_top1", "paper_top5", "error"]  # fmt: skip
"""The CSV file's columns: exact counts, unrounded accuracies, an error where a file failed."""


@dataclass(frozen=True)
class Published:
    """Numbers published for a file's model: where from, its top-1 and top-5."""

    label: str
    top1: float
    top5: float


@dataclass(frozen=True)
class Row:
    """One file's results, or why there are none (``error``)."""

    checkpoint: str
    error: Optional[str] = None
    layout: str = ""
    arch: str = ""
    k: str = "-"
    top1: float = 0.0
    top5: float = 0.0
    params: int = 0
    flops: int = 0
    images_per_second: Optional[float] = None
    published: Optional[Published] = None

    def cells(self) -> List[str]:
        """The row's cells under :data:`COLUMNS`."""
        paper = self.published
        return [
            self.checkpoint, self.layout, self.arch, self.k, f"{self.top1:.2f}", f"{self.top5:.2f}",
            binary_units(self.params), binary_units(self.flops),
            "-" if self.images_per_second is None else f"{self.images_per_second:.1f}",
            paper.label if paper else "-",
            f"{paper.top1:.2f}" if paper else "-",
            f"{paper.top5:.2f}" if paper else "-",
            f"{self.top1 - paper.top1:+.2f}" if paper else "-",
            f"{self.top5 - paper.top5:+.2f}" if paper else "-",
        ]  # fmt: skip

    def csv_cells(self) -> Dict[str, str]:
        if self.error is not None:
            return {"checkpoint": self.checkpoint, "error": self.error}
        paper = self.published
        return {
            "checkpoint": self.checkpoint, "layout": self.layout, "arch": self.arch, "k": self.k,
            "top1": f"{self.top1:.4f}", "top5": f"{self.top5:.4f}", "params": str(self.params), "flops": str(self.flops),
            "images_per_second": "" if self.images_per_second is None else f"{self.images_per_second:.2f}",
            "paper": paper.label if paper else "", "paper_top1": f"{paper.top1:.2f}" if paper else "",
            "paper_top5": f"{paper.top5:.2f}" if paper else "",
        }  # fmt: skip


def find_checkpoints(paths: List[Path]) -> List[Path]:
    """The given files, and the checkpoint files directly inside the given folders, sorted."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(CHECKPOINT_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise CheckpointError(f"{path}: no such file or directory")
    if not found:
        raise CheckpointError(f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def describe(kwargs: dict) -> str:
    """The kernel sizes as --ksize takes them (``-`` for a model without ECA)."""
    return format_kernel_sizes(kwargs["k_size"]) if "k_size" in kwargs else "-"


def layout_name(info: dict) -> str:
    """The layout the file was written in: its adapter's name ("official CBAM", "timm"), else this
    project's (its checkpoints carry their tensor digest), the original ECA-Net code's (ECA layers
    in this project's keys: the released files), or torchvision's names."""
    if info["source"] is not None:
        return info["source"]
    if DIGEST_KEY in info["checkpoint"]:
        return "this project"
    return "original ECA-Net" if layout.kernel_layer_names(info["arch"]) else "torchvision keys"


def published(arch: str, model: nn.Module, num_classes: int) -> Optional[Published]:
    """The original README's numbers for a released ECA-Net, else Table 3's for the row whose model
    holds the same weights as ``model`` (keys and shapes), None without one or for other classes."""
    if num_classes != 1000:
        return None
    if arch in RELEASED:
        name, top1, top5 = RELEASED[arch]
        return Published(f"{name} (README)", top1, top5)
    weights = model.state_dict()
    for depth in (*DEPTHS, None):
        for row in table_rows(SOTA, depth):
            if row.top1 is None or row.top5 is None or not row.has_model:
                continue
            name = model_name(row, depth)
            if name in models.list_models() and layout.fits(name, weights):
                return Published(f"{row.label_at(depth)} (Table 3)", row.top1, row.top5)
    return None


def images_per_second(model: nn.Module, device: torch.device, batch_size: int, image_size: int, batches: int) -> Optional[float]:
    """Forward passes of a random batch after one to warm up, in evaluation mode; None for 0 batches."""
    if batches == 0:
        return None
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    model.eval()
    with torch.no_grad():
        model(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            model(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)


def text_table(rows: List[Row]) -> str:
    """Aligned columns for the terminal; an error row is the file's name and its error."""
    cells = [row.cells() for row in rows if row.error is None]
    widths = [max([len(column)] + [len(row[index]) for row in cells]) for index, column in enumerate(COLUMNS)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(COLUMNS, widths)).rstrip()]
    for row in rows:
        if row.error is not None:
            lines.append(f"{row.checkpoint.ljust(widths[0])}  error: {row.error}")
        else:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row.cells(), widths)).rstrip())
    return "\n".join(lines)


def markdown_text(rows: List[Row], data: str, image_size: int) -> str:
    table = markdown_table(
        COLUMNS,
        [row.cells() if row.error is None else [row.checkpoint, f"error: {row.error}"] + [""] * (len(COLUMNS) - 2) for row in rows],
    )
    setup = (
        f"{data}/val, centre crop {image_size}; Param. and FLOPs in the paper's binary units (M = 2^20, G = 2^30), "
        f"FLOPs at {image_size} x {image_size}; paper: the original README's numbers for the released ECA-Nets, "
        "else Table 3's row whose model holds the same weights."
    )
    return "\n".join([setup, "", *table]) + "\n"


def csv_text(rows: List[Row]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row.csv_cells() for row in rows)
    return text.getvalue()


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint files or folders of them")
    parser.add_argument("--data", required=True, help="dataset root holding val/<class>/<image>")
    parser.add_argument("-b", "--batch-size", type=positive_int, default=100, help="evaluation batch size (default 100)")
    parser.add_argument("-j", "--workers", type=non_negative_int, default=4, help="data-loading processes (default 4)")
    parser.add_argument("--image-size", type=positive_int, default=224, help="centre-crop size (default 224)")
    parser.add_argument("--print-freq", type=non_negative_int, default=50, help="progress line every N batches (0: none)")
    parser.add_argument("--device", type=device_argument, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda where there is one)")
    parser.add_argument("--speed-batches", type=non_negative_int, default=5, help="timed batches for images/s (default 5; 0: not measured)")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV here")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    return parser.parse_args(argv)


def evaluate_file(
    path: Path, args: argparse.Namespace, loader, criterion: nn.Module, config: RunConfig, classes: int, position: str
) -> Row:
    """One file's row, its progress lines starting with ``position`` (``[2/5]``); a CheckpointError
    for a file that cannot be loaded."""
    device = torch.device(args.device)
    model, info = load_model(path)
    num_classes = info["kwargs"]["num_classes"]
    row = Row(path.name, layout=layout_name(info), arch=info["arch"], k=describe(info["kwargs"]))
    config.log(f"{position} {path.name}: {row.arch}, k {row.k}, {row.layout} layout")
    if num_classes != classes:
        return Row(path.name, error=f"{num_classes}-class model, but {args.data}/val has {classes} classes")
    params, flops = count_parameters(model), paper_flops(model, args.image_size)
    paper = published(info["arch"], model, num_classes)
    model = model.to(device)
    stats = evaluate(model, criterion, loader, config)
    speed = images_per_second(model, device, args.batch_size, args.image_size, args.speed_batches)
    return replace(row, top1=stats["prec1"], top5=stats["prec5"], params=params, flops=flops, images_per_second=speed, published=paper)


def evaluate_all(args: argparse.Namespace) -> int:
    """Evaluate every checkpoint, print the table and write its files; the exit status."""
    paths = find_checkpoints(args.checkpoints)
    dataset = build_dataset(args.data, "val", args.image_size)
    device = torch.device(args.device)
    config = RunConfig(DistributedContext(), device, lambda line: print(line, file=sys.stderr, flush=True), args.print_freq)
    loader = build_loader(dataset, False, args.batch_size, args.workers, 0, config.context, device.type == "cuda")
    criterion = nn.CrossEntropyLoss().to(device)
    rows, unreadable = [], 0
    for index, path in enumerate(paths, start=1):
        position = f"[{index}/{len(paths)}]"
        try:
            rows.append(evaluate_file(path, args, loader, criterion, config, len(dataset.classes), position))
        except CheckpointError as error:
            rows.append(Row(path.name, error=str(error)))
            unreadable += 1
        if rows[-1].error is not None:
            config.log(f"{position} {path.name}: {rows[-1].error}")
    print(text_table(rows))
    if args.csv is not None:
        atomic_write(args.csv, lambda handle: handle.write(csv_text(rows).encode()))
    if args.markdown is not None:
        atomic_write(args.markdown, lambda handle: handle.write(markdown_text(rows, args.data, args.image_size).encode()))
    if unreadable:
        return EXIT_BAD_INPUT  # a damaged or unreadable checkpoint is bad input
    return EXIT_FAILED if any(row.error is not None for row in rows) else 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    show_warnings_as_one_line()
    return exit_status_of(lambda: evaluate_all(args), "evaluate_released.py: error")


if __name__ == "__main__":
    sys.exit(main())

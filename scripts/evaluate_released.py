"""Evaluate a folder of checkpoints on ImageNet val and print a table beside the original README's numbers.

    python scripts/evaluate_released.py released/ --data /data/imagenet

Each checkpoint's architecture, ECA kernel sizes and class count are read from its weights'
shapes (file names are not trusted), so the released files need no flags. Evaluation is
main.py's: the same loader, transform (resize 256, centre crop 224) and loop. A checkpoint
that cannot be loaded gets an error row and exit status 2 (1 for other errors); the others are still evaluated.
"""

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.checkpoint import CheckpointError, format_kernel_sizes, load_model  # noqa: E402
from utils.console import EXIT_BAD_INPUT, EXIT_FAILED, exit_status_of, show_warnings_as_one_line  # noqa: E402
from utils.data.datasets import build_dataset  # noqa: E402
from utils.data.loaders import build_loader  # noqa: E402
from utils.distributed import DistributedContext  # noqa: E402
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

CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt")


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


def describe(arch: str, kwargs: dict) -> str:
    """The kernel sizes as --ksize takes them (``-`` for a model without ECA)."""
    return format_kernel_sizes(kwargs["k_size"]) if "k_size" in kwargs else "-"


def table(rows: List[Dict[str, str]]) -> str:
    columns = ["checkpoint", "arch", "k", "top-1", "top-5", "paper", "paper top-1", "paper top-5", "diff top-1", "diff top-5"]
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['checkpoint'].ljust(widths['checkpoint'])}  error: {row['error']}")
        else:
            lines.append("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def result_row(name: str, arch: str, kwargs: dict, stats: Dict[str, float], num_classes: int) -> Dict[str, str]:
    row = {"checkpoint": name, "arch": arch, "k": describe(arch, kwargs),
           "top-1": f"{stats['prec1']:.2f}", "top-5": f"{stats['prec5']:.2f}"}  # fmt: skip
    paper, top1, top5 = RELEASED.get(arch, ("-", None, None))
    comparable = top1 is not None and num_classes == 1000
    row.update(
        {
            "paper": paper if comparable else "-",
            "paper top-1": f"{top1:.2f}" if comparable else "-",
            "paper top-5": f"{top5:.2f}" if comparable else "-",
            "diff top-1": f"{stats['prec1'] - top1:+.2f}" if comparable else "-",
            "diff top-5": f"{stats['prec5'] - top5:+.2f}" if comparable else "-",
        }
    )
    return row


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint files or folders of them")
    parser.add_argument("--data", required=True, help="dataset root holding val/<class>/<image>")
    parser.add_argument("-b", "--batch-size", type=int, default=100, help="evaluation batch size (default 100)")
    parser.add_argument("-j", "--workers", type=int, default=4, help="data-loading processes (default 4)")
    parser.add_argument("--image-size", type=int, default=224, help="centre-crop size (default 224)")
    parser.add_argument("--print-freq", type=int, default=50, help="progress line every N batches (0: none)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def evaluate_all(args: argparse.Namespace) -> int:
    """Evaluate every checkpoint, print the table; the exit status."""
    paths = find_checkpoints(args.checkpoints)
    dataset = build_dataset(args.data, "val", args.image_size)
    device = torch.device(args.device)
    config = RunConfig(DistributedContext(), device, lambda line: print(line, file=sys.stderr, flush=True), args.print_freq)
    loader = build_loader(dataset, False, args.batch_size, args.workers, 0, config.context, device.type == "cuda")
    criterion = nn.CrossEntropyLoss().to(device)
    log = config.log
    rows, unreadable = [], 0
    for index, path in enumerate(paths, start=1):
        try:
            model, info = load_model(path)
        except CheckpointError as error:
            log(f"[{index}/{len(paths)}] {path.name}: {error}")
            rows.append({"checkpoint": path.name, "error": str(error)})
            unreadable += 1
            continue
        num_classes = info["kwargs"]["num_classes"]
        log(f"[{index}/{len(paths)}] {path.name}: {info['arch']}, k {describe(info['arch'], info['kwargs'])}")
        if num_classes != len(dataset.classes):
            error = f"{num_classes}-class model, but {args.data}/val has {len(dataset.classes)} classes"
            log(f"[{index}/{len(paths)}] {path.name}: {error}")
            rows.append({"checkpoint": path.name, "error": error})
            continue
        stats = evaluate(model.to(device), criterion, loader, config)
        rows.append(result_row(path.name, info["arch"], info["kwargs"], stats, num_classes))
    print(table(rows))
    if unreadable:
        return EXIT_BAD_INPUT  # a damaged or unreadable checkpoint is bad input
    return EXIT_FAILED if any("error" in row for row in rows) else 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    show_warnings_as_one_line()
    return exit_status_of(lambda: evaluate_all(args), "evaluate_released")


if __name__ == "__main__":
    sys.exit(main())

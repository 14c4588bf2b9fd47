"""Export a checkpoint's model as ONNX, TorchScript or a torch.export ExportedProgram.

    python export.py --weights eca_resnet50_k3557.pth.tar --format onnx --out eca_resnet50.onnx

The architecture, ECA kernel sizes and class count are read from the checkpoint (``-a`` is
optional and checked against it). The written file is loaded back (ONNX Runtime on the CPU,
torch.jit.load, torch.export.load), run on random images and compared with the eager model;
the largest difference is printed, and a failed check is an error that leaves no file.
ONNX needs the packages of requirements-export.txt.
"""

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import models
from utils.checkpoint import load_model
from utils.console import OneLineErrorParser, UsageError, exit_status_of, show_warnings_as_one_line
from utils.export import (
    DEFAULT_OPSET,
    EXPORT_REQUIREMENTS,
    FORMATS,
    ONNX_EXPORTERS,
    export_model,
    missing_export_packages,
)

EXIT_STATUSES = """exit status:
  0   exported and checked
  1   the export failed, or the exported file does not match the eager model
  2   bad input: arguments, checkpoint file, output path, missing packages
"""


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="export.py", description=__doc__, epilog=EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True, help="checkpoint file: released, saved by main.py, or a state_dict")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument("--out", required=True, type=Path, help="the file to write (.onnx, .pt, .pt2)")
    parser.add_argument("-a", "--arch", choices=models.model_names, help="model name (default: read from the weights)")
    parser.add_argument("--image-size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="any batch size (checked at 1 and 3); otherwise batches of 2. TorchScript always takes any shape",
    )
    parser.add_argument("--half", action="store_true", help="float16 weights and input (checked to 1e-2)")
    parser.add_argument(
        "--onnx-exporter",
        choices=ONNX_EXPORTERS,
        default="dynamo",
        help="torch.onnx's default exporter (dynamo, torch.export based) or its TorchScript-based one",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    return parser


def check_output_path(out: Path) -> None:
    """The output's folder must exist and be writable, found before the minutes an export takes."""
    folder = out.parent
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name")
    if not folder.is_dir():
        raise UsageError(f"--out {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: folder {folder} is not writable")


def run(args: argparse.Namespace) -> int:
    missing = missing_export_packages(args.format, args.onnx_exporter)
    if missing:
        raise UsageError(f"{args.format} export needs {', '.join(missing)}: pip install -r {EXPORT_REQUIREMENTS}")
    if args.image_size < 32:
        raise UsageError(f"--image-size must be at least 32, got {args.image_size}")
    check_output_path(args.out)
    model, info = load_model(args.weights, arch=args.arch)
    if args.half:
        model = model.half()
    result = export_model(
        model,
        args.format,
        args.out,
        image_size=args.image_size,
        dynamic_batch=args.dynamic_batch,
        onnx_exporter=args.onnx_exporter,
        opset=args.opset,
        tolerance=1e-2 if args.half else 1e-4,
    )
    batches = ", ".join(map(str, result.batch_sizes))
    print(
        f"{info['arch']} ({', '.join(f'{k}={v}' for k, v in info['kwargs'].items())}): largest difference from "
        f"the eager model {result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g}, batch {batches}, "
        f"{args.image_size}x{args.image_size})"
    )
    print(f"wrote {args.out}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    show_warnings_as_one_line("export.py: warning")
    warnings.filterwarnings("ignore", module="torch")  # exporters' internal deprecation notices
    return exit_status_of(lambda: run(args), "export.py: error")


if __name__ == "__main__":
    sys.exit(main())

"""Parameters and FLOPs as the ECA-Net paper counted them, with exact and today's counts beside.

    python paramflops.py -a eca_resnet50              # one model
    python paramflops.py -a eca_resnet50 --ksize 3333
    python paramflops.py -a maskrcnn_eca_resnet50_fpn # one detector, as the detection table
    python paramflops.py --all                        # markdown tables of every model and detector
    python paramflops.py --table 3 --depth 50         # a paper table, its numbers beside ours

The paper's 24.37M and 3.86G are binary units (M = 1024^2, G = 1024^3) of thop's mid-2019
counts; the same model is 25.56M parameters and 4.13G MACs in SI units by today's thop.
Its detection table is in SI units, counted by MMDetection v1's tools/get_flops.py: trainable
parameters, and the multiply-accumulates of one 1x3x1280x800 image (utils/detection/complexity.py).

``--table 2`` (the attention variants at ResNet-50: Table 2's #Param expression against each
module's count at every stage width), ``--table 3`` (the comparison with the state of the
art; ``--depth`` picks one section) and ``--table 5`` (the COCO detectors) print the paper's
table in its layout with the paper's numbers beside the project's, each marked ``=`` (equal
as printed), ``= (SI)`` (equal only in SI units: a number the paper copied from a peer's
paper), ``≠`` or ``?`` (the paper's number is not known here).
"""

import argparse
import sys
from typing import List, Optional, Sequence

import models
from models.detection import detector_names
from utils.console import OneLineErrorParser, exit_status_of, positive_int
from utils.counting.complexity import measure
from utils.paper import tables as paper_tables
from utils.paper.count_tables import (
    DUMMY_INPUT_LABEL,
    PAPER_CLASSES,
    PAPER_INPUT_SIZE,
    PAPER_TABLES,
    build,
    count_detector,
    detector_markdown_table,
    kernel_label,
    model_markdown_table,
    report,
    report_detector,
    table_3,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineErrorParser(prog="paramflops.py", description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "-a",
        "--arch",
        help=f"model to count, one of: {', '.join(models.model_names)}; or a detector: {', '.join(detector_names)}",
    )
    target.add_argument("--all", action="store_true", help="markdown tables of every registered model and detector")
    target.add_argument(
        "--table", type=int, choices=sorted(PAPER_TABLES), help="one of the paper's tables, its numbers beside the project's"
    )
    parser.add_argument(
        "--depth",
        choices=[str(depth) for depth in paper_tables.DEPTHS] + [paper_tables.MOBILENET],
        help="with --table 3: one section (a ResNet depth, or mobilenet); default: every section",
    )
    parser.add_argument("--ksize", help="ECA kernel sizes, e.g. 3557 or adaptive (default: the released model's)")
    parser.add_argument(
        "--input-size",
        type=positive_int,
        help=f"classification image side in pixels (default {PAPER_INPUT_SIZE}); "
        f"detectors are counted at {DUMMY_INPUT_LABEL}, as the paper's table",
    )
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        help=f"classifier outputs (default {PAPER_CLASSES}); detectors: classes with background "
        "for the R-CNNs (default 81), without for RetinaNet (default 80)",
    )
    args = parser.parse_args(argv)
    if (args.all or args.table) and args.ksize is not None:
        parser.error("--ksize applies to one model; use it with -a")
    if args.depth is not None and args.table != 3:
        parser.error("--depth applies to --table 3")
    if args.table and (args.input_size is not None or args.num_classes is not None):
        parser.error("--table counts as the paper did: 1x3x224x224 images, 1000 classes (detectors: COCO at 1x3x1280x800)")
    if args.arch in detector_names and args.input_size is not None:
        parser.error(f"--input-size applies to classification models; detectors are counted at {DUMMY_INPUT_LABEL}")
    return args


def lines_for(args: argparse.Namespace) -> List[str]:
    """What the command line asks for, as the lines to print."""
    input_size = args.input_size or PAPER_INPUT_SIZE
    if args.table == 3:
        return table_3(args.depth)
    if args.table:
        return PAPER_TABLES[args.table]()
    if args.all:
        return model_markdown_table(input_size, args.num_classes or PAPER_CLASSES) + [""] + detector_markdown_table()
    if args.arch in detector_names:
        return report_detector(args.arch, count_detector(args.arch, args.ksize, args.num_classes))
    num_classes = args.num_classes or PAPER_CLASSES
    model = build(args.arch, args.ksize, num_classes)
    return report(args.arch, kernel_label(model), measure(model, input_size), input_size, num_classes)


def run(args: argparse.Namespace) -> int:
    print("\n".join(lines_for(args)))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit status 2 and one line for bad input (an unknown model, a k it does not take)."""
    args = parse_args(argv)
    return exit_status_of(lambda: run(args), "paramflops.py: error")


if __name__ == "__main__":
    sys.exit(main())

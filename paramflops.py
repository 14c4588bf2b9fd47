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
import ast
import re
import sys
from typing import Dict, List, NamedTuple, NoReturn, Optional, Sequence, Tuple

import thop
from torch import nn
from torchvision.models.detection import RetinaNet

import models
from models.attention import attention_kind
from models.detection import create_detector, detector_names
from utils.console import OneLineErrorParser
from utils.counting.complexity import (
    Complexity,
    agreement,
    attention_share,
    binary_units,
    count_parameters,
    measure,
    paper_flops,
    printed_like,
    si_units,
)
from utils.detection.complexity import DUMMY_INPUT, DetectorComplexity, measure_detector, paper_si_units, shapes_only
from utils.paper import tables as paper_tables

CLASSIFICATION_INPUT_SIZE = 224
CLASSIFICATION_CLASSES = 1000


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


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
        type=_positive_int,
        help=f"classification image side in pixels (default {CLASSIFICATION_INPUT_SIZE}); "
        f"detectors are counted at 1x3x{DUMMY_INPUT[2]}x{DUMMY_INPUT[3]}, as the paper's table",
    )
    parser.add_argument(
        "--num-classes",
        type=_positive_int,
        help=f"classifier outputs (default {CLASSIFICATION_CLASSES}); detectors: classes with background "
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
        parser.error(f"--input-size applies to classification models; detectors are counted at {_dummy_input()}")
    return args


def _dummy_input() -> str:
    return "x".join(map(str, DUMMY_INPUT))


def _build_kwargs(ksize: Optional[str], num_classes: Optional[int]) -> dict:
    return {
        name: value for name, value in (("k_size", ksize), ("num_classes", num_classes)) if value is not None
    }


def _refuse(arch: str, ksize: Optional[str], error: Exception) -> NoReturn:
    """A bad name or k as a one-line exit, not a traceback."""
    if isinstance(error, TypeError):
        if ksize is None:
            raise error
        sys.exit(f"paramflops.py: error: {arch} has no ECA kernel size to set; drop --ksize")
    sys.exit(f"paramflops.py: error: {error}")


def build(arch: str, ksize: Optional[str], num_classes: int) -> nn.Module:
    """The registered classification model."""
    try:
        return models.create_model(arch, **_build_kwargs(ksize, num_classes))
    except (ValueError, TypeError) as error:
        _refuse(arch, ksize, error)


class CountedDetector(NamedTuple):
    counts: DetectorComplexity
    k: str
    classes: str
    attention: Tuple[int, Dict[str, int]]


def count_detector(arch: str, ksize: Optional[str] = None, num_classes: Optional[int] = None) -> CountedDetector:
    """One registered detector's counts, k, classes and attention share.

    The detector is built and counted with shapes only (no weights are made, nothing runs
    for real), so even the ResNet-101 Mask R-CNN takes about a second.
    """
    with shapes_only():
        try:
            detector = create_detector(arch, **_build_kwargs(ksize, num_classes))
        except (ValueError, TypeError) as error:
            _refuse(arch, ksize, error)
        return CountedDetector(
            measure_detector(detector), kernel_label(detector), detector_classes(detector), attention_share(detector)
        )


def kernel_label(model: nn.Module) -> str:
    """The attention kernel sizes the model was built with, as the paper's tables write them.

    One digit per stage for a ResNet, also a detector's ("3557"), the distinct sizes otherwise
    ("1/3" for ECA-MobileNetV2), "-" without any k-sized attention.
    """

    def sizes(module: nn.Module) -> List[int]:
        layers = [m for m in module.modules() if isinstance(m, models.ChannelAttention)]
        return [layer.channel_kernel_size() for layer in layers if layer.kernel_size_parameter is not None]

    for module in model.modules():
        stages = [getattr(module, f"layer{index}", None) for index in range(1, 5)]
        if all(stage is not None for stage in stages):
            stage_sizes = [sizes(stage) for stage in stages]
            if all(stage_sizes):
                return "".join(str(stage[0]) for stage in stage_sizes)
            break
    return "/".join(map(str, sorted(set(sizes(model))))) or "-"


def detector_classes(detector: nn.Module) -> str:
    """How many classes the detector predicts, and whether background is one of them."""
    if isinstance(detector, RetinaNet):
        return f"{detector.head.classification_head.num_classes} classes"
    return f"{detector.roi_heads.box_predictor.cls_score.out_features} classes with background"


def _aligned(rows: List[Tuple[str, ...]]) -> List[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _attention_line(attention_params: int, attention_layers: Dict[str, int]) -> str:
    layers = ", ".join(f"{number} {name} layers" for name, number in attention_layers.items())
    return f"Attention: {attention_params:,} parameters in {layers}" if layers else "Attention: none"


def report(arch: str, k: str, counts: Complexity, input_size: int, num_classes: int) -> List[str]:
    """One model: each count in the paper's binary units, as an exact integer, and in SI units."""
    rows = [
        ("", "paper (M=2^20, G=2^30)", "exact", "SI (M=10^6, G=10^9)"),
        ("Params", binary_units(counts.params), f"{counts.params:,}", si_units(counts.params)),
        ("FLOPs, 2019 thop", binary_units(counts.paper_flops), f"{counts.paper_flops:,}", si_units(counts.paper_flops)),
        (f"MACs, thop {thop.__version__}", binary_units(counts.thop_macs), f"{counts.thop_macs:,}", si_units(counts.thop_macs)),
    ]
    lines = [f"{arch}  k={k}  input 1x3x{input_size}x{input_size}  {num_classes} classes"]
    lines += _aligned(rows)
    lines.append(_attention_line(counts.attention_params, counts.attention_layers))
    return lines


def report_detector(arch: str, detector: CountedDetector) -> List[str]:
    """One detector as the paper's detection table counts it (SI units, trainable parameters), exact beside."""
    counts = detector.counts
    rows = [
        ("", "paper (M=10^6, G=10^9)", "exact"),
        ("Params, trainable", paper_si_units(counts.trainable_params, "M"), f"{counts.trainable_params:,}"),
        ("FLOPs, MMDetection v1", paper_si_units(counts.flops, "G"), f"{counts.flops:,}"),
        ("Params, all", paper_si_units(counts.params, "M"), f"{counts.params:,}"),
    ]
    lines = [f"{arch}  k={detector.k}  input {_dummy_input()}  {detector.classes}"]
    lines += _aligned(rows)
    lines.append(_attention_line(*detector.attention))
    return lines


def markdown_table(input_size: int, num_classes: int) -> List[str]:
    """Every registered model, one row each, ready to paste into a README."""
    lines = [
        f"Input 1x3x{input_size}x{input_size}, {num_classes} classes. Paper columns: thop's 2019 rules in "
        f"binary units (M = 1024^2, G = 1024^3); MACs: thop {thop.__version__} in SI units (G = 10^9).",
        "",
        "| model | k | Params (paper) | FLOPs (paper) | Params (exact) | MACs (thop, SI) | Attention params |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch in models.model_names:
        model = build(arch, None, num_classes)
        counts = measure(model, input_size)
        lines.append(
            f"| {arch} | {kernel_label(model)} | {binary_units(counts.params)} | "
            f"{binary_units(counts.paper_flops)} | {counts.params:,} | {si_units(counts.thop_macs)} | "
            f"{counts.attention_params:,} |"
        )
    return lines


def detector_markdown_table() -> List[str]:
    """Every registered detector with its default k and classes, one row each."""
    lines = [
        f"Detectors: input {_dummy_input()} through MMDetection v1's dummy forward, counted by its rules, "
        "in SI units (M = 10^6, G = 10^9) as the paper's detection table; Params are the trainable ones; "
        "COCO's 80 classes (81 with background for the R-CNNs) whatever --num-classes says.",
        "",
        "| detector | k | Params (paper) | FLOPs (paper) | Params (exact, trainable) | FLOPs (exact) |",
        "|---|---|---|---|---|---|",
    ]
    for arch in detector_names:
        detector = count_detector(arch)
        counts = detector.counts
        lines.append(
            f"| {arch} | {detector.k} | {paper_si_units(counts.trainable_params, 'M')} | "
            f"{paper_si_units(counts.flops, 'G')} | {counts.trainable_params:,} | {counts.flops:,} |"
        )
    return lines


def evaluate_expression(expression: str, **values: int) -> int:
    """A #Param expression as the paper writes it (``2C^2/r``, ``16C``, ``kC``) at these values."""
    python = re.sub(r"([0-9A-Za-z])(?=[A-Za-z])", r"\1*", expression.replace("^", "**"))  # 16C -> 16*C, kC -> k*C

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in values:
            return values[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult, ast.Div, ast.Pow)):
            left, right = value(node.left), value(node.right)
            return {ast.Add: left + right, ast.Mult: left * right, ast.Div: left / right, ast.Pow: left**right}[type(node.op)]
        raise ValueError(f"#Param expression {expression!r}: cannot read {ast.dump(node)}")

    result = value(ast.parse(python, mode="eval").body)
    if result != int(result):
        raise ValueError(f"#Param expression {expression!r} is not a whole number at {values}")
    return int(result)


def _stage_modules(model: nn.Module) -> List[Optional[nn.Module]]:
    """The first attention layer of each of a ResNet's four stages (None where it has none)."""
    return [
        next((m for m in getattr(model, f"layer{stage}").modules() if isinstance(m, models.ChannelAttention)), None)
        for stage in range(1, 5)
    ]


def _markdown(header: Sequence[str], rows: List[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]


def _paper_model(row: "paper_tables.PaperRow", depth: Optional[int]) -> nn.Module:
    takes_k = row.key in models.attention_names and attention_kind(row.key).takes_kernel_size
    return build(paper_tables.registered_model_name(row, depth), "3333" if takes_k else None, CLASSIFICATION_CLASSES)


def table_2() -> List[str]:
    """Table 2 at ResNet-50: each variant's #Param expression against its counted modules per stage width."""
    widths = [planes * 4 for planes in models.ResNet.stage_planes]
    lines = [
        "Table 2: channel-attention variants on ResNet-50 (ImageNet). #Param counts one module, r = 16, "
        "k = 3 (every ECA and ECA-NS layer); each width's cell is the project's module count, = where it equals the "
        "paper's expression. Params and FLOPs of the whole model: thop's 2019 rules, M = 2^20, G = 2^30.",
        "",
    ]
    rows = []
    for row in paper_tables.table_rows(paper_tables.VARIANTS, 50):
        model = _paper_model(row, 50)
        cells = []
        for channels, module in zip(widths, _stage_modules(model)):
            counted = 0 if module is None else count_parameters(module)
            expected = evaluate_expression(row.param_expression, C=channels, r=16, k=3)
            cells.append(f"{counted:,} {'=' if counted == expected else f'≠ {expected:,}'}")
        params, flops = count_parameters(model), paper_flops(model)
        rows.append(
            [row.label, row.param_expression, *cells, binary_units(params), f"{params:,}", binary_units(flops),
             f"{row.top1:.2f}", f"{row.top5:.2f}"]
        )
    header = ["row", "#Param (paper)", *[f"C = {c}" for c in widths], "Params", "exact", "FLOPs", "Top-1 (paper)", "Top-5 (paper)"]
    return lines + _markdown(header, rows) + [""] + [f"- {note}" for note in paper_tables.VARIANTS.notes]


def table_3(depth: Optional[str]) -> List[str]:
    """Table 3, one section or all: the paper's Param. and FLOPs beside the project's counts."""
    sections = [depth] if depth is not None else [str(d) for d in paper_tables.DEPTHS] + [paper_tables.MOBILENET]
    lines = [
        "Table 3: comparison with the state of the art (ImageNet), 1x3x224x224. Paper columns as printed; ours in "
        "the paper's units (M = 2^20, G = 2^30, thop's 2019 rules) and exact. = equal as printed, = (SI) equal only "
        "in SI units, ≠ not equal, ? not known here.",
    ]
    for section in sections:
        section_depth = None if section == paper_tables.MOBILENET else int(section)
        lines += ["", f"### {paper_tables.section_key(section_depth)}", ""]
        rows = []
        for row in paper_tables.table_rows(paper_tables.SOTA, section_depth):
            label = row.label_at(section_depth)
            paper = [row.params or "?", row.flops or "?"]
            if not row.has_model:
                rows.append([label, *paper, "copied from its paper", "", "", "", "", ""])
                continue
            model = build(paper_tables.registered_model_name(row, section_depth), None, CLASSIFICATION_CLASSES)
            params, flops = count_parameters(model), paper_flops(model)
            rows.append([
                label, *paper,
                printed_like(params, row.params) if row.params else binary_units(params), agreement(params, row.params),
                printed_like(flops, row.flops) if row.flops else binary_units(flops), agreement(flops, row.flops),
                f"{params:,}", f"{flops:,}",
            ])  # fmt: skip
        header = ["row", "Param. (paper)", "FLOPs (paper)", "Param.", "", "FLOPs", "", "exact params", "exact FLOPs"]
        lines += _markdown(header, rows)
    return lines + [""] + [f"- {note}" for note in paper_tables.SOTA.notes]


TABLE_5: Tuple[Tuple[str, Optional[str], Optional[str], Optional[str]], ...] = (
    # detector, k, Param., FLOPs as the paper printed them (None: not known here)
    ("fasterrcnn_resnet50_fpn", None, "41.53M", "207.07G"),
    ("fasterrcnn_se_resnet50_fpn", None, "44.02M", None),
    ("fasterrcnn_eca_resnet50_fpn", "5555", "41.53M", "207.18G"),
    ("fasterrcnn_resnet101_fpn", None, None, None),
    ("fasterrcnn_se_resnet101_fpn", None, None, None),
    ("fasterrcnn_eca_resnet101_fpn", "3357", "60.52M", "283.32G"),
    ("maskrcnn_resnet50_fpn", None, None, None),
    ("maskrcnn_se_resnet50_fpn", None, "46.67M", None),
    ("maskrcnn_eca_resnet50_fpn", "3377", "44.18M", "275.69G"),
    ("maskrcnn_resnet101_fpn", None, None, None),
    ("maskrcnn_se_resnet101_fpn", None, None, None),
    ("maskrcnn_eca_resnet101_fpn", "3357", "63.17M", "351.83G"),
    ("retinanet_resnet50_fpn", None, None, None),
    ("retinanet_se_resnet50_fpn", None, "40.23M", None),
    ("retinanet_eca_resnet50_fpn", "3377", "37.74M", "239.43G"),
    ("retinanet_resnet101_fpn", None, None, None),
    ("retinanet_se_resnet101_fpn", None, None, None),
    ("retinanet_eca_resnet101_fpn", "3357", "56.74M", "315.57G"),
)
"""Table 5 (COCO): the rows the original README and the spec give; k as the released files have it."""


def table_5() -> List[str]:
    """Table 5: every detector row's trainable parameters and MMDetection v1 FLOPs beside the paper's."""
    lines = [
        f"Table 5: object detection on COCO, MMDetection v1's counts (trainable parameters; FLOPs of one "
        f"{_dummy_input()} image), SI units as the paper (M = 10^6, G = 10^9). = equal as printed, ≠ not, ? not known here.",
        "",
    ]
    rows = []
    for arch, k, params_printed, flops_printed in TABLE_5:
        detector = count_detector(arch, k)
        params, flops = detector.counts.trainable_params, detector.counts.flops
        ours = [paper_si_units(params, "M"), paper_si_units(flops, "G")]
        marks = ["?" if printed is None else "=" if printed == own else "≠" for printed, own in zip((params_printed, flops_printed), ours)]
        rows.append([arch, detector.k, params_printed or "?", flops_printed or "?", ours[0], marks[0], ours[1], marks[1],
                     f"{params:,}", f"{flops:,}"])  # fmt: skip
    header = ["detector", "k", "Param. (paper)", "FLOPs (paper)", "Param.", "", "FLOPs", "", "exact params", "exact FLOPs"]
    return lines + _markdown(header, rows)


PAPER_TABLES = {2: table_2, 3: table_3, 5: table_5}


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    input_size = args.input_size or CLASSIFICATION_INPUT_SIZE
    if args.table == 3:
        lines = table_3(args.depth)
    elif args.table:
        lines = PAPER_TABLES[args.table]()
    elif args.all:
        lines = markdown_table(input_size, args.num_classes or CLASSIFICATION_CLASSES)
        lines += [""] + detector_markdown_table()
    elif args.arch in detector_names:
        lines = report_detector(args.arch, count_detector(args.arch, args.ksize, args.num_classes))
    else:
        num_classes = args.num_classes or CLASSIFICATION_CLASSES
        model = build(args.arch, args.ksize, num_classes)
        lines = report(args.arch, kernel_label(model), measure(model, input_size), input_size, num_classes)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

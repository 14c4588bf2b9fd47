"""Parameters and FLOPs as the ECA-Net paper counted them, with exact and today's counts beside.

    python paramflops.py -a eca_resnet50              # one model
    python paramflops.py -a eca_resnet50 --ksize 3333
    python paramflops.py -a maskrcnn_eca_resnet50_fpn # one detector, as the detection table
    python paramflops.py --all                        # markdown tables of every model and detector

The paper's 24.37M and 3.86G are binary units (M = 1024^2, G = 1024^3) of thop's mid-2019
counts; the same model is 25.56M parameters and 4.13G MACs in SI units by today's thop.
Its detection table is in SI units, counted by MMDetection v1's tools/get_flops.py: trainable
parameters, and the multiply-accumulates of one 1x3x1280x800 image (utils/detection/complexity.py).
"""

import argparse
import sys
from typing import Dict, List, NamedTuple, NoReturn, Optional, Sequence, Tuple

import thop
from torch import nn
from torchvision.models.detection import RetinaNet

import models
from models.detection import create_detector, detector_names
from utils.complexity import ATTENTION_TYPES, Complexity, attention_share, binary_units, measure, si_units
from utils.console import OneLineErrorParser
from utils.detection.complexity import DUMMY_INPUT, DetectorComplexity, measure_detector, paper_si_units, shapes_only

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
    if args.all and args.ksize is not None:
        parser.error("--ksize applies to one model; use it with -a")
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
        return [m.k_size for m in module.modules() if isinstance(m, ATTENTION_TYPES) and hasattr(m, "k_size")]

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


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    input_size = args.input_size or CLASSIFICATION_INPUT_SIZE
    if args.all:
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

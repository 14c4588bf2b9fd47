"""The paper's parameter and FLOP counts beside this project's: what ``paramflops.py`` prints.

One model or detector as the paper counted it (with the exact integers and today's units
beside), every registered model and detector as Markdown, and the paper's Tables 2, 3 and 5
in their layout with the paper's numbers (``utils.paper.tables``) next to the counts, each
marked ``=`` (equal as printed), ``= (SI)`` (equal only in SI units: a number copied from a
peer's paper), ``≠`` or ``?`` (the paper's number is not known here). Bad input (an unknown
model, a k it does not take) is a ``UsageError``.
"""

import ast
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import thop
from torch import nn
from torchvision.models.detection import RetinaNet

import models
from models.attention import attention_kind
from models.detection import create_detector, detector_names
from utils.console import UsageError
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
from utils.paper.report import markdown_table

__all__ = [
    "PAPER_INPUT_SIZE",
    "PAPER_CLASSES",
    "DUMMY_INPUT_LABEL",
    "CountedDetector",
    "build",
    "count_detector",
    "kernel_label",
    "detector_classes",
    "report",
    "report_detector",
    "model_markdown_table",
    "detector_markdown_table",
    "evaluate_expression",
    "table_2",
    "table_3",
    "table_5",
    "PAPER_TABLES",
]

PAPER_INPUT_SIZE = 224
"""The classification tables' image side."""
PAPER_CLASSES = 1000
"""The classification tables' classes (ImageNet)."""
DUMMY_INPUT_LABEL = "x".join(map(str, DUMMY_INPUT))
"""The detection table's input, 1x3x1280x800."""


def _build_kwargs(ksize: Optional[str], num_classes: Optional[int]) -> dict:
    return {name: value for name, value in (("k_size", ksize), ("num_classes", num_classes)) if value is not None}


def _refusal(arch: str, ksize: Optional[str], error: Exception) -> UsageError:
    """A bad name or k as a one-line error, not a traceback."""
    if isinstance(error, TypeError):
        if ksize is None:
            raise error
        return UsageError(f"{arch} has no ECA kernel size to set; drop --ksize")
    return UsageError(str(error))


def build(arch: str, ksize: Optional[str], num_classes: int) -> nn.Module:
    """The registered classification model."""
    try:
        return models.create_model(arch, **_build_kwargs(ksize, num_classes))
    except (ValueError, TypeError) as error:
        raise _refusal(arch, ksize, error) from None


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
            raise _refusal(arch, ksize, error) from None
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
    lines = [f"{arch}  k={detector.k}  input {DUMMY_INPUT_LABEL}  {detector.classes}"]
    lines += _aligned(rows)
    lines.append(_attention_line(*detector.attention))
    return lines


def model_markdown_table(input_size: int, num_classes: int) -> List[str]:
    """Every registered model, one row each, ready to paste into a README."""
    lines = [
        f"Input 1x3x{input_size}x{input_size}, {num_classes} classes. Paper columns: thop's 2019 rules in "
        f"binary units (M = 1024^2, G = 1024^3); MACs: thop {thop.__version__} in SI units (G = 10^9).",
        "",
    ]
    rows = []
    for arch in models.model_names:
        model = build(arch, None, num_classes)
        counts = measure(model, input_size)
        rows.append([arch, kernel_label(model), binary_units(counts.params), binary_units(counts.paper_flops), f"{counts.params:,}",
                     si_units(counts.thop_macs), f"{counts.attention_params:,}"])  # fmt: skip
    header = ["model", "k", "Params (paper)", "FLOPs (paper)", "Params (exact)", "MACs (thop, SI)", "Attention params"]
    return lines + markdown_table(header, rows)


def detector_markdown_table() -> List[str]:
    """Every registered detector with its default k and classes, one row each."""
    lines = [
        f"Detectors: input {DUMMY_INPUT_LABEL} through MMDetection v1's dummy forward, counted by its rules, "
        "in SI units (M = 10^6, G = 10^9) as the paper's detection table; Params are the trainable ones; "
        "COCO's 80 classes (81 with background for the R-CNNs) whatever --num-classes says.",
        "",
    ]
    rows = []
    for arch in detector_names:
        detector = count_detector(arch)
        counts = detector.counts
        rows.append([arch, detector.k, paper_si_units(counts.trainable_params, "M"), paper_si_units(counts.flops, "G"),
                     f"{counts.trainable_params:,}", f"{counts.flops:,}"])  # fmt: skip
    header = ["detector", "k", "Params (paper)", "FLOPs (paper)", "Params (exact, trainable)", "FLOPs (exact)"]
    return lines + markdown_table(header, rows)


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


def _paper_model(row: paper_tables.PaperRow, depth: Optional[int]) -> nn.Module:
    takes_k = row.key in models.attention_names and attention_kind(row.key).takes_kernel_size
    return build(paper_tables.registered_model_name(row, depth), "3333" if takes_k else None, PAPER_CLASSES)


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
    return lines + markdown_table(header, rows) + [""] + [f"- {note}" for note in paper_tables.VARIANTS.notes]


def table_3(depth: Optional[str] = None) -> List[str]:
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
            model = build(paper_tables.registered_model_name(row, section_depth), None, PAPER_CLASSES)
            params, flops = count_parameters(model), paper_flops(model)
            rows.append([
                label, *paper,
                printed_like(params, row.params) if row.params else binary_units(params), agreement(params, row.params),
                printed_like(flops, row.flops) if row.flops else binary_units(flops), agreement(flops, row.flops),
                f"{params:,}", f"{flops:,}",
            ])  # fmt: skip
        header = ["row", "Param. (paper)", "FLOPs (paper)", "Param.", "", "FLOPs", "", "exact params", "exact FLOPs"]
        lines += markdown_table(header, rows)
    return lines + [""] + [f"- {note}" for note in paper_tables.SOTA.notes]


class _ParameterRule(NamedTuple):
    """How a Table 5 row's Param. was counted: which parameters, and with how many decimals."""

    label: str
    count: Callable[[DetectorComplexity], int]
    decimals: int


_PARAMETER_RULES: Dict[Optional[str], _ParameterRule] = {
    None: _ParameterRule("trainable", lambda counts: counts.trainable_params, 2),
    "GCNet": _ParameterRule("all, 1 decimal (GCNet)", lambda counts: counts.params, 1),
}
"""By the paper a row copied its numbers from (``DetectionRow.copied_from``): the ECA-Net paper's
own rows count as MMDetection v1's get_flops.py; GCNet's paper counted every parameter."""


def _millions(count: int, decimals: int) -> str:
    return f"{count / 1e6:.{decimals}f}M"


def _as_printed_by_its_source(printed: str, decimals: int) -> str:
    """A Param. the ECA-Net paper copied, at the decimals of the paper it came from (``46.90M``: GCNet's ``46.9M``)."""
    return _millions(round(float(printed[:-1]) * 1e6), decimals)


def table_5() -> List[str]:
    """Table 5: every detector row's parameters, counted as the row's numbers were, and its
    MMDetection v1 FLOPs beside the paper's."""
    lines = [
        f"Table 5: object detection on COCO. FLOPs: MMDetection v1's counter on one {DUMMY_INPUT_LABEL} image; Param.: "
        "as each row was counted (last column); SI units as the paper (M = 10^6, G = 10^9). = equal as printed, ≠ not, "
        "? not known here.",
        "",
    ]
    rows = []
    for row in paper_tables.DETECTION:
        detector = count_detector(row.model, row.ksize)
        rule = _PARAMETER_RULES[row.copied_from]
        params, flops = rule.count(detector.counts), detector.counts.flops
        ours = [_millions(params, rule.decimals), paper_si_units(flops, "G")]
        printed = [None if row.params is None else _as_printed_by_its_source(row.params, rule.decimals), row.flops]
        marks = ["?" if paper is None else "=" if paper == own else "≠" for paper, own in zip(printed, ours)]
        rows.append([row.model, detector.k, row.params or "?", row.flops or "?", ours[0], marks[0], ours[1], marks[1],
                     f"{params:,}", f"{flops:,}", rule.label])  # fmt: skip
    header = ["detector", "k", "Param. (paper)", "FLOPs (paper)", "Param.", "", "FLOPs", "", "exact params", "exact FLOPs",
              "Param. counts"]  # fmt: skip
    return lines + markdown_table(header, rows) + [""] + [f"- {note}" for note in paper_tables.DETECTION_NOTES]


PAPER_TABLES = {2: table_2, 3: table_3, 5: table_5}
"""``paramflops.py --table N``: each table's lines (``table_3`` also takes one section's depth)."""

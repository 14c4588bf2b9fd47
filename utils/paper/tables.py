"""The ECA-Net paper's comparison tables as data, so scripts can rebuild them row by row.

Numbers are copied as the paper (arXiv 1910.03151 v4) prints them: Param. and FLOPs as
strings in its 1024-based units, accuracies in percent. A number the paper does not give,
or that is not known here (Figure 4's values are only in the figure's image), is None.
A row's model is a registered-name pattern; it is resolved only when asked for, so a table
can name models that are not registered yet. Table 5 (COCO detection) has rows of its own
kind, :class:`DetectionRow`: its numbers are SI units, each row one registered detector.
"""

from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Tuple

import models

__all__ = [
    "PaperRow",
    "PaperTable",
    "TABLES",
    "DEPTHS",
    "MOBILENET",
    "VARIANTS",
    "SOTA",
    "KERNEL_SIZE",
    "MOBILENET_TABLE",
    "section_key",
    "table_rows",
    "model_name",
    "registered_model_name",
    "DetectionRow",
    "DETECTION",
    "DETECTION_NOTES",
]

DEPTHS: Tuple[int, ...] = (18, 34, 50, 101, 152)
MOBILENET = "mobilenet"
"""The section (and --depth value) of the MobileNetV2 rows."""


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: how to build its model here and what the paper printed for it."""

    key: str
    """The row's name on the command line: the printed name in lower case, '-' as '_'."""
    label: str
    """The row as printed; '{depth}' stands for the ResNet depth."""
    model: Optional[str]
    """Registered-name pattern, '{depth}' for the ResNet depth; None: no model here."""
    ksize: Optional[str] = None
    """main.py --ksize for the row (Table 2's k = 3, Figure 4's fixed and adaptive k); None: the model's default."""
    param_expression: Optional[str] = None
    """Table 2's #Param of one attention module, as an expression in C, r, k."""
    params: Optional[str] = None
    flops: Optional[str] = None
    train_fps: Optional[int] = None
    inference_fps: Optional[int] = None
    top1: Optional[float] = None
    top5: Optional[float] = None

    @property
    def has_model(self) -> bool:
        return self.model is not None

    def label_at(self, depth: Optional[int]) -> str:
        return self.label.format(depth=depth)


@dataclass(frozen=True)
class PaperTable:
    """A table's rows (``template``, numbers unknown) and what the paper printed per section."""

    key: str
    title: str
    template: Tuple[PaperRow, ...]
    sections: Dict[str, Tuple[PaperRow, ...]]
    """'resnet50', 'resnet101', ..., 'mobilenet' -> the rows the paper printed there."""
    notes: Tuple[str, ...] = field(default=())
    has_depth: bool = True
    """False for the MobileNetV2 table, whose rows have no ResNet depth."""


def _numbered(template: Tuple[PaperRow, ...], numbers: Dict[str, dict]) -> Tuple[PaperRow, ...]:
    """The template rows named in ``numbers`` (in the template's order), with those numbers filled in."""
    unknown = set(numbers) - {row.key for row in template}
    if unknown:
        raise ValueError(f"rows {sorted(unknown)} are not in the table")
    return tuple(replace(row, **numbers[row.key]) for row in template if row.key in numbers)


def _numbers(params: Optional[str], flops: Optional[str], train_fps: Optional[int], inference_fps: Optional[int],
             top1: Optional[float], top5: Optional[float]) -> dict:
    return dict(params=params, flops=flops, train_fps=train_fps, inference_fps=inference_fps, top1=top1, top5=top5)


# Table 2: every variant is a gate sigma(f(GAP(X))) where SE sits, at ResNet-50.
_VARIANT_ROWS = (
    PaperRow("vanilla", "Vanilla", "resnet{depth}", param_expression="0"),
    PaperRow("se", "SE", "se_resnet{depth}", param_expression="2C^2/r"),
    PaperRow("se_var1", "SE-Var1", "se_var1_resnet{depth}", param_expression="0"),
    PaperRow("se_var2", "SE-Var2", "se_var2_resnet{depth}", param_expression="C"),
    PaperRow("se_var3", "SE-Var3", "se_var3_resnet{depth}", param_expression="C^2"),
    PaperRow("se_gc1", "SE-GC1", "se_gc1_resnet{depth}", param_expression="C^2/16"),
    PaperRow("se_gc2", "SE-GC2", "se_gc2_resnet{depth}", param_expression="16C"),
    PaperRow("se_gc3", "SE-GC3", "se_gc3_resnet{depth}", param_expression="8C"),
    # The paper's ECA row has k = 3 in every block, and its ECA-NS row's k, not printed, reads as the same.
    PaperRow("eca_ns", "ECA-NS", "eca_ns_resnet{depth}", param_expression="kC", ksize="3333"),
    PaperRow("eca", "ECA", "eca_resnet{depth}", param_expression="k", ksize="3333"),
)

VARIANTS = PaperTable(
    key="variants",
    title="Table 2: channel-attention variants",
    template=_VARIANT_ROWS,
    sections={
        "resnet50": _numbered(_VARIANT_ROWS, {
            key: dict(top1=top1, top5=top5)
            for key, top1, top5 in (
                ("vanilla", 75.20, 92.25),
                ("se", 76.71, 93.38),
                ("se_var1", 76.00, 92.90),
                ("se_var2", 77.07, 93.31),
                ("se_var3", 77.42, 93.64),
                ("se_gc1", 76.95, 93.47),
                ("se_gc2", 76.98, 93.31),
                ("se_gc3", 76.96, 93.38),
                ("eca_ns", 77.35, 93.61),
                ("eca", 77.43, 93.65),
            )
        }),
    },
    notes=(
        "#Param counts one attention module; none of the expressions has a bias.",
        "The ECA row has k = 3 in every block; the ECA-NS row's k is not printed.",
        "Vanilla's Top-5 is 92.25 here and 92.52 in Table 3 (one of them is a typo in the paper).",
    ),
)

# Table 3: the state of the art. A2-Nets, GSoP-Net and AA-Net have no model here.
_SOTA_ROWS = (
    PaperRow("resnet", "ResNet-{depth}", "resnet{depth}"),
    PaperRow("senet", "SENet-{depth}", "se_resnet{depth}"),
    PaperRow("cbam", "CBAM-{depth}", "cbam_resnet{depth}"),
    PaperRow("a2_nets", "A2-Nets-{depth}", None),
    PaperRow("gcnet", "GCNet-{depth}", "gc_resnet{depth}"),
    PaperRow("gsop_net1", "GSoP-Net1-{depth}", None),
    PaperRow("aa_net", "AA-Net-{depth}", None),
    PaperRow("eca_net", "ECA-Net-{depth}", "eca_resnet{depth}"),
)

_MOBILENET_ROWS = (
    PaperRow("mobilenetv2", "MobileNetV2", "mobilenet_v2"),
    PaperRow("se_mobilenetv2", "SE-MobileNetV2", "se_mobilenet_v2"),
    PaperRow("eca_mobilenetv2", "ECA-MobileNetV2", "eca_mobilenet_v2"),
)

_MOBILENET_SECTION = _numbered(_MOBILENET_ROWS, {
    "mobilenetv2": _numbers("3.34M", "319.4M", 711, 2086, 71.64, 90.20),
    "se_mobilenetv2": _numbers("3.40M", "320.1M", 671, 2000, 72.42, 90.67),
    "eca_mobilenetv2": _numbers("3.34M", "319.9M", 676, 2010, 72.56, 90.81),
})

SOTA = PaperTable(
    key="sota",
    title="Table 3: comparison with the state of the art",
    template=_SOTA_ROWS,
    sections={
        "resnet18": _numbered(_SOTA_ROWS, {
            "resnet": _numbers("11.148M", "1.699G", None, None, 70.40, 89.45),
            "senet": _numbers("11.231M", "1.700G", None, None, 70.59, 89.78),
            "eca_net": _numbers("11.148M", "1.700G", None, None, 70.78, 89.92),
        }),
        "resnet34": _numbered(_SOTA_ROWS, {
            "resnet": _numbers("20.788M", "3.427G", None, None, 73.31, 91.40),
            "senet": _numbers("20.938M", "3.428G", None, None, 73.87, 91.65),
            "cbam": _numbers("20.943M", "3.428G", None, None, 74.01, 91.76),
            "eca_net": _numbers("20.788M", "3.428G", None, None, 74.21, 91.83),
        }),
        "resnet50": _numbered(_SOTA_ROWS, {
            "resnet": _numbers("24.37M", "3.86G", 1024, 1855, 75.20, 92.52),
            "senet": _numbers("26.77M", "3.87G", 759, 1620, 76.71, 93.38),
            "cbam": _numbers("26.77M", "3.87G", 472, 1213, 77.34, 93.69),
            "a2_nets": _numbers("33.00M", "6.50G", None, None, 77.00, 93.50),
            "gcnet": _numbers("28.08M", "3.87G", None, None, 77.70, 93.66),
            "gsop_net1": _numbers("28.05M", "6.18G", 596, 1383, 77.68, 93.98),
            "aa_net": _numbers("25.80M", "4.15G", None, None, 77.70, 93.80),
            "eca_net": _numbers("24.37M", "3.86G", 785, 1805, 77.48, 93.68),
        }),
        "resnet101": _numbered(_SOTA_ROWS, {
            "resnet": _numbers("42.49M", "7.34G", 386, 1174, 76.83, 93.48),
            "senet": _numbers("47.01M", "7.35G", 367, 1044, 77.62, 93.93),
            "cbam": _numbers("47.01M", "7.35G", 270, 635, 78.49, 94.31),
            "aa_net": _numbers("45.40M", "8.05G", None, None, 78.70, 94.40),
            "eca_net": _numbers("42.49M", "7.35G", 380, 1089, 78.65, 94.34),
        }),
        "resnet152": _numbered(_SOTA_ROWS, {
            "resnet": _numbers("57.40M", "10.82G", 281, 815, 77.58, 93.66),
            "senet": _numbers("63.68M", "10.85G", 268, 761, 78.43, 94.27),
            "eca_net": _numbers("57.40M", "10.83G", 279, 785, 78.92, 94.55),
        }),
        MOBILENET: _MOBILENET_SECTION,
    },
    notes=(
        "Param. and FLOPs: thop counts in 1024-based units (M = 2^20, G = 2^30); GCNet's 28.08M is its own paper's SI count.",
        "FPS: four RTX 2080Ti GPUs and a Xeon Silver 4112; batch size, precision and GPU count not stated.",
        "The ResNet-18 and ResNet-34 sections are the poster's, not the paper's (three decimals, no FPS).",
    ),
)

# Figure 4: one k in every block of ECA-ResNet, k = 3, 5, 7, 9 and Eq. 12's adaptive k, against SENet.
_KERNEL_SIZE_ROWS = (
    PaperRow("k3", "k = 3", "eca_resnet{depth}", ksize="3333"),
    PaperRow("k5", "k = 5", "eca_resnet{depth}", ksize="5555"),
    PaperRow("k7", "k = 7", "eca_resnet{depth}", ksize="7777"),
    PaperRow("k9", "k = 9", "eca_resnet{depth}", ksize="9999"),
    PaperRow("adaptive", "adaptive k", "eca_resnet{depth}", ksize="adaptive"),
    PaperRow("senet", "SENet-{depth}", "se_resnet{depth}"),
)

KERNEL_SIZE = PaperTable(
    key="kernel-size",
    title="Figure 4: ECA-ResNet with different kernel sizes k",
    template=_KERNEL_SIZE_ROWS,
    sections={
        "resnet50": _KERNEL_SIZE_ROWS,
        "resnet101": _KERNEL_SIZE_ROWS,
    },
    notes=(
        "The figure's values are only in its image (None here). The text says: the best fixed k is 9 at "
        "ResNet-50 and 5 at ResNet-101; the spread is about 0.15% (R-50) and 0.5% (R-101); the adaptive k "
        "usually beats every fixed one; every k beats SENet.",
    ),
)

MOBILENET_TABLE = PaperTable(
    key=MOBILENET,
    title="Table 3, MobileNetV2 rows",
    template=_MOBILENET_ROWS,
    sections={MOBILENET: _MOBILENET_SECTION},
    notes=(
        "SE and ECA sit after each inverted-residual block's projection conv and BN; SE uses r = 8.",
        "All three were trained alike: 400 epochs, SGD 0.9, wd 4e-5, batch 96, lr 0.045 x 0.98 per epoch.",
    ),
    has_depth=False,
)

TABLES: Dict[str, PaperTable] = {table.key: table for table in (VARIANTS, SOTA, KERNEL_SIZE, MOBILENET_TABLE)}


def section_key(depth: Optional[int]) -> str:
    """'resnet50' for depth 50; MobileNetV2's rows (depth None) are the 'mobilenet' section."""
    return MOBILENET if depth is None else f"resnet{depth}"


def table_rows(table: PaperTable, depth: Optional[int]) -> Tuple[PaperRow, ...]:
    """The table's rows at ``depth``: the paper's numbers where it printed that depth, else every row, numbers None."""
    if not table.has_depth:
        depth = None
    return table.sections.get(section_key(depth), table.template)


def model_name(row: PaperRow, depth: Optional[int]) -> str:
    """The registered name of the row's model at ``depth`` (whether or not it is registered yet)."""
    if row.model is None:
        raise ValueError(f"row {row.key}: the paper's numbers are copied from its peers; there is no model for it here")
    if depth is None and "{depth}" in row.model:
        raise ValueError(f"row {row.key}: model {row.model} needs a ResNet depth")
    return row.model.format(depth=depth)


def registered_model_name(row: PaperRow, depth: Optional[int]) -> str:
    """:func:`model_name`, or a ValueError that says in one line that it is not registered."""
    name = model_name(row, depth)
    if name not in models.list_models():
        raise ValueError(f"row {row.key}: model {name} is not registered")
    return name


@dataclass(frozen=True)
class DetectionRow:
    """One row of Table 5 (COCO val2017): the registered detector it is here and what the paper printed."""

    backbone: str
    """The row as printed: ``ResNet-50``, ``+ SE``, ``+ ECA``."""
    detector: str
    """``Faster R-CNN``, ``Mask R-CNN`` or ``RetinaNet``."""
    model: str
    """The registered detector (``models.detection``)."""
    ksize: Optional[str] = None
    """The per-stage k of the released file (None: no ECA layers)."""
    params: Optional[str] = None
    """Param. as printed, in SI units (``41.53M``); None where not known here."""
    flops: Optional[str] = None
    """GFLOPs as printed, with the unit (``207.07G``)."""
    box_ap: Tuple[Optional[float], ...] = ()
    """AP, AP50, AP75, AP_S, AP_M, AP_L of the boxes; None where the paper prints '-'."""
    mask_ap: Tuple[Optional[float], ...] = ()
    """The same for the masks (Mask R-CNN rows only)."""
    copied_from: Optional[str] = None
    """The paper whose numbers the row copied (``GCNet``: its ablation on COCO, counted its own way); None
    for the ECA-Net paper's own counts."""


def _detection(backbone: str, detector: str, model: str, ksize: Optional[str], params: Optional[str], flops: Optional[str],
               box_ap: Tuple[Optional[float], ...], mask_ap: Tuple[Optional[float], ...] = (),
               copied_from: Optional[str] = None) -> DetectionRow:
    return DetectionRow(backbone, detector, model, ksize, params, flops, box_ap, mask_ap, copied_from)


_NOT_PRINTED = (None, None, None)
"""AP_S, AP_M and AP_L of the rows copied from GCNet's paper, which does not give them."""


DETECTION: Tuple[DetectionRow, ...] = (
    _detection("ResNet-50", "Faster R-CNN", "fasterrcnn_resnet50_fpn", None, "41.53M", "207.07G", (36.4, 58.2, 39.2, 21.8, 40.0, 46.2)),
    _detection("+ SE", "Faster R-CNN", "fasterrcnn_se_resnet50_fpn", None, "44.02M", "207.18G", (37.7, 60.1, 40.9, 22.9, 41.9, 48.2)),
    _detection("+ ECA", "Faster R-CNN", "fasterrcnn_eca_resnet50_fpn", "5555", "41.53M", "207.18G", (38.0, 60.6, 40.9, 23.4, 42.1, 48.0)),
    _detection("ResNet-101", "Faster R-CNN", "fasterrcnn_resnet101_fpn", None, "60.52M", "283.14G", (38.7, 60.6, 41.9, 22.7, 43.2, 50.4)),
    _detection("+ SE", "Faster R-CNN", "fasterrcnn_se_resnet101_fpn", None, "65.24M", "283.33G", (39.6, 62.0, 43.1, 23.7, 44.0, 51.4)),
    _detection("+ ECA", "Faster R-CNN", "fasterrcnn_eca_resnet101_fpn", "3357", "60.52M", "283.32G", (40.3, 62.9, 44.0, 24.5, 44.7, 51.3)),
    _detection("ResNet-50", "Mask R-CNN", "maskrcnn_resnet50_fpn", None, "44.18M", "275.58G", (37.2, 58.9, 40.3, 22.2, 40.7, 48.0),
               (34.1, 55.5, 36.2, 16.1, 36.7, 50.0)),
    _detection("+ SE", "Mask R-CNN", "maskrcnn_se_resnet50_fpn", None, "46.67M", "275.69G", (38.7, 60.9, 42.1, 23.4, 42.7, 50.0),
               (35.4, 57.4, 37.8, 17.1, 38.6, 51.8)),
    _detection("+ 1 NL", "Mask R-CNN", "maskrcnn_nl_resnet50_fpn", None, "46.50M", "288.70G", (38.0, 59.8, 41.0, *_NOT_PRINTED),
               (34.7, 56.7, 36.6, *_NOT_PRINTED), copied_from="GCNet"),
    _detection("+ GC block", "Mask R-CNN", "maskrcnn_gc_resnet50_fpn", None, "46.90M", "279.60G", (39.4, 61.6, 42.4, *_NOT_PRINTED),
               (35.7, 58.4, 37.6, *_NOT_PRINTED), copied_from="GCNet"),
    _detection("+ ECA", "Mask R-CNN", "maskrcnn_eca_resnet50_fpn", "3377", "44.18M", "275.69G", (39.0, 61.3, 42.1, 24.2, 42.8, 49.9),
               (35.6, 58.1, 37.7, 17.6, 39.0, 51.8)),
    _detection("ResNet-101", "Mask R-CNN", "maskrcnn_resnet101_fpn", None, "63.17M", "351.65G", (39.4, 60.9, 43.3, 23.0, 43.7, 51.4),
               (35.9, 57.7, 38.4, 16.8, 39.1, 53.6)),
    _detection("+ SE", "Mask R-CNN", "maskrcnn_se_resnet101_fpn", None, "67.89M", "351.84G", (40.7, 62.5, 44.3, 23.9, 45.2, 52.8),
               (36.8, 59.3, 39.2, 17.2, 40.3, 53.6)),
    _detection("+ ECA", "Mask R-CNN", "maskrcnn_eca_resnet101_fpn", "3357", "63.17M", "351.83G", (41.3, 63.1, 44.8, 25.1, 45.8, 52.9),
               (37.4, 59.9, 39.8, 18.1, 41.1, 54.1)),
    _detection("ResNet-50", "RetinaNet", "retinanet_resnet50_fpn", None, "37.74M", "239.32G", (35.6, 55.5, 38.2, 20.0, 39.6, 46.8)),
    _detection("+ SE", "RetinaNet", "retinanet_se_resnet50_fpn", None, "40.23M", "239.43G", (37.1, 57.2, 39.9, 21.2, 40.7, 49.3)),
    _detection("+ ECA", "RetinaNet", "retinanet_eca_resnet50_fpn", "3377", "37.74M", "239.43G", (37.3, 57.7, 39.6, 21.9, 41.3, 48.9)),
    _detection("ResNet-101", "RetinaNet", "retinanet_resnet101_fpn", None, "56.74M", "315.39G", (37.7, 57.5, 40.4, 21.1, 42.2, 49.5)),
    _detection("+ SE", "RetinaNet", "retinanet_se_resnet101_fpn", None, "61.45M", "315.58G", (38.7, 59.1, 41.6, 22.1, 43.1, 50.9)),
    _detection("+ ECA", "RetinaNet", "retinanet_eca_resnet101_fpn", "3357", "56.74M", "315.57G", (39.1, 59.9, 41.8, 22.8, 43.4, 50.6)),
)
"""Table 5 (object detection and, for Mask R-CNN, instance segmentation on COCO val2017), in the
paper's order; k as the released files have it. The "+ 1 NL" and "+ GC block" rows are GCNet's
paper's (its ablation on COCO: 46.5M / 288.7G, 46.9M / 279.6G with one decimal, to which the ECA-Net
paper added a 0)."""

DETECTION_NOTES: Tuple[str, ...] = (
    "Param. counts trainable parameters (the frozen stem and layer1 left out) and FLOPs the multiply-accumulates "
    "of one 1x3x1280x800 image, as MMDetection v1's tools/get_flops.py, in SI units with two decimals.",
    "The + 1 NL and + GC block rows are copied from GCNet's paper (its ablation on COCO), which counts every parameter, the "
    "frozen ones too, and prints one decimal (46.5M, 46.9M; the ECA-Net paper added a 0). Its FLOPs fit no rule found "
    "here: its own plain R-50 Mask R-CNN has 279.4G where MMDetection v1's counter gives 275.58G, and no one input "
    "size gives its baseline, + 1 NL and + GC block together.",
)
"""What Table 5's numbers count, row by row."""

"""The detectors' parameters and FLOPs against the paper's detection table (MMDetection v1's counts)."""

import functools

import pytest
import torch
from helpers import exit_status
from torchvision.ops import MultiScaleRoIAlign

from models.detection import create_detector
from paramflops import main
from utils.detection.complexity import measure_detector, paper_si_units, shapes_only
from utils.paper.count_tables import count_detector, table_5

DETECTION_TABLE = [
    # arch, k, Param., FLOPs as the original README prints them; the exact integers of the
    # spec (Mask R-CNN and RetinaNet ECA-50, Faster R-CNN R-50) and, for the other rows,
    # the counts that round to the table's.
    ("fasterrcnn_eca_resnet50_fpn", "5555", "41.53M", "207.18G", 41_531_877, 207_181_949_620),
    ("fasterrcnn_eca_resnet101_fpn", "3357", "60.52M", "283.32G", 60_524_088, 283_324_635_316),
    ("maskrcnn_eca_resnet50_fpn", "3377", "44.18M", "275.69G", 44_175_424, 275_688_594_164),
    ("maskrcnn_eca_resnet101_fpn", "3357", "63.17M", "351.83G", 63_167_625, 351_831_260_916),
    ("retinanet_eca_resnet50_fpn", "3377", "37.74M", "239.43G", 37_743_423, 239_429_234_984),
    ("retinanet_eca_resnet101_fpn", "3357", "56.74M", "315.57G", 56_735_624, 315_571_901_736),
    ("fasterrcnn_resnet50_fpn", None, "41.53M", "207.07G", 41_531_812, 207_069_234_100),
]

# Output sides of ResNet stages 1..4 for a 1280 x 800 input (strides 4, 8, 16, 32), and block counts of ResNet-50.
STAGE_SHAPES = [(256, 320, 200), (512, 160, 100), (1024, 80, 50), (2048, 40, 25)]
RESNET50_BLOCKS = [3, 4, 6, 3]


@functools.lru_cache(maxsize=None)
def counted(arch, k=None):
    return count_detector(arch, k)


@pytest.mark.parametrize(
    "arch, k, params, flops, exact_params, exact_flops", DETECTION_TABLE, ids=[row[0] for row in DETECTION_TABLE]
)
def test_detection_table(arch, k, params, flops, exact_params, exact_flops):
    detector = counted(arch, k)
    assert detector.k == (k or "-")
    assert paper_si_units(detector.counts.trainable_params, "M") == params
    assert paper_si_units(detector.counts.flops, "G") == flops
    assert (detector.counts.trainable_params, detector.counts.flops) == (exact_params, exact_flops)


def test_eca_adds_its_pooling_and_taps_and_nothing_else():
    # ECA-50 k5555 over ResNet-50, Faster R-CNN: per block, a C x H x W average pooling and
    # a 5-tap Conv1d over C channels; its fused ReLU counts as the plain block's ReLU.
    pooling = sum(blocks * c * h * w for blocks, (c, h, w) in zip(RESNET50_BLOCKS, STAGE_SHAPES))
    taps = sum(blocks * 5 * c for blocks, (c, _, _) in zip(RESNET50_BLOCKS, STAGE_SHAPES))
    eca, plain = counted("fasterrcnn_eca_resnet50_fpn", "5555"), counted("fasterrcnn_resnet50_fpn")
    assert eca.counts.flops - plain.counts.flops == pooling + taps == 112_715_520
    # layer1 is frozen with its ECA taps; layers 2..4 train theirs.
    assert eca.counts.trainable_params - plain.counts.trainable_params == 5 * sum(RESNET50_BLOCKS[1:])


def test_mask_head_counts_its_transposed_convolution_as_a_convolution():
    # 100 RoIs of 256 x 14 x 14: four 3x3 convs with bias and ReLU modules, a 2x2 stride-2
    # ConvTranspose2d counted over its 28 x 28 output positions, a ReLU, 1x1 logits to 81.
    convs = 4 * (256 * 256 * 9 + 256) * 14 * 14 + 4 * 256 * 14 * 14
    upsample = (256 * 256 * 4 + 256) * 28 * 28 + 256 * 28 * 28
    logits = (256 * 81 + 81) * 28 * 28
    mask, boxes_only = counted("maskrcnn_eca_resnet50_fpn", "3377"), counted("fasterrcnn_eca_resnet50_fpn", "3377")
    assert mask.counts.flops - boxes_only.counts.flops == 100 * (convs + upsample + logits) == 68_506_625_600


def small_mask_rcnn():
    # RoIAlign to 1 x 1, so that the dummy forward's 1,000 RoIs are cheap to run for real.
    levels = ["0", "1", "2", "3"]
    return create_detector(
        "maskrcnn_eca_resnet18_fpn",
        num_classes=5,
        box_roi_pool=MultiScaleRoIAlign(levels, 1, 2),
        mask_roi_pool=MultiScaleRoIAlign(levels, 1, 2),
    )


def test_counting_real_weights_gives_the_same_and_leaves_the_detector_as_it_was():
    detector = small_mask_rcnn()
    detector.train()
    modes = {name: module.training for name, module in detector.named_modules()}
    assert not all(modes.values())  # BatchNorm stays in eval mode while the detector trains
    state = {key: value.clone() for key, value in detector.state_dict().items()}
    real = measure_detector(detector, 96, 64)
    with shapes_only():
        shapes = measure_detector(small_mask_rcnn(), 96, 64)
    assert real == shapes
    assert real.trainable_params < real.params
    assert {name: module.training for name, module in detector.named_modules()} == modes
    assert detector.state_dict().keys() == state.keys()
    assert all(torch.equal(value, state[key]) for key, value in detector.state_dict().items())
    assert not any(module._forward_hooks for module in detector.modules())


def test_cli_prints_the_tables_numbers_with_exact_integers(capsys):
    main(["-a", "maskrcnn_eca_resnet50_fpn"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "maskrcnn_eca_resnet50_fpn  k=3377  input 1x3x1280x800  81 classes with background"
    assert lines[2].split() == ["Params,", "trainable", "44.18M", "44,175,424"]
    assert lines[3].split() == ["FLOPs,", "MMDetection", "v1", "275.69G", "275,688,594,164"]
    assert lines[-1] == "Attention: 84 parameters in 16 EfficientChannelAttention layers"


@pytest.mark.parametrize(
    "args, message",
    [
        (["-a", "maskrcnn_eca_resnet50_fpn", "--input-size", "32"], "detectors are counted at 1x3x1280x800"),
        (["-a", "retinanet_eca_resnet50_fpn", "--ksize", "3356"], "every k must be a positive odd integer"),
    ],
    ids=["input-size", "even-k"],
)
def test_cli_bad_detector_input_is_one_line_and_status_2(args, message, capsys):
    """argparse's refusals exit; a k the detector does not take returns: both status 2, one line."""
    status = exit_status(main, args)
    assert status == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert len(output.err.splitlines()) == 1 and message in output.err


@pytest.fixture(scope="module")
def table5_rows():
    """``paramflops.py --table 5``'s rows as cells, by detector."""
    lines = table_5()
    cells = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ") and "---" not in line][1:]
    return {row[0]: row for row in cells}


def test_table5_has_every_number_and_each_fits_its_rule(table5_rows):
    """Every printed number is known; every Param. and every FLOPs of the ECA-Net paper's own rows is
    equal as printed, each counted as MMDetection v1's get_flops.py; the two rows copied from GCNet's
    paper are all parameters at its one decimal, and their FLOPs fit no rule (printed as computed)."""
    assert len(table5_rows) == 20 and not any("?" in row for row in table5_rows.values())
    copied = {"maskrcnn_nl_resnet50_fpn", "maskrcnn_gc_resnet50_fpn"}
    for arch, row in table5_rows.items():
        params_mark, flops_mark, rule = row[5], row[7], row[10]
        assert params_mark == "=", arch
        assert (flops_mark, rule) == (("≠", "all, 1 decimal (GCNet)") if arch in copied else ("=", "trainable")), arch
    gc, nl = table5_rows["maskrcnn_gc_resnet50_fpn"], table5_rows["maskrcnn_nl_resnet50_fpn"]
    assert gc[2:10] == ["46.90M", "279.60G", "46.9M", "=", "275.64G", "≠", "46,922,434", "275,641,945,196"]
    assert nl[2:10] == ["46.50M", "288.70G", "46.5M", "=", "283.98G", "≠", "46,501,429", "283,978,803,700"]


def test_gc_blocks_add_their_convolutions_and_relu_in_mmdetection_v1s_counts():
    """Per block of layer2..4 (C channels, P = C / 16, H x W positions at stride 8, 16, 32): conv_mask
    (C + 1) HW; the transform on the 1 x 1 context, C P + P, P for the ReLU module, P C + C; the
    LayerNorm, the softmax pooling and the addition count nothing in v1's counter."""
    stages = [(512, 4, 160 * 100), (1024, 6, 80 * 50), (2048, 3, 40 * 25)]
    per_block = [(c + 1) * hw + (c * (c // 16) + c // 16) + c // 16 + (c // 16 * c + c) for c, _, hw in stages]
    flops = sum(blocks * count for (_, blocks, _), count in zip(stages, per_block))
    gc, plain = counted("maskrcnn_gc_resnet50_fpn"), counted("maskrcnn_resnet50_fpn")
    assert gc.counts.flops - plain.counts.flops == flops == 66_085_496
    block_params = [2 * c * (c // 16) + 2 * c + 1 + 3 * (c // 16) for c, _, _ in stages]
    added = sum(blocks * count for (_, blocks, _), count in zip(stages, block_params))
    assert gc.counts.params - plain.counts.params == gc.counts.trainable_params - plain.counts.trainable_params == added == 2_521_741
    assert plain.counts.params == 44_400_693  # GCNet's own 44.4M for its plain R-50 Mask R-CNN: every parameter

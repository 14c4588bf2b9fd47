"""Detection checkpoint files: the paper's MMDetection v1 releases (written here in exactly
their format), detect.py's own files, ImageNet checkpoints as backbone starts, and the one
line every other file gets."""

import json
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import models
from models.detection import COCO_CLASSES, create_detector
from models.detection.layout import infer_detector, mmdet_v1_to_torchvision
from utils.checkpoint import CheckpointError, CheckpointWarning, save_checkpoint
from utils.detection.checkpoint import classification_arch_and_k, load_backbone_weights, load_detector

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = {"min_size": 64, "max_size": 96}
V1_CLASSES = tuple(name.replace(" ", "_") for name in COCO_CLASSES)
"""MMDetection v1's CocoDataset.CLASSES, as written into every released file's meta."""

SPEC_RENAMES = [
    (r"^backbone\.", "backbone.body."),
    (r"^neck\.lateral_convs\.(\d)\.conv\.", r"backbone.fpn.inner_blocks.\1.0."),
    (r"^rpn_head\.rpn_conv\.", "rpn.head.conv.0.0."),
    (r"^rpn_head\.rpn_cls\.", "rpn.head.cls_logits."),
    (r"^rpn_head\.rpn_reg\.", "rpn.head.bbox_pred."),
    (r"^bbox_head\.shared_fcs\.0\.", "roi_heads.box_head.fc6."),
    (r"^bbox_head\.shared_fcs\.1\.", "roi_heads.box_head.fc7."),
    (r"^bbox_head\.fc_cls\.", "roi_heads.box_predictor.cls_score."),
    (r"^bbox_head\.fc_reg\.", "roi_heads.box_predictor.bbox_pred."),
    (r"^mask_head\.convs\.(\d)\.conv\.", r"roi_heads.mask_head.\1.0."),
    (r"^mask_head\.upsample\.", "roi_heads.mask_predictor.conv5_mask."),
    (r"^mask_head\.conv_logits\.", "roi_heads.mask_predictor.mask_fcn_logits."),
    (r"^bbox_head\.cls_convs\.(\d)\.conv\.", r"head.classification_head.conv.\1.0."),
    (r"^bbox_head\.reg_convs\.(\d)\.conv\.", r"head.regression_head.conv.\1.0."),
    (r"^bbox_head\.retina_cls\.", "head.classification_head.cls_logits."),
    (r"^bbox_head\.retina_reg\.", "head.regression_head.bbox_reg."),
]
"""The spec's key correspondence, written out independently of the loader's."""


def spec_key(key: str, retinanet: bool) -> str:
    fpn_conv = re.match(r"^neck\.fpn_convs\.(\d)\.conv\.(.*)$", key)
    if fpn_conv:
        index, rest = int(fpn_conv.group(1)), fpn_conv.group(2)
        outputs = 3 if retinanet else 4
        return (
            f"backbone.fpn.layer_blocks.{index}.0.{rest}" if index < outputs else f"backbone.fpn.extra_blocks.p{6 + index - outputs}.{rest}"
        )
    for pattern, replacement in SPEC_RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise AssertionError(f"the spec does not map {key}")


@pytest.fixture(scope="module")
def manifest():
    return json.loads((FIXTURES / "mmdet_v1_manifest.json").read_text())


def marked_state_dict(layout):
    """Every tensor filled with its own index in the layout, so where it lands tells which key it was."""
    state = OrderedDict()
    for index, (key, shape) in enumerate(layout):
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        state[key] = torch.full(shape, index, dtype=dtype)
    return state


def write_mmdet_v1(path: Path, layout, detector: str, optimizer: bool = True) -> OrderedDict:
    """A file in the released files' format: mmcv's dict, legacy serialization as torch 1.x wrote it."""
    state = marked_state_dict(layout)
    checkpoint = {
        "meta": {
            "mmdet_version": "1.0rc0+d3ca926",
            "config": f"model = dict(\n    type='{detector}',\n    pretrained=None,\n    backbone=dict(type='ECAResNet', depth=50))\n",
            "CLASSES": V1_CLASSES,
            "epoch": 12,
            "iter": 87960,
            "mmcv_version": "0.2.14",
            "time": "Fri Nov 22 03:14:15 2019",
        },
        "state_dict": state,
    }
    if optimizer:
        checkpoint["optimizer"] = {"state": {}, "param_groups": [{"lr": 0.0001, "momentum": 0.9, "weight_decay": 0.0001, "params": [0, 1]}]}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return state


@pytest.mark.parametrize(
    "entry, arch, num_classes",
    [
        ("mask_rcnn_ecanet50_k3377_bs8_lr0.01", "maskrcnn_eca_resnet50_fpn", 81),
        ("RetinaNet_ecanet50_k3377_bs8_lr0.01", "retinanet_eca_resnet50_fpn", 80),
    ],
)
def test_released_layouts_load_strictly_key_for_key(tmp_path, manifest, entry, arch, num_classes):
    layout = manifest["models"][entry]["state_dict"]
    path = tmp_path / f"{entry}.pth"
    written = write_mmdet_v1(path, layout, manifest["models"][entry]["detector"])
    model, info = load_detector(path)
    assert (info["arch"], info["format"], info["epoch"]) == (arch, "mmdet_v1", 12)
    assert info["kwargs"] == {"num_classes": num_classes, "k_size": "3377"}
    assert info["classes"] == list(COCO_CLASSES)
    loaded = model.state_dict()
    assert len(loaded) == len(layout)
    retinanet = arch.startswith("retinanet")
    for key, shape in layout:
        tensor = loaded[spec_key(key, retinanet)]
        assert list(tensor.shape) == shape and torch.equal(tensor, written[key]), key
    assert int(loaded["backbone.body.layer4.2.eca.conv.weight"].flatten()[0]) == next(
        i for i, (key, _) in enumerate(layout) if key == "backbone.layer4.2.eca.conv.weight"
    )


def _derived_layout(mask_layout, detector: str, depth: int, k: str):
    """The other released layouts by the spec's rules: Faster R-CNN is Mask R-CNN without
    mask_head; ECA-101 has 23 blocks in layer3; the ECA weights' last dimension is the stage's k."""
    layout = []
    for key, shape in mask_layout:
        if detector == "FasterRCNN" and key.startswith("mask_head."):
            continue
        layout.append((key, list(shape)))
    if depth == 101:
        block = [(key, shape) for key, shape in layout if key.startswith("backbone.layer3.1.")]
        end = max(i for i, (key, _) in enumerate(layout) if key.startswith("backbone.layer3."))
        extra = [(key.replace("layer3.1.", f"layer3.{b}."), shape) for b in range(6, 23) for key, shape in block]
        layout = layout[: end + 1] + extra + layout[end + 1 :]
    for key, shape in layout:
        stage = re.match(r"^backbone\.layer(\d)\..*\.eca\.conv\.weight$", key)
        if stage:
            shape[-1] = int(k[int(stage.group(1)) - 1])
    return layout


@pytest.mark.parametrize(
    "detector, depth, k, arch",
    [
        ("FasterRCNN", 50, "5555", "fasterrcnn_eca_resnet50_fpn"),  # "k5": read from the shapes
        ("FasterRCNN", 50, "3557", "fasterrcnn_eca_resnet50_fpn"),
        ("FasterRCNN", 101, "3357", "fasterrcnn_eca_resnet101_fpn"),
        ("MaskRCNN", 101, "3357", "maskrcnn_eca_resnet101_fpn"),
    ],
)
def test_the_other_released_layouts_are_recognised_and_fit(manifest, detector, depth, k, arch):
    layout = _derived_layout(manifest["models"]["mask_rcnn_ecanet50_k3377_bs8_lr0.01"]["state_dict"], detector, depth, k)
    state = mmdet_v1_to_torchvision(OrderedDict((key, torch.empty(shape, device="meta")) for key, shape in layout))
    assert infer_detector(state) == (arch, {"num_classes": 81, "k_size": k})
    with torch.device("meta"):
        own = create_detector(arch, k_size=k).state_dict()
    assert {key: list(value.shape) for key, value in own.items()} == {key: list(value.shape) for key, value in state.items()}


def test_retinanet101_layout_is_recognised(manifest):
    mask_layout = manifest["models"]["mask_rcnn_ecanet50_k3377_bs8_lr0.01"]["state_dict"]
    retina_layout = manifest["models"]["RetinaNet_ecanet50_k3377_bs8_lr0.01"]["state_dict"]
    backbone_101 = [(k, s) for k, s in _derived_layout(mask_layout, "MaskRCNN", 101, "3357") if k.startswith("backbone.")]
    layout = backbone_101 + [(k, s) for k, s in retina_layout if not k.startswith("backbone.")]
    state = mmdet_v1_to_torchvision(OrderedDict((key, torch.empty(shape, device="meta")) for key, shape in layout))
    assert infer_detector(state) == ("retinanet_eca_resnet101_fpn", {"num_classes": 80, "k_size": "3357"})
    with torch.device("meta"):
        own = create_detector("retinanet_eca_resnet101_fpn").state_dict()
    assert {key: list(value.shape) for key, value in own.items()} == {key: list(value.shape) for key, value in state.items()}


@pytest.fixture(scope="module")
def project_file(tmp_path_factory):
    """A detect.py checkpoint of a small Mask R-CNN with 3 classes (labels 1..3)."""
    torch.manual_seed(0)
    model = create_detector("maskrcnn_eca_resnet18_fpn", num_classes=4, **TINY)
    path = tmp_path_factory.mktemp("project") / "checkpoint.pth.tar"
    save_checkpoint(
        {
            "epoch": 2,
            "arch": "maskrcnn_eca_resnet18_fpn",
            "state_dict": model.state_dict(),
            "classes": ["circle", "square", "star"],
            "detector_kwargs": TINY,
        },
        path,
    )
    return path, model


def test_project_checkpoints_round_trip(project_file):
    path, original = project_file
    model, info = load_detector(path)
    assert (info["arch"], info["format"], info["epoch"], info["classes"]) == (
        "maskrcnn_eca_resnet18_fpn",
        "project",
        2,
        ["circle", "square", "star"],
    )
    assert info["kwargs"] == {"num_classes": 4, "k_size": "3577", **TINY}
    for key, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    image = torch.rand(3, 60, 80)
    original.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(original.backbone(image[None])["pool"], model.backbone(image[None])["pool"])


def test_explicit_choices_must_agree_with_the_file(project_file):
    path, _ = project_file
    with pytest.raises(
        CheckpointError, match=r"holds maskrcnn_eca_resnet18_fpn weights, not fasterrcnn_eca_resnet18_fpn; use -a maskrcnn_eca_resnet18_fpn"
    ):
        load_detector(path, arch="fasterrcnn_eca_resnet18_fpn")
    with pytest.raises(CheckpointError, match=r"has k=3577 where --ksize gives k=3333; use --ksize 3577"):
        load_detector(path, k_size="3333")
    model, _ = load_detector(path, arch="maskrcnn_eca_resnet18_fpn", k_size=[3, 5, 7, 7])
    with pytest.warns(CheckpointWarning, match="has 4 classes; with 6"):
        model, info = load_detector(path, num_classes=6)
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 6


class Payload:
    """Any object that is not a tensor or a plain container: loading it would mean running code."""


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_refusals_are_one_line(tmp_path, project_file):
    classifier = tmp_path / "eca_resnet18.pth.tar"
    save_checkpoint({"arch": "eca_resnet18", "epoch": 5, "state_dict": models.eca_resnet18(num_classes=10).state_dict()}, classifier)
    with pytest.raises(CheckpointError) as error:
        load_detector(classifier)
    assert (
        "holds an ImageNet classification model (eca_resnet18), not a detector; start a detector's backbone from it with --backbone-weights"
        in _one_line(error)
    )

    newer = tmp_path / "mask_rcnn_r50_fpn_v2.pth"
    torch.save(
        {"meta": {"mmdet_version": "2.25.0"}, "state_dict": OrderedDict([
            ("backbone.conv1.weight", torch.zeros(64, 3, 7, 7)),
            ("neck.lateral_convs.0.conv.weight", torch.zeros(256, 256, 1, 1)),
            ("rpn_head.rpn_conv.weight", torch.zeros(256, 256, 3, 3)),
            ("roi_head.bbox_head.fc_cls.weight", torch.zeros(81, 1024)),
        ])},
        newer,
    )
    with pytest.raises(CheckpointError) as error:
        load_detector(newer)
    assert "a newer MMDetection (v2 or later) detector: its heads are under roi_head.*" in _one_line(error)

    unknown = tmp_path / "unknown.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, unknown)
    with pytest.raises(CheckpointError) as error:
        load_detector(unknown)
    assert "holds no detector this project knows (1 tensors, first 'encoder.weight')" in _one_line(error)

    path, original = project_file
    broken_depth = {k: v for k, v in original.state_dict().items() if not k.startswith("backbone.body.layer3.1.")}
    broken = tmp_path / "broken_depth.pth.tar"
    save_checkpoint({"state_dict": broken_depth}, broken)
    with pytest.raises(CheckpointError) as error:
        load_detector(broken)
    assert "fits no detector: its backbone has (2, 2, 1, 2) blocks per stage, which is no ResNet's" in _one_line(error)

    missing_one = {k: v for k, v in original.state_dict().items() if k != "roi_heads.box_head.fc7.bias"}
    truncated = tmp_path / "missing_one.pth.tar"
    save_checkpoint({"state_dict": missing_one}, truncated)
    with pytest.raises(CheckpointError) as error:
        load_detector(truncated)
    assert "does not fit maskrcnn_eca_resnet18_fpn: 1 missing (first 'roi_heads.box_head.fc7.bias')" in _one_line(error)

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}, "meta": Payload()}, unsafe)
    with pytest.raises(CheckpointError) as error:
        load_detector(unsafe)
    assert "refusing to load" in _one_line(error)


def test_backbone_weights_from_an_imagenet_checkpoint(tmp_path, project_file):
    torch.manual_seed(1)
    classifier = models.eca_resnet18()
    path = tmp_path / "eca_resnet18_k3577.pth.tar"
    save_checkpoint({"arch": "eca_resnet18", "epoch": 100, "state_dict": classifier.state_dict()}, path)
    assert classification_arch_and_k(path) == ("eca_resnet18", "3577")

    detector = create_detector("maskrcnn_eca_resnet18_fpn", num_classes=3, **TINY)
    line = load_backbone_weights(detector, path)
    body_tensors = len(classifier.state_dict()) - 2  # all but fc.weight and fc.bias
    assert line == f"=> backbone from {path}: eca_resnet18, {body_tensors} tensors (its classifier left out)"
    body = detector.backbone.body.state_dict()
    for key, value in classifier.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(body[key], value), key

    other_k = create_detector("retinanet_eca_resnet18_fpn", k_size="3333", **TINY)
    initial = other_k.backbone.body.layer2[0].eca.conv.weight.clone()
    line = load_backbone_weights(other_k, path)
    assert (
        "its ECA k 3577 differs from the detector's 3333: 6 ECA layers stay as initialised (build with k_size 3577 to load them all)"
        in line
    )
    assert torch.equal(other_k.backbone.body.layer2[0].eca.conv.weight, initial)
    assert torch.equal(other_k.backbone.body.layer1[0].eca.conv.weight, classifier.layer1[0].eca.conv.weight)
    assert torch.equal(other_k.backbone.body.layer3[1].conv2.weight, classifier.layer3[1].conv2.weight)

    plain = tmp_path / "resnet18.pth.tar"
    save_checkpoint({"arch": "resnet18", "state_dict": models.resnet18().state_dict()}, plain)
    with pytest.raises(CheckpointError) as error:
        load_backbone_weights(detector, plain)
    assert "holds resnet18 weights but the detector's backbone is eca_resnet18; no registered detector has that backbone" in _one_line(
        error
    )

    with pytest.raises(CheckpointError) as error:
        load_backbone_weights(detector, project_file[0])
    assert "holds a detector, not an ImageNet classification model" in _one_line(error)
    with pytest.raises(CheckpointError) as error:
        classification_arch_and_k(project_file[0])
    assert "holds no ImageNet classification model" in _one_line(error)

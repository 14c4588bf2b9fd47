"""GCNet as released: its MMDetection v1 Mask R-CNN files (written in the released layout by
tests/fixtures/peers/make_checkpoint.py) load as gc_resnet50's backbone through load_model and as
maskrcnn_gc_resnet50_fpn through detect.py's loader, with no flag and no edit to a tensor, and
compute what GCNet's own code computes (the per-channel means of C2..C5 in float64, within
1e-6); GC's ratio is read from the shapes, in GCNet's r4 files and this project's own alike."""

import copy
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from coco_sets import write_coco_set
from helpers import PEERS, peer_checkpoint_writer, run_script

import models
from models import layout
from models.detection import COCO_CLASSES, create_detector
from models.detection.layout import adapt_detector_state_dict, infer_detector, mmdet_v1_to_torchvision
from utils.checkpoint import CheckpointError, CheckpointWarning, extract_state_dict, load_checkpoint_file, load_model, save_checkpoint
from utils.detection.checkpoint import load_backbone_weights, load_detector

ENTRY = "gcnet_mmdet_r50_gc_r16_c3c5_backbone"
PEER_TOLERANCE = 1e-6
STAGES = ("c2_mean", "c3_mean", "c4_mean", "c5_mean")

make_checkpoint = peer_checkpoint_writer()
FIXTURE = json.loads((PEERS / f"{ENTRY}.json").read_text())


def with_ratio_four(fixture: dict) -> dict:
    """The fixture's layout with GCNet's r4 configs' blocks: the hidden width is C / 4, not C / 16."""
    r4 = copy.deepcopy(fixture)
    for entry in r4["manifest"]:
        key, shape = entry
        if ".context_block.channel_add_conv." in key:
            channels = 512 * 2 ** (int(key.split(".")[1][-1]) - 2)
            entry[1] = [channels // 4 if size == channels // 16 else size for size in shape]
    return r4


@pytest.fixture(scope="module")
def gcnet_files(tmp_path_factory) -> dict:
    """GCNet's released Mask R-CNN file (r16) and its backbone keys alone."""
    root = tmp_path_factory.mktemp("gcnet")
    files = {name: root / f"{name}.pth" for name in ("detector", "backbone")}
    make_checkpoint.write(FIXTURE, files["detector"])
    make_checkpoint.write(FIXTURE, files["backbone"], backbone_only=True)
    return files


def stage_means(stages) -> list:
    """Each stage output's mean over the batch and positions, per channel, for the fixture's input."""
    return [output.mean(dim=(0, 2, 3)) for output in stages]


def assert_gcnets_means(outputs) -> None:
    for name, means in zip(STAGES, stage_means(outputs)):
        torch.testing.assert_close(means, torch.tensor(FIXTURE["outputs"][name], dtype=torch.float64), rtol=0, atol=PEER_TOLERANCE)


def file_backbone(path: Path) -> dict:
    return {key: value for key, value in extract_state_dict(load_checkpoint_file(path)).items() if key.startswith("backbone.")}


def test_the_backbone_loads_through_load_model_and_computes_what_gcnet_does(gcnet_files):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, info = load_model(gcnet_files["backbone"], features_only=True, out_indices=(1, 2, 3, 4))
    assert (info["arch"], info["kwargs"], info["source"]) == ("gc_resnet50", {}, "GCNet MMDetection")
    assert [str(warning.message) for warning in caught] == [f"{gcnet_files['backbone']}: features only, the classifier 'fc' is left out"]
    with torch.no_grad():
        assert_gcnets_means(model.double().eval()(make_checkpoint.make_input(224)))


def test_a_whole_detector_file_is_read_for_its_backbone_unedited(gcnet_files):
    with pytest.warns(CheckpointWarning, match="holds gc_resnet50's backbone without a classifier: 'fc' stays as initialised"):
        model, info = load_model(gcnet_files["detector"])
    assert info["arch"] == "gc_resnet50" and isinstance(model, models.ResNet)
    own = model.state_dict()
    written = file_backbone(gcnet_files["detector"])
    assert len(written) == len(own) - 2  # all but fc.weight, fc.bias
    for key, value in written.items():
        assert torch.equal(own[key[len("backbone.") :].replace(".context_block.", ".gc.")], value), key


def test_the_mask_rcnn_file_loads_as_maskrcnn_gc_resnet50_fpn_unedited(gcnet_files):
    model, info = load_detector(gcnet_files["detector"])
    expected = ("maskrcnn_gc_resnet50_fpn", {"num_classes": 81}, "mmdet_v1", 12)
    assert (info["arch"], info["kwargs"], info["format"], info["epoch"]) == expected
    assert info["classes"] == list(COCO_CLASSES)
    own = model.state_dict()
    written = extract_state_dict(load_checkpoint_file(gcnet_files["detector"]))
    converted = mmdet_v1_to_torchvision(adapt_detector_state_dict(written))
    assert len(converted) == len(written) == len(own)
    for (key, value), (mmdet_key, original) in zip(converted.items(), written.items()):
        assert value is original and torch.equal(own[key], original), mmdet_key
    with torch.no_grad():
        assert_gcnets_means(model.backbone.body.double().eval()(make_checkpoint.make_input(224)).values())


def test_gcnets_r4_layout_is_read_as_reduction_4():
    """The r4 file's keys and shapes, on the meta device: its detector, and its backbone as a classifier's."""
    r4 = with_ratio_four(FIXTURE)
    meta = {key: torch.empty(shape, device="meta") for key, shape in r4["manifest"] + r4["other_keys_in_file"]}
    assert infer_detector(mmdet_v1_to_torchvision(adapt_detector_state_dict(meta))) == (
        "maskrcnn_gc_resnet50_fpn", {"num_classes": 81, "reduction": 4}
    )
    backbone = layout.adapt_state_dict(meta).state_dict
    assert layout.infer_arch(backbone, backbone=True) == "gc_resnet50"
    assert layout.infer_model_kwargs("gc_resnet50", backbone, backbone=True) == {"reduction": 4}


def test_this_projects_own_r4_files_load_with_their_ratio(tmp_path):
    torch.manual_seed(0)
    classifier = models.gc_resnet18(reduction=4, num_classes=10).eval()
    save_checkpoint({"epoch": 1, "arch": "gc_resnet18", "state_dict": classifier.state_dict()}, tmp_path / "gc18.pth.tar")
    loaded, info = load_model(tmp_path / "gc18.pth.tar")
    assert info["kwargs"] == {"num_classes": 10, "reduction": 4}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), classifier(x), rtol=0, atol=0)

    detector = create_detector("maskrcnn_gc_resnet50_fpn", reduction=4, num_classes=4)
    save_checkpoint({"epoch": 1, "arch": "maskrcnn_gc_resnet50_fpn", "state_dict": detector.state_dict()}, tmp_path / "r4.pth.tar")
    loaded, info = load_detector(tmp_path / "r4.pth.tar")
    assert (info["arch"], info["kwargs"], info["format"]) == ("maskrcnn_gc_resnet50_fpn", {"num_classes": 4, "reduction": 4}, "project")
    assert all(torch.equal(value, detector.state_dict()[key]) for key, value in loaded.state_dict().items())


def test_layers_of_different_ratios_fit_no_model():
    """A model's GC layers are built with one ratio: a file whose stages disagree is no model's."""
    with torch.device("meta"):
        r16, r4 = models.gc_resnet18().state_dict(), models.gc_resnet18(reduction=4).state_dict()
    mixed = {key: r4[key] if key.startswith("layer4.") else value for key, value in r16.items()}
    assert layout.infer_arch(r4) == "gc_resnet18"
    assert layout.infer_arch(mixed) is None


def test_gcnets_backbone_starts_a_gc_detector(gcnet_files):
    detector = create_detector("maskrcnn_gc_resnet50_fpn")
    line = load_backbone_weights(detector, gcnet_files["backbone"])
    assert line == f"=> backbone from {gcnet_files['backbone']}: gc_resnet50, {len(FIXTURE['manifest'])} tensors (its classifier left out)"
    body = detector.backbone.body.state_dict()
    for key, value in file_backbone(gcnet_files["backbone"]).items():
        assert torch.equal(body[key[len("backbone.") :].replace(".context_block.", ".gc.")], value), key


def test_a_gcnet_file_fits_no_other_detector(gcnet_files):
    refusal = "holds maskrcnn_gc_resnet50_fpn weights, not maskrcnn_resnet50_fpn; use -a maskrcnn_gc_resnet50_fpn"
    with pytest.raises(CheckpointError, match=refusal):
        load_detector(gcnet_files["detector"], arch="maskrcnn_resnet50_fpn")


def test_detect_evaluates_gcnets_file_with_no_flags(gcnet_files, tmp_path):
    images, annotations = write_coco_set(tmp_path / "coco")
    result = run_script(
        "detect.py", "--evaluate", "--resume", gcnet_files["detector"], "--val-images", images, "--val-annotations", annotations,
        "--min-size", "64", "--max-size", "64", "-b", "3", "-j", "0", "--output-dir", tmp_path / "run", timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "=> maskrcnn_gc_resnet50_fpn (" in result.stdout
    assert re.findall(r"^ \* (bbox|segm) AP ", result.stdout, re.M) == ["bbox", "segm"]

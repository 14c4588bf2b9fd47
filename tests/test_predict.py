"""predict.py on a generated JPEG and a checkpoint file on disk: once as a user runs it (a
subprocess), then through its main() for the cheaper variations; and its detection drawings,
read back from the PNG files it writes."""

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_script
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

import models
import predict as predict_script
from models.detection import create_detector

LINE = re.compile(r"  (\d)\. +(\d+\.\d\d)%  (.+) \((\d+)\)")
BIAS = {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0, 4: 0.5}  # every other class: 0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """A JPEG, and a checkpoint in the released format whose classifier ignores the image:
    zero weights and the biases above, so the probabilities are softmax(bias) exactly."""
    root = tmp_path_factory.mktemp("predict")
    Image.new("RGB", (320, 240), (180, 120, 60)).save(root / "photo.jpg")
    (root / "notes.jpg").write_text("not a picture")
    model = models.eca_resnet18()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        for index, value in BIAS.items():
            model.fc.bias[index] = value
    state = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "best_prec1": torch.tensor(70.9)}
    torch.save(state, root / "eca_resnet18_k3577.pth.tar", _use_new_zipfile_serialization=False)
    return {"image": root / "photo.jpg", "bad_image": root / "notes.jpg", "weights": root / "eca_resnet18_k3577.pth.tar"}


def predict(*args) -> subprocess.CompletedProcess:
    return run_script("predict.py", *args)


def test_top5_names_and_probabilities(files):
    result = predict("-a", "eca_resnet18", "--weights", files["weights"], files["image"], files["image"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{files['image']}:" and lines[6] == f"{files['image']}:"
    rows = [LINE.fullmatch(line).groups() for line in lines[1:6]]
    assert [int(rank) for rank, *_ in rows] == [1, 2, 3, 4, 5]
    assert [name for _, _, name, _ in rows] == ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"]
    assert [int(index) for *_, index in rows] == [0, 1, 2, 3, 4]
    bias = torch.zeros(1000)
    for index, value in BIAS.items():
        bias[index] = value
    expected = (100 * bias.softmax(0)[:5]).tolist()
    probabilities = [float(p) for _, p, _, _ in rows]
    assert probabilities == pytest.approx(expected, abs=0.006)
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 100
    assert lines[7:] == lines[1:6]


def test_arch_is_read_from_the_weights(files, capsys):
    assert predict_script.main(["--weights", str(files["weights"]), "--topk", "2", str(files["image"])]) == 0
    assert [LINE.fullmatch(line).group(3) for line in capsys.readouterr().out.splitlines()[1:]] == ["tench", "goldfish"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("bad_image", "predict.py: error: cannot read image {bad_image}: not an image file"),
        ("missing_image", "predict.py: error: cannot read image {missing}: No such file or directory"),
        ("missing_weights", "predict.py: error: checkpoint {missing} does not exist"),
        ("wrong_arch", "predict.py: error: {weights} holds eca_resnet18 weights, not eca_resnet50; use -a eca_resnet18 or leave -a out"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(files, tmp_path, capsys, case, message):
    missing = tmp_path / "missing.file"
    weights, image = files["weights"], files["image"]
    if case == "bad_image":
        image = files["bad_image"]
    elif case == "missing_image":
        image = missing
    elif case == "missing_weights":
        weights = missing
    arch = "eca_resnet50" if case == "wrong_arch" else "eca_resnet18"
    assert predict_script.main(["-a", arch, "--weights", str(weights), str(image)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message.format(bad_image=files["bad_image"], missing=missing, weights=weights)
    assert captured.out == ""


def test_other_class_counts_print_indices(files, tmp_path, capsys):
    torch.save(models.resnet18(num_classes=3).state_dict(), tmp_path / "three_classes.pth")
    assert predict_script.main(["--weights", str(tmp_path / "three_classes.pth"), str(files["image"])]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == 3  # top-5 of 3 classes
    assert sorted(re.fullmatch(r"  \d\. +\d+\.\d\d%  class (\d)", line).group(1) for line in lines) == ["0", "1", "2"]


# --- detection drawings ------------------------------------------------------------------------

BACKGROUND = (90, 90, 90)


def plain(height: int, width: int) -> torch.Tensor:
    return torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1, 1).expand(3, height, width).contiguous()


def drawn_png(tmp_path: Path, image: torch.Tensor, boxes, masks=None) -> torch.Tensor:
    """The detections drawn on ``image`` as predict.py writes them, read back from the PNG file."""
    count = len(boxes)
    detections = {"boxes": torch.tensor(boxes), "labels": torch.ones(count, dtype=torch.int64), "scores": torch.full((count,), 0.9)}
    if masks is not None:
        detections["masks"] = masks
    path = tmp_path / "drawn.png"
    predict_script.write_png(str(path), predict_script.draw_detections(image, detections, ["cross"]))
    assert [entry.name for entry in tmp_path.iterdir()] == ["drawn.png"]  # no temporary left
    with Image.open(path) as png:
        assert png.format == "PNG"
        return pil_to_tensor(png.convert("RGB"))


def is_background(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels == torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, *[1] * (pixels.dim() - 1))).all(0)


def assert_label_tab(region: torch.Tensor, color: torch.Tensor) -> None:
    """``region`` lies inside a label: the box's colour with the text on it, no background."""
    assert not is_background(region).any()
    assert (region == color.view(3, 1, 1)).all(0).float().mean() > 0.3


def test_a_small_image_is_drawn_scaled_up_with_its_boxes_masks_and_labels_outside_them(tmp_path):
    """96 x 128 becomes 512 x 683; box (16, 40)-(80, 90) lands at (85, 213)-(426, 480), the mask
    with it; the label sits in a tab above the box, none of it inside."""
    masks = torch.zeros(1, 1, 96, 128)
    masks[..., 50:80, 20:60] = 1.0
    drawn = drawn_png(tmp_path, plain(96, 128), [[16.0, 40.0, 80.0, 90.0]], masks)
    assert drawn.shape == (3, 512, 683)
    color = drawn[:, 350, 85]
    assert not is_background(color)
    for y, x in ((350, 86), (350, 426), (350, 425), (213, 250), (214, 250), (480, 250)):  # the outline, 2 pixels wide
        assert torch.equal(drawn[:, y, x], color), (y, x)
    for y, x in ((350, 82), (350, 88), (350, 423), (350, 429), (216, 250), (477, 250), (483, 250), (350, 16)):
        assert is_background(drawn[:, y, x]), (y, x)
    mask = drawn[:, 275:420, 115:312]  # inside the scaled mask (rows 267-427, columns 107-320)
    assert not is_background(mask).any() and (mask == mask[:, :1, :1]).all()
    assert is_background(drawn[:, 216:262, 88:423]).all()  # the box above the mask: the label hides none of it
    assert_label_tab(drawn[:, 201:211, 87:140], color)


def test_a_label_without_room_above_its_box_goes_below_it(tmp_path):
    drawn = drawn_png(tmp_path, plain(128, 128), [[10.0, 0.0, 50.0, 40.0]])
    assert drawn.shape == (3, 512, 512)
    color = drawn[:, 100, 40]
    assert_label_tab(drawn[:, 162:172, 42:110], color)  # below the box's bottom edge, at 160
    assert is_background(drawn[:, 3:156, 43:197]).all()


def test_a_large_image_keeps_its_size_and_its_boxes_their_coordinates(tmp_path):
    drawn = drawn_png(tmp_path, plain(520, 600), [[100.0, 200.0, 300.0, 400.0]])
    assert drawn.shape == (3, 520, 600)
    assert not is_background(drawn[:, 300, 100]) and is_background(drawn[:, 300, 97]) and is_background(drawn[:, 300, 103])
    image = plain(520, 600)
    image[:, ::7] = 200
    nothing = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
    assert torch.equal(predict_script.draw_detections(image, nothing, []), image)
    assert predict_script.draw_detections(plain(128, 256), nothing, []).shape == (3, 512, 1024)


def test_a_detector_checkpoint_draws_a_png_at_the_drawing_size(tmp_path, capsys):
    """predict.py end to end with a randomly initialised detector: a 128 x 128 image's PNG is 512 x 512."""
    torch.manual_seed(0)
    torch.save(create_detector("fasterrcnn_eca_resnet18_fpn", num_classes=3).state_dict(), tmp_path / "detector.pth")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(tmp_path / "shapes.jpg")
    argv = ["--weights", str(tmp_path / "detector.pth"), str(tmp_path / "shapes.jpg"), "--score-thresh", "0", "--out-dir",
            str(tmp_path / "out"), "--device", "cpu"]
    assert predict_script.main(argv) == 0
    png = tmp_path / "out" / "shapes_detections.png"
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'shapes.jpg'}: ") and os.listdir(tmp_path / "out") == [png.name]
    with Image.open(png) as drawn:
        assert drawn.format == "PNG" and drawn.size == (512, 512)

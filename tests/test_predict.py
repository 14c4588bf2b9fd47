"""predict.py on a generated JPEG and a checkpoint file on disk: once as a user runs it (a
subprocess), then through its main() for the cheaper variations."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import models
import predict as predict_script

ROOT = Path(__file__).resolve().parent.parent
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
    command = [sys.executable, str(ROOT / "predict.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


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
        ("bad_image", "predict: cannot read image {bad_image}: not an image file"),
        ("missing_image", "predict: cannot read image {missing}: No such file or directory"),
        ("missing_weights", "predict: checkpoint {missing} does not exist"),
        ("wrong_arch", "predict: {weights} holds eca_resnet18 weights, not eca_resnet50; use -a eca_resnet18 or leave -a out"),
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
    assert predict_script.main(["-a", arch, "--weights", str(weights), str(image)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == message.format(bad_image=files["bad_image"], missing=missing, weights=weights)
    assert captured.out == ""


def test_other_class_counts_print_indices(files, tmp_path, capsys):
    torch.save(models.resnet18(num_classes=3).state_dict(), tmp_path / "three_classes.pth")
    assert predict_script.main(["--weights", str(tmp_path / "three_classes.pth"), str(files["image"])]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert len(lines) == 3  # top-5 of 3 classes
    assert sorted(re.fullmatch(r"  \d\. +\d+\.\d\d%  class (\d)", line).group(1) for line in lines) == ["0", "1", "2"]

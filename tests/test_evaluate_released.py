"""scripts/evaluate_released.py on a folder of checkpoints in the released format and a tiny val/ tree."""

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import ROOT, run_script
from PIL import Image

import models

SCRIPT = ROOT / "scripts" / "evaluate_released.py"
VAL_IMAGES = {"n01440764": 3, "n01443537": 1, "n01484850": 1}  # 5 images; class 0 holds 3 of them


def save_released_format(model: torch.nn.Module, path: Path) -> None:
    state = {"epoch": 90, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
             "best_prec1": torch.tensor(50.0), "optimizer": {"state": {}, "param_groups": []}}  # fmt: skip
    torch.save(state, path, _use_new_zipfile_serialization=False)


def constant_classifier(model: torch.nn.Module, linear: torch.nn.Linear, predicted: int) -> torch.nn.Module:
    """Zero weights and a bias that ranks ``predicted`` first: the same prediction for every image."""
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.arange(linear.out_features, dtype=torch.float32).neg())
        linear.bias[predicted] = 1.0
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("evaluate_released")
    for wnid, count in VAL_IMAGES.items():
        (root / "data" / "val" / wnid).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (90, 70), (index * 60, 100, 30)).save(root / "data" / "val" / wnid / f"{index}.JPEG")
    released = root / "released"
    released.mkdir()
    resnet = models.eca_resnet18(k_size="3333", num_classes=3)
    # The name says ResNet-50 with k 3557: the table must show what the weights hold instead.
    save_released_format(constant_classifier(resnet, resnet.fc, 0), released / "eca_resnet50_k3557.pth.tar")
    mobilenet = models.eca_mobilenet_v2(num_classes=3)
    save_released_format(constant_classifier(mobilenet, mobilenet.classifier[1], 2), released / "eca_mobilenetv2_k13.pth.tar")
    complete = (released / "eca_resnet50_k3557.pth.tar").read_bytes()
    (released / "broken.pth.tar").write_bytes(complete[: len(complete) // 2])  # an interrupted download
    (released / "notes.txt").write_text("not a checkpoint, not picked up")
    return {"data": root / "data", "released": released}


def test_folder_of_checkpoints_gives_one_row_each(setup):
    result = run_script(SCRIPT, setup["released"], "--data", setup["data"], "--image-size", 32, "-b", 8, "-j", 0)
    assert result.returncode == 2, result.stderr  # one checkpoint cannot be read
    header, *rows = result.stdout.splitlines()
    assert header.split()[:5] == ["checkpoint", "arch", "k", "top-1", "top-5"]
    assert rows[0].startswith("broken.pth.tar") and "error: " in rows[0] and "not a PyTorch checkpoint" in rows[0]
    # The constant predictions: class 2 is right for 1 image of 5, class 0 for 3 of 5; top-5 of 3 classes is always right.
    assert rows[1].split()[:5] == ["eca_mobilenetv2_k13.pth.tar", "eca_mobilenet_v2", "1" * 10 + "3" * 7, "20.00", "100.00"]
    assert rows[2].split()[:5] == ["eca_resnet50_k3557.pth.tar", "eca_resnet18", "3333", "60.00", "100.00"]
    assert rows[2].split()[5:] == ["-"] * 5  # 3-class models are not compared with the paper's ImageNet numbers
    assert len(rows) == 3


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_released", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_imagenet_rows_are_compared_with_the_original_readme():
    script = load_script()
    row = script.result_row("x.pth.tar", "eca_resnet50", {"k_size": [3, 5, 5, 7], "num_classes": 1000},
                            {"prec1": 77.5, "prec5": 93.6}, 1000)  # fmt: skip
    assert row == {"checkpoint": "x.pth.tar", "arch": "eca_resnet50", "k": "3557", "top-1": "77.50", "top-5": "93.60",
                   "paper": "ECA-Net50", "paper top-1": "77.42", "paper top-5": "93.62",
                   "diff top-1": "+0.08", "diff top-5": "-0.02"}  # fmt: skip
    assert script.result_row("y", "resnet50", {"num_classes": 1000}, {"prec1": 76.1, "prec5": 92.9}, 1000)["k"] == "-"


@pytest.mark.parametrize(
    "args, message",
    [
        (["{released}", "--data", "{missing}"], "evaluate_released: data directory {missing} does not exist"),
        (["{missing}", "--data", "{data}"], "evaluate_released: {missing}: no such file or directory"),
        (["{data}", "--data", "{data}"], "evaluate_released: no checkpoint files (.pth.tar, .pth, .pt) in {data}"),
    ],
)
def test_bad_input_is_one_line(setup, tmp_path, capsys, args, message):
    names = {"released": setup["released"], "data": setup["data"], "missing": tmp_path / "missing"}
    assert load_script().main([arg.format(**names) for arg in args]) == 2
    assert capsys.readouterr().err.strip() == message.format(**names)

"""scripts/evaluate_released.py on a folder of checkpoints in several layouts (the released
ECA-Nets' format, timm's safetensors, a damaged file) and a tiny val/ tree: one table, as text,
CSV and Markdown, with each file's layout, counts and speed, and the published numbers."""

import csv
import importlib.util
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from helpers import ROOT, run_script
from PIL import Image

import models
from utils.counting.complexity import binary_units, count_parameters, paper_flops

SCRIPT = ROOT / "scripts" / "evaluate_released.py"
VAL_IMAGES = {"n01440764": 3, "n01443537": 1, "n01484850": 1}  # 5 images; class 0 holds 3 of them
IMAGE = 32


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
    torch.manual_seed(0)
    resnet_t = timm.create_model("ecaresnet26t", pretrained=False, num_classes=3)  # ECA under se, a deep tiered stem
    safetensors.torch.save_file(constant_classifier(resnet_t, resnet_t.fc, 1).state_dict(), released / "model.safetensors")
    complete = (released / "eca_resnet50_k3557.pth.tar").read_bytes()
    (released / "broken.pth.tar").write_bytes(complete[: len(complete) // 2])  # an interrupted download
    (released / "notes.txt").write_text("not a checkpoint, not picked up")
    return {"data": root / "data", "released": released, "models": {"eca_resnet18": resnet, "eca_mobilenet_v2": mobilenet}}


def counts(model: torch.nn.Module) -> list:
    """Param. and FLOPs as paramflops.py counts them, at the evaluated size."""
    return [binary_units(count_parameters(model)), binary_units(paper_flops(model, IMAGE))]


def test_a_folder_of_checkpoints_in_several_layouts_is_one_table(setup, tmp_path):
    result = run_script(SCRIPT, setup["released"], "--data", setup["data"], "--image-size", IMAGE, "-b", 8, "-j", 0,
                        "--speed-batches", 1, "--csv", tmp_path / "table.csv", "--markdown", tmp_path / "table.md")  # fmt: skip
    assert result.returncode == 2, result.stderr  # one checkpoint cannot be read
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["checkpoint", "layout", "arch", "k", "top-1", "top-5", "Param.", "FLOPs", "images/s",
                              "paper", "paper", "top-1", "paper", "top-5", "diff", "top-1", "diff", "top-5"]  # fmt: skip
    assert rows[0].startswith("broken.pth.tar") and "error: " in rows[0] and "not a PyTorch checkpoint" in rows[0]
    mobilenet, resnet, resnet_t = (row.split() for row in rows[1:])
    # The constant predictions: class 2 is right for 1 image of 5, class 0 for 3 of 5, class 1 for 1;
    # top-5 of 3 classes is always right. Layouts: the released files' keys are the original code's.
    assert mobilenet[:6] == ["eca_mobilenetv2_k13.pth.tar", "original", "ECA-Net", "eca_mobilenet_v2", "1" * 10 + "3" * 7, "20.00"]
    assert resnet[:6] == ["eca_resnet50_k3557.pth.tar", "original", "ECA-Net", "eca_resnet18", "3333", "60.00"]
    assert resnet_t[:6] == ["model.safetensors", "timm", "ecaresnet26t", "5557", "20.00", "100.00"]
    assert mobilenet[7:9] == counts(setup["models"]["eca_mobilenet_v2"]) and resnet[7:9] == counts(setup["models"]["eca_resnet18"])
    assert float(resnet[9]) > 0 and float(resnet_t[8]) > 0  # images/s
    assert resnet[10:] == ["-"] * 5  # 3-class models are not compared with ImageNet numbers
    assert len(rows) == 4

    with open(tmp_path / "table.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["checkpoint"] for row in table] == ["broken.pth.tar", "eca_mobilenetv2_k13.pth.tar", "eca_resnet50_k3557.pth.tar",
                                                    "model.safetensors"]  # fmt: skip
    assert table[0]["error"].startswith(str(setup["released"] / "broken.pth.tar")) and table[0]["arch"] == ""
    assert table[2]["params"] == str(count_parameters(setup["models"]["eca_resnet18"])) and table[2]["top1"] == "60.0000"
    assert table[3]["layout"] == "timm" and table[3]["error"] == ""
    markdown = (tmp_path / "table.md").read_text().splitlines()
    assert markdown[2] == "| " + " | ".join(load_script().COLUMNS) + " |"
    assert markdown[4].startswith("| broken.pth.tar | error: ") and len(markdown) == 2 + 2 + 4
    assert markdown[7].startswith("| model.safetensors | timm | ecaresnet26t | 5557 | 20.00 | 100.00 | ")


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_released", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "arch, kwargs, expected",
    [
        ("eca_resnet50", {}, ("ECA-Net50 (README)", 77.42, 93.62)),
        ("cbam_resnet50", {"bias": True, "spatial_batch_norm": True}, ("CBAM-50 (Table 3)", 77.34, 93.69)),
        ("se_resnet50_caffe", {}, ("SENet-50 (Table 3)", 76.71, 93.38)),
        ("resnet50", {}, ("ResNet-50 (Table 3)", 75.20, 92.52)),
        ("mobilenet_v2", {}, ("MobileNetV2 (Table 3)", 71.64, 90.20)),
        ("ecaresnet50d", {}, None),
    ],
)
def test_published_numbers_are_those_of_the_same_network(arch, kwargs, expected):
    """The README's for a released ECA-Net; Table 3's where its row's model holds the same weights
    (the SENet authors' network holds se_resnet50(bias=True)'s, the official CBAM's cbam_resnet50's)."""
    script = load_script()
    with torch.device("meta"):
        model = models.create_model(arch, **kwargs)
    found = script.published(arch, model, 1000)
    assert (found and (found.label, found.top1, found.top5)) == expected
    assert script.published(arch, model, 10) is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["{released}", "--data", "{missing}"], "evaluate_released.py: error: data directory {missing} does not exist"),
        (["{missing}", "--data", "{data}"], "evaluate_released.py: error: {missing}: no such file or directory"),
        (["{data}", "--data", "{data}"],
         "evaluate_released.py: error: no checkpoint files (.pth.tar, .pth, .pt, .pkl, .bin, .safetensors) in {data}"),
    ],
)
def test_bad_input_is_one_line(setup, tmp_path, capsys, args, message):
    names = {"released": setup["released"], "data": setup["data"], "missing": tmp_path / "missing"}
    assert load_script().main([arg.format(**names) for arg in args]) == 2
    assert capsys.readouterr().err.strip() == message.format(**names)


def test_a_bad_count_is_one_line(setup):
    result = run_script(SCRIPT, setup["released"], "--data", setup["data"], "--speed-batches", "-1")
    assert result.returncode == 2
    assert result.stderr.strip() == "evaluate_released.py: error: argument --speed-batches: expected 0 or a positive integer, got '-1'"

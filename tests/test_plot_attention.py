"""scripts/plot_attention.py on real checkpoints: the gates it plots are the sigmoid outputs the
layers compute (checked against hooks on ECA's conv and SE's second layer), per class, as a chart
(PNG and PDF) and CSV; bad input is one line and exit 2."""

import csv

import pytest
import torch
from helpers import run_script
from PIL import Image
from test_robustness import CLASS_NAMES, make_images

import main as main_module
import models
from scripts.plot_attention import main as plot_main
from utils.checkpoint import load_model
from utils.data.datasets import build_dataset

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("shapes"), train_per_class=4, val_per_class=2)


@pytest.fixture(scope="module")
def eca_checkpoint(data, tmp_path_factory):
    """model_best.pth.tar of one epoch of eca_resnet18 on the tiny set."""
    run_dir = tmp_path_factory.mktemp("eca_run")
    argv = [str(data), "-a", "eca_resnet18", "--image-size", str(IMAGE_SIZE), "--min-scale", "1", "-b", "4", "-j", "0",
            "--lr", "0.01", "--epochs", "1", "--seed", "0", "--output-dir", str(run_dir)]
    assert main_module.main(argv) == 0
    return run_dir / "model_best.pth.tar"


def saved_model(arch, path):
    """A randomly initialised 3-class ``arch`` saved as this project's checkpoints are."""
    torch.manual_seed(0)
    torch.save({"arch": arch, "state_dict": models.create_model(arch, num_classes=3).state_dict()}, path)
    return path


def hooked_gates(weights, data, gate_of):
    """{layer: {class: mean gate}} computed independently: sigmoid of the output of ``gate_of(layer)``, hooked."""
    model = load_model(weights)[0].eval()
    dataset = build_dataset(str(data), "val", IMAGE_SIZE)
    layers = {name: module for name, module in model.named_modules() if gate_of(name, module) is not None}
    seen = {name: [] for name in layers}
    for name, module in layers.items():
        gate_of(name, module).register_forward_hook(lambda m, i, output, name=name: seen[name].append(torch.sigmoid(output).flatten(1)))
    images, targets = zip(*(dataset[index] for index in range(len(dataset))))
    with torch.no_grad():
        model(torch.stack(images))
    targets = torch.tensor(targets)
    return {name: {cls: gates[0][targets == label].mean(0) for label, cls in enumerate(dataset.classes)} for name, gates in seen.items()}


def read_gates(path):
    gates = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            gates.setdefault(row["layer"], {}).setdefault(row["class"], []).append((int(row["channel"]), float(row["gate"])))
    return {
        layer: {cls: torch.tensor([value for _, value in sorted(values)]) for cls, values in by_class.items()}
        for layer, by_class in gates.items()
    }


def test_the_last_stage_of_eca_per_class_as_png_pdf_and_csv(eca_checkpoint, data, tmp_path):
    png, table = tmp_path / "gates.png", tmp_path / "gates.csv"
    result = run_script("scripts/plot_attention.py", "--weights", eca_checkpoint, data, "--classes", 3, "-j", 0,
                        "--out", png, "--csv", table)
    assert result.returncode == 0, result.stderr
    pdf = tmp_path / "gates.pdf"
    assert f"=> {png} and {pdf}: eca_resnet18, 2 block(s) (layer4.0, layer4.1), 3 classes, 6 images at {IMAGE_SIZE} px" in result.stdout
    with Image.open(png) as image:
        assert (image.format, image.size) == ("PNG", (900, 2 * 320))
    assert pdf.read_bytes().startswith(b"%PDF-")
    plotted = read_gates(table)
    expected = hooked_gates(eca_checkpoint, data, lambda name, module: module if name.endswith(".eca.conv") else None)
    assert list(plotted) == ["layer4.0.eca", "layer4.1.eca"]
    for layer, by_class in plotted.items():
        assert list(by_class) == sorted(CLASS_NAMES)
        for cls, gate in by_class.items():
            assert gate.shape == (512,)
            torch.testing.assert_close(gate, expected[f"{layer}.conv"][cls], atol=1e-5, rtol=0)


def test_chosen_blocks_and_classes_of_an_se_network(data, tmp_path):
    weights = saved_model("se_resnet50", tmp_path / "se.pth.tar")
    table = tmp_path / "gates.csv"
    classes = sorted(CLASS_NAMES)[::-2]
    argv = ["--weights", str(weights), str(data), "--blocks", "layer3.5", "layer4.2", "--classes", *classes, "-j", "0",
            "--out", str(tmp_path / "gates.png"), "--csv", str(table), "--image-size", str(IMAGE_SIZE)]
    assert plot_main(argv) == 0
    plotted = read_gates(table)
    se_layers = [name for name, module in load_model(weights)[0].named_modules() if hasattr(module, "fc2")]
    assert list(plotted) == [name for name in se_layers if name.startswith(("layer3.5.", "layer4.2."))]
    expected = hooked_gates(weights, data, lambda name, module: getattr(module, "fc2", None))
    for layer, by_class in plotted.items():
        assert list(by_class) == classes
        for cls, gate in by_class.items():
            torch.testing.assert_close(gate, expected[layer][cls], atol=1e-5, rtol=0)
    with Image.open(tmp_path / "gates.png") as image:
        assert image.size == (900, 2 * 320)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--blocks", "layer9.0"], "--blocks layer9.0: no attention layer there; blocks with one: layer1.0, layer1.1, "),
        (["--classes", "nope"], "--classes: {data}/val has no class 'nope'"),
        (["--classes", "7"], "--classes 7: {data}/val has 3 classes"),
        (["--split", "test"], "{data} has no test/ folder"),
        (["--out", "{tmp}/g.svg"], "--out {tmp}/g.svg: a chart is written as PNG and PDF; name it NAME.png (NAME.pdf goes beside)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(extra, message, eca_checkpoint, data, tmp_path, capsys):
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    assert plot_main(["--weights", str(eca_checkpoint), str(data), "-j", "0", "--out", str(tmp_path / "g.png"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"plot_attention.py: error: {message.format(data=data, tmp=tmp_path)}"), err
    assert list(tmp_path.iterdir()) == []


def test_a_network_without_attention_is_one_line(data, tmp_path, capsys):
    weights = saved_model("resnet18", tmp_path / "plain.pth.tar")
    assert plot_main(["--weights", str(weights), str(data)]) == 2
    assert capsys.readouterr().err == f"plot_attention.py: error: {weights} holds resnet18, which has no attention layers\n"

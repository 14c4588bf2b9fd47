"""Checkpoints written by other code load as they are and compute what that code computes: the
official CBAM code's and the SENet authors' (Cadene's conversion) files against the outputs of
the peers' own code (tests/fixtures/peers), moskomule's SE-ResNet-50 against torchvision's trunk
with its SE layer, timm's ResNets (ECA, SE, ResNet-D/T; torch.save and safetensors) against timm
itself, the files timm's and torchvision's train.py write; a file no model fits is one line."""

import argparse
import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Dict

import pytest
import safetensors.torch
import timm
import torch
import torchvision
from helpers import PEERS, peer_checkpoint_writer, run_script
from torch import nn

import models
from models import layout
from scripts.make_demo_data import make_split
from utils.checkpoint import CheckpointError, CheckpointWarning, extract_state_dict, load_checkpoint_file, load_model
from utils.export import export_model

PEER_TOLERANCE = 1e-6
"""The fixtures' tolerance (float64): the peers' own code reproduces them exactly."""

make_checkpoint = peer_checkpoint_writer()


def peer_fixture(entry: str) -> dict:
    return json.loads((PEERS / f"{entry}.json").read_text())


@pytest.fixture(scope="module")
def peer_files(tmp_path_factory) -> Dict[str, Path]:
    """Each peer fixture's file, written in the peer's own format by make_checkpoint.py (the CBAM
    training checkpoint with its tensors tagged cuda:0, as saved from GPU training)."""
    root = tmp_path_factory.mktemp("peers")
    files = {}
    for entry in ("cbam_official_resnet50", "senet_caffe_se_resnet50"):
        files[entry] = root / f"{entry}.pth"
        make_checkpoint.write(peer_fixture(entry), files[entry])
    return files


def peer_logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.double().eval()(make_checkpoint.make_input(224))


@pytest.mark.parametrize(
    "entry, arch, kwargs, source",
    [
        ("cbam_official_resnet50", "cbam_resnet50", {"num_classes": 1000, "bias": True, "spatial_batch_norm": True}, "official CBAM"),
        ("senet_caffe_se_resnet50", "se_resnet50_caffe", {"num_classes": 1000}, "Cadene SENet"),
    ],
)
def test_a_peers_file_gives_the_peers_own_logits(peer_files, entry, arch, kwargs, source):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither file holds anything the load has to guess or drop with a warning
        model, info = load_model(peer_files[entry])
    assert (info["arch"], info["kwargs"], info["source"]) == (arch, kwargs, source)
    expected = torch.tensor(peer_fixture(entry)["outputs"]["logits"], dtype=torch.float64)
    torch.testing.assert_close(peer_logits(model), expected, rtol=0, atol=PEER_TOLERANCE)


def test_the_official_cbam_files_epoch_and_best_are_read_and_its_optimizer_left_out(peer_files):
    _, info = load_model(peer_files["cbam_official_resnet50"])
    assert info["epoch"] == 100 and info["best_prec1"] == pytest.approx(77.622, abs=1e-4)
    assert "optimizer" not in info["checkpoint"]  # written for the official code's parameter order


def test_what_the_adapters_change_matters(peer_files):
    """The fixtures tell the conversion from a near miss: the CBAM weights with the names mapped
    but the spatial conv's channels left in the official [max; mean] order, and the SENet weights
    in torchvision's trunk (stride on the 3x3, padded max-pool), are far off the peers' logits."""
    cbam = layout.adapt_state_dict(extract_state_dict(load_checkpoint_file(peer_files["cbam_official_resnet50"]))).state_dict
    unswapped = {key: value[:, [1, 0]] if key.endswith("cbam.spatial.weight") else value for key, value in cbam.items()}
    model = models.cbam_resnet50(bias=True, spatial_batch_norm=True)
    model.load_state_dict(unswapped)
    expected = torch.tensor(peer_fixture("cbam_official_resnet50")["outputs"]["logits"], dtype=torch.float64)
    assert (peer_logits(model) - expected).abs().max() > 0.1

    senet = layout.adapt_state_dict(extract_state_dict(load_checkpoint_file(peer_files["senet_caffe_se_resnet50"])))
    assert senet.settings == {"stride_in_1x1": True, "caffe_stem_pool": True}
    model = models.se_resnet50(bias=True)
    model.load_state_dict(senet.state_dict)
    expected = torch.tensor(peer_fixture("senet_caffe_se_resnet50")["outputs"]["logits"], dtype=torch.float64)
    assert (peer_logits(model) - expected).abs().max() > 0.05


def test_torch_hub_reads_a_peers_file(peer_files):
    """hubconf's entry points go through load_model: the SENet authors' file builds their network,
    also when asked for as ``se_resnet50``, whose constructor then takes the switches it implies."""
    hubconf = importlib.import_module("hubconf")
    caffe = hubconf.se_resnet50_caffe(weights=str(peer_files["senet_caffe_se_resnet50"]))
    asked = hubconf.se_resnet50(weights=str(peer_files["senet_caffe_se_resnet50"]))
    for model in (caffe, asked):
        assert model.unkeyed_settings == {"stride_in_1x1": True, "caffe_stem_pool": True}
        assert model.layer2[0].conv1.stride == (2, 2) and model.maxpool.ceil_mode
    assert all(torch.equal(value, asked.state_dict()[key]) for key, value in caffe.state_dict().items())


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """The demo's shapes as JPEGs: 10 classes, one image each in train/ and val/."""
    root = tmp_path_factory.mktemp("shapes")
    for split, first in (("train", 0), ("val", 1)):
        make_split(str(root), split, per_class=1, size=48, seed=0, first_index=first)
    return root


def test_main_evaluates_the_official_cbam_file(peer_files, shapes):
    peer_file = peer_files["cbam_official_resnet50"]
    result = run_script("main.py", shapes, "--evaluate", "--resume", peer_file, "--image-size", "32", "-b", "10", "-j", "0")
    assert result.returncode == 0, result.stderr
    assert "=> cbam_resnet50 (28,089,624 parameters)" in result.stdout and " * Prec@1 " in result.stdout


def test_moskomule_se_resnet50_loads_as_se_resnet50(tmp_path):
    """moskomule/senet.pytorch's network, built independently: torchvision's ResNet-50 with its SE
    layer (bias-free Linear layers under ``se.fc``) on the output of every Bottleneck's bn3."""

    class MoskomuleSELayer(nn.Module):
        def __init__(self, channel: int, reduction: int = 16) -> None:
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(
                nn.Linear(channel, channel // reduction, bias=False),
                nn.ReLU(inplace=True),
                nn.Linear(channel // reduction, channel, bias=False),
                nn.Sigmoid(),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, _, _ = x.size()
            return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)

    torch.manual_seed(0)
    reference = torchvision.models.resnet50(num_classes=10)
    for module in list(reference.modules()):
        if isinstance(module, torchvision.models.resnet.Bottleneck):
            module.se = MoskomuleSELayer(module.bn3.num_features)
            module.bn3.register_forward_hook(lambda bn, inputs, output, se=module.se: se(output))
    randomise_batch_norm(reference)
    assert sum(key.endswith(".se.fc.0.weight") for key in reference.state_dict()) == 16
    torch.save(reference.state_dict(), tmp_path / "seresnet50-60a8950a85b2b.pkl")
    model, info = load_model(tmp_path / "seresnet50-60a8950a85b2b.pkl")
    assert (info["arch"], info["kwargs"], info["source"]) == ("se_resnet50", {"num_classes": 10}, "moskomule SENet")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.double().eval()(x), reference.double().eval()(x), rtol=0, atol=PEER_TOLERANCE)


# --- timm ------------------------------------------------------------------------------------


def randomise_batch_norm(model: nn.Module) -> nn.Module:
    """BatchNorm statistics and affine parameters other than the initial ones, so eval mode is not the
    identity; a residual branch's last BatchNorm scales by at most 0.3, so that the activations of
    a deep network stay of order one and float64 rounding, which grows with them, stays at 1e-15."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                last = name.endswith("bn3") or name.endswith("downsample.2") or name.endswith("downsample.1")
                module.weight.copy_(torch.rand(module.num_features, generator=generator) * (0.3 if last else 1) + (0 if last else 0.5))
                module.bias.copy_(torch.rand(module.num_features, generator=generator) * 0.2 - 0.1)
                module.running_mean.copy_(torch.rand(module.num_features, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


def timm_model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return randomise_batch_norm(timm.create_model(name, pretrained=False, num_classes=10, **kwargs)).eval()


@pytest.mark.parametrize(
    "name, arch, kwargs",
    [
        ("ecaresnet26t", "ecaresnet26t", {"num_classes": 10, "k_size": [5, 5, 5, 7]}),
        ("ecaresnet50d", "ecaresnet50d", {"num_classes": 10, "k_size": [5, 5, 5, 7]}),
        ("ecaresnetlight", "ecaresnetlight", {"num_classes": 10, "k_size": [5, 5, 5, 7]}),
        ("seresnet50", "se_resnet50", {"num_classes": 10, "bias": True}),
    ],
)
def test_a_timm_file_gives_timms_logits(tmp_path, name, arch, kwargs):
    reference = timm_model(name)
    state_dict = reference.state_dict()
    torch.save(state_dict, tmp_path / "pytorch_model.bin")
    safetensors.torch.save_file(state_dict, tmp_path / "model.safetensors")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = reference.double()(x)
    for file in ("pytorch_model.bin", "model.safetensors"):
        model, info = load_model(tmp_path / file)
        assert (info["arch"], info["kwargs"], info["source"]) == (arch, kwargs, "timm"), file
        with torch.no_grad():
            torch.testing.assert_close(model.double().eval()(x), expected, rtol=0, atol=PEER_TOLERANCE)


def test_a_resnet_d_trains_as_timms_does():
    """Training mode (BatchNorm on the batch, the ECA fast path's backward, the average-pool
    shortcut): the same outputs and the same gradient for every weight as timm's ecaresnet26t."""
    reference = timm_model("ecaresnet26t").double().train()
    ours = models.ecaresnet26t(num_classes=10).double().train()
    ours.load_state_dict(layout.adapt_state_dict(reference.state_dict()).state_dict)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=PEER_TOLERANCE)
    (ours(x) ** 2).sum().backward()
    (reference(x) ** 2).sum().backward()
    reference_grads = {key.replace(".se.", ".eca."): p.grad for key, p in reference.named_parameters()}
    for key, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, reference_grads[key], rtol=1e-9, atol=1e-12, msg=key)


@pytest.mark.parametrize("name", ["ecaresnet50t", "ecaresnet101d", "ecaresnet269d", "seresnet152d"])
def test_timms_larger_models_have_their_layout_here(name):
    """Built on the meta device (ECA-ResNet-269-D holds 102M parameters): the same keys and shapes
    once adapted, found by the inference, with timm's k in every ECA layer."""
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
        ours = models.create_model(name)
    adapted = layout.adapt_state_dict(reference.state_dict())
    assert adapted.source == "timm" and layout.infer_arch(adapted.state_dict, settings=adapted.settings) == name
    assert {k: v.shape for k, v in adapted.state_dict.items()} == {k: v.shape for k, v in ours.state_dict().items()}
    timm_k = [m.conv.kernel_size[0] for m in reference.modules() if type(m).__name__ == "EcaModule"]
    assert [m.k_size for m in ours.modules() if isinstance(m, models.EfficientChannelAttention)] == timm_k


def test_a_resnet_d_scripts(tmp_path):
    """The deep stem and the average-pool shortcut are ordinary modules to TorchScript (the
    ResNet-D/T family is left out of test_export's selection: see _kind_and_size there)."""
    model = models.ecaresnet26t(num_classes=10)
    model.load_state_dict(layout.adapt_state_dict(timm_model("ecaresnet26t").state_dict()).state_dict)
    assert export_model(model, "torchscript", tmp_path / "ecaresnet26t.pt", image_size=32).passed


# --- training scripts' files -----------------------------------------------------------------


def test_a_timm_train_py_file_loads_without_its_optimizer(tmp_path):
    """timm's train.py: epoch, arch (the model's name), state_dict, optimizer, version, args (a
    Namespace) and metric; its optimizer, with momentum, is in timm's parameter order."""
    reference = timm_model("ecaresnet26t")
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for parameter in reference.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    args = argparse.Namespace(model="ecaresnet26t", lr=0.1, sched="cosine", input_size=None, mean=None, device="cuda:0", epochs=3)
    torch.save({"epoch": 2, "arch": "ecaresnet26t", "state_dict": reference.state_dict(), "optimizer": optimizer.state_dict(),
                "version": 2, "args": args, "metric": 80.1}, tmp_path / "checkpoint-2.pth.tar")  # fmt: skip
    with pytest.warns(CheckpointWarning, match="the timm file's optimizer state is in that code's parameter order"):
        model, info = load_model(tmp_path / "checkpoint-2.pth.tar")
    assert (info["arch"], info["source"], info["epoch"]) == ("ecaresnet26t", "timm", 2)
    assert "optimizer" not in info["checkpoint"] and info["checkpoint"]["args"] == args


def test_a_torchvision_reference_train_py_file_loads(tmp_path):
    """torchvision's references/classification/train.py: model, optimizer, lr_scheduler, epoch, args."""
    torch.manual_seed(0)
    reference = randomise_batch_norm(torchvision.models.resnet18(num_classes=4)).eval()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    args = argparse.Namespace(data_path="/data/imagenet", model="resnet18", lr=0.5, lr_steps=[16, 22], weights=None, distributed=False)
    torch.save({"model": reference.state_dict(), "optimizer": optimizer.state_dict(), "lr_scheduler": {"last_epoch": 5},
                "epoch": 5, "args": args}, tmp_path / "model_5.pth")  # fmt: skip
    model, info = load_model(tmp_path / "model_5.pth")
    assert (info["arch"], info["source"], info["epoch"]) == ("resnet18", None, 5)
    assert "optimizer" in info["checkpoint"]  # torchvision's keys are this project's: its optimizer fits
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.double().eval()(x), reference.double()(x), rtol=0, atol=PEER_TOLERANCE)


def test_code_in_a_training_scripts_args_is_still_refused(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"state_dict": models.resnet18().state_dict(), "args": argparse.Namespace(model="resnet18", hook=Payload())},
               tmp_path / "evil.pth")  # fmt: skip
    with pytest.raises(CheckpointError) as raised:
        load_model(tmp_path / "evil.pth")
    assert str(raised.value) == (
        f"refusing to load {tmp_path / 'evil.pth'}: it would import posix.mkdir, which could run code; "
        "only tensors and plain containers are loaded"
    )
    assert not marker.exists()


# --- safetensors -----------------------------------------------------------------------------


def test_safetensors_files_go_through_the_same_checks(tmp_path):
    weights = models.resnet18(num_classes=4).state_dict()
    safetensors.torch.save_file(weights, tmp_path / "model.safetensors")
    complete = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(complete[: len(complete) - 100])
    with pytest.raises(CheckpointError) as raised:
        load_model(tmp_path / "truncated.safetensors")
    assert str(raised.value).startswith(f"{tmp_path / 'truncated.safetensors'} is not a safetensors file, or it is truncated (")
    assert "\n" not in str(raised.value)

    safetensors.torch.save_file({**weights, "bn1.running_var": -weights["bn1.running_var"]}, tmp_path / "negative.safetensors")
    with pytest.raises(CheckpointError, match="its BatchNorm running variance bn1.running_var is negative"):
        load_model(tmp_path / "negative.safetensors")

    verified = run_script("scripts/verify_checkpoints.py", tmp_path / "model.safetensors")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == (
        f"OK   {tmp_path / 'model.safetensors'}: safetensors format: no checksum recorded; "
        "tensors finite, BatchNorm running variances non-negative"
    )


# --- a layout no model has -------------------------------------------------------------------


def test_an_unknown_layout_is_one_line_naming_the_closest_model(shapes, tmp_path):
    weights = models.resnet18(num_classes=10).state_dict()
    del weights["layer1.0.conv1.weight"]
    weights["head.weight"] = torch.zeros(3)
    weights["layer4.1.conv2.weight"] = torch.zeros(512, 512, 1, 1)
    torch.save({"state_dict": weights}, tmp_path / "other.pth")
    expected = (
        f"{tmp_path / 'other.pth'} matches no known model; closest: resnet18 (1 key missing, first 'layer1.0.conv1.weight'; "
        "1 unexpected, first 'head.weight'; 1 of another shape, first 'layer4.1.conv2.weight' (512, 512, 1, 1) where (512, 512, 3, 3))"
    )
    result = run_script("main.py", shapes, "--evaluate", "--resume", tmp_path / "other.pth", "--image-size", "32", "-j", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(expected)


def test_an_adapted_layout_that_fits_no_model_says_which_layout_it_was(tmp_path):
    """Cadene's SE-ResNeXt keys convert, but no model here has grouped convolutions."""
    state = {"layer0.conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.conv2.weight": torch.zeros(128, 4, 3, 3),
             "layer1.0.se_module.fc1.weight": torch.zeros(16, 256, 1, 1), "last_linear.weight": torch.zeros(1000, 2048)}  # fmt: skip
    assert layout.adapt_state_dict(state).source == "Cadene SENet"
    torch.save(state, tmp_path / "se_resnext50_32x4d-a260b3a4.pth")
    with pytest.raises(CheckpointError, match=r"se_resnext50_32x4d-a260b3a4.pth \(Cadene SENet layout\) matches no known model; closest: "):
        load_model(tmp_path / "se_resnext50_32x4d-a260b3a4.pth")

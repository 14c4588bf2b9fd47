"""utils.checkpoint on real files: the released format, this project's format, unsafe and broken files."""

import os
import pickle

import pytest
import torch

import models
from utils.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    extract_state_dict,
    infer_arch,
    infer_model_kwargs,
    load_checkpoint_file,
    load_model,
    save_checkpoint,
)


def released_checkpoint(path, model, arch_string, legacy=True):
    """A file as the authors released theirs: DataParallel keys, a tensor best_prec1, an optimizer."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).mean().backward()
    optimizer.step()
    state = {
        "epoch": 100,
        "arch": arch_string,
        "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
        "best_prec1": torch.tensor(72.5),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    model = models.eca_resnet18(k_size="3557", num_classes=10)
    path = released_checkpoint(tmp_path_factory.mktemp("released") / "eca_resnet18.pth.tar", model, "resnet18_eca")
    return path, model.eval()


def test_released_format_loads_with_nothing_given(resnet18_file):
    path, source = resnet18_file
    with pytest.warns(CheckpointWarning, match="says arch 'resnet18_eca' but its weights are eca_resnet18's"):
        model, info = load_model(path)
    assert info["arch"] == "eca_resnet18"
    assert info["kwargs"] == {"num_classes": 10, "k_size": [3, 5, 5, 7]}
    assert info["epoch"] == 100 and info["best_prec1"] == pytest.approx(72.5)
    assert "momentum_buffer" in str(info["checkpoint"]["optimizer"]["state"][0].keys())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), source(x), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::utils.checkpoint.CheckpointWarning")
def test_wrong_ksize_is_one_line_naming_the_stage(resnet18_file):
    with pytest.raises(CheckpointError) as raised:
        load_model(resnet18_file[0], k_size="3577")
    message = str(raised.value)
    assert "the checkpoint has k=5 in layer3 where --ksize gives k=7; use --ksize 3557 or leave --ksize out" in message
    assert "\n" not in message


def test_matching_explicit_arch_and_ksize_load(resnet18_file):
    with pytest.warns(CheckpointWarning, match="says arch 'resnet18_eca'"):
        _, info = load_model(resnet18_file[0], arch="eca_resnet18", k_size=list("3557"))
    assert info["kwargs"]["k_size"] == [3, 5, 5, 7]


def test_wrong_explicit_arch_says_what_the_file_holds(resnet18_file):
    with pytest.raises(CheckpointError, match="holds eca_resnet18 weights, not eca_resnet34; use -a eca_resnet18"):
        load_model(resnet18_file[0], arch="eca_resnet34")


def test_other_num_classes_leaves_the_classifier_out(resnet18_file):
    path, source = resnet18_file
    with pytest.warns(CheckpointWarning) as caught:
        model, _ = load_model(path, num_classes=3)
    assert "10-class classifier; with 3 classes 'fc' is left out" in str(caught[-1].message)
    assert model.fc.out_features == 3
    torch.testing.assert_close(model.layer4[1].eca.conv.weight, source.layer4[1].eca.conv.weight)


def test_mobilenet_kernel_sizes_are_read_per_block(tmp_path):
    sizes = [1] * 5 + [3] * 6 + [5] * 6
    source = models.eca_mobilenet_v2(num_classes=4, k_size=sizes)
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    model, info = load_model(tmp_path / "bare.pth")
    assert info["arch"] == "eca_mobilenet_v2"
    assert info["kwargs"] == {"num_classes": 4, "k_size": sizes}


@pytest.mark.parametrize("arch", ["eca_ns_resnet50", "se_resnet50", "resnet50"])
def test_layout_tells_resnet50_variants_apart(arch):
    state_dict = models.create_model(arch, num_classes=5).state_dict()
    assert infer_arch(state_dict, hint="eca_resnet50") == arch
    assert infer_model_kwargs(arch, state_dict)["num_classes"] == 5


def test_compile_and_ddp_prefixes_are_stripped():
    weights = {"module._orig_mod.fc.weight": torch.zeros(1), "_orig_mod.module.fc.bias": torch.zeros(1)}
    assert set(extract_state_dict({"state_dict": weights})) == {"fc.weight", "fc.bias"}


def test_unsafe_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    for legacy in (True, False):
        path = tmp_path / f"evil-{legacy}.pth"
        torch.save({"state_dict": {}, "extra": Payload()}, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(CheckpointError, match="refusing to load .* could run code"):
            load_checkpoint_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint", b"PK\x03\x04truncated"])
def test_missing_or_broken_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "file.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint_file(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_file_without_weights_is_refused(tmp_path):
    torch.save({"epoch": 3}, tmp_path / "no-weights.pth")
    with pytest.raises(CheckpointError, match="holds no model weights"):
        load_checkpoint_file(tmp_path / "no-weights.pth")


def test_save_strips_wrappers_and_a_failed_save_keeps_the_old_file(tmp_path):
    model = torch.nn.DataParallel(models.eca_resnet18(num_classes=2))
    path = tmp_path / "checkpoint.pth.tar"
    save_checkpoint({"epoch": 1, "state_dict": model.state_dict()}, path)
    assert not any(key.startswith("module.") for key in load_checkpoint_file(path)["state_dict"])

    with pytest.raises((pickle.PicklingError, AttributeError)):  # a lambda cannot be pickled
        save_checkpoint({"epoch": 2, "state_dict": model.state_dict(), "broken": lambda: None}, path)
    assert load_checkpoint_file(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pth.tar"]


@pytest.mark.parametrize("arch, settings", [
    ("se_resnet18", {"bias": True}),
    ("cbam_resnet18", {"bias": True, "spatial_batch_norm": True}),
])
def test_a_biased_attention_checkpoint_loads_with_its_settings_read_from_the_keys(tmp_path, arch, settings):
    """SENet's own biased SE and the official CBAM code's layer are not the defaults, yet their
    checkpoints load as they are: the settings come from the extra keys."""
    torch.manual_seed(0)
    written = models.create_model(arch, num_classes=3, **settings)
    save_checkpoint({"state_dict": written.state_dict()}, tmp_path / "biased.pth.tar")
    model, info = load_model(tmp_path / "biased.pth.tar")
    assert info["arch"] == arch and info["kwargs"] == {"num_classes": 3, **settings}
    assert model.state_dict().keys() == written.state_dict().keys()
    assert all(torch.equal(model.state_dict()[key], value) for key, value in written.state_dict().items())

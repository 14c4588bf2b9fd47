"""hubconf.py through torch.hub.load(source="local"), on checkpoint files written like the released ones."""

import importlib.util
from pathlib import Path

import pytest
import torch

import models
from utils.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parent.parent


def hub_load(name: str, **kwargs) -> torch.nn.Module:
    return torch.hub.load(str(ROOT), name, source="local", **kwargs)


def save_released_format(model: torch.nn.Module, path: Path, arch: str) -> None:
    """As the original main.py saved them: DataParallel keys, legacy serialization, a tensor
    best_prec1 and the optimizer state."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {
        "epoch": 100,
        "arch": arch,
        "state_dict": {f"module.{key}": value for key, value in model.state_dict().items()},
        "best_prec1": torch.tensor(77.42),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(state, path, _use_new_zipfile_serialization=False)


def perturb_batchnorm(model: torch.nn.Module) -> None:
    """Non-default BatchNorm statistics, so that a load that skipped buffers would show."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)


def test_entry_points_are_exactly_the_registered_models():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    public = [name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")]
    assert public == models.model_names
    assert hubconf.dependencies == ["torch", "torchvision"]


def test_released_checkpoint_loads_with_its_weights(tmp_path):
    torch.manual_seed(0)
    original = models.eca_resnet50().eval()
    perturb_batchnorm(original)
    path = tmp_path / "eca_resnet50_k3557.pth.tar"
    save_released_format(original, path, "eca_resnet50")

    loaded = hub_load("eca_resnet50", weights=str(path)).eval()
    assert loaded.state_dict().keys() == original.state_dict().keys()
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)


def test_kernel_sizes_and_classes_come_from_the_file(tmp_path):
    path = tmp_path / "bare_state_dict.pth"
    torch.save(models.eca_resnet18(k_size="3333", num_classes=10).state_dict(), path)
    loaded = hub_load("eca_resnet18", weights=str(path))
    assert [m.k_size for m in loaded.modules() if isinstance(m, models.EfficientChannelAttention)] == [3] * 8
    assert loaded.fc.out_features == 10


def test_without_weights_the_model_is_fresh_and_takes_constructor_arguments():
    model = hub_load("se_resnet50", num_classes=7)
    assert isinstance(model, models.ResNet) and model.fc.out_features == 7
    assert torch.all(model.layer1[0].bn3.weight == 1)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(models.resnet18().state_dict(), path)
    with pytest.raises(CheckpointError, match="holds resnet18 weights, not eca_resnet18"):
        hub_load("eca_resnet18", weights=str(path))

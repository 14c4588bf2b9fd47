"""The comparison models: plain ResNets (torchvision's layout), SE-ResNets and ECA-NS-ResNet-50."""

import pytest
import torch
import torchvision

import models
from models import EfficientChannelAttention, NonSharedChannelAttention, SqueezeExcitation
from utils.checkpoint import load_model

BASELINES = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "se_resnet50", "se_resnet101", "se_resnet152", "eca_ns_resnet50",
]  # fmt: skip

BOTTLENECK_STAGES = [(256, 3), (512, 4), (1024, 6), (2048, 3)]  # ResNet-50: (channels, blocks) per stage


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layout(state_dict: dict) -> list:
    return [(key, tuple(value.shape)) for key, value in state_dict.items()]


def test_all_registered_and_sorted():
    assert set(BASELINES) <= set(models.model_names)
    assert models.model_names == sorted(models.model_names)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_plain_resnet_is_torchvision_key_for_key(depth):
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    ours = models.create_model(f"resnet{depth}")
    assert layout(ours.state_dict()) == layout(reference.state_dict())
    assert n_params(ours) == n_params(reference)


def test_torchvision_resnet50_weights_load_strictly_and_give_the_same_outputs():
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    for module in reference.modules():  # non-trivial BatchNorm statistics, so every buffer matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    ours = models.resnet50().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert n_params(ours) == 25_557_032
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_se_resnet50_is_the_papers_bias_free_se_and_senets_biased_one_is_an_argument_away():
    # Per block: FC(C -> C/16) and FC(C/16 -> C); the paper's 2 C^2 / r has no biases.
    se = sum(blocks * 2 * c * (c // 16) for c, blocks in BOTTLENECK_STAGES)
    assert se == 2_514_944
    assert n_params(models.se_resnet50()) == 25_557_032 + se == 28_071_976
    biases = sum(blocks * (c // 16 + c) for c, blocks in BOTTLENECK_STAGES)
    assert n_params(models.se_resnet50(bias=True)) == 28_071_976 + biases == 28_088_024


@pytest.mark.parametrize("arch, plain", [("se_resnet101", 44_549_160), ("se_resnet152", 60_192_808)])
def test_deeper_se_resnets_add_one_se_block_per_bottleneck(arch, plain):
    model = models.create_model(arch)
    blocks = [m for m in model.modules() if isinstance(m, SqueezeExcitation)]
    assert len(blocks) == sum(len(stage) for stage in (model.layer1, model.layer2, model.layer3, model.layer4))
    assert n_params(model) == plain + sum(n_params(b) for b in blocks)
    assert all(b.fc1.out_features == b.channels // 16 for b in blocks)


def test_se_sits_after_the_last_batchnorm_under_its_own_name():
    keys = list(models.se_resnet50().state_dict())
    first_block = [k for k in keys if k.startswith("layer1.0.")]
    assert first_block.index("layer1.0.se.fc1.weight") == first_block.index("layer1.0.bn3.num_batches_tracked") + 1
    assert "layer1.0.se.fc2.weight" in keys and "layer1.0.se.fc2.bias" not in keys
    assert "layer1.0.se.fc2.bias" in models.se_resnet50(bias=True).state_dict()


def test_se_block_is_the_senet_computation():
    torch.manual_seed(0)
    block = SqueezeExcitation(32, reduction=16, bias=True).double()
    x = torch.randn(2, 32, 5, 6, dtype=torch.float64)
    pooled = x.mean(dim=(2, 3))
    hidden = torch.relu(pooled @ block.fc1.weight.T + block.fc1.bias)
    gate = torch.sigmoid(hidden @ block.fc2.weight.T + block.fc2.bias)
    torch.testing.assert_close(block(x), x * gate[:, :, None, None])


def test_eca_ns_resnet50_count_is_c_times_k_per_layer():
    ks = [3, 5, 5, 7]  # ECA-ResNet-50's released k, the default
    eca_ns = sum(blocks * c * k for (c, blocks), k in zip(BOTTLENECK_STAGES, ks))
    assert eca_ns == 86_272
    model = models.eca_ns_resnet50()
    assert n_params(model) == 25_557_032 + eca_ns == 25_643_304
    assert model.state_dict()["layer4.2.eca.conv.weight"].shape == (2048, 1, 7)
    assert n_params(models.eca_ns_resnet50(k_size="3333")) == 25_557_032 + 3 * sum(c * b for c, b in BOTTLENECK_STAGES)


def eca_ns_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Channel c's gate: its own taps weight[c] over pooled channels c - (k-1)/2 .. c + (k-1)/2."""
    pooled = x.mean(dim=(2, 3))
    channels, k = weight.shape[0], weight.shape[-1]
    half = (k - 1) // 2
    logits = torch.zeros_like(pooled)
    for c in range(channels):
        for j in range(k):
            neighbour = c - half + j
            if 0 <= neighbour < channels:
                logits[:, c] += weight[c, 0, j] * pooled[:, neighbour]
    return x * torch.sigmoid(logits)[:, :, None, None]


@pytest.mark.parametrize("k_size", [1, 3, 5])
def test_eca_ns_is_the_non_shared_computation(k_size):
    torch.manual_seed(0)
    layer = NonSharedChannelAttention(9, k_size).double()
    x = torch.randn(2, 9, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), eca_ns_reference(x, layer.conv.weight))


def test_eca_ns_with_shared_taps_is_eca():
    torch.manual_seed(0)
    eca = EfficientChannelAttention(16, 5)
    eca_ns = NonSharedChannelAttention(16, 5)
    with torch.no_grad():
        eca_ns.conv.weight.copy_(eca.conv.weight.expand(16, 1, 5))
    x = torch.randn(3, 16, 7, 7)
    torch.testing.assert_close(eca_ns(x), eca(x))
    assert not torch.allclose(NonSharedChannelAttention(16, 5)(x), eca(x))


@pytest.mark.parametrize("arch", ["resnet18", "se_resnet50", "eca_ns_resnet50"])
def test_baselines_run_with_any_num_classes(arch):
    model = models.create_model(arch, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 40, 40)).shape == (2, 5)


def test_baselines_refuse_downloads():
    with pytest.raises(ValueError, match="never downloaded"):
        models.se_resnet50(pretrained=True)
    with pytest.raises(ValueError, match="k=4"):
        models.eca_ns_resnet50(k_size="3547")


@pytest.mark.parametrize("arch, kwargs", [("se_resnet50", {}), ("eca_ns_resnet50", {"k_size": "3335"})])
def test_checkpoint_loader_recognises_the_baselines(tmp_path, arch, kwargs):
    torch.manual_seed(0)
    model = models.create_model(arch, num_classes=10, **kwargs)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    loaded, info = load_model(tmp_path / "weights.pth")
    assert info["arch"] == arch and info["kwargs"]["num_classes"] == 10
    assert info["kwargs"].get("k_size") == ([3, 3, 3, 5] if kwargs else None)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

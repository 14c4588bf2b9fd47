"""Behaviour of the ECA layer, the constructors and the registry."""

import math

import pytest
import torch
import torch.nn.functional as F

import models
from models import EfficientChannelAttention, adaptive_kernel_size, eca_layer


def eca_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The paper's ECA written out: pool, zero-padded 1D conv across channels, sigmoid, scale."""
    pooled = x.mean(dim=(2, 3))
    k = weight.shape[-1]
    padded = F.pad(pooled, ((k - 1) // 2, (k - 1) // 2))
    mixed = torch.stack([(padded[:, c : c + k] * weight.view(-1)).sum(1) for c in range(x.shape[1])], 1)
    return x * torch.sigmoid(mixed)[:, :, None, None]


@pytest.mark.parametrize("k_size", [1, 3, 5, 7, 9])
def test_eca_layer_is_the_paper_computation(k_size):
    torch.manual_seed(0)
    layer = EfficientChannelAttention(12, k_size).double()
    x = torch.randn(3, 12, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x), eca_reference(x, layer.conv.weight))
    assert layer.conv.weight.shape == (1, 1, k_size)
    assert layer.conv.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["conv.weight"]


def test_eca_layer_keeps_the_original_name_and_signature():
    layer = eca_layer(64, k_size=5)
    assert isinstance(layer, EfficientChannelAttention)
    assert layer.conv.padding == (2,)


@pytest.mark.parametrize("k_size", [0, 2, -3])
def test_eca_layer_rejects_bad_kernel_size(k_size):
    with pytest.raises(ValueError, match="positive odd"):
        EfficientChannelAttention(8, k_size)


@pytest.mark.parametrize(
    "channels, expected",
    # t = int(|log2(C) + 1| / 2), then rounded up to odd; not clamped to 3 as timm does
    [(1, 1), (2, 1), (4, 1), (8, 3), (16, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7), (100, 3)],
)
def test_adaptive_kernel_size_is_eq9(channels, expected):
    assert adaptive_kernel_size(channels) == expected
    t = int(abs(math.log2(channels) + 1) / 2)
    assert expected == (t if t % 2 else t + 1)


def eca_kernel_sizes(model: torch.nn.Module) -> list:
    return [m.k_size for m in model.modules() if isinstance(m, EfficientChannelAttention)]


@pytest.mark.parametrize("k_size", [[3, 5, 5, 7], ["3", "5", "5", "7"], "3557", list("3557"), (3, 5, 5, 7)])
def test_k_size_forms_are_equivalent(k_size):
    ks = eca_kernel_sizes(models.eca_resnet50(k_size=k_size))
    assert ks == [3] * 3 + [5] * 4 + [5] * 6 + [7] * 3


def test_original_positional_call():
    model = models.eca_resnet50([3, 3, 3, 3], 10, False)
    assert set(eca_kernel_sizes(model)) == {3}
    assert model.fc.out_features == 10


def test_adaptive_k_for_resnets():
    assert sorted(set(eca_kernel_sizes(models.eca_resnet50(k_size="adaptive")))) == [5, 7]
    bottleneck = eca_kernel_sizes(models.eca_resnet50(k_size="adaptive"))
    assert bottleneck == [5] * 3 + [5] * 4 + [5] * 6 + [7] * 3  # 256, 512, 1024, 2048 channels
    basic = eca_kernel_sizes(models.eca_resnet18(k_size="adaptive"))
    assert basic == [3] * 2 + [5] * 2 + [5] * 2 + [5] * 2  # 64, 128, 256, 512 channels


def test_mobilenet_v2_kernel_rule():
    model = models.eca_mobilenet_v2()
    blocks = [m for m in model.features if isinstance(m, models.mobilenetv2.InvertedResidual)]
    for block in blocks:
        eca = block.conv[-1]
        assert eca.k_size == (1 if eca.channels < 96 else 3)
    assert eca_kernel_sizes(model) == [1] * 10 + [3] * 7
    adaptive = eca_kernel_sizes(models.eca_mobilenet_v2(k_size="adaptive"))
    assert adaptive == [adaptive_kernel_size(m.channels) for m in model.modules() if isinstance(m, EfficientChannelAttention)]
    assert isinstance(model.classifier[0], torch.nn.Dropout) and model.classifier[0].p == 0.25


@pytest.mark.parametrize(
    "k_size, message",
    [
        ("355", "has 3 entries"),
        ([3, 5, 5, 7, 9], "has 5 entries"),
        ("3547", "k=4"),
        ("3057", "k=0"),
        ("35a7", "not a digit"),
        ([3, 5.0, 5, 7], "not an integer"),
    ],
)
def test_bad_k_size_names_the_problem(k_size, message):
    with pytest.raises(ValueError, match=message):
        models.eca_resnet50(k_size=k_size)


def test_registry():
    assert models.model_names == sorted(models.model_names)
    for name in ["eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152", "eca_mobilenet_v2"]:
        assert name in models.model_names
    assert isinstance(models.create_model("eca_resnet18", num_classes=7), models.ResNet)
    with pytest.raises(ValueError, match="eca_resnet50") as error:
        models.create_model("eca_resnet51")
    assert "unknown model 'eca_resnet51'" in str(error.value)


def test_pretrained_true_is_a_clear_error():
    with pytest.raises(ValueError, match="never downloaded"):
        models.eca_resnet18(pretrained=True)


@pytest.mark.parametrize("arch", ["eca_resnet18", "eca_resnet50", "eca_mobilenet_v2"])
@pytest.mark.parametrize("size", [32, 45])
def test_any_num_classes_and_small_inputs(arch, size):
    model = models.create_model(arch, num_classes=13).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size + 3))
    assert out.shape == (2, 13)


def test_resnet_initialisation_is_the_originals():
    torch.manual_seed(0)
    model = models.eca_resnet50()
    conv = model.layer3[0].conv2  # 3x3, 256 out: std sqrt(2 / (9 * 256))
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.02)
    assert abs(conv.weight.mean().item()) < 1e-3
    assert torch.all(model.layer1[0].bn3.weight == 1) and torch.all(model.layer1[0].bn3.bias == 0)


def test_mobilenet_initialisation_is_the_originals():
    torch.manual_seed(0)
    model = models.eca_mobilenet_v2()
    linear = model.classifier[1]
    assert linear.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert torch.all(linear.bias == 0)
    pointwise = model.features[18][0]  # 1x1, 1280 out: kaiming fan_out -> std sqrt(2 / 1280)
    assert pointwise.weight.std().item() == pytest.approx(math.sqrt(2 / 1280), rel=0.02)


def test_gradients_reach_the_eca_taps():
    model = models.eca_resnet18(num_classes=4)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for name, parameter in model.named_parameters():
        if ".eca." in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name

"""The models against the released checkpoints' layout and the reference implementation's outputs."""

import json
from pathlib import Path

import pytest
import torch
from synthetic_weights import synthetic_input, synthetic_state_dict, synthetic_tensor, uniform

import models

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "state_dict_manifest.json").read_text())


def build(arch: str, ksize) -> torch.nn.Module:
    return models.create_model(arch) if ksize is None else models.create_model(arch, k_size=ksize)


@pytest.mark.parametrize("entry", sorted(MANIFEST))
def test_state_dict_matches_released_layout(entry):
    expected = MANIFEST[entry]
    model = build(expected["arch"], expected["ksize"])
    actual = [[key, list(tensor.shape)] for key, tensor in model.state_dict().items()]
    assert actual == expected["keys"]


@pytest.mark.parametrize("arch", sorted(models.DEFAULT_KERNEL_SIZES))
def test_default_k_is_the_released_checkpoints(arch):
    expected = MANIFEST[f"{arch}_k{models.DEFAULT_KERNEL_SIZES[arch]}"]["keys"]
    actual = [[key, list(tensor.shape)] for key, tensor in models.create_model(arch).state_dict().items()]
    assert actual == expected


def test_synthetic_rule_matches_its_test_vectors():
    assert uniform(3410522421, 3).tolist() == [0.6038281579731796, 0.11908761805473222, 0.22991141794280545]
    assert synthetic_input()[0, 0, 0, :3].tolist() == [0.06567070070500636, 0.777602831861858, 0.08916184841956198]
    eca_taps = synthetic_tensor("layer1.0.eca.conv.weight", [1, 1, 3]).flatten().tolist()
    assert eca_taps == [0.39577737349278896, 0.8045855034965355, -0.9078464209063757]


@pytest.mark.parametrize(
    "fixture", ["logits_eca_resnet50_k3557.json", "logits_eca_mobilenet_v2.json"]
)
def test_reference_logits_are_reproduced(fixture):
    reference = json.loads((FIXTURES / fixture).read_text())
    model = build(reference["arch"], reference["ksize"])
    model.load_state_dict(synthetic_state_dict(model), strict=True)
    model = model.double().eval()
    with torch.no_grad():
        logits = model(synthetic_input(reference["input"]["batch"], reference["input"]["size"]))
    expected = torch.tensor(reference["logits"], dtype=torch.float64)
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


def test_module_prefixed_state_dict_loads_strictly_once_stripped():
    model = models.eca_resnet50()
    released = {f"module.{key}": value for key, value in synthetic_state_dict(model).items()}
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(released, strict=True)
    stripped = {key.removeprefix("module."): value for key, value in released.items()}
    model.load_state_dict(stripped, strict=True)
    assert torch.equal(model.layer4[2].eca.conv.weight, released["module.layer4.2.eca.conv.weight"])


def test_eca_resnet50_parameter_count():
    model = models.eca_resnet50()
    assert sum(p.numel() for p in model.parameters()) == 25_557_112
    eca = [p for name, p in model.named_parameters() if ".eca." in name]
    assert sum(p.numel() for p in eca) == 80

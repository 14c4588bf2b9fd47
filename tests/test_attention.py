"""The attention layers of models.attention: each one's computation, parameters and names, and
every <attention>_<backbone> model built from them."""

import pytest
import torch
import torch.nn.functional as F

import models
from models.attention import attention_kind, attention_names, create_attention

STAGE_WIDTHS = [64, 128, 256, 512, 1024, 2048]  # every ResNet stage's output channels


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_params(name: str, c: int, k: int = 3) -> int:
    """Table 2's #Param per module (r = 16, no biases), and CBAM's and GCNet's from their papers."""
    return {
        "none": 0,
        "se": 2 * c * (c // 16),
        "se_var1": 0,
        "se_var2": c,
        "se_var3": c * c,
        "se_gc1": c * c // 16,
        "se_gc2": 16 * c,
        "se_gc3": 8 * c,
        "eca_ns": k * c,
        "eca": k,
        "cbam": 2 * c * (c // 16) + 2 * 7 * 7,  # the shared MLP, then the 7 x 7 conv over [mean; max]
        "gc": 2 * c * (c // 16) + 2 * c + 1 + 3 * (c // 16),  # conv_mask with bias, transform with LayerNorm
    }[name]


EXPECTED_KEYS = {
    "se": ["fc1.weight", "fc2.weight"],
    "se_var1": [],
    "se_var2": ["fc.weight"],
    "se_var3": ["fc.weight"],
    "se_gc1": ["fc.weight"],
    "se_gc2": ["fc.weight"],
    "se_gc3": ["fc.weight"],
    "eca_ns": ["conv.weight"],
    "eca": ["conv.weight"],
    "cbam": ["fc1.weight", "fc2.weight", "spatial.weight"],
    "gc": [
        "conv_mask.weight", "conv_mask.bias",
        "channel_add_conv.0.weight", "channel_add_conv.0.bias",
        "channel_add_conv.1.weight", "channel_add_conv.1.bias",
        "channel_add_conv.3.weight", "channel_add_conv.3.bias",
    ],
}  # fmt: skip
LAYERS = sorted(EXPECTED_KEYS)
BLOCK_ATTRIBUTE = {"eca": "eca", "eca_ns": "eca", "cbam": "cbam", "gc": "gc"}


def test_every_registered_attention_is_tested():
    assert set(attention_names) == set(LAYERS) | {"none"}
    assert create_attention("none", 64) is None
    with pytest.raises(ValueError, match="unknown attention 'sk'; choose one of: cbam, eca"):
        create_attention("sk", 64)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("channels", STAGE_WIDTHS)
def test_parameter_count_is_the_expression(name, channels):
    with torch.device("meta"):
        layer = create_attention(name, channels)
    assert n_params(layer) == expected_params(name, channels)


@pytest.mark.parametrize("channels", STAGE_WIDTHS)
def test_the_biased_originals_are_one_argument_away(channels):
    with torch.device("meta"):
        se = create_attention("se", channels, bias=True)
        cbam = create_attention("cbam", channels, bias=True, spatial_batch_norm=True)
    assert n_params(se) == expected_params("se", channels) + channels // 16 + channels
    assert n_params(cbam) == expected_params("cbam", channels) + channels // 16 + channels + 2  # + the BatchNorm's affine


@pytest.mark.parametrize("name", LAYERS)
def test_state_dict_names_and_block_attribute(name):
    layer = create_attention(name, 32)
    assert list(layer.state_dict()) == EXPECTED_KEYS[name]
    assert layer.block_attribute == BLOCK_ATTRIBUTE.get(name, "se")
    assert layer.fuses_residual == (name == "eca")


# Parameters whose gradient is zero in exact arithmetic: GCNet's conv_mask.bias adds the same amount
# to every position's logit, and a softmax over the positions does not change when every logit does.
ZERO_GRADIENT = {"gc": {"conv_mask.bias"}}


@pytest.mark.parametrize("name", LAYERS)
def test_forward_and_backward_keep_the_shape_and_reach_every_parameter(name):
    """In float64, so that a gradient that is zero in exact arithmetic is zero to within 1e-12 of its
    neighbour's scale (float32 leaves rounding noise of about 1e-7, or exactly 0, by CPU and thread
    count), and every other gradient is non-zero for a reason, not by rounding."""
    torch.manual_seed(0)
    layer = create_attention(name, 32).double()
    if name == "gc":  # GCNet starts its last conv at zero; move it off so that the gradients reach the context
        torch.nn.init.normal_(layer.channel_add_conv[-1].weight)
    x = torch.randn(2, 32, 5, 6, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for key, parameter in layer.named_parameters():
        assert parameter.grad is not None, key
        if key in ZERO_GRADIENT.get(name, ()):
            scale = layer.get_parameter(key.replace(".bias", ".weight")).grad.abs().max()
            assert parameter.grad.abs().max() <= 1e-12 * scale, key
        else:
            assert parameter.grad.abs().sum() > 0, key


@pytest.mark.parametrize("name", LAYERS)
def test_scripted_layer_matches_eager(name):
    torch.manual_seed(0)
    layer = create_attention(name, 32).eval()
    x = torch.randn(2, 32, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(layer)(x), layer(x))


def _pooled(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3))


def test_se_var1_gates_by_the_pooled_response_itself():
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(create_attention("se_var1", 8)(x), x * torch.sigmoid(_pooled(x))[:, :, None, None])


@pytest.mark.parametrize("name, groups", [("se_var2", 32), ("se_var3", 1), ("se_gc1", 16), ("se_gc2", 2), ("se_gc3", 4)])
def test_grouped_gates_are_one_block_diagonal_layer(name, groups):
    torch.manual_seed(0)
    layer = create_attention(name, 32).double()
    assert layer.groups == groups
    weight = layer.fc.weight[:, :, 0]  # (C, C / G): output channel o reads input group o // (C / G)
    per_group = 32 // groups
    matrix = torch.zeros(32, 32, dtype=torch.float64)
    for out_channel in range(32):
        start = (out_channel // per_group) * per_group
        matrix[out_channel, start : start + per_group] = weight[out_channel]
    x = torch.randn(2, 32, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x * torch.sigmoid(_pooled(x) @ matrix.T)[:, :, None, None])


def test_cbam_is_channel_then_spatial_attention():
    torch.manual_seed(0)
    layer = create_attention("cbam", 32).double()
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return torch.relu(v @ layer.fc1.weight.T) @ layer.fc2.weight.T

    channel_gated = x * torch.sigmoid(mlp(_pooled(x)) + mlp(x.amax(dim=(2, 3))))[:, :, None, None]
    descriptor = torch.stack([channel_gated.mean(dim=1), channel_gated.amax(dim=1)], dim=1)
    spatial = torch.sigmoid(F.conv2d(descriptor, layer.spatial.weight, padding=3))
    torch.testing.assert_close(layer(x), channel_gated * spatial)


def test_gc_adds_the_transformed_softmax_context():
    torch.manual_seed(0)
    layer = create_attention("gc", 32).double()
    torch.nn.init.normal_(layer.channel_add_conv[-1].weight)
    x = torch.randn(2, 32, 4, 5, dtype=torch.float64)
    logits = torch.einsum("nchw,c->nhw", x, layer.conv_mask.weight.view(-1)) + layer.conv_mask.bias
    weights = torch.softmax(logits.flatten(1), dim=1)  # over the 20 positions
    context = torch.einsum("ncp,np->nc", x.flatten(2), weights)
    hidden = context @ layer.channel_add_conv[0].weight[:, :, 0, 0].T + layer.channel_add_conv[0].bias
    norm = layer.channel_add_conv[1]
    hidden = torch.relu(F.layer_norm(hidden, (2,)) * norm.weight.view(-1) + norm.bias.view(-1))
    added = hidden @ layer.channel_add_conv[3].weight[:, :, 0, 0].T + layer.channel_add_conv[3].bias
    torch.testing.assert_close(layer(x), x + added[:, :, None, None])
    assert torch.equal(create_attention("gc", 32)(x.float()), x.float())  # zero-initialised: the identity


# --- the networks ------------------------------------------------------------------------

BOTTLENECK_STAGES = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
BASIC_STAGES = [(64, 2), (128, 2), (256, 2), (512, 2)]


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("depth, stages, plain", [(18, BASIC_STAGES, 11_689_512), (50, BOTTLENECK_STAGES, 25_557_032)])
def test_resnet_with_each_attention_adds_its_expression_per_block(name, depth, stages, plain):
    arch = f"{name}_resnet{depth}"
    k_sizes = [int(k) for k in models.DEFAULT_KERNEL_SIZES[f"eca_resnet{depth}"]]
    in_stages = attention_kind(name).resnet_stages
    added = sum(
        blocks * expected_params(name, c, k) for stage, ((c, blocks), k) in enumerate(zip(stages, k_sizes)) if stage in in_stages
    )
    with torch.device("meta"):
        model = models.create_model(arch)
    assert n_params(model) == plain + added
    attribute = BLOCK_ATTRIBUTE.get(name, "se")
    for stage in range(4):
        block = getattr(model, f"layer{stage + 1}")[0]
        assert hasattr(block, attribute) == (stage in in_stages), (arch, stage)
        assert block.attention_name == (attribute if stage in in_stages else None)
    keys = [key for key in model.state_dict() if key.startswith("layer4.0.")]
    assert [key.split(".", 3)[3] for key in keys if key.startswith(f"layer4.0.{attribute}.")] == EXPECTED_KEYS[name]


def test_gcnet_sits_in_layer2_to_layer4_and_adds_2521741_at_resnet50():
    with torch.device("meta"):
        assert n_params(models.gc_resnet50()) - n_params(models.resnet50()) == 2_521_741
    assert attention_kind("gc").resnet_stages == (1, 2, 3)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_every_attention_has_a_model_at_every_depth(depth):
    for name in attention_names:
        assert models.resnet_model_name(name, depth) in models.model_names
    assert {"mobilenet_v2", "se_mobilenet_v2", "eca_mobilenet_v2"} <= set(models.model_names)


@pytest.mark.parametrize("arch", ["se_resnet18", "cbam_resnet18", "gc_resnet18", "se_gc2_resnet18", "eca_ns_resnet18"])
def test_other_attentions_take_the_plain_block_ending(arch):
    """Only ECA's fuses_residual gives its in-place ending; the others end as torchvision's blocks do."""
    model = models.create_model(arch, num_classes=3).train()
    seen = []
    model.layer2[0].register_forward_hook(lambda module, inputs, output: seen.append(output.grad_fn.name()))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert seen == ["ReluBackward0"]


def test_a_kernel_size_for_an_attention_without_one_is_a_type_error():
    with pytest.raises(TypeError, match="'cbam' has no kernel size to set"):
        models.cbam_resnet18(k_size="3333")
    with pytest.raises(TypeError, match="'se' has no kernel size to set"):
        models.MobileNetV2(attention="se", kernel_sizes=[3] * 17)


def test_eca_ns_at_every_depth_defaults_to_the_eca_release_k():
    ks = [m.k_size for m in models.eca_ns_resnet101().modules() if isinstance(m, models.NonSharedChannelAttention)]
    assert ks == [3] * 3 + [3] * 4 + [5] * 23 + [7] * 3


@pytest.mark.parametrize("arch, attention_params", [("mobilenet_v2", 0), ("se_mobilenet_v2", 56_928), ("eca_mobilenet_v2", 10 * 1 + 7 * 3)])
def test_mobilenet_v2_rows(arch, attention_params):
    """torchvision's MobileNetV2 (3,504,872 parameters), with SE (r = 8, no biases) or ECA closing every block."""
    import torchvision

    model = models.create_model(arch)
    assert n_params(model) == 3_504_872 + attention_params
    if arch == "mobilenet_v2":
        reference = torchvision.models.mobilenet_v2(weights=None)
        assert [(k, v.shape) for k, v in model.state_dict().items()] == [(k, v.shape) for k, v in reference.state_dict().items()]
    blocks = [m for m in model.features if isinstance(m, models.mobilenetv2.InvertedResidual)]
    assert len(blocks) == 17
    assert all(isinstance(block.conv[-1], torch.nn.BatchNorm2d) == (arch == "mobilenet_v2") for block in blocks)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)

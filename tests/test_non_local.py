"""The non-local block and Table 5's "+ 1 NL" Mask R-CNN: what the block computes (against the
embedded-Gaussian formula written out here), where it sits, what it adds in parameters and in
MMDetection v1's FLOPs, that its files are recognised, and that it scripts and exports."""

import math

import torch

import models
from models import layout
from models.non_local import NonLocal2d
from utils.paper.count_tables import count_detector


def written_out(block: NonLocal2d, x: torch.Tensor) -> torch.Tensor:
    """x + BN(W_z y), y_i = sum_j softmax_j(theta_i . phi_j / sqrt(C')) g_j, position by position."""
    batch, channels, height, width = x.shape
    out = torch.empty_like(x)
    for n in range(batch):
        pixels = x[n].reshape(channels, -1).T  # (HW, C)
        theta = pixels @ block.theta.weight.flatten(1).T + block.theta.bias
        phi = pixels @ block.phi.weight.flatten(1).T + block.phi.bias
        g = pixels @ block.g.weight.flatten(1).T + block.g.bias
        y = torch.stack([torch.softmax(phi @ theta[i] / math.sqrt(block.inner), dim=0) @ g for i in range(len(pixels))])
        z = y @ block.conv_out.weight.flatten(1).T  # (HW, C)
        bn = block.bn
        z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        out[n] = (pixels + z).T.reshape(channels, height, width)
    return out


def test_the_block_computes_the_embedded_gaussian_and_starts_as_the_identity():
    torch.manual_seed(0)
    block = NonLocal2d(8).double().eval()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(block(x), x)  # W_z starts at zero
        for parameter in (block.conv_out.weight, block.bn.weight, block.bn.bias, block.bn.running_mean):
            parameter.normal_()
        block.bn.running_var.uniform_(0.5, 1.5)
        torch.testing.assert_close(block(x), written_out(block, x), rtol=0, atol=1e-12)


def test_nl_resnet50_holds_one_block_right_before_the_last_of_layer3():
    with torch.device("meta"):
        model, plain = models.nl_resnet50(), models.resnet50()
    assert [type(block).__name__ for block in model.layer3] == ["Bottleneck"] * 5 + ["NonLocal2d", "Bottleneck"]
    added = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert added == 3 * (1024 * 512 + 512) + 512 * 1024 + 2 * 1024 == 2_100_736
    state = {key: torch.empty(value.shape, device="meta") for key, value in model.state_dict().items()}
    assert layout.infer_arch(state) == "nl_resnet50"


def test_the_mask_rcnn_counts_the_blocks_convolutions_and_batchnorm():
    """At 1280 x 800 res4 is 80 x 50: three 1x1 convs C -> C/2 with bias, one C/2 -> C without,
    a BatchNorm (2 per element); the attention's matrix products are functional and count nothing."""
    positions = 80 * 50
    nl, plain = count_detector("maskrcnn_nl_resnet50_fpn").counts, count_detector("maskrcnn_resnet50_fpn").counts
    assert nl.flops - plain.flops == (3 * (1024 * 512 + 512) + 512 * 1024 + 2 * 1024) * positions == 8_402_944_000
    assert nl.trainable_params - plain.trainable_params == nl.params - plain.params == 2_100_736
    assert nl.params == 46_501_429


def test_the_block_scripts_and_exports():
    torch.manual_seed(0)
    block = NonLocal2d(8).eval()
    torch.nn.init.normal_(block.conv_out.weight)
    x = torch.randn(2, 8, 4, 6)
    with torch.no_grad():
        expected = block(x)
        torch.testing.assert_close(torch.jit.script(block)(x), expected)
        torch.testing.assert_close(torch.export.export(block, (x,)).module()(x), expected)

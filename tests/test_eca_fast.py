"""The fast ECA path against the plain computation: same outputs, same gradients, no extra memory."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import models
from models import EfficientChannelAttention
from models.mobilenetv2 import InvertedResidual
from scripts.benchmark import cpu_step_peak_rise, original_eca_forward, with_reference_eca

FORMS = ["scale", "scale_in_place", "residual", "residual_over_identity"]
SCALE_FORMS = ("scale", "scale_in_place")


def plain_eca(x: torch.Tensor, weight: torch.Tensor, identity=None) -> torch.Tensor:
    """ECA as plain autograd ops: pool, conv across channels, sigmoid, scale (then add, ReLU)."""
    pooled = x.mean(dim=(2, 3)).unsqueeze(1)
    gate = torch.sigmoid(F.conv1d(pooled, weight, padding=(weight.shape[-1] - 1) // 2))
    out = x * gate.view(x.shape[0], -1, 1, 1)
    return out if identity is None else torch.relu(out + identity)


def fast_eca(layer: EfficientChannelAttention, form: str, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """The layer in one of its four forms; those that overwrite x or identity get copies."""
    layer.inplace = form == "scale_in_place"
    if form == "scale":
        return layer(x)
    if form == "scale_in_place":
        return layer(x.clone())
    return layer(x.clone(), identity.clone(), overwrite_identity=form == "residual_over_identity")


def plain_for(form: str, x: torch.Tensor, weight: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    return plain_eca(x, weight, None if form in SCALE_FORMS else identity)


def layout(t: torch.Tensor, memory_format: str) -> torch.Tensor:
    if memory_format == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if memory_format == "strided":  # a non-contiguous view: every other column of a wider tensor
        return torch.cat([t, t], dim=3)[..., ::2]
    return t.contiguous()


def relative_error(value: torch.Tensor, exact: torch.Tensor) -> float:
    return ((value.double() - exact.double()).norm() / exact.double().norm()).item()


def outputs_and_grads(fn, x, identity, weight, grad_out):
    x, identity = x.detach().requires_grad_(), identity.detach().requires_grad_()
    out = fn(x, identity)
    grads = torch.autograd.grad(out, (x, identity, weight), grad_out, allow_unused=True)
    return out, grads


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("memory_format", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_outputs_and_gradients_equal_the_plain_computation(form, memory_format, dtype, tol):
    torch.manual_seed(0)
    layer = EfficientChannelAttention(24, 5).to(dtype)
    x = layout(torch.randn(3, 24, 7, 6, dtype=dtype), memory_format)
    identity = layout(torch.randn(3, 24, 7, 6, dtype=dtype), memory_format)
    grad_out = torch.randn(3, 24, 7, 6, dtype=dtype)
    weight = layer.conv.weight

    out, grads = outputs_and_grads(lambda x, i: fast_eca(layer, form, x, i), x, identity, weight, grad_out)
    ref, ref_grads = outputs_and_grads(lambda x, i: plain_for(form, x, weight, i), x, identity, weight, grad_out)

    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    assert out.dtype == dtype
    if memory_format == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    for grad, ref_grad in zip(grads, ref_grads):
        if ref_grad is None:  # the identity in the scale forms
            assert grad is None
        else:
            torch.testing.assert_close(grad, ref_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("k_size", [1, 3, 7])  # 7: wider than the 6 channels, all taps partly in the padding
@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_float64(form, k_size):
    torch.manual_seed(1)
    layer = EfficientChannelAttention(6, k_size).double()
    layer.inplace = form == "scale_in_place"
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    identity = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = layer.conv.weight.detach().clone().requires_grad_()

    def fn(x, identity, weight):
        if form in SCALE_FORMS:
            return functional_call(layer, {"conv.weight": weight}, (x.clone(),))
        overwrite_identity = form == "residual_over_identity"
        return functional_call(layer, {"conv.weight": weight}, (x.clone(), identity.clone(), overwrite_identity))

    assert torch.autograd.gradcheck(fn, (x, identity, weight), fast_mode=True)


@pytest.mark.parametrize("form", FORMS)
def test_input_without_grad_still_trains_the_weight(form):
    torch.manual_seed(2)
    layer = EfficientChannelAttention(16, 3).double()
    x, identity = torch.randn(2, 16, 4, 4, dtype=torch.float64), torch.randn(2, 16, 4, 4, dtype=torch.float64)
    out = fast_eca(layer, form, x, identity)
    (weight_grad,) = torch.autograd.grad(out.square().sum(), layer.conv.weight)
    (ref_grad,) = torch.autograd.grad(plain_for(form, x, layer.conv.weight, identity).square().sum(), layer.conv.weight)
    torch.testing.assert_close(weight_grad, ref_grad)


@pytest.mark.parametrize("form", FORMS)
def test_frozen_weight_still_passes_gradient_to_the_input(form):
    torch.manual_seed(3)
    layer = EfficientChannelAttention(16, 3).double().requires_grad_(False)
    x = torch.randn(2, 16, 4, 4, dtype=torch.float64, requires_grad=True)
    identity = torch.randn(2, 16, 4, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad(fast_eca(layer, form, x, identity).square().sum(), x)
    (ref_grad,) = torch.autograd.grad(plain_for(form, x, layer.conv.weight, identity).square().sum(), x)
    torch.testing.assert_close(grad, ref_grad)
    assert layer.conv.weight.grad is None


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("form", FORMS)
def test_eval_without_autograd(context, form):
    torch.manual_seed(4)
    layer = EfficientChannelAttention(16, 5).eval()
    x, identity = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    with context():
        out = fast_eca(layer, form, x, identity)
    assert out.grad_fn is None
    torch.testing.assert_close(out, plain_for(form, x, layer.conv.weight, identity).detach())


@pytest.mark.parametrize("form", FORMS)
def test_in_place_forms_write_in_place(form):
    """The in-place forms reuse a buffer instead of allocating: that is where their memory saving comes from."""
    layer = EfficientChannelAttention(8, 3)
    layer.inplace = form == "scale_in_place"
    x, identity = torch.randn(2, 8, 4, 4, requires_grad=True) * 1, torch.randn(2, 8, 4, 4)
    out = layer(x, identity, overwrite_identity=form == "residual_over_identity") if form not in SCALE_FORMS else layer(x)
    expected = {"scale": None, "scale_in_place": x, "residual": x, "residual_over_identity": identity}[form]
    if expected is None:
        assert out.data_ptr() not in (x.data_ptr(), identity.data_ptr())
    else:
        assert out.data_ptr() == expected.data_ptr()


def test_bfloat16_autocast_keeps_the_input_dtype_and_a_float32_gate():
    """Under autocast the gate is computed in float32 (the weight's dtype) and the output stays bfloat16."""
    torch.manual_seed(5)
    layer = EfficientChannelAttention(32, 3)
    x = torch.randn(4, 32, 6, 6).to(torch.bfloat16)
    identity = torch.randn(4, 32, 6, 6).to(torch.bfloat16)
    grad_out = torch.randn(4, 32, 6, 6).to(torch.bfloat16)
    for form in FORMS:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, grads = outputs_and_grads(
                functools.partial(fast_eca, layer, form), x, identity, layer.conv.weight, grad_out
            )
        ref, ref_grads = outputs_and_grads(
            lambda x, i, form=form: plain_for(form, x.float(), layer.conv.weight, i.float()),
            x,
            identity,
            layer.conv.weight,
            grad_out.float(),
        )
        assert out.dtype == torch.bfloat16 and grads[0].dtype == torch.bfloat16
        assert grads[2].dtype == torch.float32
        # Norms, not elements: a bfloat16 rounding may flip the ReLU at an output near zero.
        assert relative_error(out, ref) < 1e-2
        assert relative_error(grads[0], ref_grads[0]) < 2e-2
        assert relative_error(grads[2], ref_grads[2]) < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_is_as_accurate_as_the_original_code(dtype):
    """Under autocast both drift from float32; the fast path may not drift more than the original does."""
    torch.manual_seed(6)
    model = models.eca_resnet18(num_classes=10).cuda().to(memory_format=torch.channels_last)
    original = with_reference_eca(copy.deepcopy(model), "original")
    exact = with_reference_eca(copy.deepcopy(model), "original")
    images = torch.randn(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    results = []
    for net, precision in ((model, dtype), (original, dtype), (exact, None)):
        with torch.autocast("cuda", dtype=dtype, enabled=precision is not None):
            logits = net(images)
        logits.float().logsumexp(1).sum().backward()
        results.append((logits, net.layer1[0].eca.conv.weight.grad, net.layer1[0].conv1.weight.grad))
    fast, orig, ref = results
    assert fast[0].dtype == dtype and fast[1].dtype == torch.float32
    for value, baseline, exact_value in zip(fast, orig, ref):  # logits, ECA weight grad, a conv weight grad
        assert relative_error(value, exact_value) <= 1.5 * relative_error(baseline, exact_value) + 1e-3


def test_benchmark_reference_is_the_plain_computation():
    torch.manual_seed(7)
    layer = EfficientChannelAttention(16, 3).double()
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(original_eca_forward(x, layer.conv), plain_eca(x, layer.conv.weight))


@pytest.mark.parametrize(
    "arch, memory_format",
    [
        ("eca_resnet18", torch.contiguous_format),
        ("eca_resnet50", torch.contiguous_format),
        ("eca_resnet50", torch.channels_last),
        ("eca_mobilenet_v2", torch.contiguous_format),
        ("eca_mobilenet_v2", torch.channels_last),
    ],
)
def test_model_matches_the_original_code_in_training(arch, memory_format):
    """Whole networks, downsampling blocks (ResNet) and blocks with and without a residual
    connection (MobileNetV2, k = 1 and 3) included: logits, every gradient and BatchNorm's running stats."""
    torch.manual_seed(8)
    model = models.create_model(arch, num_classes=10).double().to(memory_format=memory_format).train()
    reference = with_reference_eca(copy.deepcopy(model), "original")
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64).contiguous(memory_format=memory_format)
    torch.manual_seed(9)  # the same dropout in MobileNetV2's classifier for both
    logits = model(images)
    torch.manual_seed(9)
    ref_logits = reference(images)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-10)
    targets = torch.tensor([3, 7])
    F.cross_entropy(logits, targets).backward()
    F.cross_entropy(ref_logits, targets).backward()
    ref_params = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        ref_grad = ref_params[name].grad
        tol = 1e-9 * ref_grad.abs().max().item()
        torch.testing.assert_close(param.grad, ref_grad, rtol=1e-9, atol=tol, msg=name)
    for (name, buffer), ref_buffer in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(buffer, ref_buffer, msg=name)


def saved_activation_bytes(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for backward after one forward pass."""
    storages = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(images)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(nbytes for ptr, nbytes in storages.items() if ptr not in params)


def output_bytes(model: torch.nn.Module, images: torch.Tensor, modules: list[torch.nn.Module]) -> int:
    """Bytes of the outputs of ``modules`` in one forward pass of ``model``."""
    sizes = []
    hooks = [
        module.register_forward_hook(lambda module, inputs, output: sizes.append(output.numel() * output.element_size()))
        for module in modules
    ]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return sum(sizes)


def block_output_bytes(model: torch.nn.Module, images: torch.Tensor, downsampling_only: bool) -> int:
    """Bytes of the residual blocks' outputs (of those with a downsample branch, if asked)."""
    blocks = [m for m in model.modules() if hasattr(m, "downsample") and (m.downsample is not None or not downsampling_only)]
    return output_bytes(model, images, blocks)


def test_eca_resnet50_saves_one_activation_less_per_block_than_the_original_code():
    """Memory as an exact count, not a measurement: what autograd keeps for backward.

    The original code's ECA keeps its input alive for backward in every block. The fused
    ending keeps nothing full-size that ResNet-50 does not keep, except in the four blocks
    with a downsample branch, where neither ECA's input nor the identity is saved by anyone else.
    """
    torch.manual_seed(9)
    images = torch.randn(2, 3, 64, 64)
    model = models.eca_resnet50()
    plain = saved_activation_bytes(models.resnet50(), images)
    fast = saved_activation_bytes(model, images)
    original = saved_activation_bytes(with_reference_eca(copy.deepcopy(model), "original"), images)
    downsampling = block_output_bytes(model, images, downsampling_only=True)
    every_block = block_output_bytes(model, images, downsampling_only=False)
    gates = 16 * 2 * images.shape[0] * 2048 * 8  # per ECA layer: pooled responses and gate, at most 2048 channels
    assert downsampling <= fast - plain <= downsampling + gates
    assert original - plain >= every_block


def attention_output_bytes(model: torch.nn.Module, images: torch.Tensor, residual_only: bool) -> int:
    """Bytes of the attention layers' outputs in MobileNetV2's blocks (of the blocks with a residual connection, if asked)."""
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual) and (m.use_res_connect or not residual_only)]
    return output_bytes(model, images, [block.conv[-1] for block in blocks])


def test_eca_mobilenet_v2_keeps_its_scaled_map_only_where_a_residual_is_added():
    """Written over the projection's BatchNorm output, ECA's product is what the next block keeps for
    its own backward anyway where no residual is added to it; where one is, it is one map more than
    MobileNetV2 keeps. The original code keeps its input in every block."""
    torch.manual_seed(13)
    images = torch.randn(2, 3, 64, 64)
    model = models.eca_mobilenet_v2()
    plain = saved_activation_bytes(models.mobilenet_v2(), images)
    fast = saved_activation_bytes(model, images)
    original = saved_activation_bytes(with_reference_eca(copy.deepcopy(model), "original"), images)
    residual = attention_output_bytes(model, images, residual_only=True)
    every_block = attention_output_bytes(model, images, residual_only=False)
    gates = 17 * 2 * images.shape[0] * 320 * 8  # per ECA layer: pooled responses and gate, at most 320 channels
    assert residual <= fast - plain <= residual + gates
    assert original - plain >= every_block


def test_conv_hooks_see_every_call():
    """FLOP counters (utils/counting/complexity.py) hook ``conv``: the fast path must call it as a module."""
    layer = EfficientChannelAttention(8, 3)
    calls = []
    hook = layer.conv.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    layer(x)
    layer(x * 1, torch.randn(2, 8, 4, 4))
    with torch.no_grad():
        layer(x)
    assert calls == [torch.Size([2, 1, 8])] * 3
    hook.remove()
    seen = []
    global_hook = torch.nn.modules.module.register_module_forward_hook(lambda module, inputs, output: seen.append(module))
    try:
        layer(x)
    finally:
        global_hook.remove()
    assert seen == [layer.conv, layer]


def test_the_hooked_and_the_unhooked_gate_agree():
    """Without hooks the gate's k-tap convolution is shifted products, with them the Conv1d module: the same numbers."""
    torch.manual_seed(14)
    layer = EfficientChannelAttention(40, 5).double()
    x = torch.randn(3, 40, 4, 4, dtype=torch.float64)
    unhooked = layer._gate(x)[1]
    hook = layer.conv.register_forward_hook(lambda module, inputs, output: None)
    hooked = layer._gate(x)[1]
    hook.remove()
    torch.testing.assert_close(hooked, unhooked, rtol=1e-14, atol=1e-15)


def test_in_place_scale_keeps_a_leaf_that_requires_grad():
    """``inplace`` is a permission: a leaf that autograd must keep is not written over."""
    layer = EfficientChannelAttention(8, 3)
    layer.inplace = True
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    before = x.detach().clone()
    out = layer(x)
    assert out.data_ptr() != x.data_ptr() and torch.equal(x.detach(), before)
    out.sum().backward()
    assert x.grad is not None


def test_no_state_outside_parameters():
    """DataParallel replicas share nothing but parameters: forward and backward must not store any."""
    layer = EfficientChannelAttention(8, 3)
    before = {key: value for key, value in vars(layer).items() if key != "_modules"}
    layer(torch.randn(2, 8, 4, 4, requires_grad=True)).sum().backward()
    assert {key: value for key, value in vars(layer).items() if key != "_modules"}.keys() == before.keys()
    assert list(layer.state_dict()) == ["conv.weight"] and not list(layer.buffers())


@pytest.mark.parametrize("form", FORMS)
def test_torch_compile_traces_the_layer(form):
    """Dynamo traces the plain branch (fullgraph: no graph breaks); aot_eager runs it without a C++ build."""
    torch.manual_seed(10)
    layer = EfficientChannelAttention(8, 3).double()
    compiled = torch.compile(lambda x, i: fast_eca(layer, form, x, i), backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    identity = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    grad_out = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    out, grads = outputs_and_grads(compiled, x, identity, layer.conv.weight, grad_out)
    ref, ref_grads = outputs_and_grads(
        lambda x, i: plain_for(form, x, layer.conv.weight, i), x, identity, layer.conv.weight, grad_out
    )
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grads[2], ref_grads[2])


def test_benchmark_cpu_peak_counts_every_allocation_and_free():
    """The CPU peak-memory measure of scripts/benchmark.py on a step whose peak is known: two 4 MB
    tensors alive at once, then one freed and a third allocated."""

    def step() -> None:
        first = torch.ones(1_000_000)
        second = first * 2
        del first
        third = second + 1
        del second, third

    assert 8_000_000 <= cpu_step_peak_rise(step) < 8_100_000


def plain_eca_with_drop(x, weight, identity, sample_scale):
    """The residual ending under stochastic depth as plain autograd ops: relu(x * gate * scale + identity)."""
    return torch.relu(plain_eca(x, weight) * sample_scale + identity)


@pytest.mark.parametrize("form", ["residual", "residual_over_identity"])
def test_stochastic_depth_in_the_fused_ending_equals_the_plain_computation(form):
    """Per-sample factors (0: the sample's branch dropped; 1 / (1 - p): kept) folded into the gate."""
    torch.manual_seed(11)
    layer = EfficientChannelAttention(12, 3).double()
    x = torch.randn(4, 12, 3, 5, dtype=torch.float64)
    identity = torch.randn(4, 12, 3, 5, dtype=torch.float64)
    scale = torch.tensor([0.0, 2.5, 2.5, 0.0], dtype=torch.float64).view(4, 1, 1, 1)
    grad_out = torch.randn(4, 12, 3, 5, dtype=torch.float64)
    overwrite_identity = form == "residual_over_identity"
    out, grads = outputs_and_grads(lambda x, i: layer(x.clone(), i.clone(), overwrite_identity, scale), x, identity,
                                   layer.conv.weight, grad_out)
    ref, ref_grads = outputs_and_grads(lambda x, i: plain_eca_with_drop(x, layer.conv.weight, i, scale), x, identity,
                                       layer.conv.weight, grad_out)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(grads[0][scale.flatten() == 0], torch.zeros(2, 12, 3, 5, dtype=torch.float64))

    def fn(x, identity, weight):
        return functional_call(layer, {"conv.weight": weight}, (x.clone(), identity.clone(), overwrite_identity, scale))

    inputs = (x.requires_grad_(), identity.requires_grad_(), layer.conv.weight.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def test_eca_resnet50_with_stochastic_depth_keeps_the_memory_saving():
    """The fused ending takes the per-sample drop without saving more for backward: against
    ResNet-50 with the same stochastic depth, the same bound as without it."""
    torch.manual_seed(12)
    images = torch.randn(2, 3, 64, 64)
    model = models.eca_resnet50(drop_path_rate=0.3)
    plain = saved_activation_bytes(models.resnet50(drop_path_rate=0.3), images)
    fast = saved_activation_bytes(model, images)
    downsampling = block_output_bytes(model, images, downsampling_only=True)
    gates = 16 * 3 * images.shape[0] * 2048 * 8  # per ECA layer: pooled responses, gate and the gate times the drop
    assert downsampling <= fast - plain <= downsampling + gates

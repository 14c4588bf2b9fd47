"""The Efficient Channel Attention (ECA) layer, with its in-place eager fast path."""

import contextlib
from typing import Any, ContextManager, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .base import ChannelAttention

__all__ = ["EfficientChannelAttention", "eca_layer", "capturing_graph"]


class EfficientChannelAttention(ChannelAttention):
    """Gate each channel by a 1D convolution over its neighbours' pooled responses.

    Global average pooling gives one value per channel; a bias-free Conv1d of size k with
    zero padding mixes each channel with its k - 1 neighbours; a sigmoid turns that into a
    gate that scales the input channel-wise. The only parameters are the k taps, stored as
    ``conv.weight`` of shape (1, 1, k), exactly as in the released checkpoints.

    Called with an ``identity`` it is a ResNet block's whole ending, ``relu(x * gate + identity)``,
    computed in place in eager mode; see :meth:`_fast_forward`. A ``sample_scale`` there is the
    block's stochastic depth, one factor per sample (0 drops the sample's residual branch,
    1 / (1 - p) keeps it), folded into the gate: the ending stays one in-place call. The gate is computed in the dtype of ``conv.weight``
    (float32 under autocast) and rounded to ``x``'s for the multiply, so that every full-size
    operation runs in one dtype; the output has the dtype and memory format of ``x``.
    """

    block_attribute = "eca"
    fuses_residual = True
    kernel_size_parameter = "conv.weight"

    def __init__(self, channels: int, k_size: int = 3) -> None:
        super().__init__()
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"ECA kernel size must be a positive odd integer, got {k_size}")
        self.channels = channels
        self.k_size = k_size
        self.padding = (k_size - 1) // 2
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=self.padding, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        identity: Optional[torch.Tensor] = None,
        overwrite_identity: bool = False,
        sample_scale: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``x * gate``; given ``identity``, ``relu(x * gate * sample_scale + identity)``, with
        ``sample_scale`` (N, 1, 1, 1) or None for 1.

        While a graph is being captured (TorchScript, ONNX, torch.compile, torch.export, FX;
        see :func:`capturing_graph`) these are plain out-of-place operators, which every
        exporter and compiler understands and the compiler fuses better than any eager
        trick. In eager mode the residual form runs in place, see :meth:`_fast_forward`.
        """
        if torch.jit.is_scripting() or capturing_graph():
            gate = self._gate(x)[1]
            if identity is None:
                return _scale(x, gate)
            scale = _as_4d(gate, x) if sample_scale is None else _as_4d(gate, x) * sample_scale
            return torch.relu(torch.addcmul(identity, x, scale))
        return self._fast_forward(x, identity, overwrite_identity, sample_scale)

    @torch.jit.unused
    def _fast_forward(
        self, x: torch.Tensor, identity: Optional[torch.Tensor], overwrite_identity: bool, sample_scale: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The eager path: the residual form is written over ``x`` (or ``identity``), and so is
        the scale form where the network says ``x`` is a temporary (``inplace``, see ``_GateScale``).

        The residual form exists because saving ``x`` for backward, as autograd would, keeps
        one more full-size activation per block alive (+18% peak memory for ECA-ResNet-50).
        Writing the result over ``x``, as torchvision's blocks do with ``out += identity``,
        lets backward recover ``x * gate`` as ``output - identity`` wherever the ReLU passes
        gradient, from tensors that are saved anyway. With ``overwrite_identity`` the result
        goes over ``identity`` instead and ``x`` is kept: right for a downsampled identity,
        a temporary that nothing else saves (so there, and only there, one activation more
        than in ResNet-50 stays alive). Whichever is overwritten must not be used again.
        Without autograd (eval, ``torch.no_grad``) the same ops run with no Function around them.
        A ``sample_scale`` multiplies the gate sample by sample; backward saves it as (N, 1, C).
        """
        with torch.no_grad():
            pooled, gate = self._gate(x)
        keep = None if sample_scale is None else sample_scale.view(-1, 1, 1).to(gate.dtype)
        weight = self.conv.weight
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or (identity is not None and identity.requires_grad)
        )
        padding = self.conv.padding[0]
        if identity is None:
            overwrite_x = self.inplace and not (x.is_leaf and x.requires_grad)
            if needs_grad:
                return _GateScale.apply(x, weight, pooled, gate, padding, overwrite_x)
            return x.mul_(_as_4d(gate, x)) if overwrite_x else _scale(x, gate)
        if needs_grad:
            return _GateAddReLU.apply(x, identity, weight, pooled, gate, padding, overwrite_identity, keep)
        return _scale_add_relu_(x, identity, gate if keep is None else gate * keep, overwrite_identity)

    def _gate(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pooled responses and sigmoid gate, both (N, 1, C) in ``conv.weight``'s dtype: the one
        gate computation of every path, so the gate stays float32 under autocast everywhere.

        The k-tap convolution is spelled out as k shifted products (:func:`_channel_conv`),
        operators autocast leaves alone, and which on a few thousand values cost less than a
        convolution call (oneDNN's on the CPU starts its thread pool for them: 50 us and more
        per call, milliseconds when the cores are shared). Only when ``conv`` has hooks (FLOP
        counters count it by one) does eager mode call it as a module, with autocast off; a
        captured graph always has the products, since it cannot record autocast being turned
        off (TorchScript, tracing and FX drop it, and the graph may run under autocast later).
        """
        weight = self.conv.weight
        pooled = x.mean(dim=(2, 3), dtype=weight.dtype).unsqueeze(1)
        if torch.jit.is_scripting() or capturing_graph():
            logits = _channel_conv(pooled, weight, self.padding)
        else:
            logits = self._eager_logits(pooled)
        return pooled, torch.sigmoid(logits)

    @torch.jit.unused
    def _eager_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        if not _runs_hooks(self.conv):
            return _channel_conv(pooled, self.conv.weight, self.padding)
        with _autocast_off(pooled.device.type):
            return self.conv(pooled)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}"


@torch.jit.unused
def capturing_graph() -> bool:
    """Whether a graph is being recorded rather than run: TorchScript tracing (also ONNX's
    TorchScript exporter), torch.compile and torch.export (also ONNX's default exporter),
    FX symbolic tracing (torchvision's ``create_feature_extractor``).

    Such graphs must hold ordinary operators: the eager path's autograd Functions and
    ``out=`` writes cannot be exported, traced or compiled. TorchScript does not compile it:
    callers check ``torch.jit.is_scripting()`` first.
    """
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or is_fx_symbolic_tracing()


def _autocast_off(device_type: str) -> ContextManager:
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _as_4d(gate: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, 1, C) -> (N, C, 1, 1) in ``like``'s dtype: mixed-dtype full-size kernels are slow on CUDA."""
    return gate.view(gate.shape[0], -1, 1, 1).to(like.dtype)


def _scale(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return x * _as_4d(gate, x)


def _channel_conv(pooled: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """``conv1d(pooled, weight, padding=padding)`` for one channel in and out, as k shifted products:
    pooled (N, 1, C), weight (1, 1, k), k = 2 * padding + 1 (a number, not a shape, for FX)."""
    padded = F.pad(pooled, (padding, padding))
    channels = pooled.shape[-1]
    logits = padded[:, :, 0:channels] * weight[:, :, 0:1]
    for tap in range(1, 2 * padding + 1):
        logits = logits + padded[:, :, tap : tap + channels] * weight[:, :, tap : tap + 1]
    return logits


def _channel_conv_backward(
    logit_grad: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, padding: int, need_pooled: bool, need_weight: bool
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The gradients of :func:`_channel_conv`'s input and weight: the same shifted products with
    the taps reversed, and each tap's products with the logits' gradient summed. Small ops on
    (N, 1, C) tensors that take a third to a half of ``aten.convolution_backward``'s time on the
    CPU (0.18 ms against 0.48 ms for 8 images of 2048 channels, 2 threads)."""
    pooled_grad = _channel_conv(logit_grad, weight.flip(-1), padding) if need_pooled else None
    weight_grad = None
    if need_weight:
        windows = F.pad(pooled, (padding, padding)).unfold(-1, weight.shape[-1], 1)
        weight_grad = (windows * logit_grad.unsqueeze(-1)).sum(dim=(0, 1, 2)).view_as(weight)
    return pooled_grad, weight_grad


def _runs_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` runs any hook, its own or a global one: what ``nn.Module.__call__``
    checks before it calls ``forward`` directly."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
        or nn.modules.module._global_backward_hooks
        or nn.modules.module._global_backward_pre_hooks
    )


def _rounded_to(gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The gate as the multiply with activations of ``dtype`` used it, in the gate's dtype and at
    least its smallest normal number: the divisor that recovers x from the product written over it."""
    return gate.to(dtype).to(gate.dtype).clamp_min(torch.finfo(gate.dtype).tiny)


def _gate_grad(
    product: torch.Tensor, grad: torch.Tensor, gate: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """``grad * gate + shift`` (gate and shift one value per image and channel) written over ``product``.

    One addcmul, except on the CPU where the channels are not the innermost dimension (NCHW):
    there an addcmul with two per-channel operands does not vectorise, and a multiply and an
    add over the same buffer take a third to a half of its time (maps of 1 to 12 MiB; about
    the same at 25 MiB).
    """
    gate, shift = _as_4d(gate, product), _as_4d(shift, product)
    if product.device.type == "cpu" and product.stride(1) != 1:
        return torch.mul(grad, gate, out=product).add_(shift)
    return torch.addcmul(shift, grad, gate, out=product)


def _scale_add_relu_(
    x: torch.Tensor, identity: torch.Tensor, gate: torch.Tensor, overwrite_identity: bool
) -> torch.Tensor:
    """``relu(x * gate + identity)`` written over ``x`` or ``identity``."""
    out = identity if overwrite_identity else x
    return torch.addcmul(identity, x, _as_4d(gate, x), out=out).relu_()


def _backward_through_gate(
    product: torch.Tensor,
    factor: torch.Tensor,
    grad: torch.Tensor,
    saved: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    padding: int,
    need_x: bool,
    need_weight: bool,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Gradients of x and of the conv weight, from the gate logits' gradient ``product.sum(hw) * factor``.

    The conv's backward turns the logits' gradient into the weight's and the pooled
    responses'; the latter reaches every position of x as 1 / (H * W) of it. That is added
    to ``grad * gate`` written over ``product`` (:func:`_gate_grad`), so that backward
    allocates no other full-size tensor. ``saved`` is (conv weight, pooled, gate as applied:
    times the sample's scale under stochastic depth).
    """
    weight, pooled, gate = saved
    logit_grad = product.sum(dim=(2, 3), dtype=gate.dtype).unsqueeze(1) * factor
    pooled_grad, weight_grad = _channel_conv_backward(logit_grad, pooled, weight, padding, need_x, need_weight)
    if not need_x:
        return None, weight_grad
    spatial = product.shape[2] * product.shape[3]
    return _gate_grad(product, grad, gate, pooled_grad / spatial), weight_grad


class _GateScale(torch.autograd.Function):
    """``x * gate`` whose backward needs only x, the gate and the pooled responses; or, with
    ``overwrite_x``, the product written over x, whose backward needs the product instead of x.

    Written over x, the product is what the next layer keeps for its own backward anyway
    where nothing is added to it (MobileNetV2's blocks without a residual connection), so the
    layer keeps nothing full-size of its own there, and it allocates no output.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        pooled: torch.Tensor,
        gate: torch.Tensor,
        padding: int,
        overwrite_x: bool,
    ) -> torch.Tensor:
        ctx.padding = padding
        ctx.overwrite_x = overwrite_x
        if not overwrite_x:
            ctx.save_for_backward(x, weight, pooled, gate)
            return _scale(x, gate)
        out = x.mul_(_as_4d(gate, x))
        ctx.mark_dirty(out)
        ctx.save_for_backward(out, weight, pooled, gate)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        kept, *saved = ctx.saved_tensors
        gate = saved[-1]
        # d gate = sum over positions of grad * x; through the sigmoid, times gate * (1 - gate).
        # Written over x, the output is x * rounded, the gate as rounded to x's dtype for the
        # multiply (rounded == gate in float32 and float64): sum(grad * out) * (1 - gate) * gate / rounded.
        factor = (1 - gate) * gate / _rounded_to(gate, kept.dtype) if ctx.overwrite_x else gate * (1 - gate)
        x_grad, weight_grad = _backward_through_gate(
            grad * kept, factor, grad, saved, ctx.padding, *ctx.needs_input_grad[:2]
        )
        return x_grad, weight_grad, None, None, None, None


class _GateAddReLU(torch.autograd.Function):
    """``relu(x * gate * keep + identity)`` in place; backward saves no copy of x (see ``forward``).
    ``keep`` (N, 1, 1), or None for 1, is the sample's stochastic-depth factor."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        identity: torch.Tensor,
        weight: torch.Tensor,
        pooled: torch.Tensor,
        gate: torch.Tensor,
        padding: int,
        overwrite_identity: bool,
        keep: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        scale = gate if keep is None else gate * keep
        out = _scale_add_relu_(x, identity, scale, overwrite_identity)
        ctx.mark_dirty(out)
        ctx.padding = padding
        ctx.overwrite_identity = overwrite_identity
        ctx.save_for_backward(out, x if overwrite_identity else identity, weight, pooled, scale, gate)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        out, kept, weight, pooled, scale, gate = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
        # d logits = sum(grad * x) * keep * gate * (1 - gate), keep = scale / gate (1 without stochastic depth).
        if ctx.overwrite_identity:
            product, factor = grad * kept, scale * (1 - gate)
        else:
            # Where the ReLU passes gradient, out - identity is x * rounded, the scale as rounded
            # to x's dtype for the multiply (rounded == scale in float32 and float64), so
            # d logits = sum(grad * (out - identity)) * (1 - gate) * scale / rounded; where it
            # does not, grad is zero, and so is out - identity for a dropped sample (scale 0).
            product, factor = torch.sub(out, kept).mul_(grad), (1 - gate) * scale / _rounded_to(scale, out.dtype)
        need_x, need_identity, need_weight = ctx.needs_input_grad[:3]
        x_grad, weight_grad = _backward_through_gate(product, factor, grad, (weight, pooled, scale), ctx.padding, need_x, need_weight)
        identity_grad = grad if need_identity else None
        return x_grad, identity_grad, weight_grad, None, None, None, None, None


eca_layer = EfficientChannelAttention
"""The original implementation's public name, kept so ``from models import eca_layer`` works."""

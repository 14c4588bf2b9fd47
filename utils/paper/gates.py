"""The channel gates an attention network computes, read with hooks on the model as it is.

A gate is the sigmoid output that scales a block's channels: ECA's sigma(C1D_k(y)), SE's
sigma(W2 relu(W1 y)), the Table 2 variants', CBAM's channel gate. The layers compute it
inside their forward (ECA's fused fast path calls no submodule for it), so a forward pre-hook
on each attention layer starts recording the ``torch.sigmoid`` results of that layer's own
forward (a TorchFunctionMode) and the forward hook stops it; the layer's first sigmoid with
one value per channel and image is its gate. The model and its outputs are left unchanged.
"""

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from models import ChannelAttention

__all__ = ["attention_layers", "block_of", "GateRecorder", "last_stage"]

_SIGMOIDS = (torch.sigmoid, torch.Tensor.sigmoid, torch.nn.functional.sigmoid)


def attention_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """Every attention layer (``models.ChannelAttention``) of ``model`` by its module name (``layer4.0.eca``)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, ChannelAttention)}


def block_of(layer_name: str) -> str:
    """The block that holds an attention layer: ``layer4.0`` for ``layer4.0.eca``."""
    return layer_name.rpartition(".")[0]


class _SigmoidRecorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.outputs: List[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func in _SIGMOIDS:
            self.outputs.append(result)
        return result


class GateRecorder:
    """Hooks on the given attention layers; after each forward, ``gates[name]`` gains that
    batch's gate, (N, C) float32 on the CPU, and ``areas[name]`` the layer's input H x W.

    Use as a context manager: the hooks are removed on exit.
    """

    def __init__(self, layers: Dict[str, nn.Module]) -> None:
        self.layers = layers
        self.gates: Dict[str, List[torch.Tensor]] = defaultdict(list)
        self.areas: Dict[str, int] = {}
        self._recording: Optional[Tuple[str, _SigmoidRecorder, int, int]] = None
        self._handles: list = []

    def __enter__(self) -> "GateRecorder":
        for name, layer in self.layers.items():
            self._handles.append(layer.register_forward_pre_hook(lambda module, inputs, name=name: self._start(name, inputs)))
            self._handles.append(layer.register_forward_hook(lambda module, inputs, output, name=name: self._stop(name)))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        if self._recording is not None:
            self._recording[1].__exit__(None, None, None)
            self._recording = None

    def _start(self, name: str, inputs: Tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        self.areas[name] = x.shape[2] * x.shape[3]
        recorder = _SigmoidRecorder()
        recorder.__enter__()
        self._recording = (name, recorder, x.shape[0], x.shape[1])

    def _stop(self, name: str) -> None:
        _, recorder, batch, channels = self._recording
        recorder.__exit__(None, None, None)
        self._recording = None
        gate = next((output for output in recorder.outputs if output.numel() == batch * channels), None)
        if gate is None:
            raise ValueError(f"{name} ({type(self.layers[name]).__name__}) computes no sigmoid gate with one value per channel")
        self.gates[name].append(gate.detach().reshape(batch, channels).float().cpu())

    def mean_gate(self, name: str, targets: torch.Tensor, label: int) -> torch.Tensor:
        """The layer's gate averaged over the recorded images whose target is ``label``: (C,)."""
        gates = torch.cat(self.gates[name])
        return gates[targets == label].mean(dim=0)


def last_stage(areas: Dict[str, int]) -> List[str]:
    """The layers of the last stage, in model order: those that saw the smallest feature map."""
    smallest = min(areas.values())
    return [name for name, area in areas.items() if area == smallest]

"""Write a model as ONNX, TorchScript or a torch.export ExportedProgram, and check the file.

The check loads the written file back with what a deployment would use (ONNX Runtime,
``torch.jit.load``, ``torch.export.load``), runs it on random input and compares it with
the eager model, so a broken export is found here and not in production. A file is moved
to its final name only after it passed.
"""

import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Sequence, Union

import torch
from torch import nn

from utils.console import OneLineError

__all__ = [
    "FORMATS",
    "ONNX_EXPORTERS",
    "EXPORT_REQUIREMENTS",
    "ExportError",
    "CheckResult",
    "missing_export_packages",
    "serialize",
    "load_exported",
    "check_exported",
    "export_model",
]

FORMATS = ("onnx", "torchscript", "exported-program")
ONNX_EXPORTERS = ("dynamo", "torchscript")
"""torch.onnx's default exporter (torch.export based) and its older, TorchScript-based one."""
EXPORT_REQUIREMENTS = "requirements-export.txt"
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "images", "logits"

Runner = Callable[[torch.Tensor], torch.Tensor]


class ExportError(OneLineError):
    """The export or its check failed; ``str()`` is one line meant for the user."""


@dataclass
class CheckResult:
    """The largest absolute difference from the eager model over the batch sizes tried."""

    max_abs_diff: float
    tolerance: float
    batch_sizes: List[int]

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def missing_export_packages(format: str, onnx_exporter: str = "dynamo") -> List[str]:
    """The packages ``format`` needs that are not installed (ONNX needs onnx and onnxruntime,
    and onnxscript for the default exporter)."""
    if format != "onnx":
        return []
    needed = ["onnx", "onnxruntime"] + (["onnxscript"] if onnx_exporter == "dynamo" else [])
    return [name for name in needed if importlib.util.find_spec(name) is None]


def _example_input(model: nn.Module, batch: int, image_size: int, seed: int = 0) -> torch.Tensor:
    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, image_size, image_size, generator=generator)
    return images.to(parameter.device, parameter.dtype)


def serialize(
    model: nn.Module,
    format: str,
    image_size: int,
    dynamic_batch: bool = True,
    onnx_exporter: str = "dynamo",
    opset: int = DEFAULT_OPSET,
) -> bytes:
    """The exported file's bytes. ``model`` should be in eval mode.

    The batch axis is dynamic with ``dynamic_batch`` (TorchScript, compiled from the code,
    takes any shape anyway); otherwise the file is for batches of 2, the example's size.
    """
    example = _example_input(model, 2, image_size)
    batch = torch.export.Dim("batch", min=1)
    buffer = io.BytesIO()
    if format == "torchscript":
        torch.jit.save(torch.jit.script(model), buffer)
    elif format == "exported-program":
        dynamic_shapes = {"x": {0: batch}} if dynamic_batch else None
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes), buffer)
    elif format == "onnx":
        if onnx_exporter == "dynamo":
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_shapes={"x": {0: batch}} if dynamic_batch else None,
                dynamo=True,
                verbose=False,
            )
            return program.model_proto.SerializeToString()
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
            dynamo=False,
        )
    else:
        raise ExportError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")
    return buffer.getvalue()


def load_exported(path: Union[str, "os.PathLike[str]"], format: str) -> Runner:
    """A function running the file as a deployment would: ONNX Runtime (CPU), torch.jit.load,
    or torch.export.load."""
    path = str(path)
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx(images: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: images.cpu().numpy()})[0])

        return run_onnx
    if format == "torchscript":
        return torch.jit.load(path, map_location="cpu")
    if format == "exported-program":
        return torch.export.load(path).module()
    raise ExportError(f"unknown format {format!r}; choose one of: {', '.join(FORMATS)}")


def check_exported(
    run: Runner, model: nn.Module, image_size: int, batch_sizes: Sequence[int], tolerance: float
) -> CheckResult:
    """Largest difference between ``run`` and the eager ``model`` on random images.

    ``tolerance`` is relative to the eager output's largest magnitude (at least 1), so that it
    means the same for logits of any scale.
    """
    worst, scale = 0.0, 1.0
    for batch in batch_sizes:
        images = _example_input(model, batch, image_size, seed=batch)
        with torch.no_grad():
            expected = model(images).float().cpu()
            actual = run(images).float().cpu()
        if actual.shape != expected.shape:
            raise ExportError(f"the exported model gives shape {tuple(actual.shape)} for batch {batch}, not {tuple(expected.shape)}")
        worst = max(worst, (actual - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
    return CheckResult(worst, tolerance * scale, list(batch_sizes))


def export_model(
    model: nn.Module,
    format: str,
    out: Union[str, "os.PathLike[str]"],
    image_size: int = 224,
    dynamic_batch: bool = True,
    onnx_exporter: str = "dynamo",
    opset: int = DEFAULT_OPSET,
    tolerance: float = 1e-4,
) -> CheckResult:
    """Export ``model`` (in eval mode) to ``out`` and check the file against it.

    The file is written under a temporary name beside ``out`` and renamed only when the check
    passes; a failed check is an ExportError and leaves no file behind. Batches of 1 and 3
    are checked with a dynamic batch axis, the exported batch of 2 without.
    """
    out = Path(out)
    model = model.eval()
    try:
        data = serialize(model, format, image_size, dynamic_batch, onnx_exporter, opset)
    except ExportError:
        raise
    except Exception as error:  # the exporters raise anything; the first line says what went wrong
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{format} export failed: {reason}") from error
    tmp_name = out.parent / f".{os.getpid()}.tmp.{out.name}"  # keeps the suffix, which the loaders look at
    try:
        with open(tmp_name, "wb") as handle:
            handle.write(data)
        batch_sizes = [1, 3] if dynamic_batch or format == "torchscript" else [2]
        result = check_exported(load_exported(tmp_name, format), model, image_size, batch_sizes, tolerance)
        if not result.passed:
            raise ExportError(
                f"check failed: the exported {format} file differs from the eager model by up to "
                f"{result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g}); nothing was written to {out}"
            )
        os.replace(tmp_name, out)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return result

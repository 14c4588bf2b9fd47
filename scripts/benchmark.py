"""Time ECA models against torchvision's ResNet-50, interleaved in one process.

Every model runs one step in turn, step after step, so that drift in the machine's speed
(other processes, thermal limits) hits all of them alike; each number is the median over
``--steps`` steps and is reported as a ratio to ``torchvision_resnet50`` from the same run.

    python scripts/benchmark.py --models eca_resnet50 --reference --threads 2
    python scripts/benchmark.py --device cuda --amp --channels-last --batch-size 128 --json out.json
    python scripts/benchmark.py --onnx --threads 2     # ONNX Runtime (CPU) against eager PyTorch, batch 1 and 8
    python scripts/benchmark.py --table sota --depth 50 --device cuda --amp --batch-size 128 --formats nchw

Peak memory is the largest number of bytes held by live tensors during one step: the
model's parameters and buffers, the optimizer state and the batch, plus the highest point
that the step's own allocations reach above what was live when it started (gradients,
activations saved for backward, temporaries). On CUDA that high point is
``torch.cuda.max_memory_allocated``; on the CPU it is read from the profiler's record of
every allocation and free (``profile_memory=True``), since the CPU allocator keeps no peak.

``--table sota --depth 50`` (or 18, 34, 101, 152, mobilenet, or all of them with ``all``)
times every row of the paper's Table 3 that has a model here (SENet, CBAM, GCNet, ECA-Net;
at every depth, also where the paper printed no such row) against the plain backbone of the
same depth (``resnet50``, ``mobilenet_v2``), interleaved the same way, and gives each row's
training and inference images/s as a ratio to the backbone's, its peak training memory as a
ratio to the backbone's, and the paper's ratio beside where it printed one (ECA-Net-50:
785 / 1024 = 0.767 training, 1805 / 1855 = 0.973 inference). ``--reference`` adds the ECA
row with the original code's and timm's layer in its place. Progress goes to stderr, the
Markdown table to stdout; the peers without public code are listed as skipped in one line.
``--repeat N`` times the whole table N times over and gives each ratio's median and range.

``--onnx`` times inference instead: each chosen model in eager PyTorch (``inference_mode``)
and, exported by utils/export.py with a dynamic batch axis, in ONNX Runtime on the CPU with
as many threads, step after step in turn, and reports ONNX Runtime's time as a ratio to eager.
"""

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, TextIO, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The profiler (peak memory on the CPU) logs its every start and stop on stderr, amid the progress, unless told not to.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import models  # noqa: E402
from models import ChannelAttention, EfficientChannelAttention  # noqa: E402
from utils.console import OneLineErrorParser  # noqa: E402
from utils.export import INPUT_NAME, missing_export_packages, serialize  # noqa: E402
from utils.paper.tables import DEPTHS, MOBILENET, SOTA, PaperRow, registered_model_name, table_rows  # noqa: E402

BASELINE = "torchvision_resnet50"
MODES = ("eval", "train")
FORMATS = ("nchw", "channels_last")


def original_eca_forward(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """The ECA computation as the original ECA-Net code wrote it: the speed reference.

    avg_pool -> squeeze -> transpose -> conv1d -> transpose -> unsqueeze -> sigmoid ->
    x * y.expand_as(x), each step a separate eager op and autograd node.
    """
    y = F.adaptive_avg_pool2d(x, 1)
    y = conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
    y = torch.sigmoid(y)
    return x * y.expand_as(x)


class OriginalECA(ChannelAttention):
    """Stands in for an ``EfficientChannelAttention`` with the same ``conv``, run the original way:
    under the same name in its block, with the block's plain ending (no fused residual)."""

    block_attribute = EfficientChannelAttention.block_attribute
    kernel_size_parameter = EfficientChannelAttention.kernel_size_parameter

    def __init__(self, eca: EfficientChannelAttention) -> None:
        super().__init__()
        self.conv = eca.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return original_eca_forward(x, self.conv)


class TimmECA(ChannelAttention):
    """Stands in for an ``EfficientChannelAttention`` with timm's ``EcaModule``, sharing its ``conv``
    (the same k taps): mean, Conv1d, sigmoid and ``x * y.expand_as(x)`` as plain autograd ops."""

    block_attribute = EfficientChannelAttention.block_attribute

    def __init__(self, eca: EfficientChannelAttention) -> None:
        super().__init__()
        from timm.layers import EcaModule

        self.module = EcaModule(kernel_size=eca.k_size)
        self.module.conv = eca.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


REFERENCE_LAYERS: Dict[str, Callable[[EfficientChannelAttention], ChannelAttention]] = {
    "original": OriginalECA,
    "timm": TimmECA,
}
"""``--reference`` and the ``<model>:<reference>`` rows: other people's ECA, swapped in for this project's."""

REFERENCE_LABELS = {"original": "original code", "timm": "timm"}


def with_reference_eca(model: nn.Module, reference: str) -> nn.Module:
    """Swap every ECA layer of ``model`` (in place) for ``REFERENCE_LAYERS[reference]``."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, EfficientChannelAttention):
                setattr(module, name, REFERENCE_LAYERS[reference](child))
    return model


def missing_reference_packages(references: Iterable[str]) -> List[str]:
    """The packages the chosen reference rows import that are not installed (timm for ``timm``)."""
    return [name for name in references if name == "timm" and importlib.util.find_spec("timm") is None]


def build_model(name: str) -> nn.Module:
    """``torchvision_resnet50``, a registered model, or ``<registered>:original`` / ``:timm``
    (that model with the original code's or timm's ECA layer)."""
    if name == BASELINE:
        return torchvision.models.resnet50()
    registered, _, reference = name.partition(":")
    model = models.create_model(registered)
    return with_reference_eca(model, reference) if reference else model


class Runner:
    """One model in one mode and memory format, with its batch and (for training) optimizer.
    The model is converted in place: one model serves every mode and format in turn."""

    def __init__(self, name: str, model: nn.Module, mode: str, memory_format: str, args: argparse.Namespace) -> None:
        self.name, self.mode, self.memory_format = name, mode, memory_format
        self.device = torch.device(args.device)
        self.amp = args.amp
        fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        model.to(self.device, memory_format=fmt).train(mode == "train")
        self.model = model
        torch.manual_seed(0)
        self.step_fn = torch.compile(model) if args.compile else model
        self.images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=self.device)
        self.images = self.images.contiguous(memory_format=fmt)
        self.targets = torch.randint(0, 1000, (args.batch_size,), device=self.device)
        self.optimizer = (
            torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4) if mode == "train" else None
        )
        self.times: List[float] = []
        self.peak_bytes: Optional[int] = None

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def step(self) -> None:
        if self.optimizer is None:
            with torch.inference_mode(), self._autocast():
                self.step_fn(self.images)
            return
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = F.cross_entropy(self.step_fn(self.images), self.targets)
        loss.backward()
        self.optimizer.step()

    def timed_step(self) -> None:
        sync(self.device)
        start = time.perf_counter()
        self.step()
        sync(self.device)
        self.times.append(time.perf_counter() - start)

    def persistent_bytes(self) -> int:
        """Bytes of what stays alive between steps: parameters, buffers, optimizer state, batch."""
        tensors = list(self.model.parameters()) + list(self.model.buffers()) + [self.images, self.targets]
        if self.optimizer is not None:
            for state in self.optimizer.state.values():
                tensors += [value for value in state.values() if torch.is_tensor(value)]
        return sum(t.untyped_storage().nbytes() for t in {t.untyped_storage().data_ptr(): t for t in tensors}.values())

    def measure_peak(self) -> None:
        """Peak bytes of one step (see the module docstring); gradients are freed before it starts."""
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            self.step()
            torch.cuda.synchronize()
            rise = torch.cuda.max_memory_allocated() - before
        else:
            rise = cpu_step_peak_rise(self.step)
        self.peak_bytes = self.persistent_bytes() + rise


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_step_peak_rise(step: Callable[[], None]) -> int:
    """Highest rise of live CPU tensor bytes during ``step``, from every allocation the profiler saw."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        step()
    # The per-op summaries net allocations against frees; the raw event stream keeps each one.
    events = [
        event
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.profiler.DeviceType.CPU
    ]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def run(args: argparse.Namespace, names: List[str], out: TextIO = sys.stdout, measure_peaks: bool = True) -> List[Dict]:
    """Every model of ``names`` step after step in turn, each mode and format; ratios to ``names[0]``.
    Each row is printed to ``out`` as it is done; without ``measure_peaks`` the rows have no peak memory."""
    rows = []
    built = {}
    for name in names:
        torch.manual_seed(0)
        built[name] = build_model(name)
    for mode in args.modes:
        for memory_format in args.formats:
            runners = [Runner(name, built[name], mode, memory_format, args) for name in names]
            for _ in range(args.warmup):
                for runner in runners:
                    runner.step()
            for _ in range(args.steps):
                for runner in runners:
                    runner.timed_step()
            if measure_peaks:
                for runner in runners:
                    runner.measure_peak()
            baseline = runners[0]
            base_ms = 1000 * statistics.median(baseline.times)
            for runner in runners:
                ms = 1000 * statistics.median(runner.times)
                measured = runner.peak_bytes is not None
                rows.append(
                    {
                        "model": runner.name,
                        "mode": mode,
                        "format": memory_format,
                        "ms": ms,
                        "images_per_s": args.batch_size / ms * 1000,
                        "ratio": ms / base_ms,
                        "peak_mib": runner.peak_bytes / 2**20 if measured else None,
                        "peak_ratio": runner.peak_bytes / baseline.peak_bytes if measured else None,
                    }
                )
                print(format_row(rows[-1]), file=out, flush=True)
            del runners
    return rows


def has_eca(name: str) -> bool:
    """Whether the registered model holds ECA layers, which a ``:original`` or ``:timm`` reference swaps."""
    with torch.device("meta"):
        return any(isinstance(layer, EfficientChannelAttention) for layer in models.create_model(name).modules())


def compared_names(args: argparse.Namespace) -> List[str]:
    names = [BASELINE] + [name for name in args.models if name != BASELINE]
    return names + [f"{name}:{reference}" for reference in args.reference for name in args.models if has_eca(name)]


def _table_depth(depth: str) -> Optional[int]:
    return None if depth == MOBILENET else int(depth)


def table_models(depth: Optional[int], references: Iterable[str] = ()) -> Tuple[List[Tuple[PaperRow, str]], List[str]]:
    """Table 3's rows at ``depth`` that have a registered model, the plain backbone first, and
    why each other row is skipped ('a2_nets (no model here)').

    Every row of the table is timed at every depth, with the paper's numbers where it printed
    that row at that depth: the peers are compared at each depth, not only where the paper
    (or the poster, at 18 and 34) had them. The ECA row is followed by ``<model>:<reference>``
    for each of ``references``. A ValueError if the backbone itself is not registered: there
    is nothing to compare with."""
    template = SOTA.template if depth is not None else table_rows(SOTA, None)
    printed = {row.key: row for row in table_rows(SOTA, depth)}
    timed, skipped = [], []
    for template_row in template:
        row = printed.get(template_row.key, template_row)
        try:
            name = registered_model_name(row, depth)
        except ValueError as error:
            if template_row is template[0]:
                raise ValueError(f"{error}; it is the backbone the rows are compared with") from None
            skipped.append(f"{row.key} ({'no model here' if row.model is None else str(error).split(': ', 1)[1]})")
            continue
        timed.append((row, name))
        if has_eca(name):
            timed += [(row, f"{name}:{reference}") for reference in references]
    return timed, skipped


def paper_fps_ratio(row: PaperRow, backbone: PaperRow, mode: str) -> Optional[float]:
    """The paper's images/s of the row over the backbone's, in ``mode`` (train: training FPS, eval: inference)."""
    ours, theirs = (row.train_fps, backbone.train_fps) if mode == "train" else (row.inference_fps, backbone.inference_fps)
    return None if ours is None or theirs is None else ours / theirs


def table_depths(depth: str) -> List[Optional[int]]:
    """``--depth``'s sections: one ResNet depth, ``mobilenet`` (None), or every one of them for ``all``."""
    return [*DEPTHS, None] if depth == "all" else [_table_depth(depth)]


def run_table(args: argparse.Namespace) -> List[Dict]:
    """:func:`run` over Table 3's rows at each ``--depth``, ``--repeat`` times over; each row's
    images/s as a ratio to the backbone's (the median over the repeats, and each one), the paper's beside."""
    plans = []
    for depth in table_depths(args.depth):
        try:
            plans.append((depth, *table_models(depth, args.reference)))
        except ValueError as error:
            print(f"benchmark.py: error: {error}", file=sys.stderr)
            sys.exit(2)
    skipped = sorted({reason for _, _, reasons in plans for reason in reasons})
    if skipped:
        print(f"skipped: {', '.join(skipped)}", file=sys.stderr)
    repeats: List[List[Dict]] = []
    for repeat in range(args.repeat):
        results = []
        for depth, timed, _ in plans:
            section = MOBILENET if depth is None else f"ResNet-{depth}"
            print(f"{section}, run {repeat + 1} of {args.repeat}: {', '.join(name for _, name in timed)}", file=sys.stderr, flush=True)
            print_header("the backbone", sys.stderr)
            rows = run(args, [name for _, name in timed], sys.stderr, measure_peaks=repeat == 0)
            by_model = {name: row for row, name in timed}
            for result in rows:
                row = by_model[result["model"]]
                reference = result["model"].partition(":")[2]
                result.update(
                    depth=MOBILENET if depth is None else depth,
                    row=row.key,
                    label=row.label_at(depth) + (f" ({REFERENCE_LABELS[reference]})" if reference else ""),
                    fps_ratio=1 / result["ratio"],
                    paper_fps_ratio=None if reference else paper_fps_ratio(row, timed[0][0], result["mode"]),
                )
            results += rows
        repeats.append(results)
    rows = combine_repeats(repeats)
    print(table_markdown(rows, describe(args)))
    return rows


def combine_repeats(repeats: List[List[Dict]]) -> List[Dict]:
    """One row per depth, model, mode and format: the first run's row (its peak memory) with the
    median over the runs of time and ratio, and every run's images/s ratio in ``fps_ratios``."""
    combined = []
    for first, *others in zip(*repeats):
        runs = [first, *others]
        ms = statistics.median(run["ms"] for run in runs)
        combined.append(
            {
                **first,
                "ms": ms,
                "images_per_s": first["images_per_s"] * first["ms"] / ms,
                "ratio": statistics.median(run["ratio"] for run in runs),
                "fps_ratio": statistics.median(run["fps_ratio"] for run in runs),
                "fps_ratios": [run["fps_ratio"] for run in runs],
            }
        )
    return combined


def table_markdown(rows: List[Dict], setup: Dict) -> str:
    """The table as Markdown: per depth and format, each row's training and inference images/s and
    their ratio to the backbone's (the median, and the range over the runs when there are several),
    the paper's ratio beside, and the peak training memory as a ratio to the backbone's."""
    by_key = {(row["depth"], row["model"], row["format"], row["mode"]): row for row in rows}
    lines = [
        " ".join(f"{key}={value}" for key, value in setup.items()),
        "",
        "| row | model | format | training images/s | vs backbone | paper | training memory vs backbone "
        "| inference images/s | vs backbone | paper |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for row in rows:
        key = (row["depth"], row["model"], row["format"])
        if key in seen:
            continue
        seen.add(key)
        cells = [row["label"], f"`{row['model']}`", row["format"]]
        for mode in ("train", "eval"):
            result = by_key.get((*key, mode))
            if result is None:
                cells += ["-"] * (4 if mode == "train" else 3)
                continue
            cells += [f"{result['images_per_s']:.1f}", _ratio_cell(result["fps_ratio"], result["fps_ratios"]),
                      "-" if result["paper_fps_ratio"] is None else f"{result['paper_fps_ratio']:.3f}"]
            if mode == "train":
                cells.append("-" if result["peak_ratio"] is None else f"{result['peak_ratio']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio_cell(median: float, runs: List[float]) -> str:
    if len(runs) < 2:
        return f"{median:.3f}"
    return f"{median:.3f} ({min(runs):.3f}-{max(runs):.3f})"


def run_onnx(args: argparse.Namespace) -> List[Dict]:
    """Eager PyTorch against ONNX Runtime (CPU), inference, each batch size, interleaved."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name).eval()
        session = onnxruntime.InferenceSession(
            serialize(model, "onnx", args.image_size, dynamic_batch=True), options, providers=["CPUExecutionProvider"]
        )
        for batch in args.onnx_batch_sizes:
            images = torch.randn(batch, 3, args.image_size, args.image_size)

            eager_step = functools.partial(_eager_inference, model, images)
            onnx_step = functools.partial(_onnx_inference, session, {INPUT_NAME: images.numpy()})
            max_diff = (onnx_step() - eager_step()).abs().max().item()
            times: Dict[str, List[float]] = {"eager": [], "onnxruntime": []}
            for index in range(args.warmup + args.steps):
                for runtime, step in (("eager", eager_step), ("onnxruntime", onnx_step)):
                    start = time.perf_counter()
                    step()
                    if index >= args.warmup:
                        times[runtime].append(time.perf_counter() - start)
            eager_ms, onnx_ms = (1000 * statistics.median(times[key]) for key in ("eager", "onnxruntime"))
            rows.append(
                {"model": name, "batch": batch, "eager_ms": eager_ms, "onnxruntime_ms": onnx_ms,
                 "ratio": onnx_ms / eager_ms, "max_abs_diff": max_diff}
            )
            print(format_onnx_row(rows[-1]), flush=True)
    return rows


def _eager_inference(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(images)


def _onnx_inference(session: Any, feed: Dict[str, Any]) -> torch.Tensor:
    return torch.from_numpy(session.run(None, feed)[0])


def format_onnx_row(row: Dict) -> str:
    return (
        f"| {row['model']} | {row['batch']} | {row['eager_ms']:.1f} | {row['onnxruntime_ms']:.1f} "
        f"| {row['ratio']:.3f} | {row['max_abs_diff']:.1e} |"
    )


def format_row(row: Dict) -> str:
    peak = "- | -" if row["peak_mib"] is None else f"{row['peak_mib']:.0f} | {row['peak_ratio']:.3f}"
    return (
        f"| {row['model']} | {row['mode']} | {row['format']} | {row['ms']:.1f} | {row['images_per_s']:.1f} "
        f"| {row['ratio']:.3f} | {peak} |"
    )


def print_header(baseline: str, out: TextIO = sys.stdout) -> None:
    print(f"| model | mode | format | ms/step | images/s | time vs {baseline} | peak MiB | memory vs {baseline} |", file=out)
    print("|---|---|---|---|---|---|---|---|", file=out)


def describe(args: argparse.Namespace) -> Dict:
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    return {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "amp": args.amp,
        "compile": args.compile,
    }


def parse_args(argv: Optional[Iterable[str]] = None) -> argparse.Namespace:
    parser = OneLineErrorParser(prog="benchmark.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="registered model names (default eca_resnet50)")
    parser.add_argument("--table", choices=["sota"],
                        help="time the rows of the paper's Table 3 at --depth against its plain backbone instead of --models")
    parser.add_argument("--depth", choices=[*map(str, DEPTHS), MOBILENET, "all"], default="50",
                        help="with --table: the ResNet depth, mobilenet for the MobileNetV2 rows, or all of them (default 50)")
    parser.add_argument(
        "--reference", nargs="*", choices=sorted(REFERENCE_LAYERS), default=None,
        help="also time each ECA model with other code's ECA layer: the original code's, timm's (default: both)",
    )
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --table: time the whole table this many times over (the median and the range are reported)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--channels-last", action="store_true", help="same as --formats channels_last")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=11, help="timed steps per model (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the setup here")
    parser.add_argument(
        "--onnx", action="store_true", help="time inference in ONNX Runtime (CPU) against eager PyTorch instead"
    )
    parser.add_argument("--onnx-batch-sizes", nargs="+", type=int, default=[1, 8], help="with --onnx (default 1 8)")
    args = parser.parse_args(argv)
    if args.channels_last:
        args.formats = ["channels_last"]
    if args.table and (args.models or args.onnx):
        parser.error("--table times the table's rows: leave out --models and --onnx")
    if args.repeat < 1 or (args.repeat > 1 and not args.table):
        parser.error("--repeat is a positive number of runs of --table")
    args.reference = [] if args.reference is None else args.reference or sorted(REFERENCE_LAYERS)
    missing = missing_reference_packages(args.reference)
    if missing:
        parser.error(f"--reference {' '.join(missing)} needs {', '.join(missing)}: pip install {' '.join(missing)}")
    args.models = args.models or ["eca_resnet50"]
    unknown = [name for name in args.models if name != BASELINE and name not in models.model_names]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {BASELINE}, {', '.join(models.model_names)}")
    if args.steps < 1 or args.batch_size < 1 or min(args.onnx_batch_sizes) < 1:
        parser.error("--steps and the batch sizes must be positive")
    if args.onnx:
        missing = missing_export_packages("onnx")
        if missing:
            parser.error(f"--onnx needs {', '.join(missing)}: pip install -r requirements-export.txt")
        if args.device != "cpu" or args.compile or args.amp:
            parser.error("--onnx compares float32 inference on the CPU: leave out --device cuda, --compile and --amp")
    return args


def main(argv: Optional[Iterable[str]] = None) -> List[Dict]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    setup = describe(args)
    if not args.table:
        print(" ".join(f"{key}={value}" for key, value in setup.items()))
    if args.onnx:
        print("| model | batch | eager PyTorch ms | ONNX Runtime ms | ONNX Runtime vs eager | largest difference |")
        print("|---|---|---|---|---|---|")
        rows = run_onnx(args)
    elif args.table:
        rows = run_table(args)
    else:
        print_header("ResNet-50")
        rows = run(args, compared_names(args))
    if args.json is not None:
        args.json.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()

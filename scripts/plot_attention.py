"""The mean channel gate of an attention network's blocks for a few classes, as a chart (PNG and
PDF): the poster's picture of the channel weights ECA and SE learn.

    python scripts/plot_attention.py --weights eca_resnet50_k3557.pth.tar /data/imagenet --classes 4
    python scripts/plot_attention.py --weights runs/se/model_best.pth.tar /data/imagenet \\
        --blocks layer4.0 layer4.2 --classes n01440764 n02102040 --out se_gates.png --csv se_gates.csv

For each chosen block (default: the last stage's, the blocks that see the smallest feature
map) one panel, with one line per class: channel index on x, the gate averaged over the
class's images on y. Any checkpoint of a model with sigmoid channel gates works (ECA, ECA-NS,
SE and its variants, CBAM's channel gate); images get the evaluation transform.
"""

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from utils.checkpoint import atomic_write, load_model  # noqa: E402
from utils.console import OneLineErrorParser, UsageError, exit_status_of, positive_int, show_warnings_as_one_line  # noqa: E402
from utils.data.datasets import SkippingImageFolder, build_dataset  # noqa: E402
from utils.data.loaders import collate_readable  # noqa: E402
from utils.paper.charts import LinePanel, LineSeries, chart_paths, line_chart, save_chart  # noqa: E402
from utils.paper.gates import GateRecorder, attention_layers, block_of, last_stage  # noqa: E402

DEFAULT_CLASSES = 4
DEFAULT_IMAGE_SIZE = 224



def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = OneLineErrorParser(prog="plot_attention.py", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("data", metavar="DIR", help="dataset root holding the --split ImageFolder")
    parser.add_argument("--weights", required=True, metavar="FILE", help="a checkpoint of a model with attention")
    parser.add_argument("--blocks", nargs="+", metavar="NAME",
                        help="blocks by module name, e.g. layer4.0 layer4.2 (default: the last stage's)")
    parser.add_argument("--classes", nargs="+", metavar="C", default=[str(DEFAULT_CLASSES)],
                        help=f"a number N (the split's first N classes) or class folder names (default {DEFAULT_CLASSES})")
    parser.add_argument("--split", default="val", help="the ImageFolder under DIR (default val)")
    parser.add_argument("--images-per-class", type=positive_int, default=50, metavar="N", help="at most N images a class (default 50)")
    parser.add_argument("--image-size", type=positive_int, metavar="S",
                        help=f"evaluation crop (default: the size the checkpoint trained at, else {DEFAULT_IMAGE_SIZE})")
    parser.add_argument("-b", "--batch-size", type=positive_int, default=32)
    parser.add_argument("-j", "--workers", type=int, default=2, metavar="N", help="data-loading workers (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", default="gates.png", metavar="FILE",
                        help="the chart's PNG; its PDF goes beside, NAME.pdf (default gates.png)")
    parser.add_argument("--csv", metavar="FILE", help="also write the mean gates as CSV: block, layer, class, channel, gate")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error(f"--workers must be 0 or more, got {args.workers}")
    return args


def chosen_classes(dataset: SkippingImageFolder, wanted: Sequence[str]) -> List[str]:
    """--classes as class names: a lone number not itself a class name is a count of the first classes."""
    if len(wanted) == 1 and wanted[0].isdigit() and wanted[0] not in dataset.class_to_idx:
        count = int(wanted[0])
        if not 1 <= count <= len(dataset.classes):
            raise UsageError(f"--classes {count}: {dataset.root} has {len(dataset.classes)} classes")
        return dataset.classes[:count]
    unknown = [name for name in wanted if name not in dataset.class_to_idx]
    if unknown:
        raise UsageError(f"--classes: {dataset.root} has no class {unknown[0]!r}")
    return list(dict.fromkeys(wanted))


def chosen_layers(layers: Dict[str, torch.nn.Module], blocks: Sequence[str]) -> List[str]:
    """The attention layers of the named blocks, in the order given."""
    names = []
    with_attention = list(dict.fromkeys(block_of(name) for name in layers))
    for block in blocks:
        inside = [name for name in layers if block_of(name) == block or name == block]
        if not inside:
            raise UsageError(f"--blocks {block}: no attention layer there; blocks with one: {', '.join(with_attention)}")
        names += inside
    return names


def image_indices(dataset: SkippingImageFolder, classes: Sequence[str], per_class: int) -> List[int]:
    indices = []
    for name in classes:
        label = dataset.class_to_idx[name]
        own = [index for index, (_, target) in enumerate(dataset.samples) if target == label][:per_class]
        if not own:
            raise UsageError(f"class {name} has no images in {dataset.root}")
        indices += own
    return indices


def record_gates(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> Tuple[GateRecorder, torch.Tensor]:
    """Every attention layer's gate for every readable image, and the images' targets."""
    targets = []
    with GateRecorder(attention_layers(model)) as recorder, torch.inference_mode():
        for images, batch_targets, _ in loader:
            if len(images):
                model(images.to(device))
                targets.append(batch_targets)
    if not targets:
        raise UsageError("none of the chosen images could be read")
    return recorder, torch.cat(targets)


def csv_text(means: Dict[str, Dict[str, torch.Tensor]]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")  # quotes a class folder name with a comma in it
    writer.writerow(["block", "layer", "class", "channel", "gate"])
    for layer, by_class in means.items():
        for name, gate in by_class.items():
            writer.writerows([block_of(layer), layer, name, channel, f"{value:.6f}"] for channel, value in enumerate(gate.tolist()))
    return text.getvalue()


def plot(args: argparse.Namespace) -> int:
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device}: expected cpu or cuda") from None
    try:
        chart_paths(args.out)
    except ValueError as error:
        raise UsageError(f"--out {error}") from None
    model, info = load_model(args.weights)
    layers = attention_layers(model)
    if not layers:
        raise UsageError(f"{args.weights} holds {info['arch']}, which has no attention layers")
    wanted_layers = chosen_layers(layers, args.blocks) if args.blocks else None
    image_size = args.image_size or info["checkpoint"].get("args", {}).get("image_size") or DEFAULT_IMAGE_SIZE
    dataset = build_dataset(args.data, args.split, image_size)
    classes = chosen_classes(dataset, args.classes)
    indices = image_indices(dataset, classes, args.images_per_class)
    loader = DataLoader(Subset(dataset, indices), batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_readable)
    model.eval().to(device)
    try:
        recorder, targets = record_gates(model, loader, device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    names = wanted_layers or last_stage(recorder.areas)
    means = {layer: {name: recorder.mean_gate(layer, targets, dataset.class_to_idx[name]) for name in classes} for layer in names}
    y_label = f"mean gate, up to {args.images_per_class} images a class"
    panels = [  # gates are sigmoids: on 0..1 every panel compares with the others at a glance
        LinePanel(f"{block_of(layer)}: {type(layers[layer]).__name__}, {len(next(iter(by_class.values())))} channels",
                  [LineSeries(name, gate.tolist()) for name, gate in by_class.items()], y_label, (0.0, 1.0))
        for layer, by_class in means.items()
    ]
    png, pdf = save_chart(line_chart(panels, "channel index"), args.out)
    if args.csv:
        atomic_write(args.csv, lambda handle: handle.write(csv_text(means).encode()))
    print(f"=> {png} and {pdf}: {info['arch']}, {len(panels)} block(s) ({', '.join(block_of(layer) for layer in names)}), "
          f"{len(classes)} classes, {len(targets)} images at {image_size} px" + (f"; {args.csv}" if args.csv else ""))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    show_warnings_as_one_line()
    return exit_status_of(lambda: plot(args), "plot_attention.py: error")


if __name__ == "__main__":
    sys.exit(main())

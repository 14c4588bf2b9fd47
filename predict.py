"""Classify images with a checkpoint (the top-5 ImageNet classes with their probabilities), or
detect objects with a detection checkpoint (boxes, class names, scores and masks, drawn on the
image and written as a PNG).

    python predict.py -a eca_resnet50 --weights eca_resnet50_k3557.pth.tar cat.jpg dog.jpg
    python predict.py --weights maskrcnnecanet50k3377bs8_lr0.01.pth street.jpg

Classification: the images go through the validation transform (resize the short side to 256,
centre-crop 224, normalise), as in evaluation. The model's architecture, ECA kernel sizes and
class count are read from the checkpoint (``-a`` is optional and checked against it). Class
names are ImageNet's, as torchvision ships them; a model with another class count prints indices.

Detection (a detector checkpoint: detect.py's, or a released MMDetection v1 file; or ``-a`` a
detector name): each image at its own size goes through the detector, which resizes it as it
was trained; detections scoring at least ``--score-thresh`` are printed and drawn into
``<out-dir>/<image>_detections.png``: on the image scaled up to a short side of 512 pixels if it
is smaller (boxes and masks scaled with it), so that a label in a readable font is small next to
what it names, each label above its box rather than over the object. Class names come from the
checkpoint, else COCO's for an 80-class detector.
"""

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from PIL import Image, ImageColor, ImageDraw, ImageFont
from torchvision.models import ResNet50_Weights
from torchvision.transforms.functional import pil_to_tensor, resize, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

import models
from models.detection import COCO_CLASSES, detector_names
from utils.checkpoint import atomic_write, extract_state_dict, load_checkpoint_file, load_model
from utils.console import OneLineErrorParser, device_argument, exit_status_of, positive_int, show_warnings_as_one_line
from utils.data.decode import encode_png, unreadable_reason
from utils.data.transforms import build_transform
from utils.detection.checkpoint import load_detector
from utils.detection.detector_settings import object_classes

IMAGENET_CLASSES: List[str] = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
"""The 1000 ImageNet-1k class names in WNID-sorted order, the order ImageFolder gives the classes."""


def open_rgb(path: str) -> Image.Image:
    """The image file as RGB; an unreadable file is a ValueError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:  # UnidentifiedImageError among them
        raise ValueError(f"cannot read image {path}: {unreadable_reason(error)}") from None


def read_images(paths: Sequence[str], image_size: int) -> torch.Tensor:
    """The preprocessed images as one batch; an unreadable file is a ValueError naming it."""
    transform = build_transform(train=False, image_size=image_size)
    return torch.stack([transform(open_rgb(path)) for path in paths])


def class_label(index: int, num_classes: int) -> str:
    """``tench (0)`` for an ImageNet-1k model; ``class 3`` for any other class count."""
    return f"{IMAGENET_CLASSES[index]} ({index})" if num_classes == len(IMAGENET_CLASSES) else f"class {index}"


def format_predictions(path: str, probabilities: torch.Tensor, topk: int) -> str:
    """``path`` then one line per class: rank, probability, class."""
    values, indices = probabilities.topk(min(topk, probabilities.numel()))
    lines = [f"{path}:"]
    for rank, (probability, index) in enumerate(zip(values.tolist(), indices.tolist()), start=1):
        lines.append(f"  {rank}. {100 * probability:6.2f}%  {class_label(index, probabilities.numel())}")
    return "\n".join(lines)


def holds_detector(path: str, arch: Optional[str]) -> bool:
    """Whether to run detection: ``-a`` names a detector, or the file's weights are a detector's."""
    if arch is not None:
        return arch in detector_names
    return any(key.startswith(("backbone.", "rpn_head.", "neck.")) for key in extract_state_dict(load_checkpoint_file(path)))


def detection_class_names(classes: Optional[Sequence[str]], num_labels: int) -> List[str]:
    """Names of labels 1..C: the checkpoint's, else COCO's for 80 classes, else ``class L``."""
    if classes:
        return list(classes)
    return list(COCO_CLASSES) if num_labels == len(COCO_CLASSES) else [f"class {label}" for label in range(1, num_labels + 1)]


def detection_label(label: int, names: Sequence[str]) -> str:
    return names[label - 1] if 1 <= label <= len(names) else f"class {label}"


def format_detections(path: str, detections: Dict[str, torch.Tensor], names: Sequence[str], png: str) -> str:
    """``path``, the number of detections and where they were drawn, then one line each: class, score, box."""
    count = len(detections["scores"])
    lines = [f"{path}: {count} detection{'s' if count != 1 else ''} -> {png}"]
    for box, label, score in zip(detections["boxes"].tolist(), detections["labels"].tolist(), detections["scores"].tolist()):
        corners = ", ".join(f"{value:.1f}" for value in box)
        lines.append(f"  {detection_label(label, names):<20} {score:.3f}  [{corners}]")
    return "\n".join(lines)


DRAWING_SHORT_SIDE = 512
"""Detections are drawn on the image scaled up to at least this short side: at 128 x 128, the
detection demo's size, a legible label is as large as the object it names."""


def drawing_size(height: int, width: int) -> Tuple[int, int]:
    """(height, width) of the drawing: the image's, scaled up so that its short side is
    DRAWING_SHORT_SIDE when it is shorter."""
    scale = max(1.0, DRAWING_SHORT_SIDE / min(height, width))
    return round(height * scale), round(width * scale)


def draw_detections(image: torch.Tensor, detections: Dict[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """The uint8 image at :func:`drawing_size` with masks (at 0.5) filled in, boxes outlined, and
    ``name score`` on the box's colour above each box (below it, or inside at the top, where
    there is no room)."""
    height, width = image.shape[-2:]
    size = drawing_size(height, width)
    if size != (height, width):
        image = resize(image, list(size), antialias=True)
    scale = torch.tensor([size[1] / width, size[0] / height] * 2)
    boxes = detections["boxes"] * scale
    colors = [_PALETTE[label % len(_PALETTE)] for label in detections["labels"].tolist()]
    if not colors:
        return image
    if "masks" in detections:
        masks = F.interpolate(detections["masks"].float(), size=size, mode="bilinear", align_corners=False)[:, 0] > 0.5
        image = draw_segmentation_masks(image, masks, alpha=0.45, colors=colors)
    short_side = min(size)
    image = draw_bounding_boxes(image, boxes, colors=colors, width=max(2, short_side // 256))
    labels = [
        f"{detection_label(label, names)} {score:.2f}" for label, score in zip(detections["labels"].tolist(), detections["scores"].tolist())
    ]
    return _draw_labels(image, boxes, labels, colors, font_size=max(12, short_side // 32))


def _draw_labels(image: torch.Tensor, boxes: torch.Tensor, labels: Sequence[str], colors: Sequence[str], font_size: int) -> torch.Tensor:
    """Each label in a tab of its box's colour, outside the box so that it hides none of the
    object. Drawn with PIL: draw_bounding_boxes puts labels inside the box, and needs a font file
    for sizes, where Pillow's default font scales."""
    picture = to_pil_image(image)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=font_size)
    pad = max(2, font_size // 6)
    for (x0, y0, _, y1), label, color in zip(boxes.tolist(), labels, colors):
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tab_width, tab_height = right - left + 2 * pad, bottom - top + 2 * pad
        if y0 >= tab_height:
            tab_top = y0 - tab_height
        elif y1 + tab_height <= picture.height:
            tab_top = y1
        else:
            tab_top = max(0, y0)
        tab_left = min(max(0, x0), max(0, picture.width - tab_width))
        red, green, blue = ImageColor.getrgb(color)
        ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else "white"
        draw.rectangle((tab_left, tab_top, tab_left + tab_width - 1, tab_top + tab_height - 1), fill=color)
        draw.text((tab_left + pad - left, tab_top + pad - top), label, fill=ink, font=font)
    return pil_to_tensor(picture)


def write_png(path: str, image: torch.Tensor) -> None:
    """The uint8 image as a PNG file, written atomically: an error never leaves half a PNG."""
    data = encode_png(image)
    atomic_write(path, lambda handle: handle.write(data))


_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990", "#9a6324"]


def detect(args: argparse.Namespace) -> int:
    """Run a detector over the images, print and draw what it finds."""
    model, info = load_detector(args.weights, arch=args.arch)
    pictures = [open_rgb(path) for path in args.images]
    device = torch.device(args.device)
    model = model.to(device).eval()
    num_labels = object_classes(info["arch"], info["kwargs"])
    names = detection_class_names(info["classes"], num_labels)
    os.makedirs(args.out_dir, exist_ok=True)
    reports = []
    for path, picture in zip(args.images, pictures):
        image = pil_to_tensor(picture)
        with torch.inference_mode():
            output = model([image.to(device).float().div(255)])[0]
        keep = output["scores"] >= args.score_thresh
        detections = {key: value[keep].cpu() for key, value in output.items()}
        png = os.path.join(args.out_dir, f"{os.path.splitext(os.path.basename(path))[0]}_detections.png")
        write_png(png, draw_detections(image, detections, names))
        reports.append(format_detections(path, detections, names, png))
    print("\n".join(reports))
    return 0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("-a", "--arch", choices=models.model_names + detector_names, metavar="ARCH",
                        help="classifier or detector name (default: read from the weights)")
    parser.add_argument("--weights", required=True,
                        help="checkpoint file: released, saved by main.py or detect.py, or a state_dict")
    parser.add_argument("--topk", type=positive_int, default=5, help="classes to print per image (default 5)")
    parser.add_argument("--image-size", type=positive_int, default=224, help="centre-crop size (default 224)")
    parser.add_argument("--score-thresh", type=float, default=0.5,
                        help="detection: print and draw detections scoring at least this (default 0.5)")
    parser.add_argument("--out-dir", default="predictions",
                        help="detection: where the PNGs go (default predictions/)")
    parser.add_argument("--device", type=device_argument, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda where there is one)")
    return parser.parse_args(argv)


def predict(args: argparse.Namespace) -> int:
    """Detect objects with a detector, else print each image's top classes."""
    if holds_detector(args.weights, args.arch):
        return detect(args)
    images = read_images(args.images, args.image_size)
    model, _ = load_model(args.weights, arch=args.arch)
    device = torch.device(args.device)
    model = model.to(device).eval()
    with torch.inference_mode():
        probabilities = model(images.to(device)).softmax(dim=1).cpu()
    print("\n".join(format_predictions(path, p, args.topk) for path, p in zip(args.images, probabilities)))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    show_warnings_as_one_line("predict.py: warning")
    # bad input: a damaged checkpoint, an unreadable image (ValueError), an unwritable --out-dir (OSError)
    return exit_status_of(lambda: predict(args), "predict.py: error", bad_input=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())

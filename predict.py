"""Classify images with a checkpoint: the top-5 ImageNet classes with their probabilities.

    python predict.py -a eca_resnet50 --weights eca_resnet50_k3557.pth.tar cat.jpg dog.jpg

The images go through the validation transform (resize the short side to 256, centre-crop
224, normalise), as in evaluation. The model's architecture, ECA kernel sizes and class
count are read from the checkpoint (``-a`` is optional and checked against it). Class names
are ImageNet's, as torchvision ships them; a model with another class count prints indices.
"""

import argparse
import sys
from typing import List, Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.models import ResNet50_Weights

import models
from utils.checkpoint import CheckpointError, load_model
from utils.console import show_warnings_as_one_line
from utils.data import build_transform

IMAGENET_CLASSES: List[str] = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
"""The 1000 ImageNet-1k class names in WNID-sorted order, the order ImageFolder gives the classes."""


def read_images(paths: Sequence[str], image_size: int) -> torch.Tensor:
    """The preprocessed images as one batch; an unreadable file is a ValueError naming it."""
    transform = build_transform(train=False, image_size=image_size)
    batch = []
    for path in paths:
        try:
            with Image.open(path) as image:
                batch.append(transform(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as error:
            reason = "not an image file" if isinstance(error, UnidentifiedImageError) else error.strerror or str(error)
            raise ValueError(f"cannot read image {path}: {reason}") from None
    return torch.stack(batch)


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


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("-a", "--arch", choices=models.model_names, help="model name (default: read from the weights)")
    parser.add_argument("--weights", required=True, help="checkpoint file: released, saved by main.py, or a state_dict")
    parser.add_argument("--topk", type=int, default=5, help="classes to print per image (default 5)")
    parser.add_argument("--image-size", type=int, default=224, help="centre-crop size (default 224)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    show_warnings_as_one_line("predict: warning")
    try:
        images = read_images(args.images, args.image_size)
        model, _ = load_model(args.weights, arch=args.arch)
    except (ValueError, CheckpointError) as error:
        print(f"predict: {error}", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    model = model.to(device).eval()
    with torch.inference_mode():
        probabilities = model(images.to(device)).softmax(dim=1).cpu()
    print("\n".join(format_predictions(path, p, args.topk) for path, p in zip(args.images, probabilities)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

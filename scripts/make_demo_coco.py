"""Render the detection demo's dataset: coloured shapes with polygon masks, in COCO's own layout.

``ROOT/train2017/*.jpg``, ``ROOT/val2017/*.jpg`` and ``ROOT/annotations/instances_{train,val}2017.json``.
Each image holds one to six objects of five shape classes, each with a random colour, size,
position and rotation on a background of the opposite brightness; objects may overlap, at most
30% of the smaller one's box (boxes and masks are the whole shape, as if nothing covered it). Masks are the exact
polygons that were drawn. The shapes are those of the classification demo
(scripts/make_demo_data.py). Everything is a pure function of --seed; val2017/ uses seeds
disjoint from train2017/, so it is a genuinely held-out split.
"""

import argparse
import json
import math
import os
import random
import sys
from typing import Any, Dict, List, Sequence, Tuple

from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_demo_data import SHAPES, Point, _polygon, _regular  # noqa: E402  (the classification demo's shapes)

CLASSES = ("circle", "cross", "square", "star", "triangle")
OUTLINES: Dict[str, List[Point]] = {**{name: SHAPES[name] for name in CLASSES if name in SHAPES}, "circle": _regular(32, 0.85)}
SUPERSAMPLE = 4  # drawn at 4x and downsampled, so edges are antialiased; -0.5 puts PIL's pixel centres where COCO's are
MAX_OVERLAP = 0.3  # of the smaller of two boxes, at most this much may lie inside the other


def _bounds(polygon: Sequence[Point]) -> Tuple[float, float, float, float]:
    xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
    return min(xs), min(ys), max(xs), max(ys)


def _overlap(a: Tuple[float, ...], b: Tuple[float, ...]) -> float:
    """Intersection over the smaller box: how much of one object another may hide."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return width * height / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _contrasting(rng: random.Random, background: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """A random colour at least 100 grey levels from the background's brightness."""
    level = sum(background) / 3
    low, high = (0, max(1, int(level) - 100)) if level >= 128 else (min(255, int(level) + 100), 256)
    return tuple(rng.randrange(low, high) for _ in range(3))


def render(seed: int, width: int, height: int) -> Tuple[Image.Image, List[Tuple[str, List[Point]]]]:
    """One image and its objects as (class name, polygon in image pixels), in drawing order."""
    rng = random.Random(seed)
    light = rng.random() < 0.5
    background = tuple(rng.randrange(170, 256) if light else rng.randrange(0, 90) for _ in range(3))
    image = Image.new("RGB", (width * SUPERSAMPLE, height * SUPERSAMPLE), background)
    draw = ImageDraw.Draw(image)
    objects: List[Tuple[str, List[Point]]] = []
    boxes: List[Tuple[float, float, float, float]] = []
    wanted = rng.randint(1, 6)
    for _ in range(wanted * 20):  # placement attempts
        if len(objects) == wanted:
            break
        name = rng.choice(CLASSES)
        scale = rng.uniform(0.08, 0.2) * min(width, height)
        centre = (rng.uniform(scale, width - scale), rng.uniform(scale, height - scale))
        polygon = _polygon(OUTLINES[name], rng.uniform(0, 2 * math.pi), scale, centre)
        box = _bounds(polygon)
        if any(_overlap(box, other) > MAX_OVERLAP for other in boxes):
            continue
        draw.polygon([(x * SUPERSAMPLE - 0.5, y * SUPERSAMPLE - 0.5) for x, y in polygon], fill=_contrasting(rng, background))
        objects.append((name, polygon))
        boxes.append(box)
    image = image.resize((width, height), Image.BILINEAR)
    noise = Image.effect_noise((width, height), rng.uniform(4, 16)).convert("RGB")
    return Image.blend(image, noise, 0.05), objects


def _polygon_area(polygon: Sequence[Point]) -> float:
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(polygon, list(polygon[1:]) + [polygon[0]]))) / 2


def make_split(root: str, split: str, count: int, sizes: Tuple[int, int], seed: int, first_index: int) -> int:
    """Write ``count`` images and their annotation file; returns the number of objects."""
    folder = os.path.join(root, f"{split}2017")
    os.makedirs(folder, exist_ok=True)
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for index in range(first_index, first_index + count):
        rng = random.Random(seed * 1_000_003 + index)
        width, height = rng.randint(*sizes), rng.randint(*sizes)
        image, objects = render(rng.randrange(2**62), width, height)
        file_name = f"{index:08d}.jpg"
        image.save(os.path.join(folder, file_name), quality=90)
        images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
        for name, polygon in objects:
            x1, y1, x2, y2 = _bounds(polygon)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": CLASSES.index(name) + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round(_polygon_area(polygon), 2),
                    "segmentation": [[round(v, 2) for point in polygon for v in point]],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": label, "name": name, "supercategory": "shape"} for label, name in enumerate(CLASSES, 1)]
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{split}2017.json"), "w") as handle:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, handle)
    return len(annotations)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="output directory (gets train2017/, val2017/ and annotations/)")
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--min-size", type=int, default=128, help="smallest image side in pixels")
    parser.add_argument("--max-size", type=int, default=192, help="largest image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] = None) -> int:
    args = get_args_parser().parse_args(argv)
    if min(args.train_images, args.val_images) < 1 or not 32 <= args.min_size <= args.max_size:
        print("make_demo_coco.py: error: need at least 1 image per split and 32 <= --min-size <= --max-size", file=sys.stderr)
        return 2
    sizes = (args.min_size, args.max_size)
    train_objects = make_split(args.root, "train", args.train_images, sizes, args.seed, 0)
    val_objects = make_split(args.root, "val", args.val_images, sizes, args.seed, args.train_images)
    print(
        f"wrote {args.train_images} + {args.val_images} images ({train_objects} + {val_objects} objects of "
        f"{len(CLASSES)} classes) to {args.root}/train2017 and {args.root}/val2017, annotations in {args.root}/annotations"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

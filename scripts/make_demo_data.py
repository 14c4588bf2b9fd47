"""Render the demo dataset: coloured shapes as JPEGs in ImageFolder layout (train/ and val/).

Ten classes of shapes that stay distinguishable under any rotation, each drawn with a random
colour, size, position and rotation on a random background with a little noise. Everything
is a pure function of --seed, so every machine trains on the same images; val/ uses seeds
disjoint from train/, so it is a genuinely held-out split.
"""

import argparse
import math
import os
import random
import sys
from typing import Dict, List, Sequence, Tuple

from PIL import Image, ImageDraw

Point = Tuple[float, float]

CLASSES = ("arrow", "circle", "crescent", "cross", "l_shape", "ring", "square", "star", "t_shape", "triangle")


def _polygon(points: Sequence[Point], angle: float, scale: float, centre: Point) -> List[Point]:
    """Unit-space points rotated by ``angle``, scaled and moved to ``centre``."""
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = centre
    return [(cx + scale * (x * cos - y * sin), cy + scale * (x * sin + y * cos)) for x, y in points]


def _regular(sides: int, radius: float = 1.0, phase: float = 0.0) -> List[Point]:
    return [(radius * math.cos(phase + 2 * math.pi * i / sides), radius * math.sin(phase + 2 * math.pi * i / sides)) for i in range(sides)]


def _star() -> List[Point]:
    outer, inner = _regular(5, 1.0, -math.pi / 2), _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
    return [point for pair in zip(outer, inner) for point in pair]


SHAPES: Dict[str, List[Point]] = {
    "arrow": [(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)],
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
              (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "l_shape": [(-0.7, -1), (-0.1, -1), (-0.1, 0.4), (0.7, 0.4), (0.7, 1), (-0.7, 1)],
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "star": _star(),
    "t_shape": [(-1, -0.9), (1, -0.9), (1, -0.3), (0.3, -0.3), (0.3, 1), (-0.3, 1), (-0.3, -0.3), (-1, -0.3)],
    "triangle": _regular(3, 1.0, -math.pi / 2),
}


def _draw_round(draw: ImageDraw.ImageDraw, name: str, centre: Point, scale: float, angle: float,
                colour: Tuple[int, int, int], background: Tuple[int, int, int]) -> None:
    """The shapes made of discs: circle, ring (a disc with a hole), crescent (a disc with an offset bite)."""
    cx, cy = centre
    radius = 0.85 * scale
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    if name == "ring":
        hole = 0.5 * radius
        draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=background)
    elif name == "crescent":
        bx, by = cx + 0.45 * radius * math.cos(angle), cy + 0.45 * radius * math.sin(angle)
        draw.ellipse([bx - 0.85 * radius, by - 0.85 * radius, bx + 0.85 * radius, by + 0.85 * radius], fill=background)


def _distinct_colours(rng: random.Random) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """A random shape colour on a random background of the opposite brightness, so the
    outline, not the colour, is what tells the classes apart."""
    light = rng.random() < 0.5
    low, high = (0, 110) if light else (150, 256)
    colour = tuple(rng.randrange(low, high) for _ in range(3))
    low, high = (170, 256) if light else (0, 90)
    background = tuple(rng.randrange(low, high) for _ in range(3))
    return colour, background


def render(name: str, seed: int, size: int) -> Image.Image:
    """One image of class ``name``: drawn at 4x and downsampled, so edges are antialiased."""
    rng = random.Random(seed)
    big = size * 4
    colour, background = _distinct_colours(rng)
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    scale = big * rng.uniform(0.22, 0.4)
    margin = scale
    centre = (rng.uniform(margin, big - margin), rng.uniform(margin, big - margin))
    angle = rng.uniform(0, 2 * math.pi)
    if name in SHAPES:
        draw.polygon(_polygon(SHAPES[name], angle, scale, centre), fill=colour)
    else:
        _draw_round(draw, name, centre, scale, angle, colour, background)
    image = image.resize((size, size), Image.BILINEAR)
    noise = Image.effect_noise((size, size), rng.uniform(4, 16)).convert("RGB")
    return Image.blend(image, noise, 0.05)


def make_split(root: str, split: str, per_class: int, size: int, seed: int, first_index: int) -> None:
    for label, name in enumerate(CLASSES):
        folder = os.path.join(root, split, name)
        os.makedirs(folder, exist_ok=True)
        for index in range(first_index, first_index + per_class):
            image_seed = (seed * 1_000_003 + label) * 10_000_019 + index
            render(name, image_seed, size).save(os.path.join(folder, f"{name}_{index:05d}.jpg"), quality=90)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="output directory (gets train/ and val/)")
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] = None) -> int:
    args = get_args_parser().parse_args(argv)
    if min(args.train_per_class, args.val_per_class) < 1 or args.size < 8:
        print("make_demo_data.py: error: need at least 1 image per class per split and --size of at least 8", file=sys.stderr)
        return 2
    make_split(args.root, "train", args.train_per_class, args.size, args.seed, 0)
    make_split(args.root, "val", args.val_per_class, args.size, args.seed, args.train_per_class)
    total = len(CLASSES) * (args.train_per_class + args.val_per_class)
    print(f"wrote {total} images of {len(CLASSES)} classes to {args.root}/train and {args.root}/val")
    return 0


if __name__ == "__main__":
    sys.exit(main())

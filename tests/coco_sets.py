"""Tiny COCO-format sets on disk for the detection tests: real JPEGs and an annotation file with
polygons, compressed and uncompressed RLE, a crowd region, an image without annotations, and
category ids that are neither contiguous nor in order."""

import json
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# category ids deliberately unsorted and with gaps: label L is the L-th id in sorted order
CATEGORIES = [{"id": 11, "name": "kite"}, {"id": 3, "name": "car"}, {"id": 7, "name": "dog"}]
WIDTH, HEIGHT = 64, 48


def rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """A mask as COCO's compressed RLE (counts a string) or uncompressed RLE (counts a list)."""
    if compressed:
        encoded = mask_utils.encode(np.asfortranarray(mask))
        return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}
    flat = mask.flatten(order="F")  # uncompressed RLE: run lengths in column-major order, starting with 0s
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def rectangle(x: int, y: int, w: int, h: int) -> np.ndarray:
    """A uint8 HEIGHT x WIDTH mask of the pixels inside COCO box [x, y, w, h]."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


def coco_annotations() -> List[dict]:
    """Annotations of images 1..3 with every segmentation format; ids are annotation ids."""
    return [
        # image 1: a polygon (car), a compressed RLE (dog), a crowd region (kite, left out of targets)
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 6, 20, 10], "area": 200, "iscrowd": 0,
         "segmentation": [[4, 6, 24, 6, 24, 16, 4, 16]]},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30, 20, 12, 18], "area": 216, "iscrowd": 0,
         "segmentation": rle(rectangle(30, 20, 12, 18))},
        {"id": 3, "image_id": 1, "category_id": 11, "bbox": [0, 0, 64, 48], "area": 3072, "iscrowd": 1,
         "segmentation": rle(rectangle(0, 0, 64, 48), compressed=False)},
        # image 2: an uncompressed RLE (kite)
        {"id": 4, "image_id": 2, "category_id": 11, "bbox": [10, 5, 8, 30], "area": 240, "iscrowd": 0,
         "segmentation": rle(rectangle(10, 5, 8, 30), compressed=False)},
        # image 3 has no annotation: evaluated, not trained on
    ]


def write_coco_set(root: Path, annotations: Optional[List[dict]] = None, images: int = 3) -> Tuple[str, str]:
    """Random-pixel JPEGs in ``root/images`` and ``root/instances.json``: (image folder, annotation file)."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    entries = []
    for image_id in range(1, images + 1):
        name = f"{image_id:012d}.jpg"
        pixels = generator.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / name, quality=95)
        entries.append({"id": image_id, "file_name": name, "width": WIDTH, "height": HEIGHT})
    annotation_file = root / "instances.json"
    content = {"images": entries, "annotations": coco_annotations() if annotations is None else annotations, "categories": CATEGORIES}
    annotation_file.write_text(json.dumps(content))
    return str(image_dir), str(annotation_file)

"""COCO-format instance data for the detectors: the annotation file checked up front, a Dataset in
torchvision's detection interface, the training flip, a collate and loaders.

Conventions (shared with models/detection and utils/detection/coco_eval.py):

- boxes are torchvision's exclusive ``(x1, y1, x2, y2)`` in pixels: COCO's ``[x, y, w, h]`` is
  ``(x, y, x + w, y + h)``; MMDetection v1's inclusive ``(x, y, x + w - 1, y + h - 1)`` is the same
  box (the +1 lives inside the models);
- label L in 1..C is the L-th category in sorted category-id order (MMDetection v1's
  ``cat2label``); 0 is never an object;
- what MMDetection v1 left out of training is left out here too: crowd and ``ignore``
  annotations, boxes under one pixel wide or high or of zero area, and so images without a
  box left or smaller than 32 pixels. Evaluation sees every image.

Problems with the files are :class:`utils.data.datasets.DataError` with one line naming the file, found
before training starts where they can be: a missing or non-COCO annotation file, missing image
files, an id given twice, an image without a positive whole width and height, an annotation on
an image or of a category the file does not list, an empty or inverted box. Boxes lying mostly
outside their image are left out with one warning. An image file that cannot be decoded at run time comes back
as :class:`utils.data.datasets.UnreadableImage` with the decoder's message, for ``--bad-images skip|error``
as in classification; so does one whose size is not the one its annotations were made for.
"""

import contextlib
import io
import json
import math
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import pil_to_tensor

from utils.data.datasets import DataError
from utils.data.decode import UNREADABLE, UnreadableImage, unreadable_reason
from utils.data.loaders import build_loader, split_unreadable
from utils.distributed import DistributedContext

__all__ = [
    "Target",
    "coco_split_paths",
    "load_coco",
    "CocoDetection",
    "flip_horizontal",
    "collate_detection",
    "build_coco_loader",
]

Target = Dict[str, torch.Tensor]

MIN_TRAIN_IMAGE_SIZE = 32  # MMDetection v1's _filter_imgs(min_size=32)


def coco_split_paths(root: str, split: str) -> Tuple[str, str]:
    """``(image folder, annotation file)`` of a split in COCO's own layout:
    ``root/{split}2017/`` and ``root/annotations/instances_{split}2017.json``."""
    if not os.path.isdir(root):
        raise DataError(f"data directory {root} does not exist")
    return (
        os.path.join(root, f"{split}2017"),
        os.path.join(root, "annotations", f"instances_{split}2017.json"),
    )


def _not_coco(path: str, why: str) -> DataError:
    return DataError(f"{path}: not a COCO annotation file ({why})")


def _read_json(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: annotation file not found")
    try:
        with open(path, "rb") as handle:
            content = json.load(handle)
    except (UnicodeDecodeError, ValueError) as error:
        raise _not_coco(path, f"not JSON: {str(error).splitlines()[0]}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the annotation file ({error.strerror or error})") from None
    if not isinstance(content, dict):
        raise _not_coco(path, f"a JSON {type(content).__name__}, not an object")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(content.get(key), list)]
    if missing:
        raise _not_coco(path, "no " + ", ".join(f"'{key}'" for key in missing) + " list")
    return content


def _check_entries(path: str, entries: List[Any], kind: str, keys: Sequence[str]) -> None:
    """Every entry has ``keys`` and an integer ``id`` no other entry of its list has."""
    first_with_id: Dict[int, int] = {}
    for position, entry in enumerate(entries):
        absent = [key for key in keys if not isinstance(entry, dict) or key not in entry]
        if absent:
            raise _not_coco(path, f"{kind} entry #{position} has no '{absent[0]}'")
        if not _is_whole(entry["id"]):
            raise DataError(f"{path}: {kind} entry #{position} has id {entry['id']!r}; ids are whole numbers")
        if entry["id"] in first_with_id:
            earlier = first_with_id[entry["id"]]
            raise DataError(f"{path}: {kind} id {entry['id']} is given twice, to {kind} entries #{earlier} and #{position}")
        first_with_id[entry["id"]] = position


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_image_sizes(path: str, images: List[Dict[str, Any]]) -> None:
    for image in images:
        for key in ("width", "height"):
            if not _is_whole(image[key]) or image[key] < 1:
                raise DataError(
                    f"{path}: image {image['file_name']} (id {image['id']}) has {key} {image[key]!r}; "
                    "width and height are positive whole numbers of pixels"
                )


def _box_problem(box: Any) -> Optional[str]:
    """Why a COCO ``[x, y, w, h]`` cannot be a box, or None."""
    if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        return f"a malformed box {box!r} (expected [x, y, width, height])"
    if not all(math.isfinite(v) for v in box):
        return f"a non-finite box {box}"
    if box[2] < 0 or box[3] < 0:
        return f"an inverted box {box} (negative width or height)"
    if box[2] == 0 or box[3] == 0:
        return f"an empty box {box} (zero width or height)"
    return None


def _mostly_outside(box: List[float], image: Dict[str, Any]) -> bool:
    """Whether more than half of a COCO box's area lies outside its image (a box from another
    image's coordinates, or one of 1e30 pixels); sub-pixel overhangs stay, as MMDetection v1 kept them."""
    x, y, width, height = box
    inside_width = max(0.0, min(x + width, image["width"]) - max(x, 0.0))
    inside_height = max(0.0, min(y + height, image["height"]) - max(y, 0.0))
    return inside_width * inside_height < 0.5 * width * height


def _drop_boxes_outside(path: str, content: Dict[str, Any]) -> None:
    """Leave out, with one warning, the annotations whose box lies mostly outside their image:
    they are not the objects of that image, for training or for evaluation."""
    images = {image["id"]: image for image in content["images"]}
    kept: List[Dict[str, Any]] = []
    outside: List[Dict[str, Any]] = []
    for annotation in content["annotations"]:
        (outside if _mostly_outside(annotation["bbox"], images[annotation["image_id"]]) else kept).append(annotation)
    if not outside:
        return
    content["annotations"] = kept
    example, image = outside[0], images[outside[0]["image_id"]]
    warnings.warn(
        f"{path}: left out {len(outside)} annotations whose box lies mostly outside its image, e.g. annotation {example['id']} "
        f"with box {example['bbox']} on image {image['file_name']} (id {image['id']}) of {image['width']}x{image['height']} pixels"
    )


def _check_annotations(path: str, content: Dict[str, Any], with_masks: bool) -> List[int]:
    """Raise on the first unusable annotation; mend short polygons and return the ids of the
    annotations whose mask had to become their box. ``with_masks``: every one needs a mask."""
    images = {image["id"]: image for image in content["images"]}
    category_ids = {category["id"] for category in content["categories"]}
    boxed: List[int] = []
    for annotation in content["annotations"]:
        where = f"annotation {annotation['id']}"
        image = images.get(annotation["image_id"]) if _is_whole(annotation["image_id"]) else None
        if image is None:
            raise DataError(f"{path}: {where} refers to image id {annotation['image_id']}, which is not in 'images'")
        where += f" on image {image['file_name']} (id {image['id']})"
        if not _is_whole(annotation["category_id"]) or annotation["category_id"] not in category_ids:
            raise DataError(f"{path}: {where} has category id {annotation['category_id']}, which is not in 'categories'")
        problem = _box_problem(annotation["bbox"])
        if problem:
            raise DataError(f"{path}: {where} has {problem}")
        if with_masks or annotation.get("segmentation"):  # segm evaluation decodes them too
            problem = _segmentation_problem(annotation.get("segmentation"), image)
            if problem:
                raise DataError(f"{path}: {where} has {problem}")
            if not _keep_full_polygons(annotation):
                boxed.append(annotation["id"])
    return boxed


def _segmentation_problem(segmentation: Any, image: Dict[str, Any]) -> Optional[str]:
    """Why a segmentation cannot be decoded at its image's size, or None."""
    if not segmentation:
        return "no 'segmentation' (masks need polygons or RLE)"
    if isinstance(segmentation, list):
        if not all(isinstance(part, list) for part in segmentation):
            return "a malformed polygon (expected a list of [x1, y1, x2, y2, ...] lists)"
        return None
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        return "a malformed segmentation (neither polygons nor RLE with 'size' and 'counts')"
    if list(segmentation["size"]) != [image["height"], image["width"]]:
        return f"an RLE mask of size {list(segmentation['size'])} where the image is {[image['height'], image['width']]} (height, width)"
    return None


def _keep_full_polygons(annotation: Dict[str, Any]) -> bool:
    """Drop polygon parts of fewer than three points, which pycocotools misreads as boxes or
    fails on; an annotation left without any gets its box as its polygon (returns False)."""
    segmentation = annotation["segmentation"]
    if not isinstance(segmentation, list):
        return True
    polygons = [part for part in segmentation if len(part) >= 6 and len(part) % 2 == 0]
    kept = bool(polygons)
    if not kept:
        x, y, w, h = annotation["bbox"]
        polygons = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    annotation["segmentation"] = polygons
    return kept


def load_coco(annotation_file: str, with_masks: bool = False) -> COCO:
    """The annotation file as a pycocotools COCO object, checked: every problem is one DataError line.

    Annotations without ``area`` get their box's, which is what COCOeval's area ranges need, and a
    file without ``info`` an empty one, which some pycocotools versions need to evaluate.
    Segmentations are checked and polygons of fewer than three points mended, so that masks and
    pycocotools' segm evaluation can decode them; ``with_masks`` requires one on every annotation.
    """
    content = _read_json(annotation_file)
    if not content["categories"]:
        raise _not_coco(annotation_file, "'categories' is empty")
    _check_entries(annotation_file, content["images"], "image", ("id", "file_name", "width", "height"))
    _check_entries(annotation_file, content["annotations"], "annotation", ("id", "image_id", "category_id", "bbox"))
    _check_entries(annotation_file, content["categories"], "category", ("id", "name"))
    _check_image_sizes(annotation_file, content["images"])
    boxed = _check_annotations(annotation_file, content, with_masks)
    _drop_boxes_outside(annotation_file, content)
    for annotation in content["annotations"]:
        annotation.setdefault("area", float(annotation["bbox"][2] * annotation["bbox"][3]))
    content.setdefault("info", {})  # pycocotools 2.0.8-2.0.10's loadRes copies it and raised KeyError without one
    if boxed:
        warnings.warn(
            f"{annotation_file}: {len(boxed)} annotations have no polygon of 3 or more points, e.g. annotation {boxed[0]}; "
            "their masks are their boxes"
        )
    coco = COCO()
    coco.dataset = content
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _check_image_files(image_dir: str, coco: COCO, annotation_file: str) -> None:
    if not os.path.isdir(image_dir):
        raise DataError(f"{image_dir}: image folder not found (images of {annotation_file})")
    present = set(os.listdir(image_dir))
    missing = [
        image["file_name"]
        for image in coco.dataset["images"]
        if image["file_name"] not in present and not os.path.isfile(os.path.join(image_dir, image["file_name"]))
    ]
    if missing:
        total = len(coco.dataset["images"])
        raise DataError(
            f"{image_dir}: {len(missing)} of {total} image files listed in {annotation_file} are missing, e.g. {missing[0]}"
        )


def _trainable(annotation: Dict[str, Any]) -> bool:
    """MMDetection v1's _parse_ann_info: which annotations become training targets."""
    _, _, width, height = annotation["bbox"]
    return (
        not annotation.get("iscrowd", 0) and not annotation.get("ignore", False) and width >= 1 and height >= 1 and annotation["area"] > 0
    )


def flip_horizontal(image: torch.Tensor, target: Target) -> Tuple[torch.Tensor, Target]:
    """Mirror an image (C x H x W) and its boxes and masks together (exclusive boxes flip exactly)."""
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, 0], boxes[:, 2] = width - target["boxes"][:, 2], width - target["boxes"][:, 0]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


class CocoDetection(Dataset):
    """Images of a COCO-format set as ``(image, target)`` for torchvision's detectors.

    ``image`` is float C x H x W in 0..1 at the file's own size (the detector resizes);
    ``target`` has ``boxes`` (float N x 4, exclusive, pixels), ``labels`` (int64 N, 1..C),
    ``masks`` (uint8 N x H x W, with ``with_masks``), ``image_id`` (int64 scalar) and
    ``orig_size`` (int64 ``[height, width]``). Training sets (``train=True``) hold only images
    with a trainable box and flip each sample with probability ``flip_prob``, drawn from torch's
    generator, which utils.data's training loader seeds per sample from (seed, epoch, index).
    """

    def __init__(
        self,
        image_dir: str,
        annotation_file: str,
        train: bool,
        with_masks: bool = False,
        flip_prob: float = 0.5,
    ) -> None:
        self.image_dir = image_dir
        self.annotation_file = annotation_file
        self.train = train
        self.with_masks = with_masks
        self.flip_prob = flip_prob if train else 0.0
        self.coco = load_coco(annotation_file, with_masks)
        _check_image_files(image_dir, self.coco, annotation_file)
        self.category_ids: List[int] = sorted(self.coco.getCatIds())
        self.classes: List[str] = [self.coco.cats[category_id]["name"] for category_id in self.category_ids]
        self.label_of_category: Dict[int, int] = {category_id: label for label, category_id in enumerate(self.category_ids, 1)}
        self.image_ids: List[int] = [image["id"] for image in self.coco.dataset["images"]]
        if train:
            self.image_ids = [image_id for image_id in self.image_ids if self._usable_for_training(image_id)]
            if not self.image_ids:
                raise DataError(f"{annotation_file}: no image has a box to train on (crowd and sub-pixel boxes do not count)")

    def _usable_for_training(self, image_id: int) -> bool:
        image = self.coco.imgs[image_id]
        if min(image["width"], image["height"]) < MIN_TRAIN_IMAGE_SIZE:
            return False
        return any(_trainable(annotation) for annotation in self.coco.imgToAnns[image_id])

    @property
    def num_classes(self) -> int:
        """Object categories, without background."""
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Union[Tuple[torch.Tensor, Target], UnreadableImage]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = os.path.join(self.image_dir, info["file_name"])
        try:
            with Image.open(path) as file:
                if file.size != (info["width"], info["height"]):  # its boxes and masks would not fit it
                    width, height = file.size
                    return UnreadableImage(path, f"{width} x {height} pixels, annotated as {info['width']} x {info['height']}")
                image = pil_to_tensor(file.convert("RGB")).float().div_(255)
        except UNREADABLE as error:
            return UnreadableImage(path, unreadable_reason(error))
        target = self._target(image_id, info)
        if self.flip_prob and torch.rand(()).item() < self.flip_prob:
            image, target = flip_horizontal(image, target)
        return image, target

    def _target(self, image_id: int, info: Dict[str, Any]) -> Target:
        annotations = [annotation for annotation in self.coco.imgToAnns[image_id] if _trainable(annotation)]
        boxes = torch.tensor([annotation["bbox"] for annotation in annotations], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        target: Target = {
            "boxes": boxes,
            "labels": torch.tensor([self.label_of_category[a["category_id"]] for a in annotations], dtype=torch.int64),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "orig_size": torch.tensor([info["height"], info["width"]], dtype=torch.int64),
        }
        if self.with_masks:
            masks = [self.coco.annToMask(annotation) for annotation in annotations]
            shape = (len(masks), info["height"], info["width"])
            target["masks"] = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(shape, dtype=torch.uint8)
        return target


def collate_detection(
    batch: Sequence[Union[Tuple[torch.Tensor, Target], UnreadableImage]]
) -> Tuple[List[torch.Tensor], List[Target], List[str]]:
    """Lists of the readable images and their targets (sizes differ), plus ``PATH (REASON)`` of
    the unreadable files, as utils.data.loaders.collate_readable does for classification."""
    readable, unreadable = split_unreadable(batch)
    return [image for image, _ in readable], [target for _, target in readable], unreadable


def build_coco_loader(
    dataset: CocoDetection,
    train: bool,
    batch_size: int,
    workers: int,
    seed: int,
    context: DistributedContext,
    pin_memory: bool = False,
) -> DataLoader:
    """utils.data.loaders.build_loader with :func:`collate_detection`: training shuffles per (seed, epoch)
    across ranks (call utils.data.loaders.start_epoch), evaluation shards in order so that every image
    is evaluated exactly once."""
    return build_loader(dataset, train, batch_size, workers, seed, context, pin_memory, collate_fn=collate_detection)

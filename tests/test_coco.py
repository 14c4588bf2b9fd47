"""COCO-format data for the detectors: conventions, the flip, the collate, every bad input's one
line, and the demo's generated set. Real JPEGs and annotation files in a temporary directory."""

import copy
import filecmp
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from utils.coco import CocoDetection, build_coco_loader, collate_detection, coco_split_paths, flip_horizontal
from utils.data import DataError, start_epoch
from utils.distributed import DistributedContext

ROOT = Path(__file__).resolve().parent.parent

# category ids deliberately unsorted and with gaps: label L is the L-th id in sorted order
CATEGORIES = [{"id": 11, "name": "kite"}, {"id": 3, "name": "car"}, {"id": 7, "name": "dog"}]
WIDTH, HEIGHT = 64, 48


def _rle(mask: np.ndarray, compressed: bool = True) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    if compressed:
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    flat = mask.flatten(order="F")  # uncompressed RLE: run lengths in column-major order, starting with 0s
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def _rectangle(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


def _annotations() -> list:
    return [
        # image 1: a polygon (car), a compressed RLE (dog), a crowd region (kite, left out of targets)
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 6, 20, 10], "area": 200, "iscrowd": 0,
         "segmentation": [[4, 6, 24, 6, 24, 16, 4, 16]]},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30, 20, 12, 18], "area": 216, "iscrowd": 0,
         "segmentation": _rle(_rectangle(30, 20, 12, 18))},
        {"id": 3, "image_id": 1, "category_id": 11, "bbox": [0, 0, 64, 48], "area": 3072, "iscrowd": 1,
         "segmentation": _rle(_rectangle(0, 0, 64, 48), compressed=False)},
        # image 2: an uncompressed RLE (kite)
        {"id": 4, "image_id": 2, "category_id": 11, "bbox": [10, 5, 8, 30], "area": 240, "iscrowd": 0,
         "segmentation": _rle(_rectangle(10, 5, 8, 30), compressed=False)},
        # image 3 has no annotation: evaluated, not trained on
    ]


def write_coco_set(root: Path, annotations=None, images=3) -> tuple:
    """JPEGs and an annotation file: (image folder, annotation file)."""
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
    content = {"images": entries, "annotations": _annotations() if annotations is None else annotations, "categories": CATEGORIES}
    annotation_file.write_text(json.dumps(content))
    return str(image_dir), str(annotation_file)


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    return write_coco_set(tmp_path_factory.mktemp("coco"))


def test_targets_follow_the_conventions(coco_set):
    image_dir, annotation_file = coco_set
    dataset = CocoDetection(image_dir, annotation_file, train=False, with_masks=True)
    assert dataset.category_ids == [3, 7, 11] and dataset.classes == ["car", "dog", "kite"]
    assert dataset.label_of_category == {3: 1, 7: 2, 11: 3} and dataset.num_classes == 3
    assert len(dataset) == 3  # evaluation keeps the image without annotations

    image, target = dataset[0]
    assert image.shape == (3, HEIGHT, WIDTH) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    expected = np.array(Image.open(Path(image_dir) / "000000000001.jpg").convert("RGB"))
    assert torch.equal((image * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(expected))
    # exclusive boxes: [x, y, w, h] -> (x, y, x + w, y + h); the crowd region is not a target
    assert torch.equal(target["boxes"], torch.tensor([[4.0, 6.0, 24.0, 16.0], [30.0, 20.0, 42.0, 38.0]]))
    assert target["labels"].tolist() == [1, 2] and target["labels"].dtype == torch.int64
    assert target["image_id"].item() == 1 and target["orig_size"].tolist() == [HEIGHT, WIDTH]
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (2, HEIGHT, WIDTH)
    assert torch.equal(masks[1], torch.from_numpy(_rectangle(30, 20, 12, 18)))  # from RLE
    assert masks[0].sum() > 0.9 * 200 and masks[0][7:15, 5:23].all()  # from the polygon
    # a mask's extent is its box, in the exclusive convention
    for box, mask in zip(target["boxes"], masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1

    _, target = dataset[1]
    assert torch.equal(target["masks"][0], torch.from_numpy(_rectangle(10, 5, 8, 30)))  # from uncompressed RLE
    assert target["labels"].tolist() == [3]
    _, target = dataset[2]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["masks"].shape == (0, HEIGHT, WIDTH)

    without_masks = CocoDetection(image_dir, annotation_file, train=False)
    assert "masks" not in without_masks[0][1]


def test_training_set_leaves_out_what_mmdetection_v1_did(tmp_path):
    annotations = _annotations() + [
        # image 3 gets only a crowd region and a sub-pixel box: nothing to train on
        {"id": 5, "image_id": 3, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 1, "segmentation": [[1, 1, 6, 1, 6, 6]]},
        {"id": 6, "image_id": 3, "category_id": 3, "bbox": [1, 1, 0.5, 5], "area": 2.5, "iscrowd": 0, "segmentation": [[1, 1, 1.5, 1, 1.5, 6]]},
    ]
    image_dir, annotation_file = write_coco_set(tmp_path, annotations)
    dataset = CocoDetection(image_dir, annotation_file, train=True, with_masks=True, flip_prob=0.0)
    assert dataset.image_ids == [1, 2]
    assert dataset[0][1]["labels"].tolist() == [1, 2]


def test_flip_moves_image_boxes_and_masks_together(coco_set):
    image_dir, annotation_file = coco_set
    plain = CocoDetection(image_dir, annotation_file, train=False, with_masks=True)
    flipped = CocoDetection(image_dir, annotation_file, train=True, with_masks=True, flip_prob=1.0)
    image, target = plain[0]
    flipped_image, flipped_target = flipped[0]
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.equal(flipped_target["boxes"], torch.tensor([[40.0, 6.0, 60.0, 16.0], [22.0, 20.0, 34.0, 38.0]]))
    assert torch.equal(flipped_target["masks"], target["masks"].flip(-1))
    assert torch.equal(flipped_target["labels"], target["labels"])
    for box, mask in zip(flipped_target["boxes"], flipped_target["masks"]):  # each mask still fills its box
        assert mask[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])].float().mean() > 0.9
    twice = flip_horizontal(flipped_image, flipped_target)
    assert torch.equal(twice[0], image) and torch.equal(twice[1]["boxes"], target["boxes"])


def test_flip_is_seeded_per_sample_and_epoch(coco_set):
    image_dir, annotation_file = coco_set
    dataset = CocoDetection(image_dir, annotation_file, train=True)
    unflipped = CocoDetection(image_dir, annotation_file, train=True, flip_prob=0.0)

    def flips(seed, epoch):
        dataset.set_epoch(seed, epoch)
        return tuple(not torch.equal(dataset[i][0], unflipped[i][0]) for i in range(len(dataset)))

    decisions = {(seed, epoch): flips(seed, epoch) for seed in (0, 1) for epoch in range(6)}
    assert decisions == {key: flips(*key) for key in decisions}  # the same every time asked
    assert len(set(decisions.values())) > 1  # and not the same for every epoch


def test_collate_and_loader_pass_unreadable_files_through(tmp_path):
    image_dir, annotation_file = write_coco_set(tmp_path)
    (Path(image_dir) / "000000000002.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    dataset = CocoDetection(image_dir, annotation_file, train=False, with_masks=True)
    loader = build_coco_loader(dataset, train=False, batch_size=3, workers=0, seed=0, context=DistributedContext())
    (images, targets, unreadable), = list(loader)
    assert unreadable == [str(Path(image_dir) / "000000000002.jpg")]
    assert [t["image_id"].item() for t in targets] == [1, 3] and len(images) == 2
    assert collate_detection([dataset[1]]) == ([], [], unreadable)

    train_loader = build_coco_loader(CocoDetection(image_dir, annotation_file, train=True), True, 2, 0, 0, DistributedContext())
    start_epoch(train_loader, 0)
    assert sum(len(batch[0]) + len(batch[2]) for batch in train_loader) == 2


def test_coco_layout_paths(tmp_path):
    assert coco_split_paths(str(tmp_path), "val") == (str(tmp_path / "val2017"), str(tmp_path / "annotations" / "instances_val2017.json"))
    with pytest.raises(DataError, match="does not exist"):
        coco_split_paths(str(tmp_path / "nowhere"), "train")


def _one_line_error(image_dir: str, annotation_file: str, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        CocoDetection(image_dir, annotation_file, **{"train": True, **kwargs})
    message = str(caught.value)
    assert "\n" not in message and message
    return message


def _rewrite(annotation_file: str, change) -> None:
    content = json.loads(Path(annotation_file).read_text())
    change(content)
    Path(annotation_file).write_text(json.dumps(content))


def test_bad_annotation_files_are_one_line(tmp_path):
    image_dir, annotation_file = write_coco_set(tmp_path)
    original = Path(annotation_file).read_text()

    message = _one_line_error(image_dir, str(tmp_path / "missing.json"))
    assert message == f"{tmp_path / 'missing.json'}: annotation file not found"

    Path(annotation_file).write_text("{'images': [")
    assert _one_line_error(image_dir, annotation_file).startswith(f"{annotation_file}: not a COCO annotation file (not JSON: ")

    Path(annotation_file).write_text(json.dumps({"images": [], "categories": []}))
    assert _one_line_error(image_dir, annotation_file) == f"{annotation_file}: not a COCO annotation file (no 'annotations' list)"

    Path(annotation_file).write_text(json.dumps([1, 2]))
    assert "a JSON list, not an object" in _one_line_error(image_dir, annotation_file)

    for change, expected in [
        (lambda c: c["annotations"][1].__setitem__("bbox", [30, 20, 0, 18]),
         "annotation 2 on image 000000000001.jpg (id 1) has an empty box [30, 20, 0, 18]"),
        (lambda c: c["annotations"][3].__setitem__("bbox", [10, 5, 8, -30]),
         "annotation 4 on image 000000000002.jpg (id 2) has an inverted box [10, 5, 8, -30]"),
        (lambda c: c["annotations"][0].__setitem__("bbox", [1, 2, 3]), "annotation 1 on image 000000000001.jpg (id 1) has a malformed box"),
        (lambda c: c["annotations"][0].__setitem__("image_id", 99), "annotation 1 refers to image id 99, which is not in 'images'"),
        (lambda c: c["annotations"][0].__setitem__("category_id", 5), "has category id 5, which is not in 'categories'"),
        (lambda c: c["annotations"][0].pop("bbox"), "not a COCO annotation file (annotation entry #0 has no 'bbox')"),
        (lambda c: c["images"][2].pop("file_name"), "not a COCO annotation file (image entry #2 has no 'file_name')"),
        (lambda c: c["annotations"][0].pop("segmentation"), "annotation 1 on image 000000000001.jpg (id 1) has no 'segmentation'"),
        (lambda c: c["annotations"].__setitem__(slice(None), [c["annotations"][2]]), "no image has a box to train on"),
    ]:
        Path(annotation_file).write_text(original)
        _rewrite(annotation_file, change)
        message = _one_line_error(image_dir, annotation_file, with_masks=True)
        assert message.startswith(f"{annotation_file}: ") and expected in message, message


def test_missing_image_files_are_counted_up_front(tmp_path):
    image_dir, annotation_file = write_coco_set(tmp_path)
    for name in ("000000000001.jpg", "000000000003.jpg"):
        (Path(image_dir) / name).unlink()
    assert _one_line_error(image_dir, annotation_file) == (
        f"{image_dir}: 2 of 3 image files listed in {annotation_file} are missing, e.g. 000000000001.jpg"
    )
    assert _one_line_error(str(tmp_path / "no_images"), annotation_file) == (
        f"{tmp_path / 'no_images'}: image folder not found (images of {annotation_file})"
    )


def test_demo_set_is_reproducible_and_well_formed(tmp_path):
    def make(root):
        command = [sys.executable, "scripts/make_demo_coco.py", str(root), "--train-images", "12", "--val-images", "4", "--seed", "3"]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    assert "wrote 12 + 4 images" in make(tmp_path / "a")
    make(tmp_path / "b")
    for folder in ("train2017", "val2017", "annotations"):
        comparison = filecmp.dircmp(tmp_path / "a" / folder, tmp_path / "b" / folder)
        assert not comparison.diff_files and not comparison.left_only and not comparison.right_only
        assert filecmp.cmpfiles(tmp_path / "a" / folder, tmp_path / "b" / folder, comparison.common_files, shallow=False)[0] == comparison.common_files

    train = CocoDetection(*coco_split_paths(str(tmp_path / "a"), "train"), train=True, with_masks=True, flip_prob=0.0)
    val = CocoDetection(*coco_split_paths(str(tmp_path / "a"), "val"), train=False, with_masks=True)
    assert len(train) == 12 and len(val) == 4 and len(train.classes) >= 5
    assert not set(train.coco.imgs[i]["file_name"] for i in train.image_ids) & set(val.coco.imgs[i]["file_name"] for i in val.image_ids)
    for index in range(len(train)):
        image, target = train[index]
        assert 128 <= min(image.shape[1:]) and max(image.shape[1:]) <= 192
        assert 1 <= len(target["labels"]) <= 6
        for box, mask, annotation in zip(target["boxes"], target["masks"], train.coco.imgToAnns[train.image_ids[index]]):
            assert abs(mask.sum().item() - annotation["area"]) <= 0.1 * annotation["area"] + 10
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert abs(xs.min() - box[0]) <= 2 and abs(xs.max() + 1 - box[2]) <= 2  # pixel centres vs sharp tips
        # the drawn shapes are where the masks say: inside differs from the background
        background = image[:, ~target["masks"].any(0).bool()].mean(1)
        for mask in target["masks"]:
            inside = image[:, mask.bool()].mean(1)
            assert (inside - background).abs().max() > 0.2

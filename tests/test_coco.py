"""COCO-format data for the detectors: conventions, the flip, the collate, every bad input's one
line, and the demo's generated set. Real JPEGs and annotation files in a temporary directory."""

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from coco_sets import HEIGHT, WIDTH, coco_annotations, rectangle, write_coco_set
from helpers import run_script
from PIL import Image

from utils.data.datasets import DataError, UnreadableImage
from utils.data.loaders import start_epoch
from utils.detection.coco import CocoDetection, build_coco_loader, coco_split_paths, collate_detection, flip_horizontal
from utils.distributed import DistributedContext


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
    assert torch.equal(masks[1], torch.from_numpy(rectangle(30, 20, 12, 18)))  # from RLE
    assert masks[0].sum() > 0.9 * 200 and masks[0][7:15, 5:23].all()  # from the polygon
    # a mask's extent is its box, in the exclusive convention
    for box, mask in zip(target["boxes"], masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1

    _, target = dataset[1]
    assert torch.equal(target["masks"][0], torch.from_numpy(rectangle(10, 5, 8, 30)))  # from uncompressed RLE
    assert target["labels"].tolist() == [3]
    _, target = dataset[2]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["masks"].shape == (0, HEIGHT, WIDTH)

    without_masks = CocoDetection(image_dir, annotation_file, train=False)
    assert "masks" not in without_masks[0][1]


def test_training_set_leaves_out_what_mmdetection_v1_did(tmp_path):
    annotations = coco_annotations() + [
        # image 3 gets only a crowd region and a sub-pixel box: nothing to train on
        {"id": 5, "image_id": 3, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 1, "segmentation": [[1, 1, 6, 1, 6, 6]]},
        {
            "id": 6,
            "image_id": 3,
            "category_id": 3,
            "bbox": [1, 1, 0.5, 5],
            "area": 2.5,
            "iscrowd": 0,
            "segmentation": [[1, 1, 1.5, 1, 1.5, 6]],
        },
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


def test_training_loader_flips_per_sample_seed_and_epoch(tmp_path):
    image_dir, annotation_file = write_coco_set(tmp_path, images=8, annotations=[
        {"id": i, "image_id": i, "category_id": 3, "bbox": [4, 6, 20, 10], "area": 200, "iscrowd": 0} for i in range(1, 9)
    ])
    dataset = CocoDetection(image_dir, annotation_file, train=True)

    def flips(epoch, workers):
        loader = build_coco_loader(dataset, True, 3, workers, seed=5, context=DistributedContext())
        start_epoch(loader, epoch)
        torch.manual_seed(epoch * 100 + workers)  # the training's own random numbers must not matter
        return {t["image_id"].item(): t["boxes"][0, 0].item() == WIDTH - 24 for _, targets, _ in loader for t in targets}

    per_epoch = [flips(epoch, 0) for epoch in range(3)]
    assert all(len(decisions) == 8 for decisions in per_epoch)
    assert flips(1, 0) == per_epoch[1] and flips(1, 2) == per_epoch[1]  # the same whoever loads the samples
    assert per_epoch[0] != per_epoch[1] or per_epoch[1] != per_epoch[2]
    assert 0 < sum(sum(decisions.values()) for decisions in per_epoch) < 24


def test_collate_and_loader_pass_unreadable_files_through(tmp_path):
    image_dir, annotation_file = write_coco_set(tmp_path)
    (Path(image_dir) / "000000000002.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    dataset = CocoDetection(image_dir, annotation_file, train=False, with_masks=True)
    loader = build_coco_loader(dataset, train=False, batch_size=3, workers=0, seed=0, context=DistributedContext())
    (images, targets, unreadable), = list(loader)
    assert unreadable == [f"{Path(image_dir) / '000000000002.jpg'} (not an image file)"]
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
        (lambda c: c["annotations"][1]["segmentation"].__setitem__("size", [48, 63]),
         "annotation 2 on image 000000000001.jpg (id 1) has an RLE mask of size [48, 63] where the image is [48, 64] (height, width)"),
        (lambda c: c["annotations"][0].__setitem__("segmentation", [4, 6, 24, 6, 24, 16]), "has a malformed polygon"),
        (lambda c: c["annotations"][0].__setitem__("segmentation", {"counts": "abc"}), "has a malformed segmentation"),
        (lambda c: c["images"][2].__setitem__("id", 1), "image id 1 is given twice, to image entries #0 and #2"),
        (lambda c: c["annotations"][3].__setitem__("id", 2), "annotation id 2 is given twice, to annotation entries #1 and #3"),
        (lambda c: c["categories"][2].__setitem__("id", 11), "category id 11 is given twice, to category entries #0 and #2"),
        (lambda c: c["images"][0].__setitem__("id", [1]), "image entry #0 has id [1]; ids are whole numbers"),
        (lambda c: c["images"][1].__setitem__("width", 0),
         "image 000000000002.jpg (id 2) has width 0; width and height are positive whole numbers of pixels"),
        (lambda c: c["images"][2].__setitem__("height", 47.5), "image 000000000003.jpg (id 3) has height 47.5; "),
        (lambda c: c["images"][0].__setitem__("width", "64"), "image 000000000001.jpg (id 1) has width '64'; "),
        (lambda c: c["annotations"][0].__setitem__("image_id", [1]), "annotation 1 refers to image id [1], which is not in 'images'"),
    ]:
        Path(annotation_file).write_text(original)
        _rewrite(annotation_file, change)
        message = _one_line_error(image_dir, annotation_file, with_masks=True)
        assert message.startswith(f"{annotation_file}: ") and expected in message, message


def test_boxes_mostly_outside_their_image_are_left_out_with_one_warning(tmp_path):
    annotations = coco_annotations() + [
        {"id": 5, "image_id": 3, "category_id": 3, "bbox": [1e30, 1e30, 1e30, 1e30], "area": 1.0, "iscrowd": 0},
        {"id": 6, "image_id": 3, "category_id": 3, "bbox": [0, 0, 1e30, 1e30], "iscrowd": 0},  # a 1e30-pixel box from the corner
        {"id": 7, "image_id": 3, "category_id": 7, "bbox": [70, 10, 20, 20], "iscrowd": 0},  # wholly right of the 64-pixel image
        {"id": 8, "image_id": 3, "category_id": 7, "bbox": [40, 30, 40, 10], "iscrowd": 0},  # 24 of its 40 columns inside: kept
        {"id": 9, "image_id": 3, "category_id": 11, "bbox": [50.5, 37.75, 14, 10.5], "iscrowd": 0},  # a sub-pixel overhang, as in COCO
    ]
    image_dir, annotation_file = write_coco_set(tmp_path, annotations)
    with pytest.warns(UserWarning) as caught:
        dataset = CocoDetection(image_dir, annotation_file, train=True, flip_prob=0.0)
    assert [str(warning.message) for warning in caught] == [
        f"{annotation_file}: left out 3 annotations whose box lies mostly outside its image, e.g. annotation 5 "
        "with box [1e+30, 1e+30, 1e+30, 1e+30] on image 000000000003.jpg (id 3) of 64x48 pixels"
    ]
    assert sorted(dataset.coco.anns) == [1, 2, 3, 4, 8, 9]  # for evaluation too: they are not this image's objects
    _, target = dataset[dataset.image_ids.index(3)]
    assert target["boxes"].tolist() == [[40.0, 30.0, 80.0, 40.0], [50.5, 37.75, 64.5, 48.25]]  # kept as MMDetection v1 kept them


def test_polygons_under_three_points_are_dropped_or_become_the_box(tmp_path):
    annotations = coco_annotations()
    annotations[0]["segmentation"] = [[4, 6, 24, 6], [4, 6, 24, 6, 24, 16]]  # a 2-point part pycocotools would read as a box
    annotations[3]["segmentation"] = [[10, 5, 18, 35]]
    image_dir, annotation_file = write_coco_set(tmp_path, annotations)
    with pytest.warns(
        UserWarning, match=r"1 annotations have no polygon of 3 or more points, e.g. annotation 4; their masks are their boxes$"
    ):
        dataset = CocoDetection(image_dir, annotation_file, train=False, with_masks=True)
    car = dataset[0][1]["masks"][0]
    assert 0 < car.sum() < 200 and car[15, 5] == 0 and car[7, 22] == 1  # the triangle, not the 20 x 10 box
    assert torch.equal(dataset[1][1]["masks"][0], torch.from_numpy(rectangle(10, 5, 8, 30)))
    with pytest.warns(UserWarning, match="their masks are their boxes"):  # mended for segm evaluation too
        boxes_only = CocoDetection(image_dir, annotation_file, train=False)
    assert boxes_only.coco.anns[4]["segmentation"] == [[10, 5, 18, 5, 18, 35, 10, 35]]


def test_an_image_of_another_size_than_annotated_is_unreadable(tmp_path):
    image_dir, annotation_file = write_coco_set(tmp_path)
    Image.new("RGB", (WIDTH + 1, HEIGHT)).save(Path(image_dir) / "000000000002.jpg")
    dataset = CocoDetection(image_dir, annotation_file, train=False, with_masks=True)
    reason = f"{WIDTH + 1} x {HEIGHT} pixels, annotated as {WIDTH} x {HEIGHT}"
    assert dataset[1] == UnreadableImage(str(Path(image_dir) / "000000000002.jpg"), reason)


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
        result = run_script("scripts/make_demo_coco.py", root, "--train-images", 12, "--val-images", 4, "--seed", 3)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "wrote 12 + 4 images" in make(tmp_path / "a")
    make(tmp_path / "b")
    for folder in ("train2017", "val2017", "annotations"):
        comparison = filecmp.dircmp(tmp_path / "a" / folder, tmp_path / "b" / folder)
        assert not comparison.diff_files and not comparison.left_only and not comparison.right_only
        assert (
            filecmp.cmpfiles(tmp_path / "a" / folder, tmp_path / "b" / folder, comparison.common_files, shallow=False)[0]
            == comparison.common_files
        )

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

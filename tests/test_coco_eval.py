"""COCO evaluation with pycocotools: the ground truth as detections scores 100, a wrong box or
label scores less, no detections score 0.0 with a warning, the results json, the rank merge."""

import json
import os
from pathlib import Path

import pytest
import torch
from coco_sets import write_coco_set
from pycocotools import mask as mask_utils

from utils.detection.coco import CocoDetection
from utils.detection.coco_eval import detections_to_results, evaluate_coco, merge_results


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return CocoDetection(*write_coco_set(tmp_path_factory.mktemp("coco")), train=False, with_masks=True)


def _ground_truth_as_outputs(dataset):
    """What a perfect Mask R-CNN would return for every image: (image ids, torchvision output dicts)."""
    image_ids, outputs = [], []
    for index in range(len(dataset)):
        _, target = dataset[index]
        count = len(target["labels"])
        image_ids.append(target["image_id"].item())
        outputs.append(
            {
                "boxes": target["boxes"],
                "labels": target["labels"],
                "scores": torch.ones(count),
                "masks": target["masks"].float().unsqueeze(1),
            }
        )
    return image_ids, outputs


def _evaluate(dataset, outputs, run_ids, **kwargs):
    lines = []
    results = detections_to_results(zip(run_ids, outputs), dataset.category_ids)
    stats = evaluate_coco(dataset.coco, results, ("bbox", "segm"), log=lines.append, **kwargs)
    return stats, lines


def test_ground_truth_as_detections_scores_100(dataset, tmp_path):
    image_ids, outputs = _ground_truth_as_outputs(dataset)
    results_file = tmp_path / "detections.json"
    boxes_before = [output["boxes"].clone() for output in outputs]
    stats, lines = _evaluate(dataset, outputs, image_ids, results_file=str(results_file))
    assert all(torch.equal(output["boxes"], before) for output, before in zip(outputs, boxes_before))  # outputs left as they were
    assert stats["bbox"][:3] == pytest.approx([1.0] * 3) and stats["segm"][:3] == pytest.approx([1.0] * 3)
    assert lines[-2:] == [" * bbox AP 100.0 AP50 100.0 AP75 100.0", " * segm AP 100.0 AP50 100.0 AP75 100.0"]
    assert "bbox:" in lines and "segm:" in lines
    assert any(line.startswith(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000") for line in lines)

    written = json.loads(results_file.read_text())
    assert os.listdir(tmp_path) == ["detections.json"]  # written atomically: no temporary file left
    by_image = {}
    for record in written:
        by_image.setdefault(record["image_id"], []).append(record)
    assert sorted(by_image) == [1, 2]
    car, dog = by_image[1]
    assert car["bbox"] == [4.0, 6.0, 20.0, 10.0] and car["category_id"] == 3 and car["score"] == 1.0
    assert dog["bbox"] == [30.0, 20.0, 12.0, 18.0] and dog["category_id"] == 7
    assert by_image[2][0]["category_id"] == 11
    assert isinstance(dog["segmentation"]["counts"], str)
    assert mask_utils.area(dog["segmentation"]) == 12 * 18


def test_a_file_without_info_gets_an_empty_one(dataset):
    """pycocotools 2.0.8 to 2.0.10 evaluate with ``dataset['info']`` and raised KeyError for files
    without it (the test sets here and many converted ones have none)."""
    assert "info" not in json.loads(Path(dataset.annotation_file).read_text())
    assert dataset.coco.dataset["info"] == {}


def test_a_wrong_box_or_label_scores_less(dataset):
    image_ids, outputs = _ground_truth_as_outputs(dataset)
    outputs[0]["boxes"] = outputs[0]["boxes"] + 1.0  # the car and the dog, moved by a pixel: IoU 0.75
    outputs[1]["labels"] = torch.tensor([1])  # the kite called a car
    stats, lines = _evaluate(dataset, outputs, image_ids)
    assert 0.0 < stats["bbox"][0] < 1.0 and stats["bbox"][0] < stats["bbox"][1]
    assert 0.0 < stats["segm"][0] < 1.0  # masks were not moved: only the kite's label costs
    assert lines[-2].startswith(" * bbox AP ") and lines[-1].startswith(" * segm AP ")


def test_masks_are_thresholded_above_one_half(dataset):  # and labels may come back as floats
    probabilities = torch.full((1, 1, 48, 64), 0.5)
    probabilities[0, 0, 10:20, 5:9] = 0.51
    output = {
        "boxes": torch.tensor([[5.0, 10.0, 9.0, 20.0]]),
        "labels": torch.tensor([2.0]),
        "scores": torch.tensor([0.9]),
        "masks": probabilities,
    }
    (record,) = detections_to_results([(1, output)], dataset.category_ids)
    assert mask_utils.area(record["segmentation"]) == 40
    assert record["bbox"] == [5.0, 10.0, 4.0, 10.0] and record["category_id"] == 7


def test_no_detections_evaluate_to_zero_with_a_warning(dataset, tmp_path):
    empty = [
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0),
            "masks": torch.zeros(0, 1, 48, 64),
        }
    ] * 3
    with pytest.warns(
        UserWarning, match=r"^no detections to evaluate \(an untrained model, or classes that do not match the data\): AP is 0.0$"
    ):
        stats, lines = _evaluate(dataset, empty, [1, 2, 3], results_file=str(tmp_path / "none.json"))
    assert stats == {"bbox": [0.0] * 12, "segm": [0.0] * 12}
    assert lines[-2:] == [" * bbox AP 0.0 AP50 0.0 AP75 0.0", " * segm AP 0.0 AP50 0.0 AP75 0.0"]
    assert json.loads((tmp_path / "none.json").read_text()) == []


def test_labels_beyond_the_data_classes_are_left_out_with_a_warning(dataset):
    image_ids, outputs = _ground_truth_as_outputs(dataset)
    for output in outputs:
        output["labels"] = output["labels"] + 77  # a COCO model on a 3-class set
    with pytest.warns(UserWarning) as caught:
        stats, lines = _evaluate(dataset, outputs, image_ids)
    messages = [str(warning.message) for warning in caught]
    assert (
        messages[0]
        == "3 of 3 detections have labels beyond the data's 3 categories (the model was trained on other classes); they are left out"
    )
    assert messages[1].startswith("no detections to evaluate")
    assert stats["bbox"][0] == 0.0 and lines[-1] == " * segm AP 0.0 AP50 0.0 AP75 0.0"


def test_evaluation_can_be_limited_to_the_images_that_were_run(dataset):
    image_ids, outputs = _ground_truth_as_outputs(dataset)
    stats, _ = _evaluate(dataset, outputs[:1], image_ids[:1])
    assert stats["bbox"][0] < 1.0  # image 2's kite counts as missed
    stats, _ = _evaluate(dataset, outputs[:1], image_ids[:1], image_ids=image_ids[:1])
    assert stats["bbox"][0] == pytest.approx(1.0)


def test_merge_is_ordered_by_image_and_drops_images_seen_twice():
    def record(image_id, score, rank):
        return {"image_id": image_id, "category_id": 1, "bbox": [0, 0, 1, 1], "score": score, "rank": rank}

    rank0 = [record(5, 0.9, 0), record(5, 0.2, 0), record(1, 0.7, 0)]
    rank1 = [record(2, 0.8, 1), record(5, 0.95, 1), record(3, 0.1, 1)]  # image 5 again: the sampler's padding
    merged = merge_results([rank0, rank1])
    assert [(r["image_id"], r["score"], r["rank"]) for r in merged] == [(1, 0.7, 0), (2, 0.8, 1), (3, 0.1, 1), (5, 0.9, 0), (5, 0.2, 0)]
    assert merge_results([rank0, rank1]) == merged and merge_results([[], rank0]) == sorted(rank0, key=lambda r: r["image_id"])

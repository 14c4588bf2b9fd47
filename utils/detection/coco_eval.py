"""COCO evaluation of detector outputs with pycocotools, the standard the paper's table used.

Outputs (torchvision's dicts, boxes in original-image pixels, exclusive) become COCO result
records batch by batch, so that no rank keeps full-size mask probabilities: ``bbox`` is
``[x1, y1, x2 - x1, y2 - y1]``, label L is category ``category_ids[L - 1]``, masks are thresholded
at 0.5 (MMDetection v1's ``mask_thr_binary``) and RLE-encoded. Each record carries its box and
its mask together, as MMDetection v1 and Detectron2 write them: pycocotools then takes the
detection's area for the small / medium / large ranges from the box for both IoU types.
"""

import contextlib
import io
import json
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from utils.checkpoint import atomic_write
from utils.data.datasets import DataError

__all__ = ["Result", "MASK_THRESHOLD", "detections_to_results", "merge_results", "write_results", "evaluate_coco"]

Result = Dict[str, Any]

MASK_THRESHOLD = 0.5
STAT_COUNT = 12  # COCOeval.summarize's AP / AR figures


def detections_to_results(
    detections: Iterable[Tuple[int, Dict[str, torch.Tensor]]], category_ids: Sequence[int]
) -> List[Result]:
    """COCO result records of ``(image_id, output)`` pairs, in the outputs' order (score order
    within an image). ``functools.partial(detections_to_results, category_ids=...)`` is the
    per-batch converter of utils.detection.engine.predict_dataset.

    A label outside 1..len(category_ids) (a model trained on other classes) gets
    ``category_id`` None; :func:`evaluate_coco` leaves those out and says so.
    """
    results: List[Result] = []
    for image_id, output in detections:
        boxes = output["boxes"].detach().float().cpu()
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)  # not in place: the caller's tensor
        scores = output["scores"].detach().float().cpu().tolist()
        labels = output["labels"].detach().cpu().long().tolist()
        segmentations: List[Optional[Dict[str, Any]]] = [None] * len(labels)
        if "masks" in output and len(labels):
            binary = (output["masks"].detach()[:, 0] > MASK_THRESHOLD).cpu().numpy().astype(np.uint8)
            segmentations = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for box, score, label, segmentation in zip(boxes.tolist(), scores, labels, segmentations):
            record: Result = {
                "image_id": int(image_id),
                "category_id": category_ids[label - 1] if 1 <= label <= len(category_ids) else None,
                "bbox": box,
                "score": score,
            }
            if segmentation is not None:
                record["segmentation"] = {"size": list(segmentation["size"]), "counts": segmentation["counts"].decode("ascii")}
            results.append(record)
    return results


def merge_results(per_rank: Sequence[Sequence[Result]]) -> List[Result]:
    """One list from every rank's records, ordered by image id whatever the ranks' order.

    An image reported by several ranks (a sampler that pads its shards repeats images) keeps
    the records of the first rank that reported it, so nothing is counted twice.
    """
    owner: Dict[int, int] = {}
    for rank, results in enumerate(per_rank):
        for record in results:
            owner.setdefault(record["image_id"], rank)
    merged = [record for rank, results in enumerate(per_rank) for record in results if owner[record["image_id"]] == rank]
    return sorted(merged, key=lambda record: record["image_id"])  # stable: score order kept within an image


def write_results(results: Sequence[Result], path: str) -> None:
    """The records as a COCO results json (the format of COCO's evaluation server), atomically."""
    payload = json.dumps(list(results)).encode("utf-8")
    atomic_write(path, lambda handle: handle.write(payload))


def _mappable(results: Sequence[Result], coco_gt: COCO) -> List[Result]:
    unmapped = sum(record["category_id"] is None for record in results)
    if unmapped:
        warnings.warn(
            f"{unmapped} of {len(results)} detections have labels beyond the data's {len(coco_gt.cats)} categories "
            "(the model was trained on other classes); they are left out"
        )
    unknown = {record["image_id"] for record in results} - set(coco_gt.imgs)
    if unknown:
        raise DataError(f"{len(unknown)} image ids of the detections are not in the annotation file, e.g. {min(unknown)}")
    return [record for record in results if record["category_id"] is not None]


def _summary_line(iou_type: str, stats: Sequence[float]) -> str:
    return f" * {iou_type} AP {100 * stats[0]:.1f} AP50 {100 * stats[1]:.1f} AP75 {100 * stats[2]:.1f}"


def evaluate_coco(
    coco_gt: COCO,
    results: Sequence[Result],
    iou_types: Sequence[str] = ("bbox",),
    results_file: Optional[str] = None,
    image_ids: Optional[Sequence[int]] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, List[float]]:
    """COCOeval for each IoU type ("bbox", "segm"): its summary table, then one line per type,
    `` * bbox AP 38.0 AP50 60.6 AP75 40.9`` (percent, as the paper's table). Returns the 12
    summary stats per type (fractions, -1 where pycocotools has no ground truth to count).

    ``image_ids`` limits the evaluation to the images that were run (all of ``coco_gt``'s by
    default). No detections at all evaluates to 0.0 with a warning instead of failing inside
    pycocotools. ``results_file`` gets the records as json first.
    """
    results = _mappable(results, coco_gt)
    if results_file:
        write_results(results, results_file)
        log(f"=> {len(results)} detections written to {results_file}")
    if not results:
        warnings.warn("no detections to evaluate (an untrained model, or classes that do not match the data): AP is 0.0")
    stats: Dict[str, List[float]] = {}
    for iou_type in iou_types:
        if results:
            stats[iou_type] = _run_cocoeval(coco_gt, results, iou_type, image_ids, log)
        else:
            stats[iou_type] = [0.0] * STAT_COUNT
    for iou_type in iou_types:
        log(_summary_line(iou_type, stats[iou_type]))
    return stats


def _run_cocoeval(
    coco_gt: COCO, results: List[Result], iou_type: str, image_ids: Optional[Sequence[int]], log: Callable[[str], None]
) -> List[float]:
    if iou_type == "segm" and not all("segmentation" in record for record in results):
        raise ValueError("segm evaluation needs a mask with every detection")
    chatter = io.StringIO()  # pycocotools prints progress and timings; only the summary is shown
    with contextlib.redirect_stdout(chatter):
        coco_dt = coco_gt.loadRes([dict(record) for record in results])  # loadRes adds keys to the records
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(set(image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    log(f"{iou_type}:")
    for line in summary.getvalue().rstrip("\n").splitlines():
        log(line)
    return [float(value) for value in evaluator.stats]

"""The detectors: registry, the paper's trainable-parameter counts, and MMDetection v1's
conventions (anchors, inclusive boxes, resizing, RetinaNet's P7 and labels, frozen layers)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.detection.image_list import ImageList

import models
from models.detection import COCO_CATEGORY_IDS, COCO_CLASSES, create_detector, detector_names
from models.detection.mmdet_v1 import IMAGE_MEAN, IMAGE_STD

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = {"min_size": 64, "max_size": 96}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def manifest():
    return json.loads((FIXTURES / "mmdet_v1_manifest.json").read_text())


def test_registry_has_every_detector_and_only_detectors():
    for detector in ("fasterrcnn", "maskrcnn", "retinanet"):
        for body in ("eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "resnet50", "resnet101", "se_resnet50"):
            assert f"{detector}_{body}_fpn" in detector_names
    assert not set(detector_names) & set(models.model_names)
    with pytest.raises(ValueError, match="unknown detector 'maskrcnn_eca_resnet152_fpn'"):
        create_detector("maskrcnn_eca_resnet152_fpn")
    with pytest.raises(ValueError, match="never downloaded"):
        create_detector("retinanet_eca_resnet18_fpn", pretrained=True)
    with pytest.raises(ValueError, match="resnet50 has no ECA layers"):
        create_detector("fasterrcnn_resnet50_fpn", k_size="3333")
    with pytest.raises(ValueError, match="at least 2"):
        create_detector("fasterrcnn_eca_resnet18_fpn", num_classes=1)


@pytest.mark.parametrize(
    "name, k_size, expected",
    [
        ("maskrcnn_eca_resnet50_fpn", "3377", 44_175_424),
        ("retinanet_eca_resnet50_fpn", "3377", 37_743_423),
        ("fasterrcnn_resnet50_fpn", None, 41_531_812),
    ],
)
def test_trainable_parameters_are_the_papers(name, k_size, expected):
    with torch.device("meta"):
        model = create_detector(name, k_size=k_size)
    assert trainable(model) == expected


def test_defaults_are_the_released_detectors(manifest):
    """Default k 3377 for ECA-50 (not the ImageNet release's 3557), 81 / 80 classes, all tensors of the release."""
    for entry, name in (
        ("mask_rcnn_ecanet50_k3377_bs8_lr0.01", "maskrcnn_eca_resnet50_fpn"),
        ("RetinaNet_ecanet50_k3377_bs8_lr0.01", "retinanet_eca_resnet50_fpn"),
    ):
        with torch.device("meta"):
            model = create_detector(name)
        assert sum(p.numel() for p in model.parameters()) == manifest["models"][entry]["total_params"]
        stages = [model.backbone.body.layer1, model.backbone.body.layer2, model.backbone.body.layer3, model.backbone.body.layer4]
        assert [stage[0].eca.k_size for stage in stages] == manifest["models"][entry]["eca_k_per_stage"]
    with torch.device("meta"):
        assert create_detector("maskrcnn_eca_resnet101_fpn").backbone.body.layer3[0].eca.k_size == 5
        assert create_detector("fasterrcnn_eca_resnet50_fpn", num_classes=5).roi_heads.box_predictor.cls_score.out_features == 5


def test_label_map_is_cocos(manifest):
    assert len(COCO_CLASSES) == 80 and COCO_CLASSES[0] == "person" and COCO_CLASSES[-1] == "toothbrush"
    assert [0, *COCO_CATEGORY_IDS] == manifest["label_to_coco_category_id"]


def test_base_anchors_equal_mmdet_v1s_on_every_level():
    fixture = json.loads((FIXTURES / "mmdet_v1_base_anchors.json").read_text())
    with torch.device("meta"):
        rcnn = create_detector("maskrcnn_eca_resnet50_fpn")
        retinanet = create_detector("retinanet_eca_resnet50_fpn")
    for generator, levels in (
        (rcnn.rpn.anchor_generator, fixture["rpn"]["levels"]),
        (retinanet.anchor_generator, fixture["retinanet"]["levels"]),
    ):
        assert list(generator.strides) == [int(stride) for stride in levels]
        for cell, (stride, inclusive) in zip(generator.cell_anchors, levels.items()):
            expected = torch.tensor(inclusive) + torch.tensor([0.0, 0.0, 1.0, 1.0])
            assert torch.equal(cell, expected), stride
    assert rcnn.rpn.head.cls_logits.out_channels == 3
    assert retinanet.head.classification_head.num_anchors == 9


def test_grid_anchors_use_the_configured_strides_row_by_row():
    """On a 96 x 96 image P6 is 2 x 2: torchvision would take its stride as 96 // 2 = 48, v1 takes 64."""
    generator = create_detector("retinanet_eca_resnet18_fpn", **TINY).anchor_generator
    sizes = [12, 6, 3, 2, 1]
    features = [torch.zeros(1, 4, size, size) for size in sizes]
    anchors = generator(ImageList(torch.zeros(1, 3, 96, 96), [(96, 96)]), features)[0]
    assert anchors.shape == (9 * sum(size * size for size in sizes), 4)
    level_start = 9 * (12 * 12 + 6 * 6 + 3 * 3)
    p6 = anchors[level_start : level_start + 9 * 4].view(2, 2, 9, 4)  # rows, columns, anchors
    base = generator.cell_anchors[3]
    for row in range(2):
        for column in range(2):
            assert torch.equal(p6[row, column], base + torch.tensor([column, row, column, row]) * 64.0)


def _v1_bbox2delta(proposals, gt, stds):
    """MMDetection v1's encoding, inclusive boxes (width = x2 - x1 + 1)."""
    pw, ph = proposals[:, 2] - proposals[:, 0] + 1, proposals[:, 3] - proposals[:, 1] + 1
    px, py = (proposals[:, 0] + proposals[:, 2]) * 0.5, (proposals[:, 1] + proposals[:, 3]) * 0.5
    gw, gh = gt[:, 2] - gt[:, 0] + 1, gt[:, 3] - gt[:, 1] + 1
    gx, gy = (gt[:, 0] + gt[:, 2]) * 0.5, (gt[:, 1] + gt[:, 3]) * 0.5
    deltas = np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], 1)
    return deltas / np.asarray(stds)


def _v1_delta2bbox(rois, deltas, stds):
    deltas = deltas * np.asarray(stds)
    deltas[:, 2:] = np.clip(deltas[:, 2:], -math.log(1000 / 16), math.log(1000 / 16))
    px, py = (rois[:, 0] + rois[:, 2]) * 0.5, (rois[:, 1] + rois[:, 3]) * 0.5
    pw, ph = rois[:, 2] - rois[:, 0] + 1, rois[:, 3] - rois[:, 1] + 1
    gw, gh = pw * np.exp(deltas[:, 2]), ph * np.exp(deltas[:, 3])
    gx, gy = px + pw * deltas[:, 0], py + ph * deltas[:, 1]
    return np.stack([gx - gw * 0.5 + 0.5, gy - gh * 0.5 + 0.5, gx + gw * 0.5 - 0.5, gy + gh * 0.5 - 0.5], 1)


def _inclusive_boxes(rng, n):
    """Sizes within a factor 62.5 (= 1000 / 16) of each other: there v1 also clamps the shrinking
    log-ratio, torchvision only the growing one (a difference for boxes of 1/62 of their anchor)."""
    x1, y1 = rng.uniform(0, 500, n), rng.uniform(0, 500, n)
    return np.stack([x1, y1, x1 + rng.uniform(5, 300, n), y1 + rng.uniform(5, 300, n)], 1)


def test_box_coders_compute_mmdet_v1s_deltas_on_shifted_boxes():
    """Inclusive boxes written as (x1, y1, x2 + 1, y2 + 1) through torchvision's BoxCoder give v1's deltas and boxes."""
    with torch.device("meta"):
        rcnn = create_detector("fasterrcnn_eca_resnet50_fpn")
        retinanet = create_detector("retinanet_eca_resnet50_fpn")
    rng = np.random.default_rng(0)
    shift = np.array([0.0, 0.0, 1.0, 1.0])
    coders = ((rcnn.roi_heads.box_coder, (0.1, 0.1, 0.2, 0.2)), (rcnn.rpn.box_coder, (1, 1, 1, 1)), (retinanet.box_coder, (1, 1, 1, 1)))
    for coder, stds in coders:
        proposals, gt = _inclusive_boxes(rng, 64), _inclusive_boxes(rng, 64)
        deltas = coder.encode_single(torch.from_numpy(gt + shift), torch.from_numpy(proposals + shift))
        np.testing.assert_allclose(deltas.numpy(), _v1_bbox2delta(proposals, gt, stds), rtol=1e-9, atol=1e-9)
        decoded = coder.decode_single(deltas, torch.from_numpy(proposals + shift)).numpy()
        np.testing.assert_allclose(decoded - shift, _v1_delta2bbox(proposals, deltas.numpy(), stds), rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(decoded - shift, gt, atol=1e-6)
        assert math.isclose(coder.bbox_xform_clip, math.log(1000 / 16))


def test_test_time_settings_are_mmdet_v1s():
    with torch.device("meta"):
        rcnn = create_detector("maskrcnn_eca_resnet50_fpn")
        retinanet = create_detector("retinanet_eca_resnet50_fpn")
    assert rcnn.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert rcnn.rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
    assert rcnn.rpn.nms_thresh == 0.7
    heads = rcnn.roi_heads
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.05, 0.5, 100)
    assert (heads.box_roi_pool.output_size, heads.box_roi_pool.sampling_ratio) == ((7, 7), 2)
    assert (heads.mask_roi_pool.output_size, heads.mask_roi_pool.sampling_ratio) == ((14, 14), 2)
    assert (retinanet.score_thresh, retinanet.nms_thresh, retinanet.detections_per_img, retinanet.topk_candidates) == (0.05, 0.5, 100, 1000)
    for model in (rcnn, retinanet):
        transform = model.transform
        assert (transform.min_size, transform.max_size, transform.size_divisible) == ((800,), 1333, 32)
        assert transform.image_mean == IMAGE_MEAN and transform.image_std == IMAGE_STD


def test_transform_resizes_rounds_and_maps_boxes_back_as_mmdet_v1():
    model = create_detector("fasterrcnn_eca_resnet18_fpn", **TINY).eval()
    image = torch.rand(3, 100, 151)
    boxes = torch.tensor([[10.0, 20.0, 60.0, 41.0], [0.0, 0.0, 151.0, 100.0]])
    batch, (target,) = model.transform.train()([image], [{"boxes": boxes, "labels": torch.tensor([1, 2])}])
    scale = min(64 / 100, 96 / 151)
    assert batch.image_sizes == [(int(100 * scale + 0.5), int(151 * scale + 0.5))] == [(64, 96)]
    assert batch.tensors.shape[-2:] == (64, 96)
    inclusive = boxes - torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert torch.allclose(target["boxes"], inclusive * scale + torch.tensor([0.0, 0.0, 1.0, 1.0]))
    model.transform.eval()
    (back,) = model.transform.postprocess([{"boxes": target["boxes"].clone()}], batch.image_sizes, [(100, 151)])
    assert torch.allclose(back["boxes"], boxes, atol=1e-4)
    padded, _ = model.transform([torch.rand(3, 50, 70)])
    assert padded.tensors.shape[-2:] == (64, 96) and padded.image_sizes == [(64, 90)]
    mean = torch.tensor(IMAGE_MEAN)[:, None, None]
    flat = torch.full((3, 64, 64), 0.5)
    normalised, _ = model.transform([flat])
    expected = (0.5 - mean) / torch.tensor(IMAGE_STD)[:, None, None]
    assert torch.allclose(normalised.tensors[0], expected.expand(3, 64, 64), atol=1e-6)
    assert math.isclose((0.5 - IMAGE_MEAN[0]) / IMAGE_STD[0], (127.5 - 123.675) / 58.395)


def test_retinanet_p6_is_on_c5_and_p7_has_no_relu_before_it():
    model = create_detector("retinanet_eca_resnet18_fpn", **TINY).eval()
    extra = model.backbone.fpn.extra_blocks
    assert extra.p6.in_channels == 512
    with torch.device("meta"):
        assert create_detector("retinanet_eca_resnet50_fpn").backbone.fpn.extra_blocks.p6.in_channels == 2048
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        levels = model.backbone(image)
        c5 = model.backbone.body(image)["2"]
        p6 = extra.p6(c5)
        with_relu = extra.p7(torch.relu(p6))
    assert list(levels) == ["0", "1", "2", "p6", "p7"]
    assert torch.equal(levels["p6"], p6)
    assert torch.allclose(levels["p7"], extra.p7(p6))
    assert not torch.allclose(levels["p7"], with_relu, atol=1e-3)


def test_retinanet_keeps_every_class_of_its_best_anchors_and_labels_from_one():
    """Per level the top-k anchors by best-class score, then each class above 0.05; channel c is label c + 1."""
    model = create_detector("retinanet_eca_resnet18_fpn", num_classes=3, topk_candidates=1, **TINY).eval()
    logits = torch.full((1, 4, 3), -10.0)
    logits[0, 2] = torch.tensor([3.0, 0.0, -10.0])  # anchor 2: class channels 0 (0.95) and 1 (0.5)
    logits[0, 3] = torch.tensor([-10.0, -10.0, 2.0])  # anchor 3: channel 2 (0.88), a lower best score
    anchors = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 40, 30], [20, 20, 60, 60]])
    (detections,) = model.postprocess_detections(
        {"cls_logits": [logits], "bbox_regression": [torch.zeros(1, 4, 4)]}, [[anchors]], [(64, 64)]
    )
    assert detections["labels"].tolist() == [1, 2]
    assert torch.equal(detections["boxes"], anchors[[2, 2]])
    assert torch.allclose(detections["scores"], torch.sigmoid(torch.tensor([3.0, 0.0])))


def test_training_keeps_stem_layer1_and_batchnorm_statistics_fixed_and_uses_the_eca_fast_path():
    torch.manual_seed(0)
    fewer_rois = {"rpn_post_nms_top_n_train": 100, "box_batch_size_per_image": 16}
    model = create_detector("maskrcnn_eca_resnet18_fpn", num_classes=3, **TINY, **fewer_rois)
    body = model.backbone.body
    model.train()
    assert all(not m.training for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert model.backbone.fpn.training and model.roi_heads.training
    assert not any(p.requires_grad for m in (body.conv1, body.bn1, body.layer1) for p in m.parameters())
    assert body.layer2[0].bn1.weight.requires_grad and body.layer2[0].eca.conv.weight.requires_grad
    endings = []
    body.layer2[1].register_forward_hook(lambda module, inputs, output: endings.append(type(output.grad_fn).__name__))
    before = {k: v.clone() for k, v in body.state_dict().items()}
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trained, lr=0.003, momentum=0.9)
    images = [torch.rand(3, 64, 64), torch.rand(3, 60, 80)]
    masks = [torch.zeros(1, 64, 64, dtype=torch.uint8), torch.zeros(2, 60, 80, dtype=torch.uint8)]
    masks[0][0, 10:40, 8:30] = 1
    masks[1][0, 5:50, 40:75] = 1
    masks[1][1, 30:60, 0:20] = 1
    targets = [
        {"boxes": torch.tensor([[8.0, 10, 30, 40]]), "labels": torch.tensor([1]), "masks": masks[0]},
        {"boxes": torch.tensor([[40.0, 5, 75, 50], [0, 30, 20, 60]]), "labels": torch.tensor([2, 1]), "masks": masks[1]},
    ]
    losses = []
    for _ in range(3):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 35)  # the 1x recipe's clipping
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert "GateAddReLU" in endings[0]
    after = body.state_dict()
    for key, value in before.items():
        changed = not torch.equal(after[key], value)
        frozen = key.startswith(("conv1.", "bn1.", "layer1.")) or "running_" in key or "num_batches" in key
        if frozen:
            assert not changed, key
    assert not torch.equal(after["layer2.0.conv1.weight"], before["layer2.0.conv1.weight"])
    model.eval()
    with torch.no_grad():
        (output,) = model([images[1]])
    assert set(output) == {"boxes", "labels", "scores", "masks"}
    assert output["masks"].shape[1:] == (1, 60, 80)
    assert ((output["labels"] >= 1) & (output["labels"] <= 2)).all()


def test_retinanet_trains_on_labels_from_one_to_c():
    """Label C is channel C - 1: with channel = label (torchvision's) it would index past the last channel."""
    torch.manual_seed(0)
    model = create_detector("retinanet_eca_resnet18_fpn", num_classes=2, **TINY).train()
    targets = [{"boxes": torch.tensor([[8.0, 10, 40, 50]]), "labels": torch.tensor([2])}]
    losses = model([torch.rand(3, 64, 64)], targets)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_rpn_trains_only_on_anchors_inside_the_image():
    """MMDetection v1's allowed_border=0: an anchor crossing the resized image's border is neither positive nor negative."""
    model = create_detector("fasterrcnn_eca_resnet18_fpn", num_classes=3, **TINY).train()
    batch, targets = model.transform([torch.rand(3, 64, 90)], [{"boxes": torch.tensor([[0.0, 0, 40, 40]]), "labels": torch.tensor([1])}])
    assert batch.image_sizes == [(64, 90)] and batch.tensors.shape[-2:] == (64, 96)
    features = model.backbone(batch.tensors)
    model.rpn(batch, features, targets)
    (anchors,) = model.rpn.anchor_generator(batch, list(features.values()))
    (labels,), _ = model.rpn.assign_targets_to_anchors([anchors], targets)
    inside = (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= 90) & (anchors[:, 3] <= 64)
    assert (labels[~inside] == -1).all()
    assert (labels[inside] == 1).any() and (labels[inside] == 0).any()
    assert ((anchors[:, 2] > 90) & (anchors[:, 2] <= 96) & (labels == -1)).any(), "anchors over the padding count as outside"


def test_retinanet_box_loss_is_smooth_l1_with_beta_0_11():
    head = create_detector("retinanet_eca_resnet18_fpn", num_classes=2, **TINY).head.regression_head
    anchors = torch.tensor([[0.0, 0, 32, 32], [32, 32, 64, 64]])
    target = {"boxes": torch.tensor([[1.0, 2, 33, 31]])}
    predicted = torch.tensor([[0.3, -0.05, 0.02, 0.0], [9.0, 9.0, 9.0, 9.0]])
    loss = head.compute_loss([target], {"bbox_regression": predicted[None]}, [anchors], [torch.tensor([0, -1])])
    wanted = head.box_coder.encode_single(target["boxes"], anchors[:1])
    assert torch.isclose(loss, torch.nn.functional.smooth_l1_loss(predicted[:1], wanted, beta=0.11, reduction="sum"))
    assert not torch.isclose(loss, (predicted[:1] - wanted).abs().sum())


def test_roi_align_uses_the_fixed_strides_and_v1s_levels_whatever_the_first_batch():
    """torchvision would infer P5's scale from the first batch: 2 px / 40 px -> 1/16, and keep it."""
    from torchvision.ops import roi_align

    model = create_detector("maskrcnn_eca_resnet18_fpn", num_classes=3, min_size=40, max_size=96).eval()
    with torch.no_grad():
        model([torch.rand(3, 40, 60)])
    for pool in (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool):
        assert pool.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32] and pool.sampling_ratio == 2
    sides = torch.tensor([8.0, 111.9, 112.0, 223.9, 224.0, 448.0, 2000.0])
    boxes = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], dim=1)
    assert model.roi_heads.box_roi_pool.map_levels([boxes]).tolist() == [0, 0, 1, 1, 2, 3, 3]
    features = {str(level): torch.randn(1, 2, 64 >> level, 64 >> level) for level in range(4)}
    box = torch.tensor([[4.0, 8.0, 124.0, 120.0]])  # sqrt(area) 116: level 1, stride 8
    pooled = model.roi_heads.box_roi_pool(features, [box], [(40, 60)])
    expected = roi_align(features["1"], [box], (7, 7), spatial_scale=1 / 8, sampling_ratio=2, aligned=False)
    assert torch.equal(pooled, expected)


def test_detections_mapped_back_are_never_inverted_and_stay_in_the_image():
    """A sliver under a pixel high turns inside out under v1's inclusive rescaling; it becomes empty instead."""
    transform = create_detector("fasterrcnn_eca_resnet18_fpn", **TINY).transform.eval()
    boxes = torch.tensor([[0.0, 55.9, 30.0, 56.0], [10.0, 10.0, 96.0, 64.0]])  # height 0.1 at scale 0.74: (0.1 - 1) / 0.74 + 1 < 0
    (result,) = transform.postprocess([{"boxes": boxes}], [(64, 96)], [(87, 130)])
    mapped = result["boxes"]
    assert (mapped[:, 2:] >= mapped[:, :2]).all()
    assert mapped[0, 3] == mapped[0, 1]
    assert mapped[1, 2] <= 130 and mapped[1, 3] <= 87


def test_bfloat16_autocast_trains_and_keeps_boxes_in_float32():
    """Under autocast the features are bfloat16 (steps of 4 px at 800 px); anchors, deltas and boxes stay float32.

    (Faster R-CNN only: bfloat16 is slow on most CPUs, and RetinaNet's float32 deltas are the same one-line cast.)
    """
    torch.manual_seed(0)
    model = create_detector("fasterrcnn_eca_resnet18_fpn", num_classes=3, rpn_post_nms_top_n_train=100, box_batch_size_per_image=16, **TINY)
    targets = [{"boxes": torch.tensor([[3.0, 4, 30, 40]]), "labels": torch.tensor([2])}]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.train()([torch.rand(3, 64, 90)], targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(loss) for loss in losses.values())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        (output,) = model.eval()([torch.rand(3, 64, 90)])
    generator = model.rpn.anchor_generator
    features = [torch.zeros(1, 1, 512 // stride, 512 // stride, dtype=torch.bfloat16) for stride in generator.strides]
    anchors = generator(ImageList(torch.zeros(1, 3, 512, 512), [(512, 512)]), features)[0]
    assert output["boxes"].dtype == torch.float32 and anchors.dtype == torch.float32
    assert anchors.max() > 500 and torch.equal(anchors, anchors.round())

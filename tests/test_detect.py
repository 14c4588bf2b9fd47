"""detect.py end to end, as users run it: a COCO-format set of real JPEGs rendered by the demo's
generator, real subprocesses (torchrun with gloo among them), real checkpoint files, and a
file in the released MMDetection v1 format."""

import csv
import json
import os
import re
import signal
import subprocess
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from helpers import run_script, start_script
from PIL import Image

import detect
from models.detection import COCO_CLASSES, create_detector
from models.detection.layout import mmdet_v1_to_torchvision
from utils.checkpoint import load_checkpoint_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMALL = [
    "--min-size", "64", "--max-size", "64",
    "--detector-arg", "box_batch_size_per_image=32",
    "--detector-arg", "rpn_pre_nms_top_n_train=100", "--detector-arg", "rpn_post_nms_top_n_train=100",
    "--detector-arg", "rpn_pre_nms_top_n_test=100", "--detector-arg", "rpn_post_nms_top_n_test=100",
]
"""Tiny images and few proposals: seconds per epoch on a CPU."""
TINY = ["-a", "maskrcnn_eca_resnet18_fpn", *SMALL, "-b", "4", "-j", "0", "-p", "1", "--seed", "0", "--warmup-iters", "0"]
AP_LINE = re.compile(r"^ \* (bbox|segm) AP (\d+\.\d) AP50 (\d+\.\d) AP75 (\d+\.\d)$", re.M)


def run_detect(*args):
    return run_script("detect.py", *args, timeout=600)


def read_log(run_dir):
    with open(Path(run_dir) / "log.csv") as handle:
        return list(csv.DictReader(handle))


def stop_with_sigterm(command, at_line):
    """Start detect.py on ``command`` and send it SIGTERM once it prints a line starting with
    ``at_line``; the finished process, its stdout and its stderr."""
    process = start_script("detect.py", *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in process.stdout:
        if line.startswith(at_line):
            process.send_signal(signal.SIGTERM)
            break
    out, err = process.communicate(timeout=300)
    return process, out, err


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """The demo's generator at 64 x 64 pixels: 8 training and 4 validation images of five shape classes."""
    root = tmp_path_factory.mktemp("coco")
    result = run_script("scripts/make_demo_coco.py", root, "--train-images", 8, "--val-images", 4, "--min-size", 64, "--max-size", 64,
                        "--seed", 0)
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="module")
def trained(coco, tmp_path_factory):
    """Two epochs of an ECA-ResNet-18 Mask R-CNN, evaluated after the last: the run directory and its output."""
    run_dir = tmp_path_factory.mktemp("run")
    result = run_detect(coco, *TINY, "--lr", "0.01", "--epochs", "2", "--eval-interval", "2", "--output-dir", run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_training_lowers_the_loss_and_evaluates_with_pycocotools(trained):
    run_dir, result = trained
    rows = read_log(run_dir)
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert rows[0]["val_bbox_AP"] == "nan" and 0 <= float(rows[1]["val_bbox_AP"]) <= 100
    assert re.search(
        r"^Epoch: \[1\]\[1/2\]  loss [\d.]+ \([\d.]+\)  classifier [\d.]+  box_reg [\d.]+  mask [\d.]+  objectness [\d.]+  "
        r"rpn_box_reg [\d.]+  lr 0\.01  [\d.]+ img/s  eta 0:00:00$", result.stdout, re.M,
    )
    assert [match[0] for match in AP_LINE.findall(result.stdout)] == ["bbox", "segm"]
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in result.stdout
    assert {"checkpoint.pth.tar", "model_best.pth.tar", "log.csv", "detections_val.json"} <= set(os.listdir(run_dir))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir))
    detections = json.loads((run_dir / "detections_val.json").read_text())
    assert detections and {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(detections[0])

    checkpoint = load_checkpoint_file(run_dir / "checkpoint.pth.tar")
    assert checkpoint["epoch"] == 2 and checkpoint["arch"] == "maskrcnn_eca_resnet18_fpn"
    assert checkpoint["classes"] == ["circle", "cross", "square", "star", "triangle"]
    assert checkpoint["detector_kwargs"]["min_size"] == 64
    assert {"optimizer", "rng", "args"} <= set(checkpoint)


def test_evaluating_the_checkpoint_gives_the_training_runs_numbers(trained, coco, tmp_path):
    run_dir, result = trained
    evaluation = run_detect(coco, "--evaluate", "--resume", run_dir / "checkpoint.pth.tar", "-b", "4", "-j", "0", "--output-dir", tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr
    assert AP_LINE.findall(evaluation.stdout) == AP_LINE.findall(result.stdout)
    assert (tmp_path / "detections_val.json").is_file()


def test_sigterm_stops_with_a_step_checkpoint_and_resume_auto_is_exact(trained, coco, tmp_path):
    """Exact resume: SIGTERM during the first epoch leaves a checkpoint of that step (exit 75); the
    same command with --resume auto then ends with bitwise the weights of the uninterrupted run."""
    command = [coco, *TINY, "--lr", "0.01", "--epochs", "2", "--eval-interval", "2", "--output-dir", tmp_path, "--resume", "auto"]
    process, out, err = stop_with_sigterm(command, at_line="Epoch: [0][0/2]")
    assert process.returncode == 75, err
    assert "saved" in out and "continue with --resume auto (exit status 75)" in out
    assert os.path.exists(tmp_path / "checkpoint_step.pth.tar") and not os.path.exists(tmp_path / "checkpoint.pth.tar")

    resumed = run_detect(*command)
    assert resumed.returncode == 0, resumed.stderr
    assert "=> resumed" in resumed.stdout and ", step " in resumed.stdout
    straight = load_checkpoint_file(trained[0] / "checkpoint.pth.tar")["state_dict"]
    continued = load_checkpoint_file(tmp_path / "checkpoint.pth.tar")["state_dict"]
    assert all(torch.equal(straight[key], continued[key]) for key in straight)
    assert [row["epoch"] for row in read_log(tmp_path)] == ["0", "1"]
    assert read_log(tmp_path)[0]["train_loss"] == read_log(trained[0])[0]["train_loss"]


def test_a_warm_up_longer_than_an_epoch_multiplies_with_the_decay_and_resumes_bitwise_inside_it(coco, tmp_path):
    """The 1x schedule per step: a warm-up of 3 steps (of 2 per epoch) from lr / 3, and / 10 after
    epoch 1, multiplied where they overlap, as in MMDetection v1. SIGTERM inside the warm-up, then
    --resume auto: the replayed schedule gives the lr of the run that never stopped, and its weights."""
    settings = [*TINY, "--warmup-iters", "3", "--lr-steps", "1", "--lr", "0.01", "--epochs", "2", "--eval-interval", "2"]
    straight = run_detect(coco, *settings, "--output-dir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    assert re.findall(r"^Epoch: .*  lr (\S+)  ", straight.stdout, re.M) == ["0.0033333", "0.0055556", "0.00077778", "0.001"]

    command = [coco, *settings, "--output-dir", tmp_path / "stopped", "--resume", "auto"]
    process, out, err = stop_with_sigterm(command, at_line="Epoch: [0][0/2]")
    assert process.returncode == 75, err
    resumed = run_detect(*command)
    assert resumed.returncode == 0, resumed.stderr
    assert "=> resumed" in resumed.stdout and ", step " in resumed.stdout
    expected = load_checkpoint_file(tmp_path / "straight" / "checkpoint.pth.tar")
    actual = load_checkpoint_file(tmp_path / "stopped" / "checkpoint.pth.tar")
    assert [key for key in expected["state_dict"] if not torch.equal(expected["state_dict"][key], actual["state_dict"][key])] == []
    assert [row["lr"] for row in read_log(tmp_path / "stopped")] == [row["lr"] for row in read_log(tmp_path / "straight")]


def test_torchrun_trains_on_two_processes_with_one_checkpoint(coco, tmp_path):
    result = run_script(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2, "detect.py", coco, *TINY, "--epochs", 1,
        "--output-dir", tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (gloo)" in result.stdout
    assert "=> weights identical on all 2 processes" in result.stdout
    assert [match[0] for match in AP_LINE.findall(result.stdout)] == ["bbox", "segm"]
    assert sorted(name for name in os.listdir(tmp_path) if name.endswith(".tar")) == ["checkpoint.pth.tar", "model_best.pth.tar"]
    assert load_checkpoint_file(tmp_path / "checkpoint.pth.tar")["epoch"] == 1
    assert len(read_log(tmp_path)) == 1


def write_released_mask_rcnn(path: Path) -> None:
    """A Mask R-CNN ECA-50 k3377 in the released files' format, key for key the manifest's layout
    (mmcv's dict, legacy serialization), holding a freshly initialised detector's weights."""
    manifest = json.loads((FIXTURES / "mmdet_v1_manifest.json").read_text())
    layout = manifest["models"]["mask_rcnn_ecanet50_k3377_bs8_lr0.01"]["state_dict"]
    torch.manual_seed(0)
    weights = create_detector("maskrcnn_eca_resnet50_fpn").state_dict()
    names = mmdet_v1_to_torchvision(OrderedDict((key, None) for key, _ in layout))
    state = OrderedDict((v1_key, weights[ours]) for v1_key, ours in zip((key for key, _ in layout), names))
    assert all(list(state[key].shape) == shape for key, shape in layout)
    meta = {"mmdet_version": "1.0rc0+d3ca926", "config": "model = dict(type='MaskRCNN')\n", "epoch": 12, "iter": 87960,
            "CLASSES": tuple(name.replace(" ", "_") for name in COCO_CLASSES), "mmcv_version": "0.2.14"}
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=False)


def test_a_released_mmdetection_v1_file_evaluates_with_no_flags(coco, tmp_path):
    released = tmp_path / "maskrcnnecanet50k3377bs8_lr0.01.pth"
    write_released_mask_rcnn(released)
    result = run_detect(coco, "--evaluate", "--resume", released, *SMALL, "-b", "4", "-j", "0", "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "maskrcnn_eca_resnet50_fpn" in result.stdout
    assert [match[0] for match in AP_LINE.findall(result.stdout)] == ["bbox", "segm"]


def test_predict_draws_the_detections_of_a_checkpoint(trained, coco, tmp_path):
    """The trained checkpoint with a classifier that calls every region a 'cross' at score ~1."""
    checkpoint = load_checkpoint_file(trained[0] / "checkpoint.pth.tar")
    state = checkpoint["state_dict"]
    state["roi_heads.box_predictor.cls_score.weight"].zero_()
    state["roi_heads.box_predictor.cls_score.bias"].copy_(torch.tensor([0.0, 0.0, 20.0, 0.0, 0.0, 0.0]))
    weights = tmp_path / "crosses.pth.tar"
    torch.save(checkpoint, weights)
    image = sorted((coco / "val2017").iterdir())[0]
    result = run_script("predict.py", "--weights", weights, image, "--out-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    png = tmp_path / "out" / f"{image.stem}_detections.png"
    assert lines[0] == f"{image}: {len(lines) - 1} detections -> {png}" and len(lines) > 1
    assert all(re.match(r"^  cross +1\.000  \[[\d.]+, [\d.]+, [\d.]+, [\d.]+\]$", line) for line in lines[1:]), lines[1]
    with Image.open(png) as drawn, Image.open(image) as original:
        assert original.size == (64, 64) and drawn.size == (512, 512)  # scaled up to predict.DRAWING_SHORT_SIDE
        assert drawn.convert("RGB").tobytes() != original.convert("RGB").resize(drawn.size).tobytes()


# --- bad input: one line, exit status 2, no traceback ------------------------------------------


def _copy_set(coco: Path, root: Path) -> Path:
    """A private copy of the tiny set, to break."""
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True)
        for image in (coco / split).iterdir():
            (root / split / image.name).write_bytes(image.read_bytes())
    (root / "annotations").mkdir()
    for annotation in (coco / "annotations").iterdir():
        (root / "annotations" / annotation.name).write_text(annotation.read_text())
    return root


def _edit_train_annotations(root: Path, edit) -> None:
    path = root / "annotations" / "instances_train2017.json"
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def _set_box(box):
    def edit(content):
        content["annotations"][0]["bbox"] = box
    return edit


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda root: (root / "annotations" / "instances_train2017.json").unlink(),
         "instances_train2017.json: annotation file not found"),
        (lambda root: (root / "annotations" / "instances_train2017.json").write_text("<html>"),
         "instances_train2017.json: not a COCO annotation file (not JSON"),
        (lambda root: _edit_train_annotations(root, lambda content: content.pop("annotations")),
         "not a COCO annotation file (no 'annotations' list)"),
        (lambda root: sorted((root / "train2017").iterdir())[1].unlink(),
         "1 of 8 image files listed in"),
        (lambda root: _edit_train_annotations(root, _set_box([3.0, 4.0, 0.0, 10.0])),
         "has an empty box [3.0, 4.0, 0.0, 10.0]"),
        (lambda root: _edit_train_annotations(root, _set_box([3.0, 4.0, -5.0, 10.0])),
         "has an inverted box [3.0, 4.0, -5.0, 10.0]"),
        (lambda root: sorted((root / "train2017").iterdir())[0].write_bytes(b"\xff\xd8 truncated"),
         ".jpg (not an image file) (--bad-images skip would skip it)"),
    ],
    ids=["missing-annotations", "not-json", "not-coco", "missing-image", "empty-box", "inverted-box", "unreadable-image"],
)
def test_bad_data_is_one_line_and_exit_2(coco, tmp_path, breakage, message, capsys):
    root = _copy_set(coco, tmp_path / "set")
    breakage(root)
    assert detect.main([str(root), *TINY, "--epochs", "1", "--bad-images", "error", "--output-dir", str(tmp_path / "run")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("detect.py: error: ") and message in errors[0], errors
    assert not (tmp_path / "run" / "checkpoint.pth.tar").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["DIR", "-a", "maskrcnn_eca_resnet9_fpn"], "unknown detector 'maskrcnn_eca_resnet9_fpn'; choose one of: "),
        (["DIR", "--resume", "missing.pth"], "--resume missing.pth: no such file"),
        (["DIR", "--detector-arg", "box_batch_size_per_image"], "expected KEY=VALUE"),
        (["DIR", "--detector-arg", "box_batch_size=3"], "--detector-arg box_batch_size: MaskRCNN has no such setting"),
        (["DIR", "-a", "fasterrcnn_resnet50_fpn", "--ksize", "3333"], "fasterrcnn_resnet50_fpn: resnet50 has no ECA layers"),
        (["-b", "8"], "give the COCO root directory"),
        (["DIR/nowhere"], "data directory DIR/nowhere does not exist"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    argv = [arg.replace("DIR", str(tmp_path)) for arg in argv]
    assert detect.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("detect.py: error: ") and message.replace("DIR", str(tmp_path)) in err

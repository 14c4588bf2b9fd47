"""Damaged checkpoint files never pass: a real checkpoint written by main.py, corrupted at seeded
random places (truncated, bytes flipped in its tensor data and in its zip directory, blocks
zeroed), is refused by every reader with one line and no evaluation; ``--resume auto`` goes on
past a damaged file and ends as an uninterrupted run; values no checkpoint holds (NaN, negative
BatchNorm variances) are refused in both formats; the recorded SHA-256 and
scripts/verify_checkpoints.py."""

import bisect
import importlib.util
import itertools
import random
import shutil
import struct
import zipfile

import pytest
import torch
from coco_sets import write_coco_set
from helpers import ROOT, run_script
from PIL import Image
from test_robustness import make_images

import detect
import export
import main as main_module
import models
import predict
from utils.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    copy_checkpoint,
    load_checkpoint_file,
    load_model,
    save_checkpoint,
    verify_checkpoint_file,
)
from utils.checkpoint.integrity import DIGEST_KEY, tensor_digest
from utils.detection.checkpoint import classification_arch_and_k, load_detector
from utils.longrun.resume import checkpoint_position, resolve_resume
from utils.longrun.run_dir import prepare_run_dir

RUN = ["-a", "eca_mobilenet_v2", "--image-size", "32", "--min-scale", "1", "-b", "8", "-p", "1", "--seed", "0", "--lr", "0.01", "-j", "0"]
"""A 2.2M-parameter model on twelve 32 x 32 JPEGs: an 18 MB checkpoint (weights and momentum), two steps per epoch."""
SEED = 20200617


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("shapes"))


def train(data, run_dir, *extra):
    """main.py's main() in this process, on the tiny run; its exit code (the output goes to the caller's capsys)."""
    return main_module.main([str(arg) for arg in (data, *RUN, "--output-dir", run_dir, *extra)])


@pytest.fixture(scope="module")
def first_epoch(data, tmp_path_factory):
    """One epoch through main.py's own save path: checkpoint.pth.tar and model_best.pth.tar."""
    run_dir = tmp_path_factory.mktemp("first-epoch")
    assert train(data, run_dir, "--epochs", "1") == 0
    return run_dir


@pytest.fixture(scope="module")
def saved(first_epoch):
    return first_epoch / "checkpoint.pth.tar"


@pytest.fixture(scope="module")
def layout(saved):
    """Where the tensor data and the zip directory lie in the saved file."""
    original = saved.read_bytes()
    with zipfile.ZipFile(saved) as archive:
        records = archive.infolist()
        directory = archive.start_dir
    tensor_spans = []
    for info in records:
        name_length, extra_length = struct.unpack_from("<HH", original, info.header_offset + 26)
        start = info.header_offset + 30 + name_length + extra_length
        if "/data/" in info.filename and info.compress_size:
            tensor_spans.append((start, start + info.compress_size))
    zip64_end = struct.unpack_from("<Q", original, len(original) - 22 - 20 + 8)[0]
    # the zip64 end record's 'version made by' and 'needed' fields are read by no reader (docs: what is checked)
    unread = set(range(zip64_end + 12, zip64_end + 16))
    directory_bytes = [position for position in range(directory, len(original)) if position not in unread]
    return original, tensor_spans, directory_bytes


def damage(original, kind, rng, layout):
    """A changed copy of the file's bytes."""
    _, tensor_spans, directory_bytes = layout
    while True:
        data = bytearray(original)
        if kind == "truncated":
            data = data[: rng.randrange(len(data))]
        elif kind == "tensor-bytes":  # the case: 64 random bytes of the tensor data
            ends = list(itertools.accumulate(end - start for start, end in tensor_spans))
            for offset in rng.sample(range(ends[-1]), 64):
                span = bisect.bisect_right(ends, offset)
                data[tensor_spans[span][0] + offset - (ends[span - 1] if span else 0)] ^= rng.randrange(1, 256)
        elif kind == "directory-byte":
            data[rng.choice(directory_bytes)] ^= rng.randrange(1, 256)
        elif kind == "zeroed-block":
            start = rng.randrange(len(data) - 4096)
            data[start : start + 4096] = bytes(4096)
        if data != original:
            return bytes(data)


def hub_load(path):
    return torch.hub.load(str(ROOT), "eca_mobilenet_v2", source="local", weights=str(path))


READERS = [
    load_checkpoint_file, load_model, load_detector, classification_arch_and_k, checkpoint_position, verify_checkpoint_file, hub_load,
]  # fmt: skip
"""Every function through which a checkpoint file reaches a model here (hubconf's entry points included)."""

KINDS = ["truncated", "tensor-bytes", "directory-byte", "zeroed-block"]


@pytest.mark.parametrize("case", range(8))
@pytest.mark.parametrize("kind", KINDS)
def test_fuzzed_checkpoint_is_refused_with_one_line_by_every_reader(saved, layout, tmp_path, kind, case):
    rng = random.Random(f"{SEED}-{kind}-{case}")
    path = tmp_path / "checkpoint.pth.tar"
    path.write_bytes(damage(layout[0], kind, rng, layout))
    reader = READERS[case % len(READERS)]
    with pytest.raises(CheckpointError) as raised:
        reader(path)
    message = str(raised.value)
    assert str(path) in message and "\n" not in message, message


@pytest.fixture(scope="module")
def damaged(saved, layout, tmp_path_factory):
    """The saved checkpoint with 64 bytes of its tensor data changed, as the issue found them loaded."""
    path = tmp_path_factory.mktemp("damaged") / "checkpoint.pth.tar"
    path.write_bytes(damage(layout[0], "tensor-bytes", random.Random(SEED), layout))
    return path


def assert_one_line(err, prefix, fragment):
    lines = [line for line in err.splitlines() if not line.startswith(("warning:", "predict.py: warning:"))]
    assert len(lines) == 1 and lines[0].startswith(prefix) and fragment in lines[0], err
    assert "Traceback" not in err


CRC_FAILURE = "fails its CRC-32 check; use an intact copy"


def test_main_py_refuses_a_damaged_checkpoint_and_evaluates_nothing(data, damaged, tmp_path, capsys):
    for flags in (["--evaluate", "--resume"], ["--resume"], ["--pretrained"]):
        code = train(data, tmp_path / "run", "--epochs", "2", *flags, damaged)
        captured = capsys.readouterr()
        assert code == 2
        assert_one_line(captured.err, f"main.py: error: {damaged} is damaged: its record ", CRC_FAILURE)
        assert " * Prec@1" not in captured.out and "Epoch:" not in captured.out


def test_a_damaged_checkpoint_is_one_line_from_a_real_process(data, damaged):
    result = run_script("main.py", data, "--evaluate", "--resume", damaged, *RUN)
    assert result.returncode == 2
    assert result.stderr.startswith(f"main.py: error: {damaged} is damaged: its record ") and result.stderr.count("\n") == 1
    assert result.stderr.endswith(f"{CRC_FAILURE}\n") and " * Prec@1" not in result.stdout


def test_detect_py_refuses_a_damaged_checkpoint_as_resume_or_backbone(damaged, tmp_path, capsys):
    image_dir, annotations = write_coco_set(tmp_path / "coco")
    split = ["--train-images", image_dir, "--train-annotations", annotations, "--val-images", image_dir, "--val-annotations", annotations]
    small = ["-a", "fasterrcnn_eca_resnet18_fpn", "--min-size", "64", "--max-size", "64", "-j", "0"]
    common = [*split, *small, "--output-dir", tmp_path / "run"]
    for flags in (["--evaluate", "--resume", damaged], ["--backbone-weights", damaged, "--epochs", "1"]):
        code = detect.main([str(arg) for arg in (*common, *flags)])
        captured = capsys.readouterr()
        assert code == 2
        assert_one_line(captured.err, f"detect.py: error: {damaged} is damaged: its record ", CRC_FAILURE)
        assert "AP" not in captured.out and "Epoch:" not in captured.out


def test_predict_export_and_evaluate_released_refuse_a_damaged_checkpoint(data, damaged, tmp_path, capsys):
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (40, 40), (180, 120, 60)).save(image)
    assert predict.main(["--weights", str(damaged), str(image)]) == 2
    captured = capsys.readouterr()
    assert_one_line(captured.err, f"predict.py: error: {damaged} is damaged: its record ", CRC_FAILURE)
    assert captured.out == ""

    assert export.main(["--weights", str(damaged), "--format", "torchscript", "--out", str(tmp_path / "model.pt")]) == 2
    assert_one_line(capsys.readouterr().err, f"export.py: error: {damaged} is damaged: its record ", CRC_FAILURE)
    assert not (tmp_path / "model.pt").exists()

    spec = importlib.util.spec_from_file_location("evaluate_released", ROOT / "scripts" / "evaluate_released.py")
    evaluate_released = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate_released)
    assert evaluate_released.main([str(damaged), "--data", str(data), "--image-size", "32", "-j", "0"]) == 2
    captured = capsys.readouterr()
    assert_one_line(captured.err, f"[1/1] {damaged.name}: {damaged} is damaged: its record ", CRC_FAILURE)
    header, row = captured.out.splitlines()
    assert row.startswith(f"{damaged.name}  error: {damaged} is damaged: its record ")


# --- --resume auto past a damaged file ---------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    assert train(data, run_dir, "--epochs", "2", "--resume", "auto") == 0
    return load_checkpoint_file(run_dir / "checkpoint.pth.tar")


def assert_same_weights_and_momentum(expected, actual):
    assert (actual["epoch"], actual["best_prec1"]) == (expected["epoch"], expected["best_prec1"])
    assert [key for key in expected["state_dict"] if not torch.equal(expected["state_dict"][key], actual["state_dict"][key])] == []
    momentum = [(state["momentum_buffer"] for state in checkpoint["optimizer"]["state"].values()) for checkpoint in (expected, actual)]
    assert all(torch.equal(a, b) for a, b in zip(*momentum))


def test_resume_auto_goes_on_from_the_epoch_checkpoint_when_the_mid_epoch_one_is_damaged(
    data, first_epoch, uninterrupted, layout, tmp_path, capsys
):
    """The mid-epoch checkpoint a preempted job left inside epoch 1 was damaged afterwards: the
    requeued job says so in one line, sets it aside and continues from the end of epoch 0."""
    run_dir = tmp_path / "run"
    shutil.copytree(first_epoch, run_dir)
    step = run_dir / "checkpoint_step.pth.tar"
    save_checkpoint({**load_checkpoint_file(run_dir / "checkpoint.pth.tar"), "step": 1}, step)
    with zipfile.ZipFile(step) as archive:
        info = max(archive.infolist(), key=lambda record: record.compress_size)
    data_bytes = bytearray(step.read_bytes())
    data_bytes[info.header_offset + 4096] ^= 0x40  # inside its largest tensor
    step.write_bytes(bytes(data_bytes))

    assert train(data, run_dir, "--epochs", "2", "--resume", "auto") == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: --resume auto: ")]
    assert len(warnings) == 1 and f"{step} is damaged: its record " in warnings[0], captured.err
    assert warnings[0].endswith(f"; moved to {step}.damaged, continuing from {run_dir / 'checkpoint.pth.tar'}")
    assert f"=> resumed {run_dir / 'checkpoint.pth.tar'} at epoch 1" in captured.out
    assert not step.exists() and (run_dir / "checkpoint_step.pth.tar.damaged").exists()
    assert_same_weights_and_momentum(uninterrupted, load_checkpoint_file(run_dir / "checkpoint.pth.tar"))


def test_resume_auto_starts_afresh_when_its_only_checkpoint_is_damaged(first_epoch, damaged, tmp_path):
    """Nothing intact is left: the run starts from scratch, which the run directory then allows."""
    run_dir = tmp_path / "run"
    shutil.copytree(first_epoch, run_dir)
    shutil.copy(damaged, run_dir / "checkpoint.pth.tar")
    with pytest.warns(CheckpointWarning) as caught:
        assert resolve_resume("auto", str(run_dir)) == ""
    (warning,) = [str(warning.message) for warning in caught]
    assert warning.startswith(f"--resume auto: {run_dir / 'checkpoint.pth.tar'} is damaged: its record ") and CRC_FAILURE in warning
    assert warning.endswith(f"; moved to {run_dir / 'checkpoint.pth.tar'}.damaged, starting afresh: no intact checkpoint left")
    assert (run_dir / "checkpoint.pth.tar.damaged").read_bytes() == damaged.read_bytes()
    prepare_run_dir(str(run_dir), resuming=False, log=print)  # a fresh start is not refused as one over an earlier run


def test_an_explicit_resume_never_falls_back(data, first_epoch, damaged, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(first_epoch, run_dir)
    before = {path.name: path.read_bytes() for path in run_dir.glob("*.pth.tar")}
    assert train(data, run_dir, "--epochs", "2", "--resume", damaged) == 2
    assert_one_line(capsys.readouterr().err, f"main.py: error: {damaged} is damaged: ", CRC_FAILURE)
    assert {path.name: path.read_bytes() for path in run_dir.glob("*.pth.tar")} == before
    assert not list(run_dir.glob("*.damaged"))


# --- values no checkpoint holds ----------------------------------------------------------------


def released_file(path, change):
    """An ECA-MobileNetV2 in the released (legacy, no checksum) format, with ``change`` applied to its weights."""
    state_dict = {f"module.{key}": value for key, value in models.eca_mobilenet_v2(num_classes=3).state_dict().items()}
    change(state_dict)
    torch.save({"epoch": 100, "state_dict": state_dict, "best_prec1": torch.tensor(72.5)}, path, _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["module.features.0.0.weight"].view(-1)[7].fill_(float("nan")),
         "its tensor state_dict/module.features.0.0.weight holds NaN"),
        (lambda s: s["module.classifier.1.bias"].fill_(float("-inf")),
         "its tensor state_dict/module.classifier.1.bias holds NaN or infinity"),
        (lambda s: s["module.features.0.1.running_var"].view(-1)[0].fill_(-0.5),
         "its BatchNorm running variance state_dict/module.features.0.1.running_var is negative"),
    ],
    ids=["nan", "infinity", "negative-variance"],
)
def test_a_legacy_file_with_impossible_values_is_refused_naming_the_tensor(data, tmp_path, capsys, change, message):
    path = released_file(tmp_path / "eca_mobilenetv2.pth.tar", change)
    assert train(data, tmp_path / "run", "--evaluate", "--resume", path) == 2
    captured = capsys.readouterr()
    assert_one_line(captured.err, f"main.py: error: {path} is unusable: ", message)
    assert " * Prec@1" not in captured.out


def test_a_zip_file_with_a_non_finite_optimizer_state_is_refused(saved, tmp_path):
    checkpoint = load_checkpoint_file(saved)
    first = next(iter(checkpoint["optimizer"]["state"]))
    checkpoint["optimizer"]["state"][first]["momentum_buffer"].view(-1)[0] = float("inf")
    save_checkpoint(checkpoint, tmp_path / "diverged.pth.tar")
    with pytest.raises(CheckpointError, match=f"its tensor optimizer/state/{first}/momentum_buffer holds NaN or infinity"):
        load_model(tmp_path / "diverged.pth.tar")


# --- the recorded SHA-256 and scripts/verify_checkpoints.py ----------------------------------


def test_saved_checkpoints_and_their_copies_carry_the_sha256_of_their_tensor_data(first_epoch, tmp_path):
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):  # model_best is copy_checkpoint's byte copy
        checkpoint = load_checkpoint_file(first_epoch / name)
        assert checkpoint[DIGEST_KEY] == tensor_digest({key: value for key, value in checkpoint.items() if key != DIGEST_KEY})
        assert "; tensor data match the SHA-256 recorded at save; tensors finite" in verify_checkpoint_file(first_epoch / name)
    copy_checkpoint(first_epoch / "checkpoint.pth.tar", tmp_path / "copy.pth.tar")
    assert (tmp_path / "copy.pth.tar").read_bytes() == (first_epoch / "checkpoint.pth.tar").read_bytes()


def test_tensors_changed_behind_the_recorded_sha256_are_found_by_verify(saved, tmp_path):
    """Rewritten with valid CRC-32s (as a tool that edits checkpoints would) but other weights."""
    checkpoint = load_checkpoint_file(saved)
    checkpoint["state_dict"]["classifier.1.bias"] += 1
    torch.save(checkpoint, tmp_path / "edited.pth.tar")
    load_checkpoint_file(tmp_path / "edited.pth.tar")  # a load checks CRC-32s and values, not the digest
    with pytest.raises(CheckpointError, match="its tensor data do not match the SHA-256 recorded when it was saved"):
        verify_checkpoint_file(tmp_path / "edited.pth.tar")


def test_a_file_saved_without_crc32s_is_read_and_said_so(saved, tmp_path):
    checkpoint = load_checkpoint_file(saved)
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(checkpoint, tmp_path / "no-crc.pth.tar")
    finally:
        torch.serialization.set_crc32_options(True)
    assert verify_checkpoint_file(tmp_path / "no-crc.pth.tar").startswith("zip format without CRC-32s; tensor data match the SHA-256")


def test_verify_script_prints_one_line_per_file_and_fails_if_any_is_bad(first_epoch, damaged, tmp_path, capsys):
    released = released_file(tmp_path / "eca_mobilenetv2_k13.pth.tar", lambda state_dict: None)
    mmdet = tmp_path / "mask_rcnn_ecanet50_k3377_bs8_lr0.02.pth"  # the released detectors' layout: mmcv's meta and state_dict
    detector = {"meta": {"epoch": 24}, "state_dict": {"backbone.conv1.weight": torch.ones(2, 3, 7, 7)}}
    torch.save(detector, mmdet, _use_new_zipfile_serialization=False)
    good = [first_epoch / "checkpoint.pth.tar", first_epoch / "model_best.pth.tar", released, mmdet]
    spec = importlib.util.spec_from_file_location("verify_checkpoints", ROOT / "scripts" / "verify_checkpoints.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(path) for path in good]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(maxsplit=2)[:2] for line in lines] == [["OK", f"{path}:"] for path in good]
    assert lines[0].endswith(" zip records match their CRC-32; tensor data match the SHA-256 recorded at save; "
                             "tensors finite, BatchNorm running variances non-negative")  # fmt: skip
    assert lines[2].endswith(": legacy format: no checksum recorded; tensors finite, BatchNorm running variances non-negative")

    result = run_script("scripts/verify_checkpoints.py", *good, damaged, tmp_path / "missing.pth")
    assert result.returncode == 1
    *oks, bad_damaged, bad_missing = result.stdout.splitlines()
    assert oks == lines and result.stderr == ""
    assert bad_damaged.startswith(f"BAD  {damaged} is damaged: its record ") and bad_damaged.endswith(CRC_FAILURE)
    assert bad_missing == f"BAD  checkpoint {tmp_path / 'missing.pth'} does not exist"

"""Nothing lost, nothing unsafe: main.py under kill -9, resume, hostile or broken files and bad input.

Every failure case asserts the exit code, a single ``main.py: error:`` line with no traceback, and
that the checkpoints already in the run directory are byte-for-byte unchanged.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import run_script, start_script
from PIL import Image

import main as main_module
from scripts.make_demo_data import CLASSES, render
from utils.checkpoint import load_checkpoint_file

CLASS_NAMES = CLASSES[:3]
TINY = ["-a", "eca_resnet18", "--image-size", "32", "--min-scale", "1", "-b", "8", "-p", "1", "--seed", "0", "--lr", "0.01"]
CHECKPOINTS = ("checkpoint.pth.tar", "model_best.pth.tar")


def make_images(root, train_per_class=4, val_per_class=2):
    """The demo's shapes at 32x32: three classes, a dozen training JPEGs."""
    for split, count, first in (("train", train_per_class, 0), ("val", val_per_class, train_per_class)):
        for label, name in enumerate(CLASS_NAMES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(first, first + count):
                render(name, label * 1000 + index, 32).save(folder / f"{name}_{index}.jpg", quality=90)
    return root


def snapshot(run_dir):
    """The bytes of every checkpoint in a run directory."""
    return {name: (Path(run_dir) / name).read_bytes() for name in CHECKPOINTS if (Path(run_dir) / name).exists()}


def run_in_process(capsys, *argv):
    """main.main on these arguments: (exit code, stdout, stderr)."""
    code = main_module.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, expected_code, fragment):
    assert code == expected_code, err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("main.py: error: "), err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def first_epoch(data, tmp_path_factory):
    """One epoch of the tiny run, both checkpoints written; tests work on copies."""
    run_dir = tmp_path_factory.mktemp("first-epoch")
    assert main_module.main([str(data), *TINY, "-j", "0", "--epochs", "1", "--output-dir", str(run_dir)]) == 0
    assert set(snapshot(run_dir)) == set(CHECKPOINTS)
    return run_dir


@pytest.fixture
def run_dir(first_epoch, tmp_path):
    """A copy of a run after one epoch, and the bytes of its checkpoints to compare against."""
    copy = tmp_path / "run"
    shutil.copytree(first_epoch, copy)
    return copy, snapshot(copy)


def resume_args(run_dir, epochs=2):
    return ["--epochs", epochs, "--output-dir", run_dir, "--resume", Path(run_dir) / "checkpoint.pth.tar"]


# --- kill -9 at any moment ---------------------------------------------------------------------


def _saving_over_an_older_checkpoint(names):
    return "checkpoint.pth.tar" in names and any(n.startswith(".checkpoint.pth.tar.") for n in names)


def _copying_model_best(names):
    return any(n.startswith(".model_best.pth.tar.") for n in names)


def _first_checkpoint_renamed(names):
    return "checkpoint.pth.tar" in names


@pytest.mark.parametrize("moment", [_saving_over_an_older_checkpoint, _copying_model_best, _first_checkpoint_renamed])
def test_kill_9_leaves_loadable_checkpoints_and_resume_continues(data, tmp_path, capsys, moment):
    """Whenever the kill lands, every checkpoint left is whole and --resume trains on from it."""
    run_dir = tmp_path / "run"
    argv = [data, *TINY, "-j", "0", "--epochs", "30", "--output-dir", run_dir]
    process = start_script("main.py", *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and not (run_dir.is_dir() and moment(os.listdir(run_dir))):
            time.sleep(0.001)
        assert process.poll() is None, "training ended before the moment to kill it came"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()

    saved = {name: load_checkpoint_file(run_dir / name)["epoch"] for name in CHECKPOINTS if (run_dir / name).exists()}
    assert saved["checkpoint.pth.tar"] >= 1
    epochs = saved["checkpoint.pth.tar"] + 1
    code, out, err = run_in_process(capsys, data, *TINY, "-j", "0", *resume_args(run_dir, epochs))
    assert code == 0, err
    assert f"=> resumed {run_dir / 'checkpoint.pth.tar'} at epoch {epochs - 1}" in out
    assert load_checkpoint_file(run_dir / "checkpoint.pth.tar")["epoch"] == epochs


# --- exact resume ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_resumed_run_ends_with_bitwise_the_weights_of_an_uninterrupted_one(data, tmp_path, capsys, workers):
    """RNG states of torch, numpy and python, the data order and the workers' seeds all come back."""
    common = [data, *TINY, "-j", workers]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_in_process(capsys, *common, "--epochs", "2", "--output-dir", straight)[0] == 0
    assert run_in_process(capsys, *common, "--epochs", "1", "--output-dir", stopped)[0] == 0
    assert run_in_process(capsys, *common, *resume_args(stopped))[0] == 0

    expected = load_checkpoint_file(straight / "checkpoint.pth.tar")["state_dict"]
    resumed = load_checkpoint_file(stopped / "checkpoint.pth.tar")["state_dict"]
    assert expected.keys() == resumed.keys()
    assert [key for key in expected if not torch.equal(expected[key], resumed[key])] == []


# --- loading never runs code; broken files are one line ----------------------------------------


class _Payload:
    """Unpickling this calls open(path, "w"): a file appears if the loader ran it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("flags", [["--resume"], ["--pretrained"], ["--evaluate", "--resume"]])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(data, run_dir, tmp_path, capsys, flags, legacy):
    run, before = run_dir
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pth.tar"
    state = load_checkpoint_file(run / "checkpoint.pth.tar")
    torch.save({**state, "extra": _Payload(marker)}, evil, _use_new_zipfile_serialization=not legacy)

    code, _, err = run_in_process(capsys, data, *TINY, "-j", "0", "--epochs", "2", "--output-dir", run, *flags, evil)
    assert_one_line_error(code, err, 2, "it would import io.open, which could run code")
    assert not marker.exists()
    assert snapshot(run) == before


def _truncated(run):
    return (run / "checkpoint.pth.tar").read_bytes()[:100_000]


@pytest.mark.parametrize(
    "content",
    [
        lambda run: b"truncated download",
        lambda run: b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body></body></html>\n",
        _truncated,
    ],
    ids=["garbage", "html-page", "truncated-checkpoint"],
)
def test_a_broken_checkpoint_file_is_one_line_and_not_called_unsafe(data, run_dir, tmp_path, capsys, content):
    run, before = run_dir
    broken = tmp_path / "download.pth.tar"
    broken.write_bytes(content(run))
    code, _, err = run_in_process(capsys, data, *TINY, "-j", "0", "--epochs", "2", "--output-dir", run, "--resume", broken)
    assert_one_line_error(code, err, 2, f"{broken} is not a PyTorch checkpoint, or it is truncated")
    assert snapshot(run) == before


def test_a_garbage_checkpoint_is_one_line_from_a_real_process(data, tmp_path):
    """The same through a real interpreter: stderr holds the one line and nothing else, no traceback."""
    broken = tmp_path / "download.pth.tar"
    broken.write_bytes(b"truncated download")
    result = run_script("main.py", data, "--evaluate", "--resume", broken, "-j", "0", "--image-size", "32")
    assert result.returncode == 2
    assert result.stderr == f"main.py: error: {broken} is not a PyTorch checkpoint, or it is truncated\n"


# --- data ---------------------------------------------------------------------------------------


def _missing_split(split):
    def damage(root):
        shutil.rmtree(root / split)
        return f"{root} has no {split}/ folder"
    return damage


def _empty_class_folder(root):
    for image in (root / "train" / CLASS_NAMES[1]).iterdir():
        image.unlink()
    return f"Found no valid file for the classes {CLASS_NAMES[1]}"


def _no_images_at_all(root):
    for split in ("train", "val"):
        shutil.rmtree(root / split)
        (root / split).mkdir()
    return "Couldn't find any class folder"


def _no_data_directory(root):
    shutil.rmtree(root)
    return f"data directory {root} does not exist"


@pytest.mark.parametrize(
    "damage",
    [_no_data_directory, _missing_split("train"), _missing_split("val"), _empty_class_folder, _no_images_at_all],
    ids=["no-data-directory", "no-train", "no-val", "empty-class-folder", "no-images"],
)
def test_unusable_data_is_one_line_before_training(data, run_dir, tmp_path, capsys, damage):
    run, before = run_dir
    root = tmp_path / "data"
    shutil.copytree(data, root)
    fragment = damage(root)
    code, out, err = run_in_process(capsys, root, *TINY, "-j", "0", *resume_args(run))
    assert_one_line_error(code, err, 2, fragment)
    assert "Epoch:" not in out
    assert snapshot(run) == before


@pytest.fixture
def corrupt_data(data, tmp_path):
    """The tiny set with one truncated JPEG and one file that is not an image at all; returns the
    root and each bad file as the reports should show it, ``PATH (REASON)``: for the truncated
    JPEG the message PIL itself raises when it loads the file."""
    root = tmp_path / "corrupt"
    shutil.copytree(data, root)
    truncated, garbage = sorted((root / "train" / CLASS_NAMES[0]).iterdir())[1:3]
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage.write_bytes(b"not a jpeg")
    with pytest.raises(OSError) as pil_error, Image.open(truncated) as image:
        image.load()
    return root, sorted([f"{truncated} ({pil_error.value})", f"{garbage} (not an image file)"])


def test_unreadable_images_are_skipped_and_counted_across_workers(corrupt_data, run_dir, capsys):
    root, bad = corrupt_data
    run, _ = run_dir
    code, out, err = run_in_process(capsys, root, *TINY, "-j", "1", *resume_args(run))
    assert code == 0, err
    assert "Epoch: [1] skipped 2 unreadable image file(s), e.g. " in out
    assert out.split("Epoch: [1] skipped 2 unreadable image file(s), e.g. ")[1].split("\n")[0] in bad
    assert load_checkpoint_file(run / "checkpoint.pth.tar")["epoch"] == 2


def test_bad_images_error_stops_naming_the_file_and_why(corrupt_data, run_dir, capsys):
    root, bad = corrupt_data
    run, before = run_dir
    code, _, err = run_in_process(capsys, root, *TINY, "-j", "1", "--bad-images", "error", *resume_args(run))
    assert_one_line_error(code, err, 2, "cannot read image ")
    assert any(f"cannot read image {file} (--bad-images skip would skip it)" in err for file in bad), err
    assert snapshot(run) == before


# --- divergence ------------------------------------------------------------------------------


def test_a_non_finite_loss_stops_naming_epoch_and_step_and_saves_nothing(data, run_dir, capsys):
    run, before = run_dir
    argv = [arg if arg != "0.01" else "1e30" for arg in TINY]
    code, out, err = run_in_process(capsys, data, *argv, "-j", "0", *resume_args(run, epochs=3))
    assert_one_line_error(code, err, 1, "the training loss became non-finite at epoch 1, step ")
    assert " * Prec@1" not in out
    assert snapshot(run) == before


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["-a", "eca_resnet9"], "unknown model 'eca_resnet9'; choose one of: cbam_resnet101, "),
        (["--ksize", "3x57"], "--ksize 3x57: "),
        (["-b", "-4"], "--batch-size must be at least 1, got -4"),
        (["-j", "-1"], "--workers must be 0 or more, got -1"),
        pytest.param(["--gpu", "0"], "--gpu 0: CUDA is not available",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")),
        pytest.param(["--decode-device", "cuda"], "--decode-device cuda: CUDA is not available",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")),
        (["--resume", "RUN/no-such.pth.tar"], "--resume RUN/no-such.pth.tar: no such file"),
        (["--output-dir", "RUN/checkpoint.pth.tar"], "run directory RUN/checkpoint.pth.tar is not writable"),
        (["--output-dir", "RUN/checkpoint.pth.tar/run"], "run directory RUN/checkpoint.pth.tar/run is not writable"),
        ([], "RUN already holds a run's checkpoint; continue it with --resume auto"),
    ],
    ids=["unknown-arch", "bad-ksize", "batch-size", "workers", "gpu-without-cuda", "decode-device-without-cuda", "missing-resume",
         "output-dir-is-a-file", "output-dir-under-a-file", "fresh-run-over-an-earlier-one"],
)
def test_bad_arguments_are_one_line_before_training(data, run_dir, capsys, argv, fragment):
    run, before = run_dir
    argv = [arg.replace("RUN", str(run)) for arg in argv]
    defaults = ["--output-dir", run] if "--output-dir" not in argv else []
    code, out, err = run_in_process(capsys, data, *TINY, "-j", "0", "--epochs", "2", *defaults, *argv)
    assert_one_line_error(code, err, 2, fragment.replace("RUN", str(run)))
    assert "Epoch:" not in out
    assert snapshot(run) == before

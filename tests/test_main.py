"""main.py end to end, as users run it: real JPEG ImageFolders, real subprocesses, real checkpoint files."""

import csv
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import run_script

import main as main_module
import models
from utils.checkpoint import load_checkpoint_file

TINY = ["-a", "eca_resnet18", "--image-size", "32", "--min-scale", "1", "-b", "8", "-j", "0", "-p", "2", "--seed", "0"]


def run_main(*args):
    return run_script("main.py", *args)


def read_log(run_dir):
    with open(Path(run_dir) / "log.csv") as handle:
        return list(csv.DictReader(handle))


def reported_prec1(stdout):
    """The value of the last ' * Prec@1 X Prec@5 Y' line, as the original printed it."""
    return float(re.findall(r"^ \* Prec@1 ([\d.]+) Prec@5 ([\d.]+)$", stdout, re.M)[-1][0])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The demo's generator at a tiny size: 10 classes, 4 training and 2 validation JPEGs each."""
    root = tmp_path_factory.mktemp("shapes")
    result = run_script("scripts/make_demo_data.py", root, "--size", 32, "--train-per-class", 4, "--val-per-class", 2)
    assert result.returncode == 0, result.stderr
    assert len(list(root.glob("train/*/*.jpg"))) == 40 and len(list(root.glob("val/*/*.jpg"))) == 20
    return root


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """Three epochs of eca_resnet18 on the tiny set (at this lr the loss falls steadily); the run directory."""
    run_dir = tmp_path_factory.mktemp("run")
    result = run_main(shapes, *TINY, "--lr", "0.005", "--epochs", "3", "--output-dir", run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_training_lowers_the_loss_and_leaves_a_run_directory(trained):
    run_dir, result = trained
    rows = read_log(run_dir)
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert {"checkpoint.pth.tar", "model_best.pth.tar", "log.csv"} <= set(os.listdir(run_dir))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir))
    assert re.search(r"Epoch: \[2\]\[4/5\]  loss [\d.]+ \([\d.]+\)  Prec@1 .* img/s  eta 0:00:00", result.stdout)

    checkpoint = load_checkpoint_file(run_dir / "checkpoint.pth.tar")
    assert checkpoint["epoch"] == 3 and checkpoint["arch"] == "eca_resnet18"
    assert not any(key.startswith("module.") for key in checkpoint["state_dict"])
    assert checkpoint["best_prec1"] == max(float(row["val_prec1"]) for row in rows)
    assert {"optimizer", "args", "rng", "scaler"} <= set(checkpoint)


def test_evaluate_prints_the_prec1_of_the_checkpoint(trained, shapes):
    run_dir, _ = trained
    result = run_main(shapes, "--evaluate", "--resume", run_dir / "checkpoint.pth.tar", "-b", "8", "-j", "0", "--image-size", "32")
    assert result.returncode == 0, result.stderr
    assert reported_prec1(result.stdout) == pytest.approx(float(read_log(run_dir)[-1]["val_prec1"]), abs=1e-3)


def test_resume_continues_at_the_next_epoch_with_its_learning_rate(trained, shapes, tmp_path):
    run_dir = tmp_path / "resumed"
    shutil.copytree(trained[0], run_dir)
    result = run_main(
        shapes, *TINY, "--lr", "0.005", "--lr-step", "2", "--lr-gamma", "0.5", "--epochs", "5",
        "--resume", run_dir / "checkpoint.pth.tar", "--output-dir", run_dir,
    )
    assert result.returncode == 0, result.stderr
    assert "=> resumed" in result.stdout and "at epoch 3" in result.stdout
    assert "Epoch: [0]" not in result.stdout and "Epoch: [3][0/5]" in result.stdout
    rows = read_log(run_dir)
    assert [(int(r["epoch"]), float(r["lr"])) for r in rows[3:]] == [(3, pytest.approx(0.0025)), (4, pytest.approx(0.00125))]
    assert load_checkpoint_file(run_dir / "checkpoint.pth.tar")["epoch"] == 5


def test_a_released_checkpoint_evaluates_with_no_ksize(shapes, tmp_path):
    torch.manual_seed(0)
    model = models.eca_resnet18(k_size="3557", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    released = {
        "epoch": 100,
        "arch": "resnet18",
        "state_dict": {"module." + key: value for key, value in model.state_dict().items()},
        "best_prec1": torch.tensor(71.5),
        "optimizer": optimizer.state_dict(),
    }
    path = tmp_path / "eca_resnet18_k3557.pth.tar"
    torch.save(released, path, _use_new_zipfile_serialization=False)

    result = run_main(shapes, "-a", "eca_resnet18", "--evaluate", "--resume", path, "-b", "10", "-j", "0", "--image-size", "32")
    assert result.returncode == 0, result.stderr
    assert 0 <= reported_prec1(result.stdout) <= 100
    assert "says arch 'resnet18' but its weights are eca_resnet18's" in result.stderr

    wrong_k = run_main(shapes, "--evaluate", "--resume", path, "--ksize", "3577", "-j", "0")
    assert wrong_k.returncode == 2
    errors = [line for line in wrong_k.stderr.splitlines() if line.startswith("main.py: error")]
    assert errors == [line for line in wrong_k.stderr.splitlines() if not line.startswith("warning:")]
    assert "the checkpoint has k=5 in layer3 where --ksize gives k=7; use --ksize 3557 or leave --ksize out" in errors[0]


def test_torchrun_trains_on_two_processes_with_one_checkpoint(shapes, tmp_path):
    result = run_script(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", 2,
        "main.py", shapes, *TINY, "--epochs", 1, "--output-dir", tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (gloo)" in result.stdout
    assert "=> weights identical on all 2 processes" in result.stdout
    assert result.stdout.count(" * Prec@1") == 1
    assert sorted(name for name in os.listdir(tmp_path) if name.endswith(".tar")) == ["checkpoint.pth.tar", "model_best.pth.tar"]
    assert len(read_log(tmp_path)) == 1
    assert load_checkpoint_file(tmp_path / "checkpoint.pth.tar")["epoch"] == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["DIR", "-a", "eca_resnet9"], "unknown model 'eca_resnet9'; choose one of: "),
        (["DIR", "--ksize", "35"], "--ksize 35: k_size '35' has 2 entries"),
        (["DIR", "-a", "resnet50", "--ksize", "3333"], "resnet50 has no ECA layers; leave --ksize out"),
        (["DIR", "--resume", "missing.pth.tar"], "--resume missing.pth.tar: no such file"),
        (["-b", "8"], "or --dummy for synthetic data"),
        (["DIR", "-b", "0"], "--batch-size must be at least 1"),
        (["DIR/nowhere", "--evaluate"], "data directory DIR/nowhere does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    argv = [arg.replace("DIR", str(tmp_path)) for arg in argv]
    assert main_module.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.replace("DIR", str(tmp_path)) in err


def test_dummy_data_trains_and_its_checkpoint_evaluates_without_num_classes(tmp_path, capsys):
    common = ["--dummy", "24", "--image-size", "32", "-b", "8", "-j", "0", "-p", "100"]
    assert main_module.main([*common, "-a", "eca_resnet18", "--num-classes", "7", "--epochs", "1", "--output-dir", str(tmp_path)]) == 0
    assert main_module.main([*common, "--evaluate", "--resume", str(tmp_path / "checkpoint.pth.tar")]) == 0
    out = capsys.readouterr().out
    assert out.count(" * Prec@1") == 2 and "=> eca_resnet18 (" in out
    assert load_checkpoint_file(tmp_path / "checkpoint.pth.tar")["state_dict"]["fc.weight"].shape == (7, 512)

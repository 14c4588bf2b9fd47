"""scripts/run_table.py as users run it: real main.py runs of two rows on a tiny ImageFolder, a
SIGKILL in the second row and the same command continuing, --collect, SLURM submission through a
stand-in sbatch, and bad input."""

import csv
import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, exit_status, run_script, start_script
from PIL import Image
from test_robustness import make_images

import models
from scripts.run_table import main as run_table_main
from utils.checkpoint import load_checkpoint_file
from utils.counting.complexity import count_parameters
from utils.paper.tables import PaperRow, registered_model_name

# 3 classes x 4 training images at batch 4: 3 steps an epoch, a step checkpoint after each but the last
MAIN_FLAGS = ["-j", "0", "-b", "4", "--image-size", "32", "--min-scale", "1", "-p", "1", "--lr", "0.01", "--checkpoint-every", "1"]
ROWS = [("resnet", "resnet18", "ResNet-18"), ("eca_net", "eca_resnet18", "ECA-Net-18")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("shapes"), train_per_class=4, val_per_class=2)


def table_args(data, out, *extra):
    """run_table.py's arguments for the two rows of the tiny table."""
    return ["sota", str(data), "--depth", "18", "--rows", "resnet", "eca_net",
            "--epochs", "1", "--out", str(out), *extra, "--", *MAIN_FLAGS]


def files(directory):
    """name -> (mtime, bytes) of every file in ``directory``."""
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(Path(directory).iterdir()) if path.is_file()}


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def continued(data, tmp_path_factory):
    """The table killed (SIGKILL, with its main.py) in the second row's second step, then the same command again;
    also the step of the checkpoint the kill left (1, or 2 where the second step's save was quicker than the kill)."""
    out = tmp_path_factory.mktemp("table")
    first = start_script("scripts/run_table.py", *table_args(data, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    lines, in_second_row = [], False
    try:
        for line in first.stdout:
            lines.append(line)
            in_second_row = in_second_row or line.startswith("=> row 2/2 ")
            if in_second_row and line.startswith("Epoch: [0][1/"):
                os.killpg(first.pid, signal.SIGKILL)
                break
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        first.wait()
    first_output = "".join(lines)
    assert in_second_row, first_output[-3000:]
    first_row = files(out / "runs" / "resnet" / "seed0")
    killed_at_step = load_checkpoint_file(out / "runs" / "eca_net" / "seed0" / "checkpoint_step.pth.tar")["step"]
    second = run_script("scripts/run_table.py", *table_args(data, out), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    return out, first_output, first_row, second, killed_at_step


def test_two_rows_make_the_table_in_markdown_csv_and_a_png_and_pdf_chart(continued, data):
    out, *_ = continued
    rows = read_csv(out / "table.csv")
    assert [(row["row"], row["model"], row["label"], row["status"], row["seeds"]) for row in rows] == [
        (key, arch, label, "done", "1") for key, arch, label in ROWS
    ]
    for row, (key, arch, _) in zip(rows, ROWS):
        log = read_csv(out / "runs" / key / "seed0" / "log.csv")
        assert len(log) == 1
        assert float(row["top1_mean"]) == pytest.approx(float(log[0]["val_prec1"]), abs=1e-4)
        assert float(row["top5_mean"]) == pytest.approx(float(log[0]["val_prec5"]), abs=1e-4)
        assert row["top1_std"] == ""
        assert int(row["params_exact"]) == count_parameters(models.create_model(arch, num_classes=3))
    assert rows[0]["paper_params"] == "11.148M" and rows[0]["paper_flops"] == "1.699G"  # the poster's ResNet-18
    assert int(rows[1]["params_exact"]) - int(rows[0]["params_exact"]) == 2 * (3 + 5 + 7 + 7)  # k = 3577, two blocks a stage
    markdown = (out / "table.md").read_text()
    assert markdown.startswith(f"# Table 3: comparison with the state of the art, ResNet-18, trained on {os.path.basename(data)}\n")
    assert "| row | model | Param. | FLOPs | Top-1 | Top-5 | runs | paper Param. | paper FLOPs | paper Top-1 | paper Top-5 |" in markdown
    top1 = f"{float(rows[1]['top1_mean']):.2f}"
    assert f"| ECA-Net-18 | `eca_resnet18` | 10.66M | 1.70G | {top1} |" in markdown
    with Image.open(out / "table.png") as image:
        assert (image.format, image.size) == ("PNG", (800, 600))
    assert (out / "table.pdf").read_bytes().startswith(b"%PDF-")


def test_a_killed_table_continues_skipping_finished_rows_and_resuming_the_unfinished_one(continued):
    out, first_output, first_row, second, killed_at_step = continued
    assert "=> row 1/2 resnet (resnet18) seed 0: training, 2 of 2 runs left, ETA after the first run" in first_output
    assert "=> row 2/2 eca_net (eca_resnet18) seed 0: training, 1 of 2 runs left, ETA 0:" in first_output
    assert "=> row 1/2 resnet (resnet18) seed 0: finished, skipped" in second.stdout
    assert "=> row 2/2 eca_net (eca_resnet18) seed 0: training, 1 of 1 runs left" in second.stdout
    assert killed_at_step in (1, 2)
    resumed = out / "runs" / "eca_net" / "seed0" / "checkpoint_step.pth.tar"
    assert f"=> resumed {resumed} at epoch 0, step {killed_at_step}/3" in second.stdout
    assert files(out / "runs" / "resnet" / "seed0") == first_row


def test_collect_builds_the_same_table_and_chart_from_the_run_directories_and_trains_nothing(continued, data, capsys):
    out, *_ = continued
    written = {name: (out / name).read_bytes() for name in ("table.md", "table.csv", "table.png", "table.pdf")}
    runs = {key: files(out / "runs" / key / "seed0") for key, _, _ in ROWS}
    for name in written:
        (out / name).unlink()
    assert run_table_main(table_args(data, out, "--collect")) == 0
    assert "Epoch:" not in capsys.readouterr().out
    assert {name: (out / name).read_bytes() for name in written} == written
    assert {key: files(out / "runs" / key / "seed0") for key, _, _ in ROWS} == runs


FAKE_SBATCH = """#!/bin/sh
# sbatch --parsable: record the submission, answer "<job id>;<cluster>"
echo "ARCH=$ARCH RUN_DIR=$RUN_DIR DATA=$DATA $*" >> "$SBATCH_LOG"
echo "$(wc -l < "$SBATCH_LOG");cluster"
"""


def test_slurm_submits_one_job_per_row_and_seed_once(data, tmp_path, monkeypatch, capsys):
    bin_dir, out, log = tmp_path / "bin", tmp_path / "table", tmp_path / "sbatch.log"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(log))
    argv = ["kernel-size", str(data), "--depth", "18", "--rows", "k3", "adaptive", "--epochs", "2", "--seeds", "1", "2",
            "--out", str(out), "--launcher", "slurm", "--", "-b", "4"]
    assert run_table_main(argv) == 0
    submissions = log.read_text().splitlines()
    script = ROOT / "scripts" / "slurm" / "train.sbatch"
    expected = []
    for key, ksize in (("k3", "3333"), ("adaptive", "adaptive")):
        for seed in (1, 2):
            run_dir = out / "runs" / key / f"seed{seed}"
            expected.append(
                f"ARCH=eca_resnet18 RUN_DIR={run_dir} DATA={data} --parsable --job-name eca-kernel-size-{key}-s{seed} "
                f"--output {run_dir}/slurm-%j.out {script} --seed {seed} --ksize {ksize} --epochs 2 -b 4"
            )
    assert submissions == expected
    printed = capsys.readouterr().out
    assert f"=> k3 seed 1: submitted as job 1 ({out / 'runs' / 'k3' / 'seed1'})" in printed
    assert (f"=> when the jobs are done: python scripts/run_table.py kernel-size {data} --depth 18 --out {out} "
            "--rows k3 adaptive --seeds 1 2 --epochs 2 --collect") in printed
    assert [row["status"] for row in read_csv(out / "table.csv")] == ["pending", "pending"]
    assert (out / "table.png").exists() and (out / "table.pdf").exists()  # Figure 4, saying that no run has finished

    assert run_table_main(argv) == 0
    assert log.read_text().splitlines() == expected
    assert "=> adaptive seed 2: submitted before as job 4; skipped" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["table9", "{data}"], "unknown table 'table9'; choose one of: variants, sota, kernel-size, mobilenet"),
        (["sota", "{data}/missing"], "data directory {data}/missing does not exist"),
        (["sota", "{data}/train"], "{data}/train has no train/ folder"),
        (["sota", "{data}", "--depth", "18", "--rows", "cbam"], "sota at ResNet-18 has no row 'cbam'; its rows: resnet, senet, eca_net"),
        (["sota", "{data}", "--rows", "a2_nets"], "row a2_nets: the paper's numbers are copied from its peers; there is no model"),
        (["variants", "{data}", "--", "--seed", "3"], "-- --seed: run_table.py sets it for every row"),
        # --output-dir, abbreviated as argparse allows
        (["variants", "{data}", "--", "--output=elsewhere"], "-- --output: run_table.py sets it for every row"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, data, capsys):
    status = exit_status(run_table_main, [arg.format(data=data) for arg in argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"run_table.py: error: {message.format(data=data)}"), err


def test_a_row_whose_model_is_not_registered_says_so_in_one_line():
    row = PaperRow("se_var9", "SE-Var9", "se_var9_resnet{depth}")
    with pytest.raises(ValueError, match=r"^row se_var9: model se_var9_resnet18 is not registered$"):
        registered_model_name(row, 18)

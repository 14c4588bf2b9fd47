"""Long runs on shared clusters, as they really happen: real signals and kill -9 sent to real
main.py processes, torchrun restarting a killed worker, a file-size limit making a save fail.

Every interrupted run is continued with ``--resume auto`` (the same command line as its first
start) and must end with bitwise the weights and optimizer state of an uninterrupted run, and
the same log.csv apart from the timing columns.
"""

import csv
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, run_script, script_env, start_script
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_robustness import make_images

import main as main_module
from utils.checkpoint import load_checkpoint_file, save_checkpoint
from utils.distributed import DistributedContext, PeerFailedError, peer_loss_reported
from utils.longrun.preemption import EXIT_STOPPED
from utils.longrun.run_log import CSV_FIELDS, RunLog

STEPS_PER_EPOCH = 6  # 24 training images, batch 4
EPOCHS = 2
RUN = [
    "-a", "eca_mobilenet_v2", "--image-size", "32", "--min-scale", "0.3", "-b", "4", "-p", "1", "--seed", "0",
    "--lr", "0.01", "--epochs", EPOCHS, "--resume", "auto", "--checkpoint-every", "4",
]
TIMING_COLUMNS = {"train_images_per_s", "epoch_seconds"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three classes of the demo's shapes, 8 training and 2 validation JPEGs each, 32 x 32."""
    return make_images(tmp_path_factory.mktemp("shapes"), train_per_class=8, val_per_class=2)


def command(data, run_dir, workers=0, extra=()):
    return [str(data), *map(str, RUN), "-j", str(workers), "--output-dir", str(run_dir), *map(str, extra)]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """The run nothing interrupts (``--resume auto`` in an empty directory starts it fresh)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    assert main_module.main(command(data, run_dir)) == 0
    return run_dir


def csv_rows(run_dir):
    """log.csv without the timing columns, which no two runs share."""
    with open(Path(run_dir) / "log.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def assert_same_run(expected_dir, actual_dir, epochs=EPOCHS):
    """Bitwise the same weights, optimizer state and position; the same log, each epoch once."""
    expected = load_checkpoint_file(Path(expected_dir) / "checkpoint.pth.tar")
    actual = load_checkpoint_file(Path(actual_dir) / "checkpoint.pth.tar")
    assert (actual["epoch"], actual["best_prec1"]) == (expected["epoch"], expected["best_prec1"])
    assert [k for k in expected["state_dict"] if not torch.equal(expected["state_dict"][k], actual["state_dict"][k])] == []
    expected_momentum = [s["momentum_buffer"] for s in expected["optimizer"]["state"].values()]
    actual_momentum = [s["momentum_buffer"] for s in actual["optimizer"]["state"].values()]
    assert len(actual_momentum) == len(expected_momentum)
    assert all(torch.equal(a, b) for a, b in zip(actual_momentum, expected_momentum))
    assert csv_rows(actual_dir) == csv_rows(expected_dir)
    assert [int(row["epoch"]) for row in csv_rows(actual_dir)] == list(range(epochs))
    assert not any(name.endswith(".tmp") for name in os.listdir(actual_dir))


def tensorboard_steps(run_dir, tag="train/loss"):
    """The epochs TensorBoard shows for a tag, after it has purged what resumed runs replaced."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def stop_with_signals(argv, at_line, first, second):
    """Start main.py, send ``first`` after its ``at_line``-th progress line, then ``second``
    every few milliseconds until it exits (so some arrive while it writes its checkpoint);
    returns (exit code, output)."""
    process = start_script("main.py", *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []

    def keep_signalling():
        while process.poll() is None:
            process.send_signal(second)
            time.sleep(0.005)

    storm = threading.Thread(target=keep_signalling)
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Epoch:") and sum(seen.startswith("Epoch:") for seen in lines) == at_line:
                process.send_signal(first)
                storm.start()
        code = process.wait(timeout=120)
    finally:
        process.kill()
        if storm.is_alive():
            storm.join()
    return code, "".join(lines) + process.stderr.read()


def test_signals_at_random_steps_then_resume_auto_end_bitwise_as_the_uninterrupted_run(data, uninterrupted, tmp_path):
    """SIGUSR1 in the first epoch, SIGTERM in the second, each at a random step and each followed
    by a stream of the other signal until the process exits (so some arrive while it writes its
    checkpoint); -j 3, then -j 0 for the rest."""
    run_dir = tmp_path / "run"
    picks = random.Random()
    first_stop = picks.randrange(1, 3)  # progress lines; the run may be steps ahead of its reader
    second_stop = picks.randrange(1, 3)
    where = f"(stops after progress lines {first_stop} and {second_stop})"

    code, out = stop_with_signals(command(data, run_dir, workers=3), first_stop, signal.SIGUSR1, signal.SIGTERM)
    assert code == EXIT_STOPPED, out + where
    stopped = [line for line in out.splitlines() if line.startswith("=> stopped")]
    # Both signals may be pending when Python runs its handlers (lowest number first): either names the stop.
    assert len(stopped) == 1 and re.match(r"=> stopped by SIG(USR1|TERM) in epoch 0 after step [1-6]/6; ", stopped[0]), out
    assert f"saved {run_dir / 'checkpoint_step.pth.tar'}; continue with --resume auto (exit status 75)" in stopped[0]
    assert "Traceback" not in out
    saved = load_checkpoint_file(run_dir / "checkpoint_step.pth.tar")
    assert saved["epoch"] == 0 and 0 < saved["step"] <= STEPS_PER_EPOCH

    code, out = stop_with_signals(command(data, run_dir), STEPS_PER_EPOCH - saved["step"] + second_stop, signal.SIGTERM, signal.SIGUSR1)
    assert code == EXIT_STOPPED, out + where
    assert f"=> resumed {run_dir / 'checkpoint_step.pth.tar'} at epoch 0, step {saved['step']}/{STEPS_PER_EPOCH}" in out
    assert re.search(r"^=> stopped by SIG(USR1|TERM) in epoch 1 after step ", out, re.M), out + where

    assert main_module.main(command(data, run_dir)) == 0
    assert_same_run(uninterrupted, run_dir)
    assert tensorboard_steps(run_dir) == list(range(EPOCHS))
    assert not (run_dir / "checkpoint_step.pth.tar").exists()


def test_kill_9_after_a_mid_epoch_checkpoint_then_resume_auto_ends_bitwise_as_the_uninterrupted_run(data, uninterrupted, tmp_path, capsys):
    run_dir = tmp_path / "run"
    process = start_script("main.py", *command(data, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and not (run_dir / "checkpoint_step.pth.tar").exists():
            time.sleep(0.001)
        assert process.poll() is None, "the run ended before its first mid-epoch checkpoint"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    saved = load_checkpoint_file(run_dir / "checkpoint_step.pth.tar")  # the first, or on a busy machine a later one
    stale = run_dir / ".checkpoint_step.pth.tar.k1ll3d_9.tmp"
    stale.write_bytes(b"the first bytes of a save that was killed")

    assert main_module.main(command(data, run_dir)) == 0
    out = capsys.readouterr().out
    assert f"=> removed {stale}, left by a save that was interrupted" in out
    assert f"=> resumed {run_dir / 'checkpoint_step.pth.tar'} at epoch {saved['epoch']}, step {saved['step']}/{STEPS_PER_EPOCH}" in out
    assert_same_run(uninterrupted, run_dir)
    assert tensorboard_steps(run_dir) == list(range(EPOCHS))


def test_a_checkpoint_written_before_the_lr_schedule_was_torchs_resumes_as_the_run_that_never_stopped(data, tmp_path):
    """main.py's checkpoint.pth.tar as it was written before its schedule became torch's StepLR: the
    epoch's lr from the closed form in the optimizer state and no ``initial_lr``. MobileNetV2's lr
    falls every epoch, so a resume that started its schedule from the stored lr would drift."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main_module.main(command(data, straight, extra=["--epochs", 3])) == 0
    assert main_module.main(command(data, stopped)) == 0
    path = stopped / "checkpoint.pth.tar"
    checkpoint = load_checkpoint_file(path)
    for group in checkpoint["optimizer"]["param_groups"]:
        del group["initial_lr"]
        group["lr"] = 0.01 * 0.98 ** (EPOCHS - 1)
    save_checkpoint(checkpoint, path)
    assert main_module.main(command(data, stopped, extra=["--epochs", 3])) == 0
    assert_same_run(straight, stopped, epochs=3)


def test_a_run_resumed_in_the_second_its_killed_predecessor_started_keeps_its_tensorboard_curves(tmp_path):
    """TensorBoard reads event files in name order (creation second, host, pid): the killed run's
    file, stamped this second or later with a pid that sorts after ours, must not come after
    the resumed run's, or its purge at step 0 hides everything the resumed run logged."""
    killed = RunLog(str(tmp_path))  # a fresh run, killed before its first epoch ended
    killed.close()
    (old_name,) = [name for name in os.listdir(tmp_path) if name.startswith("events.")]
    host_pid_uid = old_name.split(".", 4)[4]  # events.out.tfevents.<second>.<host>.<pid>.<uid>
    host, _, uid = host_pid_uid.rsplit(".", 2)
    later = f"events.out.tfevents.{int(time.time()) + 1:010d}.{host}.999999999.{uid}"
    os.rename(tmp_path / old_name, tmp_path / later)

    resumed = RunLog(str(tmp_path))
    for epoch in range(EPOCHS):
        resumed.log_epoch({field: float(epoch) for field in CSV_FIELDS})
    resumed.close()
    assert sorted(name for name in os.listdir(tmp_path) if name.startswith("events."))[0] == later
    assert tensorboard_steps(tmp_path) == list(range(EPOCHS))


def test_the_number_of_workers_does_not_change_the_result(data, uninterrupted, tmp_path):
    """Each sample's augmentation is seeded from (seed, epoch, index): -j 3 trains as -j 0."""
    assert main_module.main(command(data, tmp_path, workers=3)) == 0
    assert_same_run(uninterrupted, tmp_path)


def test_resume_auto_with_pretrained_starts_from_the_weights_once_then_continues_the_run(data, uninterrupted, tmp_path, capsys):
    """Fine-tuning under a requeueing scheduler: one command line, --pretrained only counts until
    the run has a checkpoint of its own."""
    weights = uninterrupted / "model_best.pth.tar"
    argv = command(data, tmp_path, extra=["--pretrained", weights, "--epochs", 1])
    assert main_module.main(argv) == 0
    assert "--resume auto found" not in capsys.readouterr().out
    assert main_module.main([*argv, "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"=> --resume auto found {tmp_path / 'checkpoint.pth.tar'}; --pretrained {weights} is only for the first start" in out
    assert f"=> resumed {tmp_path / 'checkpoint.pth.tar'} at epoch 1" in out


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))


def test_a_save_that_fails_for_lack_of_space_keeps_the_previous_checkpoint(data, uninterrupted, tmp_path, capsys):
    """Files may not grow past 1 MiB (as on a full disk): the epoch's save fails with one line and
    exit status 1; the previous checkpoints stay byte for byte, no temporary file is left, and
    the run continues from them once there is space."""
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    before = {name: (run_dir / name).read_bytes() for name in ("checkpoint.pth.tar", "model_best.pth.tar")}
    argv = command(data, run_dir, extra=["--epochs", 3, "--checkpoint-every", 1000])
    result = run_script("main.py", *argv, preexec_fn=_limit_file_size)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert errors == [
        f"main.py: error: cannot write {run_dir / 'checkpoint.pth.tar'}: File too large; "
        "the previous checkpoint.pth.tar, if any, is unchanged"
    ], result.stderr
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert not any(name.endswith(".tmp") for name in os.listdir(run_dir))

    assert main_module.main(argv) == 0
    assert "=> resumed " in capsys.readouterr().out
    assert [int(row["epoch"]) for row in csv_rows(run_dir)] == [0, 1, 2]
    assert csv_rows(run_dir)[:2] == csv_rows(uninterrupted)
    assert load_checkpoint_file(run_dir / "checkpoint.pth.tar")["epoch"] == 3


def _children(pid):
    """The processes whose parent is ``pid``, with their torchrun RANK."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                with open(f"/proc/{entry}/environ", "rb") as handle:
                    env = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
                found[int(entry)] = int(env.get(b"RANK", b"-1"))
        except (OSError, ValueError, IndexError):
            continue
    return found


TWO_PROCESSES = ["-b", 8, "--checkpoint-every", 2]
"""4 images per process and step (MobileNetV2's BatchNorms see 1 x 1 maps: 2 would diverge), 3 steps per epoch."""


def torchrun(data, run_dir, launcher_flags=()):
    return ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *launcher_flags,
            "main.py", *command(data, run_dir, extra=TWO_PROCESSES)]


def run_torchrun(argv, kill_a_worker_when=None):
    """torchrun's (exit code, output); with ``kill_a_worker_when``, rank 0's worker is killed with
    SIGKILL as soon as that condition holds. Whatever happens, no process of it outlives the test."""
    launcher = start_script(*argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if kill_a_worker_when is not None:
            while launcher.poll() is None and not kill_a_worker_when():
                time.sleep(0.001)
            workers = {rank: pid for pid, rank in _children(launcher.pid).items()}
            assert launcher.poll() is None and set(workers) == {0, 1}, "the run ended before the moment to kill a worker"
            os.kill(workers[0], signal.SIGKILL)
        out, _ = launcher.communicate(timeout=300)
        return launcher.returncode, out
    finally:
        try:
            os.killpg(launcher.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        launcher.wait()


@pytest.fixture(scope="module")
def two_processes_uninterrupted(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("two-processes")
    code, out = run_torchrun(torchrun(data, run_dir))
    assert code == 0, out[-3000:]
    return run_dir


def test_torchrun_restarts_after_kill_9_of_a_worker_and_ends_as_an_uninterrupted_two_process_run(
    data, two_processes_uninterrupted, tmp_path
):
    elastic = tmp_path / "elastic"
    elastic_flags = ["--max-restarts", "3", "--monitor-interval", "0.1"]
    code, out = run_torchrun(torchrun(data, elastic, elastic_flags), lambda: (elastic / "checkpoint_step.pth.tar").exists())
    assert code == 0, out[-3000:]
    assert "failed (exitcode: -9) local_rank: 0" in out
    assert "main.py: error: process 1 lost contact with another process of the run (" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert out.count("=> resumed ") == 1 and "checkpoint_step.pth.tar at epoch " in out, out[-3000:]
    assert "=> weights identical on all 2 processes" in out
    assert_same_run(two_processes_uninterrupted, elastic)
    assert tensorboard_steps(elastic) == list(range(EPOCHS))


def test_only_a_failed_collective_becomes_the_one_line_error_of_a_lost_peer():
    """NCCL reports a dead peer as DistBackendError (gloo as above); any other error keeps its
    traceback, and so does everything in a single-process run."""
    rank_1 = DistributedContext(enabled=True, rank=1, world_size=2, backend="nccl")
    lost = r"^process 1 lost contact with another process of the run \(NCCL error: remote process exited\); run the same"
    with pytest.raises(PeerFailedError, match=lost):
        with peer_loss_reported(rank_1):
            raise torch.distributed.DistBackendError("NCCL error: remote process exited. Last error:\nsocket closed")
    with pytest.raises(RuntimeError, match="^shapes cannot be multiplied$"):
        with peer_loss_reported(rank_1):
            raise RuntimeError("shapes cannot be multiplied")
    with pytest.raises(torch.distributed.DistBackendError):
        with peer_loss_reported(DistributedContext()):
            raise torch.distributed.DistBackendError("NCCL error: remote process exited")


FAKE_SRUN = """#!/bin/sh
# srun on this one node: drop srun's own options and run the task
while [ "${1#--}" != "$1" ]; do shift; done
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/sh
# the allocation is this host; record what else is asked (requeue)
if [ "$1" = show ]; then echo localhost; else echo "$*" >> "$SCONTROL_LOG"; fi
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_slurm_script_stops_on_usr1_requeues_and_the_requeued_job_finishes_the_run(data, two_processes_uninterrupted, tmp_path):
    """scripts/slurm/train.sbatch as SLURM runs it, with srun and scontrol stood in for by
    scripts, on 2 processes: USR1 to the batch shell stops both after the same step with one
    checkpoint and requeues the job; the requeued job (the same script) ends bitwise where an
    uninterrupted run ends."""
    bin_dir, run_dir = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = script_env(
        PATH=f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}", SCONTROL_LOG=str(tmp_path / "scontrol.log"),
        SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="node1", SLURM_JOB_NUM_NODES="1", GPUS_PER_NODE="2",
        MASTER_PORT=str(free_port()), DATA=str(data), ARCH="eca_mobilenet_v2", RUN_DIR=str(run_dir), CHECKPOINT_EVERY="2",
    )
    flags = [str(arg) for arg in [*RUN[2:RUN.index("--resume")], "-j", 0, "-b", 8]]

    def job(signal_after_line=None):
        script = subprocess.Popen(["bash", "scripts/slurm/train.sbatch", *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines = []
        try:
            for line in script.stdout:
                lines.append(line)
                if line.startswith("Epoch:") and sum(seen.startswith("Epoch:") for seen in lines) == signal_after_line:
                    script.send_signal(signal.SIGUSR1)
            return script.wait(timeout=300), "".join(lines)
        finally:
            try:
                os.killpg(script.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            script.wait()

    code, out = job(signal_after_line=1)
    assert code != 0, out[-3000:]
    assert out.count("=> stopped by SIGTERM in epoch ") == 1, out[-3000:]
    assert not any(line.startswith("[rank") for line in out.splitlines()), out[-3000:]  # no worker failed
    assert load_checkpoint_file(run_dir / "checkpoint_step.pth.tar")["step"] >= 1
    assert "requeueing job 4242" in out
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"

    code, out = job()
    assert code == 0, out[-3000:]
    assert f"=> resumed {run_dir / 'checkpoint_step.pth.tar'} at epoch " in out
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    assert_same_run(two_processes_uninterrupted, run_dir)

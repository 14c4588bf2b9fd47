"""Per-epoch records in the run directory: ``log.csv`` for plotting, TensorBoard scalars for browsing."""

import csv
import glob
import io
import os
import time
from typing import Dict, List, Sequence

from utils.checkpoint import atomic_write

__all__ = ["RunLog", "CSV_FIELDS"]

# TensorBoard reads a directory's event files in name order and applies each file's purge there;
# a name starts with the creation second, then host and pid, so two files from the same second
# sort by pid (as strings). A run resumed within a second of its killed predecessor's start could
# sort first, and the predecessor's purge at step 0 would then hide the resumed run's curves, so
# a new file waits (at most this long) for a later second.
MAX_WAIT_FOR_A_LATER_SECOND = 2.0

CSV_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "train_prec1",
    "train_prec5",
    "train_images_per_s",
    "val_loss",
    "val_prec1",
    "val_prec5",
    "epoch_seconds",
)


class RunLog:
    """Writes one row per epoch to ``log.csv`` and the same numbers to TensorBoard.

    ``fields`` are the columns, the first being the epoch: main.py's :data:`CSV_FIELDS` by
    default; detect.py passes its own. ``train_x`` / ``val_x`` appear in TensorBoard as ``train/x``.

    A run continuing at ``first_epoch`` keeps the CSV rows of the epochs before it and drops
    any later ones (an interrupted run may have logged an epoch whose checkpoint it never
    saved: that epoch runs again and is logged once); TensorBoard is told to hide earlier
    events from ``first_epoch`` on (``purge_step``), so its curves never show a step twice.
    A fresh run (``first_epoch`` 0) starts a new CSV rather than mixing two runs' rows.

    The CSV is rewritten whole through an atomic rename, so a kill never leaves half a row.
    """

    def __init__(self, run_dir: str, first_epoch: int = 0, fields: Sequence[str] = CSV_FIELDS) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only rank 0 logs

        self.fields = tuple(fields)
        self.csv_path = os.path.join(run_dir, "log.csv")
        self.rows: List[Dict[str, str]] = []
        if first_epoch and os.path.exists(self.csv_path):
            with open(self.csv_path, newline="") as handle:
                self.rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) < first_epoch]
        self._write_csv()
        _wait_until_after_the_last_event_file(run_dir, MAX_WAIT_FOR_A_LATER_SECOND)
        self.writer = SummaryWriter(log_dir=run_dir, purge_step=first_epoch)

    def _write_csv(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.csv_path, lambda handle: handle.write(text.getvalue().encode()))

    def log_epoch(self, row: Dict[str, float]) -> None:
        self.rows.append({field: row[field] for field in self.fields})
        self._write_csv()
        epoch = int(row["epoch"])
        for field in self.fields[1:]:
            split, _, name = field.partition("_") if field.startswith(("train_", "val_")) else ("", "", field)
            self.writer.add_scalar(f"{split}/{name}" if split else name, row[field], epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _wait_until_after_the_last_event_file(run_dir: str, max_wait: float) -> None:
    """Sleep until ``int(time.time())`` exceeds the creation second of every event file in
    ``run_dir`` (see :class:`RunLog`); a file stamped further ahead (a skewed clock) is not waited for."""
    files = glob.glob(os.path.join(glob.escape(run_dir), "events.out.tfevents.*"))
    stamps = (os.path.basename(path).split(".")[3] for path in files)
    newest = max((int(stamp) for stamp in stamps if stamp.isdigit()), default=None)
    if newest is None:
        return
    wait = newest + 1 - time.time()
    if 0 < wait <= max_wait:
        time.sleep(wait)

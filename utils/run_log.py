"""Per-epoch records in the run directory: ``log.csv`` for plotting, TensorBoard scalars for browsing."""

import csv
import os
from typing import Dict

__all__ = ["RunLog", "CSV_FIELDS"]

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

    A resumed run (``append=True``) continues the existing CSV; a fresh run in a reused
    directory starts a new one rather than mixing two runs' rows.
    """

    def __init__(self, run_dir: str, append: bool = False) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and only rank 0 logs

        self.csv_path = os.path.join(run_dir, "log.csv")
        if not append and os.path.exists(self.csv_path):
            os.unlink(self.csv_path)
        self.writer = SummaryWriter(log_dir=run_dir)

    def log_epoch(self, row: Dict[str, float]) -> None:
        new_file = not os.path.exists(self.csv_path)
        with open(self.csv_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            if new_file:
                writer.writeheader()
            writer.writerow({field: row[field] for field in CSV_FIELDS})
        epoch = int(row["epoch"])
        for field in CSV_FIELDS[1:]:
            split, _, name = field.partition("_") if field.startswith(("train_", "val_")) else ("", "", field)
            self.writer.add_scalar(f"{split}/{name}" if split else name, row[field], epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

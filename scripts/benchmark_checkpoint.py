"""Time what the checkpoint integrity checks cost, on large files saved by the project's own save function.

    python scripts/benchmark_checkpoint.py                      # ECA-ResNet-152 and Mask R-CNN ECA-R-101, in a temporary folder
    python scripts/benchmark_checkpoint.py --repeats 7 --dir /scratch

Each file holds random-init weights and an SGD momentum buffer per parameter, as main.py's and
detect.py's checkpoints do. Per file, the median of ``--repeats`` runs, the file in the page
cache (the worst case for the checks' share: a read from disk costs the same with or without
them): ``torch.load`` alone against ``utils.checkpoint.load_checkpoint_file`` (CRC-32 of every
record, the load, the NaN/infinity and variance pass), each of the two checks alone, the save
with and without the SHA-256 of the tensor data, and the SHA-256 that verification recomputes.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # noqa: E402
from models.detection import create_detector  # noqa: E402
from utils.checkpoint import atomic_write, load_checkpoint_file, save_checkpoint  # noqa: E402
from utils.checkpoint.integrity import check_archive, implausible_tensor, tensor_digest  # noqa: E402
from utils.console import OneLineErrorParser  # noqa: E402

MODELS: Dict[str, Callable[[], torch.nn.Module]] = {
    "eca_resnet152": lambda: models.create_model("eca_resnet152"),
    "maskrcnn_eca_resnet101_fpn": lambda: create_detector("maskrcnn_eca_resnet101_fpn"),
}


def training_state(arch: str) -> Dict[str, object]:
    """What the training scripts save: the weights and an optimizer with a momentum buffer per parameter."""
    torch.manual_seed(0)
    model = MODELS[arch]()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    return {"arch": arch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1}


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(arch: str, folder: Path, repeats: int) -> str:
    """One line of timings for ``arch``'s checkpoint."""
    state = training_state(arch)
    path = folder / f"{arch}.pth.tar"
    plain_save = median_seconds(lambda: atomic_write(path, lambda handle: torch.save(state, handle)), repeats)
    save = median_seconds(lambda: save_checkpoint(state, path), repeats)
    plain = median_seconds(lambda: torch.load(path, map_location="cpu", weights_only=True), repeats)
    checked = median_seconds(lambda: load_checkpoint_file(path), repeats)
    crc = median_seconds(lambda: check_archive(str(path)), repeats)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    values = median_seconds(lambda: implausible_tensor(loaded), repeats)
    digest = median_seconds(lambda: tensor_digest(loaded), repeats)
    return (
        f"{arch}: {path.stat().st_size / 2**20:.0f} MiB; load {plain:.3f} s, checked load {checked:.3f} s "
        f"(x{checked / plain:.2f}: CRC-32 {crc:.3f} s, NaN/variance pass {values:.3f} s); save {plain_save:.3f} s, "
        f"with SHA-256 {save:.3f} s (x{save / plain_save:.2f}); verify's SHA-256 {digest:.3f} s"
    )


def main() -> int:
    parser = OneLineErrorParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each measurement (the median is reported)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temporary folder)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for arch in MODELS:
            print(measure(arch, Path(folder), args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

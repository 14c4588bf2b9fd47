"""Time the data pipelines: the original PIL one against the fast uint8 one, in the same run.

    python scripts/benchmark_data.py                        # makes 300 ImageNet-like JPEGs in a temporary folder
    python scripts/benchmark_data.py --data /data/imagenet/val --json data.json
    python scripts/benchmark_data.py --make /tmp/jpegs      # keeps the made set, as /tmp/jpegs/{train,val}

Per worker process: one process, one thread (as a DataLoader worker), each sample as a worker
makes it (read the file, decode, crop/resize, flip, and for PIL ToTensor + Normalize), old and
new in alternating chunks of images so that drift in the machine's speed hits both alike; the
``decode`` row is the decode alone (PIL open + convert against utils.data.decode's codec, TorchCodec
or else torchvision.io, with its PIL fallback; the setup line names the codec). Then the whole
DataLoader with ``-j`` workers, old and new alternating epochs, and the bytes of one batch. With
CUDA, the ``--decode-device cuda`` path as well: the loader whose main process decodes each
batch with the codec's batched nvJPEG decode, against the fast CPU loader plus the copy and
normalisation on the GPU; and checks that the GPU's crops and normalisation match the CPU's.

The made set has ImageNet's make-up: sizes around 400 x 350 (mostly 4:3 landscape, some
portrait and square), JPEG quality 90 with texture and shapes so that files weigh what
ImageNet's do, 3% grayscale, 1% CMYK, 1% progressive and one PNG named .JPEG.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.console import OneLineErrorParser  # noqa: E402
from utils.data.datasets import SkippingImageFolder, image_folder  # noqa: E402
from utils.data.decode import IMAGE_CODEC, EncodedCrop, decode_jpegs, decode_on_device, decode_rgb, read_rgb  # noqa: E402
from utils.data.loaders import build_loader, start_epoch  # noqa: E402
from utils.distributed import DistributedContext  # noqa: E402
from utils.training.classification import model_input  # noqa: E402

CLASSES = 4
PIPELINES = ("pil", "fast")  # old, new
CHUNK = 25  # images per turn when old and new alternate


def make_images(root: Path, count: int, seed: int = 0) -> None:
    """``count`` ImageNet-like JPEGs in ``root/<class>/``."""
    rng = np.random.default_rng(seed)
    odd = {index: kind for kind, indices in (("gray", range(5, count, 33)), ("cmyk", range(17, count, 100)),
                                             ("progressive", range(41, count, 100)), ("png", [min(3, count - 1)]))
           for index in indices}
    for index in range(count):
        long_side = int(np.clip(rng.normal(440, 90), 160, 900))
        aspect = rng.choice([4 / 3, 3 / 2, 1.0, 3 / 4, 2 / 3], p=[0.6, 0.12, 0.08, 0.15, 0.05])
        width, height = (long_side, int(long_side / aspect)) if aspect >= 1 else (int(long_side * aspect), long_side)
        image = _textured(rng, width, height)
        folder = root / f"class{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        path, kind = folder / f"{index:05d}.JPEG", odd.get(index)
        if kind == "png":
            image.save(path, "PNG")
        elif kind == "progressive":
            image.save(path, "JPEG", quality=90, progressive=True)
        else:
            image.convert({"gray": "L", "cmyk": "CMYK"}.get(kind, "RGB")).save(path, "JPEG", quality=90)


def _textured(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour fields, a few solid shapes and pixel noise."""
    cells = rng.integers(0, 256, (height // 12 + 2, width // 12 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(cells).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(10, max(11, min(width, height) // 2)))
        draw.ellipse([x, y, x + size, y + size], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noise = rng.normal(0, 18, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def interleaved(functions: Dict[str, Callable[[int], object]], count: int, seconds: float) -> Dict[str, float]:
    """Images per second of each function of an image index, taking turns of CHUNK images
    until each has run ``seconds`` (at least one pass over the images)."""
    elapsed = {name: 0.0 for name in functions}
    done = {name: 0 for name in functions}
    start = 0
    while min(elapsed.values()) < seconds or min(done.values()) < count:
        indices = [(start + i) % count for i in range(CHUNK)]
        for name, function in functions.items():
            began = time.perf_counter()
            for index in indices:
                function(index)
            elapsed[name] += time.perf_counter() - began
            done[name] += len(indices)
        start += CHUNK
    return {name: done[name] / elapsed[name] for name in functions}


def pil_decode(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


class Repeated(Dataset):
    """The dataset ``length`` samples long, going round it: an epoch long enough for every
    worker to make many batches, without making more files."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.dataset[index % len(self.dataset)]


def loader_rate(loader, train: bool, device: Optional[torch.device] = None) -> Tuple[float, int]:
    """(images per second of one epoch, from asking for the first batch to the last; the bytes
    of one batch). With ``device``, batches go through model_input there, as in training."""
    if train:
        start_epoch(loader, 0)
    images, batch_bytes = 0, 0
    began = time.perf_counter()
    for batch, targets, _ in loader:
        if device is not None:
            model_input(batch, device, True)
        batch_bytes = batch_bytes or batch.numel() * batch.element_size()
        images += len(targets)
    if device is not None:
        synchronize(device)
    return images / (time.perf_counter() - began), batch_bytes


def alternating(
    loaders: Dict[str, object], train: bool, epochs: int, device: Optional[torch.device] = None
) -> Dict[str, Tuple[float, int]]:
    """Each loader's median images/s over ``epochs`` epochs taken in turns, after one epoch each
    that starts its (persistent) workers; and its bytes per batch."""
    for loader in loaders.values():
        loader_rate(loader, train, device)
    rates: Dict[str, List[float]] = {name: [] for name in loaders}
    batch_bytes: Dict[str, int] = {}
    for _ in range(epochs):
        for name, loader in loaders.items():
            rate, batch_bytes[name] = loader_rate(loader, train, device)
            rates[name].append(rate)
    return {name: (statistics.median(rates[name]), batch_bytes[name]) for name in loaders}


def row(name: str, old: Optional[float], new: float, **extra) -> Dict:
    ratio = new / old if old else None
    print(f"| {name} | {old or 0:.0f} | {new:.0f} | {ratio or 0:.2f} | {extra.get('note', '')} |", flush=True)
    return {"row": name, "old_images_per_s": old, "new_images_per_s": new, "new_vs_old": ratio, **extra}


def sampled(folder: str, train: bool, size: int, pipeline: str, images: int) -> SkippingImageFolder:
    """The folder as :func:`image_folder` gives it, cut to ``images`` files spread evenly over it."""
    dataset = image_folder(folder, train, size, pipeline=pipeline)
    dataset.samples = dataset.samples[:: max(1, len(dataset.samples) // images)][:images]
    return dataset


def per_process_rows(folder: str, images: int, size: int, seconds: float) -> List[Dict]:
    torch.set_num_threads(1)
    train = {pipeline: sampled(folder, True, size, pipeline, images) for pipeline in PIPELINES}
    val = {pipeline: sampled(folder, False, size, pipeline, images) for pipeline in PIPELINES}
    paths = [path for path, _ in train["pil"].samples]
    count = len(paths)
    rows = []
    rates = interleaved({"pil": lambda i: pil_decode(paths[i]), "fast": lambda i: read_rgb(paths[i])}, count, seconds)
    rows.append(row("decode, per process", rates["pil"], rates["fast"]))
    for name, datasets in (("train, per process", train), ("eval, per process", val)):
        rates = interleaved({p: datasets[p].__getitem__ for p in PIPELINES}, count, seconds)
        rows.append(row(name, rates["pil"], rates["fast"]))
    return rows


def epoch_dataset(dataset: Dataset, workers: int, batch_size: int) -> Dataset:
    """At least 4 batches per worker per epoch, so that filling the pipeline is a small part of it."""
    return Repeated(dataset, max(len(dataset), 4 * workers * batch_size))


def loader_rows(folder: str, images: int, size: int, workers: int, batch_size: int, epochs: int) -> List[Dict]:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    context, rows = DistributedContext(), []
    for name, train in (("train", True), ("eval", False)):
        loaders = {p: build_loader(epoch_dataset(sampled(folder, train, size, p, images), workers, batch_size),
                                   train, batch_size, workers, 0, context, False) for p in PIPELINES}
        (old, old_bytes), (new, new_bytes) = alternating(loaders, train, epochs).values()
        rows.append(row(f"{name}, DataLoader -j {workers}", old, new,
                        note=f"batch of {batch_size}: {old_bytes / 2**20:.1f} MiB float32, {new_bytes / 2**20:.1f} MiB uint8",
                        bytes_per_batch_old=old_bytes, bytes_per_batch_new=new_bytes))
    return rows


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_rows(folder: str, images: int, size: int, workers: int, batch_size: int, epochs: int, device: torch.device) -> List[Dict]:
    """The fast CPU loader + model_input on ``device`` against --decode-device there, the main
    process's decoding alone, then the checks (CUDA; ``cpu`` runs the same code, for testing it)."""
    context, pin = DistributedContext(), device.type == "cuda"
    fast, encoded = (epoch_dataset(sampled(folder, True, size, p, images), workers, batch_size) for p in ("fast", "encoded"))
    cpu = build_loader(fast, True, batch_size, workers, 0, context, pin)
    gpu = build_loader(encoded, True, batch_size, workers, 0, context, pin, decode_device=device)
    (old, _), (new, _) = alternating({"cpu": cpu, "gpu": gpu}, True, epochs, device).values()
    rows = [
        row(f"train, DataLoader -j {workers}, decode on {device.type}", old, new, note="old: the fast pipeline, decoding in the workers")
    ]

    start_epoch(gpu, 0)
    batches = [batch.items() for batch, _, _ in gpu.loader]
    rates = {}
    for name, step in (("decode", lambda items: decode_jpegs([item.data for item in items], device)),
                       ("decode + crop", lambda items: decode_on_device(items, device))):
        for items in batches:  # a whole pass first: nvjpeg grows its buffers as it meets larger images
            step(items)
        synchronize(device)
        began = time.perf_counter()
        for items in batches:
            step(items)
        synchronize(device)
        rates[name] = sum(map(len, batches)) / (time.perf_counter() - began)
    rows.append(row(f"{device.type}, main process: decode + crop", rates["decode"], rates["decode + crop"],
                    note="the training process's share of --decode-device cuda; old: the batched decode_jpeg alone"))

    start_epoch(cpu, 0)
    start_epoch(gpu, 0)
    differences = [(on_cpu.to(device).int() - on_gpu.int()).abs().flatten() for (on_cpu, _, _), (on_gpu, _, _) in zip(cpu, gpu)]
    crop_difference = torch.cat(differences).float()
    items = [item for item in batches[0] if isinstance(item, EncodedCrop)]
    decode_difference = torch.cat([(decode_rgb(item.data).to(device).int() - on_gpu.int()).abs().flatten()
                                   for item, on_gpu in zip(items, decode_jpegs([item.data for item in items], device))]).float()
    crops = next(iter(cpu))[0]
    normalised = model_input(crops.pin_memory() if pin else crops, device, True).cpu() - model_input(crops, torch.device("cpu"), False)
    check = {"decode_mean_abs_diff": decode_difference.mean().item(), "crop_max_abs_diff": crop_difference.max().item(),
             "crop_mean_abs_diff": crop_difference.mean().item(), "normalisation_max_abs_diff": normalised.abs().max().item()}
    print(f"check: nvjpeg against libjpeg-turbo, whole images: mean |diff| {check['decode_mean_abs_diff']:.2f} (of 255); "
          f"GPU-decoded crops against the CPU's, same draws: mean |diff| {check['crop_mean_abs_diff']:.2f}, max "
          f"{check['crop_max_abs_diff']:.0f}; normalised on cuda against the CPU: max |diff| {check['normalisation_max_abs_diff']:.1e}")
    rows.append({"row": "check", **check})
    # Decoders may round and upsample chroma differently (a few levels); a wrong box, flip or
    # channel order would be tens of levels on average.
    if check["crop_mean_abs_diff"] > 4 * max(check["decode_mean_abs_diff"], 1) or check["normalisation_max_abs_diff"] > 1e-5:
        raise SystemExit("benchmark_data.py: error: the GPU's crops or normalisation differ from the CPU's beyond the decoders' rounding")
    return rows


def parse_args(argv: Optional[Iterable[str]] = None) -> argparse.Namespace:
    parser = OneLineErrorParser(prog="benchmark_data.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", help="an ImageFolder split to time, DIR/<class>/<image> (e.g. /data/imagenet/val)")
    source.add_argument("--make", help="make the set in DIR/train (and a quarter as many in DIR/val) and keep it")
    parser.add_argument("--images", type=int, default=300,
                        help="images to make, or to take from --data, spread over it (default 300)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("-j", "--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (default: the cores)")
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per pipeline in each per-process row (default 3)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="DataLoader epochs per pipeline after a first one, alternating; the median is kept (default 2)")
    parser.add_argument("--cpu-only", action="store_true", help="leave out the CUDA rows where CUDA is present")
    parser.add_argument("--json", type=Path, default=None, help="also write the setup and rows here")
    args = parser.parse_args(argv)
    if min(args.images, args.image_size, args.batch_size, args.epochs) < 1 or args.workers < 1 or args.seconds <= 0:
        parser.error("--images, --image-size, -b, --epochs, -j and --seconds must be positive")
    if args.data is not None and not os.path.isdir(args.data):
        parser.error(f"--data {args.data}: no such directory")
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    args = parse_args(argv)
    temporary = None
    if args.data is not None:
        folder = args.data
    else:
        root = Path(args.make) if args.make else Path(temporary := tempfile.mkdtemp(prefix="benchmark_data_"))
        make_images(root / "train", args.images)
        if args.make:
            make_images(root / "val", max(args.images // 4, CLASSES), seed=1)
        folder = str(root / "train")
    try:
        try:
            files = [path for path, _ in sampled(folder, False, args.image_size, "pil", args.images).samples]
        except (FileNotFoundError, RuntimeError) as error:
            raise SystemExit(f"benchmark_data.py: error: {folder}: {str(error).splitlines()[0]}") from None
        sizes = [Image.open(path).size for path in files]
        setup = {
            "machine": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__, "codec": IMAGE_CODEC,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "images": len(sizes), "mean_width": statistics.mean(w for w, _ in sizes),
            "mean_height": statistics.mean(h for _, h in sizes),
            "mean_kib": statistics.mean(os.path.getsize(path) for path in files) / 1024,
            "image_size": args.image_size, "workers": args.workers, "batch_size": args.batch_size,
        }
        print(" ".join(f"{key}={value:.0f}" if isinstance(value, float) else f"{key}={value}" for key, value in setup.items()))
        print("| pipeline | old (PIL) images/s | new images/s | new / old | |")
        print("|---|---|---|---|---|")
        rows = per_process_rows(folder, args.images, args.image_size, args.seconds)
        rows += loader_rows(folder, args.images, args.image_size, args.workers, args.batch_size, args.epochs)
        if torch.cuda.is_available() and not args.cpu_only:
            rows += device_rows(folder, args.images, args.image_size, args.workers, args.batch_size, args.epochs, torch.device("cuda"))
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()

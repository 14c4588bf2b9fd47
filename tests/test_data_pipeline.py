"""The fast (uint8, TorchCodec) and PIL data pipelines on real files: what they give, the crops
they draw, normalising on the device, the files ImageNet really has (grayscale, CMYK, PNG named
.JPEG, progressive, corrupt), the torchvision.io fallback, and the --decode-device path run on the CPU."""

import io
import math
import warnings

import numpy as np
import pytest
import torch
from helpers import run_code
from PIL import Image
from torchvision import transforms
from torchvision.transforms.functional import to_pil_image

import main as main_module
from utils.data.datasets import UnreadableImage, build_dataset
from utils.data.decode import (
    IMAGE_CODEC,
    UNREADABLE,
    EncodedBatch,
    EncodedCrop,
    decode_jpegs,
    decode_on_device,
    encode_png,
    jpeg_header,
    read_bytes,
    read_encoded,
    read_rgb,
)
from utils.data.loaders import DeviceDecodedLoader, build_loader, start_epoch
from utils.data.transforms import IMAGENET_MEAN, IMAGENET_STD, CropDraw, RandomCropFlip, normalize_, resized_crop_flip
from utils.distributed import DistributedContext
from utils.training.classification import model_input

SIZE = 24
ODD = ("gray", "cmyk", "png", "progressive", "bmp")  # bmp: no codec reads it, PIL does
CORRUPT = ("truncated", "garbage", "empty")
REASONS = {"truncated": "image file is truncated (", "garbage": "not an image file", "empty": "not an image file"}  # how each reason starts


def textured(seed, width, height):
    """Smooth colour plus noise, so that JPEG has something to encode."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray((rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255).astype(np.uint8))
    noise = rng.integers(-25, 25, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(base.resize((width, height), Image.BICUBIC)) + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/ and val/ with two classes of ordinary JPEGs of assorted sizes; class ``b`` also
    holds one file of each odd and each corrupt kind. Returns (root, {kind: path})."""
    root = tmp_path_factory.mktemp("images")
    special = {}
    for split in ("train", "val"):
        for label, name in enumerate("ab"):
            directory = root / split / name
            directory.mkdir(parents=True)
            for index in range(4):
                textured(label * 10 + index, 40 + 7 * index, 50 - 5 * index).save(directory / f"{index}.JPEG", quality=90)
    directory = root / "train" / "b"
    image = textured(99, 45, 38)
    writers = {
        "gray": lambda path: image.convert("L").save(path, "JPEG", quality=90),
        "cmyk": lambda path: image.convert("CMYK").save(path, "JPEG", quality=90),
        "png": lambda path: image.save(path, "PNG"),
        "progressive": lambda path: image.save(path, "JPEG", quality=90, progressive=True),
        "bmp": lambda path: image.save(path, "BMP"),
    }
    for kind, write in writers.items():
        special[kind] = directory / f"{kind}.JPEG"
        write(special[kind])
    whole = (directory / "0.JPEG").read_bytes()
    for kind, content in (("truncated", whole[: len(whole) // 2]), ("garbage", b"not a jpeg"), ("empty", b"")):
        special[kind] = directory / f"{kind}.JPEG"
        special[kind].write_bytes(content)
    return root, {kind: str(path) for kind, path in special.items()}


def sample(dataset, path):
    return dataset[[p for p, _ in dataset.samples].index(path)]


def seeded(seed, function, *args):
    torch.manual_seed(seed)
    return function(*args)


# --- what each pipeline gives ------------------------------------------------------------------


@pytest.mark.parametrize("pipeline, dtype", [("fast", torch.uint8), ("pil", torch.float32)])
@pytest.mark.parametrize("split", ["train", "val"])
def test_pipelines_give_three_channel_crops_of_their_dtype_and_range(folder, pipeline, dtype, split):
    dataset = build_dataset(str(folder[0]), split, SIZE, 0.3, pipeline)
    images = torch.stack([dataset[i][0] for i in range(8)])
    assert images.shape == (8, 3, SIZE, SIZE) and images.dtype == dtype
    if dtype == torch.uint8:
        assert images.min() >= 0 and images.max() <= 255 and images.float().std() > 20
    else:
        low = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        high = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        assert (images >= low.view(3, 1, 1) - 1e-5).all() and (images <= high.view(3, 1, 1) + 1e-5).all()


def test_both_pipelines_cut_the_same_boxes_and_differ_only_by_rounding(folder):
    """Same seed, same draws: the fast crop normalised on the device is the PIL crop within the
    resize's rounding (one level of 255 at most)."""
    root = str(folder[0])
    for split in ("train", "val"):
        fast, pil = (build_dataset(root, split, SIZE, 0.3, pipeline) for pipeline in ("fast", "pil"))
        for index in range(6):
            normalised = model_input(seeded(index, fast.__getitem__, index)[0][None], torch.device("cpu"), False)[0]
            difference = (normalised - seeded(index, pil.__getitem__, index)[0]) * torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
            assert difference.abs().max() <= 1.001 and difference.abs().mean() < 0.5, (split, index)


# --- the crop boxes ----------------------------------------------------------------------------


def test_crop_draws_are_random_resized_crop_and_flip_draws():
    """Every draw equals torchvision's RandomResizedCrop.get_params followed by
    RandomHorizontalFlip's, for the same generator state: the same distribution, exactly."""
    crop = RandomCropFlip(SIZE, 0.08)
    for seed in range(100):
        height, width = 100 + seed % 7 * 50, 400 - seed % 5 * 60
        torch.manual_seed(seed)
        box = transforms.RandomResizedCrop.get_params(torch.empty(3, height, width), [0.08, 1.0], [3 / 4, 4 / 3])
        expected = CropDraw(*box, bool(torch.rand(1) < 0.5))
        assert seeded(seed, crop.draw, height, width) == expected


def test_crop_boxes_follow_the_scale_and_ratio_ranges():
    """Statistics of 4,000 draws on a 1000 x 1000 image: area fraction in [0.08, 1], log aspect
    ratio in [log 3/4, log 4/3] with mean 0, and the mean area RandomResizedCrop's rejection
    sampling gives (the expectation of s ~ U(0.08, 1) given that the box fits, s * r <= 1 and
    s / r <= 1 for log r ~ U(log 3/4, log 4/3), integrated numerically)."""
    crop, side, draws = RandomCropFlip(SIZE, 0.08), 1000, 4000
    torch.manual_seed(0)
    boxes = [crop.draw(side, side) for _ in range(draws)]
    area = np.array([box.height * box.width / side**2 for box in boxes])
    log_ratio = np.log([box.width / box.height for box in boxes])
    assert area.min() >= 0.08 - 0.005 and area.max() <= 1.0
    assert log_ratio.min() >= math.log(3 / 4) - 0.01 and log_ratio.max() <= math.log(4 / 3) + 0.01
    assert abs(log_ratio.mean()) < 0.01
    s, r = np.meshgrid(np.linspace(0.08, 1, 2001), np.exp(np.linspace(math.log(3 / 4), math.log(4 / 3), 2001)))
    fits = (s * r <= 1) & (s / r <= 1)
    expected = (s * fits).sum() / fits.sum()
    assert abs(area.mean() - expected) < 4 * area.std() / math.sqrt(draws), (area.mean(), expected)
    assert abs(np.mean([box.flip for box in boxes]) - 0.5) < 0.03


def test_the_transform_applies_the_box_it_draws(folder):
    image = read_rgb(str(folder[0] / "train" / "a" / "1.JPEG"))
    crop = RandomCropFlip(SIZE, 0.3)
    draw = seeded(5, crop.draw, *image.shape[-2:])
    assert torch.equal(seeded(5, crop, image), resized_crop_flip(image, draw, SIZE))
    assert torch.equal(
        resized_crop_flip(image, draw._replace(flip=True), SIZE), resized_crop_flip(image, draw._replace(flip=False), SIZE).flip(-1)
    )


# --- normalising on the device -----------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_normalising_on_the_device_equals_normalising_in_the_worker(folder, channels_last):
    """The uint8 path (model_input) against ToTensor + Normalize of the same crops, as the PIL
    pipeline's workers do: bitwise on the CPU, in either memory format."""
    dataset = build_dataset(str(folder[0]), "train", SIZE, 0.3, "fast")
    crops = torch.stack([dataset[i][0] for i in range(4)])
    worker = transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    expected = torch.stack([worker(to_pil_image(crop)) for crop in crops])
    on_device = model_input(crops, torch.device("cpu"), channels_last)
    assert on_device.dtype == torch.float32 and torch.equal(on_device, expected)
    assert on_device.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert crops.dtype == torch.uint8  # the loader's batch is left alone
    assert torch.equal(normalize_(crops.float()), expected)


def test_float_batches_pass_through_unchanged():
    batch = torch.randn(2, 3, 8, 8)
    assert torch.equal(model_input(batch, torch.device("cpu"), False), batch)
    assert model_input(batch, torch.device("cpu"), True).is_contiguous(memory_format=torch.channels_last)


# --- the files ImageNet has --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ODD)
def test_odd_files_decode_to_rgb_as_pil_does(folder, kind):
    path = folder[1][kind]
    with Image.open(path) as image:
        expected = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    decoded = read_rgb(path)
    assert decoded.shape == expected.shape == (3, 38, 45) and decoded.dtype == torch.uint8
    assert (decoded.int() - expected.int()).abs().max() <= 1
    for pipeline in ("fast", "pil", "encoded"):
        crop = sample(build_dataset(str(folder[0]), "train", SIZE, 0.3, pipeline), path)[0]
        if isinstance(crop, EncodedCrop):  # grayscale is left to the device
            crop = decode_on_device([crop], torch.device("cpu"))[0][0]
        assert crop.shape == (3, SIZE, SIZE), pipeline


@pytest.mark.parametrize("pipeline", ["fast", "pil", "encoded"])
def test_corrupt_files_are_unreadable_images_in_every_pipeline_and_say_why(folder, pipeline):
    dataset = build_dataset(str(folder[0]), "train", SIZE, 0.3, pipeline)
    for kind in CORRUPT:
        unreadable = sample(dataset, folder[1][kind])
        assert isinstance(unreadable, UnreadableImage) and unreadable.path == folder[1][kind], kind
        assert unreadable.reason.startswith(REASONS[kind]) and "\n" not in unreadable.reason, (kind, unreadable.reason)
        assert str(unreadable) == f"{folder[1][kind]} ({unreadable.reason})"


def test_a_file_gone_after_listing_is_unreadable_with_the_systems_reason(tmp_path):
    """A file removed between the folder's listing and its loading (a cleanup job mid-epoch)."""
    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        textured(0, 40, 40).save(tmp_path / "train" / name / "0.JPEG")
    for pipeline in ("fast", "pil", "encoded"):
        dataset = build_dataset(str(tmp_path), "train", SIZE, 0.3, pipeline)
        gone = tmp_path / "train" / "b" / "0.JPEG"
        content = gone.read_bytes()
        gone.unlink()
        assert sample(dataset, str(gone)) == UnreadableImage(str(gone), "No such file or directory"), pipeline
        gone.write_bytes(content)


def test_only_complete_baseline_jpegs_are_left_to_the_device(folder):
    root, special = folder
    ordinary = str(root / "train" / "a" / "2.JPEG")
    header = jpeg_header(bytes(read_bytes(ordinary).numpy()))
    assert (header.marker, header.precision, header.components) == (0xC0, 8, 3)
    assert (header.height, header.width) == tuple(read_rgb(ordinary).shape[-2:])
    left = {kind: type(read_encoded(special[kind])).__name__ for kind in ODD}
    assert left == {"gray": "EncodedImage", "cmyk": "Tensor", "png": "Tensor", "progressive": "Tensor", "bmp": "Tensor"}
    assert type(read_encoded(ordinary)).__name__ == "EncodedImage"
    with pytest.raises(OSError):  # no end marker: decoded in the worker, where PIL finds it truncated
        read_encoded(special["truncated"])


# --- the codec: TorchCodec, else torchvision.io -----------------------------------------------


def test_torchcodec_is_the_codec_and_warns_of_nothing(folder):
    """requirements.txt installs TorchCodec, so utils.data.decode uses it: decoding (one file, a
    batch, the odd kinds) and encoding raise no DeprecationWarning, which torchvision.io would."""
    pytest.importorskip("torchcodec")
    assert IMAGE_CODEC.startswith("torchcodec ")
    root, special = folder
    ordinary = [str(root / "train" / "a" / f"{index}.JPEG") for index in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        images = [read_rgb(path) for path in ordinary + [special[kind] for kind in ODD]]
        decode_jpegs([read_bytes(path) for path in ordinary], torch.device("cpu"))
        encode_png(images[0])


_FALLBACK = """
import sys, warnings
sys.modules["torchcodec"] = None  # as if it were not installed: importing it raises ImportError
import torch
from utils.data.decode import IMAGE_CODEC, UNREADABLE, decode_jpegs, encode_png, read_bytes, read_rgb

warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision are deprecated")
paths, out = sys.argv[2:], {"codec": IMAGE_CODEC}
for path in paths:
    try:
        out[path] = read_rgb(path)
    except UNREADABLE as error:
        out[path] = type(error).__name__
out["batch"] = decode_jpegs([read_bytes(path) for path in paths], torch.device("cpu"))
out["png"] = encode_png(out[paths[0]])
torch.save(out, sys.argv[1])
"""


def test_without_torchcodec_torchvision_io_decodes_the_same_pixels(folder, tmp_path):
    """A process where TorchCodec cannot be imported falls back to torchvision.io: the same pixels
    for every kind of file, the same unreadable ones, the same batched decode and a PNG that
    decodes to the image it encoded."""
    root, special = folder
    paths = [str(root / "train" / "a" / "0.JPEG")] + [special[kind] for kind in ODD + CORRUPT]
    result = run_code(_FALLBACK, tmp_path / "out.pt", *paths)
    assert result.returncode == 0, result.stderr
    fallback = torch.load(tmp_path / "out.pt")
    assert fallback["codec"].startswith("torchvision.io ")
    for path in paths:
        try:
            expected = read_rgb(path)
        except UNREADABLE as error:
            assert fallback[path] == type(error).__name__, path
        else:
            assert torch.equal(fallback[path], expected), path
    batch = decode_jpegs([read_bytes(path) for path in paths], torch.device("cpu"))
    assert [image is None for image in fallback["batch"]] == [image is None for image in batch]
    assert all(torch.equal(a, b) for a, b in zip(fallback["batch"], batch) if a is not None)
    with Image.open(io.BytesIO(fallback["png"])) as png:
        assert torch.equal(torch.from_numpy(np.array(png)).permute(2, 0, 1), fallback[paths[0]])


def test_png_encoding_is_lossless(folder):
    image = read_rgb(folder[1]["cmyk"])
    with Image.open(io.BytesIO(encode_png(image))) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert torch.equal(torch.from_numpy(np.array(png)).permute(2, 0, 1), image)
    gray = image[:1]
    with Image.open(io.BytesIO(encode_png(gray))) as png:
        assert png.mode == "L" and torch.equal(torch.from_numpy(np.array(png))[None], gray)


# --- --decode-device, run on the CPU -----------------------------------------------------------


def loaded(root, pipeline, workers, epochs=2, decode_device=None):
    dataset = build_dataset(str(root), "train", SIZE, 0.3, pipeline)
    loader = build_loader(dataset, True, 5, workers, 7, DistributedContext(), False, decode_device=decode_device)
    batches = []
    for epoch in range(epochs):
        start_epoch(loader, epoch)
        batches += [(images, targets.tolist(), sorted(unreadable)) for images, targets, unreadable in loader]
    return loader, batches


def test_decoding_on_the_device_gives_the_fast_pipelines_batches(folder):
    """On device "cpu" the --decode-device path decodes the JPEGs in the main process in one
    decode_jpeg call and crops there: bitwise the fast pipeline's batches and unreadable files,
    with and without workers, and other crops in the next epoch."""
    root = folder[0]
    _, fast = loaded(root, "fast", 0)
    loader, on_device = loaded(root, "encoded", 2, decode_device=torch.device("cpu"))
    per_epoch = math.ceil((8 + len(ODD) + len(CORRUPT)) / 5)
    assert isinstance(loader, DeviceDecodedLoader) and len(on_device) == len(fast) == 2 * per_epoch
    for (images, targets, unreadable), (expected, expected_targets, expected_unreadable) in zip(on_device, fast):
        assert images.dtype == torch.uint8 and torch.equal(images, expected)
        assert targets == expected_targets and unreadable == expected_unreadable
    assert [file.split(" (")[0] for file in sorted(sum((u for _, _, u in fast), []))] == sorted(2 * [folder[1][kind] for kind in CORRUPT])
    assert not torch.equal(fast[0][0], fast[per_epoch][0])


def test_a_file_the_device_cannot_decode_falls_back_to_the_cpu_or_is_reported(folder):
    root, special = folder
    ordinary = str(root / "train" / "a" / "0.JPEG")
    draw = CropDraw(2, 3, 20, 25, True)
    good = EncodedCrop(read_bytes(ordinary), draw, SIZE, ordinary)
    png = EncodedCrop(read_bytes(special["png"]), draw, SIZE, special["png"])  # not a JPEG: decode_jpeg fails, decode_image reads it
    broken = EncodedCrop(torch.tensor(list(b"\xff\xd8 not a jpeg \xff\xd9"), dtype=torch.uint8), draw, SIZE, "broken.JPEG")
    worker_decoded = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    images, kept, failed = decode_on_device([good, broken, worker_decoded, png], torch.device("cpu"))
    assert kept == [0, 2, 3] and failed == ["broken.JPEG (not an image file)"]
    assert torch.equal(images[0], resized_crop_flip(read_rgb(ordinary), draw, SIZE))
    assert torch.equal(images[1], worker_decoded)
    assert torch.equal(images[2], resized_crop_flip(read_rgb(special["png"]), draw, SIZE))


def test_a_batch_of_files_all_decoded_in_the_workers_crosses_to_the_main_process():
    """No JPEG left to the device (every file progressive, CMYK, PNG, ...): no bytes to join."""
    decoded = [torch.full((3, SIZE, SIZE), value, dtype=torch.uint8) for value in (1, 2)]
    items = EncodedBatch(decoded).items()
    assert len(items) == 2 and all(torch.equal(item, image) for item, image in zip(items, decoded))
    images, kept, failed = decode_on_device(items, torch.device("cpu"))
    assert torch.equal(images, torch.stack(decoded)) and kept == [0, 1] and failed == []


# --- main.py -----------------------------------------------------------------------------------


def test_main_trains_with_the_pil_pipeline_and_evaluates_with_the_fast_one(folder, tmp_path, capsys):
    """The non-default choices end to end (the resume tests of test_robustness and test_longrun
    run the default, fast training and PIL evaluation)."""
    argv = [str(folder[0]), "-a", "eca_mobilenet_v2", "--image-size", "32", "-b", "8", "--epochs", "1", "-j", "0",
            "--seed", "0", "--train-pipeline", "pil", "--eval-pipeline", "fast", "--output-dir", str(tmp_path / "run")]
    assert main_module.main(argv) == 0
    out = capsys.readouterr().out
    assert "Epoch: [0] skipped 3 unreadable image file(s), e.g. " in out and " * Prec@1 " in out
    example = out.split("Epoch: [0] skipped 3 unreadable image file(s), e.g. ")[1].splitlines()[0]
    assert any(example.startswith(f"{folder[1][kind]} ({REASONS[kind]}") for kind in CORRUPT), example


"""Image files to uint8 RGB tensors: on the CPU for the fast pipeline, or on a device in batches;
and uint8 images to PNG bytes.

The codec is chosen once, here, when the module is imported: TorchCodec's image API
(``torchcodec.decoders`` / ``torchcodec.encoders``, which needs no FFmpeg for images), else
``torchvision.io``, whose image decoding and encoding torchvision 0.29 deprecates in favour of
TorchCodec. On the CPU both give the same pixels, bitwise (libjpeg-turbo and libpng); on CUDA
both decode a batch in one nvJPEG call.

CPU (:func:`read_rgb`, a worker's ImageFolder loader): the codec decodes JPEG (baseline,
progressive, grayscale, CMYK) and PNG, also a PNG named .JPEG, as ImageNet has; PIL decodes what
it cannot (other formats, 16-bit PNGs, animated GIFs) and, as in the PIL pipeline, decides that
a file is unreadable: the OSError it raises for a truncated or corrupt file makes it an
:class:`UnreadableImage` (utils.data.datasets.SkippingImageFolder), which keeps the error's
message (:func:`unreadable_reason`) for the report of skipped files and ``--bad-images error``.

Device (``--decode-device``): workers only read a file's bytes and draw its crop and flip from
the size in its JPEG header (:class:`EncodedCrops`); the main process decodes the whole batch
with one batched ``decode_jpeg(list, device=...)`` call (nvJPEG on CUDA) and crops, resizes and
flips there (:func:`decode_on_device`). Files the device should not get are decoded by the
worker as on the CPU path, with the same random draws: anything but an 8-bit baseline JPEG with
one or three components (progressive JPEGs, which nvJPEG decodes one by one on the host; CMYK;
PNGs) and JPEGs without their end marker (truncated: the CPU path decides they are unreadable).
A file the device still fails on is decoded on the CPU, else reported as unreadable.
"""

import io
import os
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.utils.data
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from utils.data.transforms import CropDraw, RandomCropFlip, resized_crop_flip

# The codec, chosen once: TorchCodec where it is installed, else torchvision.io. IMAGE_CODEC names
# it with its version, for benchmarks and bug reports.
try:
    import torchcodec
    from torchcodec.decoders import decode_image, decode_jpeg
    from torchcodec.encoders import PngEncoder

    IMAGE_CODEC = f"torchcodec {torchcodec.__version__}"
    _NATIVE_DEPTH = {"output_dtype": "auto"}  # a 16-bit PNG stays uint16, for PIL to decode as before

    def _encode_png(image: torch.Tensor) -> torch.Tensor:
        return PngEncoder(image).to_tensor()

except ImportError:
    import torchvision
    from torchvision.io import decode_image, decode_jpeg
    from torchvision.io import encode_png as _encode_png

    IMAGE_CODEC = f"torchvision.io {torchvision.__version__}"
    _NATIVE_DEPTH = {}

__all__ = [
    "IMAGE_CODEC",
    "UNREADABLE",
    "unreadable_reason",
    "UnreadableImage",
    "read_bytes",
    "decode_rgb",
    "read_rgb",
    "JpegHeader",
    "jpeg_header",
    "EncodedImage",
    "EncodedCrop",
    "read_encoded",
    "EncodedCrops",
    "EncodedBatch",
    "decode_jpegs",
    "decode_on_device",
    "encode_png",
]

UNREADABLE = (OSError, ValueError, SyntaxError)
"""What PIL raises for undecodable files (and ValueError for an empty one here)."""


def unreadable_reason(error: BaseException) -> str:
    """Why a file is unreadable, in one line that does not repeat its path (the report names it):
    PIL's "cannot identify image file <_io.BytesIO object at 0x...>" says only that it is no
    image PIL knows, and an OSError of the file system has its strerror."""
    if isinstance(error, UnidentifiedImageError):
        return "not an image file"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class UnreadableImage(NamedTuple):
    """Stands in for a sample whose file could not be decoded, and says why. ``str()`` is
    ``PATH (REASON)``, the form the loaders hand over, so that the report of skipped files and
    ``--bad-images error`` show the reason without knowing of this record."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


def read_bytes(path: str) -> torch.Tensor:
    """The file's bytes as a 1-D uint8 tensor that owns its memory (so it can cross to the
    main process); a missing file is the OSError PIL's loader would raise."""
    with open(path, "rb") as file:
        data = torch.empty(os.fstat(file.fileno()).st_size, dtype=torch.uint8)
        read = file.readinto(data.numpy())
    return data[:read]


def decode_rgb(data: torch.Tensor) -> torch.Tensor:
    """Encoded image bytes as uint8 3xHxW RGB: the codec, else PIL (which raises one of
    :data:`UNREADABLE` for a file nothing can read)."""
    if len(data):
        try:
            image = decode_image(data, mode="RGB", **_NATIVE_DEPTH)
        except (RuntimeError, ValueError):  # ValueError: a format TorchCodec does not know
            image = None
        if image is not None and image.dtype == torch.uint8 and image.dim() == 3:
            return image
    with Image.open(io.BytesIO(data.numpy())) as image:
        return pil_to_tensor(image.convert("RGB"))


def read_rgb(path: str) -> torch.Tensor:
    """The fast pipeline's ImageFolder loader: the file at ``path`` as uint8 3xHxW RGB."""
    return decode_rgb(read_bytes(path))


class JpegHeader(NamedTuple):
    """What a JPEG's frame header (SOFn) says."""

    marker: int  # 0xC0 baseline, 0xC1 extended sequential, 0xC2 progressive, ...
    precision: int
    height: int
    width: int
    components: int


_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 less DHT, JPG, DAC
_DEVICE_MARKERS = (0xC0, 0xC1)


def jpeg_header(data: Union[bytes, memoryview]) -> Optional[JpegHeader]:
    """The frame header of JPEG ``data``, or None when it is not a JPEG (or not a well-formed
    one) up to its first frame header."""
    if data[:2] != b"\xff\xd8":
        return None
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _FRAME_MARKERS:
            if position + 10 > end:
                return None
            fields = bytes(data[position + 4 : position + 10])
            return JpegHeader(
                marker,
                fields[0],
                int.from_bytes(fields[1:3], "big"),
                int.from_bytes(fields[3:5], "big"),
                fields[5],
            )
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            return None
        position += 2 + int.from_bytes(bytes(data[position + 2 : position + 4]), "big")
    return None


class EncodedImage(NamedTuple):
    """A JPEG file left encoded for the device, with the size its header gives."""

    data: torch.Tensor
    height: int
    width: int
    path: str


class EncodedCrop(NamedTuple):
    """A training sample for the device: the JPEG's bytes and its drawn crop and flip."""

    data: Optional[torch.Tensor]  # None while its EncodedBatch holds the bytes
    draw: CropDraw
    size: int
    path: str


def read_encoded(path: str) -> Union[EncodedImage, torch.Tensor]:
    """The ``--decode-device`` ImageFolder loader: an EncodedImage for a file the device can
    decode, else the file decoded here (see the module's docstring)."""
    data = read_bytes(path)
    view = memoryview(data.numpy())
    header = jpeg_header(view)
    if (
        header is not None
        and header.marker in _DEVICE_MARKERS
        and header.precision == 8
        and header.components in (1, 3)
        and header.height > 0
        and b"\xff\xd9" in bytes(view[-64:])
    ):
        return EncodedImage(data, header.height, header.width, path)
    return decode_rgb(data)


class EncodedCrops:
    """The ``--decode-device`` training transform: draws the crop and flip exactly as the fast
    pipeline's :class:`RandomCropFlip` (same generator, same order), from the header's size for
    an encoded file; a file decoded in the worker is cropped there."""

    def __init__(self, image_size: int, min_scale: float = 0.08) -> None:
        self.crop = RandomCropFlip(image_size, min_scale)

    def __call__(self, sample: Union[EncodedImage, torch.Tensor]) -> Union[EncodedCrop, torch.Tensor]:
        if isinstance(sample, EncodedImage):
            return EncodedCrop(sample.data, self.crop.draw(sample.height, sample.width), self.crop.size, sample.path)
        return self.crop(sample)


class EncodedBatch:
    """A ``--decode-device`` batch as it crosses from a worker to the main process: every JPEG's
    bytes in one tensor and the crops the worker decoded in another (two shared-memory
    transfers, where a tensor per image costs a file descriptor each), with each sample's draw
    and path. The DataLoader leaves it unpinned: decode_jpeg reads the bytes on the host."""

    def __init__(self, items: Sequence[Union[EncodedCrop, torch.Tensor]]) -> None:
        encoded = [item for item in items if isinstance(item, EncodedCrop)]
        decoded = [item for item in items if not isinstance(item, EncodedCrop)]
        self.lengths = [len(item.data) for item in encoded]
        self.data = (
            _into_shared(lambda out: torch.cat([item.data for item in encoded], out=out), (sum(self.lengths),))
            if encoded
            else torch.empty(0, dtype=torch.uint8)
        )
        self.decoded = _into_shared(lambda out: torch.stack(decoded, out=out), (len(decoded), *decoded[0].shape)) if decoded else None
        self.crops = [item._replace(data=None) for item in encoded]
        self.is_encoded = [isinstance(item, EncodedCrop) for item in items]

    def items(self) -> List[Union[EncodedCrop, torch.Tensor]]:
        """The samples in order, each JPEG's bytes a view of the one tensor."""
        data = iter(torch.split(self.data, self.lengths) if self.lengths else [])
        crops, decoded = iter(self.crops), iter(self.decoded if self.decoded is not None else [])
        return [next(crops)._replace(data=next(data)) if encoded else next(decoded) for encoded in self.is_encoded]


def _into_shared(make: Callable[[Optional[torch.Tensor]], torch.Tensor], shape: Tuple[int, ...]) -> torch.Tensor:
    """``make(out)`` with ``out`` in shared memory inside a worker process, as default_collate
    does, so that sending the result to the main process copies nothing."""
    in_worker = torch.utils.data.get_worker_info() is not None
    return make(torch.empty(shape, dtype=torch.uint8).share_memory_() if in_worker else None)


def decode_jpegs(data: List[torch.Tensor], device: torch.device) -> List[Optional[torch.Tensor]]:
    """One batched decode_jpeg call; if it fails (one bad file fails them all), each file on
    its own, None for those the device cannot decode."""
    if not data:
        return []
    try:
        return list(decode_jpeg(data, mode="RGB", device=device))
    except RuntimeError:
        decoded: List[Optional[torch.Tensor]] = []
        for one in data:
            try:
                decoded.append(decode_jpeg(one, mode="RGB", device=device))
            except RuntimeError:
                decoded.append(None)
        return decoded


def decode_on_device(
    items: Sequence[Union[EncodedCrop, torch.Tensor]], device: torch.device
) -> Tuple[torch.Tensor, List[int], List[str]]:
    """(uint8 batch on ``device``, positions in ``items`` it holds, ``PATH (REASON)`` of each
    unreadable file).

    EncodedCrops are decoded in one batch on ``device``, then cropped, resized and flipped
    there; tensors (decoded by the workers) are copied as they are. A file the device cannot
    decode is decoded on the CPU, and left out and reported if that fails too.
    """
    encoded = [position for position, item in enumerate(items) if isinstance(item, EncodedCrop)]
    images: List[Optional[torch.Tensor]] = [
        None if isinstance(item, EncodedCrop) else item.to(device, non_blocking=True) for item in items
    ]
    failed: List[str] = []
    for position, image in zip(encoded, decode_jpegs([items[p].data for p in encoded], device)):
        item = items[position]
        if image is None:
            try:
                image = decode_rgb(item.data).to(device)
            except UNREADABLE as error:
                failed.append(str(UnreadableImage(item.path, unreadable_reason(error))))
                continue
        images[position] = resized_crop_flip(image, item.draw, item.size)
    kept = [position for position, image in enumerate(images) if image is not None]
    batch = torch.stack([images[p] for p in kept]) if kept else torch.empty(0, dtype=torch.uint8, device=device)
    return batch, kept, failed


def encode_png(image: torch.Tensor) -> bytes:
    """A uint8 3xHxW (or 1xHxW) CPU image as the bytes of a PNG file."""
    return _encode_png(image.contiguous()).numpy().tobytes()

"""Whether a checkpoint file still holds what was saved into it.

PyTorch's zip format (every ``torch.save`` since 1.6) stores a CRC-32 of each record, which
``torch.load`` never checks; the legacy format (the paper's released files) stores none. Here:

- :func:`check_archive`: the zip directory agrees with the records' own headers, the records
  fill the file end to end, and every record's bytes match their CRC-32;
- :func:`tensor_digest`: the SHA-256 of a checkpoint's tensor data, which this project's
  checkpoints carry from the moment they are written, so that a copy can be verified later;
- :func:`implausible_tensor`: NaN or infinity in a floating-point tensor, or a negative
  BatchNorm running variance: what no usable checkpoint holds, in either format.

Problems are raised as :class:`IntegrityError` phrases ("its record 'x' fails its CRC-32
check"); utils.checkpoint makes them one-line CheckpointErrors naming the file.
"""

import hashlib
import struct
import zipfile
from typing import Any, BinaryIO, Iterator, List, Optional, Tuple

import torch

__all__ = ["IntegrityError", "UnreadableArchive", "DIGEST_KEY", "is_zip_format", "check_archive", "tensor_digest", "implausible_tensor"]

DIGEST_KEY = "tensor_sha256"
"""Where a checkpoint saved by utils.checkpoint.save_checkpoint keeps its :func:`tensor_digest`."""

ZIP_MAGIC = b"PK\x03\x04"
"""A zip file's first local header: how torch.load tells its zip format from the legacy one."""

_LOCAL_HEADER = struct.Struct("<4s2B4H3L2H")  # signature, version, system, flags, method, time, date, crc, sizes, name/extra lengths
_END = struct.Struct("<4s4H2LH")  # signature, disk numbers, entry counts, directory size and offset, comment length
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, offset of the zip64 end record, disks
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # signature, record size, versions, disk numbers, entry counts, directory size and offset
_DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
_LONGEST_DESCRIPTOR = 24  # signature, CRC-32, two 8-byte sizes
_HAS_DESCRIPTOR = 0x08  # general-purpose flag bit 3: CRC and sizes follow the data, not in the local header
_UTF8_NAME = 0x800
_SATURATED16, _SATURATED32 = 0xFFFF, 0xFFFFFFFF  # "see the zip64 record"
_CHUNK = 1 << 24


class IntegrityError(Exception):
    """What is wrong with a file, as a phrase about it ("its record 'x' fails its CRC-32 check")."""


class UnreadableArchive(IntegrityError):
    """A file that starts as a zip but whose directory cannot be read at all (truncated, most often)."""


def is_zip_format(handle: BinaryIO) -> bool:
    """Whether torch.load would read this file as its zip format (it looks at the first four bytes only)."""
    start = handle.tell()
    magic = handle.read(len(ZIP_MAGIC))
    handle.seek(start)
    return magic == ZIP_MAGIC


def check_archive(path: str) -> Optional[int]:
    """Check a zip-format checkpoint's directory and the CRC-32 of every record.

    Returns how many records were checked (0 when the writer recorded no CRC-32s:
    ``torch.serialization.set_crc32_options(False)``), or None for a legacy-format file, which
    carries no checksum. Raises IntegrityError naming the first record or field that is wrong.
    """
    with open(path, "rb") as handle:
        if not is_zip_format(handle):
            return None
        try:
            archive = zipfile.ZipFile(handle)
        except Exception as error:  # zipfile raises BadZipFile, but also struct.error, ValueError, ... on garbage
            reason = "its end-of-directory record is missing" if str(error) == "File is not a zip file" else str(error)
            raise UnreadableArchive(f"its zip directory cannot be read ({reason})") from None
        with archive:
            records = archive.infolist()
            _check_end_records(handle, archive.start_dir, len(records))
            _check_layout(handle, records, archive.start_dir)
            crc_recorded = any(info.CRC for info in records if info.file_size)
            if crc_recorded:
                for info in records:
                    _check_crc(archive, info)
    return len(records) if crc_recorded else 0


def _check_end_records(handle: BinaryIO, directory_start: int, entries: int) -> None:
    """The end-of-directory record (and the zip64 one PyTorch adds) must describe the directory
    zipfile found, which ends where they begin, with no comment and no second disk."""
    size = handle.seek(0, 2)
    end = _read_struct(handle, size - _END.size, _END)
    signature, disk, directory_disk, disk_entries, total_entries, directory_size, directory_offset, comment = end
    if signature != b"PK\x05\x06" or disk or directory_disk or comment or disk_entries != total_entries:
        raise IntegrityError("its end-of-directory record is damaged (disk numbers, entry counts or comment)")
    directory_end = size - _END.size
    locator_offset = directory_end - _ZIP64_LOCATOR.size
    if locator_offset >= 0 and _read_bytes(handle, locator_offset, 4) == b"PK\x06\x07":
        _, locator_disk, zip64_offset, disks = _read_struct(handle, locator_offset, _ZIP64_LOCATOR)
        if locator_disk or disks != 1 or zip64_offset != locator_offset - _ZIP64_END.size:
            raise IntegrityError("its zip64 end-of-directory locator is damaged")
        zip64 = _read_struct(handle, zip64_offset, _ZIP64_END)
        signature, record_size, _, _, disk64, directory_disk64, disk_entries64, entries64, size64, offset64 = zip64
        if signature != b"PK\x06\x06" or record_size != _ZIP64_END.size - 12 or disk64 or directory_disk64:
            raise IntegrityError("its zip64 end-of-directory record is damaged")
        if (disk_entries64, entries64, offset64, size64) != (entries, entries, directory_start, zip64_offset - directory_start):
            raise IntegrityError("its zip64 end-of-directory record does not describe its directory")
        directory_end = zip64_offset
    if (
        total_entries not in (entries, _SATURATED16)
        or directory_offset not in (directory_start, _SATURATED32)
        or directory_size not in (directory_end - directory_start, _SATURATED32)
    ):
        raise IntegrityError("its end-of-directory record does not describe its directory")


def _check_layout(handle: BinaryIO, records: List[zipfile.ZipInfo], directory_start: int) -> None:
    """Each directory entry must agree with its record's local header (and data descriptor), and
    the records must follow one another from the file's first byte up to the directory."""
    ordered = sorted(records, key=lambda record: record.header_offset)
    starts = [info.header_offset for info in ordered] + [directory_start]
    if starts[0] != 0:
        raise IntegrityError(f"its zip directory puts its first record at byte {starts[0]}, not 0")
    for info, next_start in zip(ordered, starts[1:]):
        data_end = _check_local_header(handle, info)
        if data_end > next_start:
            raise IntegrityError(f"its zip directory makes record {info.filename!r} overlap the next one")
        gap = next_start - data_end
        if gap > _LONGEST_DESCRIPTOR or not _is_descriptor(_read_bytes(handle, data_end, gap), info):
            raise IntegrityError(f"the bytes after its record {info.filename!r} are not the data descriptor its zip directory implies")


def _check_local_header(handle: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Compare one record's local header with its directory entry; returns where the record's data end."""
    local = _read_struct(handle, info.header_offset, _LOCAL_HEADER)
    signature, version, system, flags, method, time, date, crc, packed, unpacked, name_length, extra_length = local
    year, month, day, hour, minute, second = info.date_time
    expected = (
        info.extract_version, info.reserved, info.flag_bits, info.compress_type,
        hour << 11 | minute << 5 | second // 2, (year - 1980) << 9 | month << 5 | day,
    )  # fmt: skip
    encoding = "utf-8" if info.flag_bits & _UTF8_NAME else "cp437"
    name = _read_bytes(handle, info.header_offset + _LOCAL_HEADER.size, name_length)
    if flags & _HAS_DESCRIPTOR:
        sizes_agree = (crc, packed, unpacked) == (0, 0, 0)
    else:
        sizes_agree = crc == info.CRC and packed in (info.compress_size, _SATURATED32) and unpacked in (info.file_size, _SATURATED32)
    if (
        signature != ZIP_MAGIC
        or (version, system, flags, method, time, date) != expected
        or name != info.orig_filename.encode(encoding)
        or not sizes_agree
        or info.volume
        or info.comment
    ):
        raise IntegrityError(f"its zip directory entry for record {info.filename!r} disagrees with the record's own header")
    if info.create_version or info.create_system or info.internal_attr or info.external_attr:
        raise IntegrityError(
            f"its zip directory entry for record {info.filename!r} has attributes torch.save never writes "
            "(damaged, or re-packed by another zip tool)"
        )
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length + info.compress_size


def _is_descriptor(gap: bytes, info: zipfile.ZipInfo) -> bool:
    """Whether the bytes between a record's data and the next header are its data descriptor
    (CRC and 4- or 8-byte sizes, with or without the optional signature), or nothing when the
    local header holds the CRC and sizes."""
    if not info.flag_bits & _HAS_DESCRIPTOR:
        return gap == b""
    if gap.startswith(_DESCRIPTOR_SIGNATURE):
        gap = gap[len(_DESCRIPTOR_SIGNATURE) :]
    layout = {12: "<LLL", 20: "<LQQ"}.get(len(gap))
    return layout is not None and struct.unpack(layout, gap) == (info.CRC, info.compress_size, info.file_size)


def _check_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read the record to its end: zipfile compares the running CRC-32 with the directory's there."""
    try:
        with archive.open(info) as record:
            while record.read(_CHUNK):
                pass
    except zipfile.BadZipFile as error:
        if str(error).startswith("Bad CRC-32"):
            raise IntegrityError(f"its record {info.filename!r} fails its CRC-32 check") from None
        raise IntegrityError(f"its record {info.filename!r} cannot be read ({error})") from None
    except Exception as error:  # an unknown compression method, an 'encrypted' flag, ...: flipped bits in a header
        raise IntegrityError(f"its record {info.filename!r} cannot be read ({error})") from None


def _read_bytes(handle: BinaryIO, offset: int, length: int) -> bytes:
    handle.seek(offset)
    return handle.read(length)


def _read_struct(handle: BinaryIO, offset: int, layout: struct.Struct) -> Tuple[Any, ...]:
    data = _read_bytes(handle, offset, layout.size) if offset >= 0 else b""
    if len(data) != layout.size:
        raise IntegrityError(f"its zip structure at byte {offset} lies outside the file")
    return layout.unpack(data)


def _tensors(value: Any, where: str = "") -> Iterator[Tuple[str, torch.Tensor]]:
    """Every tensor in a loaded checkpoint with where it sits (``state_dict/fc.weight``), in the containers' order."""
    if isinstance(value, torch.Tensor):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{where}/{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{where}/{index}" if where else str(index))


def tensor_digest(checkpoint: Any) -> str:
    """The SHA-256 of every tensor's name, dtype, shape and bytes, in order: the same for the
    state that is saved and for the file loaded back, whatever device the tensors were on."""
    digest = hashlib.sha256()
    for where, tensor in _tensors(checkpoint):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{where}\0{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def _finite(tensor: torch.Tensor) -> bool:
    """A sum is finite only if every element is (NaN and infinity carry through it), and one
    vectorised reduction is many times faster than isfinite; only a sum that overflows needs the
    elementwise test."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def implausible_tensor(checkpoint: Any) -> Optional[str]:
    """The first tensor no usable checkpoint holds, as a phrase, or None: a floating-point tensor
    with NaN or infinity, or a BatchNorm running variance (a key ending ``running_var``) below 0.

    On one thread: a pass over memory gains little from more, and a thread team per tensor on
    busy cores cost 30 times as much (3 s instead of 0.1 s for an ECA-ResNet-152 checkpoint).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for where, tensor in _tensors(checkpoint):
            if not tensor.is_floating_point():
                continue
            if not _finite(tensor):
                return f"its tensor {where} holds NaN or infinity"
            if where.endswith("running_var") and bool((tensor < 0).any()):
                return f"its BatchNorm running variance {where} is negative"
        return None
    finally:
        torch.set_num_threads(threads)

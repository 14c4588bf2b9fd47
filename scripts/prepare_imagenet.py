"""Turn the official ILSVRC2012 downloads into the ``train/`` and ``val/`` ImageFolder tree.

    python scripts/prepare_imagenet.py --out /data/imagenet \\
        --train ILSVRC2012_img_train.tar \\
        --val ILSVRC2012_img_val.tar --devkit ILSVRC2012_devkit_t12.tar.gz

Inputs, each a file as downloaded or its unpacked folder:
  --train   the train tar (one nXXXXXXXX.tar per class inside) or a folder of those class tars
  --val     the validation tar or the folder of the 50,000 flat ILSVRC2012_val_*.JPEG
  --devkit  the devkit tar.gz or folder: data/ILSVRC2012_validation_ground_truth.txt gives
            1-based ILSVRC2012_IDs and data/meta.mat maps them to WNIDs
  --val-labels  or Kaggle's LOC_val_solution.csv (ImageId,PredictionString "nXXXXXXXX x y x y ...")

Each class folder is written under a temporary name and renamed when complete, and each
validation image is written then renamed, so an interrupted run resumes where it stopped and
a finished tree is left alone. The last step counts classes and images and fails loudly if
they are not ImageNet's (1000 classes, 50 validation images each; --expect-* override that).
"""

import argparse
import csv
import os
import re
import shutil
import struct
import sys
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, List, Optional, Tuple

WNID = re.compile(r"n\d{8}")
IMAGE_SUFFIXES = (".jpeg", ".jpg")
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META = "meta.mat"

Opener = Callable[[], IO[bytes]]
"""Opens one source file (a plain file or a tar member) for reading."""


class PrepareError(Exception):
    """A problem with the inputs or the output tree, reported as one line."""


# ---------------------------------------------------------------------------------------------
# meta.mat: a MATLAB 5 file. scipy.io.loadmat would read it, but scipy is not a dependency of
# this project and the devkit needs only one struct array of numbers and strings, so the few
# element types involved are read here (format: MathWorks' "MAT-File Format", level 5).

MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32, MI_SINGLE, MI_DOUBLE = 1, 2, 3, 4, 5, 6, 7, 9
MI_INT64, MI_UINT64, MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 12, 13, 14, 15, 16, 17, 18
NUMBER_FORMATS = {
    MI_INT8: "b", MI_UINT8: "B", MI_INT16: "h", MI_UINT16: "H", MI_INT32: "i", MI_UINT32: "I",
    MI_SINGLE: "f", MI_DOUBLE: "d", MI_INT64: "q", MI_UINT64: "Q",
}  # fmt: skip
MX_CELL, MX_STRUCT, MX_CHAR = 1, 2, 4
MX_NUMERIC = range(6, 16)  # double, single, int8 ... uint64


def _elements(buf: bytes, endian: str) -> Iterator[Tuple[int, bytes]]:
    """Yield (data type, payload) of each data element in ``buf``."""
    pos = 0
    while pos + 8 <= len(buf):
        dtype, nbytes = struct.unpack_from(endian + "II", buf, pos)
        if dtype >> 16:  # small data element: size and type share the tag, payload in 4 bytes
            yield dtype & 0xFFFF, buf[pos + 4 : pos + 4 + (dtype >> 16)]
            pos += 8
            continue
        yield dtype, buf[pos + 8 : pos + 8 + nbytes]
        pos += 8 + nbytes
        if dtype != MI_COMPRESSED:
            pos += -nbytes % 8


def _numbers(dtype: int, raw: bytes, endian: str) -> List[float]:
    fmt = NUMBER_FORMATS.get(dtype)
    if fmt is None:
        raise PrepareError(f"meta.mat: unsupported numeric data type {dtype}")
    return list(struct.unpack(f"{endian}{len(raw) // struct.calcsize(fmt)}{fmt}", raw))


def _text(dtype: int, raw: bytes, endian: str, rows: int) -> str:
    if dtype in (MI_UTF8, MI_UINT8, MI_INT8):
        text = raw.decode("utf-8")
    elif dtype in (MI_UINT16, MI_UTF16):
        text = raw.decode("utf-16-le" if endian == "<" else "utf-16-be")
    elif dtype == MI_UTF32:
        text = raw.decode("utf-32-le" if endian == "<" else "utf-32-be")
    else:
        raise PrepareError(f"meta.mat: unsupported character data type {dtype}")
    return "\n".join(text[row::rows] for row in range(rows)) if rows > 1 else text  # column-major


def _matrix(buf: bytes, endian: str) -> Tuple[str, object]:
    """(name, value) of one miMATRIX: a struct array is a list of dicts, a cell array a list,
    a char array a str, a numeric array a flat list (a number when it holds one)."""
    parts = list(_elements(buf, endian))
    if not parts:
        return "", None
    mclass = struct.unpack_from(endian + "I", parts[0][1])[0] & 0xFF
    dims = _numbers(parts[1][0], parts[1][1], endian)
    name = parts[2][1].decode("ascii")
    count = 1
    for dim in dims:
        count *= int(dim)
    if mclass == MX_STRUCT:
        name_length = int(_numbers(parts[3][0], parts[3][1], endian)[0])
        raw_names = parts[4][1]
        fields = [
            raw_names[i : i + name_length].split(b"\0")[0].decode("ascii")
            for i in range(0, len(raw_names), name_length)
        ]
        values = [_matrix(payload, endian)[1] for _, payload in parts[5:]]
        return name, [dict(zip(fields, values[i * len(fields) : (i + 1) * len(fields)])) for i in range(count)]
    if mclass == MX_CELL:
        return name, [_matrix(payload, endian)[1] for _, payload in parts[3:]]
    if mclass == MX_CHAR:
        return name, _text(parts[3][0], parts[3][1], endian, int(dims[0])) if count else ""
    if mclass in MX_NUMERIC:
        values = _numbers(parts[3][0], parts[3][1], endian)[:count]
        return name, values[0] if count == 1 else values
    raise PrepareError(f"meta.mat: variable {name!r} has unsupported MATLAB class {mclass}")


def read_mat_file(data: bytes) -> Dict[str, object]:
    """Every variable of a MATLAB 5 (v5 to v7, not the HDF5-based v7.3) file."""
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        raise PrepareError("meta.mat is not a MATLAB 5 MAT-file")
    endian = "<" if data[126:128] == b"IM" else ">"
    if struct.unpack_from(endian + "H", data, 124)[0] != 0x0100:
        raise PrepareError("meta.mat is a MATLAB 7.3 (HDF5) file; only MATLAB 5 to 7 files are read")
    variables = {}
    pending = [data[128:]]
    while pending:
        for dtype, payload in _elements(pending.pop(), endian):
            if dtype == MI_COMPRESSED:
                pending.append(zlib.decompress(payload))
            elif dtype == MI_MATRIX:
                name, value = _matrix(payload, endian)
                variables[name] = value
    return variables


# ---------------------------------------------------------------------------------------------
# Sources: a tar file or a folder, seen as {file name: opener}.


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path)
    except tarfile.TarError:
        raise PrepareError(f"{path}: not a readable tar file") from None


def list_files(path: Path, keep: Callable[[str], bool]) -> Dict[str, Opener]:
    """The files whose base name ``keep`` accepts, from a tar file or a folder (recursively)."""
    if not path.exists():
        raise PrepareError(f"{path}: no such file or directory")
    if path.is_dir():
        found = {}
        for file in sorted(path.rglob("*")):
            if file.is_file() and keep(file.name):
                found[file.name] = lambda file=file: open(file, "rb")
        return found
    archive = _open_tar(path)
    found = {}
    for member in archive.getmembers():
        name = os.path.basename(member.name)
        if member.isfile() and keep(name):
            found[name] = lambda member=member: archive.extractfile(member)
    return found


def read_devkit_labels(devkit: Path) -> Dict[str, str]:
    """Validation image name -> WNID from the devkit's ground truth and meta.mat."""
    files = list_files(devkit, lambda name: name in (GROUND_TRUTH, META))
    for needed in (GROUND_TRUTH, META):
        if needed not in files:
            raise PrepareError(f"{devkit}: no {needed} inside (expected data/{needed} of ILSVRC2012_devkit_t12)")
    with files[META]() as handle:
        synsets = read_mat_file(handle.read()).get("synsets")
    if not isinstance(synsets, list):
        raise PrepareError(f"{devkit}: meta.mat has no 'synsets' struct array")
    id_to_wnid = {int(synset["ILSVRC2012_ID"]): synset["WNID"] for synset in synsets}
    with files[GROUND_TRUTH]() as handle:
        ids = handle.read().decode("ascii", errors="replace").split()  # the n-th ID labels image n
    labels = {}
    for number, label in enumerate(ids, start=1):
        try:
            labels[f"ILSVRC2012_val_{number:08d}.JPEG"] = id_to_wnid[int(label)]
        except (ValueError, KeyError):
            raise PrepareError(f"{GROUND_TRUTH} entry {number}: {label!r} is not an ILSVRC2012_ID of meta.mat") from None
    return labels


def read_solution_labels(csv_path: Path) -> Dict[str, str]:
    """Validation image name -> WNID from LOC_val_solution.csv (the first box's class)."""
    if not csv_path.is_file():
        raise PrepareError(f"{csv_path}: no such file")
    labels = {}
    with open(csv_path, newline="", encoding="ascii") as handle:
        rows = csv.reader(handle)
        if next(rows, None) != ["ImageId", "PredictionString"]:
            raise PrepareError(f"{csv_path}: expected the header 'ImageId,PredictionString'")
        for line_number, row in enumerate(rows, start=2):
            wnid = row[1].split()[0] if len(row) == 2 and row[1].strip() else ""
            if not WNID.fullmatch(wnid):
                raise PrepareError(f"{csv_path} line {line_number}: no nXXXXXXXX class in {row!r}")
            labels[f"{row[0]}.JPEG"] = wnid
    return labels


# ---------------------------------------------------------------------------------------------
# Writing, with completion marked by a rename so that reruns skip finished work.


def _copy(source: IO[bytes], destination: Path) -> None:
    with source, open(destination, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


def _copy_atomically(source: IO[bytes], destination: Path) -> None:
    partial = destination.with_name(destination.name + ".partial")
    _copy(source, partial)
    partial.replace(destination)


def extract_class(class_tar: Opener, destination: Path) -> int:
    """Unpack one class tar's images into ``destination``; returns the image count."""
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count = 0
    with class_tar() as handle, tarfile.open(fileobj=handle) as archive:
        for member in archive:
            name = os.path.basename(member.name)
            if member.isfile() and name.lower().endswith(IMAGE_SUFFIXES):
                _copy(archive.extractfile(member), partial / name)
                count += 1
    partial.rename(destination)
    return count


def prepare_train(train: Path, out: Path, dry_run: bool) -> Tuple[List[str], int]:
    """Extract each class tar not yet extracted; returns every class of the train set and
    how many were (or, in a dry run, would be) extracted."""
    class_tars = list_files(train, lambda name: name.endswith(".tar") and bool(WNID.fullmatch(name[:-4])))
    if not class_tars:
        raise PrepareError(f"{train}: no nXXXXXXXX.tar class archives inside")
    classes = sorted(name[:-4] for name in class_tars)
    todo = [wnid for wnid in classes if not (out / wnid).is_dir()]
    print(f"train: {len(classes)} classes, {len(classes) - len(todo)} already extracted, {len(todo)} to extract")
    if dry_run:
        return classes, len(todo)
    for index, wnid in enumerate(todo, start=1):
        try:
            count = extract_class(class_tars[f"{wnid}.tar"], out / wnid)
        except tarfile.TarError:
            raise PrepareError(f"{train}: {wnid}.tar inside is not a readable tar file") from None
        print(f"train: [{index}/{len(todo)}] {wnid}: {count} images")
    return classes, len(todo)


def prepare_val(val: Path, labels: Dict[str, str], out: Path, dry_run: bool) -> Tuple[Counter, int]:
    """Place each validation image in its class folder; returns images per class and how
    many were (or would be) placed."""
    images = list_files(val, lambda name: name.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise PrepareError(f"{val}: no JPEG images inside")
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise PrepareError(
            f"{val}: {len(unlabelled)} images have no label, e.g. {unlabelled[0]} (wrong labels file?)"
        )
    todo = [name for name in sorted(images) if not (out / labels[name] / name).is_file()]
    per_class = Counter(labels[name] for name in images)
    print(
        f"val: {len(images)} images in {len(per_class)} classes, "
        f"{len(images) - len(todo)} already in place, {len(todo)} to place"
    )
    if not dry_run:
        for name in todo:
            (out / labels[name]).mkdir(parents=True, exist_ok=True)
            _copy_atomically(images[name](), out / labels[name] / name)
    return per_class, len(todo)


def check_counts(
    train_per_class: Optional[Counter], val_per_class: Optional[Counter], classes: int, val_images: int
) -> List[str]:
    """Every way the tree differs from the expected ImageNet counts, one message each.

    A train class only needs images (ImageNet's have 732 to 1300); a val class needs exactly
    ``val_images``. ``None`` skips a split that was not asked for.
    """
    problems = []
    if train_per_class is not None:
        if len(train_per_class) != classes:
            problems.append(f"train has {len(train_per_class)} classes, expected {classes}")
        empty = sorted(wnid for wnid, count in train_per_class.items() if count == 0)
        if empty:
            problems.append(f"{len(empty)} train classes have no images (e.g. {empty[0]})")
    if val_per_class is not None:
        if len(val_per_class) != classes:
            problems.append(f"val has {len(val_per_class)} classes, expected {classes}")
        wrong = [(wnid, count) for wnid, count in sorted(val_per_class.items()) if count != val_images]
        if wrong:
            shown = ", ".join(f"{wnid} has {count}" for wnid, count in wrong[:5])
            more = ", ..." if len(wrong) > 5 else ""
            problems.append(f"{len(wrong)} val classes do not have {val_images} images ({shown}{more})")
    if train_per_class is not None and val_per_class is not None and set(train_per_class) != set(val_per_class):
        only = sorted(set(train_per_class) ^ set(val_per_class))
        problems.append(f"train and val classes differ ({len(only)} in only one of them, e.g. {only[0]})")
    return problems


def count_images(split: Path) -> Counter:
    """Images per class folder of a finished split (unfinished ``.partial`` folders excluded)."""
    return Counter(
        {
            folder.name: sum(1 for file in folder.iterdir() if file.name.lower().endswith(IMAGE_SUFFIXES))
            for folder in split.iterdir()
            if folder.is_dir() and WNID.fullmatch(folder.name)
        }
    )


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="tree root: OUT/train/nXXXXXXXX, OUT/val/nXXXXXXXX")
    parser.add_argument("--train", type=Path, help="ILSVRC2012_img_train.tar or a folder of its class tars")
    parser.add_argument("--val", type=Path, help="ILSVRC2012_img_val.tar or a folder of the flat validation JPEGs")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--devkit", type=Path, help="ILSVRC2012_devkit_t12.tar.gz or its folder")
    labels.add_argument("--val-labels", type=Path, help="LOC_val_solution.csv")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done, write nothing")
    parser.add_argument("--expect-classes", type=int, default=1000, help="classes the final check expects")
    parser.add_argument("--expect-val-per-class", type=int, default=50, help="validation images per class expected")
    args = parser.parse_args(argv)
    if args.train is None and args.val is None:
        parser.error("give --train, --val or both")
    if args.val is not None and args.devkit is None and args.val_labels is None:
        parser.error("--val needs its labels: --devkit or --val-labels")
    return args


def prepare(args: argparse.Namespace) -> int:
    train_per_class = val_per_class = None
    work = 0
    if args.train is not None:
        train_classes, todo = prepare_train(args.train, args.out / "train", args.dry_run)
        train_per_class = Counter({wnid: 1 for wnid in train_classes})  # a dry run knows classes, not images
        work += todo
    if args.val is not None:
        labels = read_devkit_labels(args.devkit) if args.devkit else read_solution_labels(args.val_labels)
        val_per_class, todo = prepare_val(args.val, labels, args.out / "val", args.dry_run)
        work += todo
    if work == 0:
        print(f"nothing to do: {args.out} is already prepared")
    if not args.dry_run:  # check what is on disk, not what was planned
        train_per_class = None if args.train is None else count_images(args.out / "train")
        val_per_class = None if args.val is None else count_images(args.out / "val")
    problems = check_counts(train_per_class, val_per_class, args.expect_classes, args.expect_val_per_class)
    for problem in problems:
        print(f"check: {problem}", file=sys.stderr)
    if problems:
        return 1
    checked = [f"train: {args.expect_classes} classes"] if args.train is not None else []
    if args.val is not None:
        checked.append(f"val: {args.expect_classes} classes x {args.expect_val_per_class} images")
    print(f"check: {'; '.join(checked)}{' (planned)' if args.dry_run else ''}: counts as expected")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return prepare(args)
    except PrepareError as error:
        print(f"prepare_imagenet: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"prepare_imagenet: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

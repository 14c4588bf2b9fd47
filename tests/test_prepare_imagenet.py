"""scripts/prepare_imagenet.py on a tiny ILSVRC2012 in the official formats: real JPEGs, a train
tar of class tars, a flat validation set, the devkit (ground truth + a MATLAB meta.mat written
by scipy) and Kaggle's LOC_val_solution.csv."""

import importlib.util
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import ROOT, run_script
from PIL import Image

SCRIPT = ROOT / "scripts" / "prepare_imagenet.py"
FIXTURES = Path(__file__).parent / "fixtures"

# ILSVRC2012_ID -> WNID as in the meta.mat fixtures: ID order is not WNID order, as in ImageNet.
ID_TO_WNID = {1: "n02119789", 2: "n01440764", 3: "n03000134"}
TRAIN_IMAGES = {"n02119789": 3, "n01440764": 2, "n03000134": 2}
VAL_IDS = [2, 1, 3, 3, 1, 2]  # ground truth of ILSVRC2012_val_00000001 ... 06: two images per class
EXPECT_TINY = ["--expect-classes", "3", "--expect-val-per-class", "2"]


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (seed * 40 % 256, 90, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def val_name(index: int) -> str:
    return f"ILSVRC2012_val_{index:08d}.JPEG"


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    """The downloads, as files and as their unpacked folders."""
    root = tmp_path_factory.mktemp("downloads")
    class_tars = root / "train_class_tars"
    class_tars.mkdir()
    for wnid, count in TRAIN_IMAGES.items():
        with tarfile.open(class_tars / f"{wnid}.tar", "w") as archive:
            for index in range(count):
                add_bytes(archive, f"{wnid}_{index + 1}.JPEG", jpeg(index))
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as archive:
        for wnid in TRAIN_IMAGES:
            archive.add(class_tars / f"{wnid}.tar", arcname=f"{wnid}.tar")

    val = root / "val_flat"
    val.mkdir()
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as archive:
        for index in range(1, len(VAL_IDS) + 1):
            (val / val_name(index)).write_bytes(jpeg(10 + index))
            archive.add(val / val_name(index), arcname=val_name(index))

    ground_truth = "".join(f"{label}\n" for label in VAL_IDS).encode()
    for meta in ("imagenet_meta.mat", "imagenet_meta_compressed.mat"):
        devkit = root / f"devkit_{meta[:-4]}" / "ILSVRC2012_devkit_t12" / "data"
        devkit.mkdir(parents=True)
        (devkit / "meta.mat").write_bytes((FIXTURES / meta).read_bytes())
        (devkit / "ILSVRC2012_validation_ground_truth.txt").write_bytes(ground_truth)
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as archive:
        devkit = root / "devkit_imagenet_meta_compressed" / "ILSVRC2012_devkit_t12"
        archive.add(devkit, arcname="ILSVRC2012_devkit_t12")

    rows = [  # two boxes per image, as in the real file; the rows are not in image order
        f"ILSVRC2012_val_{index:08d},{ID_TO_WNID[label]} 1 2 5 6 {ID_TO_WNID[label]} 0 0 3 3 "
        for index, label in enumerate(VAL_IDS, start=1)
    ]
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")
    return root


def run(*args) -> subprocess.CompletedProcess:
    return run_script(SCRIPT, *args, timeout=120)


def assert_tree(out: Path, downloads: Path) -> None:
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(TRAIN_IMAGES)
    for wnid, count in TRAIN_IMAGES.items():
        files = sorted((out / "train" / wnid).iterdir())
        assert [f.name for f in files] == [f"{wnid}_{i + 1}.JPEG" for i in range(count)]
        assert files[0].read_bytes() == jpeg(0)
    for index, label in enumerate(VAL_IDS, start=1):
        placed = out / "val" / ID_TO_WNID[label] / val_name(index)
        assert placed.read_bytes() == (downloads / "val_flat" / val_name(index)).read_bytes()
    assert sum(1 for _ in (out / "val").rglob("*.JPEG")) == len(VAL_IDS)


def snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")}


def test_official_tars_with_devkit_then_a_second_run_does_nothing(downloads, tmp_path):
    args = ["--out", tmp_path, "--train", downloads / "ILSVRC2012_img_train.tar",
            "--val", downloads / "ILSVRC2012_img_val.tar", "--devkit", downloads / "ILSVRC2012_devkit_t12.tar.gz",
            *EXPECT_TINY]  # fmt: skip
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert "3 to extract" in first.stdout and "6 to place" in first.stdout
    assert "counts as expected" in first.stdout
    assert_tree(tmp_path, downloads)

    before = snapshot(tmp_path)
    second = run(*args)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    assert "0 to extract" in second.stdout and "0 to place" in second.stdout
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("meta", ["imagenet_meta", "imagenet_meta_compressed"])
def test_unpacked_folders_with_devkit_folder(downloads, tmp_path, meta):
    result = run("--out", tmp_path, "--train", downloads / "train_class_tars", "--val", downloads / "val_flat",
                 "--devkit", downloads / f"devkit_{meta}", *EXPECT_TINY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_tree(tmp_path, downloads)


def test_loc_val_solution_csv(downloads, tmp_path):
    result = run("--out", tmp_path, "--val", downloads / "val_flat",
                 "--val-labels", downloads / "LOC_val_solution.csv", *EXPECT_TINY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for index, label in enumerate(VAL_IDS, start=1):
        assert (tmp_path / "val" / ID_TO_WNID[label] / val_name(index)).is_file()
    assert not (tmp_path / "train").exists()


def test_dry_run_writes_nothing(downloads, tmp_path):
    out = tmp_path / "imagenet"
    result = run("--out", out, "--train", downloads / "ILSVRC2012_img_train.tar", "--val", downloads / "val_flat",
                 "--val-labels", downloads / "LOC_val_solution.csv", "--dry-run", *EXPECT_TINY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 to extract" in result.stdout and "6 to place" in result.stdout and "(planned)" in result.stdout
    assert not out.exists()


def test_an_interrupted_run_is_completed(downloads, tmp_path):
    (tmp_path / "train" / "n01440764.partial").mkdir(parents=True)
    (tmp_path / "train" / "n01440764.partial" / "half_written.JPEG").write_bytes(b"\xff\xd8")
    (tmp_path / "val" / "n01440764").mkdir(parents=True)
    (tmp_path / "val" / "n01440764" / (val_name(1) + ".partial")).write_bytes(b"\xff\xd8")
    result = run("--out", tmp_path, "--train", downloads / "ILSVRC2012_img_train.tar", "--val", downloads / "val_flat",
                 "--val-labels", downloads / "LOC_val_solution.csv", *EXPECT_TINY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_tree(tmp_path, downloads)
    assert not (tmp_path / "train" / "n01440764.partial").exists()


def test_counts_that_are_not_imagenets_are_reported(downloads, tmp_path):
    result = run("--out", tmp_path, "--train", downloads / "ILSVRC2012_img_train.tar", "--val", downloads / "val_flat",
                 "--val-labels", downloads / "LOC_val_solution.csv")  # fmt: skip
    assert result.returncode == 1
    assert "check: train has 3 classes, expected 1000" in result.stderr
    assert "check: val has 3 classes, expected 1000" in result.stderr
    assert "check: 3 val classes do not have 50 images (n01440764 has 2, n02119789 has 2, n03000134 has 2)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_validation_image_is_reported(downloads, tmp_path):
    val = tmp_path / "val_flat"
    val.mkdir()
    for index in range(2, len(VAL_IDS) + 1):
        (val / val_name(index)).write_bytes((downloads / "val_flat" / val_name(index)).read_bytes())
    result = run("--out", tmp_path / "out", "--val", val, "--val-labels", downloads / "LOC_val_solution.csv", *EXPECT_TINY)
    assert result.returncode == 1
    assert result.stderr.strip() == "check: 1 val classes do not have 2 images (n01440764 has 1)"


def write_bad_inputs(tmp_path: Path, downloads: Path) -> dict:
    (tmp_path / "not_a.tar").write_bytes(b"this is not a tar archive" * 40)
    (tmp_path / "no_header.csv").write_text("ILSVRC2012_val_00000001,n01440764 1 2 3 4\n")
    partial = (downloads / "LOC_val_solution.csv").read_text().splitlines()[:-1]
    (tmp_path / "partial.csv").write_text("\n".join(partial) + "\n")
    bad_devkit = tmp_path / "devkit" / "data"
    bad_devkit.mkdir(parents=True)
    (bad_devkit / "meta.mat").write_bytes((FIXTURES / "imagenet_meta.mat").read_bytes())
    (bad_devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n1001\n3\n1\n2\n")
    return {
        "bad_id": (["--val", downloads / "val_flat", "--devkit", tmp_path / "devkit"], "entry 3: '1001' is not an"),
        "missing": (["--train", tmp_path / "nowhere.tar"], "no such file or directory"),
        "corrupt": (["--train", tmp_path / "not_a.tar"], "not a readable tar file"),
        "header": (["--val", downloads / "val_flat", "--val-labels", tmp_path / "no_header.csv"], "expected the header"),
        "unlabelled": (["--val", downloads / "val_flat", "--val-labels", tmp_path / "partial.csv"], "1 images have no label"),
        "no_meta": (["--val", downloads / "val_flat", "--devkit", downloads / "val_flat"], "no ILSVRC2012_validation_ground"),
    }


@pytest.mark.parametrize("case", ["missing", "corrupt", "header", "unlabelled", "no_meta", "bad_id"])
def test_bad_inputs_are_one_line_errors(downloads, tmp_path, case):
    args, message = write_bad_inputs(tmp_path, downloads)[case]
    result = run("--out", tmp_path / "out", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("prepare_imagenet: ") and message in result.stderr


def test_val_without_labels_is_a_usage_error(downloads, tmp_path):
    result = run("--out", tmp_path, "--val", downloads / "val_flat")
    assert result.returncode == 2 and "--val needs its labels" in result.stderr


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_imagenet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("meta", ["imagenet_meta.mat", "imagenet_meta_compressed.mat"])
def test_meta_mat_reader_matches_scipys_writer(meta):
    synsets = load_script().read_mat_file((FIXTURES / meta).read_bytes())["synsets"]
    assert [(int(s["ILSVRC2012_ID"]), s["WNID"]) for s in synsets][:3] == sorted(ID_TO_WNID.items())
    assert synsets[1]["gloss"] == "freshwater dace-like game fish of Europe; café-coloured"
    assert synsets[0]["children"] == [] and synsets[4]["children"] == [4.0, 2.0]
    assert [s["num_children"] for s in synsets] == [0, 0, 0, 1, 2]


def test_meta_mat_reader_rejects_other_files():
    module = load_script()
    with pytest.raises(module.PrepareError, match="not a MATLAB 5 MAT-file"):
        module.read_mat_file(b"\x89HDF\r\n" + bytes(200))

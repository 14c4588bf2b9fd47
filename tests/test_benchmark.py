"""scripts/benchmark.py --table sota: Table 3's rows timed against the plain backbone, every depth in one run."""

import argparse
import copy
import json
import statistics

import pytest
import torch
import torch.nn.functional as F
from helpers import run_code, run_script

import models
from models import EfficientChannelAttention
from scripts.benchmark import REFERENCE_LAYERS, compared_names, paper_fps_ratio, table_models, with_reference_eca
from utils.paper.tables import DEPTHS, MOBILENET, SOTA, table_rows

TINY = ["--image-size", "32", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--formats", "nchw", "--threads", "1"]
PEERS = ("resnet{}", "se_resnet{}", "cbam_resnet{}", "gc_resnet{}", "eca_resnet{}", "eca_resnet{}:original", "eca_resnet{}:timm")
MOBILENET_ROWS = ("mobilenet_v2", "se_mobilenet_v2", "eca_mobilenet_v2", "eca_mobilenet_v2:original", "eca_mobilenet_v2:timm")


def timed_models(depth) -> list:
    return list(MOBILENET_ROWS) if depth == MOBILENET else [name.format(depth) for name in PEERS]


def test_depth_all_times_every_row_at_every_depth(tmp_path):
    """One command: every peer at every depth, with the original code's and timm's ECA beside
    this project's; the Markdown on stdout, the progress on stderr, every row in the JSON."""
    result = run_script("scripts/benchmark.py", "--table", "sota", "--depth", "all", "--reference", *TINY,
                        "--json", tmp_path / "rows.json")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    depths = [*DEPTHS, MOBILENET]
    expected = [(depth, name, mode) for depth in depths for mode in ("eval", "train") for name in timed_models(depth)]
    assert [(row["depth"], row["model"], row["mode"]) for row in rows] == expected
    for depth in depths:
        for mode in ("eval", "train"):
            backbone, *others = [row for row in rows if row["depth"] == depth and row["mode"] == mode]
            assert backbone["fps_ratio"] == 1.0 and backbone["peak_ratio"] == 1.0
            for row in others:
                assert row["fps_ratio"] == pytest.approx(row["images_per_s"] / backbone["images_per_s"])
                assert row["peak_mib"] > 0 and row["peak_ratio"] == pytest.approx(row["peak_mib"] / backbone["peak_mib"])
    paper = {(row["depth"], row["model"], row["mode"]): row["paper_fps_ratio"] for row in rows}
    assert paper[(50, "eca_resnet50", "train")] == pytest.approx(785 / 1024)
    assert paper[(101, "cbam_resnet101", "eval")] == pytest.approx(635 / 1174)
    assert paper[(152, "eca_resnet152", "train")] == pytest.approx(279 / 281)
    assert paper[(MOBILENET, "eca_mobilenet_v2", "eval")] == pytest.approx(2010 / 2086)
    # The poster gives no FPS, the paper none for GCNet, and the reference rows are not the paper's.
    assert all(paper[(depth, name, mode)] is None for depth in (18, 34) for name in timed_models(depth) for mode in ("eval", "train"))
    assert all(value is None for (depth, name, mode), value in paper.items() if name.startswith("gc_") or ":" in name)

    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| row | model | format | training images/s | vs backbone | paper | training memory vs backbone")
    assert len(table) == 1 + sum(len(timed_models(depth)) for depth in depths)
    assert any(line.startswith("| ECA-Net-152 (timm) | `eca_resnet152:timm` | nchw |") for line in table)
    assert any(line.startswith("| CBAM-18 | `cbam_resnet18` | nchw |") for line in table)
    ratio_cells = [line.split(" | ")[4] for line in table[1:]]
    assert all(float(cell) > 0 for cell in ratio_cells)
    assert "skipped: a2_nets (no model here), aa_net (no model here), gsop_net1 (no model here)\n" in result.stderr
    assert "ResNet-152, run 1 of 1: resnet152, se_resnet152, cbam_resnet152, gc_resnet152, eca_resnet152, " in result.stderr
    assert "| eca_resnet18 | train | nchw |" in result.stderr and "| eca_resnet18 | train |" not in result.stdout
    assert "USDT" not in result.stderr  # the profiler's own log lines are kept out of the progress


def test_repeat_gives_each_ratio_the_median_and_range_of_the_runs(tmp_path):
    result = run_script("scripts/benchmark.py", "--table", "sota", "--depth", "mobilenet", "--modes", "eval", "--repeat", "2",
                        *TINY, "--json", tmp_path / "rows.json")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["mobilenet_v2", "se_mobilenet_v2", "eca_mobilenet_v2"]
    for row in rows:
        assert len(row["fps_ratios"]) == 2 and row["fps_ratio"] == pytest.approx(statistics.median(row["fps_ratios"]))
    eca = rows[-1]
    low, high = min(eca["fps_ratios"]), max(eca["fps_ratios"])
    assert f"| ECA-MobileNetV2 | `eca_mobilenet_v2` | nchw | - | - | - | - | {eca['images_per_s']:.1f} " \
           f"| {eca['fps_ratio']:.3f} ({low:.3f}-{high:.3f}) | {2010 / 2086:.3f} |" in result.stdout
    assert result.stderr.count("mobilenet, run ") == 2


def test_table_models_times_every_peer_at_every_depth():
    """At ResNet-18 the poster printed ResNet, SENet and ECA-Net only; CBAM and GCNet are timed too."""
    timed, skipped = table_models(18, ["original"])
    assert [name for _, name in timed] == ["resnet18", "se_resnet18", "cbam_resnet18", "gc_resnet18", "eca_resnet18",
                                          "eca_resnet18:original"]
    assert skipped == ["a2_nets (no model here)", "gsop_net1 (no model here)", "aa_net (no model here)"]
    assert all(row.train_fps is None for row, _ in timed)


def test_the_paper_ratios_beside_the_benchmark_are_its_fps_over_the_backbones():
    resnet, *_, eca = table_rows(SOTA, 50)
    assert paper_fps_ratio(eca, resnet, "train") == pytest.approx(785 / 1024) == pytest.approx(0.767, abs=5e-4)
    assert paper_fps_ratio(eca, resnet, "eval") == pytest.approx(1805 / 1855) == pytest.approx(0.973, abs=5e-4)
    assert paper_fps_ratio(table_rows(SOTA, 50)[3], resnet, "train") is None  # A2-Nets: no timing
    for depth, (train, inference) in {101: (0.984, 0.928), 152: (0.993, 0.963)}.items():
        resnet, *_, eca = table_rows(SOTA, depth)
        assert paper_fps_ratio(eca, resnet, "train") == pytest.approx(train, abs=5e-4)
        assert paper_fps_ratio(eca, resnet, "eval") == pytest.approx(inference, abs=5e-4)


@pytest.mark.parametrize("reference", sorted(REFERENCE_LAYERS))
def test_reference_layers_compute_this_projects_eca(reference):
    """The stand-ins share the layer's k taps and compute what it computes (float64), in a whole network too."""
    torch.manual_seed(15)
    layer = EfficientChannelAttention(24, 5).double()
    x = torch.randn(2, 24, 5, 6, dtype=torch.float64)
    pooled = x.mean(dim=(2, 3)).unsqueeze(1)
    gate = torch.sigmoid(F.conv1d(pooled, layer.conv.weight, padding=2)).view(2, 24, 1, 1)
    torch.testing.assert_close(REFERENCE_LAYERS[reference](layer)(x), x * gate, rtol=1e-14, atol=1e-15)
    model = models.eca_mobilenet_v2(num_classes=10).double().eval()
    swapped = with_reference_eca(copy.deepcopy(model), reference)
    assert not any(isinstance(module, EfficientChannelAttention) for module in swapped.modules())
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(swapped(images), model(images), rtol=1e-12, atol=1e-12)


def test_timm_missing_is_one_line_that_says_how_to_install_it():
    hide_timm = "import runpy, sys; sys.modules['timm'] = None; sys.argv[0] = 'scripts/benchmark.py'; " \
                "runpy.run_path('scripts/benchmark.py', run_name='__main__')"
    result = run_code(hide_timm, "--table", "sota", "--depth", "18", "--reference", "timm")
    assert result.returncode == 2
    assert result.stderr == "benchmark.py: error: --reference timm needs timm: pip install timm\n"


def test_reference_rows_go_to_the_models_with_eca_layers():
    """``:original`` swaps ECA layers: a model of another name with them (timm's ecaresnet50d) gets
    the row, a model named eca_* without them (ECA-NS) does not."""
    args = argparse.Namespace(models=["eca_ns_resnet50", "ecaresnet50d", "eca_resnet50"], reference=["original"])
    assert compared_names(args)[-2:] == ["ecaresnet50d:original", "eca_resnet50:original"]
    assert "eca_ns_resnet50:original" not in compared_names(args)

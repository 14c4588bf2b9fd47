"""The charts (utils/paper/charts.py) from tiny inputs: valid PNG and PDF files side by side, the
same bytes when saved again, labels whose drawn extents meet neither each other nor any point or
error bar, Figure 1's circle areas and Figure 4's axis from a table's rows, matplotlib's bundled
fonts whatever the rc settings; and scripts/plot_runs.py on run directories whose log.csv the
training code's own RunLog wrote."""

import itertools
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from helpers import ROOT, exit_status, run_script
from matplotlib import font_manager
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox
from PIL import Image

from scripts.plot_runs import main as plot_runs_main
from utils.longrun.run_log import RunLog
from utils.paper.charts import (
    NO_RUNS,
    LinePanel,
    LineSeries,
    ScatterPoint,
    accuracy_chart,
    chart_paths,
    line_chart,
    save_chart,
)
from utils.paper.report import RowResult, accuracy_figure, kernel_size_figure
from utils.paper.tables import KERNEL_SIZE, VARIANTS, table_rows

# The README's Table 2 at ResNet-18 on the demo's shapes: nine of ten rows within 0.1M parameters.
README_TABLE_2 = [("Vanilla", 10.66, 25.70), ("SE", 10.75, 78.20), ("SE-Var1", 10.66, 76.40), ("SE-Var2", 10.67, 72.60),
                  ("SE-Var3", 11.33, 79.60), ("SE-GC1", 10.71, 75.60), ("SE-GC2", 10.69, 74.50), ("SE-GC3", 10.68, 73.90),
                  ("ECA-NS", 10.67, 71.40), ("ECA", 10.66, 81.20)]


def drawn(figure):
    figure.canvas.draw()
    return figure.canvas.get_renderer()


def labels(figure):
    return [text for text in figure.axes[0].texts if isinstance(text, Annotation)]


def marker_boxes(figure):
    """Each scatter marker's square in pixels: its width is the square root of its area (points^2)."""
    axes, boxes = figure.axes[0], []
    for collection in axes.collections:
        if isinstance(collection, PathCollection):
            (x, y), = axes.transData.transform(collection.get_offsets())
            half = np.sqrt(collection.get_sizes()[0]) / 2 * figure.dpi / 72
            boxes.append(Bbox.from_extents(x - half, y - half, x + half, y + half))
    return boxes


def error_bar_boxes(figure):
    axes = figure.axes[0]
    return [Bbox(axes.transData.transform(segment)) for collection in axes.collections if isinstance(collection, LineCollection)
            for segment in collection.get_segments()]


def assert_labels_stand_clear(figure, expected):
    renderer = drawn(figure)
    texts = labels(figure)
    assert sorted(text.get_text() for text in texts) == sorted(expected)
    extents = [Text.get_window_extent(text, renderer) for text in texts]  # the text alone, not its line to the point
    frame = figure.axes[0].get_window_extent(renderer)
    for (first, one), (second, other) in itertools.combinations(zip(texts, extents), 2):
        assert not one.overlaps(other), (first.get_text(), second.get_text())
    for text, extent in zip(texts, extents):
        assert frame.contains(extent.x0, extent.y0) and frame.contains(extent.x1, extent.y1), text.get_text()
        for mark in marker_boxes(figure) + error_bar_boxes(figure):
            assert not extent.overlaps(mark), text.get_text()
    return extents


def assert_png_and_pdf(png, pdf, size):
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert (image.format, image.size) == ("PNG", size)
    data = Path(pdf).read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert b"DejaVuSans" in data  # the bundled font, embedded


def test_three_points_at_one_x_get_three_labels_clear_of_each_other_and_of_every_mark(tmp_path):
    points = [ScatterPoint(10.66, 80.0, "ECA", 1.0), ScatterPoint(10.66, 80.3, "Vanilla", 1.0), ScatterPoint(10.66, 79.8, "SE-Var1", 0.5)]
    figure = accuracy_chart(points, "three rows, one parameter count", "Parameters (M = 2^20)", "Top-1 (%)")
    assert len(error_bar_boxes(figure)) == 3
    assert_labels_stand_clear(figure, ["ECA", "Vanilla", "SE-Var1"])
    png, pdf = save_chart(figure, tmp_path / "three.png")
    assert (png, pdf) == (str(tmp_path / "three.png"), str(tmp_path / "three.pdf"))
    assert_png_and_pdf(png, pdf, (800, 600))
    assert sorted(os.listdir(tmp_path)) == ["three.pdf", "three.png"]  # no temporary file left


def test_the_readme_table_2_labels_every_row_beside_its_point_and_the_circles_share_one_flops_size():
    points = [ScatterPoint(params, top1, label, size=1.7 * 2**30, size_text="1.70G") for label, params, top1 in README_TABLE_2]
    figure = accuracy_chart(points, "Table 2", "Parameters (M = 2^20)", "Top-1 (%)")
    extents = assert_labels_stand_clear(figure, [label for label, _, _ in README_TABLE_2])
    centres = figure.axes[0].transData.transform([(point.x, point.y) for point in points])
    by_label = dict(zip((text.get_text() for text in labels(figure)), extents))
    for point, (x, y) in zip(points, centres):  # each label is near its own point: within 80 px
        box = by_label[point.label]
        assert np.hypot(max(box.x0 - x, 0, x - box.x1), max(box.y0 - y, 0, y - box.y1)) < 80, point.label
    sizes = {collection.get_sizes()[0] for collection in figure.axes[0].collections if isinstance(collection, PathCollection)}
    assert len(sizes) == 1
    key = figure.legends[0]
    assert key.get_title().get_text() == "circle area: FLOPs" and [text.get_text() for text in key.get_texts()] == ["1.70G"]


def test_circle_area_is_proportional_to_flops_down_to_a_smallest_circle():
    flops = (1, 40, 80, 100)
    points = [ScatterPoint(1.0 + index, 70.0 + index, f"R{index}", size=size, size_text=f"{size}") for index, size in enumerate(flops)]
    figure = accuracy_chart(points, "sizes", "x", "y")
    sizes = [collection.get_sizes()[0] for collection in figure.axes[0].collections if isinstance(collection, PathCollection)]
    assert sizes[1] / sizes[3] == pytest.approx(40 / 100) and sizes[2] / sizes[3] == pytest.approx(80 / 100)
    assert sizes[0] > sizes[3] / 100  # a circle too small to see is drawn at the smallest size
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["1", "100"]


def test_points_with_no_room_for_their_labels_are_named_in_a_legend_instead():
    points = [ScatterPoint(5.0, 50.0 + 0.01 * index, f"attention variant {index}") for index in range(12)]
    figure = accuracy_chart(points, "crowded", "x", "y", figsize=(3.0, 2.5))
    renderer = drawn(figure)
    assert labels(figure) == []
    legend = figure.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [point.label for point in points]
    frame = figure.axes[0].get_window_extent(renderer)
    assert not legend.get_window_extent(renderer).overlaps(frame)


def test_an_empty_chart_says_nothing_is_measured_yet(tmp_path):
    figure = accuracy_chart([], "nothing yet", "x", "y")
    assert [text.get_text() for text in figure.axes[0].texts] == [NO_RUNS]
    assert_png_and_pdf(*save_chart(figure, tmp_path / "empty"), (800, 600))


def test_a_chart_saved_twice_is_the_same_bytes(tmp_path):
    figure = accuracy_chart([ScatterPoint(1.0, 2.0, "one", 0.1)], "again", "x", "y")
    first = [Path(path).read_bytes() for path in save_chart(figure, tmp_path / "a.png")]
    second = [Path(path).read_bytes() for path in save_chart(accuracy_chart([ScatterPoint(1.0, 2.0, "one", 0.1)], "again", "x", "y"),
                                                             tmp_path / "b.pdf")]
    assert first == second


@pytest.mark.parametrize("name, expected", [("fig.png", ("fig.png", "fig.pdf")), ("fig.PDF", ("fig.png", "fig.pdf")),
                                            ("fig", ("fig.png", "fig.pdf")), ("fig.v2.png", ("fig.v2.png", "fig.v2.pdf"))])
def test_chart_paths_put_the_pdf_beside_the_png(name, expected, tmp_path):
    assert chart_paths(tmp_path / name) == tuple(tmp_path / file for file in expected)


def test_a_chart_named_for_another_format_is_refused():
    with pytest.raises(ValueError, match=r"^gates\.jpg: a chart is written as PNG and PDF; name it NAME\.png \(NAME\.pdf goes beside\)$"):
        chart_paths("gates.jpg")


def test_text_is_drawn_in_the_bundled_dejavu_whatever_the_rc_settings(tmp_path):
    with matplotlib.rc_context({"font.family": "serif", "font.serif": ["Liberation Serif", "Times New Roman"], "font.size": 30}):
        figure = accuracy_chart([ScatterPoint(1.0, 2.0, "ECA")], "fonts", "x", "y")
        drawn(figure)
    texts = [text for text in figure.findobj(Text) if text.get_text()]
    assert {text.get_text() for text in texts} >= {"ECA", "fonts", "x", "y"}
    bundled = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
    for text in texts:
        assert font_manager.findfont(text.get_fontproperties()) == bundled, text.get_text()
    assert max(text.get_fontsize() for text in texts) <= 11


def kernel_size_results(top1_by_row):
    rows = {row.key: row for row in table_rows(KERNEL_SIZE, 18)}
    return [RowResult(rows[key], rows[key].label_at(18), rows[key].model.format(depth=18), "done", 1, 1, tuple(top1))
            for key, top1 in top1_by_row.items()]


def test_figure_4_from_the_kernel_size_rows_puts_k_in_order_the_adaptive_k_last_and_senet_as_a_line(tmp_path):
    results = kernel_size_results({"k9": (71.0,), "k3": (70.0, 70.4), "adaptive": (71.5, 71.1), "k5": (70.5,), "senet": (69.0, 69.6)})
    figure = kernel_size_figure(results, "Figure 4")
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["3", "5", "9", "adaptive"]
    (fixed, *_), (adaptive, *_) = (container.lines for container in axes.containers)  # each error bar's line of values
    senet = axes.lines[-1]
    assert list(fixed.get_xdata()) == [0, 1, 2] and list(fixed.get_ydata()) == pytest.approx([70.2, 70.5, 71.0])
    assert list(adaptive.get_xdata()) == [3] and list(adaptive.get_ydata()) == pytest.approx([71.3]) and adaptive.get_marker() == "*"
    assert list(senet.get_ydata()) == pytest.approx([69.3, 69.3]) and senet.get_linestyle() == "--"
    (_, band_low), (_, band_high) = axes.transData.inverted().transform(axes.patches[0].get_extents().get_points())
    assert (band_low, band_high) == pytest.approx((69.3 - 0.4243, 69.3 + 0.4243), abs=0.01)  # SENet's spread over its two seeds
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [
        "eca_resnet18, one k in every layer", "eca_resnet18, adaptive k", "SENet-18"]
    assert_png_and_pdf(*save_chart(figure, tmp_path / "figure4.png"), (800, 500))


def test_figure_4_before_any_run_finished_says_so():
    figure = kernel_size_figure(kernel_size_results({"k3": (), "senet": ()}), "Figure 4")
    assert [text.get_text() for text in figure.axes[0].texts] == [NO_RUNS]


def test_figure_1_from_the_variants_rows_leaves_out_rows_without_runs():
    rows = table_rows(VARIANTS, 18)
    results = [RowResult(rows[0], "Vanilla", "resnet18", "done", 11_176_512, 1_824_033_792, (60.0, 62.0)),
               RowResult(rows[9], "ECA", "eca_resnet18", "done", 11_176_524, 1_824_563_712, (70.0,)),
               RowResult(rows[1], "SE", "se_resnet18", "pending", 11_265_000, 1_825_000_000)]
    figure = accuracy_figure(results, "Table 2")
    assert_labels_stand_clear(figure, ["Vanilla", "ECA"])
    offsets = [tuple(collection.get_offsets()[0]) for collection in figure.axes[0].collections if isinstance(collection, PathCollection)]
    assert offsets == [pytest.approx((11_176_512 / 2**20, 61.0)), pytest.approx((11_176_524 / 2**20, 70.0))]
    assert len(error_bar_boxes(figure)) == 1  # two seeds give Vanilla a spread; ECA's one seed none
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["1.70G"]


def test_line_panels_share_a_colour_per_name_and_a_dash_per_kind():
    panels = [
        LinePanel("loss", [LineSeries("eca", [2.0, 1.0], [0, 1], "validation"), LineSeries("eca", [2.5, 1.5], [0, 1], "training"),
                           LineSeries("se", [2.1, 1.2], [0, 1], "validation")], "loss"),
        LinePanel("lr", [LineSeries("eca", [0.1, 0.01], [0, 1]), LineSeries("se", [0.1, 0.01], [0, 1])], "lr", log_y=True),
    ]
    figure = line_chart(panels, "epoch", columns=2)
    loss, lr = figure.axes
    assert [line.get_color() for line in loss.lines] == [lr.lines[0].get_color(), lr.lines[0].get_color(), lr.lines[1].get_color()]
    assert loss.lines[0].get_color() != loss.lines[2].get_color()
    assert [line.get_linestyle() for line in loss.lines] == ["-", "--", "-"]
    assert lr.get_yscale() == "log" and loss.get_yscale() == "linear"
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["eca", "se", "validation", "training"]


def write_log(run_dir, epochs):
    """A run directory's log.csv as main.py's RunLog writes it, after ``epochs`` epochs."""
    run_dir.mkdir(parents=True)
    log = RunLog(str(run_dir))
    for epoch in range(epochs):
        log.log_epoch({"epoch": epoch, "lr": 0.1 if epoch < 2 else 0.01, "train_loss": 2.0 - 0.3 * epoch, "train_prec1": 20.0 + 10 * epoch,
                       "train_prec5": 60.0, "train_images_per_s": 100.0, "val_loss": 1.8 - 0.3 * epoch, "val_prec1": 25.0 + 10 * epoch,
                       "val_prec5": 70.0, "epoch_seconds": 3.0})
    log.close()
    return run_dir


def test_plot_runs_draws_every_run_that_has_an_epoch_named_by_the_shortest_distinct_path(tmp_path):
    eca, se = write_log(tmp_path / "table" / "eca" / "seed0", 3), write_log(tmp_path / "table" / "se" / "seed0", 2)
    fresh = write_log(tmp_path / "table" / "cbam" / "seed0", 0)
    out = tmp_path / "charts" / "curves.png"
    out.parent.mkdir()
    result = run_script("scripts/plot_runs.py", eca, se, fresh, "--out", out, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"=> {out} and {out.with_suffix('.pdf')}: 2 run(s), up to 3 epochs; no epoch yet: cbam/seed0\n"
    assert_png_and_pdf(out, out.with_suffix(".pdf"), (1020, 320))


def test_plot_runs_panels_hold_each_runs_columns_against_its_epochs(tmp_path):
    from scripts.plot_runs import panels, read_log

    logs = {"a": read_log(str(write_log(tmp_path / "a", 3))), "b": read_log(str(write_log(tmp_path / "b", 1)))}
    loss, top1, lr = panels(logs)
    assert [(line.name, line.kind, list(line.x), list(line.values)) for line in top1.series] == [
        ("a", "validation", [0, 1, 2], [25.0, 35.0, 45.0]), ("a", "training", [0, 1, 2], [20.0, 30.0, 40.0]),
        ("b", "validation", [0], [25.0]), ("b", "training", [0], [20.0])]
    assert [list(line.values) for line in loss.series[:2]] == [pytest.approx([1.8, 1.5, 1.2]), pytest.approx([2.0, 1.7, 1.4])]
    assert lr.log_y and [list(line.values) for line in lr.series] == [[0.1, 0.1, 0.01], [0.1]]


@pytest.mark.parametrize(
    "setup, argv, message",
    [
        (None, ["{tmp}/missing"], "run directory {tmp}/missing does not exist"),
        ("empty", ["{tmp}/run"], "{tmp}/run has no log.csv (main.py writes it after each epoch)"),
        ("detection", ["{tmp}/run"], "{tmp}/run/log.csv has no val_loss column: plot_runs.py draws main.py's runs"),
        ("fresh", ["{tmp}/run"], "no run has finished an epoch yet"),
        ("run", ["{tmp}/run", "{tmp}/run/"], "{tmp}/run/ is given twice"),
        ("run", ["{tmp}/run", "--labels", "a", "b"], "--labels: 2 names for 1 runs"),
        ("run", ["{tmp}/run", "--out", "{tmp}/curves.svg"], "--out {tmp}/curves.svg: a chart is written as PNG and PDF"),
    ],
)
def test_plot_runs_bad_input_is_one_line_exit_2_and_no_chart(setup, argv, message, tmp_path, capsys):
    if setup == "run":
        write_log(tmp_path / "run", 1)
    elif setup == "fresh":
        write_log(tmp_path / "run", 0)
    elif setup == "empty":
        (tmp_path / "run").mkdir()
    elif setup == "detection":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "log.csv").write_text("epoch,lr,train_loss,val_bbox_AP\n0,0.01,1.5,30.0\n")
    status = exit_status(plot_runs_main, [arg.format(tmp=tmp_path) for arg in argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"plot_runs.py: error: {message.format(tmp=tmp_path)}"), err
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.pdf")) and not (ROOT / "curves.png").exists()

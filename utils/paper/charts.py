"""The charts the project draws, on matplotlib: the paper's Figure 1 (Top-1 against parameters,
circle area = FLOPs), its Figure 4 (Top-1 against the kernel size k) and panels of lines (the
poster's channel gates, training curves of several runs).

Every chart is a :class:`~matplotlib.figure.Figure` on the Agg canvas, made through the
object-oriented API (no pyplot: nothing carries over from one chart to the next), in matplotlib's
default style and its bundled DejaVu fonts whatever the machine's matplotlibrc or fonts, so the
same numbers draw the same picture everywhere. :func:`save_chart` writes it as PNG and PDF side
by side, each file atomically: a table rewritten after every run never leaves half a picture.
"""

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import matplotlib.style
import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

from utils.checkpoint import PathLike, atomic_write

__all__ = [
    "ScatterPoint",
    "KernelSizePoint",
    "ReferenceLine",
    "LineSeries",
    "LinePanel",
    "accuracy_chart",
    "kernel_size_chart",
    "line_chart",
    "chart_paths",
    "save_chart",
]

DPI = 100
STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # bundled with matplotlib, found before any system copy
    "mathtext.fontset": "dejavusans",
    "font.size": 10,
    "pdf.fonttype": 42,  # TrueType in the PDF: its text stays text in LaTeX and vector editors
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P")
"""A point's marker changes once the colours have all been used, so no two points look alike."""
DASHES = ("-", "--", ":", "-.")
MAX_BUBBLE_AREA, MIN_BUBBLE_AREA, PLAIN_MARKER_AREA = 300.0, 30.0, 60.0
"""Marker areas (scatter's ``s``, points^2): the largest FLOPs get the largest circle, the area proportional to FLOPs."""
MARKER_EDGE = 0.6
ERROR_CAP = 4
"""An error bar's cap: half its width, in points."""
LABEL_FONT_SIZE = 9
LABEL_GAP = 3
"""Pixels kept free between a label and any point, error bar, line or other label."""
LEADER_FROM = 8
"""A label further than this many pixels from its point's edge gets a thin line to it."""
SEARCH_STEP = 3
"""Pixels between the positions tried for a label."""
CANDIDATES_AT_ONCE = 4096
"""Positions tested together, nearest first: most labels find room in the first batch."""
NO_RUNS = "no finished runs yet"
DENSE = 50
"""A line of more values than this is drawn thin and without markers."""


@dataclass(frozen=True)
class ScatterPoint:
    x: float
    y: float
    label: str
    y_spread: Optional[float] = None
    """Drawn as an error bar of +- this much; None: none."""
    size: Optional[float] = None
    """The circle's area is proportional to it (FLOPs); None: a plain marker."""
    size_text: str = ""
    """``size`` as the size key prints it ('1.70G')."""


@dataclass(frozen=True)
class KernelSizePoint:
    k: Optional[int]
    """The one k of every ECA layer; None: Eq. 12's adaptive k."""
    y: float
    y_spread: Optional[float] = None


@dataclass(frozen=True)
class ReferenceLine:
    """A horizontal line across a chart (a baseline), with a band of +- ``y_spread``."""

    label: str
    y: float
    y_spread: Optional[float] = None


@dataclass(frozen=True)
class LineSeries:
    name: str
    """Series of one name share a colour in every panel and one legend entry."""
    values: Sequence[float]
    x: Optional[Sequence[float]] = None
    """None: 0, 1, 2, ..."""
    kind: str = ""
    """Series of one kind share a dash: the first kind drawn is solid, the second dashed...; '' is solid."""


@dataclass(frozen=True)
class LinePanel:
    title: str
    series: Sequence[LineSeries]
    y_label: str = ""
    y_limits: Optional[Tuple[float, float]] = None
    log_y: bool = False


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """matplotlib's defaults, not the machine's matplotlibrc, and the project's few changes."""
    with matplotlib.style.context("default"), rc_context(STYLE):
        yield


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _say_no_runs(axes: Axes) -> None:
    axes.text(0.5, 0.5, NO_RUNS, transform=axes.transAxes, ha="center", va="center", color="#555555")


def _padded(low: float, high: float, fraction: float, least: float) -> Tuple[float, float]:
    pad = max((high - low) * fraction, least)
    return low - pad, high + pad


def _marker(index: int) -> str:
    return MARKERS[index // len(COLOURS) % len(MARKERS)]


def _bubble_areas(points: Sequence[ScatterPoint]) -> List[float]:
    largest = max((point.size for point in points if point.size), default=None)
    if largest is None:
        return [PLAIN_MARKER_AREA] * len(points)
    return [max(MAX_BUBBLE_AREA * point.size / largest, MIN_BUBBLE_AREA) if point.size else PLAIN_MARKER_AREA for point in points]


def _size_key(figure: Figure, points: Sequence[ScatterPoint], areas: Sequence[float], size_label: str) -> None:
    """Below the chart: the smallest and the largest circle with what they stand for."""
    smallest = {}  # each printed size once, at its smallest circle
    for area, text in sorted((area, point.size_text) for point, area in zip(points, areas) if point.size):
        smallest.setdefault(text, area)
    if not smallest:
        return
    sized = sorted((area, text) for text, area in smallest.items())
    shown = sized[:1] + sized[1:][-1:]
    handles = [Line2D([], [], linestyle="", marker="o", markersize=math.sqrt(area), markerfacecolor="none", markeredgecolor="#555555")
               for area, _ in shown]
    figure.legend(handles, [text for _, text in shown], title=f"circle area: {size_label}", loc="outside lower center",
                  ncols=len(shown), frameon=False, fontsize=LABEL_FONT_SIZE, title_fontsize=LABEL_FONT_SIZE)


def accuracy_chart(
    points: Sequence[ScatterPoint], title: str, x_label: str, y_label: str, size_label: str = "FLOPs",
    figsize: Tuple[float, float] = (8.0, 6.0),
) -> Figure:
    """One circle per point (area = its ``size``) with its error bar, labelled beside it where no
    other label, point or bar is; if the points leave no room for every label, a legend names
    them instead. An empty chart says that nothing is measured yet."""
    with _style():
        figure = _figure(*figsize)
        axes = figure.add_subplot()
        axes.set_title(title, fontsize=11)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        if not points:
            _say_no_runs(axes)
            return figure
        areas = _bubble_areas(points)
        colours = [COLOURS[index % len(COLOURS)] for index in range(len(points))]
        for index, (point, area, colour) in enumerate(zip(points, areas, colours)):
            if point.y_spread:
                axes.errorbar(point.x, point.y, yerr=point.y_spread, fmt="none", ecolor=colour, elinewidth=1.2, capsize=ERROR_CAP, zorder=2)
            axes.scatter(point.x, point.y, s=area, color=colour, marker=_marker(index), alpha=0.75, edgecolors="black",
                         linewidths=MARKER_EDGE, zorder=3)
        xs = [point.x for point in points]
        ys = [point.y + sign * (point.y_spread or 0) for point in points for sign in (-1, 1)]
        axes.set_xlim(*_padded(min(xs), max(xs), 0.15, 0.03 * max(abs(x) for x in xs) or 0.5))
        axes.set_ylim(*_padded(min(ys), max(ys), 0.1, 0.5))
        _size_key(figure, points, areas, size_label)
        figure.canvas.draw()  # lays the chart out; labels are then placed in its pixels, and the layout stays
        figure.set_layout_engine("none")
        if not _label_points(axes, points, areas, colours):
            keys = [Line2D([], [], linestyle="", marker=_marker(index), color=colour, markersize=7) for index, colour in enumerate(colours)]
            axes.legend(keys, [point.label for point in points], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=LABEL_FONT_SIZE,
                        borderaxespad=0)
            figure.set_layout_engine("constrained")
    return figure


def _overlaps(boxes: np.ndarray, obstacles: np.ndarray) -> np.ndarray:
    """Whether each box (x0, y0, x1, y1 rows) meets any obstacle box."""
    if not len(obstacles):
        return np.zeros(len(boxes), dtype=bool)
    return ((boxes[:, None, 0] < obstacles[None, :, 2]) & (obstacles[None, :, 0] < boxes[:, None, 2])
            & (boxes[:, None, 1] < obstacles[None, :, 3]) & (obstacles[None, :, 1] < boxes[:, None, 3])).any(axis=1)


def _segment_boxes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A line from ``start`` to ``end`` as the SEARCH_STEP-pixel squares that cover it, for the overlap test."""
    steps = max(int(np.hypot(*(end - start)) / SEARCH_STEP), 1)
    centres = start + np.linspace(0.0, 1.0, steps + 1)[:, None] * (end - start)
    return np.hstack([centres - SEARCH_STEP / 2, centres + SEARCH_STEP / 2])


def _ink(colour: str) -> Tuple[float, float, float]:
    """A point's colour darkened for its label: light colours (olive, cyan) stay readable on white."""
    red, green, blue = to_rgb(colour)
    return red * 0.75, green * 0.75, blue * 0.75


def _segments_cross(start: np.ndarray, ends: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether the line from ``start`` to each of ``ends`` passes through any of ``boxes`` (slab test)."""
    if not len(boxes):
        return np.zeros(len(ends), dtype=bool)
    direction = ends - start
    direction[direction == 0] = 1e-9
    near_sides = (boxes[None, :, :2] - start) / direction[:, None, :]
    far_sides = (boxes[None, :, 2:] - start) / direction[:, None, :]
    enter = np.minimum(near_sides, far_sides).max(axis=2)
    leave = np.maximum(near_sides, far_sides).min(axis=2)
    return ((enter <= leave) & (leave >= 0) & (enter <= 1)).any(axis=1)


def _label_points(axes: Axes, points: Sequence[ScatterPoint], areas: Sequence[float], colours: Sequence[str]) -> bool:
    """Each point's label at the nearest free place around it, the most crowded points first, with
    a thin line to its point where it had to go further; False (and no labels) if one found no room."""
    renderer = axes.figure.canvas.get_renderer()
    pixels_per_point = axes.figure.dpi / 72
    centres = axes.transData.transform([(point.x, point.y) for point in points])
    radii = (np.sqrt(areas) / 2 + MARKER_EDGE / 2) * pixels_per_point  # a marker's width is the square root of its area
    frame = axes.get_window_extent(renderer)
    marks = [np.array([x - r, y - r, x + r, y + r]) for (x, y), r in zip(centres, radii)]
    cap = ERROR_CAP * pixels_per_point + 1
    for point, (x, _) in zip(points, centres):
        if point.y_spread:
            (_, low), (_, high) = axes.transData.transform([(point.x, point.y - point.y_spread), (point.x, point.y + point.y_spread)])
            marks.append(np.array([x - cap, low - 1, x + cap, high + 1]))
    labels: List[np.ndarray] = []
    crowding = [int((np.hypot(*(centres - centre).T) < 60).sum()) for centre in centres]
    placed = []
    for index in sorted(range(len(points)), key=lambda index: (-crowding[index], index)):
        probe = axes.text(0, 0, points[index].label, fontsize=LABEL_FONT_SIZE)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        spot = _free_spot(centres[index], radii[index], (extent.width, extent.height), frame, np.array(marks + labels), np.array(labels))
        if spot is None:
            for text in placed:
                text.remove()
            return False
        box, leader = spot
        middle = (box[:2] + box[2:]) / 2
        point = points[index]
        arrow = dict(arrowstyle="-", color=colours[index], linewidth=0.7, shrinkA=1, shrinkB=radii[index] / pixels_per_point)
        placed.append(axes.annotate(point.label, (point.x, point.y), xytext=tuple((middle - centres[index]) / pixels_per_point),
                                    textcoords="offset points", ha="center", va="center", fontsize=LABEL_FONT_SIZE,
                                    color=_ink(colours[index]), arrowprops=arrow if leader else None, zorder=4))
        labels.append(box)
        if leader:
            marks.extend(_segment_boxes(centres[index], middle))
    return True


def _free_spot(centre: np.ndarray, radius: float, size: Tuple[float, float], frame: Bbox, obstacles: np.ndarray,
               labels: np.ndarray) -> Optional[Tuple[np.ndarray, bool]]:
    """The label box (x0, y0, x1, y1) nearest ``centre`` inside ``frame`` that keeps LABEL_GAP from every
    obstacle, and whether it needs a line to its point (a line that crosses no other label); None if none."""
    width, height = size
    lefts = np.arange(frame.x0 + LABEL_GAP, frame.x1 - LABEL_GAP - width, SEARCH_STEP)
    bottoms = np.arange(frame.y0 + LABEL_GAP, frame.y1 - LABEL_GAP - height, SEARCH_STEP)
    if not len(lefts) or not len(bottoms):
        return None
    grid_x, grid_y = np.meshgrid(lefts, bottoms)
    boxes = np.stack([grid_x.ravel(), grid_y.ravel(), grid_x.ravel() + width, grid_y.ravel() + height], axis=1)
    gaps = np.hypot(np.maximum.reduce([boxes[:, 0] - centre[0], np.zeros(len(boxes)), centre[0] - boxes[:, 2]]),
                    np.maximum.reduce([boxes[:, 1] - centre[1], np.zeros(len(boxes)), centre[1] - boxes[:, 3]]))
    # beside the point reads best: to its right, then above; further away only where that is taken
    cost = gaps + 2.0 * (boxes[:, 2] <= centre[0]) + 1.0 * (boxes[:, 3] <= centre[1])
    margin = np.array([-LABEL_GAP, -LABEL_GAP, LABEL_GAP, LABEL_GAP])
    obstacles, labels = obstacles.reshape(-1, 4) + margin, labels.reshape(-1, 4) + margin
    order = np.argsort(cost, kind="stable")
    for start in range(0, len(order), CANDIDATES_AT_ONCE):
        chunk = order[start:start + CANDIDATES_AT_ONCE]
        leader = gaps[chunk] - radius > LEADER_FROM
        middles = (boxes[chunk, :2] + boxes[chunk, 2:]) / 2
        good = ~_overlaps(boxes[chunk], obstacles) & ~(leader & _segments_cross(centre, middles, labels))
        if good.any():
            first = int(np.argmax(good))
            return boxes[chunk[first]], bool(leader[first])
    return None


def _spreads(points: Sequence[KernelSizePoint]) -> Optional[List[float]]:
    """Error bars where any point has a spread (zero for the others); None draws none."""
    return [point.y_spread or 0.0 for point in points] if any(point.y_spread for point in points) else None


def kernel_size_chart(points: Sequence[KernelSizePoint], references: Sequence[ReferenceLine], series: str, title: str,
                      y_label: str = "Top-1 (%)") -> Figure:
    """As the paper's Figure 4: Top-1 at each fixed k joined by a line, the adaptive k marked beside
    them, each reference (SENet) a dashed line across with its spread as a band."""
    with _style():
        figure = _figure(8.0, 5.0)
        axes = figure.add_subplot()
        axes.set_title(title, fontsize=11)
        axes.set_xlabel("kernel size k (the same in every ECA layer), and the adaptive k of Eq. 12")
        axes.set_ylabel(y_label)
        if not points and not references:
            _say_no_runs(axes)
            return figure
        fixed = sorted((point for point in points if point.k is not None), key=lambda point: point.k)
        adaptive = [point for point in points if point.k is None]
        ticks = [str(point.k) for point in fixed] + ["adaptive"] * bool(adaptive)
        keys = []
        if fixed:
            keys.append(axes.errorbar(range(len(fixed)), [point.y for point in fixed], yerr=_spreads(fixed), color=COLOURS[0], marker="o",
                                      capsize=4, label=f"{series}, one k in every layer", zorder=3))
        if adaptive:
            keys.append(axes.errorbar([len(fixed)], [adaptive[0].y], yerr=_spreads(adaptive), color=COLOURS[1], marker="*", markersize=14,
                                      linestyle="none", capsize=4, label=f"{series}, adaptive k", zorder=3))
        for number, reference in enumerate(references):
            colour = COLOURS[(number + 2) % len(COLOURS)]
            keys.append(axes.axhline(reference.y, color=colour, linestyle="--", linewidth=1.5, label=reference.label, zorder=2))
            if reference.y_spread:
                axes.axhspan(reference.y - reference.y_spread, reference.y + reference.y_spread, color=colour, alpha=0.15, linewidth=0)
        axes.set_xticks(range(len(ticks)), ticks)
        axes.set_xlim(-0.5, max(len(ticks), 1) - 0.5)
        values = [point.y + sign * (point.y_spread or 0) for point in (*points, *references) for sign in (-1, 1)]
        axes.set_ylim(*_padded(min(values), max(values), 0.15, 0.25))
        figure.legend(handles=keys, loc="outside lower center", ncols=3, frameon=False, fontsize=LABEL_FONT_SIZE)
    return figure


def line_chart(panels: Sequence[LinePanel], x_label: str, columns: int = 1, panel_size: Tuple[float, float] = (9.0, 3.2),
               integer_x: bool = False) -> Figure:
    """Panels in ``columns`` columns; a series' name keeps its colour in every panel and its kind its
    dash, and one legend beside the panels names both."""
    rows = math.ceil(len(panels) / columns)
    with _style():
        figure = _figure(panel_size[0] * columns, panel_size[1] * rows)
        names = list(dict.fromkeys(series.name for panel in panels for series in panel.series))
        kinds = list(dict.fromkeys(series.kind for panel in panels for series in panel.series if series.kind))
        colour = {name: COLOURS[index % len(COLOURS)] for index, name in enumerate(names)}
        dash = {kind: DASHES[index % len(DASHES)] for index, kind in enumerate(kinds)}
        for number, panel in enumerate(panels):
            axes = figure.add_subplot(rows, columns, number + 1)
            for series in panel.series:
                x = range(len(series.values)) if series.x is None else series.x
                dense = len(series.values) > DENSE  # hundreds of channels: thin lines, no markers
                axes.plot(x, series.values, color=colour[series.name], linestyle=dash.get(series.kind, "-"),
                          linewidth=0.8 if dense else 1.3, marker=None if dense else "o", markersize=3)
            axes.margins(x=0.02)
            axes.set_title(panel.title, fontsize=10)
            axes.set_xlabel(x_label)
            axes.set_ylabel(panel.y_label)
            if panel.log_y:
                axes.set_yscale("log")
            if panel.y_limits is not None:
                axes.set_ylim(*panel.y_limits)
            if integer_x:
                axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            if not panel.series:
                _say_no_runs(axes)
        handles = [Line2D([], [], color=colour[name], linewidth=2) for name in names]
        handles += [Line2D([], [], color="black", linestyle=dash[kind], linewidth=1.3) for kind in kinds]
        if handles:
            figure.legend(handles, names + kinds, loc="outside right upper", fontsize=LABEL_FONT_SIZE, frameon=False)
    return figure


def chart_paths(path: PathLike) -> Tuple[Path, Path]:
    """The PNG and the PDF of a chart named ``path`` (ending in .png, .pdf, or neither); a ValueError
    for another suffix."""
    path = Path(path)
    if path.suffix.lower() in (".png", ".pdf"):
        path = path.with_suffix("")
    elif path.suffix:
        raise ValueError(f"{path}: a chart is written as PNG and PDF; name it NAME.png (NAME.pdf goes beside)")
    return path.with_name(path.name + ".png"), path.with_name(path.name + ".pdf")


def save_chart(figure: Figure, path: PathLike) -> List[str]:
    """The chart as ``NAME.png`` and ``NAME.pdf`` (see :func:`chart_paths`), each replaced whole; their paths.

    No creation date or software version goes into either file, so one chart is the same bytes however often it is saved.
    """
    png, pdf = chart_paths(path)
    with _style():
        atomic_write(png, lambda handle: figure.savefig(handle, format="png", metadata={"Software": None}))
        atomic_write(pdf, lambda handle: figure.savefig(handle, format="pdf", metadata={"CreationDate": None, "Producer": None}))
    return [str(png), str(pdf)]

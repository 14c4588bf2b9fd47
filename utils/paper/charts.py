"""Small PNG charts drawn with PIL (matplotlib is not a dependency): a labelled scatter, as the
paper's Figure 1 (Top-1 against parameters), and panels of lines, as the poster's channel gates.
Files are written atomically, so a table rewritten after every row never leaves half a PNG."""

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

from utils.checkpoint import PathLike, atomic_write

__all__ = ["ScatterPoint", "LineSeries", "LinePanel", "nice_ticks", "scatter_chart", "line_chart", "save_png"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
BACKGROUND, INK, GRID = "white", "black", "#dddddd"
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 80, 30, 50, 60
TICK = 5


@dataclass(frozen=True)
class ScatterPoint:
    x: float
    y: float
    label: str
    y_spread: Optional[float] = None
    """Drawn as an error bar of +- this much; None: none."""


@dataclass(frozen=True)
class LineSeries:
    name: str
    values: Sequence[float]


@dataclass(frozen=True)
class LinePanel:
    title: str
    series: Sequence[LineSeries]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: one bitmap size
        return ImageFont.load_default()


def nice_ticks(low: float, high: float, count: int = 5) -> List[float]:
    """About ``count`` round values (steps of 1, 2 or 5 times a power of ten) covering [low, high]."""
    if high <= low:
        low, high = low - 0.5, low + 0.5
    raw_step = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw_step)
    first = math.floor(low / step)
    last = max(math.ceil(high / step), first + 1)
    return [round(index * step, 10) for index in range(first, last + 1)]


def _tick_text(value: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0]
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


class _Axes:
    """A plot area inside ``box`` (left, top, right, bottom) mapping data ranges onto pixels."""

    def __init__(
        self, draw: ImageDraw.ImageDraw, box: Tuple[int, int, int, int], x_ticks: Sequence[float], y_ticks: Sequence[float],
        x_limits: Optional[Tuple[float, float]] = None,
    ) -> None:
        """``x_limits``: the x range when it is not the ticks' (the ticks must lie inside it)."""
        self.draw, self.box, self.x_ticks, self.y_ticks = draw, box, x_ticks, y_ticks
        self.x_limits = x_limits or (x_ticks[0], x_ticks[-1])

    def point(self, x: float, y: float) -> Tuple[float, float]:
        left, top, right, bottom = self.box
        (x_low, x_high), y_low, y_high = self.x_limits, self.y_ticks[0], self.y_ticks[-1]
        return left + (x - x_low) / (x_high - x_low) * (right - left), bottom - (y - y_low) / (y_high - y_low) * (bottom - top)

    def frame(self, x_label: str, y_label: str, title: str, font: ImageFont.ImageFont) -> None:
        left, top, right, bottom = self.box
        for x in self.x_ticks:
            px = self.point(x, self.y_ticks[0])[0]
            self.draw.line([(px, top), (px, bottom)], fill=GRID)
            self.draw.line([(px, bottom), (px, bottom + TICK)], fill=INK)
            self.draw.text((px, bottom + TICK + 2), _tick_text(x, self.x_ticks), fill=INK, font=font, anchor="mt")
        for y in self.y_ticks:
            py = self.point(self.x_ticks[0], y)[1]
            self.draw.line([(left, py), (right, py)], fill=GRID)
            self.draw.line([(left - TICK, py), (left, py)], fill=INK)
            self.draw.text((left - TICK - 2, py), _tick_text(y, self.y_ticks), fill=INK, font=font, anchor="rm")
        self.draw.rectangle(self.box, outline=INK)
        self.draw.text(((left + right) / 2, bottom + TICK + 22), x_label, fill=INK, font=font, anchor="mt")
        self.draw.text((left, top - 6), y_label, fill=INK, font=font, anchor="ls")
        self.draw.text(((left + right) / 2, top - 22), title, fill=INK, font=font, anchor="ms")


def _padded_ticks(values: Sequence[float]) -> List[float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or max(abs(high) * 0.05, 0.5)
    return nice_ticks(low - pad, high + pad)


def scatter_chart(
    points: Sequence[ScatterPoint], title: str, x_label: str, y_label: str, size: Tuple[int, int] = (800, 600)
) -> Image.Image:
    """One labelled mark per point (with its error bar); an empty chart says that nothing is measured yet."""
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(13)
    xs = [point.x for point in points] or [0.0, 1.0]
    ys = [point.y + sign * (point.y_spread or 0) for point in points for sign in (-1, 1)] or [0.0, 1.0]
    axes = _Axes(draw, (MARGIN_LEFT, MARGIN_TOP, size[0] - MARGIN_RIGHT, size[1] - MARGIN_BOTTOM), _padded_ticks(xs), _padded_ticks(ys))
    axes.frame(x_label, y_label, title, font)
    if not points:
        draw.text((size[0] / 2, size[1] / 2), "no finished runs yet", fill=INK, font=font, anchor="mm")
    for index, point in enumerate(points):
        colour = PALETTE[index % len(PALETTE)]
        px, py = axes.point(point.x, point.y)
        if point.y_spread:
            top, bottom = axes.point(point.x, point.y + point.y_spread)[1], axes.point(point.x, point.y - point.y_spread)[1]
            draw.line([(px, top), (px, bottom)], fill=colour, width=2)
        draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=colour, outline=INK)
        draw.text((px + 8, py - 8), point.label, fill=colour, font=font, anchor="ls")
    return image


def line_chart(panels: Sequence[LinePanel], x_label: str, y_label: str, width: int = 900, panel_height: int = 320) -> Image.Image:
    """Panels stacked top to bottom sharing the colours of their series; x is the value's index."""
    height = panel_height * len(panels)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(13)
    for number, panel in enumerate(panels):
        offset = number * panel_height
        length = max((len(series.values) for series in panel.series), default=1)
        values = [value for series in panel.series for value in series.values] or [0.0, 1.0]
        # gates are sigmoids: on 0..1, so that panels compare at a glance
        y_ticks = nice_ticks(0.0, 1.0) if 0 <= min(values) and max(values) <= 1 else _padded_ticks(values)
        box = (MARGIN_LEFT, offset + MARGIN_TOP, width - MARGIN_RIGHT - 150, offset + panel_height - MARGIN_BOTTOM)
        last = max(length - 1, 1)
        axes = _Axes(draw, box, [tick for tick in nice_ticks(0, last) if tick <= last], y_ticks, (0, last))
        axes.frame(x_label, y_label, panel.title, font)
        for index, series in enumerate(panel.series):
            colour = PALETTE[index % len(PALETTE)]
            draw.line([axes.point(x, y) for x, y in enumerate(series.values)], fill=colour, width=2)
            legend_y = box[1] + 10 + 18 * index
            draw.line([(box[2] + 12, legend_y), (box[2] + 32, legend_y)], fill=colour, width=3)
            draw.text((box[2] + 38, legend_y), series.name, fill=INK, font=font, anchor="lm")
    return image


def save_png(image: Image.Image, path: PathLike) -> None:
    atomic_write(path, lambda handle: image.save(handle, format="PNG"))

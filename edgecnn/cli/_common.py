"""Shared CLI pieces: tables, JSON output, option types.

Every number option of every command takes one of the types below (or a ``click.IntRange`` with both
bounds): a float is never NaN or infinite and a count never beyond :mod:`edgecnn.limits`, so a typo fails
at once with one line instead of hanging, crashing or spawning 100,000 threads
(tests/test_integrity_bounds.py walks every option to hold this).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .. import limits
from ..artifact import atomic_write_json


def print_table(rows: Iterable[Sequence], columns: Sequence[str], *, title: str | None = None) -> None:
    """A readable table on stdout (rich when it is a terminal, plain aligned text otherwise)."""
    rows = [["" if v is None else str(v) for v in r] for r in rows]
    table = Table(title=title, show_lines=False, header_style="bold")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    widths = [max([len(c)] + [len(r[i]) for r in rows if i < len(r)]) for i, c in enumerate(columns)]
    Console(width=max(80, sum(widths) + 3 * len(widths) + 4), soft_wrap=False).print(table)


def write_json(path: str | Path | None, data) -> None:
    if path:
        atomic_write_json(Path(path), data)
        click.echo(f"wrote {path}")


def fmt_pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def fmt_int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


class InputSize(click.ParamType):
    """'32' or '32x48' -> (h, w), each side 1 to ``limits.MAX_INPUT_SIZE``."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = [int(p) for p in str(value).lower().split("x")]
            if len(parts) == 1:
                parts *= 2
            if len(parts) != 2 or min(parts) < 1:
                raise ValueError
        except ValueError:
            self.fail(f"{value!r} is not a size; write N or HxW (e.g. 32 or 224x224).", param, ctx)
        if max(parts) > limits.MAX_INPUT_SIZE:
            self.fail(f"{value!r}: a side is at most {limits.MAX_INPUT_SIZE} pixels.", param, ctx)
        return tuple(parts)


INPUT_SIZE = InputSize()


class Finite(click.FloatRange):
    """A number that is never NaN or infinite, optionally in [min, max] as ``click.FloatRange`` (which lets NaN
    through any range: every comparison with NaN is false)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()


class ChannelStats(click.ParamType):
    """'0.5' or '0.485,0.456,0.406' -> a tuple of finite numbers (one, or one per input channel) in [lo, hi]."""

    name = "V[,V...]"

    def __init__(self, lo: float, hi: float, lo_open: bool = False):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a number or a comma-separated list of numbers.", param, ctx)
        low = (lambda v: v <= self.lo) if self.lo_open else (lambda v: v < self.lo)
        if len(parts) > limits.MAX_CHANNELS or any(not math.isfinite(v) or low(v) or v > self.hi for v in parts):
            bound = "(" if self.lo_open else "["
            self.fail(f"{value!r}: each value must be finite, in {bound}{self.lo}, {self.hi}].", param, ctx)
        return parts


#: per-channel input normalisation (x = (pixel / 255 - mean) / std)
MEAN = ChannelStats(-1000.0, 1000.0)
STD = ChannelStats(0.0, 1000.0, lo_open=True)

#: any finite number (the options object's ``bounded`` field holds the range)
FINITE = Finite()
#: a time budget or timeout in seconds: at most a day
SECONDS = Finite(0, limits.MAX_SECONDS)
FRACTION = Finite(0, 1, min_open=True, max_open=True)
THREADS = click.IntRange(1, limits.MAX_THREADS)

#: --runtime on eval / bench / check / sweep (edgecnn.runtime_choice: CHOICES, RuntimeOptions checks them)
RUNTIME_CHOICES = ("onnxruntime", "openvino", "auto")
RUNTIME_HELP = (
    "CPU runtime for onnx artifacts: onnxruntime, openvino, or auto (measure both here, interleaved, and use the "
    "faster; the measurement is reported) [default: onnxruntime; torch artifacts run in torch]."
)
WORKERS = click.IntRange(0, limits.MAX_WORKERS)
BATCH_SIZE = click.IntRange(1, limits.MAX_BATCH)
SEED = click.IntRange(0, limits.MAX_SEED)
EPOCHS = click.IntRange(0, limits.MAX_EPOCHS)
IMAGES = click.IntRange(1, limits.MAX_IMAGES)
RUNS = click.IntRange(1, limits.MAX_RUNS)
CLASSES = click.IntRange(1, limits.MAX_CLASSES)
CHANNELS = click.IntRange(1, limits.MAX_CHANNELS)
SIDE = click.IntRange(1, limits.MAX_INPUT_SIZE)
LAYERS = click.IntRange(0, limits.MAX_LAYERS)
DLA_CORE = click.IntRange(0, 15)


def input_options(default: str, *, stats_note: str = ""):
    """The input-spec options train and import share: --input-size, --in-channels, --mean, --std, with
    ``default`` naming where an unset one comes from (e.g. "recipe / model", "the graph's")."""
    opts = [
        click.option("--input-size", type=INPUT_SIZE, default=None, help=f"Input N or HxW [default: {default}]."),
        click.option("--in-channels", type=CHANNELS, default=None, help=f"1 (gray) or 3 (RGB) [default: {default}]."),
        click.option(
            "--mean", type=MEAN, default=None, help=f"Input mean in pixel/255 units, one or per channel{stats_note}."
        ),
        click.option(
            "--std", type=STD, default=None, help=f"Input std in pixel/255 units, one or per channel{stats_note}."
        ),
    ]

    def apply(f):
        for opt in reversed(opts):
            f = opt(f)
        return f

    return apply

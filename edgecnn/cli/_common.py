"""Shared CLI pieces: tables, JSON output, option types."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

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
    """'32' or '32x48' -> (h, w)."""

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
            return tuple(parts)
        except ValueError:
            self.fail(f"{value!r} is not a size; write N or HxW (e.g. 32 or 224x224).", param, ctx)


INPUT_SIZE = InputSize()

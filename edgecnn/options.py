"""Options as objects: one loader for every "mapping of option: value" edgecnn reads.

Stage options (``PruneOptions``, ``QuantizeOptions``, ``CompressRecipe``, the check ``Policy``, ...) are
dataclasses that derive from :class:`Options`. The command line, a recipe / policy YAML file and the
sweep all fill the same object, and the object's ``validate()`` holds the rules, once. A rule broken
raises :class:`~edgecnn.errors.OptionError`, which the CLI turns into a usage error (exit 2).

:meth:`Options.from_mapping` is the shared reader: keys may be kebab-case or snake_case (a leading
``--`` is ignored), an unknown key fails with the nearest known one, and each value is checked against
the field's annotation (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``Literal[...]``, an
``Enum``, ``tuple``/``list``/``dict``). Floats must be finite. Numeric bounds come from the field's
metadata (``bounded(lo, hi)``) so they are stated where the option is declared; every numeric field has
both (the ceilings are :mod:`edgecnn.limits`), and every subclass's ``validate()`` checks them after its
own rules, so an object built in Python is held to them too.

YAML files are read by :func:`read_yaml_mapping` with limits on size, nesting, aliases and the number
of values once aliases are expanded: an alias bomb fails at once, with one line, before any object is built.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import os
import reprlib
import types
import typing
from pathlib import Path

import yaml

from . import limits
from .errors import OptionError, suggest

_NONE = type(None)


def kebab(name: str) -> str:
    return name.replace("_", "-")


def bounded(
    default, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False, **kwargs
):
    """A dataclass field whose numeric value (or each number of a list) must lie in [lo, hi] (open ends with
    lo_open / hi_open)."""
    return dataclasses.field(default=default, metadata={"range": (lo, hi, lo_open, hi_open)}, **kwargs)


class _Refused(yaml.YAMLError):
    """A YAML document over one of the loader's limits."""

    def __init__(self, problem: str, mark):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


#: libyaml's parser when PyYAML has it (about 40x faster than the pure-Python one), with the safe constructors
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_shape(text: str) -> None:
    """Raise :class:`_Refused` at the first parser event that breaks a limit: more than ``MAX_YAML_ALIASES``
    aliases, an alias to a value that contains it, nesting deeper than ``MAX_YAML_DEPTH`` or more than
    ``MAX_YAML_NODES`` values with every alias expanded. Events come one at a time and no object is built,
    so a "billion laughs" document (a few hundred bytes that expand to billions of values) stops at once."""
    total = aliases = 0
    opened: list[tuple[str | None, int]] = []  # (anchor, total before it) of each open list / mapping
    sizes: dict[str, int] = {}  # anchor -> values in its node, aliases expanded
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > limits.MAX_YAML_ALIASES:
                raise _Refused(f"more than {limits.MAX_YAML_ALIASES} aliases (*name)", event.start_mark)
            if any(anchor == event.anchor for anchor, _ in opened):
                raise _Refused(f"alias *{event.anchor} refers to a value that contains it", event.start_mark)
            total += sizes.get(event.anchor, 1)  # an undefined alias is the parser's error, below
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(opened) >= limits.MAX_YAML_DEPTH:
                raise _Refused(f"values nested deeper than {limits.MAX_YAML_DEPTH} levels", event.start_mark)
            opened.append((event.anchor, total))
            total += 1
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, before = opened.pop()
            if anchor is not None:
                sizes[anchor] = total - before
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        if total > limits.MAX_YAML_NODES:
            raise _Refused(f"more than {limits.MAX_YAML_NODES:,} values once aliases are expanded", event.start_mark)


def load_yaml(text: str):
    """The YAML document ``text`` under the limits of :func:`_check_shape`; ``yaml.YAMLError`` (``_Refused``
    for a document over a limit) or ``ValueError`` (e.g. an integer of more digits than Python converts)."""
    _check_shape(text)
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)


def read_yaml_mapping(
    path: str | os.PathLike,
    *,
    what: str,
    example: str,
    error: type[Exception] = OptionError,
    max_bytes: int = limits.MAX_YAML_BYTES,
) -> dict:
    """A YAML file holding one mapping (``{}`` when empty); ``error`` naming the file and the fix otherwise."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} '{p}' does not exist; pass a YAML file like {example}.")
    try:
        if p.stat().st_size > max_bytes:
            raise error(f"{what} '{p}' is over {max_bytes >> 20} MiB; an options file is a few lines of YAML.")
        text = p.read_text(encoding="utf-8")
        data = load_yaml(text)
    except _Refused as exc:
        mark = exc.problem_mark
        raise error(
            f"{what} '{p}' is refused at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}; "
            "an options file is a few lines of plain YAML."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"{what} '{p}' is not valid YAML{at} ({problem}); fix the file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"Cannot read {what.lower()} '{p}' ({exc}); pass a readable UTF-8 YAML file.") from None
    except ValueError as exc:  # e.g. a 5,000-digit integer, a date that does not exist
        raise error(f"{what} '{p}' holds a value YAML cannot read ({str(exc)[:120]}); fix the file.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} '{p}' must hold a mapping of option: value, got {type(data).__name__}; see {example}.")
    return data


def _unwrap(tp) -> tuple[tuple, bool]:
    """(allowed base types, None allowed) of an annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        bases = tuple(a for a in args if a is not _NONE)
        return bases, len(bases) != len(args)
    return (tp,), tp is _NONE


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    names = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "text",
        tuple: "a list",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(origin or tp, getattr(tp, "__name__", str(tp)))


def _finite(value) -> bool:
    """A number that is neither NaN nor infinite, nor an integer too large to be a float."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _numbers(value) -> list:
    """The numbers in a field's value (itself, or the items of a list of numbers); bools are not numbers."""
    items = value if isinstance(value, (list, tuple)) else (value,)
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def show(value) -> str:
    """``value`` for an error message: short, whatever its size."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an integer of more digits than Python converts to text
        return f"an integer of {value.bit_length():,} bits"


def _coerce_one(tp, value):
    """``value`` as type ``tp``, or raise ValueError."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ValueError(suggest(str(value), [str(c) for c in choices]))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            raise ValueError(suggest(str(value), [str(m.value) for m in tp])) from None
    if isinstance(tp, type) and hasattr(tp, "parse"):  # a value object parsed at the edge (e.g. DataSource)
        return tp.parse(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError("")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise ValueError(" Give a finite number.")
        return float(value)
    if tp is str:
        if isinstance(value, (str, os.PathLike)):
            return str(value)
        raise ValueError("")
    if (origin or tp) in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError("")
        items = typing.get_args(tp)
        kinds = [a for a in items if a is not Ellipsis]
        if kinds and all(k in (int, float) for k in kinds):  # a list of numbers: each one checked
            if Ellipsis in items:
                kinds = kinds[:1] * len(value)
            elif len(value) != len(kinds):
                raise ValueError(f" Give {len(kinds)} numbers.")
            value = [_coerce_one(k, v) for k, v in zip(kinds, value)]
        return (origin or tp)(value)
    if (origin or tp) is dict:
        if not isinstance(value, dict):
            raise ValueError("")
        return dict(value)
    return value


def coerce(f: dataclasses.Field, hint, value, where: str, error: type[Exception] = OptionError, *, bounds: bool = True):
    """The value of field ``f`` (annotation ``hint``) from ``value``; ``error`` naming the key and the type or
    (with ``bounds``) the range otherwise."""
    bases, optional = _unwrap(hint)
    key = kebab(f.name)
    if value is None:
        if optional:
            return None
        raise error(f"{where}: '{key}' cannot be empty; give {_describe(bases[0])} or leave the key out.")
    hint_text = ""
    for tp in bases:
        try:
            value_out = _coerce_one(tp, value)
            break
        except ValueError as exc:
            hint_text = hint_text or str(exc)
    else:
        want = " or ".join(_describe(t) for t in bases)
        raise error(f"{where}: '{key}' must be {want}, got {show(value)}.{hint_text}")
    rng = f.metadata.get("range")
    if rng and bounds:
        for number in _numbers(value_out):
            check_range(key, number, *rng, where=where, error=error)
    return value_out


def check_range(
    key: str,
    value: float,
    lo: float | None,
    hi: float | None,
    lo_open: bool = False,
    hi_open: bool = False,
    *,
    where: str = "",
    error: type[Exception] = OptionError,
) -> None:
    """``error`` unless lo <= value <= hi (strict at an open end); NaN and infinities are never in range."""
    prefix = f"{where}: " if where else ""
    if not _finite(value):
        raise error(f"{prefix}{key} must be a finite number, got {show(value)}.")
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        if lo is not None and hi is not None and lo_open == hi_open:
            want = f"between {lo} and {hi}{' (exclusive)' if lo_open else ''}"
        elif lo is not None and hi is not None:
            want = f"{'>' if lo_open else '>='} {lo} and {'<' if hi_open else '<='} {hi}"
        elif lo is not None:
            want = f"{'>' if lo_open else '>='} {lo}"
        else:
            want = f"{'<' if hi_open else '<='} {hi}"
        raise error(f"{prefix}{key} must be {want}, got {show(value)}.")


class Options:
    """Mixin for option dataclasses: read from a mapping / YAML file, merge command-line overrides, check."""

    #: keys read and ignored (e.g. a file format version checked by the subclass)
    IGNORED_KEYS: typing.ClassVar[tuple[str, ...]] = ()
    #: what the error for bad values is (a subclass of OptionError, or a file-specific one)
    ERROR: typing.ClassVar[type[Exception]] = OptionError

    def __init_subclass__(cls, **kwargs):
        """A subclass's own ``validate()`` runs its rules, then :meth:`check_bounds` (so the bounds declared
        on the fields hold for an object built in Python too, and a rule's own message comes first)."""
        super().__init_subclass__(**kwargs)
        rules = cls.__dict__.get("validate")
        if rules is None or getattr(rules, "checks_bounds", False):
            return

        @functools.wraps(rules)
        def validate(self) -> None:
            rules(self)
            self.check_bounds()

        validate.checks_bounds = True
        cls.validate = validate

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]

    @classmethod
    def _hints(cls) -> dict:
        return typing.get_type_hints(cls)

    @classmethod
    def normalise_key(cls, raw_key) -> str:
        return str(raw_key).strip().lstrip("-").replace("-", "_")

    @classmethod
    def from_mapping(cls, data, *, where: str = "options", validate: bool = True, bounds: bool = True):
        """An instance from ``data`` (keys kebab- or snake_case); unknown keys fail with the nearest one. Each
        value is checked against its field's bounds as it is read, unless ``bounds`` is false (for a caller
        that validates the object next, so that the class's own rules speak first)."""
        error = cls.ERROR
        if not isinstance(data, dict):
            raise error(f"{where} must be a mapping of option: value (got {type(data).__name__}).")
        known = cls.keys()
        fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
        hints = cls._hints()
        values = {}
        for raw_key, value in data.items():
            key = cls.normalise_key(raw_key)
            if key in cls.IGNORED_KEYS:
                continue
            if key not in known:  # suggest in the spelling the user wrote (snake_case or kebab-case)
                style = (lambda k: k) if "_" in str(raw_key) else kebab
                hint = suggest(style(key), [style(k) for k in known])
                raise error(
                    f"{where}: unknown option '{raw_key}'.{hint} Known options: {', '.join(kebab(k) for k in known)}."
                )
            values[key] = coerce(fields_by_name[key], hints[key], value, where, error, bounds=bounds)
        obj = cls(**values)
        if validate:
            obj.validate()
        return obj

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, what: str = "Options file", example: str = "examples/", validate: bool = True
    ):
        data = read_yaml_mapping(path, what=what, example=example, error=cls.ERROR)
        return cls.from_mapping(data, where=f"{what.lower()} '{path}'", validate=validate)

    def merged(self, overrides: dict | None = None, *, where: str = "options", validate: bool = True, **kw):
        """A copy with the non-None ``overrides`` (command-line options) applied and checked."""
        overrides = {**(overrides or {}), **kw}
        fields_by_name = {f.name: f for f in dataclasses.fields(self)}
        hints = self._hints()
        changes = {}
        # overrides come from the command line or a caller: a bad one is an option (usage) error
        error = self.ERROR if issubclass(self.ERROR, OptionError) else OptionError
        for k, v in overrides.items():
            if k not in fields_by_name or not fields_by_name[k].init:
                raise error(f"unknown option '{kebab(k)}'.{suggest(kebab(k), [kebab(n) for n in self.keys()])}")
            if v is not None:
                # validate() checks the bounds after the class's own rules (their messages come first)
                changes[k] = coerce(fields_by_name[k], hints[k], v, where, error, bounds=not validate)
        obj = dataclasses.replace(self, **changes)
        if validate:
            obj.validate()
        return obj

    def as_dict(self) -> dict:
        out = {}
        for k in self.keys():
            v = getattr(self, k)
            if isinstance(v, enum.Enum):
                v = v.value
            elif isinstance(v, tuple):
                v = list(v)
            elif hasattr(type(v), "parse"):
                v = str(v)
            out[k] = v
        return out

    def check_bounds(self) -> None:
        """Raise OptionError naming the first numeric field that is NaN, infinite or outside its ``bounded``
        range (every item of a list of numbers is checked)."""
        for f in dataclasses.fields(self):
            rng = f.metadata.get("range") or (None, None, False, False)
            for number in _numbers(getattr(self, f.name, None)):
                check_range(kebab(f.name), number, *rng)

    def validate(self) -> None:
        """Raise OptionError (or ``ERROR``) naming the first rule these options break; subclasses add their
        rules, and the declared bounds are checked after them."""
        self.check_bounds()

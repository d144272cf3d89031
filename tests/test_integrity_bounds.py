"""Bounded resources (issue 14): what a user gives - a YAML file, a command-line number, an options mapping -
cannot make edgecnn run for hours, exhaust memory or crash with a traceback.

* YAML: every options file goes through :func:`edgecnn.options.read_yaml_mapping`, which refuses alias
  bombs ("billion laughs"), self-referencing aliases and absurd nesting at once, with one line.
* Command line: a design check walks EVERY option of EVERY command: a number option rejects NaN and
  infinity, an integer option has both bounds, thread / worker / batch / seed / time options have the
  documented ceilings (:mod:`edgecnn.limits`).
* Options objects: a design check walks EVERY :class:`~edgecnn.options.Options` subclass: each numeric
  field declares its bounds (``bounded(lo, hi)``), and reading or validating rejects NaN, infinity and
  absurd sizes with the class's error.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import pkgutil
import time
import typing
from pathlib import Path

import click
import pytest

import edgecnn
from edgecnn import limits
from edgecnn.cli import cli
from edgecnn.errors import OptionError
from edgecnn.options import Options, coerce, read_yaml_mapping


def _one_error_line(result, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one 'Error' line naming the problem, no traceback."""
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# -- YAML --------------------------------------------------------------------------------------------------
def _bomb(key: str, levels: int = 9) -> str:
    """A billion-laughs document: 9 levels of 9 aliases each = 9**9 (387 million) strings when expanded."""
    lines = [f"{key}:", '  - &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the test asserts on the type below
        return exc, time.perf_counter() - t0
    return None, time.perf_counter() - t0


def _loaders():
    from edgecnn.check.policy import Policy, PolicyError
    from edgecnn.compress.recipe import CompressRecipe, RecipeError
    from edgecnn.devices import DeviceProfile, ProfileError

    return [
        ("recipe", "name", CompressRecipe.load, RecipeError),
        ("policy", "max_top1_drop", Policy.load, PolicyError),
        ("device profile", "notes", DeviceProfile.read, ProfileError),
        ("options", "anything", lambda p: read_yaml_mapping(p, what="Options file", example="x.yaml"), OptionError),
    ]


@pytest.mark.parametrize("what", ["recipe", "policy", "device profile", "options"])
def test_yaml_alias_bomb_fails_at_once_with_one_line(tmp_path, what):
    """Before: ~2 minutes, then a MemoryError traceback. Now: the file's error, in well under a second."""
    _, key, load, error = next(entry for entry in _loaders() if entry[0] == what)
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(key))
    exc, seconds = _timed(load, path)
    assert isinstance(exc, error), repr(exc)
    assert seconds < 1.0, f"{seconds:.2f} s to refuse an alias bomb"
    msg = str(exc)
    assert "\n" not in msg and len(msg) < 400 and str(path) in msg and "alias" in msg, msg


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a: &a [*a]\n", "alias"),  # refers to itself: infinite when expanded
        ("a: " + "[" * 100 + "]" * 100 + "\n", "nested"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nest"),  # RecursionError before
        ("a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n", "nest"),
        ("a: [" + ", ".join(["1"] * 200_000) + "]\n", "values"),  # node-count limit, under the size cap
        ("a: " + "9" * 5000 + "\n", "cannot read"),  # more digits than Python converts: a ValueError before
    ],
)
def test_yaml_structure_limits(tmp_path, text, needle):
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    exc, seconds = _timed(read_yaml_mapping, path, what="Options file", example="x.yaml")
    assert isinstance(exc, OptionError), repr(exc)
    assert seconds < 2.0 and needle in str(exc) and "\n" not in str(exc), (seconds, str(exc))


def test_yaml_size_cap_kept(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("a: '" + "x" * (1 << 20) + "'\n")
    with pytest.raises(OptionError, match="over 1 MiB"):
        read_yaml_mapping(path, what="Options file", example="x.yaml")


def test_yaml_small_anchors_still_work(tmp_path):
    """A few anchors for repeated values are ordinary YAML; only the expansion is bounded."""
    from edgecnn.check.policy import Policy

    path = tmp_path / "policy.yaml"
    path.write_text("max_top1_drop: &pt 0.5\nmax_top5_drop: *pt\nmax_class_drop: *pt\n")
    p = Policy.load(path)
    assert (p.max_top1_drop, p.max_top5_drop, p.max_class_drop) == (0.5, 0.5, 0.5)


def test_bundled_yaml_files_still_load():
    """Recipes, policies and device profiles in the repository read under the limits."""
    root = Path(edgecnn.__file__).resolve().parent.parent
    files = [
        p
        for d in ("examples", "devices", "calibration", "benchmarks")
        if (root / d).is_dir()
        for p in (root / d).rglob("*.y*ml")
        if "ci" not in p.parts
    ]
    assert files
    for p in files:
        assert isinstance(read_yaml_mapping(p, what="File", example="x"), dict), p


def test_cli_recipe_bomb_is_a_usage_error(cli_run, tmp_path):
    import edgecnn.compress.pipeline  # noqa: F401 - imported before the clock starts

    path = tmp_path / "bomb.yaml"
    path.write_text("model: lenet5\n" + _bomb("name"))
    t0 = time.perf_counter()
    r = cli_run(["compress", "--recipe", path])
    assert time.perf_counter() - t0 < 2.0
    _one_error_line(r, 2, "alias")


# -- the command line: every option of every command ------------------------------------------------------
#: texts no number option may accept: not-a-number, infinities and overflow
NON_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999"]
#: ... and absurd sizes, in each syntax: refused by every whole-number option and size / profile / warm-up type
#: (a float option may leave its range to the options object it fills: see test_huge_floats_are_refused_too)
ABSURD = [
    *NON_FINITE,
    "99999999999999999999999",
    "-99999999999999999999999",
    "nans",
    "infs",
    "99999999999999999999999s",
    "99999999999999999999999x1",
    "1x99999999999999999999999",
    "1,1,99999999999999999999999",
]
NON_NUMERIC = (click.types.StringParamType, click.Path, click.Choice, click.types.BoolParamType, click.File)
#: option name -> the ceiling its value must have (names match as substrings of the option's long name)
CEILINGS = {
    "thread": limits.MAX_THREADS,
    "worker": limits.MAX_WORKERS,
    "batch": limits.MAX_BATCH,
    "seed": limits.MAX_SEED,
    "epochs": limits.MAX_EPOCHS,
    "min-time": limits.MAX_SECONDS,
    "seconds": limits.MAX_SECONDS,
    "timeout": limits.MAX_SECONDS,
    "input-size": limits.MAX_INPUT_SIZE,
}


def _commands():
    ctx = click.Context(cli)
    return [(name, cli.get_command(ctx, name)) for name in cli.list_commands(ctx)]


def _numeric_params():
    out = []
    for name, cmd in _commands():
        for p in cmd.params:
            if isinstance(p, click.Option) and p.is_flag:
                continue
            if isinstance(p.type, NON_NUMERIC):
                continue
            out.append((name, cmd, p))
    return out


def _rejects(cmd, param, text) -> bool:
    ctx = click.Context(cmd)
    try:
        param.type.convert(text, param, ctx)
    except click.BadParameter:
        return True
    return False


def test_every_command_has_numeric_options_to_check():
    names = {f"{c} {p.opts[0]}" for c, _, p in _numeric_params()}
    assert {"train --warmup-epochs", "bench --min-time", "compress --bench-seconds", "train --workers"} <= names


@pytest.mark.parametrize("name, cmd, param", _numeric_params(), ids=lambda v: getattr(v, "name", v))
def test_every_number_option_is_finite_and_bounded(name, cmd, param):
    """No option accepts NaN or an infinity; every whole-number option has a lower and an upper bound."""
    where = f"edgecnn {name} {param.opts[0]}"
    t = param.type
    assert not isinstance(t, (click.types.IntParamType, click.types.FloatParamType)) or isinstance(
        t, (click.IntRange, click.FloatRange)
    ), f"{where} is a plain int/float: give it a range (edgecnn.cli._common.finite / click.IntRange with max)"
    if isinstance(t, click.IntRange):
        assert t.min is not None and t.max is not None, f"{where}: IntRange needs both bounds, has [{t.min}, {t.max}]"
    probes = NON_FINITE if isinstance(t, click.FloatRange) else ABSURD
    accepted = [text for text in probes if not _rejects(cmd, param, text)]
    assert not accepted, f"{where} accepts {accepted}"


@pytest.mark.parametrize("name, cmd, param", _numeric_params(), ids=lambda v: getattr(v, "name", v))
def test_resource_options_have_sane_ceilings(name, cmd, param):
    long = max(param.opts, key=len).lstrip("-")
    for word, ceiling in CEILINGS.items():
        if word in long:
            accepted = [v for v in (ceiling + 1, ceiling * 2, ceiling * 10) if not _rejects(cmd, param, str(v))]
            assert not accepted, f"edgecnn {name} --{long} accepts {accepted} (ceiling {ceiling})"


FINDINGS = [
    ["train", "lenet5", "--data", "digits", "--warmup-epochs", "nan"],
    ["train", "lenet5", "--data", "digits", "--warmup-epochs", "inf"],
    ["train", "lenet5", "--data", "digits", "--seed", "1e23"],
    ["train", "lenet5", "--data", "digits", "--seed", "100000000000000000000000"],
    ["train", "lenet5", "--data", "digits", "--seed", "-1"],
    ["train", "lenet5", "--data", "digits", "--input-size", "1e9"],
    ["train", "lenet5", "--data", "digits", "--input-size", "1000000000"],
    ["train", "lenet5", "--data", "digits", "--input-size", "32x1000000000"],
    ["train", "lenet5", "--data", "digits", "--batch-size", "100000000"],
    ["train", "lenet5", "--data", "digits", "--workers", "100000"],
    ["train", "lenet5", "--data", "digits", "--epochs", "100000000"],
    ["bench", "ART", "-b", "1e8"],
    ["bench", "ART", "-b", "100000000"],
    ["bench", "ART", "--min-time", "nan"],
    ["bench", "ART", "--min-time", "inf"],
    ["bench", "ART", "--min-time", "1e300"],
    ["bench", "ART", "--threads", "100000"],
    ["bench", "ART", "--warmup", "infs"],
    ["bench", "ART", "--warmup", "100000000000"],
    ["bench", "ART", "--min-repeats", "100000000000"],
    ["sweep", "lenet5", "--data", "digits", "--min-time", "nan"],
    ["sweep", "lenet5", "--data", "digits", "--min-time", "inf"],
    ["sweep", "lenet5", "--data", "digits", "--threads", "100000"],
    ["compress", "lenet5", "--int8", "--calib", "digits", "--bench-seconds", "nan"],
    ["compress", "lenet5", "--int8", "--calib", "digits", "--bench-seconds", "inf"],
    ["compress", "lenet5", "--int8", "--calib", "digits", "--threads", "100000"],
    ["compress", "lenet5", "--int8", "--calib", "digits", "--input-size", "1000000000"],
    ["eval", "ART", "--data", "digits", "--threads", "100000"],
    ["check", "ART", "--against", "ART", "--data", "digits", "--max-top1-drop", "nan"],
    ["check", "ART", "--against", "ART", "--data", "digits", "--latency-min-time", "inf"],
    ["check", "ART", "--against", "ART", "--data", "digits", "--threads", "100000"],
    ["quantize", "ART", "--calib", "digits", "--max-drop", "nan"],
    ["build", "ART", "--out", "X", "--workspace", "inf"],
    ["deploy", "ART", "--target", "cpu", "--remote-timeout", "inf"],
]


@pytest.mark.parametrize("args", FINDINGS, ids=lambda a: " ".join(a[:1] + a[-2:]))
def test_findings_are_one_line_usage_errors(cli_run, tmp_path, args):
    """Each of these hung, crashed or printed a traceback; now: exit 2 and one line, before any work."""
    args = [str(tmp_path / "art") if a == "ART" else str(tmp_path / "x") if a == "X" else a for a in args]
    option = args[-2]
    if args[0] in ("train", "compress", "sweep") and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    t0 = time.perf_counter()
    r = cli_run(args)
    assert time.perf_counter() - t0 < 5.0
    _one_error_line(r, 2, option)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "lenet5", "--data", "digits", "--lr", "1e23"], "lr must be"),
        (["train", "lenet5", "--data", "digits", "--weight-decay", "1e23"], "weight-decay must be"),
        (["check", "ART", "--against", "ART", "--data", "digits", "--max-kl", "1e300"], "max-kl must be"),
        (["check", "ART", "--against", "ART", "--data", "digits", "--min-speedup", "1e300"], "min-speedup must be"),
        (["compress", "lenet5", "--int8", "--calib", "digits", "--prune", "1e23"], "prune must be"),
        (["compress", "lenet5", "--int8", "--calib", "digits", "--max-drop", "1e23"], "max-drop must be"),
        (["quantize", "ART", "--calib", "digits", "--qat-lr", "1e23"], "qat-lr must be"),
    ],
    ids=lambda a: " ".join(a[:1] + a[-2:]) if isinstance(a, list) else "",
)
def test_huge_floats_are_refused_too(cli_run, tmp_path, args, needle):
    """A float option whose range lives in its options object (one place for the rule): still exit 2."""
    args = [str(tmp_path / "art") if a == "ART" else a for a in args]
    if args[0] != "check":
        args += ["--out", str(tmp_path / "out")]
    r = cli_run(args)
    _one_error_line(r, 2, needle)
    assert not (tmp_path / "out").exists()


def test_sweep_list_and_budget_numbers_are_finite(cli_run, tmp_path):
    for extra, needle in (
        (["--prune", "nan"], "--prune"),
        (["--prune", "0,inf"], "--prune"),
        (["--budget", "top1_drop<=1e999"], "Budget"),
        (["--budget", "latency_ms<=nan"], "budget"),
    ):
        r = cli_run(["sweep", "lenet5", "--data", "digits", "--out", tmp_path / "s", *extra])
        _one_error_line(r, 2, needle)


# -- Options objects: every subclass, every numeric field ----------------------------------------------------
def _all_options_classes():
    for info in pkgutil.walk_packages(edgecnn.__path__, "edgecnn."):
        if info.name.endswith("__main__") or ".deploy_templates" in info.name:
            continue
        importlib.import_module(info.name)
    seen, todo = [], [Options]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return sorted((c for c in seen if dataclasses.is_dataclass(c)), key=lambda c: f"{c.__module__}.{c.__name__}")


def _numeric_kind(hint):
    """'int', 'float', 'tuple-int', 'tuple-float' or None for a field annotation."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, __import__("types").UnionType):
        kinds = {_numeric_kind(a) for a in args if a is not type(None)}
        kinds.discard(None)
        return kinds.pop() if kinds else None
    if hint is bool:
        return None
    if hint in (int, float):
        return hint.__name__
    if origin is tuple and args and all(a in (int, float, Ellipsis) for a in args):
        return "tuple-" + ("float" if float in args else "int")
    return None


def _numeric_fields():
    out = []
    for cls in _all_options_classes():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = _numeric_kind(hints[f.name])
            if kind and f.init:
                out.append((cls, f, hints[f.name], kind))
    return out


NUMERIC_FIELDS = _numeric_fields()
_ids = [f"{c.__name__}.{f.name}" for c, f, _, _ in NUMERIC_FIELDS]


def test_options_classes_are_found():
    names = {c.__name__ for c, *_ in NUMERIC_FIELDS}
    assert {"TrainConfig", "Policy", "CompressRecipe", "SweepOptions", "QuantizeOptions", "PruneOptions"} <= names


@pytest.mark.parametrize("cls, f, hint, kind", NUMERIC_FIELDS, ids=_ids)
def test_every_numeric_option_field_declares_both_bounds(cls, f, hint, kind):
    rng = f.metadata.get("range")
    assert rng is not None, f"{cls.__name__}.{f.name}: declare it with bounded(default, lo, hi)"
    lo, hi = rng[:2]
    assert lo is not None and hi is not None, f"{cls.__name__}.{f.name}: bounded(...) needs lo and hi, has {rng[:2]}"
    assert math.isfinite(lo) and math.isfinite(hi) and abs(hi) <= 2**63 - 1


@pytest.mark.parametrize("cls, f, hint, kind", NUMERIC_FIELDS, ids=_ids)
def test_reading_a_field_rejects_non_finite_and_absurd_values(cls, f, hint, kind):
    """What a recipe / policy / profile file (or a script's mapping) says goes through coerce()."""
    bad = [10**30, -(10**30), 10**400, 1e308]
    if "float" in kind:
        bad += [math.nan, math.inf, -math.inf]
    for value in bad:
        v = (value,) * len(typing.get_args(hint) or (1,)) if kind.startswith("tuple") else value
        if kind.startswith("tuple") and typing.get_args(hint)[-1:] == (Ellipsis,):
            v = (value,)
        with pytest.raises(OptionError if issubclass(cls.ERROR, OptionError) else cls.ERROR):
            coerce(f, hint, v, where="test", error=cls.ERROR)


def _constructible(cls):
    """An instance with every field valid: the defaults, or (a device profile has required fields) a bundled one."""
    from edgecnn.devices import DeviceProfile, list_profiles

    if issubclass(cls, DeviceProfile):
        return copy.copy(list_profiles()[0])  # a copy: the test breaks its fields
    try:
        return cls()
    except Exception:  # noqa: BLE001 - other classes with required fields are covered by coerce() above
        return None


@pytest.mark.parametrize("cls, f, hint, kind", NUMERIC_FIELDS, ids=_ids)
def test_validating_an_object_rejects_non_finite_and_absurd_values(cls, f, hint, kind):
    """An object built in Python (not read from a mapping) is checked by validate() / check_bounds()."""
    obj = _constructible(cls)
    if obj is None:
        pytest.skip(f"{cls.__name__} has required fields")
    bad = [10**30] + ([math.nan, math.inf] if "float" in kind else [])
    for value in bad:
        v = (value,) if kind.startswith("tuple") else value
        object.__setattr__(obj, f.name, v)
        with pytest.raises(Exception) as exc:
            obj.check_bounds()
        assert isinstance(exc.value, (OptionError, cls.ERROR)), repr(exc.value)
        assert f.name.replace("_", "-") in str(exc.value), str(exc.value)
        with pytest.raises((OptionError, cls.ERROR)):
            obj.validate()


def test_train_config_findings():
    from edgecnn.fitting import TrainConfig

    for kw, needle in (
        ({"warmup_epochs": math.nan}, "warmup-epochs"),
        ({"seed": 10**23}, "seed"),
        ({"batch_size": 10**8}, "batch"),
        ({"num_workers": 100_000}, "workers"),
    ):
        with pytest.raises(OptionError, match=needle):
            TrainConfig(**kw).validate()


def test_limits_are_generous_but_sane():
    assert 64 <= limits.MAX_THREADS <= 4096 and 16 <= limits.MAX_WORKERS <= 256
    assert limits.MAX_BATCH == 65_536 and limits.MAX_INPUT_SIZE == 8192 and limits.MAX_EPOCHS == 10_000
    assert limits.MAX_SEED >= 2**32 - 1 and limits.MAX_SECONDS == 86_400

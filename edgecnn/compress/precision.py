"""Which precision a command asked for, and the rules between the precision flags (``--int8``, ``--fp16``,
``--fp16-io``) and the options that only INT8 uses. ``edgecnn quantize`` (INT8 unless ``--fp16``) and the
compress recipe (no precision unless asked) both call :func:`check_precision_flags`, so the rules and
their messages exist once."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import OptionError

#: QuantizeOptions / recipe keys that only the INT8 stage reads (key -> its command-line flag)
INT8_ONLY_OPTIONS = {
    "calib": "--calib",
    "max_drop": "--max-drop",
    "qat": "--qat",
    "ignore": "--ignore",
    "compact_names": "--compact-names",
}


def int8_flags_given(values: Mapping[str, object]) -> dict[str, bool]:
    """``{"--calib": True, ...}`` for the INT8-only options in ``values`` (option key -> value): a flag counts
    as given when its value is neither None, False nor empty."""
    return {
        flag: values[key] is not None and values[key] is not False and values[key] != () and values[key] != []
        for key, flag in INT8_ONLY_OPTIONS.items()
        if key in values
    }


def check_precision_flags(
    int8: bool, fp16: bool, fp16_io: bool, int8_options_given: Mapping[str, bool], *, int8_by_default: bool = False
) -> str | None:
    """The precision asked for ('int8', 'fp16' or None), or OptionError for a contradiction.

    ``int8_options_given`` maps INT8-only flags (``--calib``, ``--max-drop``, ...) to whether they were given
    (:func:`int8_flags_given` builds it). ``int8_by_default``: INT8 is what runs unless ``--fp16`` is given
    (``edgecnn quantize``); otherwise nothing runs unless asked (the compress recipe)."""
    if int8 and fp16:
        raise OptionError(
            "--int8 and --fp16 both given; an artifact has one precision - pick one "
            "(TensorRT can mix them at build time: edgecnn build --int8 --fp16)."
        )
    if fp16_io and not fp16:
        raise OptionError("--fp16-io only applies with --fp16.")
    precision = "fp16" if fp16 else "int8" if (int8 or int8_by_default) else None
    given = [flag for flag, on in int8_options_given.items() if on]
    if precision != "int8" and given:
        flag = given[0]
        if int8_by_default:
            raise OptionError(f"{flag} is an INT8 option; drop it with --fp16 (or drop --fp16).")
        if flag == "--calib":
            raise OptionError("--calib is only used by --int8; add --int8 or drop --calib.")
        raise OptionError(f"{flag} belongs to INT8 quantization; add --int8 --calib DIR.")
    return precision

"""Errors a user can act on.

Every class here carries a message that says what went wrong *and* what to do next. The CLI turns
them into one line and exit code 1; anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import importlib


class EdgeCnnError(Exception):
    """Base class of every error that is the user's to fix (bad input, missing file, ...)."""


class UnknownModel(EdgeCnnError):
    """A model name that is not in the registry."""


class InvalidInput(EdgeCnnError):
    """An argument or file whose content is not usable."""


class OptionError(InvalidInput):
    """Bad or conflicting options (command line, recipe, policy or device profile). The rules live once,
    in the library; the CLI turns this into a usage error (exit 2)."""


class DataError(InvalidInput):
    """A dataset, image or calibration folder that cannot be used."""


class WeightsError(InvalidInput):
    """A weights file or source that cannot be loaded into the network."""


class ArtifactError(InvalidInput):
    """A directory that is not a usable edgecnn artifact (or the wrong kind of one)."""


class MissingDependency(EdgeCnnError):
    """An optional package that the requested operation needs is not installed."""


class DeviceMismatch(EdgeCnnError):
    """An artifact built for one device/runtime version used on another."""


def suggest(name: str, choices, *, what: str = "name") -> str:
    """Return ' Did you mean ...?' for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def require(module: str, *, extra: str | None = None, purpose: str = ""):
    """Import an optional module or raise MissingDependency with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching in tests
        pkg = module.split(".")[0].replace("_", "-")
        how = f"pip install 'edgecnn[{extra}]'" if extra else f"pip install {pkg}"
        why = f" for {purpose}" if purpose else ""
        raise MissingDependency(f"{pkg} is needed{why} but is not installed ({exc}); install it with: {how}") from exc

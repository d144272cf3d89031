"""Errors a user can act on.

Every class here carries a message that says what went wrong *and* what to do next. The CLI turns
them into one line and exit code 1; anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import re


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


class OutputError(EdgeCnnError):
    """An output path that cannot be written: disk full, read-only, no permission, not a folder ..."""


class MissingDependency(EdgeCnnError):
    """An optional package that the requested operation needs is not installed."""


class DeviceMismatch(EdgeCnnError):
    """An artifact built for one device/runtime version used on another."""


#: OS errors that say "this place cannot take the output" - the user's to fix, never a bug - and the fix
_WRITE_FIXES = {
    errno.ENOSPC: "free space on that disk or choose another output path",
    errno.EDQUOT: "free space within your disk quota or choose another output path",
    errno.EFBIG: "the file is too big for that file system; choose another output path",
    errno.EROFS: "that file system is read-only; choose another output path",
    errno.EACCES: "choose an output path you may write, or fix its permissions",
    errno.EPERM: "choose an output path you may write, or fix its permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another output path",
    errno.EISDIR: "a folder is in the way; choose another output path",
    errno.ENAMETOOLONG: "choose a shorter output path",
    errno.EIO: "the disk reported an I/O error; check it or choose another output path",
}
#: the errors that can only come from writing (others, e.g. EACCES, may be a read of an input)
WRITE_ONLY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def os_write_error(exc: BaseException) -> OSError | None:
    """The OSError behind a failed write, if the failure was the file system's: raised directly, chained
    (torch.save to a file object raises RuntimeError from it) or quoted (safetensors: "(os error 28)")."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            if exc.errno in _WRITE_FIXES:
                return exc
        elif m := re.search(r"\(os error (\d+)\)", str(exc)):
            code = int(m.group(1))
            if code in _WRITE_FIXES:
                return OSError(code, os.strerror(code))
        exc = exc.__cause__ or exc.__context__
    return None


def cannot_write(path: str | os.PathLike, err: OSError) -> OutputError:
    """The one-line error for an output ``path`` the file system refused (``err``)."""
    return OutputError(f"cannot write '{path}': {err.strerror or os.strerror(err.errno)}; {_WRITE_FIXES[err.errno]}.")


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

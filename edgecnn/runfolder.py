"""Run folders that one run owns: ``edgecnn compress`` writes several artifacts, a report and a ``final``
link into one folder, so two runs must never share it and a reader must be able to tell a finished run
from one still running (or killed).

A run holds an exclusive ``flock`` on the folder itself for as long as it works (the kernel drops it
when the process dies, however it dies), writes ``<run>/compress.running`` (pid, start time) before it
changes anything, removes the previous run's report and ``final`` link, and deletes the marker only
after its own report is written. So: a second run on the same folder is refused in one line; a failing
run deletes the folder only if it created it, while still holding it; and a folder with the marker is
a run that did not finish - ``deploy`` skips it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .artifact import atomic_write_json
from .errors import InvalidInput

REPORT = "compress.json"
RUNNING = "compress.running"
FINAL = "final"


def unfinished(run: str | os.PathLike) -> bool:
    """Whether ``run`` is a compress run folder that is still running or was interrupted."""
    return (Path(run) / RUNNING).exists()


def _holder(run: Path) -> str:
    try:
        info = json.loads((run / RUNNING).read_text(encoding="utf-8"))
        return f" (pid {int(info['pid'])}, started {info.get('started', '?')})"
    except (OSError, ValueError, TypeError, KeyError):
        return ""


def _check_ours(run: Path) -> None:
    """An existing folder is reused only when it is a compress run (finished or not) or empty."""
    if run.is_dir() and not any((run / n).exists() for n in (REPORT, RUNNING)) and any(run.iterdir()):
        raise InvalidInput(
            f"Output '{run}' exists and is not an edgecnn compress run; choose another --out or remove it."
        )


def new_run_dir(root: Path, name: str, stamp: str) -> Path:
    """Create and return ``root/<name>-<stamp>[-k]``, a folder no other run got (mkdir is the arbiter)."""
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    while True:
        run = root / (f"{name}-{stamp}" if k == 0 else f"{name}-{stamp}-{k}")
        try:
            run.mkdir()
            return run
        except FileExistsError:
            k += 1


@contextlib.contextmanager
def own_run(run: str | os.PathLike, *, created: bool = False) -> Iterator[Path]:
    """Hold ``run`` for one compress run (see the module doc); ``created``: the caller made the folder.

    On success the caller has written its report inside the block; the marker is then removed. On any
    failure the folder is removed if this run created it, else left marked as unfinished."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise InvalidInput(f"Output '{run}' is a file, not a folder; choose another --out.")
    # what the folder holds is judged only under the lock: a run that holds it may be mid-way through
    # writing its marker (a temporary file beside it), which must read as "in use", not as user files
    if not run.exists():
        try:
            run.mkdir(parents=True)
            created = True
        except FileExistsError:
            pass
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise InvalidInput(
                f"Output '{run}' is in use by another edgecnn compress run{_holder(run)}; wait for it to "
                "finish or choose another --out."
            ) from None
        if not run.is_dir() or os.stat(run).st_ino != os.fstat(fd).st_ino:
            raise InvalidInput(f"Output '{run}' was removed by another run while starting; run again.")
        _check_ours(run)
        with _cleanup(run, created):
            _mark(run)
            yield run
            (run / RUNNING).unlink()
    finally:
        os.close(fd)


@contextlib.contextmanager
def _cleanup(run: Path, created: bool) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if created:  # nothing half-written: a failed run leaves no folder it made (we still hold it)
            shutil.rmtree(run, ignore_errors=True)
        raise


def _mark(run: Path) -> None:
    """Say the folder is being (re)written, and drop the previous run's report and final link."""
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(run / RUNNING, {"pid": os.getpid(), "started": started})
    for name in (FINAL, REPORT):
        p = run / name
        if p.is_symlink() or p.is_file():
            p.unlink()

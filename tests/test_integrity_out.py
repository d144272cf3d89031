"""Output folders and OS errors (issue 14): an --out never replaces its source, a compress run owns its
folder (a failing run never deletes another run's output), a re-run is marked in progress until it
finishes and `deploy` skips it, and a full disk or a bad --out ends in one line naming the path, with
nothing half-written - all checked before the work where they can be."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import one_line_error

from edgecnn.artifact import MANIFEST, Artifact, atomic_file, atomic_write_json, check_out, sha256_file
from edgecnn.deploy import latest_compress_output
from edgecnn.errors import ArtifactError, EdgeCnnError

ROOT = Path(__file__).resolve().parents[1]
FAST_COMPRESS = ["--fp16", "--no-bench"]


@pytest.fixture(scope="module")
def lenet1(tmp_path_factory):
    """LeNet-5 trained one epoch on the digits: every finding here reproduces with it in seconds."""
    from edgecnn.train import configure, train

    out = tmp_path_factory.mktemp("lenet1") / "lenet5"
    return train("lenet5", data="digits", out=out, config=configure("lenet5", "digits", epochs=1), progress=False)


@pytest.fixture(scope="module")
def lenet1_onnx(lenet1, tmp_path_factory):
    from edgecnn.export import export_onnx

    return export_onnx(lenet1, tmp_path_factory.mktemp("lenet1") / "onnx", progress=False)


def _edgecnn(*args, cwd=None) -> subprocess.Popen:
    """The real CLI in its own process (its own locks, its own signals)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "edgecnn", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{proc.stdout.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def _last_line_error(result) -> str:
    """Exit 1, no traceback, and one error line (beside the progress lines of the work done before the disk
    filled)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.output.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.output
    return errors[0]


def _digests(art_dir: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(Path(art_dir).iterdir()) if p.is_file()}


# -- 1. a run owns its folder ----------------------------------------------------------------------
def test_failing_run_never_deletes_a_concurrent_runs_output(lenet1, tmp_path, cli_run):
    """Run 1 creates --out and is still working when run 2 starts on the same --out; run 1 then fails
    (interrupted). Whatever run 2 was told, a run that exited 0 keeps its output."""
    out = tmp_path / "shared-out"
    calib = ROOT / "calibration"
    first = _edgecnn(
        "compress", lenet1.path, "--int8", "--calib", calib, "--subset-size", "300", "--no-bench", "--out", out
    )
    _wait_for(out.exists, first, "run 1 created its folder")
    os.kill(first.pid, signal.SIGSTOP)  # run 1 is mid-run (reading its calibration images)
    try:
        second = cli_run(["compress", lenet1.path, *FAST_COMPRESS, "--out", out])
    finally:
        os.kill(first.pid, signal.SIGINT)  # run 1 fails ...
        os.kill(first.pid, signal.SIGCONT)
        first.communicate(timeout=120)
    assert first.returncode != 0
    if second.exit_code == 0:  # ... and must not take run 2's finished output with it
        report = json.loads((out / "compress.json").read_text())
        assert Artifact.load(report["final"]).precision == "fp16"
        assert (out / "final").resolve() == Path(report["final"]).resolve()
    else:
        line = one_line_error(second)
        assert "another edgecnn compress run" in line and str(out) in line


def test_out_locked_by_a_running_compress_is_refused(lenet1, tmp_path, cli_run):
    """While a run holds its folder (the lock a real run takes), a second run is refused in one line,
    before any work, and the holder's files are untouched."""
    out = tmp_path / "busy"
    out.mkdir()
    (out / "compress.running").write_text(json.dumps({"pid": 4242}))
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = cli_run(["compress", lenet1.path, *FAST_COMPRESS, "--out", out])
    finally:
        os.close(fd)
    line = one_line_error(r)
    assert "another edgecnn compress run" in line and "4242" in line and "--out" in line
    assert sorted(p.name for p in out.iterdir()) == ["compress.running"]


def test_default_run_folders_of_simultaneous_runs_are_distinct(lenet1, tmp_path):
    """Two runs started in the same second without --out each get their own folder."""
    procs = [_edgecnn("compress", lenet1.path, *FAST_COMPRESS, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = sorted((tmp_path / "runs" / "compress").iterdir())
    assert len(runs) == 2 and all((r / "compress.json").is_file() for r in runs)


# -- 2. --out is or contains the source ------------------------------------------------------------
@pytest.mark.parametrize(
    "command,out_of,extra",
    [
        ("export", "self", []),
        ("export", "parent", []),
        ("export", "inside", []),
        ("prune", "self", ["--ratio", "0.5"]),
        ("prune", "parent", ["--ratio", "0.5"]),
        ("compress", "self", FAST_COMPRESS),
        ("compress", "parent", FAST_COMPRESS),
        ("deploy", "self", ["--target", "cpu"]),
        ("deploy", "parent", ["--target", "cpu"]),
    ],
)
def test_out_that_is_or_contains_the_source_is_refused(lenet1, tmp_path, cli_run, command, out_of, extra):
    src = tmp_path / "work" / "lenet"
    src.parent.mkdir()
    shutil.copytree(lenet1.path, src)
    before = _digests(src)
    out = {"self": src, "parent": src.parent, "inside": src / "onnx"}[out_of]
    r = cli_run([command, src, *extra, "--out", out])
    line = one_line_error(r)
    assert "source" in line and "--out" in line, line
    assert _digests(src) == before and sorted(p.name for p in src.iterdir()) == sorted(before)


def test_check_out_names_the_relation(tmp_path, lenet1):
    with pytest.raises(ArtifactError, match="is the source artifact"):
        check_out(lenet1.path, lenet1)
    with pytest.raises(ArtifactError, match="contains the source artifact"):
        check_out(Path(lenet1.path).parent, str(lenet1.path))
    with pytest.raises(ArtifactError, match="inside the source artifact"):
        check_out(Path(lenet1.path) / "x", Path(lenet1.path) / MANIFEST)
    check_out(tmp_path / "elsewhere", lenet1, "lenet5", None)  # a zoo name or None is no path


# -- 3. an interrupted re-run is not deployed -------------------------------------------------------
def test_interrupted_rerun_is_marked_and_deploy_skips_it(lenet1, tmp_path, cli_run, monkeypatch):
    runs = tmp_path / "runs" / "compress"
    older, rerun = runs / "a-older", runs / "b-rerun"
    monkeypatch.chdir(tmp_path)
    for run in (older, rerun):
        assert cli_run(["compress", lenet1.path, *FAST_COMPRESS, "--out", run]).exit_code == 0
    art, _ = latest_compress_output(tmp_path)
    assert art.path.resolve() == (rerun / "fp16").resolve()
    old_id = json.loads((rerun / "original-onnx" / MANIFEST).read_text())["id"]

    def replaced() -> bool:
        try:
            return json.loads((rerun / "original-onnx" / MANIFEST).read_text())["id"] != old_id
        except (OSError, ValueError):
            return False

    again = _edgecnn(
        "compress", lenet1.path, "--int8", "--calib", ROOT / "calibration", "--subset-size", "300",
        "--no-bench", "--out", rerun, cwd=tmp_path,
    )  # fmt: skip
    _wait_for(replaced, again, "the re-run replaced a step")
    again.kill()  # SIGKILL: no clean-up runs
    again.communicate(timeout=60)
    # the folder says it did not finish; no stale pointer to a final artifact is left
    assert (rerun / "compress.running").is_file()
    assert not (rerun / "final").is_symlink() and not (rerun / "compress.json").exists()
    art, why = latest_compress_output(tmp_path)
    assert art.path.resolve() == (older / "fp16").resolve(), why
    r = cli_run(["deploy", "--target", "gpu", "--no-build", "--out", tmp_path / "bundle"])
    assert r.exit_code == 0, r.output
    assert "a-older" in r.output and "b-rerun" not in r.output.split("deploying")[1].splitlines()[0]
    # re-running into the unfinished folder is allowed, and once it finishes deploy takes it again
    assert cli_run(["compress", lenet1.path, *FAST_COMPRESS, "--out", rerun]).exit_code == 0
    assert not (rerun / "compress.running").exists()
    art, _ = latest_compress_output(tmp_path)
    assert art.path.resolve() == (rerun / "fp16").resolve()


def test_only_unfinished_runs_leave_deploy_nothing(lenet1, tmp_path, cli_run):
    run = tmp_path / "runs" / "compress" / "x"
    assert cli_run(["compress", lenet1.path, *FAST_COMPRESS, "--out", run]).exit_code == 0
    (run / "compress.json").unlink()
    (run / "compress.running").write_text("{}")
    with pytest.raises(ArtifactError, match="did not finish"):
        latest_compress_output(tmp_path)


# -- 4. disk full and other OS errors ----------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path):
    """A real 1 MiB file system, filled to leave ``free`` bytes (default 32 kB): every artifact overflows it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}); needs root")
    try:
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        (mnt / "filler").write_bytes(b"\0" * (free - 32 * 1024))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _left(mnt: Path) -> list[str]:
    return sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*") if not p.name.startswith("filler"))


@pytest.mark.parametrize("command", ["export", "prune", "compress", "train", "deploy", "json"])
def test_disk_full_is_one_line_naming_the_path(command, full_disk, lenet1, lenet1_onnx, cli_run):
    out = full_disk / "out"
    args = {
        "export": ["export", lenet1.path, "--out", out],
        "prune": ["prune", lenet1.path, "--ratio", "0.3", "--out", out],
        "compress": ["compress", lenet1.path, *FAST_COMPRESS, "--out", out],
        "train": ["train", "lenet5", "--data", "digits", "--epochs", "1", "--out", out],
        "deploy": ["deploy", lenet1_onnx.path, "--target", "cpu", "--out", out],
        "json": ["export", lenet1.path, "--out", full_disk.parent / "e", "--json", full_disk / "e.json"],
    }[command]
    if command == "json":  # a few kB of JSON: leave no room at all
        with contextlib.suppress(OSError), open(full_disk / "filler-rest", "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    r = cli_run(args)
    line = _last_line_error(r)
    assert "cannot write" in line and str(full_disk) in line and "No space left on device" in line, line
    assert _left(full_disk) == []  # nothing half-written


def test_read_only_out_is_refused_before_any_work(lenet1, tmp_path, cli_run):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; needs root")
    try:
        t0 = time.perf_counter()
        r = cli_run(["train", "lenet5", "--data", "digits", "--epochs", "30", "--out", mnt / "x"])
        line = one_line_error(r)
        assert "cannot write" in line and str(mnt) in line and "read-only" in line
        assert time.perf_counter() - t0 < 5  # 30 epochs were not trained first
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_atomic_writes_map_os_errors_and_leave_nothing(full_disk):
    with pytest.raises(EdgeCnnError, match=r"cannot write .*big\.json.*No space left on device"):
        atomic_write_json(full_disk / "big.json", {"x": "y" * 100_000})
    assert _left(full_disk) == []
    with pytest.raises(ZeroDivisionError):  # a bug inside the block keeps its own exception
        with atomic_file(full_disk / "t") as tmp:
            tmp.write_text("x")
            1 / 0  # noqa: B018
    assert _left(full_disk) == []


# -- 5. an --out that cannot be a folder: refused before the work ------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["export", "{art}"],
        ["prune", "{art}", "--ratio", "0.3"],
        ["compress", "{art}", *FAST_COMPRESS],
        ["train", "lenet5", "--data", "digits", "--epochs", "30"],
    ],
    ids=["export", "prune", "compress", "train"],
)
@pytest.mark.parametrize("kind", ["dangling-symlink", "under-a-file"])
def test_bad_out_fails_in_one_line_before_the_work(command, kind, lenet1, tmp_path, cli_run):
    if kind == "dangling-symlink":
        out = tmp_path / "link"
        out.symlink_to(tmp_path / "nowhere")
        expect = "dangling"
    else:
        (tmp_path / "somefile").write_text("not a folder")
        out = tmp_path / "somefile" / "x"
        expect = "not a folder"
    t0 = time.perf_counter()
    r = cli_run([a.replace("{art}", str(lenet1.path)) for a in command] + ["--out", str(out)])
    line = one_line_error(r)
    assert expect in line and str(out) in line, line
    assert time.perf_counter() - t0 < 5  # refused before 30 epochs / a compress chain
    assert not (tmp_path / "nowhere").exists()
    assert kind != "under-a-file" or (tmp_path / "somefile").read_text() == "not a folder"

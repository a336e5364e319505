"""Crash-safe files: a process killed (SIGKILL) or failing in the middle of a write leaves the
old file or none, never a cut one; files and their folder are fsync'd; an AppendLog loses at
most the line being written, and readers never see that line."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sim.io
from sim.io import AppendLog, OutputError, atomic_write, whole_lines

NEW = "n" * 3_000_000  # large enough that a cut file would be visible by its size


def _child(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python (sim importable) and return how it ended."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def _temporaries(folder: Path) -> list[Path]:
    return list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("moment", ["fsync", "replace"])
@pytest.mark.parametrize("old", [True, False], ids=["old file", "no file"])
def test_a_sigkill_in_the_middle_of_a_write_leaves_the_old_file_or_none(tmp_path, moment, old):
    """A child killed with SIGKILL after writing (before fsync, or before the rename) leaves
    the old file as it was, or no file at all: never a cut one."""
    target = tmp_path / "summary.json"
    if old:
        target.write_text("old", encoding="utf-8")
    finished = _child(f"""
        import os, signal
        import sim.io
        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        sim.io.os.{moment} = killed
        sim.io.atomic_write(sim.io.Path({str(target)!r}), "n" * 3_000_000)
    """)
    assert finished.returncode == -signal.SIGKILL, finished.stderr
    if old:
        assert target.read_text(encoding="utf-8") == "old"
    else:
        assert not target.exists()
    # The temporary a killed process leaves is hidden, named as such, and never the target.
    assert all(p.name.startswith(".summary.json.") for p in _temporaries(tmp_path))


def test_an_error_while_syncing_keeps_the_old_file_and_names_the_folder(tmp_path, monkeypatch):
    """An I/O error at fsync: OutputError naming the file, folder and cause; old file kept."""
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sim.io.os, "fsync", failing)
    with pytest.raises(OutputError) as caught:
        atomic_write(target, NEW)
    message = str(caught.value)
    assert "report.html" in message and f"{tmp_path.as_posix()}/" in message
    assert "Input/output error (EIO)" in message and "\n" not in message
    assert target.read_text(encoding="utf-8") == "old"
    assert _temporaries(tmp_path) == []


def test_the_file_and_then_its_folder_are_fsynced(tmp_path, monkeypatch):
    """fsync reaches the new file's data before the rename, and the folder after it."""
    target = tmp_path / "timeseries.csv"
    synced: list[tuple[str, bool]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def recording_fsync(fd):
        synced.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode)))
        real_fsync(fd)

    def recording_replace(*args):
        synced.append(("replace", False))
        real_replace(*args)

    monkeypatch.setattr(sim.io.os, "fsync", recording_fsync)
    monkeypatch.setattr(sim.io.os, "replace", recording_replace)
    atomic_write(target, "t_s\n0\n")
    assert synced == [("fsync", False), ("replace", False), ("fsync", True)]
    assert target.read_text(encoding="utf-8") == "t_s\n0\n"


def test_a_line_cut_by_sigkill_is_never_read_back(tmp_path):
    """A child killed in the middle of appending a line: the lines appended before are on disk,
    the cut one is not read back, and a new log over the file starts whole."""
    path = tmp_path / "results.csv"
    finished = _child(f"""
        import os, signal
        from sim.io import AppendLog
        log = AppendLog({str(path)!r}, "a,b\\n")
        for i in range(3):
            log.append(f"{{i}},{{i * i}}\\n")
        log._file.write("3,12345")  # half of the fourth line reaches the disk, then the kill
        log._file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert finished.returncode == -signal.SIGKILL, finished.stderr
    assert path.read_text(encoding="utf-8").endswith("3,12345")  # the cut is really there
    assert whole_lines(path) == "a,b\n0,0\n1,1\n2,4\n"
    with AppendLog(path, whole_lines(path)) as log:
        log.append("3,9\n")
    assert path.read_text(encoding="utf-8") == "a,b\n0,0\n1,1\n2,4\n3,9\n"


def test_an_append_log_refuses_anything_but_one_whole_line(tmp_path):
    """A line without its newline, or with two, would break the one-line-one-record rule."""
    with AppendLog(tmp_path / "log.csv", "h\n") as log:
        for bad in ("no newline", "two\nlines\n", "carriage\r\n"):
            with pytest.raises(ValueError, match="one line"):
                log.append(bad)
    assert whole_lines(tmp_path / "log.csv") == "h\n"
    assert whole_lines(tmp_path / "missing.csv") == ""

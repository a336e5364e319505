"""Two runs into one folder: a second `outage-sim run` or `sweep` aimed at a folder that a live
process is writing is refused at once (exit 1) naming that process; the lock a killed process
leaves is taken over, with the temporaries it left, and the warning says whose it was."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.io import LOCK_NAME, FolderBusyError, FolderLock

SMALL = """\
[scenario]
name = "lock-small"
duration = "10min"
bin = "1min"

[arrivals]
rate = "5/s"

[service]
servers = 8
time = { dist = "exponential", mean = "1s" }
"""

# ~35M simulated requests: minutes of work, so it is still writing while the test runs.
LONG = SMALL.replace('duration = "10min"', 'duration = "20d"').replace("5/s", "20/s")


def _command() -> str:
    script = Path(sys.executable).with_name("outage-sim")
    found = str(script) if script.exists() else shutil.which("outage-sim")
    assert found, "the outage-sim console script is not installed"
    return found


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_lock_on_a_folder_is_refused_naming_the_holder(tmp_path) -> None:
    """While one FolderLock holds a folder, another is refused with its pid and host."""
    with FolderLock(tmp_path, "outage-sim run a.toml"):
        holder = json.loads((tmp_path / LOCK_NAME).read_text(encoding="utf-8"))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(FolderBusyError) as refused, FolderLock(tmp_path):
            pass
    message = str(refused.value)
    assert f"process {os.getpid()} on {socket.gethostname()}" in message
    assert "outage-sim run a.toml" in message and "\n" not in message
    assert not (tmp_path / LOCK_NAME).exists()  # released and removed
    with FolderLock(tmp_path) as again:  # and free again
        assert again.took_over is None


def test_a_dead_processs_lock_is_taken_over_with_its_temporaries(tmp_path) -> None:
    """A lock file left by a dead process is taken over, and its temporaries removed."""
    dead = _dead_pid()
    left = {"pid": dead, "host": socket.gethostname(), "command": "outage-sim sweep x.toml"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(left), encoding="utf-8")
    (tmp_path / ".results.csv.abc123.tmp").write_text("cut", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with FolderLock(tmp_path) as lock:
        assert lock.took_over is not None
        assert f"process {dead}" in lock.took_over and "no longer running" in lock.took_over
        assert "removed 1 temporary" in lock.took_over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_folder_made_for_the_lock_and_left_empty_is_removed(tmp_path) -> None:
    """A command refused after taking its lock leaves no folder behind; one that wrote keeps it."""
    with FolderLock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b" / LOCK_NAME).is_file()
    assert list(tmp_path.iterdir()) == []
    with FolderLock(tmp_path / "a" / "b"):
        (tmp_path / "a" / "b" / "summary.json").write_text("{}", encoding="utf-8")
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["summary.json"]


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_two_real_processes_one_folder(tmp_path) -> None:
    """A live `outage-sim run` holds its folder: a second run and a sweep aimed at it exit 1
    at once naming it; after it is killed with SIGKILL, a new run takes the lock over."""
    (tmp_path / "small.toml").write_text(SMALL, encoding="utf-8")
    (tmp_path / "long.toml").write_text(LONG, encoding="utf-8")
    out = tmp_path / "out"
    first = subprocess.Popen(
        [_command(), "run", str(tmp_path / "long.toml"), "--out", str(out), "-q"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / LOCK_NAME).is_file() or not (out / LOCK_NAME).read_text():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        for args in (["run", "--no-charts"], ["sweep", "--grid", "service.servers=8,9"]):
            second = subprocess.run(
                [_command(), args[0], str(tmp_path / "small.toml"), *args[1:], "--out", str(out)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 1, second.stderr
            (line,) = second.stderr.splitlines()
            assert f"is being written by process {first.pid} on {socket.gethostname()}" in line
            assert "outage-sim run" in line and "Traceback" not in line
        assert first.poll() is None  # the first run was not disturbed
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    assert (out / LOCK_NAME).is_file()  # a killed process cannot remove its lock...
    third = subprocess.run(
        [_command(), "run", str(tmp_path / "small.toml"), "--out", str(out), "--no-charts", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert third.returncode == 0, third.stderr  # ...but it does not stay stuck
    assert f"took over the lock of {out.as_posix()}/ left by process {first.pid}" in third.stderr
    assert (out / "summary.json").is_file() and not (out / LOCK_NAME).exists()

"""A full disk: a run whose report cannot be written (a file-size limit, a small tmpfs filled
up) exits 1 with one line naming the folder and the cause, and the report already in that
folder stays whole: every file in it is complete, no temporaries are left."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = """\
[scenario]
name = "disk-small"
duration = "30min"
bin = "1min"
seed = 3

[arrivals]
rate = "5/s"

[[faults]]
at = "10min"
duration = "5min"
capacity_factor = 0.3

[service]
servers = 8
time = { dist = "exponential", mean = "1s" }
"""

PNG_END = b"IEND\xaeB`\x82"


def _command() -> str:
    script = Path(sys.executable).with_name("outage-sim")
    found = str(script) if script.exists() else shutil.which("outage-sim")
    assert found, "the outage-sim console script is not installed"
    return found


def _run(scenario: Path, out: Path, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_command(), "run", str(scenario), "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec_fn,
    )


def _assert_whole(out: Path, names: list[str], bins: int) -> None:
    """Every file of the report is complete (whatever run wrote it), and nothing else is there."""
    assert sorted(p.name for p in out.iterdir()) == names
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["scenario"] == "disk-small"
    lines = (out / "timeseries.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == bins + 1
    assert {len(line.split(",")) for line in lines} == {len(lines[0].split(","))}
    for png in out.glob("*.png"):
        assert png.read_bytes().endswith(PNG_END), png.name
    assert (out / "report.html").read_text(encoding="utf-8").rstrip().endswith("</html>")


def _first_report(tmp_path: Path, out: Path) -> tuple[Path, list[str]]:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL, encoding="utf-8")
    first = _run(scenario, out)
    assert first.returncode == 0, first.stderr
    names = sorted(p.name for p in out.iterdir())
    _assert_whole(out, names, bins=30)
    return scenario, names


def _assert_refused(finished: subprocess.CompletedProcess, out: Path, cause: str) -> None:
    assert finished.returncode == 1, finished.stderr
    (line,) = finished.stderr.splitlines()
    assert line.startswith("outage-sim: error: cannot write ")
    assert f" in {out.as_posix()}/: " in line and line.endswith(cause), line
    assert "Traceback" not in finished.stderr


def test_a_file_size_limit_exits_1_naming_the_folder_and_keeps_the_report_whole(tmp_path):
    """`ulimit -f` (RLIMIT_FSIZE) of 16 KiB: the charts cannot be written; exit 1, one line
    with the folder and EFBIG; the earlier report in the folder stays whole."""
    out = tmp_path / "out"
    scenario, names = _first_report(tmp_path, out)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))

    _assert_refused(_run(scenario, out, small_files), out, "(EFBIG)")
    _assert_whole(out, names, bins=30)


def _mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` on `folder`; the reason it cannot be done, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    return None if done.returncode == 0 else f"cannot mount a tmpfs here: {done.stderr.strip()}"


def test_a_full_tmpfs_exits_1_naming_the_folder_and_keeps_the_report_whole(tmp_path):
    """A 4 MB tmpfs holding a report, then filled to the last byte: the next run exits 1 with
    the folder and ENOSPC, and the report there stays whole."""
    disk = tmp_path / "disk"
    reason = _mount_tmpfs(disk, "4m")
    if reason:
        pytest.skip(reason)  # the file-size test above covers the same path everywhere
    try:
        out = disk / "out"
        scenario, names = _first_report(tmp_path, out)
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # fill it up to the last byte
            for block in (65536, 1):
                with contextlib.suppress(OSError):
                    while os.write(filler, b"\0" * block):
                        pass
        finally:
            os.close(filler)
        _assert_refused(_run(scenario, out), out, "(ENOSPC)")
        _assert_whole(out, names, bins=30)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)

"""A lost Dask worker, a lost scheduler: on a loopback cluster of real processes (a `dask
scheduler` and two worker processes), a worker killed with SIGKILL mid-sweep leaves the sweep
to finish on the other with the rows of a local run; a scheduler killed mid-sweep makes
`outage-sim sweep --dask` exit 1 with one clear line, and `--resume` finishes the sweep."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_kill_resume import TINY  # the same tiny scenario: rows arrive one by one

from sim.experiments.sweep import sweep

distributed = pytest.importorskip("distributed", reason="the Dask tests need dask.distributed")
pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")

GRID = {"service.servers": [40, 44, 48, 52, 56, 60]}
REPS = 2


def _script(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"the {name} console script is not installed"
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    return list(csv.DictReader(text[: text.rfind("\n") + 1].splitlines()))


def _wait_rows(path: Path, rows: int, alive: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 120
    while len(_rows(path)) < rows:
        assert alive is None or alive.poll() is None, "the sweep ended before the kill"
        assert time.monotonic() < deadline, f"no row {rows} in {path}"
        time.sleep(0.005)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


def test_a_lost_worker_and_a_lost_scheduler(tiny, tmp_path) -> None:
    """SIGKILL one of two workers mid-sweep: same rows as a local run. SIGKILL the scheduler
    mid-sweep: exit 1, one line, no traceback; --resume (here on local processes: results do
    not depend on where runs ran) writes the local run's results.csv byte for byte."""
    reference = tmp_path / "reference"
    sweep(tiny, GRID, REPS, workers=1, out_dir=reference, progress=False)
    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = _start([_script("dask"), "scheduler", "--host", "127.0.0.1", "--port",
                        address.rsplit(":", 1)[1], "--no-dashboard"])  # fmt: skip
    workers = _start([_script("dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
                      "--no-dashboard"])  # fmt: skip
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            pids = list(client.run(os.getpid).values())

        # A worker lost: its runs move to the other.
        lost = tmp_path / "lost-worker"
        killed: list[int] = []

        def kill_one_worker() -> None:
            _wait_rows(lost / "results.csv", 2)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(len(_rows(lost / "results.csv")))

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        rows = sweep(tiny, GRID, REPS, dask_address=address, out_dir=lost, progress=False)
        killer.join(timeout=60)
        assert killed and killed[0] < len(rows), "the worker was not killed mid-sweep"
        with pytest.raises(ProcessLookupError):
            os.kill(pids[0], 0)
        assert not [row for row in rows if row["error"]]
        assert (lost / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()

        # The scheduler lost: a clear error, and --resume finishes the job.
        out = tmp_path / "lost-scheduler"
        values = ",".join(map(str, GRID["service.servers"]))
        args = [_script("outage-sim"), "sweep", str(tiny), "--reps", str(REPS), "--out", str(out),
                "--grid", f"service.servers={values}"]  # fmt: skip
        child = subprocess.Popen(
            [*args, "--dask", address, "-q"], stderr=subprocess.PIPE, text=True
        )
        _wait_rows(out / "results.csv", 2, child)
        _stop(scheduler)
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 1, stderr
        assert "Traceback" not in stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"outage-sim: error: lost the Dask scheduler at {address} after ")
        assert last.endswith("rerun with --resume to run only the rest")
        finished = _rows(out / "results.csv")
        assert finished and not [row for row in finished if row["error"]]
        resumed = subprocess.run([*args, "--workers", "1", "--resume", "-q"],
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()
    finally:
        _stop(scheduler)
        _stop(workers)

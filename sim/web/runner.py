"""Runs for the workbench in worker processes, one at a time: the newest request wins.

A change on the page starts a run; a run still going when a newer one arrives is abandoned:
its worker process is ended (so it stops using a core) and its result is never sent. One
spare worker waits with its imports done and the compiled kernel loaded, so a new run starts
at once; a worker that finished becomes the spare. Processes, not threads: the engines hold
the interpreter while they run, and a thread cannot be stopped.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from sim.errors import OutageSimError
from sim.model.scenario import parse_scenario
from sim.run import simulate
from sim.web import job as web_job

WARM_UP = """
[scenario]
name = "warm-up"
duration = "2min"
[arrivals]
rate = "5/s"
[service]
servers = 2
time = { dist = "exponential", mean = "100ms" }
[client]
timeout = "1s"
retries = 1
"""


@dataclass(frozen=True)
class Job:
    """One run: the scenario file (the server's, never the page's), overrides, engine."""

    file: str
    overrides: dict[str, Any]
    engine: str = "auto"


def _serve(connection: Connection, progress) -> None:
    """A worker's loop: warm up, then run each job received and send back its answer."""
    # Ctrl-C in the terminal reaches the whole process group: the server ends its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    simulate(parse_scenario(WARM_UP))  # loads the compiled kernel from its cache
    connection.send(("ready", None))

    def report(fraction: float) -> None:
        progress.value = float(fraction)

    while True:
        try:
            task: Job = connection.recv()
        except (EOFError, OSError):
            return
        progress.value = 0.0
        try:
            answer = ("ok", web_job.run(task.file, task.overrides, task.engine, report))
        except OutageSimError as error:
            answer = ("refused", str(error))
        except Exception as error:  # noqa: BLE001 - sent to the page as a 500 with its text
            answer = ("failed", f"{type(error).__name__}: {error}")
        connection.send(answer)


class _Worker:
    def __init__(self, context) -> None:
        self.progress = context.Value("d", 0.0, lock=False)
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, self.progress), daemon=True, name="outage-sim-tune"
        )
        self.process.start()
        child.close()
        self.ready = False

    def wait_ready(self) -> bool:
        if not self.ready:
            try:
                self.ready = self.connection.recv()[0] == "ready"
            except (EOFError, OSError):
                return False
        return self.ready

    def ask(self, job: Job) -> tuple[str, Any] | None:
        """Send a job and wait for its answer; None when the process was ended meanwhile
        (its end of the pipe closes, so the read ends with EOF)."""
        try:
            if not self.wait_ready():
                return None
            self.connection.send(job)
            return self.connection.recv()
        except (EOFError, OSError):
            return None

    def stop(self) -> None:
        """End the process; safe from any thread, also while another one is in `ask`."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=5)

    def end(self) -> None:
        """Stop the process and close the pipe: only by the thread that asks, or when no
        thread does (closing a pipe under a reader frees its descriptor for reuse while
        the read goes on, and the read may then return another pipe's bytes)."""
        self.stop()
        self.connection.close()


class Runner:
    """One run at a time in a worker process; a newer `run` abandons the one in progress."""

    def __init__(self) -> None:
        # spawn: a clean interpreter, never a fork of the server's threads.
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._current: _Worker | None = None
        self._current_job: Job | None = None
        self._spare: _Worker | None = None
        self._token = 0
        self._closed = False

    def start(self) -> None:
        """Start the spare worker now, so the first run need not wait for its imports."""
        with self._lock:
            if self._spare is None and not self._closed:
                self._spare = _Worker(self._context)

    def run(self, job: Job) -> tuple[str, Any]:
        """Run `job` (blocking); ("ok", payload), ("refused", message), ("failed", message),
        or ("abandoned", None) when a newer run replaced it."""
        with self._lock:
            if self._closed:
                return ("abandoned", None)
            self._token += 1
            token = self._token
            self._abandon_current()
            worker = self._spare or _Worker(self._context)
            self._spare = None
            self._current, self._current_job = worker, job
        answer = worker.ask(job)
        with self._lock:
            if token != self._token or self._closed:
                worker.end()  # stopped by whoever abandoned it; its pipe is closed here
                return ("abandoned", None)
            self._current = self._current_job = None
            if answer is None:
                worker.end()
                return ("failed", "the run's worker process ended unexpectedly")
            if self._spare is None:
                self._spare = worker
            else:
                worker.end()
        return answer

    def abandon(self) -> None:
        """Drop the run in progress, if any (a cached answer replaced it)."""
        with self._lock:
            self._token += 1
            self._abandon_current()

    def _abandon_current(self) -> None:
        if self._current is not None:
            self._current.stop()  # the thread in its `ask` closes the pipe
            self._current = self._current_job = None

    def progress(self) -> dict[str, Any]:
        """What is running: its engine and the share simulated so far."""
        with self._lock:
            if self._current is None:
                return {"running": False, "fraction": None, "engine": None}
            return {
                "running": True,
                "fraction": self._current.progress.value,
                "engine": self._current_job.engine if self._current_job else None,
            }

    def close(self) -> None:
        """End every worker process."""
        with self._lock:
            self._closed = True
            if self._current is not None:
                self._current.stop()  # the thread in its `ask` closes the pipe
            if self._spare is not None:
                self._spare.end()
            self._current = self._spare = None

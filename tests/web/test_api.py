"""The workbench's JSON API, driven in-process through Starlette's TestClient."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sim.model.scenario import load_scenario
from sim.web.app import create_app
from sim.web.runner import Job, Runner
from sim.web.save import tuned_text

ROOT = Path(__file__).resolve().parents[2]
MMC = ROOT / "scenarios" / "mmc.toml"
SIGNAL = ROOT / "scenarios" / "signal-2021-01.toml"


@pytest.fixture(scope="module")
def mmc_client():
    with TestClient(create_app(MMC), base_url="http://127.0.0.1") as client:
        yield client


def test_run_returns_summary_and_series(mmc_client):
    """A run answers with the engine, the headline, the summary and one value per bin."""
    reply = mmc_client.post("/api/run", json={"overrides": {}})
    assert reply.status_code == 200
    data = reply.json()
    assert data["engine"] == "des"  # M/M/10 for a day is small: the exact engine
    assert len(data["series"]["t_s"]) == len(data["series"]["queue"]) == 1440
    assert data["summary"]["outages"] == []
    assert data["headline"]["lead"].startswith("No outage")
    assert data["command"] == f"outage-sim run {MMC}"


def test_an_override_changes_the_run(mmc_client):
    """Nine servers for a load of nine never keep up: the headline reports an outage."""
    data = mmc_client.post("/api/run", json={"overrides": {"service.servers": 9}}).json()
    assert data["summary"]["outages"], data["headline"]
    assert data["headline"]["bad"] is True
    assert data["command"].endswith("--set service.servers=9")


def test_bad_value_gives_the_cli_message(tmp_path):
    """A value the scenario checks refuse is a 400 with the CLI's one-line message: file,
    key and line (a server count the scale does not divide blames scenario.scale's line)."""
    with TestClient(create_app(SIGNAL), base_url="http://127.0.0.1") as client:
        reply = client.post("/api/run", json={"overrides": {"service.servers": 20_001}})
    assert reply.status_code == 400
    cli = subprocess.run(
        [sys.executable, "-m", "sim.cli", "check", str(SIGNAL), "--set", "service.servers=20001"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2
    message = reply.json()["error"]
    assert cli.stderr.strip() == f"outage-sim: error: {message}"
    assert message.startswith(f"{SIGNAL}:") and "[scenario.scale]" in message
    line = int(message.split(":")[1])
    assert "scale = 250" in SIGNAL.read_text().splitlines()[line - 1]


def test_bad_override_names_its_key(mmc_client):
    """An override's own error names the key, which the page shows beside its control."""
    reply = mmc_client.post("/api/run", json={"overrides": {"client.timeout": "3 parsecs"}})
    assert reply.status_code == 400
    assert reply.json()["key"] == "client.timeout"
    assert reply.json()["error"].startswith("--set: [client.timeout] unknown duration unit")


@pytest.mark.parametrize(
    "overrides",
    [
        {"population.downloads_csv": "/etc/passwd"},
        {"population": {"downloads_csv": "/etc/passwd", "initial_users": 1}},
        {"population.downloads_csv.x": 1},
    ],
)
def test_no_file_can_be_named(mmc_client, overrides):
    """Overrides that would make the server read a file are refused before any loading."""
    for path in ("/api/run", "/api/save"):
        reply = mmc_client.post(path, json={"overrides": overrides})
        assert reply.status_code == 400
        assert "does not read files" in reply.json()["error"]


def test_requests_outside_the_contract_are_refused(mmc_client):
    """Only loopback host names, JSON bodies, known fields and the fixed static files."""
    assert mmc_client.get("/api/scenario", headers={"host": "attacker.example"}).status_code == 400
    form = mmc_client.post(
        "/api/run", content=b"overrides=1", headers={"content-type": "text/plain"}
    )
    assert form.status_code == 400
    assert mmc_client.post("/api/run", json={"file": "/etc/passwd"}).status_code == 400
    assert mmc_client.get("/static/..%2fapp.py").status_code == 404
    assert mmc_client.get("/static/app.py").status_code == 404
    plotly = mmc_client.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000  # served, not a CDN


def test_the_run_size_guard_applies(mmc_client):
    """A DES run above the CLI's limit is refused with its message, not run."""
    reply = mmc_client.post(
        "/api/run", json={"overrides": {"arrivals.rate": "900/s", "service.servers": 1000,
                                        "scenario.duration": "10d"}, "engine": "des"},
    )  # fmt: skip
    assert reply.status_code == 400
    assert "would simulate about" in reply.json()["error"]


def test_stale_run_is_abandoned(mmc_client):
    """A run still going when a newer request arrives gets 409 and its worker is ended."""
    runner: Runner = mmc_client.app.state.workbench.runner
    slow = {"scenario.duration": "40d", "scenario.seed": 7}  # about 30M requests: seconds
    answers = {}

    def ask_slow():
        answers["slow"] = mmc_client.post("/api/run", json={"overrides": slow, "engine": "des"})

    thread = threading.Thread(target=ask_slow)
    thread.start()
    deadline = time.monotonic() + 60
    while not runner.progress()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stale_worker = runner._current
    assert stale_worker is not None
    quick = mmc_client.post("/api/run", json={"overrides": {"scenario.seed": 8}})
    thread.join(timeout=60)
    assert quick.status_code == 200
    assert answers["slow"].status_code == 409
    assert not stale_worker.process.is_alive()  # stopped, not left to finish on a core


def _start_slow_run(runner: Runner) -> tuple[threading.Thread, dict]:
    """A 40-day M/M/10 run (seconds) asked in a thread, once the runner has it going; its
    answer lands in the dict under "slow"."""
    results = {}
    slow = Job(str(MMC), {"scenario.duration": "40d"}, "des")
    thread = threading.Thread(target=lambda: results.setdefault("slow", runner.run(slow)))
    thread.start()
    while not runner.progress()["running"]:
        time.sleep(0.05)
    return thread, results


def test_runner_drops_the_older_answer():
    """Runner level: the older job's caller is told it was abandoned, the newer one runs."""
    runner = Runner()
    try:
        thread, results = _start_slow_run(runner)
        kind, payload = runner.run(Job(str(MMC), {}, "des"))
        thread.join(timeout=60)
        assert results["slow"] == ("abandoned", None)
        assert kind == "ok" and payload["summary"]["scenario"] == "mmc"
    finally:
        runner.close()


def test_abandoning_leaves_the_pipe_to_the_thread_that_reads_it():
    """An abandon stops the worker but does not close the pipe another thread is reading:
    a closed descriptor is reused by the next worker's pipe, and the read in flight then
    takes that worker's bytes (a flood of runs once got a plain-text 500 this way)."""
    runner = Runner()
    try:
        thread, results = _start_slow_run(runner)
        reading = runner._current
        runner.abandon()
        assert not reading.process.is_alive()
        assert not reading.connection.closed  # still the reading thread's
        thread.join(timeout=60)
        assert results["slow"] == ("abandoned", None)
        assert reading.connection.closed  # closed by that thread once its read ended
    finally:
        runner.close()


class _BrokenRunner(Runner):
    def run(self, job: Job):
        raise TypeError("a bug")


def test_a_bug_is_still_answered_as_json():
    """An exception no route expects gives a JSON 500 naming it, not a plain-text page."""
    app = create_app(MMC, runner=_BrokenRunner())
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        answer = client.post("/api/run", json={"overrides": {"service.servers": 12}})
    assert answer.status_code == 500
    assert answer.json()["error"] == "internal error: TypeError: a bug"


def test_saved_text_keeps_comments_and_runs_anywhere(tmp_path):
    """The saved file is the original text with the overrides applied, its comments kept,
    its downloads CSV found from any folder; it loads as the overridden scenario."""
    overrides = {"service.servers": 60_000, "client.backoff.base": "2s"}
    text = tuned_text(SIGNAL, overrides)
    assert "# ~20M monthly active users, Dec 2020 (Engadget)" in text
    saved = tmp_path / "tuned.toml"
    saved.write_text(text)
    table = tomllib.loads(text)
    assert table["service"]["servers"] == 60_000
    assert table["client"]["backoff"] == {"base": "2s", "cap": "30s", "jitter": "full"}
    expected = load_scenario(SIGNAL, overrides=overrides).raw
    got = load_scenario(saved).raw
    csv = got["population"].pop("downloads_csv")
    assert Path(csv) == (SIGNAL.parent / expected["population"].pop("downloads_csv")).resolve()
    assert got == expected


def test_save_returns_the_command_line(mmc_client):
    """Save answers the tuned text and the `outage-sim run` line that runs the same."""
    reply = mmc_client.post(
        "/api/save", json={"overrides": {"client.timeout": "3s", "client.retries": 2}}
    )
    data = reply.json()
    assert reply.status_code == 200 and data["filename"] == "mmc-tuned.toml"
    assert tomllib.loads(data["toml"])["client"] == {"timeout": "3s", "retries": 2}
    assert data["command"] == (
        f"outage-sim run {MMC} --set 'client.timeout=\"3s\"' --set client.retries=2"
    )

"""The workbench page in a real browser: Debian's headless Chromium driven by Playwright
(pointed at /usr/bin/chromium; Playwright never downloads a browser here). Prints the redraw
times it measured (request sent to charts drawn, in the page)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIGNAL = ROOT / "scenarios" / "signal-2021-01.toml"
MMC = ROOT / "scenarios" / "mmc.toml"
CHROMIUM = Path(os.environ.get("OUTAGE_SIM_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
RUN_TIMEOUT_MS = 600_000  # a fluid month on a busy 2-core machine takes tens of seconds

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)


def _serve(file: Path):
    """`outage-sim tune FILE --no-browser` in a subprocess: (process, URL)."""
    command = [shutil.which("outage-sim") or "outage-sim", "tune", str(file), "--no-browser"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert " at http://127.0.0.1:" in line, (line, process.stderr.read() if process.poll() else "")
    return process, line.split(" at ")[1].split()[0]


def _stop(process) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130


@pytest.fixture
def browser_page(tmp_path):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            accept_downloads=True,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        context.close()
        assert not errors, errors


def _runs(page, count: int) -> dict:
    """Wait for the page's `count`-th drawn run; its timing."""
    page.wait_for_function(
        f"window.workbench && window.workbench.timings.length >= {count}", timeout=RUN_TIMEOUT_MS
    )
    return page.evaluate(f"window.workbench.timings[{count - 1}]")


def _cards(page) -> list[str]:
    """The headline cards as shown, 'label=value'."""
    return page.evaluate(
        "[...document.querySelectorAll('.card')].map(c => "
        "c.querySelector('.label').textContent + '=' + c.querySelector('.value').textContent)"
    )


def _set(page, key: str, value: str) -> None:
    page.fill(f"[data-key='{key}']", value)  # fires `input`, as typing does


def _report(capsys, what: str, timing: dict) -> None:
    with capsys.disabled():
        print(
            f"\n[redraw] {what}: {timing['total_ms'] / 1000:.2f} s from change to charts "
            f"({timing['engine']}: simulated {timing['wall_s']:.2f} s, "
            f"drawn {timing['draw_ms']:.0f} ms)"
        )


def test_reference_scenario_tuned_to_no_outage(browser_page, tmp_path, capsys):
    """The reference's outage headline; zoom to it; more servers: no outage; save; the CLI
    on the saved file gives the page's verdict."""
    page = browser_page
    process, url = _serve(SIGNAL)
    try:
        page.goto(url)
        first = _runs(page, 1)
        assert first["engine"] == "fluid"
        lead = page.inner_text("#lead")
        assert lead.startswith("The service went down at 15 Jan 2021"), lead
        assert "Metastable=yes" in _cards(page)
        _report(capsys, "reference, first run", first)

        page.click("#zoom")
        window = page.evaluate(
            "document.getElementById('charts').layout.xaxis.range.map(v => typeof v === 'number'"
            " ? v : Date.parse(String(v).replace(' ', 'T').replace(/Z?$/, 'Z')))"
        )  # Plotly holds a date range as UTC text: milliseconds since the epoch
        outage = page.evaluate("window.workbench.last.summary.outages[0]")
        start = page.evaluate("window.workbench.last.summary.start")
        assert (
            window[0] < _iso(start, outage["start_s"]) and _iso(start, outage["end_s"]) < window[1]
        )
        assert window[1] - window[0] < 0.5 * 19 * 86400e3  # zoomed in, not the whole month

        _set(page, "service.servers", "60000")
        tuned = _runs(page, 2)
        _report(capsys, "reference, servers 20,000 -> 60,000", tuned)
        lead = page.inner_text("#lead")
        assert lead.startswith("No outage"), lead
        assert page.is_disabled("#zoom")
        names = page.evaluate("document.getElementById('charts').data.map(t => t.name)")
        assert "previous: queue" in names  # the earlier run stays as an overlay

        with page.expect_download() as download:
            page.click("#save")
        saved = tmp_path / "saved" / download.value.suggested_filename
        saved.parent.mkdir()
        download.value.save_as(saved)
        page.wait_for_function("document.getElementById('command').textContent.includes('tuned')")
        command = page.inner_text("#command").splitlines()[-1]
        assert command.startswith("outage-sim run signal-2021-01-tuned.toml")
    finally:
        _stop(process)
    words = shlex.split(command)[3:]  # after `outage-sim run FILE`: the engine the page used
    out = tmp_path / "out"
    cli = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", saved.name, *words, "--no-charts", "-q",
         "--out", str(out)],
        cwd=saved.parent, capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outages"] == [] and summary["engine"] == "fluid"
    assert (
        summary["scenario_sha256"]
        != json.loads((ROOT / "reports" / "signal-2021-01" / "summary.json").read_text())[
            "scenario_sha256"
        ]
    )


def _iso(start: str, t_s: float) -> float:
    """Milliseconds since the epoch of a moment of the run, as Plotly's date axis holds it."""
    from datetime import datetime

    return datetime.fromisoformat(start).timestamp() * 1000 + t_s * 1000


def test_mmc_on_the_des_and_an_error_beside_its_control(browser_page, capsys):
    """M/M/10 runs on the DES; a change redraws; a bad value shows its message beside the
    control and leaves the charts; Run exact (DES) runs the DES."""
    page = browser_page
    process, url = _serve(MMC)
    try:
        page.goto(url)
        first = _runs(page, 1)
        assert first["engine"] == "des"
        _report(capsys, "mmc, first run", first)
        _set(page, "service.servers", "11")
        second = _runs(page, 2)
        _report(capsys, "mmc, servers 10 -> 11", second)
        assert page.inner_text("#lead").startswith("No outage")
        _set(page, "service.servers", "9")
        third = _runs(page, 3)
        _report(capsys, "mmc, servers 11 -> 9", third)
        assert page.inner_text("#lead").startswith("The service went down")

        _set(page, "client.timeout", "3 parsecs")
        page.wait_for_selector(".control.invalid")
        beside = page.inner_text(".control.invalid .err")
        assert beside.startswith("--set: [client.timeout] unknown duration unit")
        assert page.evaluate("window.workbench.timings.length") == 3
        _set(page, "client.timeout", "")

        page.click("#exact")
        exact = _runs(page, 4)
        assert exact["engine"] == "des"
    finally:
        _stop(process)

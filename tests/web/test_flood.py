"""The workbench under a flood of API calls and abusive bodies, against the real server.

`outage-sim tune` runs in a subprocess; twenty threads post runs at once. Each is answered
(200), replaced by a newer run (409) or refused as busy (429 with Retry-After), always with a
JSON message, and the server answers the page and a run afterwards. Bodies over the limit get
413, deeply nested, non-JSON or mistyped ones 400, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

from helpers import REPO

from sim.web.app import JSON_DEPTH, MAX_BODY_BYTES

FLOOD = 20


def _post(url: str, data: bytes, content_type: str = "application/json") -> tuple[int, dict, float]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, json.loads(raw), time.monotonic() - started


def _run_body(servers: int) -> bytes:
    return json.dumps({"overrides": {"service.servers": servers}, "engine": "des"}).encode()


def test_a_flood_of_runs_is_answered_or_refused_and_the_server_stays_up(capsys) -> None:
    """Twenty concurrent runs: each 200, 409 or 429 with a message; none fails; afterwards
    the page and a new run are served."""
    command = [shutil.which("outage-sim") or "outage-sim", "tune", "scenarios/mmc.toml"]
    server = subprocess.Popen(
        [*command, "--no-browser"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        line = server.stdout.readline()
        base = line.split(" at ")[1].split()[0].rstrip("/")
        api = f"{base}/api/run"
        answers: list[tuple[int, dict, float]] = []
        lock = threading.Lock()

        def one(servers: int) -> None:
            answer = _post(api, _run_body(servers))
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=one, args=(10 + i,)) for i in range(FLOOD)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        statuses = [status for status, _, _ in answers]
        assert len(answers) == FLOOD
        assert set(statuses) <= {200, 409, 429}, statuses
        assert 429 in statuses  # more than MAX_WAITING at once were turned away
        for status, body, _ in answers:
            if status != 200:
                assert body["error"] and "Traceback" not in body["error"]
        with capsys.disabled():
            print(
                f"\n[flood] {FLOOD} runs at once: {statuses.count(200)} answered, "
                f"{statuses.count(409)} replaced by a newer run, {statuses.count(429)} refused "
                f"as busy; longest wait {max(w for _, _, w in answers):.2f} s"
            )
        with urllib.request.urlopen(f"{base}/", timeout=30) as page:
            assert page.status == 200
        status, body, _ = _post(api, _run_body(12))
        assert status == 200 and body["summary"]["engine"] == "des"
        # Abusive bodies: refused with a one-line message, the server still up.
        status, body, _ = _post(api, b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}")
        assert status == 413 and "at most" in body["error"]
        nested = b'{"overrides": {"a": ' + b"[" * (JSON_DEPTH + 10) + b"]" * (JSON_DEPTH + 10)
        status, body, _ = _post(api, nested + b"}}")
        assert status == 400 and "nested" in body["error"]
        status, body, _ = _post(api, b"servers=12", "application/json")
        assert status == 400 and body["error"].startswith("not JSON")
        status, body, _ = _post(api, json.dumps({"overrides": [1, 2]}).encode())
        assert status == 400 and "overrides" in body["error"]
        status, body, _ = _post(api, json.dumps({"engine": 7}).encode())
        assert status == 400 and "engine" in body["error"]
        status, body, _ = _post(api, _run_body(11))
        assert status == 200
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
    assert server.returncode == 130
    assert "Traceback" not in server.stderr.read()

"""Serve the workbench on 127.0.0.1: bind a port (a free one unless given), say where, open
the browser, run until Ctrl-C (which `cli.py` turns into exit status 130)."""

from __future__ import annotations

import socket
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path

import uvicorn

from sim.errors import UsageError
from sim.web.app import create_app

HOST = "127.0.0.1"  # never another interface: the workbench has no authentication


def bind(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (`port` 0: a free one); UsageError when taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
    except OSError as err:
        sock.close()
        raise UsageError(f"cannot listen on {HOST}:{port}: {err.strerror}") from None
    sock.listen(64)
    return sock


def serve(
    file: str | Path,
    port: int = 0,
    open_browser: bool = True,
    say: Callable[[str], None] = print,
) -> None:
    """Serve the workbench for `file` until interrupted (KeyboardInterrupt on Ctrl-C)."""
    app = create_app(file)  # a bad scenario is refused before a port is taken
    sock = bind(port)
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)

    say(f"outage-sim: workbench for {file} at {url} (Ctrl-C stops it)")
    if open_browser:  # in a thread: a browser that starts slowly must not hold up the server
        threading.Timer(0.2, webbrowser.open, args=(url,)).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.workbench.runner.close()
    if server.should_exit:  # uvicorn stopped on a signal it caught (SIGINT, SIGTERM)
        raise KeyboardInterrupt

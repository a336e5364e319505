"""Files written whole or not at all, and JSON that any reader can parse.

Every output of outage-sim goes through `atomic_write`: a temporary file in the same folder,
then a rename, with Ctrl-C and SIGTERM held until the rename is done, so a reader (or a crash)
sees the old file or the new one, never half of one. This module sits at the bottom of the
package with `errors.py`: it imports nothing of outage-sim.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    Ctrl-C (SIGINT) and SIGTERM are held while one file is written and take effect right after
    its rename, so an interrupted run never leaves a temporary or a half-written file."""
    with _signals_held():
        _write_then_rename(Path(path), data)


@contextlib.contextmanager
def _signals_held():
    """Defer SIGINT and SIGTERM to the end of the block, then act on the first one that came.

    Python runs signal handlers in the main thread only, so that is where they are swapped
    (a mask would not do: numpy's threads would take the signal instead)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[tuple[int, Any]] = []
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not None:  # None: set outside Python, left alone
            previous[number] = signal.signal(number, lambda n, frame: came.append((n, frame)))

    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if came:
            number, frame = came[0]
            handler = previous[number]
            if callable(handler):
                handler(number, frame)  # Python's own: KeyboardInterrupt for SIGINT
            elif handler == signal.SIG_DFL:
                signal.raise_signal(number)


def _write_then_rename(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); outputs get the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(
            fd, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": ""})
        ) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(value):
    """JSON-safe: NaN and infinities become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_json(summary: dict) -> str:
    """summary.json text (stable key order, NaN as null)."""
    return json.dumps(_clean(summary), indent=2, ensure_ascii=False) + "\n"

"""Files written whole or not at all, logs that grow by whole lines, a lock on an output
folder, and JSON that any reader can parse.

Every output of outage-sim goes through `atomic_write`: a temporary file in the same folder,
flushed and fsync'd, renamed over the old one, then the folder fsync'd, with Ctrl-C and SIGTERM
held until the rename is done, so a reader, a crash (kill -9) or a power cut sees the old file
or the new one, never half of one. A file that grows while a long job runs (a sweep's
results.csv) is an `AppendLog`: each line is on disk before the next run is recorded, and a
line cut short by a crash is the only one that can be missing its newline, so readers of
`whole_lines` never see it. `FolderLock` keeps two processes from writing one folder. This
module sits at the bottom of the package with `errors.py`, the only part of outage-sim it
imports.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import signal
import socket
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import OutageSimError


class OutputError(OutageSimError, OSError):
    """An output could not be written (disk full, file too large, no permission...): one line
    naming the folder, the file and the cause. Still an OSError for callers that catch those."""

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without OSError's "[Errno N]"


class FolderBusyError(OutageSimError):
    """Another live process holds the output folder's lock: names that process."""


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    Ctrl-C (SIGINT) and SIGTERM are held while one file is written and take effect right after
    its rename, so an interrupted run never leaves a temporary or a half-written file."""
    path = Path(path)
    try:
        with _signals_held():
            _write_then_rename(path, data)
    except OutputError:
        raise
    except OSError as error:
        raise _output_error(path, error) from None


def _output_error(path: Path, error: OSError) -> OutputError:
    folder = path.parent.as_posix().rstrip("/") + "/"
    cause = error.strerror or str(error)
    name = errno.errorcode.get(error.errno or 0)
    return OutputError(
        error.errno,
        f"cannot write {path.name} in {folder}: {cause}" + (f" ({name})" if name else ""),
    )


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
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename (or a new file) in `folder` durable: fsync the folder itself.

    Filesystems that cannot fsync a folder (EINVAL, ENOTSUP) are left to their own order."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Files that grow line by line


class AppendLog:
    """A text file that grows by whole lines, each flushed and fsync'd before `append` returns.

    It starts as `head` (written by `atomic_write`, so the file is whole from its first byte).
    A crash can only cut the line being appended, and that line lacks its newline: read the
    file back with `whole_lines`. Use as a context manager, and close it before the file is
    replaced by its final version.
    """

    def __init__(self, path: str | Path, head: str) -> None:
        self.path = Path(path)
        atomic_write(self.path, head)
        try:
            self._file = self.path.open("a", encoding="utf-8", newline="")
        except OSError as error:
            raise _output_error(self.path, error) from None

    def append(self, line: str) -> None:
        """Write one line (ending in its only newline) durably."""
        if not line.endswith("\n") or "\n" in line[:-1] or "\r" in line:
            raise ValueError(f"an AppendLog line is one line ending in a newline, got {line!r}")
        try:
            with _signals_held():
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
        except OSError as error:
            raise _output_error(self.path, error) from None

    def close(self) -> None:
        """Close the file (what was appended is on disk already)."""
        self._file.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def whole_lines(path: str | Path) -> str:
    """The text of `path` up to its last newline ("" for a missing file): what an AppendLog
    finished writing, without a line that a crash cut short."""
    path = Path(path)
    if not path.is_file():
        return ""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# One writer per output folder

LOCK_NAME = ".outage-sim.lock"


class FolderLock:
    """An exclusive lock on an output folder, held while a command writes it.

    The lock is an flock on `<folder>/.outage-sim.lock`, whose text names the holder (pid,
    host, command, start): the kernel drops an flock when its process dies, however it dies, so
    a lock is never stuck. A lock file whose flock is free was left by a process that died
    (kill -9, a power cut): it is taken over, with the temporaries that process left, and
    `took_over` says whose it was. A live holder makes `__enter__` raise FolderBusyError at
    once. On exit the lock file is removed, and the folders the lock made if they are still
    empty (a command refused after taking the lock leaves nothing behind).
    """

    def __init__(self, folder: str | Path, command: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:2])
        self.took_over: str | None = None
        self._fd: int | None = None
        self._made: list[Path] = []  # folders made for the lock, deepest first

    def __enter__(self) -> FolderLock:
        try:
            missing = self.folder
            while not missing.exists() and missing != missing.parent:
                self._made.append(missing)
                missing = missing.parent
            self.folder.mkdir(parents=True, exist_ok=True)
            while self._fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise FolderBusyError(
                        f"{self.folder.as_posix().rstrip('/')}/ is being written by "
                        f"{_describe(holder)}; wait for it to end or choose another --out"
                    ) from None
                if _same_file(fd, self.path):
                    self._fd = fd
                else:  # its holder removed it as we opened it: lock the new one
                    os.close(fd)
            left = _read_holder(self._fd)
            if left:
                removed = _remove_temporaries(self.folder)
                self.took_over = (
                    f"took over the lock of {self.folder.as_posix().rstrip('/')}/ left by "
                    f"{_describe(left)}, which is no longer running"
                    + (f" (removed {removed} temporary files it left)" if removed else "")
                )
            _write_holder(self._fd, self.command)
        except OSError as error:
            self.__exit__()  # a lock it could not record (disk full) is not left behind
            raise _output_error(self.path, error) from None
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still holding the lock: nobody else has locked it
        os.close(self._fd)
        self._fd = None
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:  # not empty: the command wrote something
                break


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", errors="replace")
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": "?"} if text.strip() else {}
    return holder if isinstance(holder, dict) else {"pid": "?"}


def _write_holder(fd: int, command: str) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
    os.fsync(fd)


def _describe(holder: dict) -> str:
    text = f"process {holder.get('pid', '?')} on {holder.get('host', 'an unknown host')}"
    if holder.get("command"):
        text += f" ({holder['command']}"
        text += f", since {holder['since']})" if holder.get("since") else ")"
    return text


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _remove_temporaries(folder: Path) -> int:
    """Remove the temporaries of `atomic_write` (.NAME.XXXX.tmp) that a dead writer left."""
    removed = 0
    for leftover in folder.glob(".*.tmp"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


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

"""User-facing errors: what went wrong, in which file, at which key and line.

Only `cli.py` turns these into exit codes; everything else raises them.
"""

from __future__ import annotations

import re
from pathlib import Path


class OutageSimError(Exception):
    """Base class of the errors a user can cause and fix."""

    exit_code = 1


class ScenarioError(OutageSimError):
    """A scenario file (or an override) is not valid: names the file, dotted key and line."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.key = key
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = _one_line(self.file or "<scenario>")
        if self.line is not None:
            where += f":{self.line}"
        key = f" [{_one_line(self.key)}]" if self.key else ""
        return f"{where}:{key} {_one_line(self.message)}"


def _one_line(text: str) -> str:
    """Control characters (a newline in a quoted TOML key...) escaped: a message is one line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


class RunTooLargeError(OutageSimError):
    """A run would simulate more requests than is sensible without `--force`."""

    exit_code = 2


class UsageError(OutageSimError):
    """Arguments that make no sense together (not a scenario problem)."""

    exit_code = 2

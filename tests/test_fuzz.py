"""Fuzzing the command line: hundreds of mutated scenario files, each exit 0 or 2, in seconds.

Every file in scenarios/*.toml (and the downloads CSV the Signal scenario replays) is mutated
one to three times by the operators below: lines deleted, doubled, swapped or truncated; values
changed to odd types, units, NaN, infinities, huge, tiny or negative numbers; keys misspelt or
added; table headers broken; TOML syntax broken; junk and control characters inserted. Each
mutant goes to `outage-sim check` (through CliRunner); every third also to `outage-sim run
--no-charts`, shortened and scaled down when its check says it is large. The answer must be
exit 0, or exit 2 with one located `outage-sim: error:` line; never a traceback, another exit
status or a hang (a per-case alarm). Cases are seeded: a failure's id reproduces it.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import REPO

from sim.cli import cli

SEED = 20210115
CASES = 400
CASE_LIMIT_S = 20  # a case that takes longer is a hang (the slowest real case takes ~1 s)
RUN_EVERY = 3
RUN_LIMIT_REQUESTS = 50_000  # run only mutants that `check` says are this small

SOURCES = sorted((REPO / "scenarios").glob("*.toml"))
CSV_NAME = "data/signal_2021_downloads.csv"

ODD_VALUES = [
    "nan", "inf", "-inf", "+inf", "-1", "0", "-0.0", "1e308", "-1e308", "1e-308", "1" + "0" * 30,
    "1" + "0" * 400, "true", "false", '""', '"abc"', "[]", "{}", '[1, "a"]', "{ x = 1 }",
    "[[1], [2]]", "2021-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
    "1979-05-27", "07:32:00", "2021-01-01T00:00:00", '"1e300/s"', '"5 parsec"', '"-5min"',
    '"nan s"', '"inf/s"', '"1e400s"', '"0s"', '"0/s"', '"1e15/s"', '"99999999999d"',
    '"1e-300s"', '"é"', '"\\u0000"', '"../../etc/passwd"', '"' + "x" * 5000 + '"', '"5min"',
    '"9/s"', '"1.3M/day"', '"20:00"', '"25:61"', '"inf"', "1.5", "1e9", '"1_000"', '"lifo"',
    '"gamma"', '"exponentail"', '"empirical"', '"none"', "0.999999", "1e-9", "123456789",
    "'literal'", '"""multi\nline"""', "0x10", "0o17", "0b101", "1_000_000",
]  # fmt: skip
UNITS = ["ms", "s", "min", "h", "d", "w", "us", "parsec", "/s", "/day", "M/day", "k/h", "", " "]
ODD_KEYS = ["sed", "servers ", "seed.x", '"quoted key"', "serverz", "rate_", "x-y", "é", "_"]
JUNK = ["\x00", "\x07", "\t", "\r", "\ufeff", "☃", "\u202e", "\\", '"""', "'''", "#", "= =",
        "[[", "]]"]  # fmt: skip

VALUE_LINE = re.compile(r"^(\s*[\w.\-\"]+\s*=\s*)(.+?)\s*(#.*)?$")
NUMBER = re.compile(r"(?<![\w.])-?\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?")
QUOTED_AMOUNT = re.compile(r'"(\s*[\d._eE+-]+)\s*([^"]*)"')


def _value_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if VALUE_LINE.match(line)]


def _headers(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.lstrip().startswith("[")]


# -- mutation operators: each takes (lines, rng) and changes `lines` in place ----------------
def delete_line(lines, rng):
    if lines:
        del lines[rng.randrange(len(lines))]


def double_line(lines, rng):
    if lines:
        i = rng.randrange(len(lines))
        lines.insert(rng.randrange(len(lines) + 1), lines[i])


def swap_lines(lines, rng):
    if len(lines) > 1:
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]


def odd_value(lines, rng):
    candidates = _value_lines(lines)
    if candidates:
        i = rng.choice(candidates)
        lines[i] = VALUE_LINE.match(lines[i]).group(1) + rng.choice(ODD_VALUES)


def odd_inline_value(lines, rng):
    candidates = [i for i in _value_lines(lines) if "{" in lines[i]]
    if candidates:
        i = rng.choice(candidates)
        inner = list(re.finditer(r"(\w+\s*=\s*)(\"[^\"]*\"|[\w.+-]+)", lines[i]))
        if inner:
            m = rng.choice(inner)
            odd = rng.choice(ODD_VALUES).replace("\n", " ")
            lines[i] = lines[i][: m.start(2)] + odd + lines[i][m.end(2) :]


def change_unit(lines, rng):
    candidates = [i for i in range(len(lines)) if QUOTED_AMOUNT.search(lines[i])]
    if candidates:
        i = rng.choice(candidates)
        lines[i] = QUOTED_AMOUNT.sub(lambda m: f'"{m.group(1)}{rng.choice(UNITS)}"', lines[i], 1)


def change_number(lines, rng):
    candidates = [i for i in _value_lines(lines) if NUMBER.search(VALUE_LINE.match(lines[i])[2])]
    if candidates:
        i = rng.choice(candidates)
        head, value = VALUE_LINE.match(lines[i]).group(1, 2)
        matches = list(NUMBER.finditer(value))
        m = rng.choice(matches)
        number = m.group().replace("_", "")
        new = rng.choice(["-" + number, "0", number + "e6", number + "e300", number + "e-300",
                          "0." + number.lstrip("-"),
                          str(rng.randrange(-(2**70), 2**70))])  # fmt: skip

        lines[i] = head + value[: m.start()] + new + value[m.end() :]


def unknown_key(lines, rng):
    position = rng.randrange(len(lines) + 1)
    lines.insert(position, f"{rng.choice(ODD_KEYS)} = {rng.choice(ODD_VALUES[:20])}")


def misspell_key(lines, rng):
    candidates = _value_lines(lines)
    if candidates:
        i = rng.choice(candidates)
        key = lines[i].split("=", 1)[0]
        stripped = key.strip()
        if len(stripped) > 1:
            k = rng.randrange(len(stripped))
            lines[i] = (
                key.replace(stripped, stripped[:k] + stripped[k + 1 :], 1)
                + "="
                + (lines[i].split("=", 1)[1])
            )


def break_header(lines, rng):
    candidates = _headers(lines)
    if candidates:
        i = rng.choice(candidates)
        line = lines[i]
        lines[i] = rng.choice([
            line.replace("[[", "[").replace("]]", "]") if "[[" in line else "[" + line + "]",
            line.replace("]", ""),
            line.replace("[", "[x", 1),
            "[" + rng.choice(["sla", "servce", "client.extra", "faults", "arrivals.surge"]) + "]",
            line + line,
        ])  # fmt: skip


def break_syntax(lines, rng):
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    if candidates:
        i = rng.choice(candidates)
        line = lines[i]
        k = rng.randrange(len(line) + 1)
        lines[i] = (
            line[:k] + rng.choice(['"', "[", "]", "=", "{", "}", "'", ",", ""]) + line[k + 1 :]
        )


def insert_junk(lines, rng):
    i = rng.randrange(len(lines) + 1)
    junk = "".join(rng.choice(JUNK) for _ in range(rng.randint(1, 4)))
    if lines and rng.random() < 0.5:
        line = lines[min(i, len(lines) - 1)]
        k = rng.randrange(len(line) + 1)
        lines[min(i, len(lines) - 1)] = line[:k] + junk + line[k:]
    else:
        lines.insert(i, junk)


def truncate(lines, rng):
    text = "\n".join(lines)
    cut = text[: rng.randrange(len(text) + 1)]
    lines[:] = cut.split("\n")


def double_table(lines, rng):
    headers = _headers(lines)
    if headers:
        start = rng.choice(headers)
        end = next((h for h in headers if h > start), len(lines))
        lines[end:end] = lines[start:end]


OPERATORS = [
    delete_line, double_line, swap_lines, odd_value, odd_value, odd_value, odd_inline_value,
    change_unit, change_unit, change_number, change_number, unknown_key, misspell_key,
    break_header, break_syntax, insert_junk, truncate, double_table,
]  # fmt: skip
CSV_OPERATORS = [delete_line, double_line, swap_lines, break_syntax, insert_junk, truncate]


def mutant(index: int) -> tuple[Path, str, list[str], str | None]:
    """(source, mutated text, operator names, mutated CSV text or None) of case `index`."""
    rng = random.Random(f"{SEED}-{index}")
    source = SOURCES[index % len(SOURCES)]
    if rng.random() < 0.01:
        return source, rng.choice(["", "# only a comment\n", "\n\n"]), ["empty"], None
    lines = source.read_text(encoding="utf-8").split("\n")
    names = []
    for _ in range(rng.choice([1, 1, 1, 1, 2, 3])):
        operator = rng.choice(OPERATORS)
        operator(lines, rng)
        names.append(operator.__name__)
    csv_text = None
    if CSV_NAME in source.read_text(encoding="utf-8") and rng.random() < 0.3:
        csv_lines = (REPO / "scenarios" / CSV_NAME).read_text(encoding="utf-8").split("\n")
        csv_operator = rng.choice(CSV_OPERATORS + [odd_csv_cell])
        csv_operator(csv_lines, rng)
        names.append(f"csv.{csv_operator.__name__}")
        csv_text = "\n".join(csv_lines)
    return source, "\n".join(lines), names, csv_text


def odd_csv_cell(lines, rng):
    if len(lines) > 1:
        i = rng.randrange(1, len(lines))
        cells = lines[i].split(",")
        k = rng.randrange(len(cells))
        cells[k] = rng.choice(["nan", "-5", "1e400", "", "2021-02-30", "x", "1e20", "9999-12-31"])
        lines[i] = ",".join(cells)


class CaseTimeout(BaseException):
    """A case ran past its limit (BaseException: CliRunner and the CLI must not catch it)."""


def _alarm(signum, frame):
    raise CaseTimeout


def _invoke(args: list[str]):
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_LIMIT_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a stray RuntimeWarning is a bug too
            return CliRunner().invoke(cli, args)
    except CaseTimeout:
        pytest.fail(f"no answer within {CASE_LIMIT_S} s: {args}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _assert_clean(result, what: str, path: Path) -> None:
    """Exit 0, or exit 2 with one 'outage-sim: error:' line naming where; never a traceback."""
    assert result.exit_code in (0, 2), (what, result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, (what, result.output)
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (what, result.stderr)
        assert lines[0].startswith("outage-sim: error: "), (what, lines[0])
        # The scenario, --set, or a CSV (a mutated downloads_csv may name any file).
        named = (str(path), "--set", "[population.downloads_csv]", "[date]", "[downloads]")
        assert any(name in lines[0] for name in named), (what, lines[0])


def _estimate(checked) -> float:
    """Simulated requests that `check` printed (0 when it printed none)."""
    found = re.search(r"about ([\d,]+) simulated requests", checked.stdout)
    return float(found.group(1).replace(",", "")) if found else 0.0


def _ids() -> list[str]:

    return [f"{i:03d}-{SOURCES[i % len(SOURCES)].stem}" for i in range(CASES)]


@pytest.mark.parametrize("index", range(CASES), ids=_ids())
def test_mutated_scenario_exits_0_or_2_without_traceback(index: int, tmp_path: Path) -> None:
    """A mutated scenario file: `check` (and for some, `run`) exit 0 or 2, located, no hang."""
    source, text, operators, csv_text = mutant(index)
    what = f"case {index} ({source.name}: {', '.join(operators)})"
    path = tmp_path / source.name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    (tmp_path / "data").mkdir()
    csv_path = tmp_path / CSV_NAME
    if csv_text is None:
        shutil.copy(REPO / "scenarios" / CSV_NAME, csv_path)
    else:
        csv_path.write_text(csv_text, encoding="utf-8")
    checked = _invoke(["check", str(path)])
    _assert_clean(checked, what, path)
    if index % RUN_EVERY:
        return
    args = ["run", str(path), "--no-charts", "-q", "--out", str(tmp_path / "out")]
    estimate = _estimate(checked)
    if estimate > RUN_LIMIT_REQUESTS:
        # Shorten it, then scale it down until the run is small (a test, not a benchmark).
        short = ["--set", 'scenario.duration="3min"']
        estimate = _estimate(_invoke(["check", str(path), *short, "--set", "scenario.scale=1"]))
        scale = max(1.0, estimate / RUN_LIMIT_REQUESTS)
        args += [*short, "--set", f"scenario.scale={min(scale, 1e9):.6g}"]
    ran = _invoke(args)
    _assert_clean(ran, f"run of {what}", path)
    if ran.exit_code == 0:
        assert (tmp_path / "out" / "summary.json").is_file()

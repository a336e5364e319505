"""Scenario files: loading, defaults, `--set` overrides, error locations and the JSON Schema."""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

import pytest
from helpers import REPO
from pydantic import ValidationError

from sim.errors import ScenarioError
from sim.model.scenario import (
    Scenario,
    json_schema,
    load_scenario,
    locate_key,
    parse_override,
    parse_scenario,
)

MINIMAL = """\
[scenario]
name = "minimal"
duration = "1h"

[arrivals]
rate = "9/s"

[service]
servers = 10
time = { dist = "exponential", mean = "250ms" }
"""


def _error(text: str, **kwargs) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, file="s.toml", **kwargs)
    return info.value


def _line_of(text: str, fragment: str) -> int:
    """1-based number of the only line of `text` containing `fragment`."""
    numbers = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(numbers) == 1, f"{fragment!r} is on lines {numbers}"
    return numbers[0]


# ---------------------------------------------------------------------- loading and defaults


def test_units_are_parsed_and_defaults_filled() -> None:
    """Durations and rates become seconds and per-second; defaults come from the models."""
    scenario = parse_scenario(MINIMAL)
    assert scenario.scenario.duration == 3600.0
    assert scenario.arrivals.rate == 9.0
    assert scenario.service.time.mean_s == 0.25
    assert scenario.scenario.seed == 1
    assert scenario.scenario.bin == 60.0
    assert scenario.scenario.scale == 1.0
    assert scenario.scenario.engine == "des"
    assert scenario.scenario.start is None
    assert scenario.service.queue_limit == math.inf
    assert scenario.service.discipline == "fifo"
    assert scenario.client is None
    assert scenario.slo.success_ratio == 0.99
    assert scenario.faults == [] and scenario.capacity.change == []


def test_scenario_is_frozen() -> None:
    """A validated scenario cannot be changed in place (overrides go through loading)."""
    scenario = parse_scenario(MINIMAL)
    with pytest.raises(ValidationError):
        scenario.service.servers = 3


def test_load_scenario_reads_a_file_and_remembers_its_path(tmp_path: Path) -> None:
    """load_scenario reads the file; paths in it resolve against its folder."""
    path = tmp_path / "deep" / "s.toml"
    path.parent.mkdir()
    path.write_text(MINIMAL)
    scenario = load_scenario(path)
    assert scenario.path == path
    assert scenario.resolve_path("data.csv") == (path.parent / "data.csv").resolve()
    assert scenario.raw["service"]["servers"] == 10


def test_load_scenario_errors_for_missing_file_and_folder(tmp_path: Path) -> None:
    """A missing file or a folder is a ScenarioError naming the path, not an OSError."""
    with pytest.raises(ScenarioError, match="no such scenario file") as info:
        load_scenario(tmp_path / "nope.toml")
    assert "nope.toml" in str(info.value)
    with pytest.raises(ScenarioError, match="folder"):
        load_scenario(tmp_path)


def test_timestamps_become_offsets_from_start() -> None:
    """With scenario.start, a timestamp `at` is the offset in seconds from the start."""
    text = MINIMAL.replace('duration = "1h"', 'duration = "2d"\nstart = 2021-01-15T00:00:00Z')
    text += '\n[[arrivals.surge]]\nat = 2021-01-15T14:30:00Z\nduration = "1h"\nfactor = 3\n'
    text += '\n[[faults]]\nat = "2021-01-16T01:00:00+01:00"\nduration = "10min"\n'
    scenario = parse_scenario(text)
    assert scenario.arrivals.surge[0].at == 14.5 * 3600
    assert scenario.faults[0].at == 24 * 3600


def test_timestamp_without_start_is_an_error_at_its_line() -> None:
    """A timestamp needs scenario.start; the error names the key and its line."""
    text = MINIMAL + '\n[[faults]]\nat = 2021-01-15T14:30:00Z\nduration = "5s"\n'
    error = _error(text)
    assert error.key == "faults.0.at"
    assert error.line == _line_of(text, "at = 2021")
    assert "scenario.start" in error.message


def test_sha256_depends_on_content_not_on_formatting() -> None:
    """The hash is of the validated scenario: same values, same hash; another value, another."""
    same = MINIMAL.replace('rate = "9/s"', "rate = 9  # per second").replace('"250ms"', "0.25")
    assert parse_scenario(MINIMAL).sha256 == parse_scenario(same).sha256
    changed = parse_scenario(MINIMAL, overrides={"service.servers": 11})
    assert changed.sha256 != parse_scenario(MINIMAL).sha256
    assert re.fullmatch(r"[0-9a-f]{64}", changed.sha256)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (('name = "minimal"', 'name = "../escape"'), "scenario.name"),
        (('duration = "1h"', 'duration = "0s"'), "scenario.duration"),
        (('duration = "1h"', 'duration = "400d"\nbin = "1s"'), "scenario"),
        (('rate = "9/s"', 'rate = "9/s"\ndiurnal = { amplitude = 1.5 }'), "arrivals.diurnal"),
        (("servers = 10", "servers = 2.5"), "service.servers"),
        (('mean = "250ms"', 'mean = "0s"'), "service.time.mean"),
        (('dist = "exponential", mean = "250ms"', 'dist = "gamma", mean = 1'), "service.time"),
        (("servers = 10", "servers = 10\nqueue_limit = -1"), "service.queue_limit"),
        (("servers = 10", 'servers = 10\nqueue_limit = "lots"'), "service.queue_limit"),
        (("servers = 10", 'servers = 10\ndiscipline = "random"'), "service.discipline"),
        (('rate = "9/s"', "rate = 0"), ""),
    ],
)
def test_invalid_values_are_scenario_errors(change: tuple[str, str], key: str) -> None:
    """Out-of-range or ill-typed values are ScenarioErrors naming the (innermost) key."""
    error = _error(MINIMAL.replace(*change))
    assert error.file == "s.toml"
    assert (error.key or "").startswith(key)


def test_unknown_key_suggests_the_close_one_at_its_line() -> None:
    """An unknown key is reported with a 'did you mean' and the line it is on."""
    text = MINIMAL.replace("servers = 10", "servers = 10\nqueue_limt = 5")
    error = _error(text)
    assert error.key == "service.queue_limt"
    assert "did you mean 'queue_limit'" in error.message
    assert error.line == _line_of(text, "queue_limt")


def test_unknown_key_without_a_close_one_lists_the_known_keys() -> None:
    """With no close match, the message lists the keys the table knows."""
    error = _error(MINIMAL.replace('rate = "9/s"', 'rate = "9/s"\nzzz = 1'))
    assert "known keys: rate, diurnal, surge" in error.message


def test_unknown_key_is_reported_before_the_missing_key_it_explains() -> None:
    """A misspelt required key reports the typo (the cause), not the missing key."""
    error = _error(MINIMAL.replace("servers = 10", "srvers = 10"))
    assert error.key == "service.srvers"
    assert "did you mean 'servers'" in error.message


def test_misspelt_distribution_suggests_the_right_one() -> None:
    """A literal such as dist names the allowed values and the closest one."""
    text = MINIMAL.replace('dist = "exponential"', 'dist = "lognormel"')
    error = _error(text)
    assert error.key == "service.time.dist"
    assert "did you mean 'lognormal'" in error.message
    assert error.line == _line_of(text, "lognormel")


def test_error_in_second_array_table_names_its_index_and_line() -> None:
    """An error in the second [[arrivals.surge]] names index 1 and that table's line."""
    text = (
        MINIMAL
        + '\n[[arrivals.surge]]\nat = "10min"\nfactor = 2\n'
        + '\n[[arrivals.surge]]\nat = "20min"\nfactor = 2\nrate = "30/s"\n'
    )
    error = _error(text)
    assert error.key == "arrivals.surge.1"
    assert "exactly one of" in error.message
    assert error.line == text.splitlines().index("[[arrivals.surge]]", 12) + 1


def test_toml_syntax_error_has_the_parsers_line() -> None:
    """Invalid TOML is a ScenarioError at the line tomllib names."""
    text = MINIMAL.replace("servers = 10", "servers = = 10")
    error = _error(text)
    assert "not valid TOML" in error.message
    assert error.line == _line_of(text, "servers = = 10")
    assert "(at line" not in error.message  # the position moved into the located prefix


def test_missing_downloads_csv_is_an_error_at_its_line(tmp_path: Path) -> None:
    """A downloads_csv that does not exist is reported at population.downloads_csv."""
    text = MINIMAL.replace(
        'rate = "9/s"', 'rate = "9/s"\n\n[population]\ndownloads_csv = "nowhere.csv"'
    )
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.key == "population.downloads_csv"
    assert info.value.line == _line_of(text, "nowhere.csv")
    assert str(tmp_path / "nowhere.csv") in info.value.message


# -------------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    ("assignment", "key", "value"),
    [
        ("service.servers=12", "service.servers", 12),
        ("scenario.name=foo", "scenario.name", "foo"),  # a bare word is a string
        ("arrivals.rate=9/s", "arrivals.rate", "9/s"),
        ("client.timeout = 3s", "client.timeout", "3s"),
        ('service.time.dist="gamma"', "service.time.dist", "gamma"),
        ("service.drop_expired=true", "service.drop_expired", True),
        ("slo.success_ratio=0.95", "slo.success_ratio", 0.95),
        ("service.time={dist='gamma', mean=1, cv=2}", "service.time",
         {"dist": "gamma", "mean": 1, "cv": 2}),
        ("service.time.samples=[1, 2]", "service.time.samples", [1, 2]),
        ("arrivals.surge.0.factor=3", "arrivals.surge.0.factor", 3),
    ],
)  # fmt: skip
def test_parse_override_reads_a_toml_value(assignment: str, key: str, value) -> None:
    """--set KEY=VALUE splits at '=' and reads VALUE as TOML, bare words as strings."""
    assert parse_override(assignment) == (key, value)


@pytest.mark.parametrize("assignment", ["servers", "=12", ".servers=1", "service..x=1", "a b=1"])
def test_parse_override_rejects_malformed(assignment: str) -> None:
    """An assignment without '=' or with a malformed dotted key is a ScenarioError on --set."""
    with pytest.raises(ScenarioError, match="KEY=VALUE") as info:
        parse_override(assignment)
    assert info.value.file == "--set"


def test_overrides_replace_add_and_reach_into_lists() -> None:
    """Overrides replace values, create missing tables and index array tables."""
    text = MINIMAL + '\n[[arrivals.surge]]\nat = "10min"\nfactor = 2\n'
    scenario = parse_scenario(
        text,
        overrides={
            "service.servers": 12,
            "client.retries": 3,
            "client.timeout": "2s",
            "arrivals.surge.0.factor": 5,
            "scenario.seed": 99,
        },
    )
    assert scenario.service.servers == 12
    assert scenario.client.retries == 3 and scenario.client.timeout == 2.0
    assert scenario.arrivals.surge[0].factor == 5
    assert scenario.scenario.seed == 99
    assert scenario.raw["service"]["servers"] == 12  # raw is the scenario as run


def test_override_errors_name_set_and_the_key() -> None:
    """A bad override value is blamed on --set and its key, not on a line of the file."""
    error = _error(MINIMAL, overrides={"service.servers": -1})
    assert error.file == "--set"
    assert error.key == "service.servers"
    assert error.line is None
    error = _error(MINIMAL, overrides={"service.srvers": 3})
    assert error.file == "--set" and "did you mean 'servers'" in error.message


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("scenario.name.x", "scenario.name is a value, not a table"),
        ("arrivals.surge.3.factor", "not an index of a list of 1"),
        ("arrivals.surge.first.factor", "not an index"),
        ("arrivals.surge.0", "cannot replace a whole list item"),
    ],
)
def test_override_paths_that_cannot_be_set(key: str, fragment: str) -> None:
    """Override paths through values or past the end of lists are ScenarioErrors."""
    text = MINIMAL + '\n[[arrivals.surge]]\nat = "10min"\nfactor = 2\n'
    error = _error(text, overrides={key: 1})
    assert fragment in error.message
    assert error.file == "--set"


def test_load_scenario_applies_overrides(tmp_path: Path) -> None:
    """The Python API takes overrides as DESIGN.md shows: {"service.servers": 12}."""
    path = tmp_path / "s.toml"
    path.write_text(MINIMAL)
    assert load_scenario(path, overrides={"service.servers": 12}).service.servers == 12


# ------------------------------------------------------------------------------ locate_key

LOCATE_TEXT = """\
# a comment line
[scenario]   # trailing comment
name = "x"
description = '''
servers = 99
[service]
'''
duration = "1h"

["arrivals"]
rate = 1
diurnal = { amplitude = 0.4, peak = "20:00" }

[[arrivals.surge]]
at = "1h"

[[arrivals.surge]]
at = "2h"
factor = 2

[service]
time.dist = "gamma"
servers = 10
"""


@pytest.mark.parametrize(
    ("loc", "line"),
    [
        (("scenario",), "[scenario]   # trailing comment"),
        (("scenario", "name"), 'name = "x"'),
        (("scenario", "duration"), 'duration = "1h"'),  # after the multi-line string
        (("arrivals", "rate"), "rate = 1"),
        (("arrivals", "diurnal", "peak"), 'diurnal = { amplitude = 0.4, peak = "20:00" }'),
        (("arrivals", "surge", 0), "[[arrivals.surge]]"),  # the first of the two
        (("arrivals", "surge", 1, "factor"), "factor = 2"),
        (("service", "servers"), "servers = 10"),
        (("service", "time", "dist"), 'time.dist = "gamma"'),
        (("service", "queue_limit"), "[service]"),  # absent: its table, not the fake one
        (("scenario", "nope", "deeper"), "[scenario]   # trailing comment"),
    ],
)
def test_locate_key_finds_the_line(loc: tuple, line: str) -> None:
    """locate_key finds keys in tables, array tables, inline and dotted keys, skipping strings."""
    lines = LOCATE_TEXT.splitlines()
    # The last line equal to `line`: the fake "[service]" in the string comes first.
    expected = len(lines) - lines[::-1].index(line)
    if loc == ("arrivals", "surge", 0):
        expected = lines.index(line) + 1
    assert locate_key(LOCATE_TEXT, loc) == expected


def test_locate_key_gives_none_for_a_key_nowhere() -> None:
    """A key whose table is not in the text has no line."""
    assert locate_key(LOCATE_TEXT, ("client", "retries")) is None


def test_locate_text_is_valid_toml() -> None:
    """The locate_key fixture is real TOML (the multi-line string hides its fake keys)."""
    data = tomllib.loads(LOCATE_TEXT)
    assert data["service"]["servers"] == 10
    assert "servers = 99" in data["scenario"]["description"]


# ----------------------------------------------------------------------------- JSON Schema


def _resolve(schema: dict, node: dict) -> dict:
    """Follow $ref and a single non-null anyOf branch to an object schema."""
    while True:
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in node:
            objects = [n for n in node["anyOf"] if n.get("type") != "null"]
            node = objects[0]
        elif node.get("type") == "array":
            node = node["items"]
        else:
            return node


def _schema_allows(schema: dict, data: dict, path: str = "") -> list[str]:
    """Keys of `data` that the schema's object properties do not list (recursively)."""
    problems = []
    node = schema
    for part in filter(None, path.split(".")):
        node = _resolve(schema, node["properties"][part])
    node = _resolve(schema, node)
    for key, value in data.items():
        if key not in node.get("properties", {}):
            problems.append(f"{path}.{key}".lstrip("."))
            continue
        inner = _resolve(schema, node["properties"][key])
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict) and "properties" in inner:
                sub = {"properties": inner["properties"]}
                problems += [
                    f"{path}.{key}.{p}".lstrip(".") for p in _schema_allows({**schema, **sub}, item)
                ]
    return problems


def test_schema_describes_every_section_and_forbids_extras() -> None:
    """The schema lists DESIGN.md's sections, requires scenario and one of service or tiers,
    forbids extras."""
    schema = json_schema()
    assert schema["title"] == "outage-sim scenario"
    assert set(schema["required"]) == {"scenario"}
    assert {tuple(option["required"]) for option in schema["oneOf"]} == {("service",), ("tiers",)}
    for section in ("scenario", "arrivals", "population", "service", "capacity", "faults",
                    "client", "slo", "tiers", "routes"):  # fmt: skip
        assert section in schema["properties"]
    assert schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        assert definition.get("additionalProperties") is False, name


@pytest.mark.parametrize("path", sorted((REPO / "scenarios").glob("*.toml")), ids=lambda p: p.name)
def test_schema_knows_every_key_of_the_shipped_scenarios(path: Path) -> None:
    """Every key used in scenarios/*.toml is a property in the JSON Schema."""
    data = tomllib.loads(path.read_text())
    assert _schema_allows(json_schema(), data) == []


def test_schema_duration_pattern_accepts_what_the_parser_accepts() -> None:
    """The schema's duration pattern accepts the documented forms."""
    pattern = json_schema()["$defs"]["ScenarioMeta"]["properties"]["duration"]["anyOf"][0]
    for text in ("250ms", "30s", "5min", "2h", "3d", "1.5h", "90"):
        assert re.match(pattern["pattern"], text), text


def test_schema_is_strict_json() -> None:
    """The schema serialises to strict JSON (no NaN or Infinity tokens)."""
    json.dumps(json_schema(), allow_nan=False)


def test_schema_bounds_use_json_schema_keywords() -> None:
    """Numeric bounds are written as JSON Schema keywords an editor understands."""
    text = json.dumps(json_schema(), default=str)
    assert not re.search(r'"(ge|gt|le|lt)":', text)


def test_scenario_model_validates_a_plain_dict() -> None:
    """The models accept a TOML table already read (for notebooks and the fluid engine)."""
    scenario = Scenario.model_validate(tomllib.loads(MINIMAL), context={"start": None})
    assert scenario.service.servers == 10


@pytest.mark.parametrize("text", ["1e-3s", "2.5e3ms"])
def test_schema_duration_pattern_accepts_exponents(text: str) -> None:
    """Durations the parser accepts with an exponent also match the schema's pattern."""
    pattern = json_schema()["$defs"]["ScenarioMeta"]["properties"]["duration"]["anyOf"][0]
    assert parse_scenario(MINIMAL.replace('"1h"', f'"{text}"')).scenario.duration > 0
    assert re.match(pattern["pattern"], text)


def test_no_demand_names_arrivals_rate_and_its_line() -> None:
    """A scenario with no demand points at arrivals.rate, where the fix goes."""
    text = MINIMAL.replace('rate = "9/s"', "rate = 0")
    error = _error(text)
    assert error.key == "arrivals.rate"
    assert error.line == _line_of(text, "rate = 0")


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    """A scenario saved with a UTF-8 byte-order mark (some Windows editors) loads."""
    path = tmp_path / "bom.toml"
    path.write_text(MINIMAL, encoding="utf-8-sig")
    assert load_scenario(path).service.servers == 10

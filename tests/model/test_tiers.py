"""The service graph in scenario files: tiers, routes, tier= on controls, their errors, --set."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.errors import ScenarioError
from sim.model.scenario import (
    Client,
    json_schema,
    load_scenario,
    parse_override,
    parse_scenario,
    scaled_counts,
)

HEAD = """\
[scenario]
name = "graph"
duration = "1h"

[arrivals]
rate = "50/s"
"""

POOL = """
[service]
servers = 10
time = { dist = "exponential", mean = "100ms" }
queue_limit = 500
"""

ONE_TIER = """
[tiers.service]
servers = 10
time = { dist = "exponential", mean = "100ms" }
queue_limit = 500
"""

GRAPH = (
    HEAD
    + """
[tiers.api]
servers = 40
time = { dist = "exponential", mean = "50ms" }
queue_limit = 2000

[tiers.db]
servers = 20
time = { dist = "exponential", mean = "20ms" }

[tiers.sms]
rate_limit = "100/s"
burst = 200
time = { dist = "deterministic", mean = "300ms" }

[[routes]]
name = "message"
share = 0.9
calls = ["api", "db"]

[[routes]]
name = "signup"
share = 0.1
"""
    # the issue's example, one line in the file
    + 'calls = ["api", { tier = "sms", timeout = "5s", retries = 2,'
    + ' backoff = { base = "1s", cap = "10s", jitter = "full" } }]\n'
    + 'mode = "sync"\n'
)

POPULATION = """
[population]
initial_users = 1000
downloads = "1000/day"
requests_per_user = "10/day"
requests_per_signup = 5
"""

SOURCES = (
    HEAD.replace('rate = "50/s"', "rate = 0")
    + POPULATION
    + """
[tiers.chat]
servers = 4
time = { dist = "exponential", mean = "10ms" }

[tiers.registration]
servers = 2
time = { dist = "exponential", mean = "10ms" }

[[routes]]
name = "messages"
source = "steady"
calls = ["chat"]

[[routes]]
name = "signups"
source = "signup"
calls = ["registration"]
"""
)


def _error(text: str, **kwargs) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, file="g.toml", **kwargs)
    return info.value


def _line_of(text: str, fragment: str, nth: int = 0) -> int:
    """1-based number of the `nth` line of `text` containing `fragment`."""
    numbers = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(numbers) > nth, f"{fragment!r} is on lines {numbers}"
    return numbers[nth]


def _assert_located(error: ScenarioError, key: str, line: int, *words: str) -> None:
    assert error.file == "g.toml"
    assert error.key == key, str(error)
    assert error.line == line, str(error)
    for word in words:
        assert word in error.message, str(error)


# ------------------------------------------------------------------- the resolved view


def test_a_plain_scenario_is_one_pool_named_service_behind_one_route() -> None:
    """Without [tiers], the graph is the pool 'service' from [service] and the route 'service'."""
    scenario = parse_scenario(HEAD + POOL)
    assert list(scenario.tier_specs) == ["service"]
    tier = scenario.tier_specs["service"]
    assert tier.kind == "pool" and tier.service is scenario.service
    assert tier.time.mean_s == pytest.approx(0.1) and tier.rate_limit is None
    (route,) = scenario.route_specs
    assert (route.name, route.share, route.source, route.mode) == ("service", 1.0, None, "sync")
    assert route.tiers == ("service",) and route.calls[0].client is None
    assert scenario.entry_tier == "service"
    assert scenario.has_graph is False


def test_the_issue_example_resolves_tiers_routes_and_call_policies() -> None:
    """Pools keep [service]'s keys, providers their bucket; later calls carry their policy."""
    scenario = parse_scenario(GRAPH)
    assert list(scenario.tier_specs) == ["api", "db", "sms"]
    api, db, sms = scenario.tier_specs.values()
    assert (api.kind, api.service.servers, api.service.queue_limit) == ("pool", 40, 2000)
    assert db.service.servers == 20 and db.service.discipline == "fifo"
    assert (sms.kind, sms.service, sms.rate_limit, sms.burst) == ("provider", None, 100.0, 200.0)
    assert sms.time.dist == "deterministic" and sms.time.mean_s == pytest.approx(0.3)
    message, signup = scenario.route_specs
    assert (message.name, message.share, message.mode, message.tiers) == (
        "message",
        0.9,
        "sync",
        ("api", "db"),
    )
    assert message.calls[0].client is None
    assert message.calls[1].client == Client()  # a bare name: one try, no timeout
    call = signup.calls[1]
    assert call.tier == "sms"
    assert (call.client.timeout, call.client.retries) == (5.0, 2)
    assert (call.client.backoff.base, call.client.backoff.cap) == (1.0, 10.0)
    assert scenario.entry_tier == "api"
    assert scenario.service is api.service  # code written for one pool reads the entry pool
    assert scenario.has_graph is True


def test_the_entry_call_may_be_a_table_naming_only_its_tier_and_mode_may_be_async() -> None:
    """{ tier = NAME } is accepted as the first call (no policy); mode = "async" is kept."""
    text = GRAPH.replace(
        'calls = ["api", "db"]', 'calls = [{ tier = "api" }, "db"]\nmode = "async"'
    )
    message = parse_scenario(text).route_specs[0]
    assert message.calls[0].client is None and message.mode == "async"


def test_burst_defaults_to_one_second_of_the_rate_limit_and_at_least_one_call() -> None:
    """A provider without burst holds one second of calls (one call when slower than 1/s)."""
    text = GRAPH.replace("burst = 200\n", "")
    assert parse_scenario(text).tier_specs["sms"].burst == 100.0
    slow = text.replace('rate_limit = "100/s"', 'rate_limit = "30/min"')
    assert parse_scenario(slow).tier_specs["sms"].burst == 1.0


def test_a_lone_tier_needs_no_routes_and_its_route_is_named_after_it() -> None:
    """[tiers.api] alone makes the route 'api' calling it with share 1: a (one-tier) graph."""
    scenario = parse_scenario(HEAD + ONE_TIER.replace("tiers.service", "tiers.api"))
    (route,) = scenario.route_specs
    assert (route.name, route.share, route.tiers) == ("api", 1.0, ("api",))
    assert scenario.entry_tier == "api" and scenario.service.servers == 10
    assert scenario.has_graph is True


def test_tiers_no_route_calls_are_allowed() -> None:
    """A declared tier that no route calls is kept, without complaint."""
    text = GRAPH.replace('calls = ["api", { tier = "sms"', 'calls = ["api", { tier = "db"')
    scenario = parse_scenario(text)
    assert "sms" in scenario.tier_specs
    assert all("sms" not in route.tiers for route in scenario.route_specs)


def test_population_sources_feed_their_routes() -> None:
    """With [population], routes may take its steady and sign-up demand instead of shares."""
    scenario = parse_scenario(SOURCES)
    messages, signups = scenario.route_specs
    assert (messages.share, messages.source) == (None, "steady")
    assert (signups.share, signups.source) == (None, "signup")
    assert scenario.entry_tier == "chat"


def test_shares_within_rounding_of_one_are_accepted() -> None:
    """0.1 + 0.2 + 0.7 is 1 up to rounding: accepted (the tolerance is 1e-9)."""
    text = GRAPH.replace("share = 0.9", "share = 0.7") + (
        '\n[[routes]]\nname = "read"\nshare = 0.2\ncalls = ["api"]\n'
    )
    assert [r.share for r in parse_scenario(text).route_specs] == [0.7, 0.1, 0.2]


# --------------------------------------------------- one pool, two spellings, one scenario

SPELLINGS = {
    "plain": HEAD + POOL,
    "tiers": HEAD + ONE_TIER,
    "tiers and route": HEAD
    + ONE_TIER
    + '\n[[routes]]\nname = "service"\nshare = 1\ncalls = ["service"]\n',
}


@pytest.mark.parametrize("spelling", ["tiers", "tiers and route"])
def test_an_explicit_service_tier_is_the_same_scenario_as_service(spelling: str) -> None:
    """[tiers.service] (with or without its one route) equals [service] for the engines."""
    plain = parse_scenario(SPELLINGS["plain"])
    explicit = parse_scenario(SPELLINGS[spelling])
    assert explicit.has_graph is False
    assert explicit.service == plain.service
    assert explicit.tier_specs == plain.tier_specs
    assert explicit.route_specs == plain.route_specs
    assert explicit.canonical_dump() == plain.canonical_dump()
    assert explicit.sha256 == plain.sha256


def test_the_spellings_compared_differ_when_the_pool_does() -> None:
    """The equality above has power: one server more is another scenario in either spelling."""
    plain = parse_scenario(SPELLINGS["plain"])
    other = parse_scenario(SPELLINGS["tiers"].replace("servers = 10", "servers = 11"))
    assert other.service != plain.service
    assert other.sha256 != plain.sha256


def test_a_single_pool_scenario_hashes_as_before_tiers_existed() -> None:
    """The canonical form of a single pool has exactly the sections it had before tiers."""
    dump = parse_scenario(SPELLINGS["plain"] + '[[faults]]\nat = "1min"\nduration = "1min"\n')
    data = dump.canonical_dump()
    assert set(data) == {
        "scenario",
        "arrivals",
        "population",
        "service",
        "capacity",
        "faults",
        "client",
        "slo",
    }
    assert "tier" not in data["faults"][0]
    assert dump.faults[0].tier == "service"


def test_a_named_route_on_the_service_pool_is_a_graph() -> None:
    """Two routes over the one pool 'service' are a graph (per-route outputs), not plain."""
    text = (
        HEAD
        + POOL
        + '\n[[routes]]\nname = "a"\nshare = 0.5\ncalls = ["service"]\n'
        + '\n[[routes]]\nname = "b"\nshare = 0.5\ncalls = ["service"]\n'
    )
    scenario = parse_scenario(text)
    assert scenario.has_graph is True
    assert [r.name for r in scenario.route_specs] == ["a", "b"]
    assert scenario.service is scenario.tier_specs["service"].service


# ----------------------------------------------------------------- tier= on controls


CONTROLS = """
[[capacity.change]]
at = "10min"
servers = 30
tier = "db"

[[capacity.change]]
at = "20min"
servers = 50

[capacity.planner]
tier = "db"

[capacity.autoscale]
max_servers = 100

[[faults]]
at = "5min"
duration = "1min"
tier = "sms"
capacity_factor = 0.5

[[faults]]
at = "30min"
duration = "1min"
"""


def test_controls_take_a_tier_and_default_to_the_entry_tier() -> None:
    """tier= is stored resolved on each control; without it, the control is the entry tier's."""
    scenario = parse_scenario(GRAPH + CONTROLS)
    capacity = scenario.capacity
    assert [c.tier for c in capacity.change] == ["db", "api"]
    assert capacity.planner.tier == "db"
    assert capacity.autoscale.tier == "api"
    assert [f.tier for f in scenario.faults] == ["sms", "api"]  # a fault may strike a provider


@pytest.mark.parametrize(
    ("fragment", "replacement", "key"),
    [
        ('servers = 30\ntier = "db"', 'servers = 30\ntier = "dbb"', "capacity.change.0.tier"),
        ('[capacity.planner]\ntier = "db"', '[capacity.planner]\ntier = "dbb"', None),
        ('duration = "1min"\ntier = "sms"', 'duration = "1min"\ntier = "dbb"', "faults.0.tier"),
    ],
)
def test_an_unknown_tier_on_a_control_is_located(fragment, replacement, key) -> None:
    """A control naming no tier of the scenario fails at its tier key, with a suggestion."""
    text = (GRAPH + CONTROLS).replace(fragment, replacement)
    error = _error(text)
    key = key or "capacity.planner.tier"
    line = _line_of(text, 'tier = "dbb"')
    _assert_located(error, key, line, "unknown tier 'dbb'", "did you mean 'db'?")


@pytest.mark.parametrize(
    ("control", "key"),
    [
        ('[[capacity.change]]\nat = "1min"\nservers = 3\ntier = "sms"\n', "capacity.change.0.tier"),
        ('[capacity.planner]\ntier = "sms"\n', "capacity.planner.tier"),
        ('[capacity.autoscale]\ntier = "sms"\n', "capacity.autoscale.tier"),
    ],
)
def test_a_capacity_control_on_a_provider_is_an_error(control: str, key: str) -> None:
    """A provider has no servers: a capacity control naming it fails at its tier key."""
    text = GRAPH + "\n" + control
    line = _line_of(text, 'tier = "sms"', -1)  # the control's, after the route's call
    _assert_located(_error(text), key, line, "provider", "no servers")


def test_a_control_tier_on_a_single_pool_scenario_is_service() -> None:
    """tier = "service" names the plain pool; any other name is unknown."""
    text = HEAD + POOL + '[[faults]]\nat = "1min"\nduration = "1min"\ntier = "service"\n'
    assert parse_scenario(text).faults[0].tier == "service"
    bad = text.replace('tier = "service"', 'tier = "servic"')
    _assert_located(
        _error(bad), "faults.0.tier", _line_of(bad, "tier ="), "did you mean 'service'?"
    )


# ------------------------------------------------------------------- validation errors


def _route_error_cases() -> list[tuple[str, str, str, str, list[str]]]:
    """(id, text, key, fragment of the blamed line, words of the message) for route errors."""
    second = 'calls = ["api", { tier = "sms"'
    return [
        (
            "unknown tier",
            GRAPH.replace('calls = ["api", "db"]', 'calls = ["api", "dbs"]'),
            "routes.0.calls.1",
            '"dbs"',
            ["unknown tier 'dbs'", "did you mean 'db'?"],
        ),
        (
            "cycle",
            GRAPH.replace('calls = ["api", "db"]', 'calls = ["api", "db", "api"]'),
            "routes.0.calls.2",
            '"db", "api"',
            ["cycle in calls", "'api'", "calls 0 and 2"],
        ),
        (
            "shares",
            GRAPH.replace("share = 0.1", "share = 0.2"),
            "routes",
            "[[routes]]",
            ["sum to 1.1", "0.9 + 0.2", "not 1"],
        ),
        (
            "share and source",
            (GRAPH + POPULATION).replace("share = 0.1", 'share = 0.1\nsource = "signup"'),
            "routes.1.source",
            'source = "signup"',
            ["by share or by source, not both", "routes.0 has share"],
        ),
        (
            "source without population",
            GRAPH.replace("share = 0.9", 'source = "steady"'),
            "routes.0.source",
            'source = "steady"',
            ["[population]"],
        ),
        (
            "share and source mixed",
            SOURCES.replace('source = "signup"', "share = 0.5"),
            "routes.1.share",
            "share = 0.5",
            ["by share or by source, not both", "routes.0 has source"],
        ),
        (
            "neither share nor source",
            GRAPH.replace("share = 0.1\n", ""),
            "routes.1",
            "[[routes]]",
            ["needs share"],
        ),
        (
            "source twice",
            SOURCES.replace('source = "signup"', 'source = "steady"'),
            "routes.1.source",
            'source = "steady"',
            ["'steady' also feeds routes.0 ('messages')", "each take a share of it"],
        ),
        (
            "sign-up demand without its route",
            SOURCES.replace('source = "signup"\ncalls = ["registration"]', "").replace(
                '[[routes]]\nname = "signups"\n', ""
            ),
            "routes",
            "[[routes]]",
            ["requests_per_signup", 'no route has source = "signup"'],
        ),
        (
            "steady demand without its route",
            SOURCES.replace(
                '[[routes]]\nname = "messages"\nsource = "steady"\ncalls = ["chat"]', ""
            ),
            "routes",
            "[[routes]]",
            ['no route has source = "steady"'],
        ),
        (
            "provider not last",
            GRAPH.replace('calls = ["api", "db"]', 'calls = ["api", "sms", "db"]'),
            "routes.0.calls.1",
            '"sms", "db"',
            ["a provider makes no calls", "'sms' must be the last call"],
        ),
        (
            "provider as entry",
            GRAPH.replace('calls = ["api", "db"]', 'calls = ["sms"]'),
            "routes.0.calls.0",
            'calls = ["sms"]',
            ["entry tier 'sms' is a provider"],
        ),
        (
            "policy on the entry call",
            GRAPH.replace('calls = ["api", "db"]', 'calls = [{ tier = "api", retries = 3 }, "db"]'),
            "routes.0.calls.0.retries",
            "retries = 3",
            ["[client]", "retries"],
        ),
        (
            "duplicate route name",
            GRAPH.replace('name = "signup"', 'name = "message"'),
            "routes.1.name",
            'name = "message"',
            ["'message' is taken by routes.0"],
        ),
        (
            "bad route name",
            GRAPH.replace('name = "signup"', 'name = "sign.up"'),
            "routes.1.name",
            'name = "sign.up"',
            ["route name", "ROUTE.success_ratio"],
        ),
        (
            "call neither name nor table",
            GRAPH.replace('calls = ["api", "db"]', 'calls = ["api", 5]'),
            "routes.0.calls.1",
            '"api", 5',
            ["a tier name or a table"],
        ),
        (
            "unknown key in a call",
            GRAPH.replace("timeout = ", "timout = "),
            "routes.1.calls.1.timout",
            second,
            ["unknown key 'timout'", "did you mean 'timeout'?"],
        ),
        (
            "no calls",
            GRAPH.replace('calls = ["api", "db"]', "calls = []"),
            "routes.0.calls",
            "calls = []",
            ["at least 1"],
        ),
    ]


ROUTE_ERRORS = _route_error_cases()


@pytest.mark.parametrize(
    ("text", "key", "fragment", "words"),
    [case[1:] for case in ROUTE_ERRORS],
    ids=[case[0] for case in ROUTE_ERRORS],
)
def test_route_errors_name_the_key_and_its_line(text, key, fragment, words) -> None:
    """Every broken route rule fails at the key to change, on the line where it is written."""
    # A fragment both routes hold is blamed in the second route when the key is there.
    nth = 1 if key.startswith("routes.1") and text.count(fragment) > 1 else 0
    _assert_located(_error(text), key, _line_of(text, fragment, nth), *words)


def test_a_provider_with_servers_is_an_error_at_its_servers() -> None:
    """A tier with rate_limit is a provider: servers (or any pool key) is refused where written."""
    text = GRAPH.replace("burst = 200", "burst = 200\nservers = 5")
    _assert_located(_error(text), "tiers.sms.servers", _line_of(text, "servers = 5"), "provider")
    text = GRAPH.replace("burst = 200", "burst = 200\nqueue_limit = 5")
    _assert_located(
        _error(text), "tiers.sms.queue_limit", _line_of(text, "queue_limit = 5"), "provider"
    )


def test_a_pool_without_servers_says_what_a_tier_needs() -> None:
    """A tier with neither servers nor rate_limit is a pool missing its servers."""
    text = GRAPH.replace("servers = 20\n", "")
    _assert_located(
        _error(text), "tiers.db.servers", _line_of(text, "[tiers.db]"), "'servers'", "rate_limit"
    )


def test_a_misspelt_rate_limit_is_suggested() -> None:
    """A typo of rate_limit makes a pool with an unknown key: the hint names rate_limit."""
    text = GRAPH.replace('rate_limit = "100/s"', 'rate_limt = "100/s"')
    _assert_located(
        _error(text), "tiers.sms.rate_limt", _line_of(text, "rate_limt"), "'rate_limit'"
    )


def test_a_provider_key_of_the_wrong_type_is_located() -> None:
    """A provider's keys are checked like any other: a bad burst fails on its line."""
    text = GRAPH.replace("burst = 200", "burst = 0.5")
    _assert_located(_error(text), "tiers.sms.burst", _line_of(text, "burst = 0.5"), "1")


def test_service_and_tiers_together_are_an_error() -> None:
    """[service] and [tiers] are two spellings of the pools: both at once are refused."""
    text = GRAPH + POOL
    _assert_located(
        _error(text), "service", _line_of(text, "[service]"), "[tiers.service]", "two spellings"
    )


def test_a_scenario_without_pools_is_an_error() -> None:
    """Neither [service] nor [tiers]: the missing table is named (on the first line)."""
    _assert_located(_error(HEAD), "service", 1, "'service'", "[tiers.NAME]")


def test_several_tiers_need_routes() -> None:
    """Two tiers and no [[routes]]: which calls which is unsaid, so it is an error."""
    text = GRAPH[: GRAPH.index("[[routes]]")]
    _assert_located(_error(text), "tiers", _line_of(text, "[tiers.api]"), "[[routes]]")


def test_a_lone_provider_cannot_be_the_service() -> None:
    """A scenario whose only tier is a provider has no pool to enter."""
    text = HEAD + '[tiers.sms]\nrate_limit = "10/s"\ntime = { mean = "1s" }\n'
    _assert_located(_error(text), "tiers.sms.rate_limit", _line_of(text, "rate_limit"), "provider")


def test_a_tier_name_with_a_dot_is_refused() -> None:
    """Tier names prefix columns (TIER.queue): a quoted name with a dot is refused."""
    text = GRAPH.replace("[tiers.db]", '[tiers."d.b"]').replace('"db"]', '"d.b"]')
    _assert_located(
        _error(text), "tiers.d.b", _line_of(text, '[tiers."d.b"]'), "tier name", "TIER.queue"
    )


def test_an_unknown_key_in_a_pool_tier_is_suggested() -> None:
    """A typo in a pool tier gets the usual 'did you mean' and its line."""
    text = GRAPH.replace("queue_limit = 2000", "queue_limt = 2000")
    _assert_located(
        _error(text),
        "tiers.api.queue_limt",
        _line_of(text, "queue_limt"),
        "did you mean 'queue_limit'?",
    )


# ------------------------------------------------------------------ --set and sweeps


@pytest.mark.parametrize(
    ("assignment", "check"),
    [
        ("tiers.db.servers=30", lambda s: s.tier_specs["db"].service.servers == 30),
        ("tiers.sms.rate_limit=200/s", lambda s: s.tier_specs["sms"].rate_limit == 200.0),
        ("tiers.sms.burst=50", lambda s: s.tier_specs["sms"].burst == 50.0),
        ("routes.1.calls.1.retries=0", lambda s: s.route_specs[1].calls[1].client.retries == 0),
        ("tiers.api.time.mean=100ms", lambda s: s.service.time.mean_s == pytest.approx(0.1)),
    ],
)
def test_set_overrides_tier_and_route_keys(assignment: str, check) -> None:
    """--set reaches every tier and route key (rates as written, durations with units)."""
    key, value = parse_override(assignment)
    assert check(parse_scenario(GRAPH, overrides={key: value}))
    assert not check(parse_scenario(GRAPH))


def test_grid_values_of_a_tier_key_load_from_a_file(tmp_path: Path) -> None:
    """A sweep's points over tiers.db.servers load as overrides of the file, one per value."""
    path = tmp_path / "graph.toml"
    path.write_text(GRAPH)
    servers = [
        load_scenario(path, overrides={"tiers.db.servers": v}).tier_specs["db"].service.servers
        for v in (20, 30)
    ]
    assert servers == [20, 30]


@pytest.mark.parametrize(
    ("text", "assignment", "words"),
    [
        (GRAPH, "tiers.dbx.servers=3", ["unknown tier 'dbx'", "did you mean 'db'?"]),
        (GRAPH, "service.servers=3", ["tiers.NAME.KEY", "api, db, sms"]),
        (HEAD + POOL, "tiers.service.servers=3", ["no [tiers]", "service.KEY"]),
        (GRAPH, "tiers.sms.servers=3", ["provider"]),
        (GRAPH, "tiers.db.servers=abc", ["integer"]),
        (GRAPH, "routes.0.share=0.5", ["sum to 0.6"]),
    ],
)
def test_a_bad_tier_override_blames_the_override(text: str, assignment: str, words) -> None:
    """An override naming no tier, the other spelling or a bad value is blamed on --set."""
    key, value = parse_override(assignment)
    error = _error(text, overrides={key: value})
    assert error.file == "--set", str(error)
    for word in words:
        assert word in error.message, str(error)


def test_every_pool_tier_counts_in_the_scale_check() -> None:
    """Every pool's servers, queue limit and lifo_over divide by scale; a provider's rate not."""
    counts = dict(scaled_counts(parse_scenario(GRAPH)))
    assert counts == {
        ("tiers", "api", "servers"): 40.0,
        ("tiers", "api", "queue_limit"): 2000.0,
        ("tiers", "db", "servers"): 20.0,
    }
    text = GRAPH.replace('rate = "50/s"', 'rate = "50/s"\n').replace(
        'duration = "1h"', 'duration = "1h"\nscale = 8'
    )
    error = _error(text)
    assert error.key == "scenario.scale" and error.line == _line_of(text, "scale = 8")
    assert f"tiers.db.servers = 20 (line {_line_of(text, 'servers = 20')})" in error.message
    assert "nearest scales" in error.message and "10" in error.message  # 10 divides 40, 2000, 20
    assert parse_scenario(text.replace("scale = 8", "scale = 10")).scenario.scale == 10


# --------------------------------------------------------------------------- schema


def test_schema_has_tiers_and_routes_with_descriptions() -> None:
    """`outage-sim schema` describes tiers (pools or providers), routes and their calls."""
    schema = json_schema()
    tiers, routes = schema["properties"]["tiers"], schema["properties"]["routes"]
    assert "provider" in tiers["description"] and "Request classes" in routes["description"]
    branches = {ref["$ref"].rsplit("/", 1)[-1] for ref in tiers["additionalProperties"]["oneOf"]}
    assert branches == {"Service", "Provider"}
    assert tiers["propertyNames"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_-]*$"
    defs = schema["$defs"]
    assert set(defs["Provider"]["properties"]) == {"rate_limit", "burst", "time"}
    assert {"name", "share", "source", "calls", "mode"} == set(defs["RouteSpec"]["properties"])
    assert set(defs["CallSpec"]["properties"]) == {"tier", *Client.model_fields}
    for name in ("Provider", "RouteSpec", "CallSpec"):
        assert defs[name]["description"] and defs[name]["additionalProperties"] is False
        for key, prop in defs[name]["properties"].items():
            if name != "CallSpec" or key == "tier":
                assert prop.get("description"), f"{name}.{key}"
    for control in ("CapacityChange", "Planner", "Autoscale", "Fault"):
        assert "tier" in defs[control]["properties"], control
    assert {"required": ["service"]} in schema["oneOf"]
    assert {"required": ["tiers"]} in schema["oneOf"]


SPLIT_SIGNUP = SOURCES.replace(
    '[[routes]]\nname = "signups"\nsource = "signup"\ncalls = ["registration"]',
    '[[routes]]\nname = "signups"\nsource = "signup"\nshare = 0.8\ncalls = ["registration"]\n\n'
    '[[routes]]\nname = "verify"\nsource = "signup"\nshare = 0.2\ncalls = ["registration"]',
)


def test_routes_may_split_a_source_by_shares() -> None:
    """A source fed to several routes gives each a share of it (sign-ups: most of their work
    at registration, a fifth of it also calling on): the shares of one source sum to 1."""
    routes = parse_scenario(SPLIT_SIGNUP).route_specs
    assert [(r.name, r.source, r.share) for r in routes] == [
        ("messages", "steady", None),
        ("signups", "signup", 0.8),
        ("verify", "signup", 0.2),
    ]
    error = _error(SPLIT_SIGNUP.replace("share = 0.2", "share = 0.3"))
    assert error.key == "routes.1.share"
    assert "the shares of source 'signup' sum to 1.1 (0.8 + 0.3), not 1" in str(error)
    error = _error(SPLIT_SIGNUP.replace("share = 0.2\n", ""))
    assert error.key == "routes.2.source"
    assert "also feeds routes.1 ('signups')" in str(error)

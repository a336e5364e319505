"""The `outage-sim` command: the only place that turns errors into exit codes.

Exit status: 0 ran; 2 bad scenario or arguments (one message, no traceback); 1 anything else
(traceback only with --debug); 130 interrupted, after writing what was simulated so far.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

import click

from sim import __version__
from sim.errors import OutageSimError, RunTooLargeError, ScenarioError, UsageError

EXIT_INTERRUPTED = 130


class Fail(click.ClickException):
    """A user-facing failure with its exit code (2 for bad input, 1 otherwise)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"outage-sim: error: {self.format_message()}", err=True)


def _guard(debug: bool):
    """Turn project errors into exit codes; unexpected errors into status 1."""

    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, kind, error, tb):
            if error is None or isinstance(error, click.exceptions.Exit | click.ClickException):
                return False
            if isinstance(error, OutageSimError):
                raise Fail(str(error), error.exit_code) from None
            if isinstance(error, KeyboardInterrupt):
                click.echo("outage-sim: interrupted", err=True)
                sys.exit(EXIT_INTERRUPTED)
            if isinstance(error, Exception):
                if debug:
                    traceback.print_exception(kind, error, tb)
                message = f"{type(error).__name__}: {error}"
                hint = "" if debug else " (run with --debug for the traceback)"
                raise Fail(f"{message}{hint}", 1) from None
            return False

    return _Guard()


def _overrides(assignments: tuple[str, ...]) -> dict:
    from sim.model.scenario import parse_override

    return dict(parse_override(a) for a in assignments)


def _load(
    file: str, assignments: tuple[str, ...], seed: int | None = None, engine: str | None = None
):
    from sim.model.scenario import load_scenario

    overrides = _overrides(assignments)
    if seed is not None:
        overrides["scenario.seed"] = seed
    if engine is not None:
        overrides["scenario.engine"] = engine
    return load_scenario(file, overrides=overrides)


class _Commands(click.Group):
    """The command group: each command listed with its first sentence whole (click cuts it
    at 45 characters with "...", which hides what a command does)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


EXAMPLES = """Examples:

\b
  outage-sim run scenarios/signal-2021-01.toml   # report in reports/signal-2021-01/
  outage-sim run scenarios/mmc.toml --set service.servers=11 --out /tmp/mmc11
  outage-sim check scenarios/mmc.toml            # validate, and what theory expects
  outage-sim sweep scenarios/mmc.toml --grid service.servers=9..14 --reps 10
  outage-sim plan scenarios/mmc.toml --param service.servers --lo 1 --hi 100
  outage-sim schema > scenario.schema.json       # JSON Schema for editors

Each command has its own --help.
"""


@click.group(
    cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES
)
@click.version_option(__version__, prog_name="outage-sim")
def cli() -> None:
    """Simulate a service under a traffic surge, see the outage before it happens, and find
    the capacity or mitigation that prevents it."""


SET_HELP = "Override a scenario key, e.g. --set service.servers=12 (repeatable; TOML value)."
_engine_option = click.option(
    "--engine", type=click.Choice(["des", "fluid"]), help="Engine (overrides scenario.engine)."
)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder [default: reports/<name>/].",
)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=2**63 - 1),
    help="Random seed (overrides scenario.seed).",
)
@_engine_option
@click.option(
    "--force", is_flag=True, help="Run even when the estimate exceeds 400M simulated requests."
)
@click.option("--no-charts", is_flag=True, help="Write summary.json and timeseries.csv only.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary on stdout.")
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
@click.option(
    "--reps",
    type=click.IntRange(min=1),
    default=1,
    help="Replications: above 1, per-bin median and 5-95% bands of queue and latency "
    "(bands.csv, drawn in the charts); the report is replication 0's.",
)
def run(file, out_dir, assignments, seed, engine, force, no_charts, quiet, debug, reps) -> None:
    """Simulate FILE and write its report (summary.json, timeseries.csv, charts)."""
    _terminate_as_interrupt()
    with _guard(debug):
        from sim.analysis.warnings import scenario_warnings
        from sim.model.workload import Demand
        from sim.report.writer import write_report
        from sim.run import check_size, simulate

        scenario = _load(file, assignments, seed, engine)
        demand = Demand(scenario)
        check_size(scenario, demand, force=force)
        out = Path(out_dir) if out_dir else Path("reports") / scenario.scenario.name
        _writable(out)
        _lock(out, f"run {file}")
        # After every refusal: a refused run says one thing, its error.
        for warning in scenario_warnings(scenario, demand):
            click.echo(f"outage-sim: warning: {warning}", err=True)
        started_at = datetime.now(UTC)
        if reps > 1:
            from sim.experiments.sweep import describe_replications, replicate, write_bands

            result = replicate(scenario, reps, progress=False if quiet else None)
        else:
            bar = _progress_bar(quiet, scenario, demand)
            try:
                result = simulate(scenario, progress=bar, demand=demand)
            finally:
                if bar is not None:
                    bar.close()  # gone before anything else is printed
        result.extra.setdefault("started_at", started_at)
        if reps > 1:
            write_bands(result, out)  # first: the charts draw the bands from the folder
        write_report(result, out, charts=not no_charts)
        if reps > 1:
            if not quiet:
                click.echo(describe_replications(result.summary))
        summary = result.summary
        if not quiet:
            from sim.report.writer import report_view

            click.echo(_headline(report_view(summary, result.timeseries), out))
        if summary.get("interrupted"):
            click.echo("outage-sim: interrupted; wrote what was simulated so far", err=True)
            sys.exit(EXIT_INTERRUPTED)


def _writable(out: Path) -> None:
    """Refuse (exit 2) an output folder that cannot be made, before simulating for an hour."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write the report to {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the report to {out}: {existing} is not writable")


def _lock(out: Path, what: str) -> None:
    """Hold the output folder's lock until the command ends: another live process writing it
    is refused at once with exit 1 (the arguments are fine, the same command succeeds once
    that process ends: a busy folder, like a full disk, is a state of the machine); a lock
    left by a dead process is taken over, with a warning naming it."""
    from sim.io import FolderLock

    lock = click.get_current_context().with_resource(FolderLock(out, f"outage-sim {what}"))
    if lock.took_over:
        click.echo(f"outage-sim: warning: {lock.took_over}", err=True)


def _terminate_as_interrupt() -> None:
    """SIGTERM (a scheduler or `kill` stopping a long run) ends it like Ctrl-C: what was
    simulated is written and the exit status is 130."""
    import signal
    import threading

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


class _Progress:
    """The run's progress bar: the engines report the share of simulated time done, the bar
    shows the share of expected work (fresh requests) done, so its ETA holds when demand
    surges late in the run. Called with the time share; `close` clears it."""

    def __init__(self, demand, duration_s: float, file) -> None:
        from tqdm import tqdm

        self.demand, self.duration_s = demand, duration_s
        self.total = float(demand.expected_total()) or 1.0
        self.bar = tqdm(total=100, unit="%", delay=2.0, file=file, leave=False, desc="simulating")

    def work_share(self, time_share: float) -> float:
        """The expected share of fresh requests that arrive in the first `time_share` of the run."""
        done = float(self.demand.cumulative(min(max(time_share, 0.0), 1.0) * self.duration_s))
        return min(done / self.total, 1.0)

    def __call__(self, time_share: float) -> None:
        self.bar.n = round(self.work_share(time_share) * 100, 1)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _progress_bar(quiet: bool, scenario, demand) -> _Progress | None:
    if quiet or not sys.stderr.isatty():
        return None
    return _Progress(demand, scenario.scenario.duration, sys.stderr)


def _headline(summary: dict, out: Path) -> str:
    """The report's headline, in the report's words: its lead sentence and its cards."""
    from sim.report.text import headline, seconds, sentence

    facts = headline(summary)
    lines = [f"{summary['scenario']}: {facts['lead']}"]
    for label, value, note in facts["cards"]:
        lines.append(f"  {label}: {value}" + (f" ({note})" if note else ""))
    if facts["why"]:
        lines.append(f"  Why: {sentence(facts['why'])}")
    if facts["trigger"]:
        lines.append(f"  Trigger: {facts['trigger']}")
    planned_s = (summary.get("parameters") or {}).get("duration_s")
    if summary.get("interrupted") and planned_s:
        lines.append(
            f"interrupted: {seconds(summary['duration_s'])} of {seconds(planned_s)} simulated"
        )
    lines.append(f"simulated in {summary['wall_time_s']:.1f} s; report in {out}/")
    return "\n".join(lines)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
def check(file, assignments, debug) -> None:
    """Validate FILE without running it; print what a run would simulate."""
    with _guard(debug):
        from sim.analysis.expectations import describe_theory, scenario_theory
        from sim.analysis.warnings import scenario_warnings
        from sim.model.workload import Demand
        from sim.run import check_size, estimate_requests

        scenario = _load(file, assignments)
        demand = Demand(scenario)
        estimate = estimate_requests(scenario, demand)
        click.echo(
            f"{file}: ok ({scenario.scenario.name}, about {estimate:,.0f} simulated requests "
            f"with the {scenario.scenario.engine} engine)"
        )
        try:
            check_size(scenario, demand)
        except RunTooLargeError as refusal:
            click.echo(f"note: `run` would refuse it: {refusal}")
        for warning in scenario_warnings(scenario, demand):
            click.echo(f"warning: {warning}")
        for line in describe_theory(scenario_theory(scenario, demand)):
            click.echo(line)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of scenario files."""
    from sim.model.scenario import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def _grid(ctx, param, assignments: tuple[str, ...]) -> dict:
    """--grid KEY=V1,V2,... (repeatable) -> {key: [values]}, in the order given."""
    from sim.experiments.sweep import parse_grid

    grid = {}
    for assignment in assignments:
        try:
            key, values = parse_grid(assignment)
        except OutageSimError as error:
            raise click.BadParameter(str(error)) from None
        grid[key] = values
    return grid


def _executor_options(command):
    """--workers N | --dask ADDRESS: where the runs of a sweep or a plan go."""
    command = click.option(
        "--dask",
        "dask_address",
        metavar="ADDRESS",
        help="Run on a Dask cluster, e.g. tcp://scheduler:8786 (pip install 'outage-sim[dask]').",
    )(command)
    return click.option(
        "--workers", type=click.IntRange(min=1), help="Local worker processes [default: CPUs]."
    )(command)


@cli.command("sweep")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--grid",
    multiple=True,
    required=True,
    metavar="KEY=V1,V2,...",
    callback=_grid,
    help="A parameter and its values (repeatable; LO..HI[:STEP] for a range of integers).",
)
@click.option(
    "--reps",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Replications per point; replication r has the same seed at every point.",
)
@_executor_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder [default: reports/<name>/sweep/].",
)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@_engine_option
@click.option("--force", is_flag=True, help="Run points estimated above 400M simulated requests.")
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the runs that finished in the folder's results.csv (same scenario and seeds) "
    "and run only the rest, e.g. after Ctrl-C.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no table on stdout.")
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
def sweep_command(
    file, grid, reps, workers, dask_address, out_dir, assignments, engine, force, resume, quiet,
    debug,
) -> None:  # fmt: skip
    """Run FILE at every point of a grid, REPS times each; write results.csv (one row per
    run), aggregate.csv (mean and 95% CI per point) and sweep.png."""
    with _guard(debug):
        from sim.experiments.sweep import aggregate, sweep, sweep_table
        from sim.model.scenario import load_scenario

        overrides = _overrides(assignments)
        name = load_scenario(file, overrides=overrides).scenario.name
        out = Path(out_dir) if out_dir else Path("reports") / name / "sweep"
        _writable(out)
        _lock(out, f"sweep {file}")
        progress = False if quiet else None
        rows = sweep(file, grid, reps, workers, dask_address, out, progress, overrides=overrides,
                     force=force, resume=resume, engine=engine)  # fmt: skip
        if not quiet:
            click.echo(sweep_table(aggregate(rows, list(grid)), list(grid)))
            click.echo(f"results in {out}/")
        failed = [row for row in rows if row["error"]]
        for row in failed[:20]:
            where = ", ".join(f"{key}={row[key]!r}" for key in grid)
            click.echo(
                f"outage-sim: run failed ({where}, replication {row['replication']}, "
                f"seed {row['seed']}): {row['error']}",
                err=True,
            )
        if failed:
            raise Fail(f"{len(failed)} of {len(rows)} runs failed; the rest are in {out}/", 1)


@cli.command("plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--param", required=True, metavar="KEY", help="Integer parameter, e.g. service.servers."
)
@click.option("--lo", type=int, required=True, help="Least value to consider.")
@click.option("--hi", type=int, required=True, help="Greatest value to consider.")
@click.option(
    "--reps",
    type=click.IntRange(min=1),
    default=None,
    help="Runs per probe [default: the least that can reach CONFIDENCE, 22 at 0.9].",
)
@click.option(
    "--confidence",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.9,
    show_default=True,
    help="Confidence, and least pass probability, the runs must show (one-sided "
    "Clopper-Pearson lower bound on the chance that a run has no outage).",
)
@_executor_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder for plan.json and results.csv (every run, as it finishes) "
    "[default: reports/<name>/plan/].",
)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@_engine_option
@click.option("--force", is_flag=True, help="Run values estimated above 400M simulated requests.")
@click.option(
    "--resume",
    is_flag=True,
    help="Take the runs that finished in the folder's results.csv (same scenario and seeds) "
    "instead of running them again, e.g. after a crash.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print only KEY = VALUE.")
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
def plan_command(
    file, param, lo, hi, reps, confidence, workers, dask_address, out_dir, assignments, engine,
    force, resume, quiet, debug,
) -> None:  # fmt: skip
    """Find the least value of PARAM in [LO, HI] whose runs meet the SLO (no outage) with
    CONFIDENCE, by bisection; write plan.json, print KEY = VALUE."""
    with _guard(debug):
        from sim.experiments.plan import describe, plan
        from sim.model.scenario import load_scenario

        overrides = _overrides(assignments)
        name = load_scenario(file, overrides=overrides).scenario.name
        out = Path(out_dir) if out_dir else Path("reports") / name / "plan"
        _writable(out)
        _lock(out, f"plan {file}")
        result = plan(file, param, lo, hi, reps, confidence, workers, dask_address, out,
                      False if quiet else None, overrides=overrides, force=force,
                      engine=engine, resume=resume)  # fmt: skip
        if not quiet:
            click.echo(describe(result), err=True)
        else:
            for warning in result.warnings:
                click.echo(f"outage-sim: warning: {warning}", err=True)
        if result.value is None:
            raise Fail(
                f"no {param} in [{lo}, {hi}] meets the SLO at {confidence:.0%} confidence with "
                f"{result.reps} runs per value; evidence in {out}/plan.json",
                1,
            )
        click.echo(f"{param} = {result.value}")


def _duration_option(ctx, param, value):
    if value is None:
        return None
    from sim.model.units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@cli.command("sensitivity")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--vary",
    multiple=True,
    metavar="KEY=LOW,HIGH",
    help="An assumption and its range (repeatable; with the file's [[sensitivity]] table, "
    "a flag replaces the table's entry for its key).",
)
@click.option(
    "--reps",
    type=click.IntRange(min=1),
    default=None,
    help="Replications per level, common random numbers [default: 5 on the DES; the fluid "
    "engine is deterministic: 1].",
)
@click.option(
    "--engine",
    type=click.Choice(["des", "fluid"]),
    help="Engine [default: the DES while all runs together stay within what one DES run may "
    "simulate (400M requests), else fluid; a service graph: the DES].",
)
@click.option(
    "--figure",
    "figures",
    multiple=True,
    metavar="NAME",
    help="A figure to chart and judge (repeatable) [default: outage_time, onset, "
    "failed_share; also amplification, latency_p99_s, queue_max, ...].",
)
@click.option(
    "--onset-within",
    default="2h",
    show_default=True,
    callback=_duration_option,
    help="The conclusion's tolerance on the onset, around the baseline's.",
)
@click.option(
    "--duration-within",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="The conclusion's tolerance on outage time, a share of the baseline's.",
)
@click.option(
    "--morris",
    type=click.IntRange(min=2),
    default=None,
    metavar="R",
    help="Global screening instead: R Morris trajectories over every range at once "
    "(its cost is printed before it runs).",
)
@_executor_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder [default: reports/<name>/sensitivity/].",
)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--force", is_flag=True, help="Run levels estimated above 400M simulated requests.")
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the runs that finished in the folder's "
    "results.csv (same scenario and seeds) and run only the rest.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no verdicts on stdout.")
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
def sensitivity_command(
    file,
    vary,
    reps,
    engine,
    figures,
    onset_within,
    duration_within,
    morris,
    workers,
    dask_address,
    out_dir,
    assignments,
    force,
    resume,
    quiet,
    debug,
) -> None:
    """Run each assumption of FILE's [[sensitivity]] table (and --vary) at its low and high
    value against the baseline; write sensitivity.csv, tornado.png, sensitivity.md/.html and
    print a verdict per key."""
    with _guard(debug):
        from sim.experiments.morris import morris_screening
        from sim.experiments.sensitivity import DEFAULT_FIGURES, sensitivity
        from sim.model.scenario import load_scenario
        from sim.report.sensitivity_page import verdict_lines

        overrides = _overrides(assignments)
        name = load_scenario(file, overrides=overrides).scenario.name
        out = Path(out_dir) if out_dir else Path("reports") / name / "sensitivity"
        _writable(out)
        _lock(out, f"sensitivity {file}")
        progress = False if quiet else None

        def announce(line: str) -> None:
            click.echo(f"outage-sim: {line}", err=True)

        common = dict(
            reps=reps,
            workers=workers,
            dask_address=dask_address,
            out_dir=out,
            progress=progress,
            engine=engine,
            overrides=overrides,
            force=force,
            resume=resume,
            announce=announce,
        )
        if morris is not None:
            lines = morris_screening(
                file, vary, morris, figures=figures or DEFAULT_FIGURES, **common
            )
        else:
            analysis = sensitivity(
                file,
                vary,
                figures=figures or DEFAULT_FIGURES,
                onset_within_s=onset_within,
                duration_within=duration_within,
                **common,
            )
            lines = [f"conclusion: {analysis.conclusion}", *verdict_lines(analysis)]
        if not quiet:
            click.echo("\n".join(lines))
            click.echo(f"results in {out}/")


@cli.command("report")
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
def report_command(run_dir, debug) -> None:
    """Redraw the charts, report.html and report.md of the run in DIR from its summary.json
    and timeseries.csv, without simulating again."""
    with _guard(debug):
        from sim.report.writer import render_report

        written = render_report(run_dir)
        click.echo(f"{run_dir}/: {', '.join(Path(p).name for p in written)}")


@cli.command("compare")
@click.argument("dir_a", metavar="DIR_A", type=click.Path(file_okay=False))
@click.argument("dir_b", metavar="DIR_B", type=click.Path(file_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder [default: reports/compare-<A>-vs-<B>/].",
)
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
def compare_command(dir_a, dir_b, out_dir, debug) -> None:
    """Compare two runs (before and after a mitigation, two capacities): overlaid charts and
    a table of differences in compare.html and compare.md."""
    with _guard(debug):
        from sim.report.writer import write_comparison

        a, b = Path(dir_a), Path(dir_b)
        name = f"compare-{a.resolve().name}-vs-{b.resolve().name}"
        out = Path(out_dir) if out_dir else Path("reports") / name
        written = write_comparison(a, b, out)
        click.echo(f"{out}/: {', '.join(Path(p).name for p in written)}")


@cli.command("tune")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Port on 127.0.0.1 [default: a free one].",
)
@click.option("--no-browser", is_flag=True, help="Print the URL only; do not open a browser.")
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
def tune_command(file, port, no_browser, debug) -> None:
    """Serve a page on 127.0.0.1 that re-runs FILE as you change its parameters, with
    interactive charts and a JSON API (POST /api/run); Ctrl-C stops it."""
    _terminate_as_interrupt()
    with _guard(debug):
        from sim.web.serve import serve

        serve(file, port=port, open_browser=not no_browser, say=click.echo)


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(standalone_mode=True)
    except ScenarioError as error:  # pragma: no cover - raised outside a command
        click.echo(f"outage-sim: error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

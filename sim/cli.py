"""The `outage-sim` command: the only place that turns errors into exit codes.

Exit status: 0 ran; 2 bad scenario or arguments (one message, no traceback); 1 anything else
(traceback only with --debug); 130 interrupted, after writing what was simulated so far.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from sim import __version__
from sim.errors import OutageSimError, ScenarioError

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
    from sim.scenario import parse_override

    return dict(parse_override(a) for a in assignments)


def _load(
    file: str, assignments: tuple[str, ...], seed: int | None = None, engine: str | None = None
):
    from sim.scenario import load_scenario

    overrides = _overrides(assignments)
    if seed is not None:
        overrides["scenario.seed"] = seed
    if engine is not None:
        overrides["scenario.engine"] = engine
    return load_scenario(file, overrides=overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="outage-sim")
def cli() -> None:
    """Simulate a service under a traffic surge, see the outage before it happens, and find
    the capacity or mitigation that prevents it."""


SET_HELP = "Override a scenario key, e.g. --set service.servers=12 (repeatable; TOML value)."


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder [default: reports/<name>/].",
)
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (overrides scenario.seed).")
@click.option(
    "--engine", type=click.Choice(["des", "fluid"]), help="Engine (overrides scenario.engine)."
)
@click.option(
    "--force", is_flag=True, help="Run even when the estimate exceeds 50M simulated requests."
)
@click.option("--no-charts", is_flag=True, help="Write summary.json and timeseries.csv only.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary on stdout.")
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
def run(file, out_dir, assignments, seed, engine, force, no_charts, quiet, debug) -> None:
    """Simulate FILE and write its report (summary.json, timeseries.csv, charts)."""
    with _guard(debug):
        from sim.report import write_report
        from sim.run import check_size, simulate

        scenario = _load(file, assignments, seed, engine)
        check_size(scenario, force=force)
        out = Path(out_dir) if out_dir else Path("reports") / scenario.scenario.name
        result = simulate(scenario, progress=_progress_bar(quiet), force=True)
        write_report(result, out, charts=not no_charts)
        summary = result.summary
        if not quiet:
            click.echo(_headline(summary, out))
        if summary.get("interrupted"):
            click.echo("outage-sim: interrupted; wrote what was simulated so far", err=True)
            sys.exit(EXIT_INTERRUPTED)


def _progress_bar(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", delay=2.0, file=sys.stderr, leave=False, desc="simulating")

    def update(fraction: float) -> None:
        bar.n = round(fraction * 100)
        bar.refresh()
        if fraction >= 1:
            bar.close()

    return update


def _headline(summary: dict, out: Path) -> str:
    from sim.units import format_duration

    requests = summary["requests"]
    lines = [
        f"{summary['scenario']}: {requests['fresh']:,} fresh requests, "
        f"{requests['succeeded']:,} succeeded, amplification {summary['amplification']:.2f}"
    ]
    outages = summary["outages"]
    if outages:
        first = outages[0]
        when = first["start"] or format_duration(first["start_s"])
        lines.append(
            f"{len(outages)} outage(s), {format_duration(summary['outage_total_s'])} "
            f"in all; first at {when}, lasting {format_duration(first['duration_s'])}"
        )
        if summary.get("metastable"):
            lines.append(f"metastable: {summary['metastable_reason']}")
    else:
        lines.append("no outage")
    lines.append(f"simulated in {summary['wall_time_s']:.1f} s; report in {out}/")
    return "\n".join(lines)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--debug", is_flag=True, help="Show the traceback of unexpected errors.")
def check(file, assignments, debug) -> None:
    """Validate FILE without running it; print what a run would simulate."""
    with _guard(debug):
        from sim.run import estimate_requests
        from sim.workload import Demand

        scenario = _load(file, assignments)
        demand = Demand(scenario)
        estimate = estimate_requests(scenario, demand)
        click.echo(
            f"{file}: ok ({scenario.scenario.name}, about {estimate:,.0f} simulated requests "
            f"with the {scenario.scenario.engine} engine)"
        )


@cli.command()
def schema() -> None:
    """Print the JSON Schema of scenario files."""
    from sim.scenario import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(standalone_mode=True)
    except ScenarioError as error:  # pragma: no cover - raised outside a command
        click.echo(f"outage-sim: error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""The workbench's web app: the page, its static files and the JSON API beneath it.

Routes (Starlette):
  GET  /                  the page (static HTML; scenario text is set by the script as text)
  GET  /static/NAME       app.js, app.css and Plotly's bundled plotly.min.js (no CDN)
  GET  /api/scenario      the scenario: title, description, start, controls
  POST /api/run           {"overrides": {KEY: VALUE}, "engine": "auto"|"fluid"|"des"}
                          -> 200 the summary, headline and per-bin series; 400 the scenario
                          check's one-line message; 409 abandoned for a newer run
  GET  /api/progress      the run in progress and the share simulated
  POST /api/save          {"overrides": ...} -> the tuned TOML text and its `run` command

The scenario file is the one named on the command line; nothing a request holds names a file.
Requests are accepted only for a loopback host name (a page elsewhere cannot reach the app
through DNS rebinding) and only as JSON (a cross-site form cannot post one without asking).
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.errors import OutageSimError, ScenarioError
from sim.model.scenario import load_scenario
from sim.web import job as web_job
from sim.web.controls import controls
from sim.web.runner import Job, Runner
from sim.web.save import command_line, tuned_text

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
MAX_BODY_BYTES = 64 * 1024
CACHED_RUNS = 12
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


class Workbench:
    """The state behind the routes: the scenario file, the runner and recent answers."""

    def __init__(self, file: str | Path, runner: Runner | None = None) -> None:
        self.file = Path(file)
        self.scenario = load_scenario(self.file)  # refused here (exit 2) before serving
        self.runner = runner or Runner()
        self.cache: OrderedDict[str, dict] = OrderedDict()
        self._plotly: bytes | None = None

    def plotly_js(self) -> bytes:
        if self._plotly is None:
            from plotly.offline import get_plotlyjs

            self._plotly = get_plotlyjs().encode("utf-8")
        return self._plotly

    def engine_flag(self, engine: str | None) -> str | None:
        """The --engine a command line needs to run `engine` (None: the file's own)."""
        return (
            engine
            if engine in ("des", "fluid") and engine != self.scenario.scenario.engine
            else None
        )

    def describe(self) -> dict[str, Any]:
        meta = self.scenario.scenario
        return {
            "file": str(self.file),
            "name": meta.name,
            "title": meta.title or meta.name,
            "description": meta.description,
            "start": meta.start.isoformat() if meta.start else None,
            "duration_s": meta.duration,
            "engine": meta.engine,
            "scale": meta.scale,
            "graph": self.scenario.has_graph,
            "controls": controls(self.scenario),
        }


def _error(status: int, message: str, key: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "key": key}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or ValueError with what is wrong."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ValueError("send JSON (Content-Type: application/json)")
    data = await request.body()
    if len(data) > MAX_BODY_BYTES:
        raise ValueError(f"a request is at most {MAX_BODY_BYTES:,} bytes")
    try:
        body = json.loads(data or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(body, dict):
        raise ValueError("the request is a JSON object")
    unknown = set(body) - {"overrides", "engine"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}: send overrides, engine")
    return body


def create_app(file: str | Path, runner: Runner | None = None, hosts=LOOPBACK_HOSTS) -> Starlette:
    """The app for one scenario file (ScenarioError when the file is not a valid scenario)."""
    bench = Workbench(file, runner)
    static = resources.files("sim.web") / "static"

    async def page(request: Request) -> Response:
        return Response((static / "index.html").read_bytes(), media_type="text/html")

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        headers = {"Cache-Control": "max-age=3600"}
        if name == "plotly.min.js":
            return Response(bench.plotly_js(), media_type=STATIC["app.js"], headers=headers)
        if name not in STATIC:
            return _error(404, f"no static file {name!r}")
        return Response((static / name).read_bytes(), media_type=STATIC[name])

    async def scenario(request: Request) -> Response:
        return JSONResponse(bench.describe())

    async def run(request: Request) -> Response:
        try:
            body = await _body(request)
        except ValueError as err:
            return _error(400, str(err))
        overrides = body.get("overrides") or {}
        engine = body.get("engine") or "auto"
        try:
            checked = await run_in_threadpool(web_job.prepare, bench.file, overrides, engine)
        except ScenarioError as err:
            return _error(400, str(err), err.key)
        except OutageSimError as err:
            return _error(400, str(err))
        chosen = checked.scenario.engine
        cache_key = json.dumps([chosen, overrides], sort_keys=True)
        if cache_key in bench.cache:
            bench.runner.abandon()
            bench.cache.move_to_end(cache_key)
            return JSONResponse({**bench.cache[cache_key], "cached": True})
        kind, answer = await run_in_threadpool(
            bench.runner.run, Job(str(bench.file), overrides, chosen)
        )
        if kind == "abandoned":
            return _error(409, "abandoned: a newer run replaced this one")
        if kind == "refused":
            return _error(400, answer)
        if kind == "failed":
            return _error(500, answer)
        answer["command"] = command_line(bench.file, overrides, bench.engine_flag(chosen))
        bench.cache[cache_key] = answer
        while len(bench.cache) > CACHED_RUNS:
            bench.cache.popitem(last=False)
        return JSONResponse({**answer, "cached": False})

    async def progress(request: Request) -> Response:
        return JSONResponse(bench.runner.progress())

    async def save(request: Request) -> Response:
        try:
            body = await _body(request)
            overrides = body.get("overrides") or {}
            text = await run_in_threadpool(tuned_text, bench.file, overrides)
        except ValueError as err:
            return _error(400, str(err))
        except ScenarioError as err:
            return _error(400, str(err), err.key)
        except OutageSimError as err:
            return _error(400, str(err))
        engine = body.get("engine")
        filename = f"{bench.scenario.scenario.name}-tuned.toml"
        return JSONResponse(
            {
                "filename": filename,
                "toml": text,
                "command": command_line(bench.file, overrides, bench.engine_flag(engine)),
                "saved_command": command_line(filename, {}, bench.engine_flag(engine)),
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        bench.runner.start()
        yield
        bench.runner.close()

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", page),
        Route("/favicon.ico", no_icon),
        Route("/static/{name}", static_file),
        Route("/api/scenario", scenario),
        Route("/api/run", run, methods=["POST"]),
        Route("/api/progress", progress),
        Route("/api/save", save, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))],
        lifespan=lifespan,
    )
    app.state.workbench = bench
    return app

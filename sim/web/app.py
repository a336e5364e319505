"""The workbench's web app: the page, its static files and the JSON API beneath it.

Routes (Starlette):
  GET  /                  the page (static HTML; scenario text is set by the script as text)
  GET  /static/NAME       app.js, app.css and Plotly's bundled plotly.min.js (no CDN)
  GET  /api/scenario      the scenario: title, description, start, controls
  POST /api/run           {"overrides": {KEY: VALUE}, "engine": "auto"|"fluid"|"des"}
                          -> 200 the summary, headline and per-bin series; 400 the scenario
                          check's one-line message; 409 abandoned for a newer run; 429 when
                          MAX_WAITING runs are already waiting (Retry-After: 1)
  GET  /api/progress      the run in progress and the share simulated
  POST /api/save          {"overrides": ...} -> the tuned TOML text and its `run` command

The scenario file is the one named on the command line; nothing a request holds names a file.
A body over MAX_BODY_BYTES is refused with 413 before it is read whole; one that is not a
JSON object of the documented fields and types (or nested deeper than JSON_DEPTH) with 400.
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
JSON_DEPTH = 32  # no scenario key nests deeper
MAX_WAITING = 4  # runs accepted at once (one runs, newer ones replace it); beyond: 429
ENGINES = ("auto", "fluid", "des")
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
        self.waiting = 0  # /api/run requests accepted and not yet answered
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


def _error(status: int, message: str, key: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse({"error": message, "key": key}, status_code=status, headers=headers)


class TooLarge(ValueError):
    """A body over MAX_BODY_BYTES (HTTP 413)."""


def _depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (iteratively: no recursion limit to hit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth > JSON_DEPTH:
            break
        if isinstance(item, dict):
            todo.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            todo.extend((v, depth + 1) for v in item)
    return deepest


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or ValueError (TooLarge) with what is wrong."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ValueError("send JSON (Content-Type: application/json)")
    limit = f"a request is at most {MAX_BODY_BYTES:,} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TooLarge(limit)
        chunks.append(chunk)
    data = b"".join(chunks)
    try:
        body = json.loads(data or b"{}")
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {JSON_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(body, dict):
        raise ValueError("the request is a JSON object")
    if _depth(body) > JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {JSON_DEPTH} levels")
    unknown = set(body) - {"overrides", "engine"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}: send overrides, engine")
    overrides = body.get("overrides")
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError("overrides is an object of KEY: VALUE (the keys of --set)")
    engine = body.get("engine")
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"engine is one of {', '.join(ENGINES)}")
    return body


def _refusal(err: ValueError) -> JSONResponse:
    return _error(413 if isinstance(err, TooLarge) else 400, str(err))


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
            return _refusal(err)
        if bench.waiting >= MAX_WAITING:
            message = f"busy: {bench.waiting} runs already asked for; try again in a moment"
            return _error(429, message, headers={"Retry-After": "1"})
        bench.waiting += 1
        try:
            return await _run(body)
        finally:
            bench.waiting -= 1

    async def _run(body: dict[str, Any]) -> Response:
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
            return _refusal(err)
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

    async def crashed(request: Request, err: Exception) -> Response:
        # A bug, not the caller's fault: still a JSON answer (the server logs the traceback).
        return _error(500, f"internal error: {type(err).__name__}: {err}")

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
        exception_handlers={Exception: crashed},
    )
    app.state.workbench = bench
    return app

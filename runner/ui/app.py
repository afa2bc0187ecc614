"""The dashboard's web application (Starlette): pages, live fragments, a JSON API, actions.

| route                              | what                                                          |
|------------------------------------|---------------------------------------------------------------|
| ``GET /``                          | overview: every job, totals, watchers; ``?state=&backend=``   |
| ``GET /fragment/overview``         | the overview's live part (htmx polls it every ``interval``)   |
| ``GET /jobs/{id}``                 | a job: timeline, attempts, log tail, redacted spec, actions   |
| ``GET /fragment/jobs/{id}``        | the job page's live part                                      |
| ``GET /fragment/jobs/{id}/logs``   | the tail of the newest attempt's log                          |
| ``POST /jobs/{id}/{action}``       | ``cancel``, ``halt``, ``resume`` (runner.service), CSRF token |
| ``GET /api/overview``, ``/api/jobs/{id}`` | the same data as JSON                                  |
| ``GET /healthz``                   | ``{"ok": true}``; no ledger read                              |

Every page and fragment reads the ledger once (one SQL statement); the log tail reads none (it
uses the attempts the job's page read last). Pages are rendered on the server (Jinja2); the
browser only swaps fragments in (htmx) and draws the timeline (Chart.js), both shipped in
``static/vendor`` from npm.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from runner.cost.accounting import format_money
from runner.errors import RunnerError
from runner.summary import format_duration
from runner.ui.model import Dashboard, scrub_text
from runner.ui.security import Guard, same

HERE = Path(__file__).resolve().parent
ACTIONS = ("cancel", "halt", "resume")


def create_app(dashboard: Dashboard, *, token: str | None, csrf: str, port: int, loopback: bool,
               interval: float = 2.0) -> Starlette:
    """The application over one :class:`Dashboard`; ``app.state.stats`` counts what was served."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters.update(money=format_money, dur=format_duration, pct=_pct, num=_num, when=_when, since=_since)
    env.globals.update(interval_ms=int(interval * 1000), csrf=csrf, actions=available_actions,
                       all_actions=lambda: available_actions(None))
    stats: Counter[str] = Counter()
    flashes: dict[str, dict[str, Any]] = {}  # the answer to an action, shown once on the page it redirects to

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def filters(request: Request) -> tuple[str | None, str | None]:
        q = request.query_params
        return q.get("state") or None, q.get("backend") or None

    def overview_page(request: Request) -> Response:
        stats["overview"] += 1
        return render(request, "overview.html", {"o": dashboard.overview(*filters(request))})

    def overview_fragment(request: Request) -> Response:
        stats["overview_update"] += 1
        return render(request, "_overview_live.html", {"o": dashboard.overview(*filters(request))})

    def job_page(request: Request) -> Response:
        stats["job"] += 1
        page = dashboard.job(request.path_params["job_id"])
        if page is None:
            return render(request, "missing.html", {"job_id": request.path_params["job_id"]}, 404)
        flash = flashes.pop(request.query_params.get("flash") or "", None)
        return render(request, "job.html", {"p": page, "flash": flash})

    def job_fragment(request: Request) -> Response:
        stats["job_update"] += 1
        page = dashboard.job(request.path_params["job_id"])
        if page is None:
            return PlainTextResponse("no such job\n", status_code=404)
        return render(request, "_job_live.html", {"p": page})

    def logs_fragment(request: Request) -> Response:
        stats["logs_update"] += 1
        return render(request, "_logs.html", {"log": dashboard.logs(request.path_params["job_id"])})

    def api_overview(request: Request) -> Response:
        stats["api"] += 1
        return JSONResponse(_jsonable(dashboard.overview(*filters(request))))

    def api_job(request: Request) -> Response:
        stats["api"] += 1
        page = dashboard.job(request.path_params["job_id"])
        if page is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return JSONResponse(_jsonable({**page, "spec": json.loads(page["spec"])}))

    async def action(request: Request) -> Response:
        job_id, name = request.path_params["job_id"], request.path_params["action"]
        form = await request.form()
        supplied = form.get("csrf") or request.headers.get("x-csrf-token")
        if not same(supplied if isinstance(supplied, str) else None, csrf):
            return PlainTextResponse("refused: this action needs the page's CSRF token; reload the page\n",
                                     status_code=403)
        if name not in ACTIONS:
            return PlainTextResponse(f"unknown action {name!r}\n", status_code=404)
        stats[f"action_{name}"] += 1
        try:
            message = await run_in_threadpool(run_action, dashboard.view.path, name, job_id)
        except RunnerError as exc:
            page = await run_in_threadpool(dashboard.job, job_id)
            if page is None:
                return PlainTextResponse(f"{scrub_text(str(exc))}\n", status_code=404)
            return render(request, "job.html", {"p": page, "flash": {"ok": False, "text": scrub_text(str(exc))}}, 409)
        key = secrets.token_urlsafe(8)
        flashes[key] = {"ok": True, "text": scrub_text(message), "action": name}
        while len(flashes) > 100:  # answers nobody came back for
            flashes.pop(next(iter(flashes)))
        return RedirectResponse(f"/jobs/{quote(job_id)}?flash={key}", status_code=303)

    def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        Route("/", overview_page), Route("/fragment/overview", overview_fragment),
        Route("/jobs/{job_id}", job_page), Route("/fragment/jobs/{job_id}", job_fragment),
        Route("/fragment/jobs/{job_id}/logs", logs_fragment),
        Route("/jobs/{job_id}/{action}", action, methods=["POST"]),
        Route("/api/overview", api_overview), Route("/api/jobs/{job_id}", api_job),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    guard_options = {"token": token, "csrf": csrf, "port": port, "loopback": loopback}
    app = Starlette(routes=routes, middleware=[Middleware(Guard, **guard_options)])
    app.state.stats = stats
    app.state.dashboard = dashboard
    app.state.csrf = csrf
    return app


def available_actions(state: str | None) -> list[str]:
    """The actions :mod:`runner.service` offers that apply to a job in ``state`` (None: all it offers);
    cancel again while CANCELLING retries stopping the attempts."""
    try:
        from runner import service
    except ImportError:
        return []
    wanted = {"cancel": state not in ("SUCCEEDED", "FAILED", "CANCELLED"),
              "halt": state in (None, "QUEUED", "RUNNING"), "resume": state in (None, "PAUSED")}
    return [name for name in ACTIONS if wanted[name] and callable(getattr(service, name, None))]


def run_action(ledger_path: Path, name: str, job_id: str) -> str:
    """Run one of :mod:`runner.service`'s actions on a writable ledger (the only write the dashboard does);
    return its one line for people."""
    from runner.ledger import Ledger

    try:
        from runner import service
    except ImportError:
        raise RunnerError(f"runner {name} is not available in this version of spot-runner") from None
    fn = getattr(service, name, None)
    if not callable(fn):
        raise RunnerError(f"runner {name} is not available in this version of spot-runner")
    with Ledger(ledger_path) as ledger:
        outcome = fn(ledger, job_id)
    message = str(getattr(outcome, "message", "") or f"{name}: done")
    if name == "resume" and getattr(outcome, "changed", False):
        # as `runner resume --detach`: a background watcher runs it (a watcher service, if any, shares it by lease)
        log_path = service.spawn_watcher(job_id, 2.0)
        message += f"; watching in the background (log: {log_path})"
    return message


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _when(t: float | None) -> str:
    return "-" if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _since(t: float | None) -> str:
    return "-" if t is None else f"{t:.1f}"

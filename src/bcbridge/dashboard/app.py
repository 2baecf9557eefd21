"""The dashboard's pages: Flows (Run now, live progress), Runs (history, chart), Tasks (search,
one task, Retry and Skip). Everything is read through `bcbridge.store.Store` and run through
`FlowRunner` (by way of `FlowService`), as the CLI does; secrets are masked in all output."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
import orjson
from starlette.applications import Starlette
from starlette.datastructures import FormData, ImmutableMultiDict
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bcbridge import _redact
from bcbridge.dashboard.security import (
    COOKIE,
    CSRF_FIELD,
    Session,
    SessionMiddleware,
    Sessions,
    csrf_checked,
    set_session_cookie,
)
from bcbridge.dashboard.service import FlowService
from bcbridge.flows import RunResult
from bcbridge.reports import flow_summary, task_failure
from bcbridge.store import Attempt, Task, TaskSearch, TaskStatus

HERE = Path(__file__).parent
PAGE_SIZE = 50
WRONG_PASSWORD_DELAY = 1.0  # seconds
CHART_RUNS = 200  # the latest runs the chart draws
NEED_A_PERSON = (TaskStatus.FAILED, TaskStatus.UNKNOWN)  # what "all matching" retries or skips

templates = Jinja2Templates(directory=HERE / "templates")


def create_app(service: FlowService, sessions: Sessions) -> Starlette:
    """The dashboard of `service`'s project, signed in through `sessions`."""
    from bcbridge.dashboard.config_pages import config_routes  # it uses this module's helpers

    pages = Pages(service, sessions)
    routes = [
        Route("/", pages.home),
        Route("/login", pages.login_page, methods=["GET"]),
        Route("/login", csrf_checked(pages.login), methods=["POST"]),
        Route("/logout", csrf_checked(pages.logout), methods=["POST"]),
        Route("/flows", pages.flows),
        Route("/flows/{name}/run", csrf_checked(pages.run_now), methods=["POST"]),
        Route("/flows/{name}/progress", pages.progress),
        Route("/runs", pages.runs),
        Route("/runs/chart.json", pages.chart),
        Route("/tasks", pages.tasks),
        Route("/tasks/retry", csrf_checked(pages.retry_matching), methods=["POST"]),
        Route("/tasks/skip", csrf_checked(pages.skip_matching), methods=["POST"]),
        Route("/tasks/{task_id:int}", pages.task),
        Route("/tasks/{task_id:int}/retry", csrf_checked(pages.retry_one), methods=["POST"]),
        Route("/tasks/{task_id:int}/skip", csrf_checked(pages.skip_one), methods=["POST"]),
        Route("/workers", pages.workers),
        *config_routes(service),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, sessions=sessions)])


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    session: Session | None = request.state.session
    flashes = list(session.flashes) if session else []
    if session:
        session.flashes.clear()
    context.update(csrf=session.csrf if session else "", flashes=flashes, path=request.url.path)
    return templates.TemplateResponse(request, template, context)


def _back(form: FormData, default: str) -> RedirectResponse:
    """Back to the page the form came from (a path of this site only)."""
    target = form.get("next")
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        target = default
    return RedirectResponse(target, status_code=303)


def _flash(request: Request, message: str) -> None:
    session: Session | None = request.state.session
    if session is not None:
        session.flashes.append(_redact.text(message))


def _utc(moment: datetime | None) -> datetime | None:
    """The store writes UTC; SQLite gives it back without its zone."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def _duration(run: dict[str, Any]) -> str:
    started, ended = _utc(run["started_at"]), _utc(run.get("ended_at"))
    if started is None or ended is None:
        return "-"
    seconds = (ended - started).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def _day(text: str | None, *, end: bool = False) -> datetime | None:
    """A YYYY-MM-DD date as the UTC start of that day (of the next day, for an end)."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return datetime.combine(day + timedelta(days=1 if end else 0), time(), tzinfo=UTC)


def _search(params: ImmutableMultiDict[str, Any] | FormData) -> tuple[TaskSearch, dict[str, str]]:
    """The task search of a query string or form, and its fields as given (for links)."""
    fields = {
        key: value.strip()
        for key in ("flow", "status", "key", "since", "until")
        if isinstance(value := params.get(key), str) and value.strip()
    }
    status = fields.get("status")
    if status not in {s.value for s in TaskStatus}:
        fields.pop("status", None)
    search = TaskSearch(
        flow=fields.get("flow"),
        status=fields.get("status"),
        key=fields.get("key"),
        since=_day(fields.get("since")),
        until=_day(fields.get("until"), end=True),
    )
    return search, fields


def _task_view(task: Task) -> dict[str, Any]:
    """A task as the pages show it: its error and payload masked."""
    reason, message = task_failure(task) if task.status in NEED_A_PERSON else ("", "")
    payload = orjson.dumps(task.payload, option=orjson.OPT_INDENT_2, default=str).decode()
    return {
        "id": task.id,
        "flow": task.flow,
        "run_id": task.run_id,
        "record_key": task.record_key,
        "status": task.status,
        "attempts": task.attempts,
        "stage": task.stage,
        "result_id": task.result_id,
        "last_error": task.last_error and _redact.text(task.last_error),
        "reason": reason,
        "message": message,
        "payload": _redact.text(payload),
        "created_at": _utc(task.created_at),
        "updated_at": _utc(task.updated_at),
        "finished": task.status in (TaskStatus.DONE, TaskStatus.SKIPPED),
    }


def _attempt_view(attempt: Attempt) -> dict[str, Any]:
    """An attempt as the task page shows it: its request-log lines parsed (masked once more)."""
    lines = []
    for line in attempt.requests:
        try:
            fields = orjson.loads(_redact.text(line))
        except orjson.JSONDecodeError:
            continue
        if isinstance(fields, dict):
            lines.append(fields)
    if attempt.method or attempt.request_id:  # the task's own part of the $batch, last
        own = {"method": attempt.method, "status": attempt.http_status}
        lines.append({**own, "correlation_id": attempt.request_id, "duration_ms": None})
    seconds = (attempt.ended_at - attempt.started_at).total_seconds()
    return {
        "attempt": attempt.attempt,
        "started_at": _utc(attempt.started_at),
        "duration": f"{seconds:.2f} s",
        "outcome": attempt.outcome,
        "http_status": attempt.http_status,
        "error": _redact.text(
            ": ".join(part for part in (attempt.error_code, attempt.error_message) if part)
        ),
        "request_id": attempt.request_id,
        "requests": lines,
    }


def _results_line(results: list[RunResult]) -> str:
    parts = []
    for result in results:
        counts = ", ".join(f"{k} {v:,}" for k, v in sorted(result.counts.items()) if v)
        error = f": {result.error}" if result.error else ""
        parts.append(f"{result.flow}: {result.status} ({counts or 'nothing'}){error}")
    return "; ".join(parts) or "nothing to do"


class Pages:
    """The endpoints, on one service and its sessions."""

    def __init__(self, service: FlowService, sessions: Sessions):
        self.service = service
        self.sessions = sessions

    @property
    def store(self) -> Any:
        return self.service.store

    async def _store(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """A store call in a worker thread: the database blocks, the pages must not."""
        return await anyio.to_thread.run_sync(lambda: call(*args, **kwargs))

    # --- sign-in ----------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/flows", status_code=303)

    async def login_page(self, request: Request) -> Response:
        token = request.query_params.get("token")
        if token and self.sessions.use_login_token(token):
            return self._signed_in(request)
        session: Session | None = request.state.session
        if session is not None and session.signed_in:
            return RedirectResponse("/flows", status_code=303)
        session_id = None
        if session is None:
            session_id, session = self.sessions.new()
            request.state.session = session
        if token:
            session.flashes.append("this sign-in link was used already or is not this server's")
        response = _page(request, "login.html", has_password=self.sessions.has_password)
        if session_id:
            set_session_cookie(response, request, session_id)
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        password = form.get("password")
        if isinstance(password, str) and self.sessions.password_matches(password):
            return self._signed_in(request)
        await anyio.sleep(WRONG_PASSWORD_DELAY)  # guessing costs time
        _flash(request, "wrong password")
        return RedirectResponse("/login", status_code=303)

    def _signed_in(self, request: Request) -> Response:
        self.sessions.drop(request.cookies.get(COOKIE))  # a new id once signed in
        session_id, _ = self.sessions.new(signed_in=True)
        response = RedirectResponse("/flows", status_code=303)
        set_session_cookie(response, request, session_id)
        return response

    async def logout(self, request: Request) -> Response:
        self.sessions.drop(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # --- flows ------------------------------------------------------------------------------

    async def flows(self, request: Request) -> Response:
        project = self.service.project

        def read() -> list[dict[str, Any]]:
            flows = []
            for name, flow in project.flows.items():
                shown = flow_summary(name, flow, self.store)
                shown["running"] = self.service.running(name) is not None
                lease = None if shown["running"] else self.store.lease(name)
                alive = lease is not None and lease.expires_at > datetime.now(UTC)
                shown["elsewhere"] = lease.describe() if lease is not None and alive else None
                flows.append(shown)
            return flows

        flows = await anyio.to_thread.run_sync(read)
        return _page(request, "flows.html", flows=flows, source=project.source)

    def _flow_name(self, request: Request) -> str | None:
        name = str(request.path_params["name"])
        return name if name in self.service.project.flows else None

    async def run_now(self, request: Request) -> Response:
        name = self._flow_name(request)
        if name is None:
            return HTMLResponse("no such flow", status_code=404)
        started = self.service.start(name)
        if not request.headers.get("hx-request"):
            _flash(request, f"{name}: {'started' if started else 'already running'}")
            return RedirectResponse("/flows", status_code=303)
        return await self.progress(request)

    async def progress(self, request: Request) -> Response:
        """The flow's progress as an HTML fragment; while it runs, the fragment asks again."""
        name = self._flow_name(request)
        if name is None:
            return HTMLResponse("no such flow", status_code=404)
        running = self.service.running(name)
        finished = self.service.finished.get(name)
        return _page(
            request,
            "_progress.html",
            name=name,
            running=running,
            finished=finished,
            error=finished and finished.error and _redact.text(finished.error),
        )

    async def workers(self, request: Request) -> Response:
        """The `bcbridge worker`s of an `engine: procrastinate` project, from Procrastinate's
        tables: heartbeats and the jobs they run (as `bcbridge workers list`)."""
        engine = self.service.project.engine
        rows = []
        if engine == "procrastinate":
            from bcbridge.engine import list_workers

            rows = await self._store(list_workers, self.store)
        return _page(request, "workers.html", workers=rows, engine=engine)

    # --- runs -------------------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        flow = request.query_params.get("flow") or None
        page = _page_number(request)
        total = await self._store(self.store.count_runs, flow)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        runs = await self._store(self.store.runs, flow, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        for run in runs:
            run["duration"] = _duration(run)
            run["started_at"] = _utc(run["started_at"])
        query = urlencode({"flow": flow} if flow else {})
        return _page(
            request,
            "runs.html",
            runs=runs,
            flow=flow,
            flows=list(self.service.project.flows),
            page=page,
            pages=pages,
            total=total,
            query=query,
        )

    async def chart(self, request: Request) -> Response:
        """Records read and failures per run, oldest first, for the chart of the Runs page."""
        flow = request.query_params.get("flow") or None
        runs = await self._store(self.store.runs, flow, CHART_RUNS)
        runs.reverse()
        return JSONResponse(
            {
                "labels": [f"#{run['id']} {_utc(run['started_at']):%m-%d %H:%M}" for run in runs],
                "records": [int(run["counts"].get("read", 0)) for run in runs],
                "failures": [
                    sum(int(run["counts"].get(status, 0)) for status in NEED_A_PERSON)
                    for run in runs
                ],
            }
        )

    # --- tasks ------------------------------------------------------------------------------

    async def tasks(self, request: Request) -> Response:
        search, fields = _search(request.query_params)
        page = _page_number(request)
        total = await self._store(self.store.count_search, search)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        tasks = await self._store(
            self.store.search_tasks, search, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
        return _page(
            request,
            "tasks.html",
            tasks=[_task_view(task) for task in tasks],
            fields=fields,
            flows=list(self.service.project.flows),
            statuses=[status.value for status in TaskStatus],
            page=page,
            pages=pages,
            total=total,
            query=urlencode(fields),
            here=f"/tasks?{urlencode({**fields, 'page': page})}",
        )

    async def task(self, request: Request) -> Response:
        task = await self._store(self.store.task, int(request.path_params["task_id"]))
        if task is None:
            return HTMLResponse("no such task", status_code=404)
        attempts = await self._store(self.store.attempts, task.id)
        shown = [_attempt_view(attempt) for attempt in attempts]
        return _page(request, "task.html", task=_task_view(task), attempts=shown)

    async def _retry(self, request: Request, tasks: list[Task]) -> None:
        if not tasks:
            _flash(request, "nothing to retry")
            return
        results = await anyio.to_thread.run_sync(self.service.retry, tasks)
        _flash(request, f"retried {len(tasks):,} task(s): {_results_line(results)}")

    async def _skip(self, request: Request, tasks: list[Task]) -> None:
        if tasks:
            await self._store(self.store.skip, tasks)
        _flash(request, f"skipped {len(tasks):,} task(s)" if tasks else "nothing to skip")

    async def _one(self, request: Request) -> Task | None:
        return await self._store(self.store.task, int(request.path_params["task_id"])) or None

    async def retry_one(self, request: Request) -> Response:
        form = await request.form()
        task = await self._one(request)
        if task is None or task.status == TaskStatus.DONE:
            _flash(request, "only an unfinished task is retried")
        else:
            await self._retry(request, [task])
        return _back(form, f"/tasks/{request.path_params['task_id']}")

    async def skip_one(self, request: Request) -> Response:
        form = await request.form()
        task = await self._one(request)
        if task is None or task.status in (TaskStatus.DONE, TaskStatus.SKIPPED):
            _flash(request, "only an unfinished task is skipped")
        else:
            await self._skip(request, [task])
        return _back(form, f"/tasks/{request.path_params['task_id']}")

    async def _matching(self, form: FormData) -> tuple[list[Task], str]:
        """The failed and unknown tasks the form's search matches, and the search's page."""
        search, fields = _search(form)
        if search.status is not None and search.status not in NEED_A_PERSON:
            return [], f"/tasks?{urlencode(fields)}"
        statuses = [search.status] if search.status else list(NEED_A_PERSON)
        found: list[Task] = []
        for status in statuses:
            one = TaskSearch(search.flow, status, search.key, search.since, search.until)
            found += await self._store(self.store.search_tasks, one, limit=None)
        return found, f"/tasks?{urlencode(fields)}"

    async def retry_matching(self, request: Request) -> Response:
        """Retry in the background (they may be many): progress and result on Flows."""
        tasks, page = await self._matching(await request.form())
        if not tasks:
            _flash(request, "nothing to retry")
        for name, started in self.service.start_retry(tasks).items():
            count = sum(task.flow == name for task in tasks)
            _flash(
                request,
                f"{name}: retrying {count:,} task(s), see Flows for its progress"
                if started
                else f"{name}: running already; retry its tasks when it has ended",
            )
        return RedirectResponse(page, status_code=303)

    async def skip_matching(self, request: Request) -> Response:
        tasks, page = await self._matching(await request.form())
        await self._skip(request, tasks)
        return RedirectResponse(page, status_code=303)


__all__ = ["CSRF_FIELD", "create_app"]

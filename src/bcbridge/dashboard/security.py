"""Sign-in, sessions, CSRF and the security headers of the dashboard.

- Sign-in: the one-time token of the login URL `bcbridge serve` prints (it works once, then a
  session cookie carries on), or the password of `BCBRIDGE_DASHBOARD_PASSWORD`.
- Sessions live in this process's memory (one process serves one project): a random id in a
  cookie that is HttpOnly, SameSite=Strict, and Secure when the request came over TLS (directly
  or through a proxy uvicorn trusts). Signing in gives a new id (no session fixation).
- Every state-changing request carries the session's CSRF token (a form field or the
  X-CSRF-Token header htmx sends); `csrf_checked` wraps each such endpoint.
- Every answer has a Content-Security-Policy that allows scripts and styles from the
  dashboard's own files only: no inline script, no eval.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

PASSWORD_VARIABLE = "BCBRIDGE_DASHBOARD_PASSWORD"
COOKIE = "bcbridge_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SESSION_IDLE = 12 * 3600.0  # seconds a session lives unused
MAX_SESSIONS = 1000  # then the least recently used one goes
OPEN_PATHS = ("/login", "/static/")  # the only paths answered without a session
STATIC_CACHE = "private, max-age=3600"  # the vendored files carry their version in their name

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # a login URL's token never leaves in a Referer
    "Cache-Control": "no-store",  # pages show live data, and the CSRF token
}


@dataclass
class Session:
    """One browser's session: its CSRF token, whether it signed in, and messages to show."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    signed_in: bool = False
    used_at: float = field(default_factory=time.monotonic)
    flashes: list[str] = field(default_factory=list)


class Sessions:
    """The sessions of this process, and the two ways to sign in."""

    def __init__(self, *, password: str | None, login_token: str | None):
        self._password = password or None
        self._login_token = login_token
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    @property
    def has_password(self) -> bool:
        """Whether a password can sign in."""
        return self._password is not None

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this id, if any."""
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or now - session.used_at > SESSION_IDLE:
                self._sessions.pop(session_id, None)
                return None
            session.used_at = now
            return session

    def new(self, *, signed_in: bool = False) -> tuple[str, Session]:
        """A new session and its id."""
        session_id, session = secrets.token_urlsafe(32), Session(signed_in=signed_in)
        now = time.monotonic()
        with self._lock:
            for old in [k for k, s in self._sessions.items() if now - s.used_at > SESSION_IDLE]:
                del self._sessions[old]
            if len(self._sessions) >= MAX_SESSIONS:  # the sign-in page opens one per visit
                del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].used_at)]
            self._sessions[session_id] = session
        return session_id, session

    def drop(self, session_id: str | None) -> None:
        """Forget a session (sign out)."""
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def use_login_token(self, token: str) -> bool:
        """True once for the login URL's token; it is spent by that use."""
        with self._lock:
            expected = self._login_token
            if expected is None or not secrets.compare_digest(token, expected):
                return False
            self._login_token = None
            return True

    def password_matches(self, password: str) -> bool:
        """Whether `password` is the dashboard's password."""
        if self._password is None:
            return False
        return secrets.compare_digest(password.encode(), self._password.encode())


def set_session_cookie(response: Response, request: Request, session_id: str) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure over TLS."""
    response.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


class SessionMiddleware(BaseHTTPMiddleware):
    """Finds the request's session (`request.state.session`, None without one), sends every
    page but the sign-in page and static files to sign-in, and sets the security headers."""

    def __init__(self, app: Any, sessions: Sessions):
        super().__init__(app)
        self.sessions = sessions

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        session = self.sessions.get(request.cookies.get(COOKIE))
        request.state.session = session
        is_open = request.url.path == "/login" or request.url.path.startswith(OPEN_PATHS[1])
        response: Response
        if is_open or (session is not None and session.signed_in):
            response = await call_next(request)
        elif request.method in ("GET", "HEAD"):
            response = RedirectResponse("/login", status_code=303)
        else:
            response = PlainTextResponse("sign in first", status_code=401)
        if request.url.path.startswith(OPEN_PATHS[1]) and response.status_code == 200:
            response.headers["Cache-Control"] = STATIC_CACHE  # no data in them: cacheable
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


Endpoint = Callable[[Request], Awaitable[Response]]


def csrf_checked(endpoint: Endpoint) -> Endpoint:
    """`endpoint` answered only when the request carries its session's CSRF token."""

    async def checked(request: Request) -> Response:
        session: Session | None = request.state.session
        form = await request.form()
        sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
        if (
            session is None
            or not isinstance(sent, str)
            or not secrets.compare_digest(sent.encode(), session.csrf.encode())
        ):
            return PlainTextResponse(
                "refused: the form's CSRF token is missing or stale; reload the page and try again",
                status_code=403,
            )
        return await endpoint(request)

    checked.__name__ = endpoint.__name__
    checked.__doc__ = endpoint.__doc__
    return checked

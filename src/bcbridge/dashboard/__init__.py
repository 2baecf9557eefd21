"""The web dashboard of `bcbridge serve`: Starlette, Jinja2 templates, htmx, Pico CSS and
Chart.js (vendored in static/vendor/ from their npm packages, with their licences; no build
step, no inline script). `create_app` builds the ASGI app on a `FlowService` (the project's
runs and schedule) and `Sessions` (sign-in)."""

from bcbridge.dashboard.app import create_app
from bcbridge.dashboard.security import PASSWORD_VARIABLE, Sessions
from bcbridge.dashboard.service import FlowService

__all__ = ["PASSWORD_VARIABLE", "FlowService", "Sessions", "create_app"]

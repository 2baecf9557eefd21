"""The `bcbridge` command. Each group lives in its own module; none holds business logic."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="bcbridge",
    help="Business Central API v2.0 connector: pull, push, flows, and a local emulator.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)


@app.callback()
def _root() -> None:
    """Business Central API v2.0 connector: pull, push, flows, and a local emulator."""


def _register() -> None:
    """Attach the command groups. Imported lazily so `bcbridge --help` stays fast."""
    from importlib import import_module

    for module in ("emulator", "client", "data", "flows"):
        try:
            mod = import_module(f"bcbridge.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bcbridge.cli.{module}":
                raise
            continue
        mod.register(app)


def main() -> None:
    _register()
    app()

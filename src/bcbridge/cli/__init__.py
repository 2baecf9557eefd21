"""The `bcbridge` command. Each group lives in its own module; none holds business logic.

Exit codes (the mapping lives in `bcbridge.errors.exit_code`):

- 0: done;
- 1: done, but some records failed (`bcbridge tasks list --status failed` shows them);
- 2: usage or configuration: bad flags, project file, settings or input file;
- 3: Business Central, sign-in or network (AuthError, TransportError, BCAPIError);
- 4: busy: the flow is already running elsewhere;
- 70: internal error, a bug: rerun with BCBRIDGE_DEBUG=1 and report the traceback;
- 130: interrupted (Ctrl-C).

No traceback reaches a user: an error nobody expected is one line and exit code 70; the
traceback (secrets masked) is shown only with BCBRIDGE_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import typer

from bcbridge.cli._typos import SuggestingGroup

app = typer.Typer(
    name="bcbridge",
    cls=SuggestingGroup,  # "did you mean" for commands typed without their group, options
    help="Business Central API v2.0 connector: pull, push, flows, and a local emulator.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit both
    pretty_exceptions_enable=False,  # main() reports what escapes; a traceback only on request
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)
DEBUG_VARIABLE = "BCBRIDGE_DEBUG"
# bcbridge.cli.<module> for each command or group, in the order `--help` lists them
COMMAND_MODULES = (
    "init",
    "emulator",
    "client",
    "pull",
    "push",
    "flows",
    "check",
    "discover",
    "serve",
    "subscriptions",
    "worker",
)


def _print_version(value: bool) -> None:
    if value:
        from bcbridge import __version__

        typer.echo(f"bcbridge {__version__}")
        raise typer.Exit()


@app.callback(
    epilog="Tokens are cached in $XDG_CACHE_HOME/bcbridge (else ~/.cache/bcbridge, mode 0600), "
    "so a session of commands signs in once; `bcbridge client logout` forgets them."
)
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Print the request log to stderr: one JSON line per HTTP attempt (method, URL, "
        "status, time, attempt number) and per token; secrets and tokens masked.",
    ),
    log_file: Path | None = typer.Option(
        None,
        "--log-file",
        dir_okay=False,
        help="Append the request log (the lines -v prints) to this file.",
    ),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        expose_value=False,
        callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:
    """Business Central API v2.0 connector: pull, push, flows, and a local emulator."""
    _session(ctx, verbose, log_file)


def _session(ctx: typer.Context, verbose: bool, log_file: Path | None) -> None:
    """What every command shares: the token cache file, and the request log when asked; both
    undone when the command ends (the library default is neither)."""
    from bcbridge import _logging, auth

    if ctx.resilient_parsing:
        return  # shell completion: no command runs
    auth.keep_tokens_in(auth.user_cache_folder())
    ctx.call_on_close(lambda: auth.keep_tokens_in(None))
    if verbose:
        ctx.call_on_close(_logging.log_every_request(None))
    if log_file is not None:
        try:
            ctx.call_on_close(_logging.log_every_request(log_file))
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise typer.BadParameter(
                f"cannot write {log_file}: {reason}", param_hint="--log-file"
            ) from None


def _register() -> None:
    """Attach the command groups (once). Imported lazily so `bcbridge --help` stays fast."""
    from importlib import import_module

    if app.registered_commands or app.registered_groups:
        return  # main() called again in the same process (tests)
    for module in COMMAND_MODULES:
        try:
            mod = import_module(f"bcbridge.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bcbridge.cli.{module}":
                raise
            continue
        mod.register(app)


def main(args: Sequence[str] | None = None) -> None:
    """Run the command line (`args` default to sys.argv); always ends with SystemExit."""
    try:
        _register()
        app(args=args)  # standalone: usage errors exit 2, typer.Exit with its code
    except SystemExit:
        raise
    except BaseException as exc:
        raise SystemExit(report(exc)) from None
    raise SystemExit(0)


def report(error: BaseException) -> int:
    """Print an error that escaped a command as one line; return its exit code."""
    from bcbridge import _redact
    from bcbridge.errors import EXIT_INTERNAL, exit_code

    code = exit_code(error)
    debug = os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    if debug:
        lines = traceback.format_exception(error)
        sys.stderr.write(_redact.text("".join(lines)))
    if code == EXIT_INTERNAL:
        first = str(error).splitlines()[0] if str(error) else ""
        hint = "" if debug else f" (rerun with {DEBUG_VARIABLE}=1 for the traceback)"
        sys.stderr.write(
            f"error: {type(error).__name__}: {_redact.text(first)} - this is a bug, "
            f"please report it{hint}\n"
        )
    elif isinstance(error, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
    else:
        sys.stderr.write(f"error: {_redact.text(str(error))}\n")
    return code

"""`bcbridge emulator start|status|stop|env`: a local Business Central one command away.

`start` runs in the foreground (Ctrl-C stops it) or, with `--detach`, in the background. Either
way the running emulator is recorded in the user's state folder ($XDG_STATE_HOME/bcbridge, else
~/.local/state/bcbridge; mode 0600, since the record holds the emulator's client secret), so
`status`, `stop` and `env` find it from any shell: `eval "$(bcbridge emulator env)"` sets the
BC_* variables every command reads. `start --json` prints one JSON line for programs (the
contract of docs/CONTRACTS.md). A record whose process is gone is reported and removed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from bcbridge._files import write_atomic
from bcbridge.emulator.config import EmulatorConfig, default_state_dir, describe, flag_name
from bcbridge.emulator.process import EmulatorInfo
from bcbridge.errors import EXIT_BC, EXIT_USAGE, Busy, ConfigError

stderr = Console(stderr=True)
STATE_FILE = "emulator.json"
LOG_FILE = "emulator.log"
STOP_WAIT_S = 10.0
# Seeding a million rows takes minutes (emulator/config.py bounds `scale` there).
DETACH_TIMEOUT_S = 900.0


class _EmulatorGroup(TyperGroup):
    """`bcbridge emulator --port 0` (the form before `start` existed) gets a pointer to `start`
    instead of click's bare "No such option"."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0].split("=", 1)[0] in self._start_options(ctx):
            typer.echo(
                f"error: 'bcbridge emulator {args[0]}': the emulator starts with "
                f"'bcbridge emulator start {shlex.join(args)}' (same flags; --detach runs it in "
                "the background)",
                err=True,
            )
            raise typer.Exit(EXIT_USAGE)
        return super().parse_args(ctx, args)

    def _start_options(self, ctx: Any) -> set[str]:
        """The flags of `start` (other options get click's "no such option, did you mean")."""
        start = self.commands.get("start")
        names = {name for param in start.params for name in param.opts} if start else set()
        return names - set(ctx.help_option_names)


emulator_group = typer.Typer(
    cls=_EmulatorGroup,
    no_args_is_help=True,
    help="A local Business Central API v2.0 for tests, demos and CI: start, status, stop, env.",
)


# --- the record of the running emulator ------------------------------------------------------


def user_state_dir() -> Path:
    """bcbridge's folder in the user's state folder (XDG Base Directory specification)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "bcbridge"


def state_file() -> Path:
    return user_state_dir() / STATE_FILE


@dataclass(frozen=True)
class Record:
    """A running emulator as `start` recorded it."""

    pid: int
    info: EmulatorInfo
    started_at: str
    log_file: str | None = None

    def save(self) -> None:
        """Write the record readable by the user only: it holds the emulator's client secret."""
        data = {**asdict(self), "info": asdict(self.info)}
        write_atomic(state_file(), json.dumps(data, indent=2), private=True)

    @classmethod
    def load(cls) -> Record | None:
        """The record, or None when there is none; an unreadable one is reported and removed."""
        path = state_file()
        try:
            text = path.read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ConfigError(
                f"XDG_STATE_HOME: cannot read the emulator's record {path}: {exc}"
            ) from None
        try:
            data = json.loads(text)
            known = {f.name for f in fields(EmulatorInfo)}
            info = EmulatorInfo(**{k: v for k, v in data["info"].items() if k in known})
            return cls(int(data["pid"]), info, str(data["started_at"]), data.get("log_file"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            stderr.print(f"note: the emulator record {path} is unreadable ({exc}); removed it")
            path.unlink(missing_ok=True)
            return None

    def remove(self) -> None:
        """Remove the record if it is still this one (another start may have replaced it)."""
        current = Record.load()
        if current is not None and current.pid == self.pid:
            state_file().unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """True while `pid` is a live (not zombie) process that looks like a bcbridge emulator."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: a pid reused since the record was written
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no /proc (macOS): the signal test is all we have
    with suppress(OSError):
        if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        command = proc.joinpath("cmdline").read_bytes().split(b"\0")
        return b"emulator" in command and any(b"bcbridge" in part for part in command)
    return False


def _answers(info: EmulatorInfo) -> bool:
    import ssl

    import httpx

    try:
        context = ssl.create_default_context(cafile=info.ca_bundle)
        response = httpx.get(f"{info.base_url}/_emulator/info", verify=context, timeout=5)
    except (OSError, httpx.HTTPError):
        return False
    return response.status_code == 200


def running_record() -> Record | None:
    """The recorded emulator if its process still runs; a stale record is reported, removed."""
    record = Record.load()
    if record is None or _alive(record.pid):
        return record
    stderr.print(
        f"note: the emulator recorded in {state_file()} (pid {record.pid}) is no longer "
        "running; removed the record"
    )
    state_file().unlink(missing_ok=True)
    return None


def _none_running() -> typer.Exit:
    stderr.print("no emulator running (start one with: bcbridge emulator start --detach)")
    return typer.Exit(EXIT_BC)


def _refuse_second() -> None:
    record = running_record()
    if record is not None:
        raise _fail(
            Busy(
                f"an emulator is already running at {record.info.base_url} (pid {record.pid}); "
                "stop it with 'bcbridge emulator stop' first"
            )
        )


def _fail(error: Exception) -> typer.Exit:
    from bcbridge.cli._settings import fail

    return fail(error)


# --- progress while the emulator seeds -------------------------------------------------------


def seeding_text(scale: Mapping[str, int], data: Path | None = None) -> str:
    """What a starting emulator is busy with, e.g. 'seeding 100,433 records (100,000 customers)'."""
    from bcbridge.emulator.seed import COMPANY_NAMES, DEFAULT_COUNTS

    if data is not None and data.exists():
        return f"opening the emulator's data in {data}"
    first = {**DEFAULT_COUNTS, **scale}
    total = sum(first.values()) + sum(DEFAULT_COUNTS.values()) * (len(COMPANY_NAMES) - 1)
    scaled = ", ".join(f"{count:,} {name}" for name, count in scale.items())
    detail = f" ({scaled} in {COMPANY_NAMES[0]})" if scaled else ""
    companies = len(COMPANY_NAMES)
    return f"starting the emulator: seeding {total:,} records in {companies} companies{detail}"


class _SeedingDisplay:
    """A bar on stderr while the emulator seeds: what, how far, how long so far (a plain line
    when stderr is not a terminal, nothing when quiet)."""

    def __init__(self, text: str, quiet: bool) -> None:
        self.progress: Progress | None = None
        if not quiet:
            stderr.print(f"{text} ...", highlight=False, soft_wrap=True)
        if not stderr.is_terminal:
            return
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=stderr,
            transient=True,
        )
        self.task = self.progress.add_task("starting", total=None, count="")
        self.progress.start()

    def update(self, what: str, done: int, total: int) -> None:
        """Told by the seeder (in this process or through the child's progress lines)."""
        if self.progress is not None:
            self.progress.update(
                self.task,
                description=what,
                completed=done,
                total=max(total, 1),
                count=f"{done:,}/{total:,}",
            )

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def seeding(text: str, *, quiet: bool = False) -> Iterator[_SeedingDisplay]:
    """Show the emulator's seeding on stderr while the block runs (see _SeedingDisplay)."""
    display = _SeedingDisplay(text, quiet)
    try:
        yield display
    finally:
        display.stop()


# --- the commands ----------------------------------------------------------------------------


def _table(info: EmulatorInfo, extra: Mapping[str, str] | None = None) -> Table:
    table = Table(title="Business Central emulator", show_header=False)
    table.add_column("What", no_wrap=True)
    table.add_column("Value", overflow="fold")  # URLs and ids wrap whole, never cut
    for label, value in (
        ("Base URL", info.base_url),
        ("API root", info.api_root),
        ("Tenant", info.tenant_id),
        ("Environment", info.environment),
        ("Client id", info.client_id),
        ("Client secret", "(shown by: bcbridge emulator env)"),
        ("CA bundle", info.ca_bundle),
        *(extra or {}).items(),
    ):
        table.add_row(label, value)
    for company in info.companies:
        table.add_row("Company", f"{company['name']}  ({company['id']})")
    return table


def _info_of(announced: Mapping[str, Any]) -> EmulatorInfo:
    known = {f.name for f in fields(EmulatorInfo)}
    return EmulatorInfo(**{k: v for k, v in announced.items() if k in known})


@emulator_group.command()
def start(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port; 0 picks a free one."),
    seed: int = typer.Option(1, help="Seed for the deterministic demo data and credentials."),
    scale: str = typer.Option("", help="Row counts, e.g. customers=100000,items=500."),
    token_lifetime: int = typer.Option(3599, help="Access-token lifetime, 1..86400 seconds."),
    latency_ms: int = typer.Option(0, help="Added latency per API request, 0..60000 ms."),
    row_time_us: int = typer.Option(
        0, help="Added server time per row a GET returns, 0..100000 microseconds."
    ),
    rate_limit: str = typer.Option(
        "6000/300", help="REQUESTS/SECONDS per principal (>= 1 request, 0 < SECONDS <= 86400)."
    ),
    max_concurrent: int = typer.Option(5, help="Requests processed at once per principal (>= 1)."),
    max_queue: int = typer.Option(95, help="Requests waiting per principal before 429 (>= 0)."),
    data: Path | None = typer.Option(None, help="SQLite file to keep data in (default: memory)."),
    state_dir: Path = typer.Option(default_state_dir, help="Where the CA and keys are kept."),
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Run in the background; stop it with 'emulator stop'."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON line (URLs and credentials) for programs."
    ),
    record: bool = typer.Option(
        True, "--record/--no-record", hidden=True, help="Record it for status, stop and env."
    ),
    progress: bool = typer.Option(
        False, "--progress", hidden=True, help="With --json: seeding steps as JSON lines first."
    ),
) -> None:
    """Start a local Business Central API v2.0 with an Entra-style token endpoint.

    In the foreground until Ctrl-C, or in the background with --detach (it waits until the
    emulator answers). Then, in any shell: eval "$(bcbridge emulator env)".

    Example: bcbridge emulator start --detach --port 0 --scale customers=10000
    """
    options: dict[str, Any] = {
        "host": host,
        "seed": seed,
        "scale": scale,
        "token_lifetime": token_lifetime,
        "latency_ms": latency_ms,
        "row_time_us": row_time_us,
        "rate_limit": rate_limit,
        "max_concurrent": max_concurrent,
        "max_queue": max_queue,
        "data": data,
        "state_dir": state_dir,
    }
    try:
        config = EmulatorConfig.model_validate({**options, "port": port})
    except ValidationError as exc:
        typer.echo(f"error: {describe(exc, label=flag_name)}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    if record or detach:
        _refuse_second()
    text = seeding_text(config.scale, config.data)
    if detach:
        _start_detached(options, port, text, as_json)
    else:
        _start_foreground(config, text, as_json, record, progress)


def _start_detached(options: dict[str, Any], port: int, text: str, as_json: bool) -> None:
    from bcbridge.emulator.process import start_detached

    folder = user_state_dir()
    log_file = folder / LOG_FILE
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_file.write_text("")  # this run's log only
    except OSError as exc:
        raise _fail(
            ConfigError(f"XDG_STATE_HOME: cannot keep the emulator's record in {folder}: {exc}")
        ) from None
    try:
        with seeding(text, quiet=as_json) as display:
            pid, info = start_detached(
                log_file=log_file,
                port=port,
                timeout=DETACH_TIMEOUT_S,
                progress=display.update,
                **options,
            )
    except RuntimeError:
        raise _fail(ConfigError(f"the emulator did not start: {_last_line(log_file)}")) from None
    started = Record(pid, info, _now(), str(log_file))
    started.save()
    if as_json:
        typer.echo(json.dumps(_for_programs(info)))
        return
    stderr.print(_table(info, {"Process": str(pid), "Log": str(log_file)}))
    stderr.print(
        'Wire the CLI:  eval "$(bcbridge emulator env)"    Stop it:  bcbridge emulator stop',
        highlight=False,
        soft_wrap=True,
    )


def _for_programs(info: EmulatorInfo) -> dict[str, Any]:
    """The `--json` line: the emulator's facts, and under "env" the same values by the BC_*
    names every bcbridge command reads."""
    return {**asdict(info), "env": info.env()}


def _last_line(log_file: Path) -> str:
    """The emulator's own last words (its one-line error, or a traceback's last line)."""
    lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1].removeprefix("error: ") if lines else "it wrote nothing"
    return f"{last} (its log: {log_file})"


def _start_foreground(
    config: EmulatorConfig, text: str, as_json: bool, record: bool, progress: bool
) -> None:
    from bcbridge.emulator.server import announce_json, announce_progress, run

    recorded: list[Record] = []
    with seeding(text, quiet=as_json) as display:

        def announce(announced: dict[str, Any]) -> None:
            display.stop()
            info = _info_of(announced)
            if record:
                recorded.append(Record(os.getpid(), info, _now()))
                recorded[0].save()
            if as_json:
                announce_json({**announced, "env": info.env()})
                return
            stderr.print(_table(info))
            wiring = 'In another shell: eval "$(bcbridge emulator env)".  ' if record else ""
            stderr.print(f"{wiring}Press Ctrl-C to stop.", highlight=False, soft_wrap=True)

        # `emulator stop` (SIGTERM) ends it as Ctrl-C would let it: record removed, exit 0
        signal.signal(signal.SIGTERM, _stopped)
        try:
            if as_json:
                run(config, announce, announce_progress if progress else None)
            else:
                run(config, announce, display.update)
        except OSError as exc:  # the port is taken, the state folder cannot be written
            where = f"--port {config.port}: " if exc.errno in (98, 48, 10048) else ""
            raise _fail(ConfigError(f"{where}the emulator cannot start: {exc}")) from None
        finally:
            for mine in recorded:
                mine.remove()


def _stopped(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@emulator_group.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object for programs."),
) -> None:
    """Say whether the recorded emulator runs and answers, with its URLs and pid.

    Exit 0 when it answers, 3 when none runs (or it does not answer).
    Example: bcbridge emulator status --json
    """
    record = running_record()
    answers = record is not None and _answers(record.info)
    if as_json:
        shown: dict[str, Any] = {"running": answers, "state_file": str(state_file())}
        if record is not None:
            info = asdict(record.info)
            for secret in ("client_secret", "disabled_client_secret"):
                info.pop(secret)
            shown.update(pid=record.pid, started_at=record.started_at, log_file=record.log_file)
            shown.update(info)
        typer.echo(json.dumps(shown))
    if record is None:
        raise _none_running() if not as_json else typer.Exit(EXIT_BC)
    if not answers:
        stderr.print(
            f"the emulator (pid {record.pid}) runs but {record.info.base_url} does not answer"
            + (f"; its log: {record.log_file}" if record.log_file else "")
        )
        raise typer.Exit(EXIT_BC)
    if not as_json:
        extra = {"Process": str(record.pid), "Started": record.started_at}
        if record.log_file:
            extra["Log"] = record.log_file
        Console().print(_table(record.info, extra))


@emulator_group.command()
def stop() -> None:
    """Stop the recorded emulator (nothing to do when none runs).

    Example: bcbridge emulator stop
    """
    record = running_record()
    if record is None:
        stderr.print("no emulator running")
        return
    with suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while _alive(record.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(record.pid):
        with suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
    record.remove()
    stderr.print(f"stopped the emulator at {record.info.base_url} (pid {record.pid})")


@emulator_group.command()
def env() -> None:
    """Print the BC_* variables of the running emulator as shell `export` lines.

    Example: eval "$(bcbridge emulator env)" && bcbridge client grant
    """
    record = running_record()
    if record is None:
        raise _none_running()
    for name, value in record.info.env().items():
        typer.echo(f"export {name}={shlex.quote(value)}")


def register(app: typer.Typer) -> None:
    app.add_typer(emulator_group, name="emulator")

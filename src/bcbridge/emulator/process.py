"""Start and control an emulator process from Python: tests, the demo, benchmarks.

`start_emulator()` runs ``bcbridge emulator start --json --port 0`` in a child process, reads the
JSON line it announces itself with, and returns a `RunningEmulator` whose methods drive the control
endpoints (``/_emulator/*``, see docs/CONTRACTS.md). `start_detached()` starts one that outlives
its caller (``bcbridge emulator start --detach``). `msal_http_client` gives MSAL a session that
really uses the emulator's CA even where REQUESTS_CA_BUNDLE is set (bc-api.md §2.3a).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import requests

if TYPE_CHECKING:
    from bcbridge.client import BusinessCentralClient
    from bcbridge.config import ClientSettings
    from bcbridge.emulator.seed import SeedProgress
    from bcbridge.sync import Client

__all__ = [
    "EmulatorControl",
    "EmulatorInfo",
    "RunningEmulator",
    "bc_token",
    "msal_http_client",
    "start_detached",
    "start_emulator",
]


@dataclass(frozen=True)
class EmulatorInfo:
    base_url: str
    authority_url: str
    tenant_id: str
    environment: str
    api_root: str
    scope: str
    client_id: str
    client_secret: str
    disabled_client_id: str
    disabled_client_secret: str
    ca_bundle: str
    companies: list[dict[str, str]]

    @property
    def authority(self) -> str:
        return f"{self.authority_url}/{self.tenant_id}"

    def company_id(self, index: int = 0) -> str:
        return self.companies[index]["id"]

    def env(self) -> dict[str, str]:
        """The BC_* variables every bcbridge command reads."""
        return {
            "BC_BASE_URL": self.base_url,
            "BC_AUTHORITY_URL": self.authority_url,
            "BC_TENANT_ID": self.tenant_id,
            "BC_ENVIRONMENT": self.environment,
            "BC_CLIENT_ID": self.client_id,
            "BC_CLIENT_SECRET": self.client_secret,
            "BC_CA_BUNDLE": self.ca_bundle,
        }


class _VerifyingSession(requests.Session):
    def __init__(self, ca_bundle: str):
        super().__init__()
        self.trust_env = False  # REQUESTS_CA_BUNDLE must not replace our CA
        self._ca_bundle = ca_bundle

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self._ca_bundle
        return super().request(*args, **kwargs)


def msal_http_client(ca_bundle: str) -> requests.Session:
    """A requests session for MSAL's `http_client` that always verifies with `ca_bundle`."""
    return _VerifyingSession(ca_bundle)


def bc_token(
    info: EmulatorInfo, *, client_id: str | None = None, secret: str | None = None
) -> dict[str, Any]:
    """MSAL's answer (a dict) for a client-credentials token from the emulator."""
    import msal

    app = msal.ConfidentialClientApplication(
        client_id or info.client_id,
        client_credential=secret or info.client_secret,
        authority=info.authority,
        validate_authority=False,
        instance_discovery=False,
        http_client=msal_http_client(info.ca_bundle),
    )
    result: dict[str, Any] = app.acquire_token_for_client([info.scope])
    return result


class EmulatorControl(ABC):
    """An emulator's control endpoints (``/_emulator/*``) and clients for its API, whether it
    runs in a process (`RunningEmulator`) or in this one (`bcbridge.emulator.inprocess`)."""

    info: EmulatorInfo
    _control: httpx.Client  # reaches the control endpoints

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to a control endpoint; a refused body raises ConfigError with its message."""
        from bcbridge.errors import ConfigError

        response = self._control.post(path, json=body)
        if response.status_code == 400:
            raise ConfigError(response.json()["error"]["message"], source=path)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def fault(self, kind: str = "status", count: int = 1, **options: Any) -> None:
        """The next `count` API requests fail: kind is "status", "drop" or "stall"."""
        self._post("/_emulator/faults", {"kind": kind, "count": count, **options})

    def clear_faults(self) -> None:
        self._control.delete("/_emulator/faults").raise_for_status()

    def reset(self) -> None:
        self._post("/_emulator/reset", {})

    def seed(self, seed: int | None = None, scale: dict[str, int] | None = None) -> None:
        body: dict[str, Any] = {}
        if seed is not None:
            body["seed"] = seed
        if scale is not None:
            body["scale"] = scale
        self._post("/_emulator/seed", body)

    def configure(self, **options: Any) -> dict[str, Any]:
        return self._post("/_emulator/config", options)

    def stats(self) -> dict[str, Any]:
        response = self._control.get("/_emulator/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def webhooks(self) -> dict[str, Any]:
        """The webhook notifier's state: live subscriptions, pending changes, and what it
        delivered, retried and dropped (``GET /_emulator/webhooks``)."""
        response = self._control.get("/_emulator/webhooks")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def clear_webhook_log(self) -> None:
        """Forget what the notifier delivered, retried and dropped (the counts too)."""
        self._control.delete("/_emulator/webhooks").raise_for_status()

    def sent(self) -> list[dict[str, Any]]:
        """What the send actions would have e-mailed, oldest first (``GET /_emulator/sent``):
        companyId, entitySet, documentId, documentNumber, action, recipient, sentAt."""
        response = self._control.get("/_emulator/sent")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["value"]
        return result

    def clear_sent(self) -> None:
        self._control.delete("/_emulator/sent").raise_for_status()

    def post_payments(self, journal_id: str) -> int:
        """Post a customer or vendor payment journal (BC API v2.0 has no action for it);
        returns how many payments were posted."""
        posted: int = self._post("/_emulator/payments/post", {"journalId": journal_id})["posted"]
        return posted

    def register_entity(self, **spec: Any) -> None:
        self._post("/_emulator/entities", spec)

    def settings(self, **overrides: Any) -> ClientSettings:
        """Client settings for this emulator (its ``BC_*`` values); `overrides` win."""
        from bcbridge.config import ClientSettings

        return ClientSettings.from_env(self.info.env(), **overrides)

    @abstractmethod
    def request_token(
        self, *, client_id: str | None = None, secret: str | None = None
    ) -> dict[str, Any]:
        """The token endpoint's answer (a dict, as MSAL returns it) for the test app."""

    def client(self, **overrides: Any) -> BusinessCentralClient:
        """A `BusinessCentralClient` for this emulator, with `settings(**overrides)`."""
        return self.client_for(self.settings(**overrides))

    def client_for(self, settings: ClientSettings) -> BusinessCentralClient:
        """A `BusinessCentralClient` with `settings` that reaches this emulator: a
        `FlowRunner(..., client_factory=emulator.client_for)` runs a project's flows on it."""
        from bcbridge.client import BusinessCentralClient

        return BusinessCentralClient(settings, **self._reach(settings))

    def sync_client(self, **overrides: Any) -> Client:
        """A blocking `bcbridge.Client` for this emulator, with `settings(**overrides)`."""
        from bcbridge.sync import Client

        settings = self.settings(**overrides)
        return Client(settings, **self._reach(settings))

    @abstractmethod
    def _reach(self, settings: ClientSettings) -> dict[str, Any]:
        """The `auth` and `transport` a client needs to reach this emulator (none: by URL)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the emulator and close the control client."""

    def http_client(self, token: str | None = None, **options: Any) -> httpx.Client:
        """A plain httpx client for raw API calls: base URL the API root, a bearer token
        (by default a valid one for the test app); `options` go to `httpx.Client`."""
        token = token if token is not None else str(self.request_token()["access_token"])
        return httpx.Client(
            base_url=self.info.api_root + "/",
            headers={"Authorization": f"Bearer {token}"},
            **{"timeout": 30.0, **self._http_options(), **options},
        )

    @abstractmethod
    def _http_options(self) -> dict[str, Any]:
        """How an httpx client reaches this emulator (TLS settings or a transport)."""


class RunningEmulator(EmulatorControl):
    """A started emulator process: HTTPS with the emulator's CA, tokens through real MSAL."""

    def __init__(self, process: subprocess.Popen[str], info: EmulatorInfo):
        self.process = process
        self.info = info
        self.log: deque[str] = deque(maxlen=2000)  # the last lines the emulator wrote to stderr
        self._control = httpx.Client(base_url=info.base_url, timeout=60, **self._http_options())

    def _http_options(self) -> dict[str, Any]:
        return {"verify": ssl.create_default_context(cafile=self.info.ca_bundle)}

    def request_token(
        self, *, client_id: str | None = None, secret: str | None = None
    ) -> dict[str, Any]:
        return bc_token(self.info, client_id=client_id, secret=secret)

    def _reach(self, settings: ClientSettings) -> dict[str, Any]:
        return {}  # its URLs, real MSAL and TLS: the settings say it all

    def stop(self) -> None:
        self._control.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def shared_state_dir() -> Path:
    """One state folder per test run, so the CA is made once and no run touches ~/.bcbridge."""
    path = os.environ.get("BCBRIDGE_EMULATOR_HOME")
    if path:
        return Path(path)
    folder = Path(tempfile.gettempdir()) / f"bcbridge-emulator-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    from bcbridge.emulator.tls import ensure_signing_key, ensure_tls

    # Under a lock: parallel test workers (pytest-xdist) must not write two CAs at once.
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ensure_tls(folder)  # made here once; emulator processes only read it
        ensure_signing_key(folder)
    return folder


# EmulatorConfig fields that have a `bcbridge emulator start` flag (the port is separate).
_FLAG_OPTIONS = (
    "host",
    "seed",
    "scale",
    "token_lifetime",
    "latency_ms",
    "row_time_us",
    "rate_limit",
    "max_concurrent",
    "max_queue",
    "data",
    "state_dir",
)
# Options that are no `emulator start` flag: `start_emulator` sets them once the process runs,
# through ``POST /_emulator/config``.
_RUNTIME_OPTIONS = (
    "webhook_delay_s",
    "webhook_collection_threshold",
    "webhook_time_scale",
    "subscription_lifetime_s",
    "webhook_handshake_method",
)


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse, before a process starts, what `emulator start` would refuse (ConfigError)."""
    from pydantic import ValidationError

    from bcbridge.emulator.config import EmulatorConfig, describe
    from bcbridge.errors import ConfigError

    known = (*_FLAG_OPTIONS, *_RUNTIME_OPTIONS)
    for name in options:
        if name not in known:
            raise ConfigError(
                f"unknown start_emulator option; expected one of: {', '.join(known)}",
                field=name,
            )
    try:
        EmulatorConfig.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def emulator_command(
    options: Mapping[str, Any], *, port: int = 0, progress: bool = False
) -> list[str]:
    """The ``bcbridge emulator start --json`` command line for options named like its flags.

    Options are checked first (`check_options`): a bad one raises ConfigError at once. The child
    does not record itself in the user's state file (``--no-record``): its starter decides.
    With `progress`, it prints its seeding steps as JSON lines before the announcement.
    """
    check_options(options)
    args = [sys.executable, "-m", "bcbridge", "emulator", "start", "--json", "--no-record"]
    args += ["--port", str(port), *(["--progress"] if progress else [])]
    for name, value in options.items():
        if value is None or name in _RUNTIME_OPTIONS:
            continue
        if name == "scale" and isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def start_emulator(
    *, timeout: float = 60.0, progress: SeedProgress | None = None, **options: Any
) -> RunningEmulator:
    """Start ``bcbridge emulator start --json --port 0`` with options named like its flags.

    Options are checked first (`check_options`): a bad one raises ConfigError at once.
    `progress` is told what the emulator seeds, as it goes: (what, done, total).
    """
    options.setdefault("state_dir", shared_state_dir())
    process = subprocess.Popen(
        emulator_command(options, progress=progress is not None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def failure() -> str:
        _, err = process.communicate()
        return err

    running = RunningEmulator(process, _announced(process, timeout, failure, progress))
    threading.Thread(target=_drain, args=(process, running.log), daemon=True).start()
    runtime = {k: v for k, v in options.items() if k in _RUNTIME_OPTIONS and v is not None}
    if runtime:
        running.configure(**runtime)  # checked by `check_options` already
    return running


def start_detached(
    *,
    log_file: Path,
    port: int = 8080,
    timeout: float = 600.0,
    progress: SeedProgress | None = None,
    **options: Any,
) -> tuple[int, EmulatorInfo]:
    """Start an emulator that outlives this process: its own session (a Ctrl-C in this terminal
    does not reach it), stderr appended to `log_file`. Returns its pid and what it announced,
    once it answers; RuntimeError (with the log's tail) if it does not start within `timeout`."""
    with log_file.open("a") as log, _ctrl_c_held_back() as pressed:
        process = subprocess.Popen(
            emulator_command(options, port=port, progress=progress is not None),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    try:
        if pressed:
            raise KeyboardInterrupt
        info = _announced(process, timeout, lambda: log_file.read_text(errors="replace"), progress)
    except BaseException:  # Ctrl-C while it seeds: no emulator may be left running unrecorded
        process.kill()
        process.wait()
        raise
    if process.stdout:
        process.stdout.close()  # it announces once; nothing reads it after we exit
    return process.pid, info


@contextlib.contextmanager
def _ctrl_c_held_back() -> Iterator[list[bool]]:
    """A Ctrl-C in the block is noted (the list gets True) instead of raised: one raised inside
    Popen would leave its child running before the caller can know it. Only the main thread
    can change signal handlers; elsewhere Ctrl-C does not reach the block anyway."""
    pressed: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return
    previous = signal.signal(signal.SIGINT, lambda *_: pressed.append(True))
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _announced(
    process: subprocess.Popen[str],
    timeout: float,
    failure: Callable[[], str],
    progress: SeedProgress | None = None,
) -> EmulatorInfo:
    """The EmulatorInfo of the JSON line a starting emulator prints once it serves (seeding
    steps before it go to `progress`); if none comes within `timeout`, kill it and raise
    RuntimeError with the end of `failure()`."""
    line: list[str] = []

    def read() -> None:
        for text in process.stdout or ():
            try:
                data = json.loads(text)
            except ValueError:
                data = {}  # not ours: the caller reports it as the announcement it is not
            if "seeding" not in data:
                line.append(text)
                return
            if progress is not None:
                progress(data["seeding"], data["done"], data["total"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not line:
        process.kill()
        process.wait()
        raise RuntimeError(f"the emulator did not start: {failure().strip()[-2000:]}")
    data = json.loads(line[0])
    known = {f.name for f in fields(EmulatorInfo)}
    return EmulatorInfo(**{k: v for k, v in data.items() if k in known})


def _drain(process: subprocess.Popen[str], log: deque[str]) -> None:
    """Keep reading the emulator's stderr so a full pipe never blocks it; keep its tail."""
    if process.stderr:
        for text in process.stderr:
            log.append(text.rstrip("\n"))

"""The dashboard in a real browser: Debian's Chromium driven through its ChromeDriver by Selenium,
against a real `bcbridge serve --port 0 --json` process on a file->file project in tmp_path.

`.ci/ensure-chromium` installs both programs (`make test` runs it). Their absence is a failure
that says what to install, not a skip, as for PostgreSQL (tests/pg_server.py). The driver's path
is given explicitly, so Selenium Manager never looks for (or downloads) a driver.

Screenshots: `screenshot(name)` saves a PNG of the page into the test's tmp_path, and also into
docs/screenshots/ when BCBRIDGE_SCREENSHOTS=1 (the README shows a few).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from tests.flows.conftest import write_project

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
SCREENSHOTS_VARIABLE = "BCBRIDGE_SCREENSHOTS"
CANARY_VARIABLE = "BROWSER_CANARY_SECRET"
WINDOW = (1280, 800)  # big enough for the tables, small enough for small PNGs
MAX_SHOT_HEIGHT = 1000  # a list of 40 tasks is cut there: the PNGs stay small
RECORDS = 40  # with GATE's 50 ms each: a run of about 2 s, long enough to watch its progress
HELD = ("7", "8")  # records the gate holds back while a file hold-ID lies beside the project

# A transform step that takes its time (so progress is seen live) and fails a record while a file
# hold-<id> exists; its error carries the canary, which the dashboard must redact.
GATE = """\
import os
import time
from pathlib import Path


def step(record, context):
    time.sleep(0.05)
    if Path("hold-" + record["id"]).exists():
        raise ValueError("held back, secret " + os.environ["BROWSER_CANARY_SECRET"])
    return record
"""

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # as root, Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # the machine's network is closed: no background calls to Google's hosts
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def browser_programs() -> tuple[str, str]:
    """Chromium and ChromeDriver on this machine; a failure naming what to install otherwise."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "chromium or chromedriver not found: the browser tests need Debian's 'chromium' and "
            "'chromium-driver' packages; run .ci/ensure-chromium (as root) or `make browser`"
        )
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium (its own empty profile: no cookies) that keeps console logs."""
    chromium, driver = browser_programs()
    profile = tempfile.mkdtemp(prefix="bcbridge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Served:
    """A `bcbridge serve` process: its URLs, its project folder and the canary secret in it."""

    url: str
    login_url: str
    folder: Path
    canary: str
    process: subprocess.Popen[str]


def gated_project(folder: Path) -> Path:
    """Flow `copy`: RECORDS records of in.jsonl through the gate to out.jsonl, in chunks of 5;
    records HELD are held back (they fail) until their hold file is removed. A client whose
    secret is the canary: the dashboard knows it as a secret and must never show it."""
    (folder / "gate.py").write_text(GATE)
    lines = [json.dumps({"id": str(n), "price": f"{n}.5"}) for n in range(1, RECORDS + 1)]
    (folder / "in.jsonl").write_text("".join(f"{line}\n" for line in lines))
    for record in HELD:
        (folder / f"hold-{record}").touch()
    client = {
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "${" + CANARY_VARIABLE + "}",
        "base_url": "https://127.0.0.1:1",
    }
    flow = {
        "from": "in.jsonl",
        "transform": [{"python": "gate:step"}],
        "to": "out.jsonl",
        "chunk_size": 5,
    }
    data = {"store": "sqlite:///state.db", "clients": {"default": client}, "flows": {"copy": flow}}
    return write_project(folder / "bcbridge.yaml", data)


@contextlib.contextmanager
def serving(folder: Path, env: dict[str, str], canary: str) -> Iterator[Served]:
    """`bcbridge serve --port 0 --json` on `folder`'s bcbridge.yaml with `env`, stopped (and the
    folder removed) at the end."""
    command = [sys.executable, "-m", "bcbridge", "serve", "--config", str(folder / "bcbridge.yaml")]
    process = subprocess.Popen(
        [*command, "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=folder,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        assert line, f"bcbridge serve did not start: {process.stderr.read()}"
        announced = json.loads(line)
        yield Served(announced["url"], announced["login_url"], folder, canary, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def served() -> Iterator[Served]:
    """`bcbridge serve` on `gated_project`, no password (sign-in by link)."""
    folder = Path(tempfile.mkdtemp(prefix="bcbridge-"))  # short: the pages show its paths
    gated_project(folder)
    canary = f"CANARY-s3cr3t-{secrets.token_hex(8)}"
    env = {k: v for k, v in os.environ.items() if k != "BCBRIDGE_DASHBOARD_PASSWORD"}
    env[CANARY_VARIABLE] = canary
    with serving(folder, env, canary) as running:
        yield running


@pytest.fixture
def signed_in(browser: webdriver.Chrome, served: Served) -> webdriver.Chrome:
    """The browser, signed in through the login link (it lands on Flows)."""
    browser.get(served.login_url)
    WebDriverWait(browser, 10).until(lambda b: b.current_url == f"{served.url}/flows")
    return browser


Screenshot = Callable[..., Path]


@pytest.fixture
def screenshot(browser: webdriver.Chrome, tmp_path: Path) -> Screenshot:
    """`screenshot("flows")`: a PNG of the whole page in tmp_path (and docs/screenshots/ when
    BCBRIDGE_SCREENSHOTS=1); its path in tmp_path. `screenshot("grant", top="#grant")`: from
    a little above that element down (what matters on a long form is below its fields)."""

    def save(name: str, top: str | None = None) -> Path:
        # the whole page (up to MAX_SHOT_HEIGHT), not just the window: Chromium's own capture
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        start = 0
        if top is not None:
            start = browser.execute_script(
                "const e = document.querySelector(arguments[0]);"
                "return Math.max(0, e.getBoundingClientRect().top + window.scrollY - 200);",
                top,
            )
        clip = {"x": 0, "y": start, "width": WINDOW[0], "scale": 1}
        clip["height"] = min(int(size["height"]) - start, MAX_SHOT_HEIGHT)
        shot = browser.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
        )
        path = tmp_path / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        if os.environ.get(SCREENSHOTS_VARIABLE) == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / path.name)
        return path

    return save

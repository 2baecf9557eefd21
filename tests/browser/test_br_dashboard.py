"""The dashboard of a real `bcbridge serve`, used through a real Chromium: sign-in, Run now with
live progress, Runs (its chart drawn) and Tasks, Retry and Skip of failed tasks, CSRF refusals,
the Content-Security-Policy against inline script, and no secret ever in a page's DOM."""

from __future__ import annotations

import re
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import HELD, RECORDS, Screenshot, Served

pytestmark = pytest.mark.browser  # a real browser and a serve process: not in `make test-fast`

PAGES = ("/", "/flows", "/runs", "/tasks", "/tasks?status=failed", "/tasks/1", "/runs/chart.json")
# the configuration pages (Clients, Incoming, Outgoing, flow forms): the client's secret is the
# canary (where a branch has no such page yet, its "not found" is checked all the same)
CONFIG_PAGES = ("/clients", "/clients/edit/default", "/clients/new", "/incoming", "/outgoing")
CONFIG_PAGES_FLOWS = ("/flows/new", "/flows/edit/copy")


def heading(browser: webdriver.Chrome) -> str:
    return str(browser.find_element(By.TAG_NAME, "h1").text)


def wait(browser: webdriver.Chrome, until: Any, timeout: float = 30) -> Any:
    # a page being replaced (a click that navigates) leaves stale elements: look again
    retry_on = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(browser, timeout, 0.1, ignored_exceptions=retry_on).until(until)


def console(browser: webdriver.Chrome) -> list[str]:
    """The browser console's messages since the last call (Selenium leaves get_log untyped)."""
    get_log: Any = browser.get_log
    return [str(entry["message"]) for entry in get_log("browser")]


def run_now(browser: webdriver.Chrome, served: Served) -> list[str]:
    """Press Run now on Flows; the progress texts seen until the run ended."""
    browser.get(f"{served.url}/flows")
    browser.find_element(By.XPATH, "//button[normalize-space()='Run now']").click()
    seen: list[str] = []

    def ended(b: webdriver.Chrome) -> bool:
        # the text and the busy mark read at once (one script): read one after the other, an
        # htmx swap in between paired a text with the other state's mark
        text, busy = b.execute_script(
            "const p = document.getElementById('progress-1');"
            "return [p.innerText.trim(), p.querySelector('[aria-busy]') !== null];"
        )
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        return bool(text) and not busy

    wait(browser, ended, 60)
    return seen


def task_id_of(browser: webdriver.Chrome, served: Served, record: str) -> int:
    browser.get(f"{served.url}/tasks?flow=copy&key={record}")
    link = browser.find_element(By.CSS_SELECTOR, "tbody a[href^='/tasks/']")
    return int(link.text)


def test_every_page_asks_a_fresh_browser_to_sign_in_and_the_link_works_once(
    browser: webdriver.Chrome, served: Served, screenshot: Screenshot
) -> None:
    for path in (*PAGES, *CONFIG_PAGES, *CONFIG_PAGES_FLOWS):
        browser.get(served.url + path)
        assert browser.current_url == f"{served.url}/login", path
        assert heading(browser) == "Sign in", path
        assert "copy" not in browser.find_element(By.TAG_NAME, "main").text, path
    screenshot("login")

    browser.get(served.login_url)
    assert browser.current_url == f"{served.url}/flows"
    assert heading(browser) == "Flows"
    assert browser.find_element(By.LINK_TEXT, "copy")  # the project's flow is listed
    assert "token=" not in browser.current_url  # the one-time token left the address bar

    browser.delete_all_cookies()  # another browser: the link is spent
    browser.get(served.login_url)
    assert heading(browser) == "Sign in"
    assert "used already" in browser.page_source
    browser.get(f"{served.url}/tasks")
    assert browser.current_url == f"{served.url}/login"


def test_run_now_shows_live_progress_then_the_run_on_runs_and_its_tasks_on_tasks(
    signed_in: webdriver.Chrome, served: Served, screenshot: Screenshot
) -> None:
    browser = signed_in
    seen = run_now(browser, served)
    assert seen[0].startswith("running"), seen  # live, while the run worked
    assert len(seen) >= 2, seen  # the polling showed it change
    final = seen[-1]
    assert not final.startswith("running") and f"read {RECORDS}" in final, seen
    assert f"failed {len(HELD)}" in final, seen
    # a second run once record 7 may pass: the chart gets a second bar
    (served.folder / f"hold-{HELD[0]}").unlink()
    again = run_now(browser, served)[-1]
    assert f"failed {len(HELD) - 1}" in again, again
    browser.get(f"{served.url}/flows")
    assert "never" not in browser.find_element(By.ID, "flow-1").text
    screenshot("flows")

    browser.get(f"{served.url}/runs")
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 2 and all("copy" in row.text for row in rows)
    assert f"read {RECORDS}" in rows[1].text
    # the chart is drawn by Chart.js (the dashboard's own script, under its CSP)
    drawn = wait(
        browser,
        lambda b: b.execute_script(
            "const c = window.Chart && Chart.getChart(document.getElementById('runs-chart'));"
            "return c ? c.data.datasets.map(d => d.data) : null;"
        ),
    )
    assert drawn == [[RECORDS, RECORDS], [len(HELD), len(HELD) - 1]]
    screenshot("runs")

    browser.get(f"{served.url}/tasks?flow=copy")
    assert f"{RECORDS:,} in all" in browser.find_element(By.CLASS_NAME, "pager").text
    screenshot("tasks")
    browser.find_element(By.CSS_SELECTOR, "select[name=status]").send_keys("failed")
    browser.find_element(By.XPATH, "//button[normalize-space()='Search']").click()
    wait(browser, lambda b: "status=failed" in b.current_url)
    records = wait(
        browser, lambda b: [row.find_elements(By.TAG_NAME, "td")[3].text for row in _rows(b)]
    )
    assert records == list(HELD[1:])


def _rows(browser: webdriver.Chrome) -> list[Any]:
    return list(browser.find_elements(By.CSS_SELECTOR, "tbody tr"))


def test_retry_and_skip_a_failed_task_from_its_page(
    signed_in: webdriver.Chrome, served: Served, screenshot: Screenshot
) -> None:
    browser = signed_in
    run_now(browser, served)
    fixed, skipped = HELD
    fixed_id, skipped_id = task_id_of(browser, served, fixed), task_id_of(browser, served, skipped)

    browser.get(f"{served.url}/tasks/{fixed_id}")
    wait(browser, lambda b: _field(b, "Status") == "failed")
    assert "held back" in browser.find_element(By.TAG_NAME, "main").text
    screenshot("task")
    (served.folder / f"hold-{fixed}").unlink()  # the cause is fixed: Retry sends it again
    browser.find_element(By.XPATH, "//button[normalize-space()='Retry']").click()
    wait(browser, lambda b: _field(b, "Status") == "done")
    assert not browser.find_elements(By.XPATH, "//button[normalize-space()='Retry']")
    written = (served.folder / "out.jsonl").read_text()
    assert written.count(f'"id": "{fixed}"') + written.count(f'"id":"{fixed}"') == 1

    browser.get(f"{served.url}/tasks/{skipped_id}")
    browser.find_element(By.XPATH, "//button[normalize-space()='Skip']").click()
    wait(browser, lambda b: _field(b, "Status") == "skipped")
    assert f'"{skipped}"' not in re.sub(r"\s", "", written)


def _field(browser: webdriver.Chrome, name: str) -> str:
    cell = browser.find_element(By.XPATH, f"//th[text()='{name}']/following-sibling::td")
    return str(cell.text)


def test_a_form_without_its_csrf_token_is_refused(
    signed_in: webdriver.Chrome, served: Served
) -> None:
    browser = signed_in
    run_now(browser, served)
    task_id = task_id_of(browser, served, HELD[1])
    browser.get(f"{served.url}/tasks/{task_id}")
    # the hidden field removed through the DOM, then the form sent as a person would
    browser.execute_script(
        "document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove());"
    )
    browser.find_element(By.XPATH, "//button[normalize-space()='Skip']").click()
    wait(browser, lambda b: "refused" in b.find_element(By.TAG_NAME, "body").text)
    assert "CSRF token is missing or stale" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{served.url}/tasks/{task_id}")
    assert wait(browser, lambda b: _field(b, "Status")) == "failed"  # nothing happened

    # a script of the page posting without the token (the session cookie goes along)
    answers = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const token = document.querySelector('input[name=csrf_token]').value;"
        "const post = (body) => fetch(location.pathname + '/skip', {method: 'POST', body: body,"
        "  credentials: 'same-origin', redirect: 'manual'}).then(a => a.status);"
        "Promise.all([post(new URLSearchParams()),"
        "  post(new URLSearchParams({csrf_token: 'forged'})),"
        "  post(new URLSearchParams({csrf_token: token}))]).then(done);"
    )
    assert answers[:2] == [403, 403]
    assert answers[2] in (0, 303)  # with its token it goes through (a redirect: opaque, 0)
    browser.get(f"{served.url}/tasks/{task_id}")
    assert wait(browser, lambda b: _field(b, "Status")) == "skipped"


def test_the_content_security_policy_blocks_inline_script(
    signed_in: webdriver.Chrome, served: Served
) -> None:
    browser = signed_in
    browser.get(f"{served.url}/runs")
    wait(browser, lambda b: b.execute_script("return typeof window.Chart") == "function")
    console(browser)  # read (and so cleared): what the page logged before
    outcome = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        "  e => violations.push(e.violatedDirective));"
        "const inline = document.createElement('script');"
        "inline.textContent = 'window.inlineRan = true;';"
        "document.body.appendChild(inline);"
        "const button = document.createElement('button');"
        "button.setAttribute('onclick', 'window.handlerRan = true');"
        "document.body.appendChild(button); button.click();"
        "setTimeout(() => done({inline: window.inlineRan === true,"
        "  handler: window.handlerRan === true, violations: violations}), 300);"
    )
    assert outcome["inline"] is False and outcome["handler"] is False, outcome
    assert outcome["violations"] and all(
        v.startswith("script-src") for v in outcome["violations"]
    ), outcome
    logged = console(browser)
    assert any("Content Security Policy" in message for message in logged), logged


def test_the_canary_secret_is_in_no_page(signed_in: webdriver.Chrome, served: Served) -> None:
    browser = signed_in
    run_now(browser, served)  # the failed tasks' errors carried the canary
    task_ids = [task_id_of(browser, served, str(n)) for n in (1, *HELD)]
    pages = ["/flows", "/runs", "/runs/chart.json", "/tasks", "/tasks?status=failed"]
    pages += ["/flows/copy/progress", *(f"/tasks/{task_id}" for task_id in task_ids)]
    pages += [*CONFIG_PAGES, *CONFIG_PAGES_FLOWS]
    seen = 0
    for path in pages:
        browser.get(served.url + path)
        source = browser.page_source
        assert served.canary not in source and "s3cr3t" not in source, path
        seen += len(source)
    browser.get(f"{served.url}/tasks/{task_ids[1]}")
    assert "held back" in browser.page_source  # the error is shown, its secret masked
    assert seen > 10_000

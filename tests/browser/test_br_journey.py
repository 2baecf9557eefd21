"""The seed's journey through the dashboard in a real browser, against the emulator (a process):
sign in -> create a client -> Grant access -> the redacted key and the companies -> an incoming
whose module and company are picked from lists -> Preview -> an outgoing -> a flow -> Run now ->
its tasks -> one record fails on a transform that gives BC a wrong type -> the transform fixed
in the flow's form -> Retry -> the task is done and Business Central holds the record once.

The project starts with a store only: everything else is made in the forms. The serve process
gets no BC_* variables (no `default` client to fall back on); the client's CA bundle (the
emulator's) is given in its form, as one would for a BC behind a private CA."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from bcbridge.testing import EmulatorControl
from tests.browser.conftest import Screenshot, Served, serving
from tests.flows.conftest import BC, CRONUS, FABRIKAM, bc, emulator, write_project

pytestmark = pytest.mark.browser
__all__ = ["bc", "emulator"]  # the fixtures this module uses

PREFIX = "JRN-"  # the items this test makes in CRONUS; the incoming reads only these
PRICES = {"JRN-1": 10, "JRN-2": 20, "JRN-3": 30.5}  # 30.5 is no whole number: `int` fails it
BAD = "JRN-3"
WRONG = "- keep: [number, displayName, unitPrice]\n- convert: {unitPrice: int}"
FIXED = "- keep: [number, displayName, unitPrice]\n- convert: {unitPrice: decimal}"


@pytest.fixture
def blank_served(emulator: EmulatorControl) -> Iterator[Served]:
    """`bcbridge serve` on a project that has a store and nothing else; no BC_* variables."""
    folder = Path(tempfile.mkdtemp(prefix="bcbridge-"))
    write_project(folder / "bcbridge.yaml", {"store": "sqlite:///state.db"})
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BC_") and k != "BCBRIDGE_DASHBOARD_PASSWORD"
    }
    with serving(folder, env, canary=emulator.info.client_secret) as running:
        yield running


def wait(browser: webdriver.Chrome, until: Any, timeout: float = 30) -> Any:
    retry_on = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(browser, timeout, 0.1, ignored_exceptions=retry_on).until(until)


def fill(browser: webdriver.Chrome, values: dict[str, str]) -> None:
    """Type into the form's fields by name (each emptied first), or pick from their lists."""
    for name, value in values.items():
        field = browser.find_element(By.NAME, name)
        if field.tag_name == "select":
            Select(field).select_by_visible_text(value)
            continue
        field.clear()
        field.send_keys(value, Keys.TAB)  # on to the next field: its `change` fires


def press(browser: webdriver.Chrome, label: str) -> None:
    browser.find_element(By.XPATH, f"//button[normalize-space()={label!r}]").click()


def heading(browser: webdriver.Chrome) -> str:
    return str(browser.find_element(By.TAG_NAME, "h1").text)


def main_text(browser: webdriver.Chrome) -> str:
    return str(browser.find_element(By.TAG_NAME, "main").text)


def task_field(browser: webdriver.Chrome, name: str) -> str:
    cell = browser.find_element(By.XPATH, f"//th[text()='{name}']/following-sibling::td")
    return str(cell.text)


def make_source_items(bc: BC) -> None:
    for number, price in PRICES.items():
        bc.create(CRONUS, "items", {"number": number, "displayName": f"Journey {number}"})
        (item,) = bc.all(CRONUS, "items", **{"$filter": f"number eq '{number}'"})
        bc.patch(CRONUS, "items", item, unitPrice=price)


def test_the_seed_journey_from_a_client_to_a_retried_task(
    browser: webdriver.Chrome,
    blank_served: Served,
    emulator: EmulatorControl,
    bc: BC,
    screenshot: Screenshot,
) -> None:
    served, info = blank_served, emulator.info
    make_source_items(bc)
    browser.get(served.login_url)
    wait(browser, lambda b: b.current_url == f"{served.url}/flows")

    # Clients: a new client, its secret typed once, then Grant access
    browser.get(f"{served.url}/clients/new")
    fill(
        browser,
        {
            "name": "bc",
            "base_url": info.base_url,
            "authority_url": info.authority_url,
            "tenant_id": info.tenant_id,
            "environment": info.environment,
            "client_id": info.client_id,
            "client_secret": info.client_secret,
            "ca_bundle": info.ca_bundle,
            "scopes": info.scope,
        },
    )
    browser.find_element(By.NAME, "log_requests").click()
    press(browser, "Save")
    wait(browser, lambda b: b.current_url == f"{served.url}/clients/edit/bc")
    assert browser.find_element(By.CLASS_NAME, "secret-state").text == "set"
    press(browser, "Grant access to Microsoft D365 Business Central")
    grant = wait(browser, lambda b: b.find_element(By.ID, "grant"))
    key = grant.find_element(By.XPATH, ".//th[text()='Key']/following-sibling::td").text
    assert "…" in key and len(key) < 20, key  # redacted: its two ends only
    assert CRONUS in grant.text and FABRIKAM in grant.text
    screenshot("clients-grant", top="#grant")

    # Incoming: the module from the catalog's list, the company from the client's companies
    browser.get(f"{served.url}/incoming/new")
    fill(browser, {"name": "journey_items", "client": "bc", "entity": "items"})
    assert "items" in [
        option.get_attribute("value")
        for option in browser.find_elements(By.CSS_SELECTOR, "#entities option")
    ]
    # the entity's fields are shown under it (folded: their text, not their look)
    fields = wait(browser, lambda b: b.find_element(By.ID, "entity-fields").text)
    assert "fields" in fields
    shown = browser.find_element(By.ID, "entity-fields").get_attribute("textContent")
    assert "displayName" in str(shown)
    press(browser, "Load the client's companies")
    company = wait(browser, lambda b: Select(b.find_element(By.NAME, "company")))
    assert FABRIKAM in [option.text for option in company.options]
    company.select_by_visible_text(CRONUS)
    names = browser.find_elements(By.NAME, "param_name")
    values = browser.find_elements(By.NAME, "param_value")
    names[0].send_keys("$filter")
    values[0].send_keys(f"startswith(number,'{PREFIX}')")
    names[1].send_keys("$select")
    values[1].send_keys("id,number,displayName,unitPrice")
    press(browser, "Preview")
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#preview, #preview-error"))
    assert not browser.find_elements(By.ID, "preview-error"), main_text(browser)
    preview = browser.find_element(By.ID, "preview")
    rows = preview.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert sorted(row.text.split()[1] for row in rows) == sorted(PRICES), preview.text
    screenshot("incoming-preview", top="#preview")
    press(browser, "Save")
    wait(browser, lambda b: b.current_url == f"{served.url}/incoming/edit/journey_items")

    # Outgoing: the same items into Fabrikam, matched on their number
    browser.get(f"{served.url}/outgoing/new")
    fill(browser, {"name": "fabrikam_items", "client": "bc", "entity": "items"})
    wait(
        browser,
        lambda b: (
            "upsert"
            in [
                o.get_attribute("value")
                for o in b.find_elements(By.CSS_SELECTOR, "#actions option")
            ]
        ),
    )
    fill(browser, {"action": "upsert", "company": FABRIKAM, "key_field": "number"})
    screenshot("outgoing-form")
    press(browser, "Save")
    wait(browser, lambda b: b.current_url == f"{served.url}/outgoing/edit/fabrikam_items")

    # Flows: a new flow whose transform makes a whole number of every price
    browser.get(f"{served.url}/flows/new")
    fill(browser, {"name": "journey", "from": "journey_items", "to": "fabrikam_items"})
    fill(browser, {"transform": WRONG})
    screenshot("flow-form")
    press(browser, "Save")
    wait(browser, lambda b: b.current_url == f"{served.url}/flows")
    assert "journey" in main_text(browser)

    press(browser, "Run now")
    wait(
        browser,
        lambda b: (
            b.find_element(By.ID, "progress-1").text.strip()
            and not b.find_elements(By.CSS_SELECTOR, "#progress-1 [aria-busy]")
        ),
        60,
    )
    assert "failed 1" in browser.find_element(By.ID, "progress-1").text
    screenshot("journey-flows")

    browser.get(f"{served.url}/tasks?flow=journey")
    assert "3 in all" in browser.find_element(By.CLASS_NAME, "pager").text
    screenshot("journey-tasks")
    browser.get(f"{served.url}/tasks?flow=journey&status=failed")
    (link,) = browser.find_elements(By.CSS_SELECTOR, "tbody a[href^='/tasks/']")
    task_page = str(link.get_attribute("href"))
    browser.get(task_page)
    assert task_field(browser, "Status") == "failed"
    assert "cannot convert 30.5 to int" in task_field(browser, "Last error")
    assert bc.all(FABRIKAM, "items", **{"$filter": f"number eq '{BAD}'"}) == []
    screenshot("task-failed")

    # the transform fixed in the flow's form, then Retry on the task's page
    browser.get(f"{served.url}/flows/edit/journey")
    fill(browser, {"transform": FIXED})
    press(browser, "Save")
    wait(browser, lambda b: b.current_url == f"{served.url}/flows")
    browser.get(task_page)
    press(browser, "Retry")
    wait(browser, lambda b: task_field(b, "Status") == "done")
    (attempt,) = browser.find_elements(By.CSS_SELECTOR, "tr.attempt")  # the retry's, one
    assert "created" in attempt.text
    requests = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "tr.request-line")]
    assert any("$batch" in line for line in requests), requests
    screenshot("task-retried", top="#attempts")

    copied = bc.all(FABRIKAM, "items", **{"$filter": f"startswith(number,'{PREFIX}')"})
    assert sorted(item["number"] for item in copied) == sorted(PRICES)  # each once
    (fixed,) = [item for item in copied if item["number"] == BAD]
    assert fixed["unitPrice"] == PRICES[BAD]
    for page in ("/clients", "/clients/edit/bc", task_page.removeprefix(served.url)):
        browser.get(served.url + page)
        assert served.canary not in browser.page_source, page

"""A concurrent edit of the project file, in a real browser: the flow's form is opened, then
`bcbridge.yaml` is changed on disk (as an editor or the CLI would); Save shows the conflict at
the form and writes nothing, and the form opened again shows the file's new content."""

from __future__ import annotations

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import Screenshot, Served

pytestmark = pytest.mark.browser


def test_a_file_changed_on_disk_since_the_form_was_opened_is_not_overwritten(
    signed_in: webdriver.Chrome, served: Served, screenshot: Screenshot
) -> None:
    browser = signed_in
    project = served.folder / "bcbridge.yaml"
    browser.get(f"{served.url}/flows/edit/copy")
    schedule = browser.find_element(By.NAME, "schedule")
    schedule.send_keys("5m")  # the person's change, not saved yet

    # meanwhile an editor changes the file: another chunk size and a comment
    edited = project.read_text().replace("chunk_size: 5", "chunk_size: 7")
    edited = "# edited by hand while the form was open\n" + edited
    project.write_text(edited)

    browser.find_element(By.XPATH, "//button[normalize-space()='Save']").click()
    # the answer is a new page: wait for it, not for the old form still on screen
    alert = WebDriverWait(browser, 10).until(
        lambda b: b.find_element(By.CSS_SELECTOR, "form p.form-error[role=alert]")
    )
    assert "changed on disk since you opened it" in alert.text
    assert browser.current_url == f"{served.url}/flows/edit/copy"  # still at the form
    # what the person typed is still in the form, to make again after a reload
    assert browser.find_element(By.NAME, "schedule").get_attribute("value") == "5m"
    screenshot("conflict")
    assert project.read_text() == edited  # nothing overwritten
    assert "schedule" not in yaml.safe_load(edited)["flows"]["copy"]

    # opened again, the form is at the file's new version: the change now goes through
    browser.get(f"{served.url}/flows/edit/copy")
    browser.find_element(By.NAME, "schedule").send_keys("5m")
    browser.find_element(By.XPATH, "//button[normalize-space()='Save']").click()
    WebDriverWait(browser, 10).until(lambda b: b.current_url == f"{served.url}/flows")
    saved = project.read_text()
    assert saved.startswith("# edited by hand while the form was open\n")  # the comment kept
    flow = yaml.safe_load(saved)["flows"]["copy"]
    assert flow["chunk_size"] == 7 and flow["schedule"] == "5m"

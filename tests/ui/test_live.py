"""A live local job on the open pages: it appears, its preemption shows without a reload, cancel stops it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import smoke_spec, status_json
from tests.ui.browser import console_errors, shoot, wait_js
from tests.ui.conftest import UPDATE_S, RealLedger, Server, submit_detached

pytestmark = pytest.mark.docker
NOT_RELOADED = "window.__runnerUi.loadedAt === arguments[0]"


def test_a_preemption_shows_on_the_open_pages_without_reload_and_cancel_stops_the_job(
        browser: Any, ui_server: Server, real_ledger: RealLedger, screenshots: Path, tmp_path: Path,
        docker_client: Any) -> None:
    # The overview is open before the job exists.
    browser.get(ui_server.url + "/")
    overview_tab = browser.current_window_handle
    overview_loaded = browser.execute_script("return window.__runnerUi.loadedAt")
    spec = smoke_spec(tmp_path, "live.yaml", epochs=20)
    job_id = submit_detached(spec, real_ledger.home, "--simulate-preemption",
                             "every=7s,notice=2s,mode=parachute,count=1")
    wait_js(browser, f"!!document.getElementById('job-{job_id}')", timeout=20, what="the new job on the overview")
    assert browser.execute_script(f"return {NOT_RELOADED}", overview_loaded)

    browser.switch_to.new_window("tab")
    browser.get(f"{ui_server.url}/jobs/{job_id}")
    loaded = browser.execute_script("return window.__runnerUi.loadedAt")
    wait_js(browser, "document.querySelector('#attempts tbody tr[data-state=\"RUNNING\"]')", timeout=60,
            what="attempt 1 running")
    wait_js(browser, "document.querySelector('#attempts tbody tr[data-state=\"PREEMPTED\"]')", timeout=90,
            what="the preemption on the job page")
    seen = time.time()
    assert browser.execute_script(f"return {NOT_RELOADED}", loaded), "the page was reloaded"
    ended = next(a["ended_at"] for a in status_json(job_id, real_ledger.home)["attempt_list"]
                 if a["state"] == "PREEMPTED")
    # The watcher polls every second, the page every UPDATE_S: a few seconds at most, even on a busy machine.
    print(f"runner ui: the preemption showed {seen - ended:.1f}s after the attempt ended")
    assert seen - ended < 10 * UPDATE_S, f"the preemption showed {seen - ended:.1f}s after the attempt ended"
    wait_js(browser, "Chart.getChart('timeline').data.datasets.some(d => d.label === 'preempted' && d.data.length)",
            what="the preemption on the timeline")
    wait_js(browser, "document.getElementById('n-preemptions').textContent.trim().startsWith('1')")

    browser.switch_to.window(overview_tab)
    wait_js(browser, f"document.getElementById('job-{job_id}').dataset.preemptions === '1'", timeout=15,
            what="the preemption on the overview")
    assert browser.execute_script(f"return {NOT_RELOADED}", overview_loaded), "the overview was reloaded"
    # its detached watcher holds the lease: the overview says so, and counts it among the watchers at work
    assert browser.execute_script(f"return document.querySelector('#job-{job_id} td.watcher').textContent.trim()") \
        == "watched"
    assert int(browser.find_element("css selector", "#watchers b").text) >= 1
    browser.close()  # the overview tab: only one page polls from here on
    browser.switch_to.window(browser.window_handles[0])

    # Cancel from the page: it asks first, then the job is CANCELLED and its container stops.
    wait_js(browser, "document.querySelector('#attempts tbody tr[data-state=\"RUNNING\"]')", timeout=60,
            what="attempt 2 running")
    shoot(browser, screenshots, "job-live")
    assert "cancel" in click_action(browser, "cancel", job_id).lower()  # runner.service's own line
    wait_js(browser, "document.getElementById('job-state').textContent.trim() === 'cancelled'", timeout=60,
            what="the job CANCELLED on the page")
    assert status_json(job_id, real_ledger.home)["state"] == "CANCELLED"
    deadline = time.monotonic() + 30
    while running := docker_client.containers.list(filters={"label": f"spot-runner.job={job_id}"}):
        assert time.monotonic() < deadline, f"still running after the cancel: {[c.name for c in running]}"
        time.sleep(0.5)
    assert not console_errors(browser), console_errors(browser)


def click_action(browser: Any, name: str, job_id: str) -> str:
    """Press an action's button, confirm, and return the answer shown on the page."""
    from selenium.common.exceptions import StaleElementReferenceException

    button = browser.find_elements("id", f"action-{name}")
    assert button, f"no {name} button: runner.service.{name} is missing"
    wait_js(browser, f"!document.querySelector('form[data-action=\"{name}\"]').hidden", timeout=15,
            what=f"the {name} button shown")
    for tries_left in (2, 1, 0):  # the live page swaps its parts in as the job changes: find the button anew
        try:
            browser.find_element("id", f"action-{name}").click()
            break
        except StaleElementReferenceException:
            if not tries_left:
                raise
            time.sleep(0.2)
    alert = browser.switch_to.alert
    assert job_id in alert.text
    alert.accept()
    wait_js(browser, "location.search.includes('flash=')", what=f"the answer to {name}")
    return browser.find_element("id", "flash").text


def test_halt_and_resume_from_the_page(browser: Any, ui_server: Server, real_ledger: RealLedger,
                                      tmp_path: Path, screenshots: Path) -> None:
    job_id = submit_detached(smoke_spec(tmp_path, "halt.yaml", epochs=20), real_ledger.home)
    browser.get(f"{ui_server.url}/jobs/{job_id}")
    wait_js(browser, "(Chart.getChart('progress')?.data.datasets[0]?.data.length || 0) >= 2", timeout=90,
            what="attempt 1 training (its first checkpoints)")
    answer = click_action(browser, "halt", job_id)
    assert "halt" in answer.lower(), answer
    wait_js(browser, "document.getElementById('job-state').textContent.trim() === 'paused'", timeout=90,
            what="the job PAUSED")
    assert browser.execute_script(
        "return [...document.querySelectorAll('#attempts tbody tr')].map(r => r.dataset.state)") == ["HALTED"]
    assert status_json(job_id, real_ledger.home)["state"] == "PAUSED"
    assert not browser.find_element("id", "action-halt").is_displayed()  # a paused job resumes or cancels
    assert browser.find_element("id", "action-resume").is_displayed()
    shoot(browser, screenshots, "job-paused")

    answer = click_action(browser, "resume", job_id)
    assert "resume" in answer.lower(), answer
    wait_js(browser, "document.querySelector('#attempts tbody tr[data-state=\"RUNNING\"]')", timeout=90,
            what="attempt 2 running after the resume")
    assert status_json(job_id, real_ledger.home)["state"] == "RUNNING"
    click_action(browser, "cancel", job_id)  # done here; the cancel itself is tested above
    wait_js(browser, "document.getElementById('job-state').textContent.trim() === 'cancelled'", timeout=60)

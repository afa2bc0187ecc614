"""The dashboard in a real browser (Debian's headless Chromium) over a ledger made by real runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from runner.cost.accounting import format_money
from tests.ui.browser import console_errors, row_cells, shoot, wait_js
from tests.ui.conftest import FAKE_ENV, FAKE_PIECES, RealLedger, Server, runner

pytestmark = pytest.mark.docker


def test_overview_lists_every_job_with_the_figures_of_runner_status(
        browser: Any, ui_server: Server, real_ledger: RealLedger, screenshots: Any) -> None:
    browser.get(ui_server.url + "/")
    wait_js(browser, "document.querySelectorAll('#jobs tbody tr[id]').length >= 4", what="the job rows")
    for job_id, status in real_ledger.status.items():
        cells = row_cells(browser, job_id)
        assert cells is not None, f"{job_id} is not on the overview"
        cost = status["cost"]
        assert cells["job"].startswith(job_id)
        assert cells["state"] == status["state"].lower()
        assert cells["backend"] == "local" and cells["capacity"] == "spot"
        assert cells["attempts"] == str(status["attempts"])
        assert cells["preemptions"] == str(status["preemptions"])
        assert cells["spend"] == format_money(cost["spend"], cost["currency"])
        assert cells["on demand"] == format_money(cost["on_demand_cost"], cost["currency"])
        assert cells["v"] == ("-" if cost["value_ratio"] is None else f"{cost['value_ratio']:.2f}")
        assert cells["watcher"] == "-"  # finished: nobody needs to watch it
    preempted = real_ledger.jobs["preempted"]
    pst = real_ledger.status[preempted]
    assert row_cells(browser, preempted)["progress"] == f"{pst['step']}/{pst['total_steps']}"
    progress = browser.execute_script(
        "return document.querySelector('#job-' + arguments[0] + ' progress').value", preempted)
    assert progress == pytest.approx(1.0)
    every = json.loads(runner("status", "--json", home=real_ledger.home, check=True).stdout)  # other tests add jobs
    browser.refresh()
    assert browser.find_element("id", "total-preemptions").text == str(sum(s["preemptions"] for s in every))
    spend = sum(s["cost"]["spend"] for s in every)
    assert format_money(spend, "USD") in browser.find_element("id", "totals").text
    shoot(browser, screenshots, "overview")
    assert not console_errors(browser), console_errors(browser)

    # Filters: by state, then by backend; the live updates keep the filter.
    browser.get(ui_server.url + "/?state=FAILED")
    wait_js(browser, "window.__runnerUi && window.__runnerUi.updates >= 1", what="a live update")
    ids = browser.execute_script("return [...document.querySelectorAll('#jobs tbody tr[id]')].map(r => r.id)")
    assert ids == [f"job-{real_ledger.jobs['failing']}"]
    browser.get(ui_server.url + "/?backend=aws")
    assert "No job matches the filters" in browser.find_element("id", "jobs").text


def test_job_page_draws_the_timeline_attempts_log_and_redacted_spec(
        browser: Any, ui_server: Server, real_ledger: RealLedger, screenshots: Any) -> None:
    job_id = real_ledger.jobs["preempted"]
    status = real_ledger.status[job_id]
    browser.get(f"{ui_server.url}/jobs/{job_id}")
    wait_js(browser, "!!(window.Chart && Chart.getChart('timeline') && Chart.getChart('progress'))", what="the charts")
    lanes = browser.execute_script("return Chart.getChart('timeline').data.labels")
    assert len(lanes) == status["attempts"]
    assert any("preempted" in lane for lane in lanes) and "succeeded" in lanes[-1]
    drawn = browser.execute_script("""
        const chart = Chart.getChart('timeline');
        const byLabel = {};
        chart.data.datasets.forEach(d => { byLabel[d.label] = d.data.filter(x => x !== null).length; });
        return byLabel;""")
    assert drawn["checkpoint"] > 0 and drawn["preempted"] == status["preemptions"] and drawn["succeeded"] == 1
    assert any(n > 0 for label, n in drawn.items() if label.startswith("useful"))
    # Pixels, not only data: the lanes canvas has colored bars on it.
    painted = browser.execute_script("""
        const c = document.getElementById('timeline'); const ctx = c.getContext('2d');
        const px = ctx.getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < px.length; i += 4) { if (px[i + 3] > 0 && px[i + 1] > px[i] + 40) { n++; } }
        return n;""")
    assert painted > 500, f"only {painted} green pixels on the timeline"
    lines = browser.execute_script(
        "return Chart.getChart('progress').data.datasets.map(d => [d.label, d.data.length])")
    assert lines[-1][0] == f"total {status['total_steps']} steps"
    assert any(label.startswith("attempt") and n >= 2 for label, n in lines[:-1]), lines  # a step line per attempt

    rows = browser.execute_script(
        "return [...document.querySelectorAll('#attempts tbody tr')].map(r => [r.dataset.state, "
        "r.querySelector('.reason').textContent.trim()])")
    assert [r[0] for r in rows] == [a["state"] for a in status["attempt_list"]]
    assert [r[1] for r in rows] == [a["reason"] or "-" for a in status["attempt_list"]]
    wait_js(browser, "document.querySelector('#log pre').textContent.includes('runner.task')", what="the log tail")
    spec = browser.find_element("id", "spec").text
    assert '"image": "localhost/runner-cifar:latest"' in spec
    shoot(browser, screenshots, "job")
    assert not console_errors(browser), console_errors(browser)


def test_no_secret_value_in_any_page_or_api_answer(
        browser: Any, ui_server: Server, token_server: Server, real_ledger: RealLedger) -> None:
    job_id = real_ledger.jobs["secrets"]
    # The secrets did reach the job (it printed its environment), so the pages had them to leak.
    raw = runner("logs", job_id, home=real_ledger.home, check=True).stdout
    assert FAKE_ENV["AWS_SECRET_ACCESS_KEY"] in raw and FAKE_ENV["DATABASE_URL"] in raw

    pages = ["/", "/fragment/overview", "/api/overview"]
    for j in real_ledger.jobs.values():
        pages += [f"/jobs/{j}", f"/fragment/jobs/{j}", f"/fragment/jobs/{j}/logs", f"/api/jobs/{j}"]
    for page in pages:
        for server, headers in ((ui_server, {}), (token_server, {"Authorization": f"Bearer {token_server.token}"})):
            answer = requests.get(server.url + page, headers=headers, timeout=30)
            assert answer.status_code == 200, (page, answer.status_code)
            leaked = [p for p in FAKE_PIECES if p in answer.text]
            assert not leaked, f"{page} shows {leaked}"
    log = requests.get(f"{ui_server.url}/fragment/jobs/{job_id}/logs", timeout=30).text
    assert "AWS_SECRET_ACCESS_KEY=***" in log and "MY_SERVICE_TOKEN=***" in log
    spec = requests.get(f"{ui_server.url}/api/jobs/{job_id}", timeout=30).json()["spec"]
    assert set(spec["env"]) >= set(FAKE_ENV) and all(spec["env"][k] == "***" for k in FAKE_ENV)

    browser.get(f"{ui_server.url}/jobs/{job_id}")
    wait_js(browser, "document.querySelector('#log pre').textContent.includes('AWS_SECRET_ACCESS_KEY')",
            what="the log tail")
    wait_js(browser, "window.__runnerUi.updates >= 3", what="live updates")
    text = browser.page_source + browser.find_element("tag name", "body").text
    assert not [p for p in FAKE_PIECES if p in text]

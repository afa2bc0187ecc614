"""An open page costs the ledger at most one query per update (counted with sqlite3's trace callback)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from runner.ui.model import Dashboard
from tests.ui.browser import wait_js
from tests.ui.conftest import RealLedger, Server

pytestmark = pytest.mark.docker


def test_each_read_of_the_dashboard_is_one_statement(real_ledger: RealLedger, ui_home: Any) -> None:
    dashboard = Dashboard(real_ledger.path)
    try:
        job_id = real_ledger.jobs["preempted"]
        for call, expected in ((dashboard.overview, 1), (lambda: dashboard.job(job_id), 1),
                               (lambda: dashboard.logs(job_id), 0), (dashboard.overview, 1)):
            before = dashboard.view.queries
            assert call() is not None
            assert dashboard.view.queries - before == expected
        assert dashboard.view.queries == 3
        # and the connection cannot write: the ledger is opened read-only
        assert dashboard.view._db is not None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            dashboard.view._db.execute("DELETE FROM jobs")
    finally:
        dashboard.close()


@pytest.mark.parametrize("page", ["overview", "job"])
def test_an_open_page_costs_at_most_one_query_per_update(browser: Any, ui_server: Server,
                                                          real_ledger: RealLedger, page: str) -> None:
    path = "/" if page == "overview" else f"/jobs/{real_ledger.jobs['preempted']}"
    browser.get("about:blank")  # nothing else polls while counting
    stats = ui_server.app.state.stats
    before, queries = dict(stats), ui_server.queries
    browser.get(ui_server.url + path)
    wait_js(browser, "window.__runnerUi.updates >= 5", timeout=30, what="five live updates")
    spent = ui_server.queries - queries
    served = {k: stats[k] - before.get(k, 0) for k in stats}
    browser.get("about:blank")
    updates = served.get(page, 0) + served.get(f"{page}_update", 0)  # the page itself and its fragment
    assert updates >= 4, served
    assert spent <= updates, f"{spent} queries for {updates} updates ({served})"
    if page == "job":
        assert served.get("logs_update", 0) >= 1  # the log tail updates too, on the attempts already read

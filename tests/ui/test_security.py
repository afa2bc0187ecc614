"""Who may see and act: the token on a non-local address, CSRF on POST, the Host check on loopback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests

from runner.ledger import Ledger
from runner.spec import load_spec
from tests.ui.browser import wait_js
from tests.ui.conftest import RealLedger, Server

pytestmark = pytest.mark.docker


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def queued_job(home: Path, name: str) -> str:
    """A job nobody watches (QUEUED): something to cancel without a container."""
    from tests.e2e.conftest import smoke_spec

    with Ledger(home / "ledger.db") as ledger:
        return ledger.create_job(load_spec(smoke_spec(home, f"{name}.yaml", epochs=1)))


def state_of(home: Path, job_id: str) -> str:
    with Ledger(home / "ledger.db") as ledger:
        return ledger.get_job(job_id).state.value


def test_a_non_local_address_needs_the_token_on_every_request(token_server: Server, real_ledger: RealLedger) -> None:
    assert not token_server.url.startswith("http://127."), token_server.url
    job_id = real_ledger.jobs["short"]
    for path in ("/", "/fragment/overview", "/api/overview", f"/jobs/{job_id}", f"/fragment/jobs/{job_id}/logs",
                 "/static/app.js", "/static/vendor/htmx.min.js", "/healthz", "/no-such-page"):
        wrong = ({}, {"Authorization": "Bearer wrong-token"}, {"Cookie": f"runner-ui-{token_server.port}=wrong"})
        for headers in wrong:
            answer = requests.get(token_server.url + path, headers=headers, allow_redirects=False, timeout=30)
            assert answer.status_code == 403, (path, headers, answer.status_code)
            assert job_id not in answer.text and "token" in answer.text
    good = {"Authorization": f"Bearer {token_server.token}"}
    assert requests.get(token_server.url + "/api/overview", headers=good, timeout=30).status_code == 200
    # ?token= once: a cookie, and the token leaves the address bar
    first = requests.get(f"{token_server.url}/?state=FAILED&token={token_server.token}", allow_redirects=False,
                         timeout=30)
    assert first.status_code == 303 and first.headers["location"] == "/?state=FAILED"
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    with requests.Session() as session:
        page = session.get(f"{token_server.url}/?token={token_server.token}", timeout=30)
        assert page.status_code == 200 and job_id in page.text and token_server.token not in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_actions_need_the_token_and_the_csrf_token(token_server: Server, ui_server: Server,
                                                   real_ledger: RealLedger) -> None:
    job_id = queued_job(real_ledger.home, "not-cancelled")
    good = {"Authorization": f"Bearer {token_server.token}"}
    csrf = csrf_of(requests.get(f"{token_server.url}/jobs/{job_id}", headers=good, timeout=30).text)
    url = f"{token_server.url}/jobs/{job_id}/cancel"
    refused = [
        requests.post(url, data={"csrf": csrf}, allow_redirects=False, timeout=30),                # no token
        requests.post(url, headers=good, allow_redirects=False, timeout=30),                       # no CSRF token
        requests.post(url, headers=good, data={"csrf": "forged"}, allow_redirects=False, timeout=30),
        requests.post(url, headers={**good, "Origin": "http://evil.example"}, data={"csrf": csrf},
                      allow_redirects=False, timeout=30),                                           # another site
        requests.put(url, headers=good, data={"csrf": csrf}, allow_redirects=False, timeout=30),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403, 405]
    # On loopback: no token, but still the CSRF token, and only a loopback Host (no DNS rebinding).
    local = f"{ui_server.url}/jobs/{job_id}/cancel"
    assert requests.post(local, allow_redirects=False, timeout=30).status_code == 403
    rebound = requests.get(f"{ui_server.url}/api/overview", headers={"Host": f"evil.example:{ui_server.port}"},
                           timeout=30)
    assert rebound.status_code == 403
    assert state_of(real_ledger.home, job_id) == "QUEUED"


def test_cancel_from_the_page_with_the_token(browser: Any, token_server: Server, real_ledger: RealLedger) -> None:
    job_id = queued_job(real_ledger.home, "cancel-me")
    browser.get(f"{token_server.url}/jobs/{job_id}")
    assert "needs its token" in browser.find_element("tag name", "body").text
    browser.get(f"{token_server.url}/jobs/{job_id}?token={token_server.token}")
    assert "token=" not in browser.current_url  # the token went into a cookie
    wait_js(browser, "window.__runnerUi && window.__runnerUi.updates >= 1", what="a live update with the cookie")
    assert browser.find_element("id", "action-cancel").is_displayed()
    assert not browser.find_element("id", "action-resume").is_displayed()  # only for a PAUSED job
    browser.find_element("id", "action-cancel").click()
    browser.switch_to.alert.accept()
    wait_js(browser, "document.getElementById('job-state').textContent.trim() === 'cancelled'",
            what="the job cancelled")
    assert state_of(real_ledger.home, job_id) == "CANCELLED"

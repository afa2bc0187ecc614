"""Helpers for driving the dashboard in the browser."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def wait_js(driver: Any, script: str, timeout: float = 30, what: str = "") -> Any:
    """Evaluate ``script`` (an expression) until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or script} (last: {value!r}); "
                         f"page: {driver.current_url}\n{driver.find_element('tag name', 'body').text[:1500]}")


def console_errors(driver: Any) -> list[str]:
    """Severe messages from the page's console (script errors, CSP violations, failed loads)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def shoot(driver: Any, folder: Path, name: str) -> Path:
    """Keep a screenshot of the whole page."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(900, min(int(height) + 40, 4000)))
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    driver.set_window_size(1400, 1000)
    return path


def row_cells(driver: Any, job_id: str) -> dict[str, str]:
    """The overview row of one job: header name -> cell text."""
    return driver.execute_script("""
        const row = document.getElementById('job-' + arguments[0]);
        if (!row) { return null; }
        const heads = [...document.querySelectorAll('#jobs thead th')].map(th => th.textContent.trim());
        const out = {};
        [...row.children].forEach((td, i) => { out[heads[i]] = td.textContent.trim(); });
        return out;""", job_id)

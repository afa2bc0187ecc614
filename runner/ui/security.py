"""Who may see the dashboard and act on jobs.

- Bound to a loopback address (the default, 127.0.0.1): only this machine reaches it; the Host
  header must name the loopback address, so a web page elsewhere cannot reach it through DNS
  rebinding. A token is optional (``--token``/``RUNNER_UI_TOKEN``).
- Bound to any other address: a token is required on every request, whatever the client (as
  Jupyter does): ``?token=...`` once (answered with a cookie and a redirect to the same URL without
  it), the cookie afterwards, or ``Authorization: Bearer ...``/``token ...`` for scripts.
- Actions are POSTs that must carry the page's CSRF token (a form field or ``X-CSRF-Token``); a
  POST whose ``Origin`` is another site is refused too. Only GET, HEAD and POST exist.
- Every answer carries a strict Content-Security-Policy (scripts and styles from the dashboard
  only, no inline script), no caching of pages, no referrer and no framing.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
           "x-frame-options": "DENY", "cross-origin-opener-policy": "same-origin"}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether an address to bind to (or a Host header's name) is this machine only."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without the port: ``[::1]:80`` -> ``::1``, ``a:80`` -> ``a``."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def new_token() -> str:
    return secrets.token_urlsafe(24)


def same(a: str | None, b: str) -> bool:
    """Constant-time comparison of a supplied secret with the expected one."""
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """ASGI middleware: Host check (loopback binds), token (when set), CSRF on POST, security headers."""

    def __init__(self, app: ASGIApp, *, token: str | None, csrf: str, port: int, loopback: bool) -> None:
        self.app, self.token, self.csrf, self.loopback = app, token, csrf, loopback
        self.cookie = f"runner-ui-{port}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)
        if refusal is not None:
            await _with_headers(refusal, scope, receive, send)
            return
        query = request.query_params.get("token")
        if self.token is not None and query is not None and request.method in ("GET", "HEAD"):
            # The token came in the URL: keep it in a cookie and drop it from the address bar.
            rest = urlencode([(k, v) for k, v in parse_qsl(request.url.query) if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
            await _with_headers(response, scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                if not request.url.path.startswith("/static/"):
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> PlainTextResponse | None:
        if request.method not in ("GET", "HEAD", "POST"):
            return PlainTextResponse("method not allowed\n", status_code=405)
        if self.loopback:
            if not is_loopback(host_name(request.headers.get("host") or "")):
                return PlainTextResponse("refused: this dashboard answers only to localhost or 127.0.0.1\n",
                                         status_code=403)
        if self.token is not None and not self._has_token(request):
            return PlainTextResponse("refused: this dashboard needs its token; open the URL `runner ui` printed "
                                     "(http://HOST:PORT/?token=...)\n", status_code=403)
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin and origin != "null" and origin.split("://", 1)[-1] != request.headers.get("host"):
                return PlainTextResponse("refused: a request from another site\n", status_code=403)
        return None

    def _has_token(self, request: Request) -> bool:
        assert self.token is not None
        auth = request.headers.get("authorization") or ""
        scheme, _, value = auth.partition(" ")
        supplied = [request.cookies.get(self.cookie), request.query_params.get("token"),
                    value.strip() if scheme.lower() in ("bearer", "token") else None]
        return any(same(s, self.token) for s in supplied)

    def csrf_ok(self, supplied: str | None) -> bool:
        return same(supplied, self.csrf)


async def _with_headers(response: Any, scope: Scope, receive: Receive, send: Send) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("cache-control", "no-store")
    await response(scope, receive, send)

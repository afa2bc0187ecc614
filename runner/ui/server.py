"""Start the dashboard: bind, print the URL (with the token when one is needed), serve until stopped."""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runner.errors import RunnerError

HERE = Path(__file__).resolve().parent
#: The files `make ui-assets` (runner/ui/frontend/build.sh) installs from npm.
VENDOR_FILES = ("htmx.min.js", "chart.umd.min.js")
EXTRA_MODULES = ("starlette", "uvicorn", "jinja2", "multipart")


def check_ready() -> None:
    """Raise a one-line RunnerError when the ui extra or the front-end assets are missing."""
    missing = [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise RunnerError(f"runner ui needs the ui extra ({', '.join(missing)} missing): "
                          "pip install 'spot-runner[ui]'")
    vendor = HERE / "static" / "vendor"
    absent = [f for f in VENDOR_FILES if not (vendor / f).is_file()]
    if absent:
        raise RunnerError(f"runner ui's front-end assets are missing ({', '.join(absent)} in {vendor}): "
                          "run make ui-assets (needs npm) in the source tree, or install a built package")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one); a clear error when it cannot."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise RunnerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                          "pick another --port (0: any free one) or --host") from None
    sock.set_inheritable(True)
    return sock


def urls(host: str, port: int, token: str | None) -> list[str]:
    """The addresses to print: the bound one (the machine's name for a wildcard), then localhost."""
    query = f"/?token={token}" if token else "/"
    wildcard = host in ("0.0.0.0", "::", "")
    name = socket.gethostname() if wildcard else host
    first = f"http://{'[' + name + ']' if ':' in name else name}:{port}{query}"
    return [first] + ([f"http://127.0.0.1:{port}{query}"] if wildcard else [])


def serve(*, host: str = "127.0.0.1", port: int = 8770, token: str | None = None, interval: float = 2.0,
          ledger_path: Path | None = None, status_file: Path | None = None,
          out: Callable[[str], None] = print) -> int:
    """Serve the dashboard until SIGINT/SIGTERM; return the exit code."""
    check_ready()
    import uvicorn

    from runner.ledger import default_path
    from runner.ui.app import create_app
    from runner.ui.model import Dashboard
    from runner.ui.security import is_loopback, new_token

    loopback = is_loopback(host)
    if not loopback and not token:
        token = new_token()
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    dashboard = Dashboard(ledger_path or default_path(), status_file)
    app = create_app(dashboard, token=token, csrf=secrets.token_urlsafe(24), port=actual, loopback=loopback,
                     interval=interval)
    config = uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False,
                            server_header=False, timeout_graceful_shutdown=3, lifespan="off")
    server = _quiet_exit(uvicorn.Server)(config)
    out(f"runner ui: ledger {dashboard.view.path}, updates every {interval:g}s"
        + ("" if loopback else "; every request needs the token"))
    for url in urls(host, actual, token):
        out(f"  {url}")
    sys.stdout.flush()
    # Account every finished job once in the background, so the first page opened is a warm one.
    threading.Thread(target=_warm, args=(dashboard,), name="ui-warm", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        dashboard.close()
        sock.close()
    return 0


def _warm(dashboard: Any) -> None:
    try:
        dashboard.overview()
    except RunnerError:
        pass  # the page will say it


def _quiet_exit(base: Any) -> Any:
    """uvicorn's Server, except that SIGTERM/SIGINT end it with exit 0: uvicorn raises the signal again after
    its graceful shutdown (so the process dies of it); a service manager should see a clean stop."""

    class Server(base):  # type: ignore[misc, valid-type]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server

"""``runner ui``: a live dashboard of the ledger (the ``ui`` extra: Starlette, uvicorn, Jinja2).

Importing this package needs nothing beyond the control plane; :func:`serve` checks for the
extra and for the front-end assets (``make ui-assets``) and says in one line what is missing.
"""

from __future__ import annotations

from runner.ui.server import check_ready, serve

__all__ = ["check_ready", "serve"]

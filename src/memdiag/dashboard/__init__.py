"""The live web dashboard: one self-contained HTML page served at ``/memory/dashboard``.

The page carries all of its styles and scripts inline and draws its charts with its own
small SVG code, so it loads nothing from another origin and works offline under the
API's Content-Security-Policy (``default-src 'self'; script-src 'self' 'unsafe-inline';
style-src 'self' 'unsafe-inline'``). It polls the JSON API beside it every two seconds.

The page reads the bearer token from its URL fragment (``#token=...``), which browsers
never send to a server or write to access logs, keeps it in the tab's
``sessionStorage``, removes it from the address bar, and sends it as
``Authorization: Bearer`` on every API call::

    from memdiag.dashboard import dashboard_url
    print(dashboard_url("http://127.0.0.1:8765", token))
    # http://127.0.0.1:8765/memory/dashboard#token=...
"""

from __future__ import annotations

import threading
from importlib import resources
from urllib.parse import quote

__all__ = ["DASHBOARD_PATH", "dashboard_url", "page_html"]

#: Where the API serves the page, relative to its root.
DASHBOARD_PATH = "/memory/dashboard"

_page: bytes | None = None
_page_lock = threading.Lock()


def page_html() -> bytes:
    """The dashboard page as UTF-8 bytes (read once from the package data, then cached).

    Serve it with ``Content-Type: text/html; charset=utf-8`` and the CSP above.
    """
    global _page
    if _page is None:
        with _page_lock:
            if _page is None:
                _page = (resources.files(__name__) / "static" / "dashboard.html").read_bytes()
    return _page


def dashboard_url(base_url: str, token: str | None = None) -> str:
    """The dashboard's address for an API at ``base_url``, with the token in the fragment.

    Args:
        base_url: where the API is served, e.g. ``"http://127.0.0.1:8765"``, or with
            the prefix it is mounted under (``"https://host/ops/"``); a trailing slash
            is ignored.
        token: the API bearer token; ``None`` or empty leaves the fragment out (the
            page then asks for it).

    Returns:
        ``<base_url>/memory/dashboard#token=<token>``. The token rides in the fragment,
        so it never reaches a server, a proxy or an access log.
    """
    url = base_url.rstrip("/") + DASHBOARD_PATH
    if token:
        url += "#token=" + quote(token, safe="")
    return url

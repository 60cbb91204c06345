"""Refuse cross-site requests to state-changing routes that take no body.

`POST /api/dlq/{lane}/redrive` needs no JSON body, so any web page the learner visits could
submit it from a form. A browser always says where a request comes from (`Sec-Fetch-Site`,
and `Origin` on a cross-origin POST); the dashboard is same-origin, and a client without
those headers (curl, the notebooks) is no browser and stays allowed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import HTTPException, Request

SAME_SITE = frozenset({"same-origin", "none"})  # `none`: typed in the address bar, a bookmark


def same_origin_only(request: Request) -> None:
    """A FastAPI dependency: 403 for a browser request made by another site."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:  # a browser's own word, which no page can forge; it also holds
        if fetch_site not in SAME_SITE:  # behind a proxy that rewrites Host (Binder)
            raise HTTPException(403, f"cross-site request refused (Sec-Fetch-Site: {fetch_site})")
        return
    origin = request.headers.get("origin")  # older browsers: compare with our own Host
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"cross-origin request refused (Origin: {origin})")

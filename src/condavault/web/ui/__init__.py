"""The web UI: server-rendered pages (Jinja2, plain forms, a little JavaScript; no build step) at ``/``.

Routers per page group; :func:`mount` adds them and ``/static`` to the app. Conda clients use ``/api/repo``
and the JSON API ``/api``: nothing here shadows them.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from condavault.web.ui import admin, auth, channels, cves, home, mirrors
from condavault.web.ui.common import HERE, not_found_page, wants_page

__all__ = ["ROUTERS", "mount", "not_found_page", "wants_page"]
ROUTERS = [home.router, auth.router, channels.router, mirrors.router, cves.router, admin.router]


def mount(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

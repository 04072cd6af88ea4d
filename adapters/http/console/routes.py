"""``install(app, runtime, failures)``: the console's routes under ``/console`` (issue 13)."""

from __future__ import annotations

import falcon

from adapters.http.console import admin, pages, signin, trail
from adapters.http.console.session import Sessions
from adapters.http.console.web import PREFIX, Console


def install(app: falcon.App, runtime, failures, secret: str | None = None, trust_proxy: bool = False) -> Console:
    """``failures``: the failed-authentication limiter of bearer auth (sign-ins count too);
    ``secret``: the deployment's console secret (else a key kept in the shared database)."""
    console = Console(runtime, Sessions(runtime.requests, secret), failures, trust_proxy)
    routes = {
        "": pages.Overview(console),  # /console/ (the app strips trailing slashes)
        "/login": signin.Login(console),
        "/logout": signin.Logout(console),
        "/static/{name}": signin.Static(),
        "/users": pages.Users(console),
        "/users/{user_id}": pages.User(console),
        "/users/{user_id}/erase": admin.EraseUser(console),
        "/groups": pages.Groups(console),
        "/groups/{group_id}": pages.Group(console),
        "/audit": trail.Audit(console),
        "/audit.csv": trail.AuditDownload(console, "csv"),
        "/audit.json": trail.AuditDownload(console, "json"),
        "/requests": trail.Requests(console),
        "/as-of": pages.AsOf(console),
        "/connect": trail.Connect(console),
        "/tokens": admin.Tokens(console),
        "/tokens/{token_id}/revoke": admin.RevokeToken(console),
    }
    for path, resource in routes.items():
        app.add_route(PREFIX + path, resource)
    return console

"""Fixtures of the HTTP tests beyond tests/conftest.py's (``app``, ``client``): the app on
SQLite only, the bare falcon app (for its routes), and a hand-moved rate-limit clock."""

from __future__ import annotations

import pytest

from adapters.operator import issue_token
from adapters.http import ratelimit
from adapters.bootstrap import build_app
from adapters.http.app import collapse_slashes
from tests.conftest import ScimClient


@pytest.fixture
def sqlite_app(sqlite_runtime):
    return collapse_slashes(build_app(sqlite_runtime))


@pytest.fixture
def sqlite_client(sqlite_runtime, sqlite_app) -> ScimClient:
    return ScimClient(sqlite_app, issue_token(sqlite_runtime, "default", "scim", "entra"))


@pytest.fixture
def raw_app(runtime):
    """The falcon app itself (for its routes); ``app`` is the same app behind collapse_slashes."""
    return build_app(runtime)


@pytest.fixture
def clock(monkeypatch):
    """The rate limiters' clock, moved by hand."""

    class Clock:
        t = 1000.0

        def __call__(self):
            return self.t

    fake = Clock()
    monkeypatch.setattr(ratelimit, "now", fake)
    return fake

"""``scimledger requests``: the request log on the command line (issue 13)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ScimClient
from tests.processes import run_cli

pytestmark = pytest.mark.e2e


def test_requests_command(client: ScimClient, runtime, tmp_path):
    assert client.get("/Users", params={"filter": "nosuch eq 1"}).status_code == 400
    runtime.request_writer.flush()
    where = {"data": runtime.data, "store": runtime.store}
    shown = run_cli("requests", "--status", "4xx", "--since", "1h", **where)
    assert shown.returncode == 0 and "invalidFilter" in shown.stdout and "nosuch" in shown.stdout
    listed = run_cli("requests", "--format", "json", **where)
    assert json.loads(listed.stdout)[0]["status"] == 400
    none = run_cli("requests", "--status", "5xx", **where)
    assert none.returncode == 0 and none.stdout == "" and "no requests" in none.stderr
    bad = run_cli("requests", "--since", "last tuesday", **where)
    assert bad.returncode != 0 and "not a usable time" in bad.stderr



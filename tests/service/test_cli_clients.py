"""``scimledger client`` in-process on both stores: secrets shown once and never listed,
json output, rotation and revocation, and clear refusals."""

from __future__ import annotations

import json

import pytest

from adapters.cli.main import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def where(tmp_path, store):
    return ["--data", str(tmp_path / "data")] + (["--store", store] if store else [])


def test_create_list_rotate_revoke(capsys, where):
    code, out, _ = run(capsys, "client", "create", "--tenant", "fabrikam", "--label", "Entra ID", "--format", "json", *where)
    assert code == 0
    created = json.loads(out)
    assert set(created) == {"client_id", "client_secret", "token_endpoint"}
    assert created["client_secret"].startswith("scs_") and created["token_endpoint"].endswith("/oauth/token")

    code, out, _ = run(capsys, "client", "create", "--label", "text one", *where)
    assert code == 0 and out.startswith("client_id: ") and "\nclient_secret: scs_" in out

    code, listing, _ = run(capsys, "client", "list", *where)
    assert code == 0 and created["client_id"] in listing and "fabrikam" in listing and "Entra ID" in listing
    assert "scs_" not in listing
    code, rows, _ = run(capsys, "client", "list", "--format", "json", *where)
    assert not any("secret_hash" in row or "client_secret" in row for row in json.loads(rows))

    code, out, _ = run(capsys, "client", "rotate", created["client_id"], "--grace-days", "3", "--format", "json", *where)
    rotated = json.loads(out)
    assert code == 0 and rotated["client_secret"] != created["client_secret"] and rotated["old_secrets_valid_until"]

    code, _, err = run(capsys, "client", "revoke", created["client_id"], *where)
    assert code == 0 and "revoked" in err
    code, listing, _ = run(capsys, "client", "list", *where)
    assert "revoked" in listing
    code, _, err = run(capsys, "client", "rotate", created["client_id"], *where)
    assert code == 1 and "revoked" in err


@pytest.mark.parametrize("args, message", [
    (("client", "revoke", "00000000-0000-0000-0000-000000000000"), "no client"),
    (("client", "revoke", "not-an-id"), "no client"),
    (("client", "create", "--label", "x", "--secret-days", "5000"), "--secret-days"),
    (("client", "create", "--label", "   "), "label"),
])
def test_refusals_are_clear(capsys, where, args, message):
    code, out, err = run(capsys, *args, *where)
    assert code == 1 and message in err and "scs_" not in out

"""The master key on the command line (issue 11): a plain command (no logging set up)
tells the operator on stderr where the new key is; a wrong key is a clear exit."""

from __future__ import annotations

import base64
import os

import pytest

from adapters.store.keys import KEY_FILE
from tests.processes import run_cli

pytestmark = pytest.mark.e2e


def test_a_plain_command_shows_it_on_stderr_and_a_wrong_key_exits_with_the_reason(tmp_path):
    done = run_cli("token", "list", data=tmp_path)
    assert done.returncode == 0 and f"generated a new master key in {tmp_path / KEY_FILE}" in done.stderr
    assert (tmp_path / KEY_FILE).read_text().strip() not in done.stderr
    wrong = base64.b64encode(os.urandom(32)).decode()
    refused = run_cli("token", "list", data=tmp_path, SCIMLEDGER_MASTER_KEY=wrong)
    assert refused.returncode == 1 and "does not match this store" in refused.stderr
    assert "Traceback" not in refused.stderr and wrong not in refused.stderr

"""Fair use (issue 7): a per-token token bucket, so one tenant's initial sync cannot starve
the others; 429 with Retry-After (whole seconds) and a SCIM error; configurable; the
defaults (applied by ``scimledger serve``) comfortably carry Entra's 25+ requests/s.
"""

from __future__ import annotations

import pytest

from adapters.http import ratelimit
from adapters.bootstrap import build_app
from adapters.http.app import collapse_slashes
from adapters.operator import issue_token
from adapters.settings import Settings
from tests.conftest import ScimClient
from tests.http.probes import scim_error

pytestmark = pytest.mark.security


@pytest.fixture
def limited_app(sqlite_runtime, monkeypatch, clock):
    monkeypatch.setenv("SCIMLEDGER_RATE_LIMIT", "2")
    monkeypatch.setenv("SCIMLEDGER_RATE_BURST", "3")
    return collapse_slashes(build_app(sqlite_runtime, Settings.from_env()))


def test_a_token_over_its_rate_gets_429_with_retry_after(sqlite_runtime, limited_app, clock):
    greedy = ScimClient(limited_app, issue_token(sqlite_runtime, "alpha", "scim", "greedy"))
    polite = ScimClient(limited_app, issue_token(sqlite_runtime, "beta", "scim", "polite"))
    for _ in range(3):
        assert greedy.get("/Users").status_code == 200
    response = greedy.get("/Users")
    body = scim_error(response, 429)
    assert response.headers["retry-after"] == "1"
    assert "rate" in body["detail"]
    # A write over the limit is refused before it is applied.
    head = sqlite_runtime.ledger.recorder.max_notification_id()
    scim_error(greedy.post("/Users", json={"userName": "r@x", "emails": [{"value": "r@x"}]}), 429)
    assert sqlite_runtime.ledger.recorder.max_notification_id() == head
    # Another tenant's token has its own bucket.
    assert polite.get("/Users").status_code == 200
    # Half a second later the bucket holds one request again.
    clock.t += 0.5
    assert greedy.get("/Users").status_code == 200
    scim_error(greedy.get("/Users"), 429)


def test_the_defaults_carry_entra_and_are_generous():
    env: dict = {}
    ratelimit.apply_serve_defaults(env)
    settings = ratelimit.Settings.from_env(env)
    assert (settings.per_token.rate, settings.per_token.burst) == (200, 400)
    assert settings.auth_failures.burst == 20 and settings.auth_failures.rate == 0.1
    # 30 requests a second for a minute (Entra needs >= 25 per tenant): never refused.
    t = [0.0]
    limiter = ratelimit.Limiter(settings.per_token, clock=lambda: t[0])
    for step in range(30 * 60):
        t[0] = step / 30
        assert limiter.take("entra") == 0
    # An explicit setting wins over the default; 0 turns a limit off.
    env = {"SCIMLEDGER_RATE_LIMIT": "0"}
    ratelimit.apply_serve_defaults(env)
    assert not ratelimit.Settings.from_env(env).per_token.enabled


@pytest.mark.parametrize("value", ["fast", "-1", "nan", "inf"])
def test_a_bad_setting_is_refused_at_start(sqlite_runtime, monkeypatch, value):
    monkeypatch.setenv("SCIMLEDGER_RATE_LIMIT", value)
    with pytest.raises(ValueError, match="SCIMLEDGER_RATE_LIMIT"):
        build_app(sqlite_runtime, Settings.from_env())


def test_retry_after_is_whole_seconds_at_least_one():
    assert ratelimit.retry_after(0.01) == "1"
    assert ratelimit.retry_after(1.0) == "1"
    assert ratelimit.retry_after(1.2) == "2"


def test_the_shared_limiter_answers_as_the_per_process_one(tmp_path):
    """Both keep the same token buckets (``Limits.refill``/``spend``), only elsewhere: for a
    random run of takes and waits over a few keys and moving time, the same answers."""
    import random

    from adapters.http.shared_limits import SharedLimiter

    limits = ratelimit.Limits(rate=2.0, burst=3.0)
    t = [100.0]
    local = ratelimit.Limiter(limits, clock=lambda: t[0])
    shared = SharedLimiter(tmp_path / "l.bin", limits, clock=lambda: t[0])
    rng = random.Random(7)
    answers = []
    for _ in range(2000):
        key = rng.choice("abc")
        t[0] += rng.choice((0.0, 0.0, 0.0, 0.05, 0.1, 1.0))
        use = rng.choice(("take", "take", "wait"))
        expected, got = getattr(local, use)(key), getattr(shared, use)(key)
        assert got == pytest.approx(expected), (use, key, t[0])
        answers.append(expected > 0)
    assert 0.1 < sum(answers) / len(answers) < 0.9  # both refusals and admissions were compared
    shared.close()

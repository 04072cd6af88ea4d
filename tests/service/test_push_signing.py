"""How push SETs are signed (adapters.feeds.Feeds.sign_set, adapters.push_loop), on a real
SQLite store: the JSON of each SET is byte for byte what ``orjson.dumps`` makes of its
claims (RFC 9967 claims unchanged) and verifies with the published JWKS; ``jti`` values
differ across a fork; SETs signed ahead of their sending are signed again, in notice form,
once the registry knows of an erasure."""

from __future__ import annotations

import base64
import os
import time

import jwt
import orjson

from adapters.feeds import new_jti
from adapters.push import Delivery, PushWorker
from domain.sets import PATCH, events_of, set_claims
from tests.samples import OPERATOR_CAUSE


def payload(token: bytes) -> bytes:
    part = token.split(b".")[1]
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


def provisioned(runtime, name: str) -> str:
    runtime.ledger.ensure_tenant("default", OPERATOR_CAUSE)
    body = {"userName": name, "externalId": f"ext-{name}", "emails": [{"value": name, "primary": True}]}
    return runtime.ledger.provision_user("default", body,
                                         {**OPERATOR_CAUSE, "request_id": f"create {name}"}).id


def test_a_set_is_its_claims_json_byte_for_byte_and_verifies_with_the_jwks(sqlite_runtime):
    feeds = sqlite_runtime.feeds
    shown = feeds.create("default", "push", OPERATOR_CAUSE, push_url="http://127.0.0.1:9/", from_start=True)
    provisioned(sqlite_runtime, "ann@example.org")
    feed = feeds.registry.get(shown["id"])
    changes, _ = feeds.log.changes(feed, 0, sqlite_runtime.event_store.head())
    jti, token = feeds.sign_set(feed, changes[0])
    sent = payload(token)
    claims = set_claims(changes[0], events_of(changes[0], "notice"), issuer=feeds.settings.public_url,
                        audience=feed.audience, jti=jti.decode(), issued_at=orjson.loads(sent)["iat"],
                        external_id="ext-ann@example.org")
    assert sent == orjson.dumps(claims)
    keys = {k["kid"]: jwt.PyJWK(k) for k in feeds.keys.jwks()["keys"]}
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": header["kid"], "typ": "secevent+jwt"}
    assert jwt.decode(token, keys[header["kid"]].key, algorithms=["ES256"], audience=feed.audience,
                      issuer=feeds.settings.public_url) == claims
    assert feeds.render(feed, changes[0])[1].count(".") == 2  # (poll: the same, as text)


def test_jtis_are_new_each_time_and_differ_across_a_fork():
    drawn = {new_jti() for _ in range(1000)}
    assert len(drawn) == 1000 and all(len(j) == 32 for j in drawn)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the pool it inherited is not used again
        os.write(write, new_jti())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64)
    os.close(read)
    assert child not in drawn | {new_jti()}


def test_sets_signed_ahead_are_signed_again_once_an_erasure_is_known(sqlite_runtime):
    feeds = sqlite_runtime.feeds
    shown = feeds.create("default", "push", OPERATOR_CAUSE, push_url="http://127.0.0.1:9/", mode="full",
                         from_start=True)
    user = provisioned(sqlite_runtime, "eve@example.org")
    sqlite_runtime.ledger.patch_user("default", user, [{"op": "replace", "path": "title", "value": "CFO"}],
                                     {**OPERATOR_CAUSE, "request_id": "patch", "method": "PATCH"})
    worker = PushWorker(feeds)  # its threads not started: this test drives the loop's steps
    view = feeds.registry.get(shown["id"])
    delivery = worker.deliveries[view.id] = Delivery(view, feeds.store.state(view.id, view.start))
    delivery.lease_until = time.time() + 60
    head = sqlite_runtime.event_store.head()

    worker.loop._next(delivery, head, {})
    assert len(delivery.signed) == 2  # the create and the patch, signed together
    (_, first), = worker.loop._signed
    assert b"CFO" in payload(delivery.signed[1]) and first is delivery.signed[0]
    worker.loop._signed.clear()
    delivery.moved(delivery.pop_change().end, delivered=1)  # the create answered 202

    sqlite_runtime.ledger.erase_user(user, "request", OPERATOR_CAUSE)
    feeds.registry.catch_up()  # as the loop's next look at the log does
    worker.loop._next(delivery, head, {})
    (_, patch), = worker.loop._signed
    sent = orjson.loads(payload(patch))
    assert list(sent["events"]) == [PATCH + "notice"] and "externalId" not in sent["sub_id"]
    assert b"CFO" not in payload(patch) and b"eve@" not in payload(patch)

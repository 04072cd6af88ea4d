"""Durability under crashes (issue 7): no acknowledged change lost, nothing half-applied.

A write load runs over real HTTP against ``scimledger serve`` (2 gunicorn workers) from
several client threads while the whole process group is SIGKILLed at random moments and
restarted, ``SCIMLEDGER_CHAOS_KILLS`` times (5 here; ``scripts/chaos`` runs 25). Between
some runs the directory (read model) is deleted or truncated: it must be rebuilt.

Every request carries its own ``X-Request-Id``, which every event it causes records, so
the event log says exactly which requests were applied. Afterwards:

* every request answered 2xx is in the log and visible over HTTP (a created user reads
  back, a deleted one is gone, the title is the last acknowledged one or a later
  unanswered one, memberships likewise);
* no request answered with an error is in the log;
* every request in the log is whole: its events are contiguous and complete (a user's
  creation is its Provisioned event *and* its name claim; a deletion releases the claim
  and leaves every group), and the log's invariants hold (each live user owns its
  userName claim, each owned claim belongs to a live user of that name, every group
  member is a live user, no duplicate member);
* the directory the server left equals a fresh rebuild from the same log, table by
  table (and ``scimledger replay --verify`` agrees).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.processes import Client, Server, run_cli
from tests.samples import patch_body, user_body

pytestmark = pytest.mark.e2e

KILLS = int(os.environ.get("SCIMLEDGER_CHAOS_KILLS", "5"))
SEED = int(os.environ.get("SCIMLEDGER_CHAOS_SEED", str(random.randrange(2**32))))
CLIENTS = 4
GROUPS = 3
MAX_USERS_PER_CLIENT = 10 + 6 * KILLS  # a pool that grows with the run, so deletions leave users to check
TOPIC = "domain.model:"
# What happens to the directory file after each kill, in turn: every run of the test
# restarts on a deleted, a truncated and an overwritten read model at least once.
TAMPERING = ("none", "delete", "truncate", "garble")


@dataclass
class Outcome:
    rid: str
    kind: str  # create | title | join | leave | delete
    user: str  # the userName (client side key)
    group: str | None = None
    value: str | None = None
    status: int | None = None  # None: no answer (its fate is unknown)
    body: dict | None = None

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def failed(self) -> bool:
        return self.status is not None and not self.acked


@dataclass
class Chaos:
    server: Server
    token: str
    groups: list[str]
    rng: random.Random
    up: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client_loop(self, number: int) -> None:
        rng = random.Random(self.rng.random())
        client = Client(self.server.base_url, self.token)
        users: dict[str, str] = {}  # userName -> id, for users we may still act on
        created = 0
        try:
            while not self.stop.is_set():
                if not self.up.wait(0.2):
                    continue
                rid = f"chaos-{number}-{uuid.uuid4().hex[:12]}"
                if not users or (created < MAX_USERS_PER_CLIENT and rng.random() < 0.3):
                    created += 1
                    name = f"c{number}-u{created}@chaos.example"
                    outcome = Outcome(rid, "create", name)
                    reply = self._send(client, outcome, "POST", "/Users", user_body(name))
                    if reply and outcome.acked:
                        users[name] = reply["id"]
                    continue
                name = rng.choice(sorted(users))
                user_id = users[name]
                roll = rng.random()
                if roll < 0.45:
                    outcome = Outcome(rid, "title", name, value=f"title-{rid}")
                    self._send(client, outcome, "PATCH", f"/Users/{user_id}",
                               patch_body({"op": "Replace", "path": "title", "value": outcome.value}))
                elif roll < 0.9:
                    group = rng.choice(self.groups)
                    kind = "join" if roll < 0.7 else "leave"
                    operation = {"op": "Add", "path": "members", "value": [{"value": user_id}]} if kind == "join" \
                        else {"op": "Remove", "path": "members", "value": [{"value": user_id}]}
                    self._send(client, Outcome(rid, kind, name, group=group), "PATCH", f"/Groups/{group}", patch_body(operation))
                else:
                    self._send(client, Outcome(rid, "delete", name), "DELETE", f"/Users/{user_id}")
                    del users[name]  # whatever the answer, never act on it again
        finally:
            client.close()

    def _send(self, client: Client, outcome: Outcome, method: str, path: str, body=None):
        with self.lock:
            self.outcomes.append(outcome)
        reply = client.call(method, path, body, headers={"X-Request-Id": outcome.rid})
        if reply is None:
            return None
        outcome.status = reply.status
        try:
            outcome.body = reply.body
        except ValueError:
            outcome.body = None
        return outcome.body


def tamper_with_directory(data: Path, how: str, rng: random.Random) -> None:
    path = data / "directory.sqlite3"
    if how == "delete":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    elif how == "truncate" and path.exists():
        size = path.stat().st_size
        with open(path, "r+b") as file:
            file.truncate(int(size * rng.uniform(0.05, 0.9)))
    elif how == "garble" and path.exists():
        with open(path, "r+b") as file:
            file.seek(0)
            file.write(os.urandom(4096))


def run_chaos(tmp_path: Path, kills: int) -> tuple[Chaos, Server, dict]:
    rng = random.Random(SEED)
    token = f"chaos-{uuid.uuid4().hex}"
    # No rate limit: the checks afterwards read every user as fast as they can.
    server = Server(tmp_path / "data", tmp_path / "logs", token, SCIMLEDGER_RATE_LIMIT="0")
    figures = {"kills": 0, "directory_deleted": 0, "directory_truncated": 0, "directory_garbled": 0}
    try:
        server.start().wait_ready()
        setup = Client(server.base_url, token)
        groups = [setup.ok("POST", "/Groups", {"displayName": f"chaos-group-{i}"}, status=201)["id"] for i in range(GROUPS)]
        setup.close()
        chaos = Chaos(server, token, groups, rng)
        threads = [threading.Thread(target=chaos.client_loop, args=(n,), daemon=True) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for kill in range(kills):
            chaos.up.set()
            time.sleep(rng.uniform(0.2, 1.0))
            chaos.up.clear()
            server.kill()
            figures["kills"] += 1
            how = TAMPERING[kill % len(TAMPERING)]
            tamper_with_directory(server.data, how, rng)
            if how != "none":
                figures[f"directory_{how}d" if how != "garble" else "directory_garbled"] += 1
            server.start().wait_ready()
        chaos.up.set()
        time.sleep(0.5)  # a last stretch of load on a server that stays up
        chaos.stop.set()
        for thread in threads:
            thread.join(30)
        assert not any(t.is_alive() for t in threads), "a client thread hung"
        return chaos, server, figures
    except BaseException:
        server.kill()
        raise


# -- checks over HTTP ---------------------------------------------------------------------


def possible_titles(ops: list[Outcome]) -> set:
    titles = [op for op in ops if op.kind == "title"]
    last_acked = max((i for i, op in enumerate(titles) if op.acked), default=None)
    if last_acked is None:
        return {None} | {op.value for op in titles if op.status is None}
    return {titles[last_acked].value} | {op.value for op in titles[last_acked + 1:] if op.status is None}


def possible_membership(ops: list[Outcome], group: str) -> set:
    moves = [op for op in ops if op.kind in ("join", "leave") and op.group == group]
    last_acked = max((i for i, op in enumerate(moves) if op.acked), default=None)
    start = {False} if last_acked is None else {moves[last_acked].kind == "join"}
    later = moves if last_acked is None else moves[last_acked + 1:]
    return start | {op.kind == "join" for op in later if op.status is None}


def check_over_http(chaos: Chaos) -> dict:
    client = Client(chaos.server.base_url, chaos.token)
    by_user: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in chaos.outcomes:
        by_user[outcome.user].append(outcome)
    members = {}
    for group in chaos.groups:
        listed = [m["value"] for m in client.ok("GET", f"/Groups/{group}").get("members", [])]
        assert len(listed) == len(set(listed)), f"duplicate member in {group}"
        members[group] = set(listed)
    live_ids = set()
    for name, ops in by_user.items():
        create = ops[0]
        assert create.kind == "create"
        found = client.ok("GET", "/Users?filter=" + quote(f'userName eq "{name}"'))
        if create.acked:
            user_id = create.body["id"]
            assert found["totalResults"] <= 1
        elif create.failed:
            assert found["totalResults"] == 0, f"{name}: creation answered {create.status} but the user exists"
            continue
        else:  # no answer: either whole or absent
            if found["totalResults"] == 0:
                continue
            user_id = found["Resources"][0]["id"]
        deletes = [op for op in ops if op.kind == "delete"]
        reply = client.call("GET", f"/Users/{user_id}")
        if any(op.acked for op in deletes):
            assert reply.status == 404, f"{name}: deletion acknowledged, yet {reply.status}"
            continue
        if any(op.status is None for op in deletes) and reply.status == 404:
            continue
        assert reply.status == 200, (name, reply.status, reply.raw[:300])
        user = reply.body
        assert user["userName"] == name
        assert found["totalResults"] == 1 and found["Resources"][0]["id"] == user_id
        live_ids.add(user_id)
        assert user.get("title") in possible_titles(ops), (name, user.get("title"), [(o.kind, o.status, o.value) for o in ops])
        for group in chaos.groups:
            assert (user_id in members[group]) in possible_membership(ops, group), (name, group)
    for group, ids in members.items():
        assert ids <= live_ids, f"{group} lists members that are not live users: {ids - live_ids}"
    listing = client.ok("GET", "/Users?count=1000")
    assert {r["id"] for r in listing["Resources"]} == live_ids
    assert listing["totalResults"] == len(live_ids)
    client.close()
    return {"live_users": len(live_ids)}


# -- checks on the store ------------------------------------------------------------------


def read_log(data: Path):
    from adapters.bootstrap import Runtime
    from adapters.settings import Settings

    runtime = Runtime(Settings(data))
    notifications = runtime.ledger.recorder.select_notifications(start=1, limit=10**7)
    decode = runtime.ledger.mapper.transcoder.decode
    events = [(n.id, n.topic.removeprefix(TOPIC), str(n.originator_id), n.originator_version, decode(n.state))
              for n in notifications]
    return runtime, events


def check_log(chaos: Chaos, events: list, claim_ids) -> dict:
    by_rid: dict[str, list] = defaultdict(list)
    for position, topic, originator, version, state in events:
        rid = (state.get("cause") or {}).get("request_id")
        if rid:
            by_rid[rid].append((position, topic, originator, state))
    outcomes = {o.rid: o for o in chaos.outcomes}

    # Acknowledged writes are in the log; failed ones are not.
    for outcome in chaos.outcomes:
        if outcome.acked and outcome.kind in ("create", "title", "delete"):
            assert outcome.rid in by_rid, f"acknowledged {outcome.kind} {outcome.rid} ({outcome.user}) is not in the log"
        if outcome.failed:
            assert outcome.rid not in by_rid, f"{outcome.kind} {outcome.rid} answered {outcome.status} but was applied"

    # Each request's events are contiguous and complete.
    for rid, batch in by_rid.items():
        if rid not in outcomes:
            continue  # setup (groups)
        positions = [p for p, *_ in batch]
        assert positions == list(range(positions[0], positions[0] + len(positions))), f"{rid} is not contiguous"
        topics = sorted(t for _, t, _, _ in batch)
        kind = outcomes[rid].kind
        claims = [t for t in topics if t.startswith("NameClaim.")]
        others = [t for t in topics if not t.startswith("NameClaim.")]
        if kind == "create":  # the user and its unique-name claim(s), or nothing
            assert others == ["User.Provisioned"] and claims, (rid, topics)
            assert set(claims) <= {"NameClaim.Claimed", "NameClaim.Reclaimed"}, (rid, topics)
        elif kind == "delete":  # the user, its claim(s) released, and out of every group
            assert [t for t in others if t != "Group.MembersRemoved"] == ["User.Deprovisioned"], (rid, topics)
            assert claims and set(claims) == {"NameClaim.Released"}, (rid, topics)
        elif kind == "title":
            assert topics == ["User.AttributesChanged"], (rid, topics)
        else:
            assert topics in (["Group.MembersAdded"], ["Group.MembersRemoved"]), (rid, topics)

    # Replay the log, checking its invariants at the end of every request's batch.
    # (A claim's id is keyed with the store's secret, ``claim_ids``; the name is not recorded.)
    users: dict[str, str] = {}  # live user id -> userName
    ever_users: set[str] = set()
    claims: dict[str, str | None] = {}  # claim id -> owner
    memberships: dict[str, set] = defaultdict(set)

    def check_invariants(touched_users: set[str]) -> None:
        for user_id in touched_users:
            if user_id in users:
                claim = str(claim_ids("user", "default", users[user_id]))
                assert claims.get(claim) == user_id, f"live user {user_id} does not own its userName claim"
            for group, ids in memberships.items():
                assert user_id in users or user_id not in ids, f"group {group} still holds deleted user {user_id}"

    touched: set[str] = set()
    for index, (position, topic, originator, version, state) in enumerate(events):
        if topic == "User.Provisioned":
            users[originator] = state["attributes"]["userName"]
            ever_users.add(originator)
            touched.add(originator)
        elif topic == "User.Deprovisioned":
            users.pop(originator, None)
            touched.add(originator)
        elif topic == "NameClaim.Claimed":
            assert "name" not in state, "a name claim records no name"
            claims[originator] = state["owner"]
        elif topic == "NameClaim.Reclaimed":
            claims[originator] = state["owner"]
        elif topic == "NameClaim.Released":
            claims[originator] = None
        elif topic == "Group.MembersAdded":
            for member in state["members"]:
                assert member["value"] not in memberships[originator], f"duplicate member added at {position}"
                assert member["value"] in users, f"a deleted user was added to a group at {position}"
                memberships[originator].add(member["value"])
        elif topic == "Group.MembersRemoved":
            memberships[originator] -= set(state["member_ids"])
        rid = (state.get("cause") or {}).get("request_id")
        following = events[index + 1][4].get("cause", {}).get("request_id") if index + 1 < len(events) else None
        if rid is None or following != rid:  # the end of one request's events
            check_invariants(touched)
            touched = set()
    for claim, owner in claims.items():
        if owner is not None and owner in ever_users:
            assert owner in users and claim == str(claim_ids("user", "default", users[owner])), f"claim {claim} dangles"
    unanswered_applied = sum(1 for o in chaos.outcomes if o.status is None and o.rid in by_rid)
    return {"events": len(events), "requests_in_log": len(by_rid), "unanswered_but_applied": unanswered_applied}


def table_dump(path: Path) -> dict:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("users", "groups", "memberships", "tokens", "position")
        }
    finally:
        conn.close()


def check_rebuild(runtime, data: Path, scratch: Path, head: int) -> None:
    from projections.directory import Directory

    live = table_dump(data / "directory.sqlite3")
    fresh = Directory(scratch / "fresh.sqlite3", runtime.ledger.recorder, runtime.ledger.mapper.transcoder.decode)
    fresh.catch_up()
    fresh.close()
    rebuilt = table_dump(scratch / "fresh.sqlite3")
    assert live["position"] == rebuilt["position"] and live["position"][0][1] == head
    for table in live:
        assert live[table] == rebuilt[table], f"directory table {table} differs from a fresh rebuild"


def replay_verify(data: Path) -> bool:
    """``scimledger replay --verify``: the directory the server left equals a rebuild."""
    done = run_cli("replay", "--verify", data=data, timeout=120)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return True


def test_sigkill_at_random_moments_loses_no_acknowledged_write_and_leaves_nothing_half_applied(tmp_path, record_property):
    chaos, server, figures = run_chaos(tmp_path, KILLS)
    try:
        figures |= check_over_http(chaos)
    finally:
        server.stop()
    runtime, events = read_log(server.data)
    try:
        figures |= check_log(chaos, events, runtime.ledger.claim_ids)
        check_rebuild(runtime, server.data, tmp_path, events[-1][0])
    finally:
        runtime.close()
    figures["replay_verify"] = replay_verify(server.data)
    figures |= {
        "seed": SEED,
        "requests": len(chaos.outcomes),
        "acknowledged": sum(o.acked for o in chaos.outcomes),
        "failed": sum(o.failed for o in chaos.outcomes),
        "unanswered": sum(o.status is None for o in chaos.outcomes),
    }
    print(f"\nchaos figures: {figures}")
    for key, value in figures.items():
        record_property(key, value)
    assert figures["kills"] == KILLS
    assert figures["acknowledged"] >= 20 * KILLS, "too little load got through to prove anything"
    statuses = {o.status for o in chaos.outcomes if o.failed}
    assert not any(s >= 500 for s in statuses if s not in (503,)), f"server errors during chaos: {statuses}"

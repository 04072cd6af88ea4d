"""The floor of ``scripts/bench --compare``: the least a SCIM server on this stack can do.

A trivial falcon app under the same gunicorn settings as ``scimledger serve`` (gthread,
the same workers and threads, access log off): every write (POST, PUT, PATCH, DELETE) is
one durable SQLite insert (WAL, ``synchronous=FULL``, its own transaction, one file
shared by the workers, as the event store is); every read answers a small JSON body.
No parsing beyond reading the body, no auth, no projection: what is left of a request's
CPU once every feature is taken away. ``scripts/bench`` runs its usual Entra mix against
it with ``--lenient`` checks (status only) and prints the ratio.

Run by ``scripts/_compare.py``: ``gunicorn --chdir scripts _floor_app:app`` with
``SCIMLEDGER_FLOOR_DB`` naming the SQLite file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid

import falcon
import orjson

DB = os.environ.get("SCIMLEDGER_FLOOR_DB", "floor.sqlite3")
LIST = orjson.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0,
                     "startIndex": 1, "itemsPerPage": 0, "Resources": []})
_local = threading.local()


def _connection() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(DB, timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS writes (id INTEGER PRIMARY KEY, resource TEXT, body BLOB)")
        _local.conn = conn
    return conn


def _write(resource: str, body: bytes) -> None:
    _connection().execute("INSERT INTO writes (resource, body) VALUES (?, ?)", (resource, body))


class Collection:
    def on_get(self, req, resp, kind):
        resp.data, resp.content_type, resp.status = LIST, "application/scim+json", 200

    def on_post(self, req, resp, kind):
        body = req.bounded_stream.read()
        new_id = uuid.uuid4().hex
        _write(new_id, body)
        resp.data = orjson.dumps({"id": new_id, "meta": {"resourceType": kind}})
        resp.content_type, resp.status = "application/scim+json", 201


class Item:
    def on_get(self, req, resp, kind, resource_id):
        resp.data = orjson.dumps({"id": resource_id})
        resp.content_type = "application/scim+json"

    def on_patch(self, req, resp, kind, resource_id):
        _write(resource_id, req.bounded_stream.read())
        resp.status = 204

    on_put = on_patch

    def on_delete(self, req, resp, kind, resource_id):
        _write(resource_id, b"")
        resp.status = 204


class Ready:
    def on_get(self, req, resp):
        resp.data, resp.content_type = b'{"status":"ready"}', "application/json"


app = falcon.App()
app.add_route("/readyz", Ready())
app.add_route("/scim/v2/{kind}", Collection())
app.add_route("/scim/v2/{kind}/{resource_id}", Item())

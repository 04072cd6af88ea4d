"""The request log: one row per SCIM request, refused ones included (issue 13).

It is what an admin reads to see why Entra reports a failure: time, tenant, token,
method, path, the query (the filter or attribute list that was refused), status,
``scimType`` and ``detail`` of an error, the resource touched, duration. It is an
operational record, not an event (design.md): it lives beside the event store, has a
bounded life (``retention_days``, default 30) and size (``max_rows``), and a subject's
rows go when the subject is erased (``forget``).

Where it lives: with PostgreSQL as the event store, a table ``scimledger_requests`` in
the same database (and schema), so every node's console shows every node's traffic;
with SQLite, ``<data>/requests.sqlite3``.

Writes never happen on the request thread: ``adapters.store.request_writer`` queues
them for one background thread per process.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path


TABLE = "scimledger_requests"
COLUMNS = ("time", "tenant", "token_id", "token_label", "method", "path", "query", "status", "scim_type",
           "detail", "resource_id", "duration_ms", "client", "request_id", "probe")
TEXT_LIMIT = 1000  # characters kept of a path, query or detail
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")

SQLITE_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL, tenant TEXT, token_id TEXT, token_label TEXT, method TEXT NOT NULL,
    path TEXT NOT NULL, query TEXT, status INTEGER NOT NULL, scim_type TEXT, detail TEXT,
    resource_id TEXT, duration_ms REAL NOT NULL, client TEXT, request_id TEXT, probe INTEGER NOT NULL DEFAULT 0
);
"""
PG_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time TEXT NOT NULL, tenant TEXT, token_id TEXT, token_label TEXT, method TEXT NOT NULL,
    path TEXT NOT NULL, query TEXT, status INTEGER NOT NULL, scim_type TEXT, detail TEXT,
    resource_id TEXT, duration_ms DOUBLE PRECISION NOT NULL, client TEXT, request_id TEXT,
    probe INTEGER NOT NULL DEFAULT 0
);
"""
# Two indexes only (each costs every insert): a tenant's rows and a token's rows, newest
# first. Times grow with ids, so a time bound becomes an id bound (``first_id_since``).
INDEXES = (("tenant_id", "(tenant, id)"), ("token", "(token_id, id)"))


@dataclass(frozen=True)
class RequestLogSettings:
    enabled: bool = True
    retention_days: float = 30.0
    max_rows: int = 1_000_000
    flush_seconds: float = 0.5
    queue_limit: int = 20_000

    @classmethod
    def from_env(cls, env) -> RequestLogSettings:
        """``SCIMLEDGER_REQUEST_LOG`` (on|off), ``SCIMLEDGER_REQUEST_LOG_DAYS``,
        ``SCIMLEDGER_REQUEST_LOG_MAX_ROWS``."""
        enabled = str(env.get("SCIMLEDGER_REQUEST_LOG", "on")).strip().lower() not in ("0", "off", "no", "false")
        try:
            days = float(env.get("SCIMLEDGER_REQUEST_LOG_DAYS") or 30)
            rows = int(env.get("SCIMLEDGER_REQUEST_LOG_MAX_ROWS") or 1_000_000)
        except ValueError as error:
            raise SystemExit(f"SCIMLEDGER_REQUEST_LOG_DAYS / _MAX_ROWS: {error}") from None
        if days <= 0 or rows < 1:
            raise SystemExit("SCIMLEDGER_REQUEST_LOG_DAYS and SCIMLEDGER_REQUEST_LOG_MAX_ROWS must be positive")
        return cls(enabled, days, rows)


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class RequestLogStore:
    """SQL over the request table, on SQLite (``path``) or PostgreSQL (``pg`` connection
    settings from ``adapters.store.store_env``). One connection per thread."""

    def __init__(self, path: Path | None = None, pg: dict | None = None):
        self.path, self.pg = path, pg
        self._local = threading.local()
        schema = (pg or {}).get("POSTGRES_SCHEMA")
        self.table = f'"{schema}".{TABLE}' if schema else TABLE
        self._ready = False
        if path is not None:
            # The file made WAL, with its tables, here and now: threads that opened a new file
            # at once (a request's and the writer's) had ``PRAGMA journal_mode=WAL``, which
            # needs the file to itself, refused at once with "database is locked" (a 503),
            # not waited for. Once the file is WAL, that pragma asks for nothing. (Closed
            # again: this may run before gunicorn forks its workers.)
            conn = self._connect()
            try:
                self._create(conn)
            finally:
                conn.close()
            self._ready = True

    # -- connections -------------------------------------------------------------------

    def _connect(self):
        if self.pg is None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        import psycopg

        pg = self.pg
        return psycopg.connect(
            dbname=pg["POSTGRES_DBNAME"], host=pg["POSTGRES_HOST"], port=int(pg["POSTGRES_PORT"]),
            user=pg["POSTGRES_USER"], password=pg.get("POSTGRES_PASSWORD") or None, autocommit=True,
            connect_timeout=int(float(pg.get("POSTGRES_CONNECT_TIMEOUT") or 5)),
            application_name=f"scimledger request-log pid {os.getpid()}",  # (pg_stat_activity: whose it is)
        )

    @property
    def conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            if not self._ready:
                self._create(conn)
                self._ready = True
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def open_thread_connection(self):
        """``conn`` on SQLite; on PostgreSQL (a serving thread's: the console's, each a server process) on use."""
        return self.conn if self.pg is None else None

    def _create(self, conn) -> None:
        ddl = SQLITE_DDL if self.pg is None else PG_DDL.format(table=self.table)
        statements = [ddl] + [f"CREATE INDEX IF NOT EXISTS {TABLE}_{name} ON {self.table} {cols}" for name, cols in INDEXES]
        for statement in statements:
            try:
                conn.execute(statement)
            except Exception as error:  # two nodes creating it at once on PostgreSQL
                if self.pg is None or not ("already exists" in str(error) or "duplicate key" in str(error)):
                    raise

    def _sql(self, sql: str) -> str:
        sql = sql.replace("{t}", self.table)
        return sql if self.pg is None else sql.replace("?", "%s")

    def execute(self, sql: str, args=()):
        try:
            return self.conn.execute(self._sql(sql), args)
        except Exception:
            if self.pg is not None:
                self.close()  # a broken PostgreSQL connection: a fresh one next time
            raise

    # -- writing -----------------------------------------------------------------------

    def insert_many(self, rows: list[tuple]) -> None:
        sql = self._sql(f"INSERT INTO {{t}} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})")
        conn = self.conn
        try:
            if self.pg is None:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            else:
                with conn.cursor() as cursor:
                    cursor.executemany(sql, rows)
        except Exception:
            if self.pg is None:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self.close()
            raise

    def prune(self, retention_days: float, max_rows: int, now: datetime | None = None) -> int:
        """Drop rows older than the retention and beyond the size bound; returns how many."""
        cutoff = utc_text((now or datetime.now(UTC)) - timedelta(days=retention_days))
        gone = self.execute("DELETE FROM {t} WHERE id < ? AND time < ?", (self.first_id_since(cutoff), cutoff)).rowcount
        top = self.execute("SELECT max(id) FROM {t}").fetchone()[0]
        if top is not None and top > max_rows:
            gone += self.execute("DELETE FROM {t} WHERE id <= ?", (top - max_rows,)).rowcount
        return gone

    def forget(self, resource_id: str, names: list[str] = ()) -> int:
        """Erasure: the rows that touched the subject, or whose path, query or detail
        name it (its id, userName, emails)."""
        gone = self.execute("DELETE FROM {t} WHERE resource_id = ?", (resource_id,)).rowcount
        for needle in {resource_id, *(n for n in names if n and len(n) >= 3)}:
            pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            gone += self.execute(
                "DELETE FROM {t} WHERE path LIKE ? ESCAPE '\\' OR query LIKE ? ESCAPE '\\' OR detail LIKE ? ESCAPE '\\'",
                (pattern, pattern, pattern),
            ).rowcount
        return gone

    # -- reading -----------------------------------------------------------------------

    def first_id_since(self, moment: str) -> int:
        """The first id whose time is at or after ``moment`` (binary search on the primary
        key: rows are written in time order, give or take a batch; past the end: max + 1)."""
        low, high = self.execute("SELECT min(id), max(id) FROM {t}").fetchone()
        if low is None:
            return 0
        high += 1
        while low < high:
            middle = (low + high) // 2
            row = self.execute("SELECT id, time FROM {t} WHERE id >= ? ORDER BY id LIMIT 1", (middle,)).fetchone()
            if row is None or row[1] >= moment:
                high = middle
            else:
                low = row[0] + 1
        return low

    def search(self, tenant: str | None, status: str | None = None, token: str | None = None,
               path: str | None = None, since: str | None = None, until: str | None = None,
               before: int | None = None, limit: int = 50) -> list[dict]:
        """Newest first; ``before`` (an id) pages on. ``tenant`` None: every tenant
        (the command line). ``token``: a token's label or id."""
        where, args = ["1=1"], []
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        if status:
            if status not in STATUS_CLASSES:
                raise ValueError(f"status: use one of {', '.join(STATUS_CLASSES)}")
            low = int(status[0]) * 100
            where.append("status >= ? AND status < ?")
            args += [low, low + 100]
        if token:
            where.append("(token_label = ? OR token_id = ?)")
            args += [token, token]
        if path:
            where.append("path LIKE ? ESCAPE '\\'")
            args.append("%" + path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if since is not None:
            where.append("id >= ? AND time >= ?")
            args += [self.first_id_since(since), since]
        for condition, value in (("time <= ?", until), ("id < ?", before)):
            if value is not None:
                where.append(condition)
                args.append(value)
        rows = self.execute(
            f"SELECT id, {', '.join(COLUMNS)} FROM {{t}} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [dict(zip(("id", *COLUMNS), row)) for row in rows]

    def per_minute(self, tenant: str, since: str) -> list[tuple[str, int, int]]:
        """``(minute "YYYY-MM-DDTHH:MM", status class 2..5, count)`` since ``since``."""
        return [tuple(r) for r in self.execute(
            "SELECT substr(time, 1, 16), status / 100, count(*) FROM {t} WHERE tenant = ? AND id >= ? AND time >= ? "
            "GROUP BY substr(time, 1, 16), status / 100",
            (tenant, self.first_id_since(since), since),
        ).fetchall()]

    def last_of_tokens(self, token_ids: list[str]) -> dict[str, dict]:
        """Each token's newest request."""
        found = {}
        for token_id in token_ids:
            row = self.execute(
                "SELECT time, method, path, status FROM {t} WHERE token_id = ? ORDER BY id DESC LIMIT 1", (token_id,)
            ).fetchone()
            if row is not None:
                found[token_id] = dict(zip(("time", "method", "path", "status"), row))
        return found

    def last_probe(self, tenant: str) -> dict | None:
        """The newest request that looked like Entra's Test connection (a match query
        for a random GUID answered 200)."""
        row = self.execute(
            "SELECT time, token_label, path, query FROM {t} WHERE tenant = ? AND probe = 1 ORDER BY id DESC LIMIT 1",
            (tenant,),
        ).fetchone()
        return dict(zip(("time", "token_label", "path", "query"), row)) if row else None


_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
PROBE = re.compile(r'^\s*[\w.:\[\]" ]+\s+eq\s+"' + _GUID + r'"\s*$', re.IGNORECASE)


def is_probe(method: str, path: str, filter_text: str | None, status: int) -> bool:
    return (method == "GET" and status == 200 and filter_text is not None and path.endswith(("/Users", "/Groups"))
            and PROBE.match(filter_text) is not None)

"""Per-person data keys (crypto-shredding, issue 11) and the master key that wraps them.

Every user has a random 256-bit data key of its own; every personal value of its events
and snapshots is sealed with it (``adapters.store.sealing``). The data keys live in a
table beside the events (``scimledger_keys``, in the same SQLite file or PostgreSQL
schema, so every node sees the same keys), each wrapped (AES-256-GCM, the subject id as
associated data) by a key derived from the *master key*, which is not in the store:

* ``SCIMLEDGER_MASTER_KEY`` (base64 of 32 bytes; set the same on every node), or
* ``SCIMLEDGER_MASTER_KEY_FILE``, or by default ``<data>/master.key``: generated (mode
  0600) only when the store is new, and the operator is told once to back it up.

``scimledger_key_check`` holds an HMAC of the master key: a node started with a wrong or
missing master key stops at once with that reason, instead of reading garbage or, worse,
wrapping new keys under a second master key. A node never generates a master key for a
store that already has a check row (a shared PostgreSQL store: every node must be given
the one key).

Erasure destroys the subject's row (``KeyTable.destroy``): SQLite with ``secure_delete``
and a truncating checkpoint of the write-ahead log, PostgreSQL with a ``VACUUM`` of the
table. From then on no process can open that person's values; each process also drops
the key from its cache when its directory applies the erasure (``forget``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import logging
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from adapters.store.key_tables import CHECK_TABLE, KEYS_TABLE, now_text, postgres_table, sqlite_table
from adapters.store.recent import Recent

__all__ = ["CHECK_TABLE", "KEYS_TABLE", "KeyTable", "MasterKey", "MasterKeyError", "MasterKeySource", "open_keys",
           "parse_master_key", "postgres_table", "sqlite_table"]
KEY_FILE = "master.key"
MASTER_ENV, MASTER_FILE_ENV = "SCIMLEDGER_MASTER_KEY", "SCIMLEDGER_MASTER_KEY_FILE"
# The check row of a store written by ``scripts/bench --no-encryption``: never a real HMAC.
PLAINTEXT_CHECK = b"plaintext: written without encryption by a benchmark"
log = logging.getLogger("scimledger")
# Unwrapped keys kept per process, the least recently used dropped first: a server's
# working set (the users its requests and catch-ups touch now), twice a catch-up page of
# subjects (projections.tracking.PAGE) so a page's keys read ahead stay until used. A
# rebuild of the whole log widens it (``widen``: one read of each key, not one per page).
KEY_LIMIT = 2048
REBUILD_KEY_LIMIT = 250_000
# AESGCM objects kept per process (least recently used dropped): each holds an OpenSSL
# context of about 2.5 KB, and making one costs about 2 us: the few users in use now.
CIPHER_LIMIT = 64
_MISSING = object()


class MasterKeyError(SystemExit):
    """The master key is missing, malformed or not this store's: a clear message, exit 1."""

    def __init__(self, message: str):
        super().__init__(f"scimledger: {message}")


@dataclass(frozen=True)
class MasterKeySource:
    """Where the master key comes from (``adapters.settings`` reads the environment)."""

    key: bytes = b""  # SCIMLEDGER_MASTER_KEY, decoded; b"": not given
    file: Path | None = None  # SCIMLEDGER_MASTER_KEY_FILE; None: <data>/master.key
    encrypt: bool = True  # False only for scripts/bench --no-encryption (a store of its own)

    def __repr__(self) -> str:
        return f"MasterKeySource(key={'<given>' if self.key else '<none>'}, file={self.file}, encrypt={self.encrypt})"

    def path(self, data: Path) -> Path:
        return Path(self.file) if self.file else Path(data) / KEY_FILE


def parse_master_key(text: str, where: str) -> bytes:
    """The 32 bytes a base64 text names; the error never repeats the text."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise MasterKeyError(f"{where} is not base64 (expected 32 bytes in base64, 44 characters)") from None
    if len(key) != 32:
        raise MasterKeyError(f"{where} holds {len(key)} bytes, not 32 (a master key is 32 random bytes in base64)")
    return key


class MasterKey:
    """Wraps and unwraps data keys; its check value identifies it without revealing it."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError("a master key is 32 bytes")
        kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"scimledger data keys v1").derive(key)
        self._wrap = AESGCM(kek)
        self.check = hmac.new(key, b"scimledger key check", hashlib.sha256).digest()
        # The NameClaim ids' key (domain.uniqueness.ClaimIds): a deployment secret, not the name.
        self.claims_secret = hmac.new(key, b"scimledger name claims", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "MasterKey(...)"

    def wrap(self, subject: str, data_key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._wrap.encrypt(nonce, data_key, subject.encode())

    def unwrap(self, subject: str, wrapped: bytes) -> bytes:
        return self._wrap.decrypt(wrapped[:12], wrapped[12:], subject.encode())


# -- the key table -----------------------------------------------------------------------------


class KeyTable:
    """The data keys of one store: create, look up (cached per process), destroy.

    ``key(subject)`` answers an ``AESGCM`` for the subject, or None when it has none
    (destroyed: the person was erased). A miss reads the table; absence is cached too,
    since a subject's key is committed before its first event and only erasure removes it
    (an absence dropped from the cache is read again, and found absent again).

    Two caches, both keeping the most recently used: the unwrapped key bytes
    (``KEY_LIMIT`` subjects, about 200 bytes each) and the ``AESGCM`` objects made of them
    (``CIPHER_LIMIT``): each of those holds an OpenSSL context of its own, about 2.5 KB of
    the process's memory, while making one costs about 2 us. Personal-data keys stay in
    memory only while they are in use, and a long-running server's memory does not grow
    with the number of users it has met (the soak of issue 15).
    """

    def __init__(self, table, master: MasterKey, limit: int = KEY_LIMIT, cipher_limit: int = CIPHER_LIMIT):
        self.table, self.master = table, master
        self._cache = Recent(limit)
        self._ciphers = Recent(cipher_limit)
        self._staged = threading.local()  # rows: made inside ``with_events``, for the recorder to write

    def __repr__(self) -> str:
        return "KeyTable(...)"

    @property
    def claims_secret(self) -> bytes:
        return self.master.claims_secret

    def cached(self) -> tuple[int, int]:
        """How many unwrapped keys and ciphers this process holds now."""
        return len(self._cache), len(self._ciphers)

    def widen(self, limit: int = REBUILD_KEY_LIMIT) -> None:
        """Keep up to ``limit`` keys from now on (a rebuild reading the whole log meets a
        user's events far apart: one read of each key instead of one per page)."""
        self._cache.widen(limit)

    def read_all(self) -> None:
        """Cache every key, up to the widened limit, from one scan of the table: a rebuild
        reading the whole log meets every user, and looking their keys up a page at a time
        cost its reader twice the CPU of one scan (the 1M-event log's 234,500 keys,
        unwrapping included: 1.85 s against 0.91 s, medians of 3 interleaved). A subject
        the scan did not find is still looked up when met (its key may be newer). SQLite
        tables only: the read-ahead child that calls it reads a SQLite log."""
        cache = self._cache
        for subject, wrapped in self.table.wrapped(cache.limit):
            cache.put(subject, self._unwrap(subject, wrapped))

    def key(self, subject: str) -> AESGCM | None:
        cipher = self._ciphers.get(subject)
        if cipher is not None:
            return cipher
        raw = self._cache.get(subject, _MISSING)
        if raw is _MISSING:
            wrapped = self.table.get(subject)
            raw = None if wrapped is None else self._unwrap(subject, wrapped)
            self._cache.put(subject, raw)
        if raw is None:
            return None
        cipher = AESGCM(raw)
        self._ciphers.put(subject, cipher)
        return cipher

    def create(self, subjects: Iterable[tuple[str, str]]) -> None:
        """New data keys for ``(subject, tenant)`` pairs that have none, in one commit of
        their own before the events that use them. If the events then fail to save, the
        key stays behind, an orphan that holds nothing personal (and no event names it).
        Inside ``with_events`` the keys are written in the events' own transaction instead."""
        rows, fresh = [], []
        created = now_text()
        for subject, tenant in subjects:
            if self._cache.get(subject) is not None:
                continue
            data_key = AESGCM.generate_key(bit_length=256)
            rows.append((subject, tenant, self.master.wrap(subject, data_key), created))
            fresh.append((subject, data_key))
        if not rows:
            return
        staged = getattr(self._staged, "rows", None)
        if staged is not None:
            staged.extend(rows)
            self._staged.made.extend(subject for subject, _ in fresh)
        else:
            self.table.insert(rows)
        for subject, key in fresh:
            self._cache.put(subject, key)

    @contextmanager
    def with_events(self) -> Iterator[None]:
        """Keys made inside (``create``) on this thread are not committed on their own: the
        event recorder takes them (``take_staged``) and inserts them in the transaction of
        the events that use them, so a key and its user's first events are written together
        or not at all (one commit and one fsync fewer per new user). Only for a recorder that
        does take them (``adapters.store.sqlitestore.Recorder``); if the save fails, the
        keys are forgotten (their rows were rolled back with the events)."""
        staged = self._staged
        staged.rows, staged.made = [], []
        try:
            yield
        except BaseException:
            self._drop(staged.made)
            raise
        finally:
            left, made = staged.rows, staged.made
            staged.rows = staged.made = None
        if left:  # nothing was recorded that used them (no event saved): never written
            self._drop(made)

    def _drop(self, subjects: Iterable[str]) -> None:
        for subject in subjects:
            self._cache.discard(subject)
            self._ciphers.discard(subject)

    def take_staged(self) -> list[tuple[str, str, bytes, str]]:
        """The rows ``create`` staged on this thread and not written yet (the recorder writes them)."""
        rows = getattr(self._staged, "rows", None)
        if not rows:
            return []
        self._staged.rows = []
        return rows

    def destroy(self, subjects: Iterable[str]) -> int:
        """Delete the subjects' keys for good; returns how many rows went (0: gone already)."""
        subjects = list(subjects)
        if not subjects:
            return 0
        deleted = self.table.delete(subjects)
        for subject in subjects:
            self.forget(subject)
        return deleted

    def forget(self, subject: str) -> None:
        """This process will not open the subject's values again (its key was destroyed)."""
        self._cache.put(subject, None)
        self._ciphers.discard(subject)

    def prefetch(self, subjects: Iterable[str]) -> None:
        """Read the keys of ``subjects`` not cached yet in one query (a page of events:
        one round trip instead of one per user)."""
        cache = self._cache
        missing = list({s for s in subjects if s not in cache})
        if not missing:
            return
        found = self.table.get_many(missing)
        for subject in missing:
            wrapped = found.get(subject)
            cache.put(subject, None if wrapped is None else self._unwrap(subject, wrapped))

    def export_rows(self) -> Iterator[tuple[str, str, bytes, str]]:
        """``(subject, tenant, wrapped, created)`` of every key, still wrapped (copy-store, backup)."""
        return self.table.rows()

    def _unwrap(self, subject: str, wrapped: bytes) -> bytes:
        try:
            return self.master.unwrap(subject, wrapped)
        except InvalidTag:
            # The check row matched, so this row was altered or moved from another subject.
            raise MasterKeyError(f"the data key of {subject} in the key table does not open with this store's master key") from None

    def close(self) -> None:
        self.table.close()


# -- opening ---------------------------------------------------------------------------------


def open_keys(table, source: MasterKeySource, data: Path, where: str) -> KeyTable | None:
    """The store's key table, its tables created, checked against the master key; None
    for a plaintext benchmark store (``source.encrypt`` False). ``where`` names the store
    in messages. Raises ``MasterKeyError`` when the master key is missing or not the store's."""
    table.create_tables()
    stored = table.check()
    if not source.encrypt:
        if stored not in (None, PLAINTEXT_CHECK):
            raise MasterKeyError(f"the store {where} is encrypted: --no-encryption is for a benchmark's own new store")
        table.set_check(PLAINTEXT_CHECK)
        return None
    if stored == PLAINTEXT_CHECK:
        raise MasterKeyError(f"the store {where} was written without encryption by a benchmark "
                             "(scripts/bench --no-encryption): it is not a store to serve from")
    path = source.path(data)
    generated = False
    if source.key:
        key, origin = source.key, MASTER_ENV
    elif path.exists():
        key, origin = read_key_file(path), str(path)
    elif stored is not None:
        raise MasterKeyError(
            f"the store {where} is encrypted under a master key, and this node has none: {path} does not exist "
            f"and {MASTER_ENV} is not set. Restore the key file from your backup (or set {MASTER_ENV} or "
            f"{MASTER_FILE_ENV} to the key the other nodes use); without it the store's personal data cannot be read."
        )
    else:
        key, generated = _generate(path)
        origin = str(path)
    master = MasterKey(key)
    if stored is None:
        stored = table.set_check(master.check)  # two nodes starting at once: the first row wins
    if not hmac.compare_digest(stored, master.check):
        if generated:
            path.unlink(missing_ok=True)  # ours, of no use: another node set the store's key first
        raise MasterKeyError(
            f"the master key (from {origin}) does not match this store ({where}): its data keys were wrapped by "
            f"another master key. Restore the master key from your backup of {path} (or give every node the same "
            f"{MASTER_ENV}); refusing to start rather than read or write garbage."
        )
    if generated:
        # A log record, not a print: under `serve` the log is JSON lines; a plain command
        # without logging set up still shows it on stderr (logging's last-resort handler).
        log.warning("generated a new master key in %s for this new store. Back it up now, apart from the data: "
                    "without it the stored personal data cannot be read.", path)
    return KeyTable(table, master)


def read_key_file(path: Path) -> bytes:
    try:
        text = path.read_text()
    except OSError as error:
        raise MasterKeyError(f"cannot read the master key file {path}: {error.strerror or error}") from None
    return parse_master_key(text, f"the master key file {path}")


def _generate(path: Path) -> tuple[bytes, bool]:
    """A new master key in ``path`` (mode 0600), written whole before it appears: a
    temporary file linked into place, which fails if another process got there first
    (then that one's key is read; the boolean says whether we made it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".master.key.")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(base64.b64encode(key) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return read_key_file(path), False
    finally:
        os.unlink(temporary)
    return key, True

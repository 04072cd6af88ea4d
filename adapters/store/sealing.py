"""Sealing: every personal value of a user's events and snapshots is encrypted with that
user's data key (``adapters.store.keys``) before it is written (issue 11).

What is sealed, one AES-256-GCM box per event (the user's id as associated data):

* ``User.Provisioned``: ``attributes``;
* ``User.AttributesChanged``: ``changes`` (paths and new values);
* a ``User`` snapshot: ``state.attributes``.

The sealed field becomes an envelope that says what it holds without the values::

    {"$sealed": "<base64 of nonce + ciphertext>", "for": "<user id>",
     "paths": ["emails", "name", "userName", ...], "removed": ["title"]}

so the rest stays readable in the store: event type, time, tenant, ids, version, the
cause (actor, request), and which attribute paths were set or removed (``removed``: only
in changes). The other User events (Deactivated, Reactivated, Deprovisioned,
PersonalDataErased) carry no personal value; groups, tokens and clients are not
personal data. (``$`` cannot begin a SCIM attribute name, so no attribute is mistaken for
an envelope.)

Decoding (``SealingTranscoder.decode``, what the mapper and every projection use) opens
the envelope and gives back exactly the plaintext field. When the key is gone (the person
was erased) every value comes back as ``"[erased]"`` under its path and removed paths as
None: the projections then show what they showed live after the erasure, which redacts
every value the same way (``projections.audit_changes.redact_changes``).
"""

from __future__ import annotations

import binascii
import os
from datetime import datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from adapters.store.keys import KeyTable
from adapters.store.transcoder import OrjsonTranscoder
from domain.model import User, apply_changes, flatten
from projections.audit_changes import ERASED
from projections.log_pages import file_of, pages_in

MARK = "$sealed"
_USER_TOPIC = get_topic(User)
_PROVISIONED, _CHANGED = User.Provisioned, User.AttributesChanged
_EXTENSIONS = User.EXTENSIONS
_TIMES = ("timestamp", "_created_on", "_modified_on")


class SealingError(Exception):
    """A user's values cannot be sealed or opened: no key to write with, or a box that
    does not open with its key (altered)."""


class SealingMapper(Mapper):
    """The library's mapper, sealing the personal fields of User events and snapshots."""

    def __init__(self, transcoder, keys: KeyTable):
        super().__init__(transcoder=transcoder)
        self.keys = keys

    def to_stored_event(self, domain_event) -> StoredEvent:
        cls = type(domain_event)
        state = dict(domain_event.__dict__)
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        if cls is _PROVISIONED:
            state["attributes"] = self._seal_attributes(originator_id, state["attributes"], state["tenant"])
        elif cls is _CHANGED:
            changes = state["changes"]
            state["changes"] = self._seal(str(originator_id), changes, {
                "paths": sorted(changes), "removed": sorted(p for p, v in changes.items() if v is None)})
        elif cls is Snapshot and state.get("topic") == _USER_TOPIC:
            inner = dict(state["state"])
            if inner.get("attributes"):  # an erased user's snapshot holds none
                inner["attributes"] = self._seal_attributes(originator_id, inner["attributes"], inner.get("tenant"))
            state["state"] = inner
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        return StoredEvent(originator_id=originator_id, originator_version=originator_version,
                           topic=get_topic(cls), state=self.transcoder.encode(state))

    def prepare(self, events) -> None:
        """Create, in one commit, the data keys of the users these events provision."""
        self.keys.create((str(e.originator_id), e.tenant) for e in events if type(e) is _PROVISIONED)

    def _seal_attributes(self, originator_id, attributes: dict, tenant: str | None) -> dict:
        subject = str(originator_id)
        if self.keys.key(subject) is None and tenant is not None:
            self.keys.create([(subject, tenant)])  # not prepared (a direct mapper call): its own commit
        return self._seal(subject, attributes, {"paths": sorted(flatten(attributes, _EXTENSIONS))})

    def _seal(self, subject: str, value: Any, shape: dict) -> dict:
        key = self.keys.key(subject)
        if key is None:
            raise SealingError(f"user {subject} has no data key (erased): refusing to store its values")
        nonce = os.urandom(12)
        box = nonce + key.encrypt(nonce, orjson.dumps(value), subject.encode())
        return {MARK: binascii.b2a_base64(box, newline=False).decode(), "for": subject, **shape}


class SealingTranscoder(OrjsonTranscoder):
    """orjson, timestamps revived, sealed fields opened (or erased) with the key table."""

    def __init__(self, keys: KeyTable):
        self.keys = keys

    def decode(self, data: bytes) -> dict:
        obj = self._opened(orjson.loads(data), orjson.loads)
        moment = obj.get("timestamp")
        if moment.__class__ is str:
            obj["timestamp"] = datetime.fromisoformat(moment)
        state = obj.get("state")
        if state.__class__ is dict:  # a snapshot
            for key in _TIMES:
                moment = state.get(key)
                if moment.__class__ is str:
                    state[key] = datetime.fromisoformat(moment)
        return obj

    def decode_to_json(self, data: bytes, parsed: bool = False) -> dict:
        """The stored event for handing on as JSON (``projections.read_ahead``): its sealed
        field opened, but as the plaintext JSON itself (an ``orjson.Fragment``, not parsed
        here only to be written again; ``parsed``: as values, for an event the reader works
        on), timestamps as the stored text. ``orjson.loads(orjson.dumps(...))`` of it gives
        ``decode``'s dict, timestamps as text."""
        return self._opened(orjson.loads(data), orjson.loads if parsed else orjson.Fragment)

    def _opened(self, obj: dict, parse) -> dict:
        """``obj`` with its one sealed field (an event's attributes or changes, a
        snapshot's attributes) opened, the plaintext given to ``parse``."""
        value = obj.get("attributes")
        if value.__class__ is dict and MARK in value:
            obj["attributes"] = self._open(value, _erased_attributes, parse)
            return obj
        value = obj.get("changes")
        if value.__class__ is dict and MARK in value:
            obj["changes"] = self._open(value, _erased_changes, parse)
            return obj
        state = obj.get("state")
        if state.__class__ is dict:  # a snapshot
            value = state.get("attributes")
            if value.__class__ is dict and MARK in value:
                state["attributes"] = self._open(value, _erased_attributes, parse)
        return obj

    def _open(self, envelope: dict, erased, parse) -> Any:
        subject = envelope["for"]
        key = self.keys.key(subject)
        if key is None:
            return erased(envelope)
        box = binascii.a2b_base64(envelope[MARK])
        try:
            return parse(key.decrypt(box[:12], box[12:], subject.encode()))
        except InvalidTag:
            raise SealingError(f"a sealed value of user {subject} does not open with its key (altered?)") from None


_SEALED_TOPICS = frozenset({get_topic(_PROVISIONED), get_topic(_CHANGED)})


class PrefetchingRecorder:
    """The event log as projections read it: each page of notifications comes with the data
    keys of its users read ahead, in one query (a replay or a node catching up from far
    behind meets a new user every few events; one query each was most of its time)."""

    def __init__(self, recorder, keys: KeyTable, select=None):
        """``select``: how pages are read (default the recorder's ``select_notifications``;
        a rebuild passes ``projections.log_pages.pages_of(recorder)``)."""
        self._recorder, self._keys = recorder, keys
        self._select = select or recorder.select_notifications

    def select_notifications(self, *args, **kwargs):
        notifications = self._select(*args, **kwargs)
        topics = _SEALED_TOPICS
        subjects = [str(n.originator_id) for n in notifications if n.topic in topics]
        if subjects:
            self._keys.prefetch(subjects)
        return notifications

    def read_ahead(self, decode) -> tuple | None:
        """For ``projections.read_ahead``: ``(open_child,)`` when a child process can
        read this log itself (a SQLite file) and ``decode`` is this key table's
        transcoder's; None otherwise. ``open_child``, called in the forked child, gives a
        ``(select_notifications, decode_to_json)`` on connections and caches of its own."""
        path, transcoder = file_of(self._recorder), getattr(decode, "__self__", None)
        ours = getattr(decode, "__func__", None) is SealingTranscoder.decode and transcoder.keys is self._keys
        if path is None or not ours:
            return None
        recorder, table, master = self._recorder, self._keys.table, self._keys.master

        def open_child():
            keys = KeyTable(table, master)  # its own caches; the table reconnects in a new process
            keys.widen()  # it reads the whole log, as the rebuild reader's own key table was told
            keys.read_all()
            reader = PrefetchingRecorder(recorder, keys, pages_in(path, recorder))
            return reader.select_notifications, SealingTranscoder(keys).decode_to_json

        return (open_child,)

    def __getattr__(self, name: str):
        return getattr(self._recorder, name)


def _erased_attributes(envelope: dict) -> dict:
    return apply_changes({}, dict.fromkeys(envelope["paths"], ERASED), _EXTENSIONS)


def _erased_changes(envelope: dict) -> dict:
    changes = dict.fromkeys(envelope["paths"], ERASED)
    changes.update(dict.fromkeys(envelope.get("removed", ()), None))
    return changes


def is_sealed(value: Any) -> bool:
    return value.__class__ is dict and MARK in value

"""Carry a store of the plaintext format (schema version 1) into an encrypted one, as
``copy-store`` copies it: each event is read as the old format wrote it and stored again
through the target's sealing mapper (adapters.store.keys / sealing: a user's values sealed
with their own data key, created as the user's first event goes by).

``NameClaim`` ids change on the way: the old ones were a plain uuid5 of the name (a
dictionary lookup away from the userName); the target's are keyed (``EventStore.claim_ids``).
A ``Claimed`` event names its claim, so its new id is computed from that name, and the
name dropped from the stored state; the claim's later events (``Released``, ``Reclaimed``)
follow it by its old id. Users erased in the old store had their values in the clear; their
new keys are destroyed once the copy is committed (``destroy_erased``), so what the copy
holds of them is ciphertext nobody can open.
"""

from __future__ import annotations

from eventsourcing.persistence import Mapper, StoredEvent

from domain.model import NameClaim, User
from projections.tracking import topics_of

CLAIMED = topics_of(NameClaim.Claimed)[0]
ERASED = topics_of(User.PersonalDataErased)[0]
PROVISIONED = topics_of(User.Provisioned)[0]
PAGE = 10_000


class Resealer:
    """``reseal(page)`` for ``adapters.store.copy.copy_store``: a page of the plaintext
    source's notifications -> the target's rows, same positions, versions and timestamps."""

    def __init__(self, source, target):
        self.transcoder = source.transcoder  # the plain orjson transcoder of the old format
        self.plain = Mapper(transcoder=source.transcoder)
        self.sealing = target.mapper()
        self.claim_ids, self.keys = target.claim_ids, target.keys
        self.claims: dict = {}  # old claim id -> new
        self.erased: list[str] = []

    def __call__(self, page: list) -> list[tuple]:
        stored = [self._rekeyed(n) for n in page]
        events = [self.plain.to_domain_event(s) for s in stored]
        rows = []
        for notification, event in zip(page, events):
            sealed = self.sealing.to_stored_event(event)
            rows.append((notification.id, sealed.originator_id, sealed.originator_version, sealed.topic, sealed.state))
            if notification.topic == ERASED:
                self.erased.append(str(notification.originator_id))
        return rows

    def make_keys(self, recorder, head: int) -> list[str]:
        """Every user's data key, made in one commit of the target's key table before the
        copy's own transaction begins (on SQLite the two could not both write at once);
        returns the subjects, for ``destroy`` if the copy fails."""
        subjects, start = [], 1
        while start <= head:
            page = recorder.select_notifications(start, PAGE, stop=head, topics=[PROVISIONED])
            subjects += [(str(n.originator_id), self.transcoder.decode(n.state)["tenant"]) for n in page]
            if len(page) < PAGE:
                break
            start = page[-1].id + 1
        self.keys.create(subjects)
        return [subject for subject, _ in subjects]

    def _rekeyed(self, n) -> StoredEvent:
        if n.topic == CLAIMED:
            state = self.transcoder.decode(n.state)
            name = state.pop("name")
            new_id = self.claims[n.originator_id] = self.claim_ids(state["kind"], state["tenant"], name)
            return StoredEvent(new_id, n.originator_version, n.topic, self.transcoder.encode(state))
        new_id = self.claims.get(n.originator_id)
        if new_id is not None:
            return StoredEvent(new_id, n.originator_version, n.topic, n.state)
        return StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)

    def destroy_erased(self) -> int:
        """After the copy is committed: the keys of the users the old store had erased."""
        return self.keys.destroy(self.erased) if self.erased else 0

"""Group commit (a prototype, off by default): concurrent commands of one process saved in
one event-store transaction.

On PostgreSQL every insert into the event log takes the log's table lock (``LOCK TABLE
... IN EXCLUSIVE MODE``) until it commits, so all the writes of all the nodes go one
transaction at a time. ``GroupCommitLedger.save`` lets the threads of one process share
transactions: a thread that wants to save while another thread's transaction is under
way queues its events; when that transaction ends, the first queued thread takes
every queued save (whose aggregates do not overlap) and inserts them all in one
transaction. No timer: a save that finds nobody committing commits at once.

Guarantees are those of a plain ``save``:

* one command's events are still recorded atomically, in order, each aggregate version
  checked by the (originator_id, originator_version) key: the uniqueness guard (a name
  claim aggregate), If-Match and the optimistic retries of ``Ledger`` see exactly the
  same conflicts;
* saves touching the same aggregate never share a batch; when a batch fails on a key
  conflict nothing of it was written, and each save in it is then tried again *on its
  own*, so every command gets its own outcome (the conflicting one an IntegrityError,
  which the ledger retries or reports; the others succeed);
* each command gets the log positions of its own events, so read-your-writes holds.

Enable with ``SCIMLEDGER_GROUP_COMMIT=1`` (see ``adapters.store.config.open_ledger``).
"""

from __future__ import annotations

import threading
from typing import Any

from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import IntegrityError, Notification, Recording

from domain.service import Ledger


class _Pending:
    __slots__ = ("processing", "stored", "ids", "recordings", "error", "done")

    def __init__(self, processing: ProcessingEvent, stored: list):
        self.processing = processing
        self.stored = stored
        self.ids = {s.originator_id for s in stored}
        self.recordings: list[Recording] | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommitLedger(Ledger):
    name = Ledger.name  # the same tables (eventsourcing names them after the application)
    max_batch = 64

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._group = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False
        self.batches = 0  # statistics, for the benchmark
        self.batched_saves = 0

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording]:
        if kwargs:
            return super().save(*objs, **kwargs)
        processing: ProcessingEvent = ProcessingEvent()
        processing.collect_events(*objs)
        if not processing.events:
            return []
        mapper = self.events.mapper
        pending = _Pending(processing, [mapper.to_stored_event(e) for e in processing.events])
        with self._group:
            self._queue.append(pending)
        while True:
            with self._group:
                while self._committing and not pending.done:
                    self._group.wait()
                if pending.done:
                    break
                # Nobody is committing: lead. The oldest queued save (maybe ours) is
                # always in the batch, so every round makes progress.
                batch = self._take_batch()
                self._committing = True
            try:
                self._commit(batch)
            finally:
                with self._group:
                    self._committing = False
                    self._group.notify_all()
        if pending.error is not None:
            raise pending.error
        assert pending.recordings is not None
        self._take_snapshots(processing)
        self._notify(pending.recordings)
        self.notify(processing.events)  # deprecated hook, as Application.save calls it
        return pending.recordings

    def _take_batch(self) -> list[_Pending]:
        """Queued saves with disjoint aggregates, oldest first (called holding the lock)."""
        batch, ids, rest = [], set(), []
        for pending in self._queue:
            if len(batch) < self.max_batch and not (pending.ids & ids):
                batch.append(pending)
                ids |= pending.ids
            else:
                rest.append(pending)
        self._queue[:] = rest
        return batch

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            self._insert(batch)
        except IntegrityError as conflict:
            if len(batch) == 1:
                batch[0].error = conflict
            else:  # nothing was written: give every save its own outcome
                for pending in batch:
                    try:
                        self._insert([pending])
                    except BaseException as error:  # noqa: BLE001 - handed to its own thread
                        pending.error = error
        except BaseException as error:  # noqa: BLE001 - every waiting save learns of it
            for pending in batch:
                pending.error = error
        finally:
            with self._group:
                for pending in batch:
                    pending.done = True
                self.batches += 1
                self.batched_saves += len(batch)

    def _insert(self, batch: list[_Pending]) -> None:
        stored = [s for pending in batch for s in pending.stored]
        ids = self.recorder.insert_events(stored)
        assert ids is not None and len(ids) == len(stored)
        position = 0
        for pending in batch:
            recordings = []
            for event, record in zip(pending.processing.events, pending.stored, strict=True):
                recordings.append(Recording(event, Notification(
                    originator_id=record.originator_id, originator_version=record.originator_version,
                    topic=record.topic, state=record.state, id=ids[position],
                )))
                position += 1
            pending.recordings = recordings


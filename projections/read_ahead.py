"""Reading and decoding the next page of the log in a second process while a rebuild
applies the current one.

A rebuild (``projections.replay``) spends its time in two halves that need not wait for
each other: reading a page of the log and opening its sealed boxes (SQLite reads, the
page's data keys, AES-GCM, JSON; about 12 µs of CPU per event on the 1M-event log), and
applying it to the new file. A thread does not help (measured: +50 % CPU, slower: both
halves are mostly Python and fight over the GIL at every SQLite call), a process does: a
child forked at the start of the rebuild reads and decodes page n+1 while the parent
applies page n, and hands it over as one JSON document (one ``orjson.loads`` in the
parent). Its timestamps stay the text JSON holds them as: every projection reads them
with ``utc_text``, which takes either (``projections.tracking.Event``). The child parses
as little as it can: an opened box's plaintext is JSON already and goes into the page as
it is (``SealingTranscoder.decode_to_json``), and the fields the projection never reads
(its ``unread``, e.g. the directory does not read an event's cause) are left out, so the
parent parses half the JSON it would otherwise (measured on the 1M-event log). A
projection's ``prepare``, the part of its work that needs nothing but the event (the audit
log's time and cause columns), is done there too: the child has time to spare, the parent
none.

The child asks the store for nothing through its parent's connections (SQLite's rule for
fork): the reader's ``open_child()`` opens its own, and is called in the child. The parent
forks before it reads anything, so no transaction of its own is open on the log then.

It is a guess at the next call: ``catch_up`` asks for ``start = last id + 1`` with the
same limit, stop and topics after a full page. A call that is not the guessed one (the
first page, the final catch-up under the live file's lock with a new head) is read in the
parent, and the guessed page is dropped. Either way the rows are the same, decoded by the
same code: the child changes where the work is done, not what it gives.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
from typing import Callable, Sequence

import orjson

from projections.log_pages import LogRow

_new = tuple.__new__
Reader = tuple[Callable[..., Sequence], Callable[[bytes], dict]]  # (select_notifications, decode)
Prepare = Callable[[str, dict], dict]  # a projection's ``prepare(topic, state)``: the state as its ``apply`` reads it


def decoded_page(select: Callable[..., Sequence], decode: Callable[[bytes], dict], key: tuple) -> list:
    start, limit, stop, topics, inclusive = key
    return [_new(LogRow, (n.id, str(n.originator_id), n.originator_version, n.topic, decode(n.state)))
            for n in select(start, limit, stop=stop, topics=topics, inclusive_of_start=inclusive)]


def _page_as_lists(select: Callable[..., Sequence], decode: Callable[[bytes], dict], key: tuple,
                   unread: tuple[str, ...], prepare: Prepare | None) -> list:
    start, limit, stop, topics, inclusive = key
    rows = []
    for n in select(start, limit, stop=stop, topics=topics, inclusive_of_start=inclusive):
        state = decode(n.state)
        for field in unread:
            state.pop(field, None)
        if prepare is not None:
            state = prepare(n.topic, state)
        rows.append((n.id, str(n.originator_id), n.originator_version, n.topic, state))
    return rows


class ReadAhead:
    """``select_notifications`` whose rows come with ``state`` already decoded (give the
    projection ``decoded`` as its decode), the next page read ahead by a child process
    that gets its own reader from ``open_child`` (called in the child). ``unread``: the
    event fields the projection never reads (``TrackedProjection`` subclasses may name
    them, e.g. the cause), which the child leaves out of what it hands over; ``prepare``: the
    projection's work on each event that needs nothing but the event (``AuditLog.prepare``),
    which the child does instead of the parent."""

    def __init__(self, select: Callable[..., Sequence], decode: Callable[[bytes], dict],
                 open_child: Callable[[], Reader], unread: tuple[str, ...] = (), prepare: Prepare | None = None):
        self._select, self._decode = select, decode
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe()
        self._child = context.Process(target=_serve, args=(theirs, self._pipe, open_child, unread, prepare), daemon=True,
                                      name="replay-read-ahead")
        self._child.start()
        theirs.close()
        self._asked: tuple | None = None
        self.pages_ahead = 0  # pages the child gave (the others were read here)

    def select_notifications(self, start, limit, stop=None, topics=(), *, inclusive_of_start=True) -> list:
        key = (start, limit, stop, tuple(topics), inclusive_of_start)
        asked, self._asked = self._asked, None
        if self._pipe.closed:
            return decoded_page(self._select, self._decode, key)
        if asked is not None:
            answer = self._pipe.recv_bytes()
            if asked == key:
                page = self._unpack(answer)
                self.pages_ahead += 1
            else:
                page = decoded_page(self._select, self._decode, key)
        else:
            page = decoded_page(self._select, self._decode, key)
        if len(page) == limit:  # a full page: catch_up will ask for the one after it
            self._asked = (page[-1].id + 1, limit, stop, key[3], True)
            self._pipe.send(self._asked)
        return page

    def _unpack(self, answer: bytes) -> list:
        if answer[:1] == b"E":
            raise pickle.loads(answer[1:])
        return [_new(LogRow, row) for row in orjson.loads(memoryview(answer)[1:])]

    def close(self) -> None:
        """The child exits; from now on every page is read here."""
        if self._asked is not None:
            self._pipe.recv_bytes()  # its last answer, not needed
            self._asked = None
        self._pipe.close()  # the child sees the end of its pipe and exits
        self._child.join(timeout=10)
        if self._child.is_alive():
            self._child.kill()
            self._child.join()


def decoded(state: dict) -> dict:
    """The projection's ``decode`` for rows a ``ReadAhead`` decoded already."""
    return state


def _serve(pipe, parents, open_child: Callable[[], Reader], unread: tuple[str, ...], prepare: Prepare | None) -> None:
    """The child: answer each asked page key with the page, decoded, as JSON (``P``), or
    the exception that reading it raised (``E``). Its ``decode`` gives states ready for
    ``orjson.dumps`` (``SealingTranscoder.decode_to_json``: opened boxes as fragments)."""
    parents.close()  # or the parent's closing it would not end our pipe
    gc.disable()  # decoded events hold no cycles (the parent's rebuild runs without it too)
    select, decode = open_child()
    while True:
        try:
            key = pipe.recv()
        except EOFError:
            return
        try:
            answer = b"P" + orjson.dumps(_page_as_lists(select, decode, key, unread, prepare))
        except Exception as error:
            try:
                answer = b"E" + pickle.dumps(error)
            except Exception:
                answer = b"E" + pickle.dumps(RuntimeError(f"reading the log ahead failed: {error!r}"))
        pipe.send_bytes(answer)

"""Reading and decoding the next page of the log in a second process while a rebuild
applies the current one.

A rebuild (``projections.replay``) spends its time in two halves that need not wait for
each other: reading a page of the log and opening its sealed boxes (SQLite reads, the
page's data keys, AES-GCM, JSON; about 12 µs of CPU per event on the 1M-event log), and
applying it to the new file. A thread does not help (measured: +50 % CPU, slower: both
halves are mostly Python and fight over the GIL at every SQLite call), a process does: a
child forked at the start of the rebuild reads and decodes pages n+1 and n+2 while the
parent applies page n, and hands each over as one JSON document (one ``orjson.loads`` in
the parent) in shared memory, so that it need not wait for the parent to take one before
it reads the next: with one page ahead, sent through the pipe, the parent waited for
pages 0.5-0.8 s of a 15 s rebuild (the time per page varies more than the halves differ). Its timestamps stay the text JSON holds them as: every projection reads them
with ``utc_text``, which takes either (``projections.tracking.Event``). The child parses
as little as it can: an opened box's plaintext is JSON already and goes into the page as
it is (``SealingTranscoder.decode_to_json``), and the fields the projection never reads
(its ``preparation.unread``, e.g. the directory does not read an event's cause) are left
out, so the parent parses half the JSON it would otherwise (measured on the 1M-event log).
A projection's ``preparation.prepare``, the part of its work that needs nothing but the
event (the audit log's time and cause columns, and its creations), is done there too, as
long as the child has time to spare and the parent none.

The child asks the store for nothing through its parent's connections (SQLite's rule for
fork): the reader's ``open_child()`` opens its own, and is called in the child. The parent
forks before it reads anything, so no transaction of its own is open on the log then.

It is a guess at the next calls: ``catch_up`` asks for ``start = last id + 1`` with the
same limit, stop and topics after a full page. The first page is read in the parent, which
then starts the child at the page after it; a call that is not the guessed one (the final
catch-up under the live file's lock with a new head) stops the child and is read in the
parent. Either way the rows are the same, decoded by the
same code: the child changes where the work is done, not what it gives.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import pickle
from typing import Callable, NamedTuple, Sequence

import orjson

from projections.log_pages import LogRow

_new = tuple.__new__
DEPTH = 2  # pages the child may have read ahead of the one the parent applies
SLOT = 32 << 20  # bytes of shared memory per page read ahead (a page bigger than that goes through the pipe)
# (select_notifications, decode): decode(data, parsed=False), whose opened values are parsed if asked
Reader = tuple[Callable[..., Sequence], Callable[..., dict]]


class Preparation(NamedTuple):
    """What a projection lets the child do to each event before handing it over (its
    ``preparation``): leave out the fields it never reads (``unread``, e.g. the directory
    does not read the cause), and do the part of its work that needs nothing but the event
    (``prepare(topic, state)`` gives the state as its ``apply`` reads it; ``parses``: the
    topics whose opened values ``prepare`` reads, parsed for it, the others handed on as
    they are)."""

    unread: tuple[str, ...] = ()
    prepare: Callable[[str, dict], dict] | None = None
    parses: frozenset[str] = frozenset()


def decoded_page(select: Callable[..., Sequence], decode: Callable[[bytes], dict], key: tuple) -> list:
    start, limit, stop, topics, inclusive = key
    return [_new(LogRow, (n.id, str(n.originator_id), n.originator_version, n.topic, decode(n.state)))
            for n in select(start, limit, stop=stop, topics=topics, inclusive_of_start=inclusive)]


def _page_as_lists(select: Callable[..., Sequence], decode: Callable[..., dict], key: tuple,
                   preparation: Preparation = Preparation()) -> list:
    start, limit, stop, topics, inclusive = key
    unread, prepare, parsed = preparation
    rows = []
    for n in select(start, limit, stop=stop, topics=topics, inclusive_of_start=inclusive):
        state = decode(n.state, True) if n.topic in parsed else decode(n.state)
        for field in unread:
            state.pop(field, None)
        if prepare is not None:
            state = prepare(n.topic, state)
        rows.append((n.id, str(n.originator_id), n.originator_version, n.topic, state))
    return rows


class ReadAhead:
    """``select_notifications`` whose rows come with ``state`` already decoded (give the
    projection ``decoded`` as its decode), the next pages read ahead by a child process
    that gets its own reader from ``open_child`` (called in the child) and treats each
    event as the projection's ``preparation`` says."""

    def __init__(self, select: Callable[..., Sequence], decode: Callable[[bytes], dict],
                 open_child: Callable[[], Reader], preparation: Preparation = Preparation()):
        self._select, self._decode = select, decode
        # Shared with the child (anonymous: it goes with the two processes, nothing of it on disk).
        self._slots = mmap.mmap(-1, DEPTH * SLOT)
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe()
        self._child = context.Process(target=_serve, args=(theirs, self._pipe, self._slots, open_child, preparation),
                                      daemon=True, name="replay-read-ahead")
        self._child.start()
        theirs.close()
        self._expected: tuple | None = None  # the key of the next page the child gives
        self.pages_ahead = 0  # pages the child gave (the others were read here)

    def select_notifications(self, start, limit, stop=None, topics=(), *, inclusive_of_start=True) -> list:
        key = (start, limit, stop, tuple(topics), inclusive_of_start)
        if self._pipe.closed:
            return decoded_page(self._select, self._decode, key)
        if self._expected is None:
            page = decoded_page(self._select, self._decode, key)
            self._expected = _next_key(key, page)
            if self._expected is not None:
                self._pipe.send(("start", self._expected))
        elif key == self._expected:
            page = self._receive()
            self._expected = _next_key(key, page)
            self.pages_ahead += 1
        else:  # not the guessed call: the child's pages are not wanted any more
            self.close()
            page = decoded_page(self._select, self._decode, key)
        return page

    def _receive(self) -> list:
        kind, *answer = self._pipe.recv()
        if kind == "error":
            raise pickle.loads(answer[0])
        if kind == "slot":
            slot, length = answer
            try:
                rows = orjson.loads(memoryview(self._slots)[slot * SLOT:slot * SLOT + length])
            finally:
                self._pipe.send(("free", slot))
        else:  # a page bigger than a slot comes through the pipe
            rows = orjson.loads(self._pipe.recv_bytes())
        return [_new(LogRow, row) for row in rows]

    def close(self) -> None:
        """The child exits; from now on every page is read here."""
        self._expected = None
        if not self._pipe.closed:
            self._pipe.close()  # the child sees the end of its pipe and exits
        self._child.join(timeout=10)
        if self._child.is_alive():
            self._child.kill()
            self._child.join()
        self._slots.close()


def _next_key(key: tuple, page: Sequence[tuple]) -> tuple | None:
    """What ``catch_up`` asks for after ``page`` (rows whose first item is the position,
    asked for with ``key``): the page after it if it was full; None (it stops there) otherwise."""
    start, limit, stop, topics, _ = key
    return (page[-1][0] + 1, limit, stop, topics, True) if len(page) == limit else None


def decoded(state: dict) -> dict:
    """The projection's ``decode`` for rows a ``ReadAhead`` decoded already."""
    return state


def _serve(pipe, parents, slots: mmap.mmap, open_child: Callable[[], Reader], preparation: Preparation) -> None:
    """The child: from the key the parent starts it at, read each page and the ones after
    it, decoded, as JSON into a free slot (up to ``DEPTH`` ahead of the parent), and say so
    (``("slot", n, length)``); a page too big for a slot goes through the pipe, the
    exception that reading one raised too (``("error", pickled)``), and then it waits.
    Its ``decode`` gives states ready for ``orjson.dumps`` (``SealingTranscoder.
    decode_to_json``: opened boxes as fragments, or parsed for the ``parses`` topics). It
    ends when the parent closes the pipe."""
    parents.close()  # or the parent's closing it would not end our pipe
    gc.disable()  # decoded events hold no cycles (the parent's rebuild runs without it too)
    select, decode = open_child()
    free, key = list(range(DEPTH)), None

    def heard(message) -> None:
        nonlocal key
        kind, value = message
        if kind == "free":
            free.append(value)
        else:  # "start"
            key = value

    try:
        while True:
            while key is None or not free or pipe.poll():
                heard(pipe.recv())
            try:
                rows = _page_as_lists(select, decode, key, preparation)
                answer = orjson.dumps(rows)
            except Exception as error:
                try:
                    failed = pickle.dumps(error)
                except Exception:
                    failed = pickle.dumps(RuntimeError(f"reading the log ahead failed: {error!r}"))
                pipe.send(("error", failed))
                key = None
                continue
            if len(answer) <= SLOT:
                slot = free.pop()
                slots[slot * SLOT:slot * SLOT + len(answer)] = answer
                pipe.send(("slot", slot, len(answer)))
            else:
                pipe.send(("pipe",))
                pipe.send_bytes(answer)
            key = _next_key(key, rows)
    except (EOFError, OSError):  # the parent closed its end
        return

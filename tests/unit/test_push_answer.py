"""adapters/push_answer.plain_accepted: the quick look at the usual 202 answer agrees with
the full reading (parse_answer) wherever it says yes, and leaves everything else to it."""

from __future__ import annotations

import pytest

from adapters.push_answer import parse_answer, plain_accepted

PLAIN = [
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 202 Accepted\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Tue, 01 Dec 2026 21:00:00 GMT\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 202 \r\nContent-Length: 0\r\nX-Request-Id: 7\r\n\r\n",
]
NOT_PLAIN = [
    b"HTTP/1.1 202 Accepted\r\n\r\n",  # no length: the body runs to the connection's end
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 00\r\n\r\n",
    b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n",  # not all of it yet
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 202 Accepted\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 2020 Accepted\r\nContent-Length: 0\r\n\r\n",
    b"",
]


@pytest.mark.parametrize("answer", PLAIN)
def test_a_plain_202_is_what_the_full_reading_makes_of_it(answer):
    assert plain_accepted(answer)
    status, _, body, keep, used = parse_answer(answer, closed=False)
    assert (status, body, keep, used) == (202, b"", True, len(answer))


@pytest.mark.parametrize("answer", NOT_PLAIN)
def test_anything_else_is_left_to_the_full_reading(answer):
    assert not plain_accepted(answer)

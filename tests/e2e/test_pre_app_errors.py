"""Requests gunicorn refuses before the app sees them answer SCIM errors (issue 15), over
real HTTP against ``scimledger serve``: the status gunicorn chose (414, 431, 400), the
SCIM error schema as ``application/scim+json``, ``Connection: close``; the server keeps
serving, and the log names the kind of refusal but not the request line's content."""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from adapters.http.worker import LIMITS
from tests.processes import Client, Server
from tests.samples import ERROR

pytestmark = pytest.mark.e2e
SECRET_VALUE = "zq" + uuid.uuid4().hex  # stands for personal data in a filter


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("preapp")
    token = f"preapp-{uuid.uuid4().hex}"
    started = Server(root / "data", root / "logs", token, workers=1, threads=2)
    try:
        started.start().wait_ready()
        yield started, token
    finally:
        started.stop()


def raw_exchange(port: int, request: bytes) -> tuple[int, dict, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    # The first answer only: bytes the client sent after a request it answered (a broken
    # chunked body, say) may earn a second refusal before the connection closes.
    return status, headers, json.loads(rest[:int(headers["content-length"])])


def assert_scim_error(answer, status: int, closes: bool = True) -> dict:
    got, headers, body = answer
    assert got == status, (got, body)
    assert headers["content-type"].startswith("application/scim+json")
    if closes:  # refused by gunicorn: the connection ends there
        assert headers["connection"].lower() == "close"
    assert body["schemas"] == [ERROR] and body["status"] == str(status) and body["detail"], body
    assert SECRET_VALUE not in json.dumps(body)
    return body


def test_a_request_line_over_the_limit_is_414_with_a_scim_body(server):
    srv, token = server
    value = SECRET_VALUE + "a" * LIMITS["limit_request_line"]
    line = f'GET /scim/v2/Users?filter=userName%20eq%20%22{value}%22 HTTP/1.1\r\n'
    answer = raw_exchange(srv.port, (line + f"Host: x\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
    assert "request line" in assert_scim_error(answer, 414)["detail"]


def test_too_many_headers_is_431(server):
    srv, _ = server
    headers = "".join(f"X-Extra-{i}: {i}\r\n" for i in range(LIMITS["limit_request_fields"] + 5))
    answer = raw_exchange(srv.port, f"GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    assert_scim_error(answer, 431)


def test_one_header_over_the_size_limit_is_431(server):
    srv, _ = server
    big = "b" * (LIMITS["limit_request_field_size"] + 10)
    answer = raw_exchange(srv.port, f"GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode())
    assert_scim_error(answer, 431)


@pytest.mark.parametrize("request_bytes", [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET /scim/v2/Users HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n",
    b"G(T /scim/v2/Users HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    b"Content-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["not-http", "bad-version", "bad-header-name", "bad-method", "bad-chunk"])
def test_malformed_requests_are_400_with_a_scim_body(server, request_bytes):
    srv, token = server
    # A broken chunked body is refused by the app's body reader (keep-alive), the others
    # by gunicorn's parser (connection closed).
    answer = raw_exchange(srv.port, request_bytes.replace(b"{token}", token.encode()))
    body = assert_scim_error(answer, 400, closes=b"chunked" not in request_bytes)
    assert body["scimType"] == "invalidSyntax"


def test_the_server_keeps_serving_and_logs_no_request_content(server):
    srv, token = server
    raw_exchange(srv.port, f"GET /scim/v2/Users?filter={SECRET_VALUE}{'c' * 9000} HTTP/1.1\r\n\r\n".encode())
    client = Client(srv.base_url, token)
    try:
        assert client.ok("GET", "/Users")["totalResults"] == 0
    finally:
        client.close()
    logs = "".join(path.read_text(errors="replace") for path in srv.log_files())
    assert "LimitRequestLine (414)" in logs
    assert SECRET_VALUE not in logs

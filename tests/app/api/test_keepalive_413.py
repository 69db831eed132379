"""A body over the limit is a 413 that does not break a keep-alive connection (issue 10
item 11): the refused body is read off the connection (up to a bound, else the answer says
``Connection: close``), so the client's next request on it is served. Over a real gunicorn
(``conveyor serve``) and a raw socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import suppress

import pytest

from tests.app.live_server import conveyor_serve
from tests.conftest import make_entity_type, make_workflow

STEPS = [{"id": "tidy", "type": "transform", "config": {"set": {"seen": True}}}]


@pytest.fixture
def server(settings) -> Iterator[tuple[str, int]]:
    """``conveyor serve`` (gunicorn, gthread, keep-alive) on the test's database."""
    with conveyor_serve(settings) as url:
        host, _, port = url.removeprefix("http://").partition(":")
        yield host, int(port)


def _read_response(sock: socket.socket) -> bytes:
    """One HTTP response (headers and a Content-Length body), or what came before EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send without blocking the test: the server may answer before reading it all."""

    def send() -> None:
        with suppress(OSError):  # the server may close the connection after answering
            sock.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _webhook(client, keys) -> str:
    entity_type = make_entity_type(client, keys)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS, status="active")
    trigger = client.post(
        "/api/v1/triggers",
        json={"workflowId": workflow["id"], "type": "webhook"},
        headers=keys.header("editor"),
    )
    assert trigger.status_code == 201, trigger.json
    return trigger.json["id"]


def _next_request_on(sock: socket.socket, host: str, port: int) -> bytes:
    """A GET /healthz on the same connection: its response, or b"" if it was closed."""
    try:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        return _read_response(sock)
    except OSError:
        return b""


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_webhook_body_over_1_mb_is_413_and_the_connection_serves_the_next_request(
    server, client, keys, chunked
):
    host, port = server
    trigger_id = _webhook(client, keys)
    body = b'{"pad": "' + b"x" * (1024 * 1024 + 100) + b'"}'
    head = (
        f"POST /api/v1/webhooks/{trigger_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {keys.executor}\r\nContent-Type: application/json\r\n"
    )
    if chunked:
        payload = b"".join(
            f"{len(part):x}\r\n".encode() + part + b"\r\n"
            for part in (body[i : i + 65536] for i in range(0, len(body), 65536))
        )
        request = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + payload + b"0\r\n\r\n"
    else:
        request = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    with socket.create_connection((host, port), timeout=30) as sock:
        sender = _send_in_background(sock, request)
        first = _read_response(sock)
        assert first.startswith(b"HTTP/1.1 413"), first[:300]
        assert b'"code": 413' in first or b'"code":413' in first
        assert b"\r\nConnection: close\r\n" not in first  # kept alive: the body was read off
        sender.join(timeout=30)
        after = _next_request_on(sock, host, port)
    # The next request on the same connection is served: not dropped (a broken pipe under
    # a keep-alive answer), not the rest of the big body parsed as a request.
    assert after.startswith(b"HTTP/1.1 200"), after[:300]

    with socket.create_connection((host, port), timeout=30) as fresh:
        assert _next_request_on(fresh, host, port).startswith(b"HTTP/1.1 200")


def test_a_small_webhook_keeps_the_connection_alive(server, client, keys):
    host, port = server
    trigger_id = _webhook(client, keys)
    body = b'{"source": "cms"}'
    request = (
        f"POST /api/v1/webhooks/{trigger_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {keys.executor}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        first = _read_response(sock)
        assert first.startswith(b"HTTP/1.1 202"), first[:300]
        assert b"Connection: close" not in first
        assert _next_request_on(sock, host, port).startswith(b"HTTP/1.1 200")

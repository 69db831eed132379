"""conveyor-client against a live Conveyor (embedded default) over real HTTP.

Misbehaving networks are real local peers: a TCP proxy that drops the first response
after the server has acted on the request, and an HTTP server that answers 503 with
``Retry-After`` before it answers 200.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from conveyor_client import (
    Conflict,
    Conveyor,
    ConveyorConnectionError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ProgressBar,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
    parse_retry_after,
)
from flask.testing import FlaskClient

from tests.conftest import PRODUCT_SCHEMA, Keys

COUNTS = ("total", "completed", "failed", "cancelled", "pending")


@pytest.fixture
def conveyor(live_url: str, keys: Keys) -> Iterator[Conveyor]:
    with Conveyor(live_url, keys.editor) as client:
        yield client


def _counting_client(seen: list[httpx.Request]) -> httpx.Client:
    return httpx.Client(event_hooks={"request": [seen.append]}, timeout=30)


def test_bulk_create_then_iterate_every_page(live_url: str, keys: Keys) -> None:
    seen: list[httpx.Request] = []
    with Conveyor(live_url, keys.editor, http_client=_counting_client(seen)) as conveyor:
        product = conveyor.entity_types.create(name="Product", schema=PRODUCT_SCHEMA)
        created = conveyor.entities.bulk_create(
            {"entityTypeId": product["id"], "data": {"title": f"Item {i}", "price": i}}
            for i in range(2500)
        )
        assert len(created) == 2500
        seen.clear()
        listed = list(conveyor.entities.list(entity_type_id=product["id"], limit=1000))
    assert [e["id"] for e in listed] == sorted(e["id"] for e in created)
    pages = [r for r in seen if r.url.path == "/api/v1/entities"]
    assert len(pages) == 3  # 1000 + 1000 + 500, following X-Next-Cursor
    assert "cursor" not in pages[0].url.params and "cursor" in pages[2].url.params


def test_run_wait_failed_items_and_retry(conveyor: Conveyor) -> None:
    product = conveyor.entity_types.create(name="Product", schema=PRODUCT_SCHEMA)
    entities = conveyor.entities.bulk_create(
        [
            {"entityTypeId": product["id"], "data": {"title": f"Item {i}", "price": i}}
            for i in range(60)
        ]
    )
    workflow = conveyor.workflows.create(
        name="Tag cheap products",
        entity_type_id=product["id"],
        steps=[
            {
                "id": "price_check",
                "type": "condition",
                "config": {"if": "entity.data.price % 10 == 7", "then": "fail"},
            },
            {"id": "tag", "type": "transform", "config": {"status": "tagged"}},
        ],
    )
    started = conveyor.runs.start(workflow["id"], entity_ids=[e["id"] for e in entities])
    seen: list[dict[str, Any]] = []
    run = conveyor.runs.wait(
        started["runId"], workflow_id=workflow["id"], progress=seen.append, poll_interval=0.05
    )
    assert run["status"] == "failed"
    assert {k: run["progress"][k] for k in COUNTS} == {
        "total": 60,
        "completed": 54,
        "failed": 6,
        "cancelled": 0,
        "pending": 0,
    }
    assert seen and seen[-1] == run
    failed = list(conveyor.runs.items(workflow["id"], run["id"], status="failed"))
    assert sorted(conveyor.entities.get(i["entityId"])["data"]["price"] for i in failed) == [
        7,
        17,
        27,
        37,
        47,
        57,
    ]
    for item in failed:  # fix the data, then retry only those
        entity = conveyor.entities.get(item["entityId"])
        conveyor.entities.update(
            entity["id"], data={**entity["data"], "price": entity["data"]["price"] + 1}
        )
    retried = conveyor.runs.retry(workflow["id"], run["id"])
    # Without workflow_id the client finds the run's workflow itself.
    second = conveyor.runs.wait(retried["runId"], poll_interval=0.05)
    assert second["status"] == "completed"
    assert second["retryOf"] == run["id"]
    assert second["progress"]["total"] == 6 and second["progress"]["completed"] == 6
    tagged = list(conveyor.entities.list(entity_type_id=product["id"], status="tagged"))
    assert len(tagged) == 60


def test_wait_polls_with_etag_and_draws_a_bar(live_url: str, keys: Keys) -> None:
    seen: list[httpx.Request] = []
    responses: list[int] = []
    http_client = httpx.Client(
        event_hooks={
            "request": [seen.append],
            "response": [lambda r: responses.append(r.status_code)],
        }
    )
    with Conveyor(live_url, keys.editor, http_client=http_client) as conveyor:
        product = conveyor.entity_types.create(name="Product", schema=PRODUCT_SCHEMA)
        conveyor.entities.bulk_create(
            [{"entityTypeId": product["id"], "data": {"title": f"T{i}"}} for i in range(30)]
        )
        workflow = conveyor.workflows.create(
            name="Tag",
            entity_type_id=product["id"],
            steps=[{"type": "transform", "config": {"status": "tagged"}}],
        )
        started = conveyor.runs.start(workflow["id"], filter={"status": "draft"})
        lines: list[str] = []

        class Sink:
            def write(self, text: str) -> None:
                lines.append(text)

            def flush(self) -> None:
                pass

        bar = ProgressBar(stream=Sink())  # type: ignore[arg-type]
        run = conveyor.runs.wait(
            started["runId"], workflow_id=workflow["id"], progress=bar, poll_interval=0.01
        )
    assert run["status"] == "completed"
    polls = [r for r in seen if r.url.path.endswith(f"/runs/{started['runId']}")]
    assert "if-none-match" not in polls[0].headers
    assert all("if-none-match" in r.headers for r in polls[1:])
    assert "30/30 completed" in "".join(lines)


def test_errors_carry_the_error_shape(conveyor: Conveyor) -> None:
    with pytest.raises(ValidationError) as info:
        conveyor.entity_types.create(name="")
    assert info.value.code == 422
    assert info.value.status == "Unprocessable Entity"
    assert "name" in info.value.errors
    with pytest.raises(NotFound) as missing:
        conveyor.workflows.get("wf_nope")
    assert missing.value.code == 404 and missing.value.message


class DropFirstResponseProxy:
    """A TCP proxy to ``upstream`` that, for the first ``drops`` requests, lets the server
    act and then closes the client's connection without the response."""

    def __init__(self, upstream: str, drops: int = 1) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.drops = drops
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            raw = b""
            while b"\r\n\r\n" not in raw:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                raw += chunk
            head, _, body = raw.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += conn.recv(65536)
            # One request per upstream connection: ask the server to close after answering.
            head = b"\r\n".join(
                line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")
            )
            request = head + b"\r\nConnection: close\r\n\r\n" + body
            self.requests.append(request)
            with socket.create_connection(self.upstream) as up:
                up.sendall(request)
                response = b""
                while chunk := up.recv(65536):
                    response += chunk
            if self.drops > 0:
                self.drops -= 1
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                return  # the server acted; the client never hears back
            conn.sendall(response)

    def close(self) -> None:
        self.sock.close()


def _idempotency_keys(requests: list[bytes]) -> list[str]:
    keys = []
    for request in requests:
        for line in request.split(b"\r\n\r\n")[0].split(b"\r\n"):
            if line.lower().startswith(b"idempotency-key:"):
                keys.append(line.split(b":", 1)[1].strip().decode())
    return keys


def test_write_retried_after_dropped_connection_is_not_done_twice(
    live_url: str, keys: Keys
) -> None:
    with Conveyor(live_url, keys.editor) as direct:
        product = direct.entity_types.create(name="Product", schema=PRODUCT_SCHEMA)
    proxy = DropFirstResponseProxy(live_url, drops=1)
    sleeps: list[float] = []
    try:
        with Conveyor(proxy.url, keys.editor, sleep=sleeps.append) as conveyor:
            created = conveyor.entities.bulk_create(
                [{"entityTypeId": product["id"], "data": {"title": f"Once {i}"}} for i in range(3)]
            )
    finally:
        proxy.close()
    assert len(proxy.requests) == 2  # the dropped one, and its retry
    sent_keys = _idempotency_keys(proxy.requests)
    assert len(sent_keys) == 2 and sent_keys[0] == sent_keys[1]
    assert len(sleeps) == 1
    with Conveyor(live_url, keys.editor) as direct:
        stored = list(direct.entities.list(entity_type_id=product["id"]))
    assert len(stored) == 3  # created once, the retry replayed the first answer
    assert sorted(e["id"] for e in created) == sorted(e["id"] for e in stored)


def test_write_without_server_dedupe_is_not_resent_after_a_drop(live_url: str, keys: Keys) -> None:
    proxy = DropFirstResponseProxy(live_url, drops=1)
    try:
        conveyor = Conveyor(proxy.url, keys.editor, sleep=lambda s: None)
        with conveyor, pytest.raises(ConveyorConnectionError):
            conveyor.entity_types.create(name="Maybe", schema=PRODUCT_SCHEMA)
    finally:
        proxy.close()
    assert len(proxy.requests) == 1  # it may have been created: the caller decides


class UnavailableThenOk:
    """Answers ``failures`` times 503 with ``Retry-After``, then 200 with a JSON list."""

    def __init__(self, failures: int, retry_after: str = "1") -> None:
        peer = self
        self.failures = failures
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                peer.paths.append(self.path)
                if peer.failures > 0:
                    peer.failures -= 1
                    body = {
                        "code": 503,
                        "status": "Service Unavailable",
                        "message": "The database is not reachable; try again.",
                        "errors": {},
                    }
                    self._send(503, body, {"Retry-After": retry_after})
                else:
                    self._send(200, [{"id": "wf_1", "name": "ok"}], {})

            def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_503_with_retry_after_is_waited_out() -> None:
    import time

    peer = UnavailableThenOk(failures=2, retry_after="1")
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        time.sleep(seconds)

    try:
        with Conveyor(peer.url, "cvk_test", sleep=sleep) as conveyor:
            workflows = list(conveyor.workflows.list())
    finally:
        peer.close()
    assert workflows == [{"id": "wf_1", "name": "ok"}]
    assert waited == [1.0, 1.0]  # exactly what Retry-After asked, twice
    assert len(peer.paths) == 3


def test_503_past_the_retry_budget_raises_with_the_error_shape() -> None:
    peer = UnavailableThenOk(failures=10, retry_after="7")
    waited: list[float] = []
    try:
        conveyor = Conveyor(peer.url, "cvk_test", sleep=waited.append, max_retries=2)
        with conveyor, pytest.raises(ServiceUnavailable) as info:
            conveyor.workflows.get("wf_1")
    finally:
        peer.close()
    assert waited == [7.0, 7.0]
    assert info.value.code == 503
    assert info.value.message == "The database is not reachable; try again."
    assert info.value.headers["retry-after"] == "7"


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_every_operation_has_its_client_method(client: FlaskClient) -> None:
    """``<resource>_<method>`` operationIds are ``Conveyor(...).<resource>.<method>``."""
    spec = client.get("/api/v1/openapi.json").json
    conveyor = Conveyor("http://127.0.0.1:9", "cvk_unused")
    resources = sorted(
        (name for name in vars(conveyor) if not name.startswith("_") and name != "http"),
        key=len,
        reverse=True,
    )
    missing = []
    for item in spec["paths"].values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            op_id = operation["operationId"]
            resource = next((r for r in resources if op_id.startswith(f"{r}_")), None)
            name = op_id[len(resource) + 1 :] if resource else ""
            target = getattr(conveyor, resource, None) if resource else None
            if target is None or not callable(
                getattr(target, name, None) or getattr(target, f"{name}_", None)
            ):
                missing.append(op_id)
    conveyor.close()
    assert missing == []


def test_pages_follow_the_link_header_when_there_is_no_cursor_header() -> None:
    """A proxy that strips ``X-Next-Cursor`` still leaves ``Link: rel="next"``."""
    pages = {
        "/api/v1/entities": ([{"id": "a"}, {"id": "b"}], "/api/v1/entities?page=2"),
        "/api/v1/entities?page=2": ([{"id": "c"}], "/api/v1/entities?page=3"),
        "/api/v1/entities?page=3": ([], None),
    }
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            items, following = pages[self.path]
            payload = json.dumps(items).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if following:
                self.send_header("Link", f'<http://127.0.0.1:{port}{following}>; rel="next"')
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Conveyor(f"http://127.0.0.1:{port}", "cvk_test") as conveyor:
            ids = [e["id"] for e in conveyor.entities.list()]
    finally:
        server.shutdown()
        server.server_close()
    assert ids == ["a", "b", "c"]
    assert seen == list(pages)


def test_each_status_has_its_exception(live_url: str, keys: Keys) -> None:
    with Conveyor(live_url, "cvk_not_a_key") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.me.get()
    assert denied.value.code == 401
    with Conveyor(live_url, keys.viewer) as viewer, pytest.raises(Forbidden):
        viewer.entity_types.create(name="Nope", schema=PRODUCT_SCHEMA)
    with Conveyor(live_url, keys.editor) as editor:
        product = editor.entity_types.create(name="Product", schema=PRODUCT_SCHEMA)
        entity = editor.entities.create(entity_type_id=product["id"], data={"title": "A"})
        editor.entities.update(entity["id"], data={"title": "B"}, if_match=entity["version"])
        with pytest.raises((PreconditionFailed, Conflict)) as stale:
            editor.entities.update(entity["id"], data={"title": "C"}, if_match=entity["version"])
        assert stale.value.code in (409, 412)
        with pytest.raises(Conflict):
            editor.entity_types.delete(product["id"])  # it has entities


def test_progress_bar_shows_counts_rate_and_eta() -> None:
    now = [100.0]
    bar = ProgressBar(stream=io.StringIO(), width=10, clock=lambda: now[0])
    run = {"status": "running", "progress": {"total": 100, "completed": 10, "failed": 0}}
    assert bar.render(run) == "[#.........] 10/100 running"
    now[0] += 10
    run = {"status": "running", "progress": {"total": 100, "completed": 45, "failed": 5}}
    assert bar.render(run) == "[#####.....] 50/100 running (5 failed) 4.0/s ETA 12s"


def test_a_refused_connection_is_retried_then_raised() -> None:
    """Nothing was sent, so even a plain write is tried again, then reported."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: connections refused
    waited: list[float] = []
    conveyor = Conveyor(f"http://127.0.0.1:{port}", "cvk_test", sleep=waited.append, max_retries=3)
    with conveyor, pytest.raises(ConveyorConnectionError) as info:
        conveyor.entity_types.create(name="Product")
    assert len(waited) == 3
    assert info.value.code is None and "ConnectError" in info.value.message

"""Local peers that tests (and benchmarks) start on 127.0.0.1: an OpenAI-compatible server,
an Anthropic Messages server, a Standard Webhooks receiver (also a Slack stand-in) and an SMTP
server (aiosmtpd) with STARTTLS, implicit TLS or plain connections.

Each peer records what it received and can be told to misbehave: answer 429 with
``Retry-After``, 500, slowly, or past a requests-per-minute limit of its own.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, str], bytes]


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks secret (``whsec_`` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of clients connect at once (the engine's I/O pool)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (timeouts, size caps) is expected here, not an error."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class HttpPeer:
    """A threaded HTTP server on 127.0.0.1; subclasses answer in ``handle``."""

    def __init__(self) -> None:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = peer._dispatch(
                    self.command, self.path, dict(self.headers.items()), body
                )
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            do_GET = do_POST = do_PUT = _serve  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.statuses: Counter[int] = Counter()
        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _dispatch(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        lowered = {k.lower(): v for k, v in headers.items()}
        with self.lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "headers": lowered,
                    "body": body,
                    "at": time.monotonic(),
                }
            )
        reply = self.handle(method, path, lowered, body)
        with self.lock:
            self.statuses[reply[0]] += 1
        return reply

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HttpPeer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Misbehaviour:
    """What a provider peer does instead of answering: ``mode`` is ``ok``, ``429``, ``500``
    or ``slow``; ``times`` failures (None: forever) before it answers normally again."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.times: int | None = None
        self.retry_after: str | None = "1"
        self.delay = 0.0

    def set(
        self, mode: str, times: int | None = None, retry_after: str | None = "1", delay: float = 5
    ) -> None:
        self.mode, self.times, self.retry_after, self.delay = mode, times, retry_after, delay

    def next(self) -> str:
        """The mode for the request now arriving."""
        if self.mode == "ok":
            return "ok"
        if self.times is not None:
            if self.times <= 0:
                return "ok"
            self.times -= 1
        return self.mode


class SlidingWindowLimit:
    """At most ``limit`` requests in any ``window`` seconds (what a provider enforces)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self.times: deque[float] = deque()
        self.lock = threading.Lock()

    def admit(self) -> bool:
        with self.lock:
            now = time.monotonic()
            while self.times and self.times[0] <= now - self.window:
                self.times.popleft()
            if len(self.times) >= self.limit:
                return False
            self.times.append(now)
            return True


def _words(text: str) -> int:
    return len(text.split())


class _ProviderPeer(HttpPeer):
    def __init__(
        self,
        *,
        api_key: str = "test-key",
        reply: Callable[[dict[str, Any]], str] | None = None,
        requests_per_minute: int | None = None,
        window_seconds: float = 60.0,
    ) -> None:
        self.api_key = api_key
        self.reply = reply or (lambda body: "echo: " + _last_user_text(body))
        self.misbehave = Misbehaviour()
        self.limit = (
            SlidingWindowLimit(requests_per_minute, window_seconds) if requests_per_minute else None
        )
        self.completions = 0
        self.completed_at: list[float] = []  # time.monotonic() of each successful answer
        self.rate_limited = 0
        super().__init__()

    def _gate(self) -> Reply | None:
        """Rate limit and misbehaviour, before a real answer."""
        if self.limit is not None and not self.limit.admit():
            with self.lock:
                self.rate_limited += 1
            return self.error(
                429, "rate_limit", "Rate limit reached for requests", {"Retry-After": "1"}
            )
        with self.lock:
            mode = self.misbehave.next()
        if mode == "429":
            headers = (
                {"Retry-After": self.misbehave.retry_after} if self.misbehave.retry_after else {}
            )
            with self.lock:
                self.rate_limited += 1
            return self.error(429, "rate_limit", "Rate limit reached, slow down", headers)
        if mode == "500":
            return self.error(
                500, "server_error", "The server had an error processing your request"
            )
        if mode == "slow":
            time.sleep(self.misbehave.delay)
        return None

    def error(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> Reply:
        raise NotImplementedError


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    return ""


class OpenAIPeer(_ProviderPeer):
    """Speaks OpenAI's chat-completions wire format at ``base_url`` (``.../v1``)."""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def error(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> Reply:
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        return _json_reply(status, body, headers)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(401, "invalid_api_key", "Incorrect API key provided.")
        if method == "GET" and path == "/v1/models":
            model = {"id": "gpt-test", "object": "model", "created": 0, "owned_by": "peer"}
            return _json_reply(200, {"object": "list", "data": [model]})
        if method != "POST" or path != "/v1/chat/completions":
            return self.error(404, "not_found", f"Unknown path {path}")
        gated = self._gate()
        if gated:
            return gated
        request = json.loads(body)
        text = self.reply(request)
        prompt_tokens = sum(_words(str(m.get("content"))) for m in request["messages"])
        with self.lock:
            self.completions += 1
            self.completed_at.append(time.monotonic())
        return _json_reply(
            200,
            {
                "id": f"chatcmpl-{self.completions}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": _words(text),
                    "total_tokens": prompt_tokens + _words(text),
                },
            },
        )


class AnthropicPeer(_ProviderPeer):
    """Speaks Anthropic's Messages API at ``base_url``."""

    @property
    def base_url(self) -> str:
        return self.url

    def error(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> Reply:
        kinds = {"rate_limit": "rate_limit_error", "server_error": "api_error"}
        body = {"type": "error", "error": {"type": kinds.get(kind, kind), "message": message}}
        return _json_reply(status, body, headers)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        # The API key comes as x-api-key; newer official SDKs send it as a Bearer token.
        if self.api_key not in (headers.get("x-api-key"), headers.get("authorization", "")[7:]):
            return self.error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return self.error(400, "invalid_request_error", "anthropic-version header is required")
        if method == "GET" and path.startswith("/v1/models"):
            model = {
                "type": "model",
                "id": "claude-test",
                "display_name": "Claude Test",
                "created_at": "2025-01-01T00:00:00Z",
            }
            return _json_reply(
                200,
                {
                    "data": [model],
                    "has_more": False,
                    "first_id": "claude-test",
                    "last_id": "claude-test",
                },
            )
        if method != "POST" or path != "/v1/messages":
            return self.error(404, "not_found_error", f"Unknown path {path}")
        gated = self._gate()
        if gated:
            return gated
        request = json.loads(body)
        if not isinstance(request.get("max_tokens"), int):
            return self.error(400, "invalid_request_error", "max_tokens: Field required")
        text = self.reply(request)
        input_tokens = _words(str(request.get("system") or "")) + sum(
            _words(str(m.get("content"))) for m in request["messages"]
        )
        with self.lock:
            self.completions += 1
            self.completed_at.append(time.monotonic())
        return _json_reply(
            200,
            {
                "id": f"msg_{self.completions}",
                "type": "message",
                "role": "assistant",
                "model": request["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": _words(text)},
            },
        )


class WebhookReceiver(HttpPeer):
    """Verifies Standard Webhooks signatures (when it has a secret) and counts ``webhook-id``s.

    ``fail_first`` requests are answered 500 (after being counted as attempts, not
    deliveries); ``redirect_to`` answers every request with a 307 there.
    """

    def __init__(
        self, secret: str | None = None, *, fail_first: int = 0, status: int = 200
    ) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.status = status
        self.redirect_to: str | None = None
        self.reply_headers: dict[str, str] = {}  # sent with refusals (a Retry-After, say)
        self.delay = 0.0
        self.deliveries: list[dict[str, Any]] = []
        self.ids: Counter[str] = Counter()
        self.rejected = 0
        super().__init__()

    @property
    def unique_ids(self) -> int:
        return len(self.ids)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if self.redirect_to:
            return 307, {"Location": self.redirect_to}, b""
        if self.delay:
            time.sleep(self.delay)
        if self.secret:
            from standardwebhooks.webhooks import Webhook, WebhookVerificationError

            try:
                Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError as exc:
                with self.lock:
                    self.rejected += 1
                return _json_reply(401, {"error": str(exc)})
        with self.lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return _json_reply(500, {"error": "receiver hiccup"}, self.reply_headers)
            self.ids[headers.get("webhook-id", "")] += 1
            self.deliveries.append(
                {"path": path, "headers": headers, "json": json.loads(body or b"null")}
            )
        if self.status != 200:
            return _json_reply(self.status, {"error": "refused"}, self.reply_headers)
        return 200, {"Content-Type": "text/plain"}, b"ok"


def self_signed_certificate(directory: str) -> tuple[str, str]:
    """A certificate and key for localhost / 127.0.0.1 (PEM file paths)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpPeer:
    """An aiosmtpd server. ``tls``: ``starttls`` (required before AUTH), ``ssl`` (implicit
    TLS) or ``none``; it accepts ``username``/``password`` and keeps the messages."""

    def __init__(
        self,
        *,
        tls: str = "starttls",
        username: str = "mailer",
        password: str = "s3cret-pw",  # noqa: S107
    ) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.tls, self.username, self.password = tls, username, password
        self.messages: list[dict[str, Any]] = []
        self.logins: list[str] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # The context keeps the loaded key: the files (a private key) go as soon as it is read.
        with tempfile.TemporaryDirectory(prefix="conveyor-smtp-") as directory:
            context.load_cert_chain(*self_signed_certificate(directory))
        peer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                message = message_from_bytes(envelope.content)
                peer.messages.append(
                    {
                        "from": envelope.mail_from,
                        "to": list(envelope.rcpt_tos),
                        "subject": message["Subject"],
                        "message_id": message["Message-ID"],
                        "body": message.get_payload(decode=True).decode().strip(),
                    }
                )
                return "250 Message accepted for delivery"

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> Any:
            if isinstance(data, LoginPassword):
                login, password = data.login.decode(), data.password.decode()
                if login == peer.username and password == peer.password:
                    peer.logins.append(login)
                    return AuthResult(success=True)
            return AuthResult(success=False, handled=False)

        kwargs: dict[str, Any] = {"authenticator": authenticator, "auth_required": True}
        if tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif tls == "ssl":
            # aiosmtpd only counts STARTTLS as TLS for AUTH; this connection is TLS from the start.
            kwargs.update(ssl_context=context, auth_require_tls=False)
        else:
            kwargs.update(auth_require_tls=False)

        class QuietController(Controller):
            def factory(self) -> Any:
                # tls="none"|"ssl" require AUTH without STARTTLS on purpose: no warning for it.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    return super().factory()

        self.port = _free_port()
        self.controller = QuietController(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpPeer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TcpProxy:
    """Forwards a local port to ``target``. ``cut()`` drops every connection and turns new
    ones away until ``restore()``: a database outage without stopping the database."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.connections |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self.lock:
                self.connections.discard(sock)
            with contextlib.suppress(OSError):  # already closed by the other side
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        self.up.clear()
        with self.lock:
            open_now = list(self.connections)
        self._drop(*open_now)

    def restore(self) -> None:
        """Accept connections again."""
        self.up.set()

    def close(self) -> None:
        self.server.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ToolCallStreamPeer:
    """An OpenAI-format chat-completions server that answers with streamed tool calls.

    ``calls`` is the script: ``[(function name, arguments), ...]``. Each call goes out as
    server-sent events in ``pieces`` argument fragments (the first with the call's index,
    id and name, as OpenAI streams them), then ``finish_reason: tool_calls`` and
    ``[DONE]``. With ``hold_after=N`` the peer stops after N chunks until ``release`` is
    set, and records in ``released_early`` whether someone released it before it
    finished (so a test can see a line leave before generation ends).
    """

    def __init__(
        self,
        calls: list[tuple[str, Any]],
        *,
        api_key: str = "test-key",
        pieces: int = 3,
        hold_after: int | None = None,
        hold_timeout: float = 30.0,
    ) -> None:
        peer = self
        self.calls = calls
        self.api_key = api_key
        self.pieces = pieces
        self.hold_after = hold_after
        self.hold_timeout = hold_timeout
        self.release = threading.Event()
        self.released_early: bool | None = None
        self.requests: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                peer.requests.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                if self.headers.get("Authorization") != f"Bearer {peer.api_key}":
                    payload = json.dumps({"error": {"message": "Incorrect API key provided."}})
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload.encode())
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for number, chunk in enumerate(peer.chunks(body.get("model", "gpt-test"))):
                    if peer.hold_after is not None and number == peer.hold_after:
                        peer.released_early = peer.release.wait(peer.hold_timeout)
                    self._send(f"data: {json.dumps(chunk)}\n\n")
                self._send("data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _send(self, text: str) -> None:
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def chunks(self, model: str) -> list[dict[str, Any]]:
        """The stream's ``chat.completion.chunk`` objects, in order."""

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-stream",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        out = [chunk({"role": "assistant", "content": None})] if self.hold_after is None else []
        for index, (name, arguments) in enumerate(self.calls):
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            size = max(1, -(-len(text) // self.pieces))
            fragments = [text[i : i + size] for i in range(0, len(text), size)] or [""]
            for number, fragment in enumerate(fragments):
                call: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
                if number == 0:
                    call.update({"id": f"call_{index}", "type": "function"})
                    call["function"]["name"] = name
                out.append(chunk({"tool_calls": [call]}))
        out.append(chunk({}, "tool_calls"))
        return out

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ToolCallStreamPeer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RedisServer:
    """A ``redis-server`` of a test's own on a free port: it can be killed and restarted
    (empty, on the same port) without touching anyone else's Redis."""

    def __init__(self, directory: Any) -> None:
        self.directory = str(directory)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import shutil

        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "/usr/bin/redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from redis import Redis

        client = Redis(host="127.0.0.1", port=self.port)
        for _ in range(200):
            try:
                if client.ping():
                    return
            except Exception:  # noqa: S110 (not listening yet)
                pass
            time.sleep(0.025)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: connections break at once, and everything it held is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

"""HTTP transport: authentication, retries that honour ``Retry-After``, idempotency keys, pages.

When is a request sent again?

- a ``429`` or ``503`` answer: the server says it did not do the work, so any request is
  retried, after the ``Retry-After`` it names (seconds or an HTTP date, capped by
  ``max_wait``), up to ``max_retries`` times;
- a connection that could not be opened: nothing was sent, so any request is retried;
- a connection that dropped after the request went out (no answer, a reset): the server
  may have done the work. Only requests that are safe to repeat are retried: reads,
  ``PUT``/``DELETE``, and writes the server deduplicates by ``Idempotency-Key``. Those
  carry one key generated per logical call and sent unchanged on every retry, so the
  server replays its first answer instead of acting twice.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from conveyor_client.errors import ConveyorConnectionError, error_for

SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def query_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Query parameters as Conveyor reads them: lists comma-joined, booleans lower-case."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, list | tuple | set):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = str(value)
    return out


class Transport:
    """One ``httpx.Client`` plus Conveyor's retry, error and pagination rules."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        max_wait: float = 60.0,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        http_client: httpx.Client | None = None,
    ) -> None:
        headers = {"User-Agent": "conveyor-client/0.1", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = url.rstrip("/")
        self._client = http_client or httpx.Client(timeout=timeout)
        self._client.headers.update(headers)
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.backoff = backoff
        self.sleep = sleep

    def close(self) -> None:
        self._client.close()

    def url(self, path: str) -> str:
        """An absolute URL: paths are relative to ``<base>/api/v1``."""
        if path.startswith(("http://", "https://")):
            return path
        if path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics"):
            return self.base_url + path
        return f"{self.base_url}/api/v1{path}"

    def _delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """The server's ``Retry-After`` if any, else exponential backoff with jitter."""
        hinted = parse_retry_after(response.headers.get("Retry-After")) if response else None
        if hinted is None:
            hinted = self.backoff * (2**attempt) * (0.5 + random.random())
        return min(hinted, self.max_wait)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = False,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send one logical request (retried per the module's rules); raise on 4xx/5xx."""
        method = method.upper()
        send_headers = dict(headers or {})
        if idempotent or idempotency_key:
            send_headers["Idempotency-Key"] = idempotency_key or f"cc-{uuid.uuid4().hex}"
        repeatable = method in SAFE_TO_REPEAT or "Idempotency-Key" in send_headers
        # No params at all (not an empty dict) keeps a query already in the URL (a Link).
        kwargs: dict[str, Any] = {"params": query_params(params) or None, "headers": send_headers}
        if json_body is not None:
            kwargs["content"] = json.dumps(json_body).encode()
            send_headers.setdefault("Content-Type", "application/json")
        elif content is not None:
            kwargs["content"] = content
        attempt = 0
        while True:
            try:
                response = self._client.request(method, self.url(path), **kwargs)
            except httpx.TransportError as exc:
                # A failed connect sent nothing; anything later may have reached the server.
                not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt >= self.max_retries or not (not_sent or repeatable):
                    raise ConveyorConnectionError(
                        f"{method} {path}: {type(exc).__name__}: {exc}"
                    ) from exc
                self.sleep(self._delay(attempt))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                self.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """``request`` and decode the JSON body (``None`` for an empty one)."""
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a cursor-paginated list, fetching pages as the caller iterates."""
        query = dict(params or {})
        url: str | None = path
        seen: set[str] = set()
        while url is not None:
            response = self.request("GET", url, params=query)
            yield from response.json()
            cursor = response.headers.get("X-Next-Cursor")
            next_link = response.links.get("next", {}).get("url")
            if cursor and cursor not in seen:
                seen.add(cursor)
                query["cursor"] = cursor
            elif not cursor and next_link and next_link not in seen:
                seen.add(next_link)
                url, query = next_link, {}
            else:
                url = None  # the last page (or a server repeating itself: stop, not loop)

    @contextmanager
    def stream(self, method: str, path: str, *, json_body: Any = None) -> Iterator[httpx.Response]:
        """A streamed response (not retried: it is consumed as it arrives); raise on 4xx/5xx."""
        with self._client.stream(
            method,
            self.url(path),
            content=json.dumps(json_body).encode() if json_body is not None else None,
            headers={"Content-Type": "application/json"},
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            yield response


def _error(response: httpx.Response) -> Exception:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return error_for(response.status_code, body, dict(response.headers))

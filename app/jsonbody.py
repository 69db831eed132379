"""The one way request JSON is read: strict, bounded, and storable.

Every JSON body the API accepts goes through :func:`loads` (Flask's JSON provider, the
webargs parser of every ``@blp.arguments``, and the handlers that read raw bodies), so
what no part of Conveyor can handle is refused at the door with a 400 or 422:

- ``NaN``, ``Infinity`` and numbers too large for a float (``1e400``) are not JSON;
- nesting deeper than :data:`MAX_DEPTH` (a recursive validator or serialiser would
  overflow Python's stack further on);
- integers of more than :data:`MAX_INT_DIGITS` digits (Python refuses to parse them);
- strings and keys holding NUL (``\\u0000``) or an unpaired surrogate: PostgreSQL refuses
  both in ``text`` and ``jsonb``, and neither can be encoded as UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import Request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from app.errors import ConveyorError, ValidationFailed

MAX_DEPTH = 64
MAX_INT_DIGITS = 4000
# How much of a refused (413) body is read and thrown away so the connection can serve the
# client's next request; past that the connection is closed instead.
DRAIN_MAX_BYTES = 32 * 1024 * 1024

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class MalformedJSON(ConveyorError, ValueError):
    """400: the body is not JSON Conveyor accepts. A ValueError, so ``request.get_json``
    reports it as a bad request too."""

    code = 400


def unstorable_reason(text: str) -> str | None:
    """Why ``text`` cannot be stored (NUL or an unpaired surrogate), or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "NUL (\\u0000) is not allowed in a string."
    return "An unpaired UTF-16 surrogate is not allowed in a string."


def _refuse_constant(name: str) -> Any:
    raise MalformedJSON(f"The body is not valid JSON: {name} is not a JSON number.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedJSON(f"The body is not valid JSON: {text[:40]} is too large a number.")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise MalformedJSON(f"The body is not valid JSON: a number has {len(text):,} digits.")
    return int(text)


def check_document(value: Any, *, root: str = "") -> None:
    """Refuse a parsed document nested deeper than MAX_DEPTH (400) or holding a string or
    key that cannot be stored (422, naming its path). Iterative: no recursion to overflow."""
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            reason = unstorable_reason(node)
            if reason:
                raise ValidationFailed(reason, {path or "_schema": [reason]})
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise MalformedJSON(f"The body nests more than {MAX_DEPTH} levels deep.")
        if isinstance(node, dict):
            for key, child in node.items():
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and unstorable_reason(key):
                    reason = unstorable_reason(key) or ""
                    raise ValidationFailed(reason, {path or "_schema": [f"A key: {reason}"]})
                stack.append((child, child_path, depth + 1))
        else:
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(node))


def loads(data: str | bytes | bytearray, **kwargs: Any) -> Any:
    """Parse a request's JSON the strict way (see the module docstring)."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8-sig" if data[:3] == b"\xef\xbb\xbf" else "utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedJSON("The body is not valid UTF-8 JSON.") from exc
    else:
        text = data
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            **kwargs,
        )
    except MalformedJSON:
        raise
    except RecursionError as exc:
        raise MalformedJSON(f"The body nests more than {MAX_DEPTH} levels deep.") from exc
    except ValueError as exc:
        raise MalformedJSON(f"The body is not valid JSON: {exc}") from exc
    check_document(value)
    return value


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with :func:`loads` for ``request.get_json``."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Strict, bounded parsing of request JSON."""
        return loads(s, **kwargs)


class BoundedRequest(Request):
    """Flask's request, where a body streamed without ``Content-Length`` (chunked) that
    goes past ``max_content_length`` is a 413, as one with a ``Content-Length`` is.

    Werkzeug stops reading such a stream at the limit and hands back the first
    ``max_content_length`` bytes as if they were the whole body (a 400 further on).
    """

    def get_data(  # type: ignore[override]
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> bytes | str:
        """The body; 413 when a streamed body has more than the limit."""
        limit = self.max_content_length
        if (
            getattr(self, "_cached_data", None) is None
            and limit is not None
            and self.content_length is None
            and not parse_form_data
        ):
            data = self.stream.read()
            # One byte more than the limit means there was more: the stream raises 413.
            if len(data) >= limit and self.stream.read(1):
                raise RequestEntityTooLarge()
            self._cached_data = data
        return super().get_data(cache, as_text, parse_form_data)  # type: ignore[call-overload, no-any-return]

    def discard_body(self, max_bytes: int = DRAIN_MAX_BYTES) -> bool:
        """Read and drop what is left of the body (at most ``max_bytes``); True when the
        body ended, so the connection may carry the client's next request."""
        raw = self.environ.get("wsgi.input")
        if raw is None:
            return True
        if self.environ.get("wsgi.input_terminated"):
            stream = raw  # the server frames the body (gunicorn, chunked): read to its end
        elif self.content_length is not None and "stream" not in self.__dict__:
            # Refused on its Content-Length before a byte was read: exactly that much is left.
            stream = LimitedStream(raw, self.content_length)
        else:
            return False  # how much is left is unknown
        drained = 0
        while drained <= max_bytes:
            try:
                data = stream.read(65536)
            except (OSError, ValueError, ClientDisconnected):
                return False
            if not data:
                return True
            drained += len(data)
        return False

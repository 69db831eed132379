"""Console sign-in sessions, held server-side.

The browser's cookie carries only a random session id. The server keeps, under the
SHA-256 of that id, the signed-in API key's id and the session's CSRF token: the key
itself never leaves the sign-in request, and a stolen database or Redis dump holds no
usable cookie. With Redis configured (several gunicorn processes, several machines)
sessions live there with a TTL; the embedded default is one process, so a dict with
expiry does. Every request re-reads the key row, so revoking a key signs its sessions out.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

IDLE_SECONDS = 12 * 3600
MAX_MEMORY_SESSIONS = 10_000


@dataclass
class ConsoleSession:
    """What the server knows about one browser: its CSRF token and, once signed in, a key."""

    csrf_token: str
    key_id: str | None = None
    notices: list[list[str]] = field(default_factory=list)  # [kind, message] shown once


class SessionStore(Protocol):
    """Where console sessions live."""

    def get(self, session_id: str) -> ConsoleSession | None: ...

    def put(self, session_id: str, session: ConsoleSession) -> None: ...

    def delete(self, session_id: str) -> None: ...


def new_session_id() -> str:
    """A random session id (256 bits)."""
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    """A random CSRF token."""
    return secrets.token_urlsafe(32)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class MemorySessionStore:
    """Sessions in this process, for the embedded default (one web process)."""

    def __init__(self, idle_seconds: int = IDLE_SECONDS) -> None:
        self._idle = idle_seconds
        self._rows: dict[str, tuple[float, ConsoleSession]] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> ConsoleSession | None:
        """The live session, its idle timer restarted; None when unknown or expired."""
        key, now = _digest(session_id), time.monotonic()
        with self._lock:
            row = self._rows.get(key)
            if row is None or row[0] < now:
                self._rows.pop(key, None)
                return None
            self._rows[key] = (now + self._idle, row[1])
            return ConsoleSession(**asdict(row[1]))

    def put(self, session_id: str, session: ConsoleSession) -> None:
        """Store (or replace) a session."""
        now = time.monotonic()
        with self._lock:
            if len(self._rows) >= MAX_MEMORY_SESSIONS:
                # Expired first; then the oldest-expiring, so memory stays bounded.
                for key in [k for k, (exp, _) in self._rows.items() if exp < now]:
                    del self._rows[key]
                while len(self._rows) >= MAX_MEMORY_SESSIONS:
                    del self._rows[min(self._rows, key=lambda k: self._rows[k][0])]
            self._rows[_digest(session_id)] = (now + self._idle, ConsoleSession(**asdict(session)))

    def delete(self, session_id: str) -> None:
        """Forget a session."""
        with self._lock:
            self._rows.pop(_digest(session_id), None)


class RedisSessionStore:
    """Sessions in Redis with an idle TTL, shared by every web process."""

    PREFIX = "conveyor:console:session:"

    def __init__(self, redis: Any, idle_seconds: int = IDLE_SECONDS) -> None:
        self._redis = redis
        self._idle = idle_seconds

    def get(self, session_id: str) -> ConsoleSession | None:
        """The live session, its TTL restarted."""
        name = self.PREFIX + _digest(session_id)
        raw = self._redis.get(name)
        if raw is None:
            return None
        self._redis.expire(name, self._idle)
        return ConsoleSession(**json.loads(raw))

    def put(self, session_id: str, session: ConsoleSession) -> None:
        """Store (or replace) a session."""
        self._redis.set(
            self.PREFIX + _digest(session_id), json.dumps(asdict(session)), ex=self._idle
        )

    def delete(self, session_id: str) -> None:
        """Forget a session."""
        self._redis.delete(self.PREFIX + _digest(session_id))

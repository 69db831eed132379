"""Outbound HTTP that refuses private addresses, always times out, and caps response bodies.

Every TCP connection (the first request and every redirect) goes through
``GuardedBackend.connect_tcp``, which resolves the host itself, refuses loopback, private,
link-local, shared and metadata addresses unless the host is allow-listed, and then connects
to the address it checked, so a DNS answer cannot change between the check and the connect.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from httpcore._backends.sync import SyncBackend

from steps.errors import (
    OutboundRefused,
    OutboundTimeout,
    OutboundUnreachable,
    ResponseTooLarge,
    StepError,
)

DEFAULT_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_RESPONSE_BYTES = 1_000_000
MAX_REDIRECTS = 5
USER_AGENT = "Conveyor/0.1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_dns_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="conveyor-dns")


# IPv6 prefixes whose last 32 bits are an IPv4 address a gateway (NAT64) forwards to.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and may be delivered to: IPv4-mapped
    (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``), NAT64 (``64:ff9b::/96``), 6to4
    (``2002::/16``) and Teredo (server and client)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    last32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped:
        found.append(address.ipv4_mapped)
    if address in _IPV4_COMPATIBLE or any(address in net for net in _NAT64):
        found.append(last32)
    if address.sixtofour:
        found.append(address.sixtofour)
    if address.teredo:
        found.extend(address.teredo)
    return found


def is_public_address(address: IPAddress) -> bool:
    """True for a globally routable unicast address (not loopback, private, link-local,
    shared (100.64/10, where some clouds keep metadata), multicast or reserved), and, for an
    IPv6 address that carries an IPv4 address (NAT64, 6to4, mapped...), only when that IPv4
    address is public too."""
    embedded = embedded_ipv4(address)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return is_public_address(address.ipv4_mapped)
    if not (address.is_global and not address.is_multicast):
        return False
    return all(is_public_address(inner) for inner in embedded)


@dataclass(frozen=True)
class OutboundPolicy:
    """Which non-public hosts may be called: names (``localhost``, ``*.corp.example``), IP
    addresses and networks (``10.0.0.0/8``), from ``CONVEYOR_OUTBOUND_ALLOW_HOSTS``."""

    allow_hosts: tuple[str, ...] = ()

    @property
    def _networks(self) -> list[IPNetwork]:
        networks = []
        for entry in self.allow_hosts:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                continue
        return networks

    def allows_host(self, host: str) -> bool:
        """True when ``host`` is allow-listed by name (exact or ``*.suffix``) or literal IP."""
        host = host.lower().strip("[]").rstrip(".")
        for entry in self.allow_hosts:
            entry = entry.lower().strip("[]").rstrip(".")
            if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
                return True
        return False

    def allows_address(self, address: IPAddress) -> bool:
        """True for public addresses and addresses in an allow-listed network."""
        return is_public_address(address) or any(address in n for n in self._networks)

    def resolve(self, host: str, port: int, timeout: float = CONNECT_TIMEOUT_SECONDS) -> list[str]:
        """The addresses to connect to for ``host``; raises ``OutboundRefused`` if any of them
        is not public and the host is not allow-listed (mixed answers are refused whole)."""
        bare = host.strip("[]")
        try:
            literal: IPAddress | None = ipaddress.ip_address(bare)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            future = _dns_pool.submit(socket.getaddrinfo, bare, port, 0, socket.SOCK_STREAM)
            try:
                infos = future.result(timeout=timeout)
            except FutureTimeout as exc:
                raise OutboundTimeout(f"resolving {bare} took longer than {timeout:g}s") from exc
            except OSError as exc:
                raise OutboundUnreachable(f"cannot resolve {bare}: {exc}") from exc
            addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))
        if not self.allows_host(bare):
            for address in addresses:
                if not self.allows_address(address):
                    shown = bare if literal is not None else f"{bare} ({address})"
                    raise OutboundRefused(
                        f"refusing to connect to {shown}: not a public address; "
                        "add the host to CONVEYOR_OUTBOUND_ALLOW_HOSTS to allow it"
                    )
        return [str(a) for a in addresses]


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self._backend = SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve and check ``host``, then connect to the first checked address that answers."""
        addresses = self.policy.resolve(host, port, timeout or CONNECT_TIMEOUT_SECONDS)
        last: Exception | None = None
        for address in addresses:
            try:
                return self._backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        """Unix sockets are never an outbound target."""
        raise OutboundRefused("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        """As the default backend."""
        self._backend.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the connection pool on a ``GuardedBackend``.

    httpx does not take a network backend as an argument; swapping the pool it builds is the
    documented-by-source way to plug one in (``HTTPTransport._pool``, stable since 0.18).
    """

    def __init__(self, policy: OutboundPolicy, *, verify: bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=512,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(policy),
        )


PINNED_ORIGIN = "conveyor.pinned_origin"  # a request extension; httpx copies it to redirects


def _stay_on_pinned_origin(request: httpx.Request) -> None:
    """A request hook (it sees every redirect too): a request that carries a credential may
    not be redirected to another origin, where its headers would follow it."""
    pinned = request.extensions.get(PINNED_ORIGIN)
    if pinned and not same_origin(str(request.url), pinned):
        raise OutboundRefused(
            f"refusing to follow a redirect from {origin(pinned)} to {origin(str(request.url))}: "
            "a request carrying a credential stays on the credential's origin"
        )


_clients: dict[tuple[tuple[str, ...], bool], httpx.Client] = {}
_clients_lock = threading.Lock()


def client_for(policy: OutboundPolicy, *, verify: bool = True) -> httpx.Client:
    """One pooled client per policy per process (httpx clients are thread-safe)."""
    key = (policy.allow_hosts, verify)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = httpx.Client(
                transport=GuardedTransport(policy, verify=verify),
                trust_env=False,  # an environment proxy would bypass the address checks
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                headers={"User-Agent": USER_AGENT},
                event_hooks={"request": [_stay_on_pinned_origin]},
            )
            _clients[key] = client
        return client


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: safe to show in messages (paths may hold tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_origin(first: str, second: str) -> bool:
    """True when two URLs have the same scheme, host and port (default ports filled in):
    the boundary a credential's secret may not cross."""

    def key(url: str) -> tuple[str, str, int | None]:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = -1
        host = (parts.hostname or "").rstrip(".")
        return scheme, host, port if port is not None else _DEFAULT_PORTS.get(scheme)

    return key(first) == key(second)


@dataclass
class OutboundResponse:
    """A finished response with its (capped) body."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str

    @property
    def text(self) -> str:
        """The body as text (UTF-8, lenient)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        import json

        return json.loads(self.content)

    def snippet(self, limit: int = 300) -> str:
        """The start of the body, for error messages."""
        text = " ".join(self.text.split())
        return text if len(text) <= limit else text[:limit] + "…"


def request(
    policy: OutboundPolicy,
    method: str,
    url: str,
    *,
    json: Any = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_bytes: int = MAX_RESPONSE_BYTES,
    verify: bool = True,
    pin_origin: bool = False,
) -> OutboundResponse:
    """Make one HTTP request under ``policy``, reading at most ``max_bytes`` of the body and
    giving up after ``timeout`` seconds in all (connect, send, wait and read).

    ``pin_origin``: the request carries a credential, so redirects are followed only within
    the origin of ``url`` (httpx drops ``Authorization`` on a cross-origin redirect, but not
    ``x-api-key`` or a webhook credential's own headers).
    """
    deadline = time.monotonic() + timeout
    where = origin(url)
    client = client_for(policy, verify=verify)
    try:
        with client.stream(
            method,
            url,
            json=json,
            content=content,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
            extensions={PINNED_ORIGIN: url} if pin_origin else None,
        ) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ResponseTooLarge(f"{where} answered with a body over {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise OutboundTimeout(f"{where} took longer than {timeout:g}s to answer")
            return OutboundResponse(response.status_code, response.headers, bytes(body), url)
    except StepError:
        raise
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise OutboundUnreachable(f"could not connect to {where}: {_reason(exc)}") from exc
    except httpx.TimeoutException as exc:
        raise OutboundTimeout(f"{where} took longer than {timeout:g}s to answer") from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise StepError(f"cannot call {where}: {_reason(exc)}") from exc
    except httpx.TooManyRedirects as exc:
        raise StepError(f"{where} redirected more than {MAX_REDIRECTS} times") from exc
    except httpx.HTTPError as exc:
        raise OutboundTimeout(f"request to {where} failed: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__

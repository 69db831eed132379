"""Outbound HTTP: private addresses refused (after DNS, on redirects), timeouts, size caps."""

from __future__ import annotations

import ipaddress

import pytest

from steps.clients.outbound import OutboundPolicy, is_public_address, request
from steps.errors import OutboundRefused, OutboundTimeout, ResponseTooLarge, StepError
from tests.peers import HttpPeer, Reply


class Peer(HttpPeer):
    """Answers ``/big`` with 2 MB, ``/slow`` after a while, ``/to?u=...`` with a redirect."""

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if path == "/big":
            return 200, {}, b"x" * 2_000_000
        if path == "/slow":
            import time

            time.sleep(2)
        if path.startswith("/to?u="):
            return 302, {"Location": path.removeprefix("/to?u=")}, b""
        return 200, {"Content-Type": "text/plain"}, b"hello"


@pytest.fixture
def peer():
    with Peer() as running:
        yield running


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://10.0.0.8/",
        "http://172.16.3.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/",  # shared address space (Alibaba's metadata lives here)
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00:ec2::254]/",  # AWS IPv6 metadata
        "http://0.0.0.0/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://[64:ff9b:1::7f00:1]/",  # local-use NAT64 of 127.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
        "http://[::7f00:1]/",  # IPv4-compatible 127.0.0.1
        "http://[::a00:8]/",  # IPv4-compatible 10.0.0.8
        "http://[2001:0:7f00:1::]/",  # Teredo
    ],
)
def test_non_public_addresses_are_refused_without_an_allow_list(url):
    with pytest.raises(OutboundRefused, match="not a public address"):
        request(OutboundPolicy(), "GET", url, timeout=2)


def test_allow_list_names_hosts_addresses_and_networks(peer):
    for allow in (("127.0.0.1",), ("127.0.0.0/8",)):
        assert request(OutboundPolicy(allow), "GET", peer.url, timeout=2).text == "hello"
    by_name = f"http://localhost:{peer.port}/"
    assert request(OutboundPolicy(("localhost",)), "GET", by_name, timeout=2).text == "hello"
    with pytest.raises(OutboundRefused):
        request(OutboundPolicy(("10.0.0.0/8",)), "GET", peer.url, timeout=2)


def test_redirects_are_checked_too(peer):
    policy = OutboundPolicy(("localhost",))
    start = f"http://localhost:{peer.port}"
    assert request(policy, "GET", f"{start}/to?u={start}/", timeout=2).text == "hello"
    with pytest.raises(OutboundRefused, match="127.0.0.1"):
        request(policy, "GET", f"{start}/to?u={peer.url}/", timeout=2)
    with pytest.raises(OutboundRefused, match="169.254.169.254"):
        request(policy, "GET", f"{start}/to?u=http://169.254.169.254/", timeout=2)


def test_bodies_are_capped(peer):
    with pytest.raises(ResponseTooLarge):
        request(
            OutboundPolicy(("127.0.0.1",)), "GET", peer.url + "/big", timeout=5, max_bytes=100_000
        )


def test_every_call_times_out(peer):
    with pytest.raises(OutboundTimeout, match="longer than 0.5s"):
        request(OutboundPolicy(("127.0.0.1",)), "GET", peer.url + "/slow", timeout=0.5)


def test_other_schemes_are_refused():
    with pytest.raises(StepError):
        request(OutboundPolicy(), "GET", "file:///etc/passwd", timeout=1)


def test_public_address_classification():
    assert is_public_address(ipaddress.ip_address("93.184.216.34"))
    assert is_public_address(ipaddress.ip_address("2606:4700::1111"))
    assert not is_public_address(ipaddress.ip_address("224.0.0.1"))
    assert not is_public_address(ipaddress.ip_address("::ffff:10.0.0.1"))


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8: a public IPv4 behind the gateway
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b::a00:1", False),
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("2002:7f00:1::", False),
        ("2002:c0a8:101::", False),  # 6to4 of 192.168.1.1
        ("::7f00:1", False),
        ("::a9fe:a9fe", False),
        ("::ffff:a9fe:a9fe", False),
    ],
)
def test_ipv6_addresses_carrying_an_ipv4_address_are_judged_by_it(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_the_pool_allows_hundreds_of_calls_in_flight():
    from steps.clients.outbound import GuardedTransport

    transport = GuardedTransport(OutboundPolicy())
    assert transport._pool._max_connections == 512


def test_a_request_carrying_a_credential_is_not_redirected_to_another_origin(peer):
    policy = OutboundPolicy(("127.0.0.1", "localhost"))
    with Peer() as other:
        away = f"{peer.url}/to?u={other.url}/"
        with pytest.raises(OutboundRefused, match="refusing to follow a redirect"):
            request(policy, "GET", away, headers={"x-api-key": "k-1"}, timeout=2, pin_origin=True)
        assert other.requests == []
        # Without a credential, and within the origin, redirects are followed as before.
        assert request(policy, "GET", away, timeout=2).text == "hello"
    within = f"{peer.url}/to?u={peer.url}/"
    assert request(policy, "GET", within, timeout=2, pin_origin=True).text == "hello"

"""The QUIC listener's admission bookkeeping (sans-IO): sources counted by prefix (IPv4 address, IPv6 /64 and
/48), spoofable handshakes apart from validated connections, and every handshake under the global bound."""

from __future__ import annotations

import pytest

from node.ipprefix import source_prefixes
from node.transports.betanet.quic_admission import Admission, Limits, Verdict

LIMITS = Limits(max_handshakes=8, max_handshakes_per_ip=2, max_connections=100, max_connections_per_ip=3,
                max_connections_per_ipv6_48=5)  # fmt: skip


@pytest.mark.parametrize(
    ("host", "keys"),
    [
        ("192.0.2.7", ("192.0.2.7", None)),
        ("2001:db8:1:2::1", ("2001:db8:1:2::/64", "2001:db8:1::/48")),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", ("2001:db8:1:2::/64", "2001:db8:1::/48")),
        ("fe80::1%eth0", ("fe80::/64", "fe80::/48")),
        ("::ffff:192.0.2.7", ("192.0.2.7", None)),  # a dual-stack socket's view of an IPv4 client
        ("2002:cb00:7107:1234::1", ("203.0.113.7", None)),  # 6to4
        ("64:ff9b::203.0.113.7", ("203.0.113.7", None)),  # NAT64
        ("not an address", ("not an address", None)),
    ],
)
def test_source_prefixes(host: str, keys: tuple[str, str | None]) -> None:
    assert source_prefixes(host) == keys


def validated_connections(adm: Admission, host: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        assert adm.check(host, validated=False) == (Verdict.ACCEPT, "")
        adm.opened(i, host, validated=False)
        assert adm.handshake_over(i, completed=True) == ""


def test_addresses_in_one_64_share_one_count_of_connections() -> None:
    adm = Admission(LIMITS)
    for i in range(3):
        host = f"2001:db8:1:2::{i + 1:x}"
        validated_connections(adm, host, 1, start=i)
    verdict, why = adm.check("2001:db8:1:2:dead::1", validated=False)
    assert verdict is Verdict.DROP and "betanet.quic_max_connections_per_ip" in why
    assert adm.check("2001:db8:1:3::1", validated=True)[0] is Verdict.ACCEPT  # another /64


def test_the_64s_of_one_48_share_a_larger_count() -> None:
    adm = Admission(LIMITS)
    for i in range(5):
        validated_connections(adm, f"2001:db8:1:{i:x}::1", 1, start=i)
    verdict, why = adm.check("2001:db8:1:ff::1", validated=True)
    assert verdict is Verdict.DROP and "2001:db8:1::/48" in why and "quic_max_connections_per_ipv6_48" in why
    assert adm.check("2001:db8:2::1", validated=True)[0] is Verdict.ACCEPT  # another /48
    adm.ended(0)
    assert adm.check("2001:db8:1:ff::1", validated=True)[0] is Verdict.ACCEPT  # one ended: room again


def test_unvalidated_handshakes_beyond_the_per_prefix_bound_get_a_retry_not_a_lockout() -> None:
    """A spoofer filling an address's handshake slots makes a real client of it answer a Retry; the client then
    comes back validated and is admitted (the spoofed handshakes are not counted against it)."""
    adm = Admission(LIMITS)
    for i in range(2):
        adm.opened(i, "192.0.2.7", validated=False)
    assert adm.check("192.0.2.7", validated=False)[0] is Verdict.RETRY
    assert adm.check("192.0.2.7", validated=True)[0] is Verdict.ACCEPT
    adm.opened("real", "192.0.2.7", validated=True)
    assert adm.validated == {"192.0.2.7": 1} and adm.unvalidated == {"192.0.2.7": 2}


def test_retry_validated_initials_are_held_to_the_global_handshake_bound() -> None:
    adm = Admission(LIMITS)
    for i in range(8):  # validated handshakes from eight addresses: the table is full
        host = f"198.51.100.{i}"
        assert adm.check(host, validated=True)[0] is Verdict.ACCEPT
        adm.opened(i, host, validated=True)
    verdict, why = adm.check("198.51.100.200", validated=True)
    assert verdict is Verdict.DROP and "betanet.quic_max_handshakes" in why
    assert adm.check("198.51.100.200", validated=False)[0] is Verdict.RETRY
    adm.handshake_over(0, completed=True)
    assert adm.check("198.51.100.200", validated=True)[0] is Verdict.ACCEPT


def test_a_handshake_completing_over_its_prefixs_share_is_refused() -> None:
    """Unvalidated handshakes are counted apart (a spoofer's cannot take a real client's share), so when one
    completes its prefix may hold its share already: it is refused, and forgets nothing it did not count."""
    adm = Admission(LIMITS)
    validated_connections(adm, "192.0.2.7", 2)
    adm.opened("a", "192.0.2.7", validated=False)
    adm.opened("b", "192.0.2.7", validated=False)
    assert adm.handshake_over("a", completed=True) == ""
    why = adm.handshake_over("b", completed=True)
    assert "3 connections from 192.0.2.7" in why and "betanet.quic_max_connections_per_ip" in why
    adm.ended("b")
    assert adm.validated == {"192.0.2.7": 3} and adm.handshaking == 0 and len(adm) == 3
    for key in (0, 1, "a"):
        adm.ended(key)
    assert (adm.validated, adm.unvalidated, adm.handshaking, len(adm)) == ({}, {}, 0, 0)


def test_a_connection_that_ends_during_its_handshake_frees_its_slots() -> None:
    adm = Admission(LIMITS)
    adm.opened("x", "2001:db8::1", validated=True)
    adm.opened("y", "2001:db8::2", validated=False)
    adm.ended("x")
    adm.ended("y")
    assert adm.handshake_over("x", completed=False) == "" and adm.handshake_over("y", completed=True) == ""
    assert (adm.validated, adm.unvalidated, adm.handshaking, len(adm)) == ({}, {}, 0, 0)

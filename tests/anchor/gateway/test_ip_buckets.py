"""The gateway's per-IP rate limit cannot be dodged by rotating IPv6 addresses: an IPv6 client is counted by its
/64 (the prefix one subscriber holds), an IPv4 client by its address, an IPv4-mapped IPv6 address as IPv4. The
requests go through the real gateway app and the real Redis buckets; the client address is set by the ASGI
transport (a test cannot own 2^64 source addresses)."""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from anchor.gateway.app import GatewayContext, build_app
from anchor.gateway.auth import TokenIssuer, ip_bucket, ip_buckets
from anchor.run import open_stores
from anchor.settings import AnchorSection
from node.identity import Identity
from node.node import Node
from node.settings import config_from_mapping


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2002:cb00:7107:1234::1", "203.0.113.7"),  # 6to4: one IPv4 address, not 65,536 /64s
        ("64:ff9b::203.0.113.7", "203.0.113.7"),  # NAT64
        ("192.0.2.7", "192.0.2.7"),
        ("unknown", "unknown"),
    ],
)
def test_ip_bucket(host: str, bucket: str) -> None:
    assert ip_bucket(host) == bucket


def test_a_native_ipv6_client_also_counts_against_its_48() -> None:
    assert ip_buckets("2001:db8:1:2::1") == [("2001:db8:1:2::/64", 1), ("2001:db8:1::/48", 16)]
    assert ip_buckets("2002:cb00:7107:1::1") == [("203.0.113.7", 1)]
    # The reviewer's figure: one /48 was 65,536 separate buckets; now they all share one site bucket.
    assert len({ip_buckets(f"2001:db8:1:{i:x}::1")[1] for i in range(65536)}) == 1


async def test_rotating_ipv6_addresses_in_one_64_share_one_bucket(services: Any, tmp_path: Path) -> None:
    settings_file = tmp_path / "services.json"
    settings_file.write_text(json.dumps(dataclasses.asdict(services)))  # the shared servers' ServiceSettings
    settings_file.chmod(0o600)
    anchor = {"services_settings": str(settings_file), "ip_rate_per_s": 0.01, "ip_burst": 3, "health_cache_s": 60}
    cfg = config_from_mapping({"anchor": anchor}, data_dir=tmp_path)
    section = cfg.section(AnchorSection)
    node = Node(cfg, Identity.generate(), transports=[], control=False)
    # A fresh random /48 (documentation prefix 2001:db8::/32) and IPv4 loopback net per run: Redis keeps buckets.
    net = f"2001:db8:{secrets.randbelow(0xFFFF):x}"
    v4 = f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
    async with open_stores(cfg) as stores:
        ctx = GatewayContext(
            node=node,
            stores=stores,
            issuer=TokenIssuer(secrets.token_bytes(32), issuer="t", ttl_s=60),
            settings=section,
            wall_s=lambda: trio.current_time(),
        )
        app = build_app(ctx)

        async def status_from(ip: str) -> int:
            transport = httpx.ASGITransport(app=app, client=(ip, 40_000 + secrets.randbelow(20_000)))
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                return (await client.get("/v1/health")).status_code

        # Three requests from three addresses of one /64 use up its burst; a fourth address in it is refused.
        rotating = [f"{net}:1::{n:x}" for n in (1, 0xBEEF, 0xFFFF)] + [f"{net}:1:ffff:ffff:ffff:ffff"]
        assert [await status_from(ip) for ip in rotating] == [200, 200, 200, 429]
        assert await status_from(f"{net}:2::1") == 200  # the next /64 is another subscriber
        # IPv4 counts per address; the same address written as IPv4-mapped IPv6 is the same client.
        assert [await status_from(f"{v4}.{n}") for n in (1, 2, 3, 4)] == [200] * 4
        for _ in range(2):
            assert await status_from(f"{v4}.9") == 200
        assert await status_from(f"::ffff:{v4}.9") == 200  # its third
        assert await status_from(f"{v4}.9") == 429
        # Fresh /64s of one /48 (a tunnel broker's free /48): its site bucket, 16 times the burst, runs out.
        site = f"2001:db8:{(int(net.rsplit(':', 1)[1], 16) + 1 + secrets.randbelow(0xFFF0)) % 0xFFFF:x}"  # not net
        got = [await status_from(f"{site}:{n:x}::1") for n in range(17 * 3)]
        assert got[: 16 * 3] == [200] * (16 * 3) and 429 in got[16 * 3 :]

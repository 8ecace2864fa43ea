"""Behind a load balancer (``[anchor] trusted_proxies``) the per-IP rate limit counts the client the proxy names in
``X-Forwarded-For`` (its last entry), not the proxy; from anywhere else the header is ignored. Real gateway app,
real Redis buckets; the peer address is set by the ASGI transport."""

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
from anchor.gateway.auth import TokenIssuer
from anchor.gateway.forwarded import TrustedProxies
from anchor.run import open_stores
from anchor.settings import AnchorSection, parse_networks
from node.errors import ConfigError
from node.identity import Identity
from node.node import Node
from node.settings import config_from_mapping


def test_bad_networks_name_the_key() -> None:
    assert [str(n) for n in parse_networks("k", ["10.0.0.0/8", "::1", "192.0.2.7"])] == [
        "10.0.0.0/8",
        "::1/128",
        "192.0.2.7/32",
    ]
    with pytest.raises(ConfigError, match=r"anchor\.trusted_proxies: expected IP addresses or networks"):
        config_from_mapping({"anchor": {"trusted_proxies": ["haproxy"]}})


async def test_the_forwarded_client_is_rate_limited_not_the_proxy(services: Any, tmp_path: Path) -> None:
    settings_file = tmp_path / "services.json"
    settings_file.write_text(json.dumps(dataclasses.asdict(services)))
    settings_file.chmod(0o600)
    proxy_net = f"10.{secrets.randbelow(250) + 1}"  # fresh addresses per run: Redis keeps buckets
    anchor = {"services_settings": str(settings_file), "ip_rate_per_s": 0.01, "ip_burst": 2, "health_cache_s": 60}
    cfg = config_from_mapping({"anchor": {**anchor, "trusted_proxies": [f"{proxy_net}.0.0/16"]}}, data_dir=tmp_path)
    section = cfg.section(AnchorSection)
    node = Node(cfg, Identity.generate(), transports=[], control=False)
    async with open_stores(cfg) as stores:
        ctx = GatewayContext(
            node=node,
            stores=stores,
            issuer=TokenIssuer(secrets.token_bytes(32), issuer="t", ttl_s=60),
            settings=section,
            wall_s=lambda: trio.current_time(),
        )
        app = TrustedProxies(build_app(ctx), parse_networks("anchor.trusted_proxies", section.trusted_proxies))

        async def health(peer: str, forwarded: str | None) -> int:
            transport = httpx.ASGITransport(app=app, client=(peer, 40_000 + secrets.randbelow(20_000)))
            headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                return (await client.get("/v1/health", headers=headers)).status_code

        proxy = f"{proxy_net}.0.5"
        alice, bob = (f"198.51.{secrets.randbelow(250)}.{n}" for n in (1, 2))
        # Through the proxy: alice's burst (2) runs out whatever she writes before the proxy's entry...
        assert await health(proxy, alice) == 200
        assert await health(proxy, f"203.0.113.9, {alice}") == 200
        assert await health(proxy, f"{bob}, {alice}") == 429  # naming bob first does not get her bob's bucket
        # ...while bob, through the same proxy, has his own bucket (one shared proxy bucket would be empty now).
        assert [await health(proxy, bob) for _ in range(2)] == [200, 200]
        assert await health(proxy, "not-an-address") == 200  # unusable: counted as the proxy (its first)
        # A peer outside the trusted networks cannot pick a bucket: its own address counts.
        outsider = f"192.0.2.{secrets.randbelow(250) + 1}"
        assert [await health(outsider, f"203.0.113.{n}") for n in range(3)] == [200, 200, 429]


def test_too_wide_or_host_bits_networks_are_refused_naming_the_key() -> None:
    for wide in ("0.0.0.0/0", "10.0.0.0/7", "::/0", "2001:db8::/31"):
        with pytest.raises(ConfigError, match=r"anchor\.trusted_proxies: .* too many addresses"):
            config_from_mapping({"anchor": {"trusted_proxies": [wide]}})
    with pytest.raises(ConfigError, match=r"anchor\.trusted_proxies: .*no host bits"):
        config_from_mapping({"anchor": {"trusted_proxies": ["10.0.0.5/8"]}})
    assert [str(n) for n in parse_networks("k", ["10.0.0.0/8", "2001:db8::/32"])] == ["10.0.0.0/8", "2001:db8::/32"]


async def test_forwarded_entries_with_ports_or_brackets_name_the_client() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["client"][0])

    proxies = TrustedProxies(app, parse_networks("k", ["10.0.0.5"]))
    cases = {
        b"203.0.113.7:5555": "203.0.113.7",
        b"[2001:db8::1]:443": "2001:db8::1",
        b"[2001:db8::2]": "2001:db8::2",
        b"6.6.6.6, 203.0.113.8 ": "203.0.113.8",
        b"2001:db8::3": "2001:db8::3",
        b"203.0.113.9:port": "10.0.0.5",  # unusable: the proxy's own address stays
        b"[2001:db8::4]x": "10.0.0.5",
    }
    for header, client in cases.items():
        scope = {"type": "http", "client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", header)]}
        await proxies(scope, None, None)  # type: ignore[arg-type]  # never called: the wrapped app only records
        assert seen[-1] == client, header

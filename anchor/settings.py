"""The ``[anchor]`` section: the HTTP gateway and the shared stores (registered by the anchor plugin)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from node.errors import ConfigError
from node.schema import parse_host_port, setting

MCP_MEMORY_STORES = ("graph", "local")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MIN_PREFIX = {4: 8, 6: 32}  # the widest network trusted_proxies accepts, per IP version
CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_networks(key: str, values: Sequence[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (no host bits set, e.g. 10.0.0.0/8 not 10.0.0.5/8); a ConfigError naming ``key``
    for anything else, and for a network wider than /8 (IPv4) or /32 (IPv6): trusting that many addresses as
    proxies would let most of the Internet choose its own rate-limit bucket."""
    networks = []
    for value in values:
        try:
            network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError:
            raise ConfigError(
                f"{key}: expected IP addresses or networks such as 10.0.0.0/8 (no host bits set), got {value!r}"
            ) from None
        widest = MIN_PREFIX[network.version]
        if network.prefixlen < widest:
            raise ConfigError(
                f"{key}: {value!r} trusts too many addresses as proxies; name the proxies' addresses or a network "
                f"of at least /{widest}"
            )
        networks.append(network)
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class AnchorSection:
    SECTION: ClassVar[str] = "anchor"

    enabled: bool = setting(
        False,
        "Also run the anchor (HTTP gateway + shared stores) inside `village run`; `village anchor run` does so "
        "regardless.",
    )
    gateway_listen: str = setting("127.0.0.1:8000", "HOST:PORT the HTTP gateway listens on (port 0 picks a free port).")
    services_settings: str = setting(
        "",
        "JSON file with the stores' connection settings (written by `scripts/services up`). Empty: "
        "$VILLAGE_SERVICES_SETTINGS, else <data dir>/services.json if it exists, else the checkout's "
        ".services/settings.json.",
    )
    token_ttl_s: float = setting(
        900.0, "Lifetime of the access tokens (JWT) POST /v1/auth/token issues.", min=10, max=86_400
    )
    key_rate_per_s: float = setting(
        50.0, "Requests per second each API key (or OAuth2 client) may make, sustained.", min=0.01, max=1_000_000
    )
    key_burst: int = setting(
        100, "Requests an API key may make at once above its sustained rate.", min=1, max=1_000_000
    )
    ip_rate_per_s: float = setting(
        100.0, "Requests per second from one client IP address, sustained.", min=0.01, max=1_000_000
    )
    ip_burst: int = setting(
        200, "Requests one client IP address may make at once above its rate.", min=1, max=1_000_000
    )
    max_body_bytes: int = setting(
        65_536, "Largest request body the gateway accepts, in bytes.", min=1024, max=64 * 1_048_576
    )
    max_event_streams: int = setting(64, "Concurrent WS /v1/events connections; more are refused.", min=1, max=100_000)
    store_timeout_s: float = setting(
        5.0, "Seconds a store call may take before the request fails with 503.", min=0.1, max=600
    )
    queue_max: int = setting(
        10_000,
        "Messages POST /v1/messages may hold in the Redis queue for the node; more are refused with 503.",
        min=1,
        max=10_000_000,
    )
    audit_backlog_max: int = setting(
        100_000,
        "Audit records of POST /v1/messages that may wait in Redis for the drain to PostgreSQL (while it is down "
        "or slow); beyond it the route answers 503.",
        min=1,
        max=10_000_000,
    )
    audit_claim_idle_s: float = setting(
        30.0,
        "Seconds after which a gateway's audit drain takes over records another gateway's drain read and did not "
        "finish (it died): they reach PostgreSQL once (the insert is idempotent).",
        min=0.1,
        max=86_400,
    )
    redis_client: str = setting(
        "native",
        "How the gateway's hot Redis calls (the send script, the queue's reads and settles, the audit drain) are "
        "made: 'native' (RESP on trio sockets: 0.84-1.0 ms of server CPU per request against 1.33-1.37 ms for "
        "'threads', and 0.43-0.47x the bare route's throughput with p99 2.4-2.6x near-quiet, bench/README.md; "
        "rediss:// and URL options it does not speak go through redis-py) or 'threads' (redis-py in worker "
        "threads: its calls overlap the event loop, which served more under heavy CPU contention).",
        choices=("threads", "native"),
    )
    key_cache_ttl_s: float = setting(
        10.0,
        "Seconds Redis caches an API key's verified state (role, scopes, revoked) so requests skip PostgreSQL; "
        "a revocation through this anchor clears it at once, one made straight in PostgreSQL takes up to this "
        "long. 0: no cache.",
        min=0,
        max=3600,
    )
    health_cache_s: float = setting(
        1.0,
        "GET /v1/health asks the stores at most this often (seconds); in between it answers the last result.",
        min=0,
        max=60,
    )
    tls_cert: str = setting(
        "",
        "PEM certificate (chain) the gateway serves HTTPS with, together with tls_key. Empty: plain HTTP, which "
        "is refused on a non-loopback gateway_listen unless allow_plaintext_public.",
    )
    tls_key: str = setting("", "PEM private key of tls_cert (keep it 0600).")
    allow_plaintext_public: bool = setting(
        False,
        "Serve plain HTTP on a non-loopback gateway_listen: only behind a reverse proxy that terminates TLS.",
    )
    mcp_memory: str = setting(
        "local",
        "Where the node's MCP knowledge-graph memory lives while the anchor runs: local (the node's SQLite file) "
        "or graph (the Bolt graph store, rows sealed with the node's key; refused unless the server is on loopback).",
    )

    cluster: str = setting(
        "",
        "Name shared by the gateway replicas of one anchor (several `village anchor run` processes, each with its "
        "own data dir and identity, on the same PostgreSQL and Redis): they share one message queue (one Redis "
        "consumer group, each replica a consumer) and accept each other's access tokens (jwt_secret_file). "
        "Empty: this gateway alone.",
    )
    jwt_secret_file: str = setting(
        "",
        "File (0600, at least 32 random bytes) holding the key access tokens are signed with; required with "
        "cluster: every replica reads the same one. Empty: <data dir>/anchor/jwt.secret, made on first start.",
    )
    claim_idle_s: float = setting(
        30.0,
        "With cluster: a queued message another replica read but has not handed to its node for this many "
        "seconds (it stopped or hangs) is claimed by this one.",
        min=1,
        max=86_400,
    )

    trusted_proxies: tuple[str, ...] = setting(
        (),
        'Addresses or networks of the load balancers in front of the gateway (e.g. ["10.0.0.0/8"]): a request '
        "from one of them is rate limited by the last X-Forwarded-For address (the one the proxy appended) "
        "instead of the proxy's. Empty: X-Forwarded-For is ignored.",
    )

    def __post_init__(self) -> None:
        parse_host_port("anchor.gateway_listen", self.gateway_listen)
        parse_networks("anchor.trusted_proxies", self.trusted_proxies)
        if self.cluster and not CLUSTER_NAME.fullmatch(self.cluster):
            raise ConfigError(
                f"anchor.cluster: 1 to 64 letters, digits, '_', '.' or '-' (starting with a letter or digit), "
                f"got {self.cluster!r}"
            )
        if self.cluster and not self.jwt_secret_file:
            raise ConfigError(
                "anchor.jwt_secret_file: required with anchor.cluster (every replica must verify the tokens the "
                "others issue, so they read one shared secret file)"
            )
        if self.mcp_memory not in MCP_MEMORY_STORES:
            raise ConfigError(
                f"anchor.mcp_memory: expected one of {', '.join(MCP_MEMORY_STORES)}, got {self.mcp_memory!r}"
            )

"""The ``[governance]`` section: the village electorate and the gossip bounds (stdlib only, loads light)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.errors import ConfigError
from node.schema import setting

# Keys a village certificate may change on a running node (each validated by its section's schema first).
DEFAULT_VOTABLE_KEYS = (
    "ble.power_mode",  # Node.set_config re-plans the running BLE transport (ManagedBleTransport.reconfigure)
    "ble.max_central_links",  # lowers the cap at once; raising it above the start value takes a restart
)


def parse_member(key: str, text: str) -> tuple[bytes, int]:
    """``HEXKEY`` or ``HEXKEY:POWER`` -> (32-byte Ed25519 public key, power); ConfigError naming ``key``."""
    hexkey, _, power = text.partition(":")
    try:
        raw = bytes.fromhex(hexkey)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{key}: {text!r} is not a 64-hex-digit Ed25519 public key (optionally :POWER)")
    if power and (not power.isdigit() or not 1 <= int(power) <= 2**32):
        raise ConfigError(f"{key}: power of {hexkey[:16]}... must be an integer from 1 to 2^32")
    return raw, int(power) if power else 1


@dataclass(frozen=True, slots=True)
class GovernanceSettings:
    SECTION: ClassVar[str] = "governance"
    village_members: tuple[str, ...] = setting(
        (),
        "The village's genesis electorate: each node's Ed25519 signing key in hex (`village vote status` shows "
        "this node's), optionally HEXKEY:POWER. Empty = no village governance (local decisions only). Every "
        "node of the village must list the same members.",
    )
    village_namespace: str = setting("village", "Name of the village's governance (votes are bound to it).")
    votable_keys: tuple[str, ...] = setting(
        DEFAULT_VOTABLE_KEYS, "SECTION.KEY settings a village certificate may change on the running node."
    )
    gossip_max_peers: int = setting(16, "Reachable peers each push goes to.", min=1, max=256)
    gossip_items_per_s: float = setting(200.0, "Items a peer may push per second (surplus dropped).", min=1, max=1e5)
    gossip_burst_items: int = setting(2048, "Items a peer may push at once.", min=1, max=1_000_000)
    gossip_pulls_per_s: float = setting(1.0, "Catch-up requests a peer may make per second.", min=0.01, max=1000)
    gossip_burst_pulls: int = setting(64, "Catch-up requests a peer may make at once.", min=1, max=10_000)
    gossip_timeout_s: float = setting(10.0, "Timeout of one push or pull to a peer, in seconds.", min=0.1, max=600)
    store_timeout_s: float = setting(
        30.0,
        "Seconds one governance store write may take before it counts as failed (retried later).",
        min=0.1,
        max=3600,
    )
    gossip_queue_items: int = setting(4096, "Items waiting to be pushed (oldest dropped).", min=16, max=1_000_000)
    catch_up_interval_s: float = setting(
        30.0, "Seconds between catch-up pulls from a peer (anti-entropy).", min=0.1, max=86_400
    )
    auto_precommit: bool = setting(
        True, "Precommit a proposal's value once > 2/3 prevoted it (CometBFT); prevotes are cast by the operator."
    )

    def __post_init__(self) -> None:
        keys: set[bytes] = set()
        for m in self.village_members:
            raw, _ = parse_member("governance.village_members", m)
            if raw in keys:
                raise ConfigError(f"governance.village_members: {m[:16]}... is listed twice")
            keys.add(raw)
        ns = self.village_namespace
        if not 1 <= len(ns.encode()) <= 64 or ns == "local":
            raise ConfigError("governance.village_namespace must be 1-64 bytes and not 'local'")
        for k in self.votable_keys:
            section, dot, name = k.partition(".")
            if not dot or not section or not name:
                raise ConfigError(f"governance.votable_keys: {k!r} is not SECTION.KEY")

    def electorate_powers(self) -> dict[bytes, int]:
        return dict(parse_member("governance.village_members", m) for m in self.village_members)

"""The ``[mailbox]`` section: the offline-peer mailbox client and, with ``serve``, the anchor's mailbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.schema import setting
from node.transports.betanet.settings import check_p2p_addresses


@dataclass(frozen=True, slots=True)
class MailboxSection:
    SECTION: ClassVar[str] = "mailbox"

    anchors: tuple[str, ...] = setting(
        (),
        "Anchors keeping sealed envelopes for offline peers, as /ip4/.../tcp/N/p2p/ID: a private message whose peer "
        "is unreachable after mesh.courier_after_s is deposited at each, and this node fetches its own from them "
        "at start, whenever a link to one comes up, and every fetch_interval_s.",
    )
    fetch_interval_s: float = setting(
        300.0, "Seconds between fetches from each mailbox anchor while connected.", min=1, max=86_400
    )
    max_pending_deposits: int = setting(
        256,
        "Envelopes waiting to be deposited (an anchor is unreachable); the oldest go beyond this.",
        min=1,
        max=1_000_000,
    )
    request_timeout_s: float = setting(30.0, "Seconds one mailbox request (dial + answer) may take.", min=0.5, max=600)
    serve: bool = setting(
        False,
        "Keep envelopes for offline peers (an anchor): serve /aivillage/mailbox/1.0.0 on BetaNet, storing in the "
        "PostgreSQL of anchor.services_settings.",
    )
    max_envelope_bytes: int = setting(4096, "With serve: largest envelope accepted, in bytes.", min=256, max=1_048_576)
    max_envelopes_per_recipient: int = setting(
        256, "With serve: envelopes kept for one recipient; more deposits are refused.", min=1, max=1_000_000
    )
    max_envelopes_total: int = setting(
        100_000, "With serve: envelopes kept for all recipients; more deposits are refused.", min=1, max=100_000_000
    )
    max_expiry_s: float = setting(
        30 * 86_400.0, "With serve: deposits expiring further out than this are refused.", min=60, max=365 * 86_400
    )
    challenge_ttl_s: float = setting(
        30.0, "With serve: seconds a fetch challenge may be answered in (each is good for one answer).", min=1, max=3600
    )
    deposits_per_peer_per_min: float = setting(
        120.0,
        "With serve: deposits one BetaNet peer may make per minute (as many at once); more are answered busy.",
        min=1,
        max=1_000_000,
    )

    def __post_init__(self) -> None:
        check_p2p_addresses("mailbox.anchors", self.anchors)

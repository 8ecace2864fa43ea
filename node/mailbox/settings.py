"""The ``[mailbox]`` section: the offline-peer mailbox client and, with ``serve``, the anchor's mailbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.errors import ConfigError
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
        256,
        "With serve: envelopes kept for one recipient. Depositors share them fairly (each one's share shrinks as "
        "more deposit for that recipient); a deposit that does not fit is refused (E_FULL, retried by the sender), "
        "never made room for by dropping stored mail.",
        min=1,
        max=1_000_000,
    )
    max_bytes_per_recipient: int = setting(
        524_288, "With serve: envelope bytes kept for one recipient (shared like the envelopes).", min=4096, max=1 << 30
    )
    unverified_share: float = setting(
        0.75,
        "With serve: the part of each recipient's envelopes and bytes that depositors not in trusted_depositors "
        "may use together (their keys cost nothing to make); the rest is kept for trusted ones. Without "
        "trusted_depositors, unverified ones may use all of it.",
        min=0.05,
        max=1.0,
    )
    trusted_depositors: tuple[str, ...] = setting(
        (),
        "With serve: BetaNet keys of known peers (Ed25519 signing keys, 64 hex digits, as `village id --json` shows "
        "signing_public_key) whose deposits are verified: they may use the whole mailbox, including the part kept "
        "from unverified ones.",
    )
    max_envelopes_total: int = setting(
        100_000, "With serve: envelopes kept for all recipients; more deposits are refused.", min=1, max=100_000_000
    )
    max_envelopes_per_depositor_total: int = setting(
        1000,
        "With serve: envelopes one depositor not in trusted_depositors may have kept for all recipients together "
        "(its key costs nothing, so it must not fill max_envelopes_total with junk for invented recipients); with "
        "trusted_depositors set, unverified deposits together also fill at most unverified_share of "
        "max_envelopes_total.",
        min=1,
        max=100_000_000,
    )
    keep_unverified_s: float = setting(
        7 * 86_400.0,
        "With serve: the longest an envelope from a depositor not in trusted_depositors is kept (a shorter expiry "
        "than max_expiry_s, so junk from free keys leaves sooner): its recipient must fetch it within this time.",
        min=3600,
        max=365 * 86_400,
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
        for key in self.trusted_depositors:
            if len(key) != 64 or any(c not in "0123456789abcdefABCDEF" for c in key):
                raise ConfigError(f"mailbox.trusted_depositors: expected 64 hex digits (an Ed25519 key), got {key!r}")
        share = self.unverified_share if self.trusted_depositors else 1.0  # nothing to keep room for
        if int(self.max_bytes_per_recipient * share) < self.max_envelope_bytes:
            raise ConfigError(
                f"mailbox.max_bytes_per_recipient: {self.max_bytes_per_recipient} x mailbox.unverified_share "
                f"({share:g}) must hold at least one mailbox.max_envelope_bytes ({self.max_envelope_bytes}) envelope"
            )

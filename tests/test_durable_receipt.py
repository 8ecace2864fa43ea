"""Durable receipt (issue 13, item 8): a private message's delivery ack, and a mailbox ack, leave only after the
inbox row is committed with ``synchronous=FULL``. With the disk full (a real SQLite ``SQLITE_FULL``: the database
is held to its current size with ``PRAGMA max_page_count`` and filled), no ack leaves, the node keeps running, and
once there is room again the sender's resend is stored once and acked."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from node.inbox import Inbox, InboxError
from node.routing.courier import Envelope, encode_envelope, seal
from node.wire import NoisePayloadType, encode_noise_payload, encode_private_message
from tests.routing.harness import EPOCH_MS, start_mesh

FULL = 2  # PRAGMA synchronous value


def fill_disk(inbox: Inbox) -> int:
    """Hold the database to its size and fill every page; returns the rows it took."""
    pages = inbox.db.execute("PRAGMA page_count").fetchone()[0]
    inbox.db.execute(f"PRAGMA max_page_count = {pages + 4}")
    n = 0
    with pytest.raises(sqlite3.OperationalError, match="full"):
        while True:
            inbox.db.execute(
                "INSERT INTO inbox (id, sender, nickname, text, private, received_at_ms, sent_at_ms, hops)"
                " VALUES (?, 'filler', 'f', ?, 0, 0, 0, 1)",
                [f"filler-{n}", "x" * (200 if n < 40 else 1)],
            )
            n += 1
    return n


def free_disk(inbox: Inbox) -> None:
    inbox.db.execute("PRAGMA max_page_count = 1073741823")


def test_the_inbox_commits_with_synchronous_full_and_a_failed_insert_is_an_inbox_error(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "state.db", max_messages=100)
    assert inbox.db.execute("PRAGMA synchronous").fetchone()[0] == FULL
    fill_disk(inbox)
    with pytest.raises(InboxError, match="full"):
        inbox.add(
            id="m", sender="ab", nickname="n", text="t" * 300, private=True, received_at_ms=0, sent_at_ms=0, hops=1
        )
    free_disk(inbox)
    assert inbox.add(id="m", sender="ab", nickname="n", text="t", private=True, received_at_ms=0, sent_at_ms=0, hops=1)


async def test_no_delivery_ack_leaves_before_the_row_is_stored(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 2)
    a, b = mesh.nodes
    mesh.connect(0, 1)
    await mesh.wait_until_known(0, 1)
    await mesh.wait_until_known(1, 0)
    assert b.inbox is not None
    fill_disk(b.inbox)
    text = "kept by the sender until it is stored " * 5
    m = a.send_private(b.identity.peer_id_hex, text)
    await b.wait_until(lambda: b.inbox_store_failed >= 2)  # the first copy and a resend: refused, b still runs
    assert a.outgoing[m].state == "pending"  # no ack came back
    assert b.status()["counters"]["inbox_store_failed"] >= 2
    free_disk(b.inbox)
    await a.wait_until(lambda: a.outgoing[m].state == "delivered")
    assert [r.text for r in b.inbox.list(limit=1000) if r.id == m] == [text]


async def test_a_mailbox_envelope_that_cannot_be_stored_is_not_acked(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    mesh = await start_mesh(nursery, tmp_path, 2)
    a, b = mesh.nodes
    assert b.inbox is not None
    expires = int(EPOCH_MS) + 3_600_000
    plaintext = encode_noise_payload(NoisePayloadType.PRIVATE_MESSAGE, encode_private_message("MB-1", "via anchor"))
    sealed = seal(
        plaintext,
        sender_static=a.identity.noise_private,
        recipient_id=b.identity.peer_id,
        recipient_static=b.identity.noise_public,
        expires_at_ms=expires,
    )
    envelope = encode_envelope(Envelope(b.identity.peer_id, expires, 1, sealed))
    fill_disk(b.inbox)
    with pytest.raises(InboxError):  # the mailbox client then leaves it at the anchor (no ack)
        b.deliver_mailbox_envelope(envelope)
    free_disk(b.inbox)
    assert b.deliver_mailbox_envelope(envelope)  # fetched again later: stored this time
    assert [r.text for r in b.inbox.list(limit=1000) if r.id == "MB-1"] == ["via anchor"]

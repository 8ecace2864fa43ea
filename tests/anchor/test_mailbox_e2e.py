"""The mailbox end to end, with real processes and a real PostgreSQL: an anchor (`village run` with
``mailbox.serve``), node A and node C, all `village run` daemons over BetaNet on loopback. C is seen once and goes
offline; A sends it a private message, which A seals and deposits at the anchor; A stops; C starts later, fetches,
and its inbox holds the message exactly once. The database never holds the text, and the envelope is gone after
C's acknowledgement."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from anchor.services_settings import ServiceSettings
from tests.anchor.mailbox_db import find_text_anywhere, settings_for_database
from tests.test_cli import WAIT_S
from tests.test_multiprocess import Daemon, free_port, root  # noqa: F401 - root is a fixture

WAIT = f"{WAIT_S:g}"


def inbox(d: Daemon) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(d.cli("inbox", "--json").stdout)
    return out


@dataclass
class Village:
    anchor: Daemon
    a: Daemon
    c: Daemon
    a_id: str
    c_id: str


@contextlib.contextmanager
def village(where: Path, services: ServiceSettings, dsn: str) -> Iterator[Village]:
    """An anchor (mailbox.serve on the fresh database ``dsn``) and nodes A and C bootstrapped to it, using its
    mailbox, without courier copies (whatever reaches C while it is offline comes through the mailbox); A knows C
    from its announce. Everything is stopped at the end (the last lines of each log are printed)."""
    settings = settings_for_database(services, dsn, where / "services.json")
    anchor = Daemon(where, "anchor", f"/ip4/127.0.0.1/tcp/{free_port()}")
    anchor.extra_config = f'[mailbox]\nserve = true\n[anchor]\nservices_settings = "{settings}"\n'
    a = Daemon(where, "a", "/ip4/127.0.0.1/tcp/0")
    c = Daemon(where, "c", f"/ip4/127.0.0.1/tcp/{free_port()}")
    try:
        anchor.start()
        anchor_addr = anchor.status()["listen_addrs"]
        assert isinstance(anchor_addr, list)
        client = (
            f'[mailbox]\nanchors = ["{anchor_addr[0]}"]\n'
            "[mesh]\ncourier_copies = 0\ncourier_after_s = 0.0\nhandshake_timeout_s = 1.0\n"
        )
        for d in (a, c):
            d.bootstrap = [anchor_addr[0]]
            d.extra_config = client
            d.start()
        c_id, a_id = c.status()["peer_id"], a.status()["peer_id"]
        assert isinstance(c_id, str) and isinstance(a_id, str)
        a.cli("peers", "--wait", c_id, "--timeout", WAIT)  # A has C's announce (its Noise key) through the anchor
        yield Village(anchor, a, c, a_id, c_id)
    finally:
        for d in (a, c, anchor):
            d.stop()
        for d in (a, c, anchor):
            log = where / f"{d.name}.log"
            if log.exists():
                subprocess.run(["tail", "-n", "30", str(log)], check=False)


def test_a_sends_to_offline_c_via_the_anchor_and_c_receives_it_exactly_once(
    root: Path,  # noqa: F811
    services: ServiceSettings,
    pg_dsn: str,
) -> None:
    dsn = pg_dsn  # a fresh database: the anchor applies its migrations there, and nothing else writes to it
    text = f"the key is under the third stone {uuid.uuid4().hex[:8]}"
    with village(root, services, dsn) as v:
        a, c, c_id, a_id = v.a, v.c, v.c_id, v.a_id
        c.stop()  # C goes offline (its signed leave reaches A through the anchor)
        sent = json.loads(a.cli("send", c_id, text, "--json").stdout)
        status = json.loads(a.cli("mailbox", "--wait-deposited", "1", "--timeout", WAIT, "--json").stdout)
        assert status["client"]["deposited"] == 1
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                "SELECT recipient, envelope FROM mailbox WHERE recipient = %s", (bytes.fromhex(c_id),)
            ).fetchall()
            assert len(rows) == 1
            assert text.encode() not in bytes(rows[0][1])
            assert find_text_anywhere(conn, text) == []  # every text/bytea/json column of every table
        a.stop()  # the sender is gone too

        c.start()  # same data dir and identity: fetches at start
        done = json.loads(c.cli("mailbox", "--wait-acked", "1", "--timeout", WAIT, "--json").stdout)
        assert done["client"]["fetched"] == 1 and done["client"]["delivered"] == 1
        got = [m for m in inbox(c) if m["text"] == text]
        assert len(got) == 1
        assert got[0]["from"] == a_id and got[0]["private"] is True and got[0]["id"] == sent["id"]
        with psycopg.connect(dsn) as conn:
            left = conn.execute("SELECT count(*) FROM mailbox WHERE recipient = %s", (bytes.fromhex(c_id),)).fetchone()
            assert left is not None and left[0] == 0


@pytest.mark.slow
def test_with_the_sender_still_online_both_paths_deliver_once_and_the_sender_learns_delivered(
    root: Path,  # noqa: F811
    services: ServiceSettings,
    pg_dsn: str,
) -> None:
    """C comes back while A is online: A resends through the mesh and C fetches from the anchor too; C's inbox
    holds the message once, and A's outbox says delivered (C's ack reaches A through the mesh)."""
    text = f"two roads, one arrival {uuid.uuid4().hex[:8]}"
    with village(root, services, pg_dsn) as v:
        v.c.stop()
        sent = json.loads(v.a.cli("send", v.c_id, text, "--json").stdout)
        v.a.cli("mailbox", "--wait-deposited", "1", "--timeout", WAIT)
        v.c.start()
        v.c.cli("mailbox", "--wait-acked", "1", "--timeout", WAIT)
        state = json.loads(v.a.cli("rpc", "messages.wait", json.dumps({"id": sent["id"], "timeout_s": WAIT_S})).stdout)
        assert state["state"] == "delivered"
        assert [m["text"] for m in inbox(v.c)].count(text) == 1

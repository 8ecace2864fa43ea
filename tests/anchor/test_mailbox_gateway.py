"""The mailbox through the gateway: a real anchor (`run_anchor`: node with ``mailbox.serve`` + hypercorn) on real
PostgreSQL and Redis; an offline peer fetches its envelope over HTTP with ``GET /v1/mailbox`` in three steps
(challenge, proof, ack), and refusals are 401/403."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import psycopg
import trio

from anchor.gateway.auth import check_role_scopes
from anchor.mailbox import MailboxServerService
from anchor.run import run_anchor
from anchor.services_settings import ServiceSettings
from anchor.settings import AnchorSection
from anchor.stores.postgres import PostgresStore
from node.clock import Clock
from node.daemon import build_node
from node.identity import Identity, create_identity
from node.mailbox import protocol as p
from node.mailbox.settings import MailboxSection
from node.routing.courier import decode_envelope_untrusted, open_untrusted
from node.settings import Config
from node.transports.betanet.transport import BetanetTransport
from node.wire import decode_noise_payload_untrusted, decode_private_message_untrusted
from tests.anchor.mailbox_db import settings_for_database
from tests.mailbox.test_client import envelope_for
from tests.transports.test_betanet import LOOPBACK, WAIT_S

RELAXED = {"ip_rate_per_s": 1e6, "ip_burst": 1_000_000, "key_rate_per_s": 1e6, "key_burst": 1_000_000}


async def test_an_offline_peer_fetches_over_http_after_proving_its_identity(
    nursery: trio.Nursery, services: ServiceSettings, pg_dsn: str
) -> None:
    data = Path(tempfile.mkdtemp(prefix="vmb-", dir="/tmp"))
    settings = settings_for_database(services, pg_dsn, data / "services.json")
    cfg = Config(
        data_dir=data,
        anchor=AnchorSection(services_settings=str(settings), gateway_listen="127.0.0.1:0", **RELAXED),  # type: ignore[arg-type]
        mailbox=MailboxSection(serve=True),
        betanet=LOOPBACK,
    )
    ident = create_identity(data)
    node = build_node(cfg, ident, transports=[BetanetTransport(ident, LOOPBACK)], control=False, persistent_inbox=False)
    with trio.fail_after(WAIT_S):
        urls: list[str] = await nursery.start(run_anchor, node)
    server = node.service(MailboxServerService.name)
    assert isinstance(server, MailboxServerService) and server.service is not None
    a, c = Identity.generate(), Identity.generate()
    env_id, _ = await server.service.deposit(envelope_for(a, c, "MSG-H", "by the old oak", Clock().wall_ms()))

    async with PostgresStore(pg_dsn) as pg, httpx.AsyncClient(base_url=urls[0], timeout=10.0) as http:
        _, node_secret = await pg.create_api_key("peer-c", "node", check_role_scopes("node", None))
        _, user_secret = await pg.create_api_key("user", "user", check_role_scopes("user", None))

        async def token(secret: str) -> dict[str, str]:
            r = await http.post("/v1/auth/token", headers={"X-API-Key": secret})
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        auth = await token(node_secret)
        assert (await http.get("/v1/mailbox")).status_code == 401  # no token
        assert (await http.get("/v1/mailbox", headers=await token(user_secret))).status_code == 403  # no scope

        r = await http.get("/v1/mailbox", headers=auth)
        assert r.status_code == 200, r.text
        ch = r.json()
        assert ch["anchor_key"] == ident.signing_public.hex()
        challenge = p.Challenge(bytes.fromhex(ch["nonce"]), bytes.fromhex(ch["ephemeral_key"]), ch["expires_at_ms"])
        proof = p.make_proof(c, bytes.fromhex(ch["anchor_key"]), challenge)
        query = {
            "peer": proof.recipient_id.hex(),  # the gateway audits it as the target
            "noise_key": proof.noise_public.hex(),
            "signing_key": proof.signing_public.hex(),
            "nonce": proof.nonce.hex(),
            "mac": proof.mac.hex(),
            "signature": proof.signature.hex(),
        }
        r = await http.get("/v1/mailbox", headers=auth, params=query)
        assert r.status_code == 200, r.text
        got = r.json()
        assert [e["id"] for e in got["envelopes"]] == [env_id]
        sender, plaintext = open_untrusted(
            decode_envelope_untrusted(bytes.fromhex(got["envelopes"][0]["envelope"])), c.noise_private
        )
        _, body = decode_noise_payload_untrusted(plaintext)
        assert sender == a.peer_id and decode_private_message_untrusted(body) == ("MSG-H", "by the old oak")

        replay = await http.get("/v1/mailbox", headers=auth, params=query)  # the challenge is used up
        assert replay.status_code == 401 and replay.json()["error"] == "mailbox_proof_refused"
        bad = await http.get("/v1/mailbox", headers=auth, params={**query, "mac": "zz"})
        assert bad.status_code == 422  # a declared parameter of the wrong form, refused before the handler

        r = await http.get("/v1/mailbox", headers=auth, params={"grant": got["grant"], "ack": str(env_id)})
        assert r.status_code == 200 and r.json() == {"deleted": 1}
        with psycopg.connect(pg_dsn) as conn:
            row = conn.execute("SELECT count(*) FROM mailbox").fetchone()
            assert row is not None and row[0] == 0
        audited = await pg.recent_audit(limit=100, action="mailbox.fetch")
        assert c.peer_id_hex in {e.target for e in audited}  # the fetch with the proof names its peer
    node.request_stop()

"""GET /v1/mailbox end to end over HTTP: the anchor's real MailboxService on PostgreSQL behind the gateway."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from anchor.mailbox import MailboxCore, MailboxLimits, MailboxService, PostgresMailboxStorage
from node.identity import Identity
from node.mailbox.protocol import Challenge, make_proof
from node.routing.courier import Envelope, encode_envelope, seal
from tests.anchor.gateway.conftest import StartGateway


async def test_a_recipient_fetches_and_acks_its_envelopes_through_the_gateway(start_gateway: StartGateway) -> None:
    anchor_key = Identity.generate()
    service_box: list[MailboxService] = []
    gateway = await start_gateway(mailbox=_LateService(service_box))
    service = MailboxService(
        MailboxCore(anchor_key.signing_public, MailboxLimits()),
        PostgresMailboxStorage(gateway.pg),
        gateway.node.clock.wall_ms,
    )
    service_box.append(service)
    sender, recipient, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    expires = gateway.node.clock.wall_ms() + 3_600_000
    sealed = seal(
        b"sealed text",
        sender_static=sender.noise_private,
        recipient_id=recipient.peer_id,
        recipient_static=recipient.noise_public,
        expires_at_ms=expires,
    )
    env_id, new = await service.deposit(encode_envelope(Envelope(recipient.peer_id, expires, 1, sealed)))
    assert new

    key_id, secret = await gateway.key("node")
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        auth = {"Authorization": f"Bearer {await gateway.token(client, secret)}"}

        async def proof_params(who: Identity) -> dict[str, str]:
            ch = (await client.get("/v1/mailbox", headers=auth)).json()
            challenge = Challenge(bytes.fromhex(ch["nonce"]), bytes.fromhex(ch["ephemeral_key"]), ch["expires_at_ms"])
            proof = make_proof(who, bytes.fromhex(ch["anchor_key"]), challenge)
            return {
                "peer": recipient.peer_id.hex(),  # always claims to be the recipient
                "noise_key": proof.noise_public.hex(),
                "signing_key": proof.signing_public.hex(),
                "nonce": proof.nonce.hex(),
                "mac": proof.mac.hex(),
                "signature": proof.signature.hex(),
            }

        r = await client.get("/v1/mailbox", headers=auth, params=await proof_params(stranger))
        assert (r.status_code, r.json()["error"]) == (401, "mailbox_proof_refused")
        r = await client.get("/v1/mailbox", headers=auth, params=await proof_params(recipient))
        assert r.status_code == 200, r.text
        body = r.json()
        assert [e["id"] for e in body["envelopes"]] == [env_id]
        r = await client.get("/v1/mailbox", headers=auth, params={"grant": body["grant"], "ack": str(env_id)})
        assert r.json() == {"deleted": 1}
        r = await client.get("/v1/mailbox", headers=auth, params=await proof_params(recipient))
        assert r.json()["envelopes"] == []
        _user_id, user_secret = await gateway.key("user")  # users hold no mailbox:read
        user = {"Authorization": f"Bearer {await gateway.token(client, user_secret)}"}
        assert (await client.get("/v1/mailbox", headers=user)).status_code == 403
    rows = await gateway.audit_of(key_id)
    assert [r.action for r in rows] == ["auth.token"] + ["mailbox.fetch"] * 4 + ["mailbox.ack"] + ["mailbox.fetch"] * 2
    ack = rows[5]
    assert (ack.target, ack.detail["count"]) == (recipient.peer_id.hex(), 1)  # whose envelopes, how many


class _LateService:
    """The MailboxPort, bound once the test has the gateway's PostgreSQL store."""

    def __init__(self, box: list[MailboxService]) -> None:
        self.box = box

    async def gateway_fetch(self, key_id: str, query: dict[str, str]) -> object:
        return await self.box[0].gateway_fetch(key_id, query)

    def audit_entry(self, query: Mapping[str, str]) -> tuple[str, str, dict[str, Any]]:
        return self.box[0].audit_entry(query)

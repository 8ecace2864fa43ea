"""kill -9 loses nothing: real `village run` processes over BetaNet on 127.0.0.1. Messages accepted by
`village send` while the recipient is offline survive a SIGKILL of the sender, are queued again at its restart
(`village outbox` shows them), and reach the recipient's inbox exactly once when it comes back."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_multiprocess import WAIT, Daemon, free_port, root  # noqa: F401  (root is a fixture)


def test_sigkill_of_the_sender_loses_no_accepted_message(root: Path) -> None:  # noqa: F811
    alice = Daemon(root, "alice", f"/ip4/127.0.0.1/tcp/{free_port()}")
    bob = Daemon(root, "bob", "/ip4/127.0.0.1/tcp/0")
    try:
        alice.start()
        alice_addr = alice.status()["listen_addrs"][0]  # type: ignore[index]
        bob.bootstrap = [alice_addr]
        bob.start()
        bob_id = str(bob.status()["peer_id"])
        alice.cli("peers", "--wait", bob_id, "--timeout", WAIT)

        bob.kill()  # the recipient is gone (kill -9: no leave)
        texts = [f"while you were out {k}" for k in range(5)]
        ids = [json.loads(alice.cli("send", bob_id, t, "--json").stdout)["id"] for t in texts]
        alice.kill()  # the sender dies right after `send` returned: the messages must be on disk

        alice.start()
        pending = json.loads(alice.cli("outbox", "--state", "pending", "--json").stdout)
        assert sorted(m["id"] for m in pending) == sorted(ids)
        assert {m["to"] for m in pending} == {bob_id}
        human = alice.cli("outbox").stdout
        assert "pending" in human and texts[0] in human

        bob.start()  # bob redials alice; alice's restored messages go out when bob's announce arrives
        for message_id in ids:
            state = json.loads(
                alice.cli("rpc", "messages.wait", json.dumps({"id": message_id, "timeout_s": 60})).stdout
            )
            assert state["state"] == "delivered", state
        inbox = json.loads(bob.cli("inbox", "--json").stdout)
        assert sorted(m["text"] for m in inbox) == sorted(texts)  # each exactly once
        assert all(m["private"] for m in inbox)
        delivered = json.loads(alice.cli("outbox", "--state", "delivered", "--json").stdout)
        assert sorted(m["id"] for m in delivered) == sorted(ids)
        status = alice.status()
        assert status["outbox"] == {"pending": 0, "delivered": 5, "failed": 0}

        routes = json.loads(alice.cli("route", "--json").stdout)
        assert [(r["destination"], r["hops"], r["source"], r["transport"]) for r in routes] == [
            (bob_id, 1, "direct", "betanet")
        ]
        assert "DESTINATION" in alice.cli("route").stdout
    finally:
        for d in (alice, bob):
            d.stop()

"""Village governance between three real `village run` daemons over BetaNet on 127.0.0.1, driven by the real CLI:
propose on one, cast on the others, the certificate and the adopted configuration seen on all three; then a
certified shared policy that the Legal agent applies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_multiprocess import WAIT, Daemon, free_port, root

__all__ = ["root"]  # the fixture


@pytest.mark.timeout(300)
def test_propose_cast_and_certificate_on_three_daemons(root: Path) -> None:
    alice = Daemon(root, "alice", f"/ip4/127.0.0.1/tcp/{free_port()}")
    bob = Daemon(root, "bob", "/ip4/127.0.0.1/tcp/0")
    carol = Daemon(root, "carol", "/ip4/127.0.0.1/tcp/0")
    daemons = (alice, bob, carol)
    keys = []
    for d in daemons:  # keys first: every node lists the same genesis electorate
        d.data.mkdir(mode=0o700)
        d.cli("init")
        keys.append(json.loads(d.cli("id", "--json").stdout)["signing_public_key"])
    members = ", ".join(f'"{k}"' for k in keys)
    for d in daemons:
        d.extra_config = f'[llm]\nbackend = "off"\n[governance]\nvillage_members = [{members}]\n'
    try:
        alice.start()
        status = alice.status()
        alice_id, addrs = status["peer_id"], status["listen_addrs"]
        assert isinstance(alice_id, str) and isinstance(addrs, list)
        for d in (bob, carol):
            d.bootstrap = [addrs[0]]
            d.start()
            d.cli("peers", "--wait", alice_id, "--timeout", WAIT)

        out = json.loads(alice.cli("vote", "propose", "config", "ble.power_mode", "saver", "--json").stdout)
        h = out["proposal"]
        assert out["namespace"] == "village" and out["certificate"] is None  # alice's yes alone: 1 of 3
        for d in (bob, carol):
            r = json.loads(d.cli("vote", "cast", h, "yes", "--wait", WAIT, "--json").stdout)
            assert r["vote"]["voter"] == keys[daemons.index(d)] and r["vote"]["value"] == "yes"
        for d, key in zip(daemons, keys, strict=True):
            st = json.loads(d.cli("vote", "status", "--certified", h, "--wait", WAIT, "--json").stdout)
            assert st["me"] == key and st["state"]["config"] == {"ble.power_mode": "saver"}
            assert st["applied"] == {"ble.power_mode": "saver"}
            [cert] = st["certificates"]
            assert cert["proposal"] == h and cert["value"] == "yes" and cert["signers"] >= 3

        # refusals through the real CLI: a key outside the whitelist, a second vote on the same proposal
        r = alice.cli("vote", "propose", "config", "mesh.default_ttl", "3", check=False)
        assert r.returncode == 1 and "votable_keys" in r.stderr
        r = bob.cli("vote", "cast", h[:16], "no", check=False)
        assert r.returncode == 1 and "already prevoted" in r.stderr

        # shared policy: certified on the village, applied by carol's Legal agent
        out = json.loads(
            bob.cli("vote", "propose", "policy", "privacy.blocked_terms", '["project-x"]', "--json").stdout
        )
        for d in (alice, carol):
            d.cli("vote", "cast", out["proposal"], "yes", "--wait", WAIT)
        carol.cli("vote", "status", "--certified", out["proposal"], "--wait", WAIT)
        ask = json.loads(
            carol.cli("ask", "--agent", "Legal", "may", "I", "send", "the", "project-x", "plan", "--json").stdout
        )
        assert "Not allowed" in ask["answer"] and "project-x" in ask["answer"]
        assert json.loads(carol.cli("vote", "evidence", "--json").stdout) == []
    finally:
        for d in daemons:
            d.stop()

"""Local decisions are voted by the node's own agents (the roster), not by the node's key alone.

Each agent has an Ed25519 key derived from the node's signing key and its name (BLAKE2b keyed by the node's
seed, personalised ``aiv-agent-key-v1``: nothing new to store, the same keys after a restart, different keys on
every node), and its roster ``voting_power``. The local electorate is those keys; no agent holds a third of the
power (the roster refuses it), so no agent can decide or block alone.

How each agent votes (:func:`agent_prevote`): the honest rule — YES when the action applies to the electorate, NO
otherwise — except Legal, which votes NO on a config or policy value that names personal data (its
``policy_check``). The agents prevote, then precommit the value that > 2/3 prevoted; a proposal Legal opposes still
passes when the others hold > 2/3, which the roster's power table makes possible and visible in the votes.

Each agent's votes are saved (``save_vote``) before they are counted, and an agent's earlier votes are read back
from the store before it votes again, so a restart never makes an agent sign a slot twice.
"""

from __future__ import annotations

import hashlib
import json

import nacl.signing

from node.agents.governance import (
    Action,
    ActionKind,
    Electorate,
    Governance,
    Proposal,
    Value,
    Vote,
    VoteType,
    sign_vote,
)
from node.agents.governance.formats import action_applicable
from node.agents.roles import policy_check
from node.agents.roster import Roster

AGENT_KEY_PERSON = b"aiv-agent-key-v1"  # BLAKE2b personalisation (16 bytes): domain of agent key derivation


def agent_keys(node_key: nacl.signing.SigningKey, roster: Roster) -> dict[str, nacl.signing.SigningKey]:
    seed = bytes(node_key)
    return {
        a.name: nacl.signing.SigningKey(
            hashlib.blake2b(a.name.encode(), key=seed, person=AGENT_KEY_PERSON, digest_size=32).digest()
        )
        for a in roster
    }


def local_genesis(keys: dict[str, nacl.signing.SigningKey], roster: Roster) -> Electorate:
    return Electorate.of(0, {bytes(keys[a.name].verify_key): a.voting_power for a in roster})


def agent_prevote(name: str, electorate: Electorate, action: Action) -> Value:
    if action_applicable(electorate, action) is not None:
        return Value.NO
    personal = not policy_check(f"{action.key} {json.dumps(action.value)}")["allowed"]
    if name == "Legal" and action.kind in (ActionKind.CONFIG, ActionKind.POLICY) and personal:
        return Value.NO
    return Value.YES


def agents_vote(
    gov: Governance,
    keys: dict[str, nacl.signing.SigningKey],
    p: Proposal,
    already: dict[bytes, dict[tuple[int, int, VoteType], Vote]],
    now_ms: int,
) -> list[Vote]:
    """Every agent prevotes on ``p``, then precommits the polka. Returns the votes made (in order), each already
    counted by ``gov``; the caller saves them. ``already`` holds each agent's earlier votes (by public key)."""
    made: list[Vote] = []
    e = gov.electorates.get(p.epoch)
    if e is None or p.epoch != gov.epoch or now_ms >= p.expires_at_ms:
        return made

    def cast(key: nacl.signing.SigningKey, h: bytes, vtype: VoteType, value: Value) -> None:
        pub = bytes(key.verify_key)
        if e.index(pub) is None or (p.epoch, p.round, vtype) in already.get(pub, {}):
            return
        vote = sign_vote(key, gov.namespace, p.epoch, h, p.round, vtype, value)
        already.setdefault(pub, {})[vote.slot] = vote
        gov.receive_vote(vote, now_ms)
        made.append(vote)

    for name, key in sorted(keys.items()):
        cast(key, p.hash, VoteType.PREVOTE, agent_prevote(name, e, p.action))
    polka = gov.polka(p.epoch, p.round)
    if polka is not None:
        for _name, key in sorted(keys.items()):
            cast(key, polka[0], VoteType.PRECOMMIT, polka[1])
    return made

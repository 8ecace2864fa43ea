"""A deterministic multi-node governance simulation: seeded delays, duplicates, replays, partitions, equivocators.

Each node is a :class:`Governance` (plus a :class:`Voter` for honest members). Messages are the wire bytes
(proposal, vote, certificate, evidence). Byzantine members sign YES to half the nodes and NO to the other half,
at both steps, without waiting for a polka; a byzantine proposer sends two proposals for one slot. Every
``sync_ms`` each node re-sends what it holds to one random node it can reach (anti-entropy), which is how votes
dropped by a partition arrive after it heals.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import nacl.signing

from node.agents.governance import (
    ACCEPTED,
    Action,
    Electorate,
    Governance,
    Proposal,
    Value,
    Voter,
    VoteType,
    make_proposal,
    sign_vote,
    vote_from_bytes_untrusted,
)

NS = "village-sim"


@dataclass
class SimNode:
    index: int
    key: nacl.signing.SigningKey
    gov: Governance
    voter: Voter | None  # None: byzantine
    sent_log: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Partition:
    start_ms: int
    end_ms: int
    side: frozenset[int]  # the other side is everyone else

    def cuts(self, a: int, b: int, now: int) -> bool:
        return self.start_ms <= now < self.end_ms and ((a in self.side) != (b in self.side))


class Sim:
    def __init__(
        self,
        seed: int,
        powers: list[int],
        byzantine: set[int],
        *,
        partitions: tuple[Partition, ...] = (),
        dup_p: float = 0.1,
        replay_p: float = 0.05,
        sync_ms: int = 250,
    ) -> None:
        self.rng = random.Random(seed)
        ks = [nacl.signing.SigningKey(self.rng.randbytes(32)) for _ in powers]
        self.genesis = Electorate.of(0, {bytes(k.verify_key): p for k, p in zip(ks, powers, strict=True)})
        self.nodes: list[SimNode] = []
        for i, k in enumerate(ks):
            gov = Governance(NS, self.genesis)
            self.nodes.append(SimNode(i, k, gov, None if i in byzantine else Voter(k, gov)))
        self.byzantine = byzantine
        self.partitions = partitions
        self.dup_p, self.replay_p, self.sync_ms = dup_p, replay_p, sync_ms
        self.now = 0
        self._queue: list[tuple[int, int, int, int, str, bytes]] = []
        self._seq = 0
        self._history: list[tuple[int, str, bytes]] = []  # everything ever sent (for replays)
        self.delivered = 0

    # ---------------------------------------------------------------------------------------- network

    def send(self, src: int, dst: int, kind: str, data: bytes) -> None:
        if any(p.cuts(src, dst, self.now) for p in self.partitions):
            return
        copies = 2 if self.rng.random() < self.dup_p else 1
        for _ in range(copies):
            self._seq += 1
            at = self.now + self.rng.randint(1, 60)
            heapq.heappush(self._queue, (at, self._seq, src, dst, kind, data))
        self._history.append((dst, kind, data))
        if self._history and self.rng.random() < self.replay_p:  # an old message, again, somewhere
            old_dst, old_kind, old_data = self.rng.choice(self._history)
            self._seq += 1
            heapq.heappush(
                self._queue, (self.now + self.rng.randint(1, 500), self._seq, -1, old_dst, old_kind, old_data)
            )

    def broadcast(self, src: int, kind: str, data: bytes) -> None:
        for n in self.nodes:
            if n.index != src:
                self.send(src, n.index, kind, data)
        self.deliver(src, kind, data)

    # ------------------------------------------------------------------------------------------ nodes

    def propose(self, proposer: int, round_: int, action: Action, *, ttl_ms: int = 20_000) -> Proposal:
        node = self.nodes[proposer]
        p = make_proposal(
            NS,
            node.gov.epoch,
            round_,
            action,
            expires_at_ms=self.now + ttl_ms,
            signer=node.key,
        )
        self.broadcast(proposer, "proposal", p.encode())
        return p

    def propose_twice(self, proposer: int, round_: int, a: Action, b: Action) -> None:
        """An equivocating proposer: proposal ``a`` to even nodes, ``b`` to odd ones."""
        node = self.nodes[proposer]
        for n in self.nodes:
            action = a if n.index % 2 == 0 else b
            p = make_proposal(NS, node.gov.epoch, round_, action, expires_at_ms=self.now + 20_000, signer=node.key)
            self.send(proposer, n.index, "proposal", p.encode())

    def deliver(self, dst: int, kind: str, data: bytes) -> None:
        node = self.nodes[dst]
        gov = node.gov
        self.delivered += 1
        if kind == "proposal":
            p = gov.receive_proposal_untrusted(data, self.now)
            if p is None:
                return
            for n in self.nodes:  # gossip a new proposal on
                if n.index != dst:
                    self.send(dst, n.index, "proposal", data)
            if node.voter is not None:
                v = node.voter.on_proposal(p, self.now)
                if v is not None:
                    self.broadcast(dst, "vote", v.encode())
            else:
                self._byzantine_votes(node, p)
        elif kind == "vote":
            r = gov.receive_vote_untrusted(data, self.now)
            if r.evidence is not None:
                self.broadcast_others(dst, "evidence", r.evidence.encode())
            if r.certificate is not None:
                self.broadcast_others(dst, "cert", r.certificate.encode())
            if r.status == ACCEPTED and node.voter is not None:
                vote = vote_from_bytes_untrusted(data)
                pre = node.voter.maybe_precommit(vote.epoch, vote.round, self.now)
                if pre is not None:
                    self.broadcast(dst, "vote", pre.encode())
        elif kind == "cert":
            gov.receive_certificate_untrusted(data)
        elif kind == "evidence":
            ev = gov.receive_evidence_untrusted(data)
            if ev is not None:
                self.broadcast_others(dst, "evidence", data)
        gov.execute_ready()

    def broadcast_others(self, src: int, kind: str, data: bytes) -> None:
        for n in self.nodes:
            if n.index != src:
                self.send(src, n.index, kind, data)

    def _byzantine_votes(self, node: SimNode, p: Proposal) -> None:
        for vtype in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            yes = sign_vote(node.key, NS, p.epoch, p.hash, p.round, vtype, Value.YES).encode()
            no = sign_vote(node.key, NS, p.epoch, p.hash, p.round, vtype, Value.NO).encode()
            for n in self.nodes:
                self.send(node.index, n.index, "vote", yes if n.index % 2 == 0 else no)
            node.gov.receive_vote_untrusted(yes, self.now)

    def _sync(self) -> None:
        for node in self.nodes:
            g = node.gov
            items = [("cert", c.encode()) for c in g.certificates.values()]
            items += [("proposal", p.encode()) for p in g.all_proposals()]
            items += [("vote", v.encode()) for v in g.all_votes()]
            items += [("evidence", e.encode()) for e in g.evidence.values()]
            reachable = [
                o
                for o in self.nodes
                if o.index != node.index and not any(p.cuts(node.index, o.index, self.now) for p in self.partitions)
            ]
            if not reachable:
                continue
            other = self.rng.choice(reachable)  # push to one random peer per round (epidemic anti-entropy)
            for kind, data in items:
                self._seq += 1
                heapq.heappush(
                    self._queue, (self.now + self.rng.randint(1, 60), self._seq, node.index, other.index, kind, data)
                )

    def run_until(self, end_ms: int) -> None:
        next_sync = self.now + self.sync_ms
        while True:
            at = self._queue[0][0] if self._queue else end_ms
            if next_sync <= min(at, end_ms):
                self.now = next_sync
                self._sync()
                next_sync += self.sync_ms
                continue
            if not self._queue or at > end_ms:
                self.now = end_ms
                return
            at, _, _src, dst, kind, data = heapq.heappop(self._queue)
            self.now = at
            self.deliver(dst, kind, data)

    def honest(self) -> list[SimNode]:
        return [n for n in self.nodes if n.voter is not None]

"""Agents: governance throughput and certificate size, and the King's routing accuracy.

    python bench/agents.py [--votes N] [--skip-routing]

Governance rates are CPU time of this process (``time.process_time``): on a shared machine, wall time counts the
moments other processes held the core, which differ between the runs being compared.

Figures (one summary line each):
* ``governance.votes_verified_per_s``: distinct signed votes fed as wire bytes to a :class:`Governance` of 100
  voters (parse, membership, one-vote rule, Ed25519 verify, tally, certificate), vs a bare pynacl verify of
  the same sign-bytes with a prebuilt key, median ratio of 5 interleaved pairs (goal: ratio >= 0.8);
* ``governance.gossip_votes_per_s``: the same votes decoded from gossip pushes (node.agents.governance.gossip:
  codec, per-peer bucket, core, forwarding list), vs the same bare verify;
* ``governance.certificate_bytes_100_voters``: a certificate with the minimum quorum (67 of 100 equal
  voters) and with all 100, encoded;
* ``governance.certificates_verified_per_s``: offline verification of the 67-signer certificate, vs 67 bare
  verifies;
* ``routing.heldout_top1`` / ``routing.heldout_top3``: on ``tests/data/agent_requests_heldout.txt`` (161
  requests written in session 4 before any router change, never tuned on), with the roster alone and after online
  feedback on all 322 requests of ``tests/data/agent_requests.txt``; ``routing.heldout_fresh_top1`` without the
  new requests that are near-duplicates of an old one; ``routing.dev_top1``: the old train -> test split, whose
  test part was evaluated repeatedly in session 3 (dev data now). Settings: ``bench/routing_cv.py``;
* ``tasks.success_without_llm`` / ``tasks.success_with_llm``: the scripted end-to-end tasks of
  ``tests/data/agent_tasks.toml`` on a real three-node village (``bench/agent_tasks.py``), with the ask latency
  p50; the LLM part runs the first ``--llm-tasks`` tasks that need the local model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.agents.governance import (
    Action,
    ActionKind,
    Certificate,
    Electorate,
    Governance,
    Value,
    VoteType,
    make_proposal,
    sign_vote,
    verify_certificate,
)
from node.agents.governance.gossip import (
    MAX_ITEMS,
    Gossip,
    Item,
    ItemKind,
    Push,
    encode_push,
    request_from_bytes_untrusted,
)

NS = "bench"
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "agent_requests.txt"


def governance(votes: int) -> list[str]:
    keys = [nacl.signing.SigningKey(i.to_bytes(2, "big") * 16) for i in range(100)]
    e = Electorate.of(0, {bytes(k.verify_key): 1 for k in keys})
    rounds = max(1, votes // 200)  # 100 prevotes + 100 precommits per round
    props = [
        make_proposal(
            NS,
            0,
            r,
            Action(ActionKind.CONFIG, "k", r),
            expires_at_ms=10**12,
            signer=keys[r % len(keys)],  # one member may open 16 per epoch
        )
        for r in range(rounds)
    ]
    wire = [
        sign_vote(k, NS, 0, p.hash, p.round, t, Value.YES).encode()
        for p in props
        for t in (VoteType.PREVOTE, VoteType.PRECOMMIT)
        for k in keys
    ]
    msgs = [
        (e.verify_key(e.index(bytes(k.verify_key)) or 0), sign_vote(k, NS, 0, p.hash, p.round, t, Value.YES))
        for p in props[:1]
        for t in (VoteType.PREVOTE, VoteType.PRECOMMIT)
        for k in keys
    ]
    bare = [(vk, v.message(), v.signature) for vk, v in msgs] * rounds
    # Interleaved pairs (bare, governance, gossip), 5 of them; the ratio reported is the median of the per-pair
    # ratios (the machine is shared: a ratio of two best-ofs taken at different moments can mislead).
    pushes = [
        encode_push(NS, [Item(ItemKind.VOTE, w) for w in wire[i : i + MAX_ITEMS]])
        for i in range(0, len(wire), MAX_ITEMS)
    ]
    bare_rates: list[float] = []
    gov_ratios: list[float] = []
    gossip_ratios: list[float] = []
    gov_rate = gossip_rate = 0.0
    for _ in range(5):
        t0 = time.process_time()
        for vk, m, s in bare:
            vk.verify(m, s)
        bare_rates.append(len(bare) / (time.process_time() - t0))
        gov = Governance(NS, e)
        for p in props:
            gov.add_proposal(p, 0)
        t0 = time.process_time()
        accepted = 0
        for w in wire:
            accepted += gov.receive_vote_untrusted(w, 0).status == "accepted"
        rate = len(wire) / (time.process_time() - t0)
        gov_rate = max(gov_rate, rate)
        gov_ratios.append(rate / bare_rates[-1])
        # The same votes as they arrive over the mesh: decoded from gossip pushes, through the per-peer bucket
        # and the core, each new one listed for forwarding (what GovMesh does besides the store and the I/O).
        gossip = Gossip(
            Governance(NS, e), items_per_s=1e9, burst_items=10**9, pulls_per_s=1.0, burst_pulls=1, max_answer_bytes=1
        )
        for p in props:
            gossip.gov.add_proposal(p, 0)
        t0 = time.process_time()
        forwarded = 0
        for body in pushes:
            req = request_from_bytes_untrusted(body)
            assert isinstance(req, Push)
            forwarded += len(gossip.receive_items(b"peer", req.items, 0).new_votes)
        rate = len(wire) / (time.process_time() - t0)
        gossip_rate = max(gossip_rate, rate)
        gossip_ratios.append(rate / bare_rates[-1])
        assert forwarded == len(wire)
    bare_rate = max(bare_rates)
    assert accepted == len(wire) and len(gov.certificates) == rounds
    lines = [
        f"governance.votes_verified_per_s: {gov_rate:,.0f} votes/s (ratio vs bare Ed25519 verify "
        f"{statistics.median(gov_ratios):.2f}, median of 5 interleaved pairs, range {min(gov_ratios):.2f}-"
        f"{max(gov_ratios):.2f}; bare {bare_rate:,.0f}/s; {len(wire)} votes, 100 voters)",
        f"governance.gossip_votes_per_s: {gossip_rate:,.0f} votes/s from gossip pushes (ratio vs bare Ed25519 "
        f"verify {statistics.median(gossip_ratios):.2f}, median of 5 pairs)",
    ]
    cert = gov.certificates[(0, 0)]
    quorum = Certificate(NS, 0, 0, cert.proposal_hash, cert.value, cert.signers[:67], cert.signatures[:67])
    verify_certificate(quorum, e, NS)
    pre = {e.index(v.voter) or 0: v for v in gov.votes(0, 0) if v.vote_type is VoteType.PRECOMMIT}
    full = Certificate(
        NS, 0, 0, cert.proposal_hash, cert.value, tuple(sorted(pre)), tuple(pre[i].signature for i in sorted(pre))
    )
    verify_certificate(full, e, NS)
    lines.append(
        f"governance.certificate_bytes_100_voters: {len(quorum.encode())} bytes with 67 signers "
        f"(the minimum > 2/3), {len(full.encode())} bytes with all {len(full.signers)}"
    )
    n = max(5, votes // 400)
    sample = bare[:67]
    cert_rate = base_rate = 0.0
    for _ in range(3):  # interleaved best of 3, like the votes
        t0 = time.process_time()
        for _ in range(n):
            verify_certificate(quorum, e, NS)
        cert_rate = max(cert_rate, n / (time.process_time() - t0))
        t0 = time.process_time()
        for _ in range(n):
            for vk, m, s in sample:
                vk.verify(m, s)
        base_rate = max(base_rate, n / (time.process_time() - t0))
    lines.append(
        f"governance.certificates_verified_per_s: {cert_rate:,.1f} certs/s (ratio vs 67 bare verifies "
        f"{cert_rate / base_rate:.2f})"
    )
    return lines


def load_requests(path: Path = DATA) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    by: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            agent, text = line.split(" | ", 1)
            by.setdefault(agent.strip(), []).append(text.strip())
    train = [(a, t) for a, ts in by.items() for t in ts[:8]]
    test = [(a, t) for a, ts in by.items() for t in ts[8:]]
    return train, test


HELDOUT = ROOT / "tests" / "data" / "agent_requests_heldout.txt"
NEAR_DUPLICATE_COSINE = 0.9  # fixed before the held-out set was first evaluated


def load_labelled(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            agent, text = line.split(" | ", 1)
            out.append((agent.strip(), text.strip()))
    return out


def routing() -> list[str]:
    """Two evaluations. The old split (train 184 -> test 138 of agent_requests.txt): its test part was evaluated
    several times in session 3 and is dev data now, reported for continuity. The new held-out set (161 requests,
    written before the session's router changes): after feedback on all 322 old requests, and without the new
    requests that are near-duplicates (MiniLM cosine >= 0.9) of an old one."""
    from node.agents.roster import load_roster
    from node.agents.router import Router
    from node.rag.embed import Embedder

    train, test = load_requests()
    heldout = load_labelled(HELDOUT)
    emb = Embedder()
    roster = load_roster()

    def accuracy(router: Router, data: list[tuple[str, str]], vecs: object) -> tuple[float, float]:
        top1 = top3 = 0
        for (agent, text), v in zip(data, vecs, strict=True):  # type: ignore[call-overload]
            got = [c.agent for c in router.scores(text, v)[:3]]
            top1 += got[0] == agent
            top3 += agent in got
        return top1 / len(data), top3 / len(data)

    def learn(router: Router, data: list[tuple[str, str]], vecs: object) -> float:
        t0 = time.process_time()
        for (agent, text), v in zip(data, vecs, strict=True):  # type: ignore[call-overload]
            router.scores(text, v)  # route, then the user confirms or corrects
            router.feedback(text, v, agent)
        return (time.process_time() - t0) / len(data) * 1000

    train_vecs = emb.embed([t for _, t in train])
    test_vecs = emb.embed([t for _, t in test])
    held_vecs = emb.embed([t for _, t in heldout])
    router = Router(roster, emb.embed)
    dev_before = accuracy(router, test, test_vecs)
    held_before = accuracy(router, heldout, held_vecs)
    per_feedback_ms = learn(router, train, train_vecs)
    dev_after = accuracy(router, test, test_vecs)
    learn(router, test, test_vecs)  # the old held-out part is train data now
    held_after = accuracy(router, heldout, held_vecs)
    # A fresh node as shipped: seeded with node/agents/seed_requests.txt (the 322 old requests), no feedback.
    # As the agents service builds it: the seeds' shipped vectors (node/agents/seed_vectors.npy), not re-embedded.
    from node.agents.router import load_seeds, shipped_seed_vectors
    from node.rag.embed import MODEL_ID

    seeds = load_seeds()
    t0 = time.perf_counter()
    Router(roster, emb.embed)
    build_plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    seeded = Router(roster, emb.embed, seeds=seeds, seed_vectors=shipped_seed_vectors(seeds, MODEL_ID))
    build_seeded_s = time.perf_counter() - t0
    held_seeded = accuracy(seeded, heldout, held_vecs)
    old = [*train_vecs, *test_vecs]
    near = [max(float(v @ o) for o in old) >= NEAR_DUPLICATE_COSINE for v in held_vecs]
    fresh = [(r, v) for r, v, n in zip(heldout, held_vecs, near, strict=True) if not n]
    fresh_after = accuracy(router, [r for r, _ in fresh], [v for _, v in fresh])
    fresh_seeded = accuracy(seeded, [r for r, _ in fresh], [v for _, v in fresh])
    return [
        f"routing.heldout_top1: {held_after[0]:.1%} on {len(heldout)} new held-out requests after online feedback "
        f"on all {len(train) + len(test)} old ones (roster alone {held_before[0]:.1%}; goal 90 %)",
        f"routing.heldout_top3: {held_after[1]:.1%} (roster alone {held_before[1]:.1%})",
        f"routing.heldout_seeded_fresh_node_top1: {held_seeded[0]:.1%} top-3 {held_seeded[1]:.1%} on the "
        f"{len(heldout)} held-out requests, a fresh node seeded with the {len(seeds)} shipped requests, no feedback "
        f"(roster alone {held_before[0]:.1%}); {fresh_seeded[0]:.1%} on the {len(fresh)} not near-duplicates; "
        f"router built in {build_seeded_s:.2f} s seeded (shipped vectors) vs {build_plain_s:.2f} s roster alone",
        f"routing.heldout_fresh_top1: {fresh_after[0]:.1%} top-3 {fresh_after[1]:.1%} on the {len(fresh)} new "
        f"requests that are not near-duplicates (cosine >= {NEAR_DUPLICATE_COSINE}) of an old one",
        f"routing.dev_top1: {dev_after[0]:.1%} on the old held-out split ({len(test)}, now dev data) after feedback "
        f"on {len(train)} (roster alone {dev_before[0]:.1%}); top-3 {dev_after[1]:.1%}; "
        f"{per_feedback_ms:.0f} ms per routed+learned request",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--votes", type=int, default=4000)
    ap.add_argument("--skip-routing", action="store_true")
    ap.add_argument("--skip-tasks", action="store_true")
    ap.add_argument("--llm-tasks", type=int, default=100, help="tasks run with the local language model (0: none)")
    args = ap.parse_args()
    for line in governance(args.votes):
        print(line, flush=True)
    if not args.skip_routing:
        for line in routing():
            print(line, flush=True)
    if not args.skip_tasks:
        sys.argv = [sys.argv[0], "--llm", str(args.llm_tasks)]
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import agent_tasks

        agent_tasks.main()


if __name__ == "__main__":
    main()

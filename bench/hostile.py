"""Memory and honest throughput of one node core under attack (issue 13, item 7).

    python bench/hostile.py [--frames 1000000] [--identities 100000] [--rounds 100] [--honest 20] [--seed 1]

A victim :class:`MeshCore` V has two links: ``X``, on which an attacker feeds ``--frames`` hostile frames from
``--identities`` free identities (:class:`node.sim.hostile.Forger`: signed and unsigned announces, msg1 floods,
handshake junk, ciphertext from nobody, partial fragments, courier envelopes, pings, directed frames for nobody,
public messages and leaves from strangers, unknown types, random bytes), and ``H``, to an honest neighbour core A.
The run has ``--rounds`` rounds of ``ROUND_S`` simulated seconds: the round's share of the attack, spread evenly
over the round (V's timer fires as it falls due; what V sends to A meanwhile is counted and dropped: the
amplification), then ``--honest`` private messages from A to V, pumped over H until every one is acknowledged.

Figures (one line each):

* ``hostile.rss_mib`` — resident set size after each tenth of the attack and at the end: the plateau;
* ``hostile.tracemalloc_mib`` — Python heap allocated by the core's code (``node/routing``, ``node/wire``,
  ``node/crypto``; the attacker's own identity cache is not counted) at the same points (``--tracemalloc``; slower);
* ``hostile.frames_per_s`` — hostile frames V takes per second of CPU time (all timings here are the process's CPU
  time, so other processes on a shared machine do not skew them; the script is single-threaded);
* ``hostile.amplification`` — frames V sends per hostile frame;
* ``hostile.honest_ratio`` — honest messages per second of pumping under attack / in a quiet run of the same
  script (same rounds, same simulated time, no hostile frames): how much the state an attack leaves behind slows
  honest traffic (goal >= 0.5);
* ``hostile.bounds`` — every bounded structure's size and bound at the end (``MeshCore.bounded_sizes()`` when the
  core has it);
* ``hostile.escaped`` — exceptions that escaped V (must be 0).
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nacl.signing

from node.identity import Identity
from node.routing.mesh import DeliveryAcked, MeshCore
from node.routing.settings import MeshSection
from node.sim.hostile import Forger
from node.wire import DEFAULT_LIMITS

EPOCH_MS = 1_700_000_000_000.0
ROUND_S = 10.0  # simulated seconds per round
WARM_S = 20.0  # A and V know each other before the attack
MTU = 512


def make_core(seed: int, nickname: str) -> MeshCore:
    rng = random.Random(seed)
    identity = Identity(nacl.signing.SigningKey(rng.randbytes(32)), rng.randbytes(32))
    return MeshCore(identity, MeshSection(), DEFAULT_LIMITS, nickname, EPOCH_MS, rng)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


CORE_FILES = [tracemalloc.Filter(True, f"*/node/{pkg}/*") for pkg in ("routing", "wire", "crypto")]


def core_heap_mib() -> float:
    """Python heap allocated by the node core's own code (the attacker's identity cache and frames excluded)."""
    snap = tracemalloc.take_snapshot().filter_traces(CORE_FILES)
    return sum(stat.size for stat in snap.statistics("filename")) / 2**20


@dataclass
class Pair:
    """V and A on one link ``H``, delivering instantly; V's frames on other links are dropped (and counted)."""

    v: MeshCore
    a: MeshCore
    now: float = 0.0
    dropped_out: int = 0
    acked: int = 0
    escaped: Counter[str] = field(default_factory=Counter)

    def pump(self, *, deliver_to_a: bool = True) -> None:
        busy = True
        while busy:
            busy = False
            for link_id, frame in self.v.frames_to_send():
                if link_id == "H" and deliver_to_a:
                    self.a.receive_frame("H", frame, self.now)
                    busy = True
                else:
                    self.dropped_out += 1
            for link_id, frame in self.a.frames_to_send():
                if link_id == "H":
                    self.guard(self.v.receive_frame, "H", frame, self.now)
                    busy = True
            while (ev := self.a.next_event()) is not None:
                if isinstance(ev, DeliveryAcked):
                    self.acked += 1
            while self.v.next_event() is not None:
                pass

    def guard(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a bench must finish: count what escaped the core (a bug; must stay 0)
            self.escaped[type(exc).__name__] += 1

    def advance(self, t: float, *, deliver_to_a: bool = True) -> None:
        """Run both cores' timers up to simulated time ``t``."""
        while True:
            timers = [x for x in (self.v.get_timer(), self.a.get_timer()) if x is not None and x <= t]
            if not timers:
                break
            self.now = max(self.now, min(timers))
            for core in (self.v, self.a):
                due = core.get_timer()
                if due is not None and due <= self.now:
                    self.guard(core.handle_timer, self.now)
            self.pump(deliver_to_a=deliver_to_a)
        self.now = max(self.now, t)


class Attack:
    """The hostile frame number ``i`` (kinds in turn, identities in turn)."""

    def __init__(self, target: bytes, identities: int, seed: int, honest: list[bytes]) -> None:
        self.forger = Forger(target, random.Random(seed), seed)
        self.identities = identities
        self.honest = honest
        self.kinds: list[Callable[[int, int], bytes]] = [
            lambda i, ts: self.forger.announce(self.ident(i), ts),
            lambda i, ts: self.forger.announce(self.ident(i), ts, signed=False),
            lambda i, ts: self.forger.msg1(self.ident(i).peer_id, ts),
            lambda i, ts: self.forger.handshake_junk(self.ident(i).peer_id, ts),
            lambda i, ts: self.forger.ciphertext(self.ident(i).peer_id, ts, 80),
            lambda i, ts: self.forger.partial_fragment(self.ident(i).peer_id, ts, total=100, chunk_bytes=400),
            lambda i, ts: self.forger.courier(self.ident(i).peer_id, ts, recipient=self.forger.random_id(), copies=3),
            lambda i, ts: self.forger.ping(self.ident(i).peer_id, ts),
            lambda i, ts: self.forger.directed_elsewhere(self.ident(i).peer_id, ts, 120),
            lambda i, ts: self.forger.public(self.ident(i), ts, 200),
            lambda i, ts: self.forger.leave(self.ident(i), ts),
            lambda i, ts: self.forger.unknown_type(self.ident(i).peer_id, ts, 60),
            lambda i, ts: self.forger.garbage(64),
            lambda i, ts: self.forger.msg1(self.honest[i % len(self.honest)], ts),  # forged in an honest name
            # what crashed or bloated the core before issue 13's fixes
            lambda i, ts: self.forger.nested_fragments(self.ident(i).peer_id, ts, 600),
            lambda i, ts: self.forger.ping(self.ident(i).peer_id, ts, 70_000),
            lambda i, ts: self.forger.public(self.ident(i), ts, 1_000_000),
        ]

    def ident(self, i: int) -> Identity:
        return self.forger.identity(i % self.identities)

    def frame(self, i: int, ts_ms: int) -> bytes:
        return self.kinds[i % len(self.kinds)](i // len(self.kinds), ts_ms)


@dataclass
class Result:
    honest_s: float = 0.0
    honest_sent: int = 0
    honest_acked: int = 0
    attack_s: float = 0.0
    frames: int = 0
    rss: list[float] = field(default_factory=list)
    traced: list[float] = field(default_factory=list)
    dropped_out: int = 0
    escaped: Counter[str] = field(default_factory=Counter)
    bounds: dict[str, tuple[int, int]] = field(default_factory=dict)


def bounds(core: MeshCore) -> dict[str, tuple[int, int]]:
    return core.bounded_sizes()


def run(frames: int, identities: int, rounds: int, honest: int, seed: int, *, traced: bool = False) -> Result:
    v, a = make_core(seed * 10 + 1, "victim"), make_core(seed * 10 + 2, "honest")
    pair = Pair(v, a)
    v.link_up("H", MTU, 0.0)
    a.link_up("H", MTU, 0.0)
    v.link_up("X", MTU, 0.0)
    pair.pump()
    pair.advance(WARM_S)
    attack = Attack(v.peer_id, max(1, identities), seed, [a.peer_id])
    res = Result()
    if traced:
        tracemalloc.start()
    per_round = frames // max(1, rounds)
    checkpoints = {max(1, rounds * k // 10) for k in range(1, 11)}
    i = 0
    for r in range(1, rounds + 1):
        t0 = pair.now
        t_round = time.process_time()
        for k in range(per_round):
            t = t0 + ROUND_S * k / max(1, per_round)
            if t > pair.now:
                pair.advance(t, deliver_to_a=False)
            frame = attack.frame(i, v.wall_ms(pair.now))
            i += 1
            start = time.process_time()
            pair.guard(v.receive_frame, "X", frame, pair.now)
            pair.pump(deliver_to_a=False)
            res.attack_s += time.process_time() - start
        res.frames += per_round
        pair.advance(t0 + ROUND_S, deliver_to_a=False)
        del t_round
        # the honest round: A -> V private messages, pumped until acknowledged
        acked0 = pair.acked
        start = time.process_time()
        for _ in range(honest):
            a.send_private(v.peer_id, "honest traffic under attack", pair.now)
            res.honest_sent += 1
        pair.pump()
        for _ in range(60):  # up to 60 s simulated for the handshake and retries
            if pair.acked - acked0 >= honest:
                break
            pair.advance(pair.now + 1.0)
        res.honest_s += time.process_time() - start
        res.honest_acked += pair.acked - acked0
        if r in checkpoints:
            res.rss.append(rss_mib())
            if traced:
                res.traced.append(core_heap_mib())
    if traced:
        tracemalloc.stop()
    res.dropped_out = pair.dropped_out
    res.escaped = pair.escaped
    res.bounds = bounds(v)
    return res


def report(attacked: Result, quiet: Result, identities: int) -> list[str]:
    def per_s(r: Result) -> float:
        return r.honest_acked / r.honest_s if r.honest_s else 0.0

    ratio = per_s(attacked) / per_s(quiet) if per_s(quiet) else 0.0
    lines = [
        f"hostile.rss_mib: {' '.join(f'{x:.0f}' for x in attacked.rss)} (each tenth of {attacked.frames:,} frames from "
        f"{identities:,} identities; quiet run ends at {quiet.rss[-1] if quiet.rss else 0:.0f})",
        f"hostile.frames_per_s: {attacked.frames / attacked.attack_s if attacked.attack_s else 0:,.0f} "
        f"({attacked.attack_s:.1f} CPU-s of core time for {attacked.frames:,} frames)",
        f"hostile.amplification: {attacked.dropped_out / max(1, attacked.frames):.3f} frames out per hostile frame",
        f"hostile.honest_ratio: {ratio:.2f} (under attack {per_s(attacked):,.0f} msg/s, "
        f"{attacked.honest_acked}/{attacked.honest_sent} acked; quiet {per_s(quiet):,.0f} msg/s, "
        f"{quiet.honest_acked}/{quiet.honest_sent} acked; goal >= 0.5)",
        "hostile.bounds: " + ", ".join(f"{k} {c}/{b}" for k, (c, b) in sorted(attacked.bounds.items())),
        f"hostile.escaped: {sum(attacked.escaped.values())} {dict(attacked.escaped) or ''}".rstrip(),
    ]
    if attacked.traced:
        lines.insert(1, f"hostile.tracemalloc_mib: {' '.join(f'{x:.1f}' for x in attacked.traced)}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--identities", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--honest", type=int, default=20, help="honest private messages per round")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tracemalloc", action="store_true", help="also trace the Python heap (slower)")
    args = ap.parse_args()
    quiet = run(0, args.identities, args.rounds, args.honest, args.seed)
    attacked = run(args.frames, args.identities, args.rounds, args.honest, args.seed, traced=args.tracemalloc)
    for line in report(attacked, quiet, args.identities):
        print(line, flush=True)


if __name__ == "__main__":
    main()

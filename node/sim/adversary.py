"""Hostile node kinds for the simulator (issue 13): a share of a mesh's nodes attack it while the others carry honest
traffic. Each hostile node still runs its own core (it relays like anyone), and adds its attack:

* ``flooder`` — every ``PERIOD_S``: signed announces from fresh identities, directed frames for nobody, frames of
  unknown types and public messages from strangers, all with TTL 7, so its neighbours relay them onward;
* ``replayer`` — keeps the last ``REPLAY_MEMORY`` frames it received and, every ``PERIOD_S``, puts some back on the
  air with their TTL reset to 7;
* ``handshaker`` — every ``PERIOD_S``: Noise msg1 to honest peers from throwaway sender IDs and forged in other
  honest peers' names, and ciphertext from nobody (which makes BitChat nodes start handshakes);
* ``liar`` — announces as its neighbours honest nodes it has no link to (all ten slots), to bend path tables and
  announce-relay pruning.

``attach(sim, hostile_nodes, seed=...)`` assigns the kinds in turn and schedules the attacks; honest unicast between
the other nodes is then measured as usual (``bench/hostile_mesh.py``).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from functools import partial

from node.sim.engine import Simulation
from node.sim.hostile import Forger, with_ttl

KINDS = ("flooder", "replayer", "handshaker", "liar")
PERIOD_S = 5.0  # between two bursts of one hostile node
BURST_FRAMES = 5  # frames per burst (one hostile frame per second per node)
REPLAY_MEMORY = 256  # frames a replayer keeps


def attach(
    sim: Simulation,
    hostile_nodes: list[int],
    *,
    seed: int = 0,
    start_s: float = 5.0,
    kinds_used: tuple[str, ...] = KINDS,
) -> dict[int, str]:
    """Make ``hostile_nodes`` hostile (``kinds_used`` in turn); returns node -> kind."""
    rng = random.Random(seed ^ 0x5EED)
    hostile = set(hostile_nodes)
    honest_ids = [pid for i, pid in enumerate(sim.peer_ids) if i not in hostile]
    kinds: dict[int, str] = {}
    for k, i in enumerate(sorted(hostile)):
        kind = kinds_used[k % len(kinds_used)]
        kinds[i] = kind
        forger = Forger(sim.peer_ids[i], random.Random(rng.getrandbits(64)), seed * 1000 + i)
        if kind == "liar":
            _lie_about_neighbours(sim, i, honest_ids, rng)
            continue
        burst = {"flooder": _flood, "replayer": _replay(sim, i), "handshaker": _handshakes}[kind]
        _every(sim, start_s + rng.random(), partial(burst, sim, i, forger, honest_ids))
    return kinds


def _every(sim: Simulation, first_s: float, fn: Callable[[], None]) -> None:
    def tick() -> None:
        fn()
        sim.schedule(sim.now + PERIOD_S, tick)

    sim.schedule(first_s, tick)


def _ts(sim: Simulation, i: int) -> int:
    return sim.cores[i].wall_ms(sim.now)


def _flood(sim: Simulation, i: int, forger: Forger, honest: list[bytes]) -> None:
    ts = _ts(sim, i)
    for k in range(BURST_FRAMES):
        n = forger.rng.getrandbits(32)
        choice = k % 4
        if choice == 0:
            frame = forger.announce(forger.identity(n), ts)
        elif choice == 1:
            frame = forger.directed_elsewhere(forger.random_id(), ts, 200)
        elif choice == 2:
            frame = forger.unknown_type(forger.random_id(), ts, 150)
        else:
            frame = forger.public(forger.identity(n), ts, 300)
        sim.inject(i, frame)


def _replay(sim: Simulation, i: int) -> Callable[[Simulation, int, Forger, list[bytes]], None]:
    seen: deque[bytes] = deque(maxlen=REPLAY_MEMORY)
    core = sim.cores[i]
    receive = core.receive_frame

    def recording(link_id: str, data: bytes, now: float) -> bool:
        seen.append(data)
        return receive(link_id, data, now)

    core.receive_frame = recording  # type: ignore[method-assign]

    def burst(sim: Simulation, i: int, forger: Forger, honest: list[bytes]) -> None:
        frames = list(seen)
        for _ in range(min(BURST_FRAMES, len(frames))):
            sim.inject(i, with_ttl(forger.rng.choice(frames), 7))

    return burst


def _handshakes(sim: Simulation, i: int, forger: Forger, honest: list[bytes]) -> None:
    ts = _ts(sim, i)
    for k in range(BURST_FRAMES):
        forger.target = forger.rng.choice(honest)
        sender = forger.rng.choice(honest) if k % 3 == 0 else forger.random_id()  # forged, or throwaway
        sim.inject(i, forger.msg1(sender, ts) if k % 2 == 0 else forger.ciphertext(sender, ts, 80))


def _lie_about_neighbours(sim: Simulation, i: int, honest: list[bytes], rng: random.Random) -> None:
    core = sim.cores[i]
    real = core.presence.direct_neighbours
    lies = tuple(rng.sample(honest, min(10, len(honest))))

    def lying() -> tuple[bytes, ...]:
        return tuple(dict.fromkeys((*real()[:4], *lies)))[:10]  # BitChat carries at most ten

    core.presence.direct_neighbours = lying  # type: ignore[method-assign]


__all__ = ["KINDS", "attach"]

"""A fingerprint of one simulator run, to check that an engine change keeps behaviour: the same seed must give the
same frames received, in the same order, at the same simulated times, and the same mesh events.

    python bench/sim_fingerprint.py [--n 1000] [--seconds 10] [--seed 1] [--loss 0.1]

Prints one line: events processed, frames received, mesh events, and a SHA-256 over (time, node, link, frame) of
every frame a core received and (time, node, event) of every mesh event — plus the CPU seconds and peak RSS, which
are not part of the fingerprint. It hooks ``MeshCore.receive_frame`` at the class (not the engine), so it reads the
same before and after an engine change.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.routing.mesh import MeshCore, MeshEvent
from node.sim import LinkModel, Simulation, random_geometric


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.1)
    args = ap.parse_args()

    digest = hashlib.sha256()
    counts = {"frames": 0, "events": 0}
    original = MeshCore.receive_frame
    node_of: dict[int, int] = {}

    def receive_frame(self: MeshCore, link_id: str, data: bytes, now: float) -> bool:
        counts["frames"] += 1
        digest.update(f"{now!r}|{node_of[id(self)]}|{link_id}|".encode())
        digest.update(data)
        return original(self, link_id, data, now)

    def on_event(i: int, event: MeshEvent, now: float) -> None:
        counts["events"] += 1
        digest.update(f"E{now!r}|{i}|{event!r}".encode())

    MeshCore.receive_frame = receive_frame  # type: ignore[method-assign]
    topo = random_geometric(args.n, seed=args.seed, mean_degree=8.0)
    sim = Simulation(topo, LinkModel(loss=args.loss), seed=args.seed, on_event=on_event)
    node_of.update({id(c): i for i, c in enumerate(sim.cores)})
    cpu0 = time.process_time()
    sim.run_until(args.seconds)
    cpu = time.process_time() - cpu0
    rep = sim.report()
    print(
        f"sim_fingerprint n{args.n} seed{args.seed} loss{args.loss} {args.seconds:g} sim s: {rep.events:,} events, "
        f"{counts['frames']:,} frames received, {counts['events']:,} mesh events, "
        f"transmitted {rep.link.transmitted:,}, sha256 {digest.hexdigest()[:32]} | {cpu:.1f} cpu s, peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()

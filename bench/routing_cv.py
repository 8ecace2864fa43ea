"""Cross-validation of the King's router on the labelled requests that are no longer held out.

    python bench/routing_cv.py [--folds 7] [--set key=value ...]

``tests/data/agent_requests.txt`` (322 requests, 14 per agent) was evaluated more than once and is now train +
dev data: this script splits it into ``--folds`` folds (the same positions of every agent in each fold), feeds the
router online feedback on the other folds and reports top-1 / top-3 on the held-out fold, pooled. ``--set``
overrides a :class:`RouterSettings` field. The new held-out set (``tests/data/agent_requests_heldout.txt``) is
never read here: ``bench/agents.py`` evaluates it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.agents.roster import load_roster
from node.agents.router import Router, RouterSettings

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "tests" / "data" / "agent_requests.txt"


def load(path: Path = DEV) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            agent, text = line.split(" | ", 1)
            by.setdefault(agent.strip(), []).append(text.strip())
    return by


class CachedEmbed:
    def __init__(self) -> None:
        from node.rag.embed import Embedder

        self.emb = Embedder()
        self.cache: dict[str, npt.NDArray[np.float32]] = {}

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, v in zip(missing, self.emb.embed(missing), strict=True):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts]).astype(np.float32)


def cross_validate(
    by: dict[str, list[str]], embed: CachedEmbed, settings: RouterSettings, folds: int
) -> tuple[float, float, list[tuple[str, str, str]]]:
    roster = load_roster()
    top1 = top3 = n = 0
    misses: list[tuple[str, str, str]] = []
    for f in range(folds):
        router = Router(roster, embed, settings)
        train = [(a, t) for a, ts in by.items() for i, t in enumerate(ts) if i % folds != f]
        test = [(a, t) for a, ts in by.items() for i, t in enumerate(ts) if i % folds == f]
        for agent, text in train:
            router.feedback(text, embed([text])[0], agent)
        for agent, text in test:
            got = [c.agent for c in router.scores(text, embed([text])[0])[:3]]
            top1 += got[0] == agent
            top3 += agent in got
            n += 1
            if got[0] != agent:
                misses.append((agent, got[0], text))
    return top1 / n, top3 / n, misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=7)
    ap.add_argument("--set", nargs="*", default=[], help="RouterSettings overrides, field=value")
    ap.add_argument("--grid", nargs="*", default=[], help="more override sets, each 'field=value,field=value'")
    ap.add_argument("--misses", action="store_true")
    args = ap.parse_args()
    by = load()
    embed = CachedEmbed()
    for spec in [",".join(args.set), *args.grid]:
        over: dict[str, object] = {}
        for kv in filter(None, spec.split(",")):
            k, v = kv.split("=", 1)
            over[k] = type(getattr(RouterSettings(), k))(v)
        settings = dataclasses.replace(RouterSettings(), **over)  # type: ignore[arg-type]
        t1, t3, misses = cross_validate(by, embed, settings, args.folds)
        if args.misses:
            for agent, got, text in misses:
                print(f"  {agent:>14} -> {got:<14} {text}")
        n = sum(map(len, by.values()))
        print(f"routing_cv: top-1 {t1:.1%} top-3 {t3:.1%} ({args.folds}-fold on {n}; {over})", flush=True)


if __name__ == "__main__":
    main()

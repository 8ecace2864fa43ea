"""Peak memory and speed of a RAG ingest through a real node, against another source tree in the same run.

    python bench/ingest_peak.py [--docs N] [--baseline-tree /path/to/other/checkout] [--rounds R] [--slices K]

Writes the first ``--docs`` SciFact abstracts (all 5,183 by default; ``$VILLAGE_SHARED_DIR/data/scifact``) as files,
then for each variant starts a real ``village run`` (``python -m node.cli``, PYTHONPATH set to the variant's tree,
BetaNet on loopback, default ``[rag]``) on a fresh data dir and ingests the folder with one ``rag.add`` over the
control socket. Per variant: docs/s of the ``rag.add`` call, the node's idle ``VmRSS`` before it, and its ``VmHWM``
(peak) and ``VmRSS`` after it, from ``/proc``. With ``--baseline-tree`` (e.g. a worktree of main before a change)
the two variants alternate, baseline first, ``--rounds`` times, and the last lines give ours/baseline.
With ``--slices K`` the corpus is written as K folders of consecutive documents, added one ``rag.add`` after the
other, and a line after each gives the documents so far and the node's ``VmHWM``/``VmRSS``: the peak's curve over
the corpus. One line per figure, MiB = 2^20 bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import scifact_data

from node.control.client import ControlClient

ROOT = Path(__file__).resolve().parents[1]
CONFIG = '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n'


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def smaps_summary(pid: int, top: int = 5) -> str:
    """RssAnon/RssFile, threads and the largest resident anonymous mappings (MiB) of ``pid``: where the RSS is."""
    anon: list[int] = []
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5:
            name = head[5] if len(head) > 5 else "anon"
        elif head[0] == "Rss:" and name == "anon":
            anon.append(int(head[1]))
    big = ", ".join(f"{k / 1024:.0f}" for k in sorted(anon, reverse=True)[:top])
    keys = ("RssAnon", "RssFile", "Threads")
    return "; ".join(f"{k} {status_kib(pid, k) / (1 if k == 'Threads' else 1024):.0f}" for k in keys) + (
        f"; largest anonymous mappings (MiB): {big}"
    )


def ingest(
    tree: Path, slices: list[Path], work: Path, extra: str = "", label: str = "", warm: bool = False
) -> tuple[float, int, int, int, int]:
    """(seconds, docs added, idle VmRSS, VmHWM, VmRSS after) of one fresh node from ``tree``, KiB; the folders in
    ``slices`` are added one after the other (a line after each when there are several). ``warm``: first one
    ``node.status`` call and a ``twin.status`` that waits for the twin to learn from it, so "idle" is a node after
    its user's first command (the twin, a default plugin, loads its engine and the MiniLM on that command)."""
    data = Path(tempfile.mkdtemp(prefix="node-", dir=work))
    data.chmod(0o700)
    (data / "config.toml").write_text(CONFIG + extra)
    env = {**os.environ, "PYTHONPATH": str(tree), "VILLAGE_DATA_DIR": str(data)}
    cli = [sys.executable, "-m", "node.cli"]
    subprocess.run([*cli, "init"], env=env, check=True, capture_output=True)
    notify_path = work / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(180)
    proc = subprocess.Popen([*cli, "run"], env={**env, "NOTIFY_SOCKET": str(notify_path)}, stderr=subprocess.DEVNULL)
    try:
        if notify.recv(64) != b"READY=1":
            raise SystemExit("the node did not report READY=1")
        secs, added = 0.0, 0
        with ControlClient(data / "control.sock", timeout_s=None) as c:
            if warm:
                c.call("node.status")
                for _ in range(20):  # twin.status waits 25 s at most per call
                    if c.call("twin.status", wait_s=25.0)["queued_events"] == 0:
                        break
            idle = status_kib(proc.pid, "VmRSS")
            for folder in slices:
                start = time.perf_counter()
                res = c.call("rag.add", paths=[str(folder)])
                secs += time.perf_counter() - start
                added += int(res["added"])
                if len(slices) > 1:
                    hwm, rss = status_kib(proc.pid, "VmHWM"), status_kib(proc.pid, "VmRSS")
                    print(
                        f"  {label} {added:5} docs in {secs:5.0f} s = {added / secs:.2f} docs/s: peak "
                        f"{hwm / 1024:.0f} MiB, now {rss / 1024:.0f} MiB, load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        if os.environ.get("INGEST_PEAK_SMAPS"):
            print(f"  {label} {smaps_summary(proc.pid)}", flush=True)
        return secs, added, idle, status_kib(proc.pid, "VmHWM"), status_kib(proc.pid, "VmRSS")
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        notify.close()
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=0, help="first N SciFact abstracts (default: all)")
    ap.add_argument("--baseline-tree", type=Path, help="another checkout to measure in the same run")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--embed-batch", type=int, default=0, help="[rag] embed_batch for both variants (default: theirs)")
    ap.add_argument("--config", default="", help="TOML for both variants' config.toml, \\n for newlines")
    ap.add_argument("--ours-config", default="", help="TOML added to our variant's config.toml only")
    ap.add_argument("--warm", action="store_true", help="one node.status call first; the twin loads (see ingest)")
    ap.add_argument("--slices", type=int, default=1, help="add the corpus as this many folders, one after the other")
    args = ap.parse_args()
    sf = scifact_data.load()
    docs = list(sf.docs.items())[: args.docs or None]
    work = Path(tempfile.mkdtemp(prefix="ingest-peak-", dir="/tmp"))
    try:
        corpus = work / "corpus"
        k = max(1, min(args.slices, len(docs)))
        slices = [corpus / f"part{j:03}" for j in range(k)]
        for j, (doc_id, text) in enumerate(docs):
            folder = slices[j * k // len(docs)]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{doc_id}.txt").write_text(text)
        variants = [("ours", ROOT)]
        if args.baseline_tree:
            variants.insert(0, ("baseline", args.baseline_tree.resolve()))
        load = os.getloadavg()
        print(f"{len(docs)} SciFact docs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
        best: dict[str, tuple[float, int]] = {}
        for r in range(args.rounds):
            for name, tree in variants:
                extra = f"[rag]\nembed_batch = {args.embed_batch}\n" if args.embed_batch else ""
                extra += args.config.replace("\\n", "\n") + "\n"
                if name == "ours":
                    extra += args.ours_config.replace("\\n", "\n") + "\n"
                secs, added, idle, hwm, rss = ingest(tree, slices, work, extra, name, args.warm)
                rate = added / secs
                print(
                    f"round {r + 1} {name:8}: {added} docs in {secs:.0f} s = {rate:.2f} docs/s; idle {idle / 1024:.0f} "
                    f"MiB, peak {hwm / 1024:.0f} MiB, after {rss / 1024:.0f} MiB ({tree})",
                    flush=True,
                )
                rate0, hwm0 = best.get(name, (0.0, 0))
                best[name] = (max(rate0, rate), max(hwm0, hwm))
        if "baseline" in best:
            (br, bh), (orate, oh) = best["baseline"], best["ours"]
            print(
                f"ingest speed ours/baseline (best of {args.rounds}): {orate / br:.2f}x "
                f"({orate:.2f} vs {br:.2f} docs/s)"
            )
            print(f"peak RSS ours/baseline: {oh / bh:.2f}x ({oh / 1024:.0f} vs {bh / 1024:.0f} MiB)")
        load = os.getloadavg()
        print(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

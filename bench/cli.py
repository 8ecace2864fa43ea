"""How long a `village` command takes, end to end, against a real running daemon, next to `python -c pass`.

    python bench/cli.py [--runs N]

Starts a real `village run` on loopback (temporary data dir, ready on READY=1), then times whole processes,
interleaved so every command sees the same machine load: ``python -c pass`` (the interpreter's own start, the
floor), ``village status --json`` (the fast client path, node/control/quick.py; goal <= 100 ms), ``village rpc
node.status`` (the same call through the full CLI, for comparison) and ``village id`` (reads the identity from the
data dir). One line per figure: median and p90 in ms, and the ratio of medians to ``python -c pass``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n'
BIN = Path(sys.executable).parent
# The console script users run (it imports node.cli from PYTHONPATH, so this checkout's code).
VILLAGE = [str(BIN / "village")] if (BIN / "village").exists() else [sys.executable, "-m", "node.cli"]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="runs of each command (default 30)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vbench-", dir="/tmp"))
    data = tmp / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VILLAGE_DATA_DIR": str(data)}
    subprocess.run([*VILLAGE, "init"], env=env, stdout=subprocess.DEVNULL, check=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    notify.settimeout(60)
    daemon = subprocess.Popen(
        [*VILLAGE, "run"], env={**env, "NOTIFY_SOCKET": str(tmp / "notify.sock")}, stderr=subprocess.DEVNULL
    )
    try:
        if notify.recv(64) != b"READY=1":
            raise SystemExit("the daemon did not report READY=1")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "village status --json": [*VILLAGE, "status", "--json"],
            "village rpc node.status": [*VILLAGE, "rpc", "node.status"],
            "village id": [*VILLAGE, "id"],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(3):  # warm the page cache
            for cmd in commands.values():
                timed(cmd, env)
        for _ in range(args.runs):
            for name, cmd in commands.items():
                samples[name].append(timed(cmd, env))
        base = statistics.median(samples["python -c pass"])
        for name, s in samples.items():
            s.sort()
            med, p90 = statistics.median(s), s[int(len(s) * 0.9) - 1]
            key = name.replace("village ", "").replace(" --json", "_json").replace(" ", "_").replace(".", "_")
            print(
                f"cli.{key}: median {med * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
                f"{med / base:.2f}x python -c pass ({args.runs} runs)"
            )
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        notify.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()

"""What a node costs in memory: idle RSS of a real `village run`, and what each subsystem adds on import.

    python bench/footprint.py [--settle-s S]

Every figure is measured in a fresh child process, so one measurement never pays for another's imports:

* **idle node**: a real `village run` on loopback with BetaNet on (TCP + QUIC listeners), started and ready
  (READY=1), left alone ``--settle-s`` seconds, then its resident set (``VmRSS``) read from ``/proc``; once with the
  default plugins (knowledge base, twin, agents, MCP, metrics) and once with BetaNet alone (the optional plugins
  off), and BetaNet alone again with ``MALLOC_ARENA_MAX=2``. Each is also given as a ratio to ``python -c pass``
  measured in the same run, with its anonymous / file-backed / private-dirty split, threads and module count. The
  daemon stops on SIGTERM and writes the modules it had imported; the script says which heavy libraries were
  loaded.
* **import cost**: ``VmRSS`` after importing one subsystem's libraries, minus the floor (``import trio``, which
  every node pays). The libraries are those the subsystem uses when it runs: py-libp2p (the whole package, as
  ``import libp2p`` loads it, and as BetaNet loads it through node/libp2p_slim.py), QUIC (aioquic), DHT
  (py-libp2p's Kademlia) and relay (circuit v2), both over the slim import, mDNS (zeroconf), the RAG model
  (onnxruntime + tokenizers), hnswlib + numpy, the anchor's servers (hypercorn, psycopg, redis) and the LLM
  (llama_cpp).

One line per figure, in MB (10^6 bytes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LISTEN = '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]\nmdns = false\n'
PLUGINS_OFF = "[rag]\nenabled = false\n[twin]\nenabled = false\n[agents]\nenabled = false\n[mcp]\nenabled = false\n"
# Runs `village run` in this process and writes the imported modules' names when the daemon exits.
RUN_AND_LIST = (
    "import atexit, sys\n"
    "atexit.register(lambda: open(sys.argv[1], 'w').write('\\n'.join(sorted(sys.modules))))\n"
    "from node.cli import main\n"
    "sys.exit(main(['run']))\n"
)
HEAVY = ("onnxruntime", "hnswlib", "numpy", "llama_cpp", "tokenizers", "zeroconf", "aioquic", "hypercorn", "psycopg")
SLIM = "import node.libp2p_slim as s; s.install(); "  # py-libp2p loaded the way BetaNet loads it
SUBSYSTEMS: dict[str, str] = {
    "py-libp2p (import libp2p)": "import libp2p",
    "BetaNet transport (node.transports.betanet)": "import node.transports.betanet.transport",
    "py-libp2p as BetaNet loads it (libp2p_slim)": f"{SLIM}import libp2p.host.basic_host, libp2p.network.swarm, "
    "libp2p.security.noise.transport, libp2p.stream_muxer.yamux.yamux, libp2p.transport.tcp.tcp, "
    "libp2p.transport.quic.security, libp2p.kad_dht.kad_dht, libp2p.relay.circuit_v2.transport",
    "QUIC (aioquic)": "import aioquic.quic.connection, aioquic.tls",
    "DHT (libp2p.kad_dht, slim import)": f"{SLIM}import libp2p.kad_dht.kad_dht",
    "relay (libp2p.relay.circuit_v2, slim import)": f"{SLIM}import libp2p.relay.circuit_v2.transport",
    "mDNS (zeroconf)": "import zeroconf",
    "cryptography (Ed25519/X25519)": "import cryptography.hazmat.primitives.asymmetric.ed25519",
    "RAG model (onnxruntime + tokenizers)": "import onnxruntime, tokenizers",
    "hnswlib + numpy": "import hnswlib, numpy",
    "anchor servers (hypercorn, psycopg, redis)": "import hypercorn.trio, psycopg, redis.asyncio",
    "LLM (llama_cpp)": "import llama_cpp",
}


def _mb(kib: int) -> float:
    return kib * 1024 / 1e6


def vm_rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc")


def import_rss_kib(statement: str) -> int | None:
    """VmRSS (KiB) of a fresh interpreter after ``import trio`` and ``statement``; None if an import fails."""
    code = f"import trio\n{statement}\nimport bench.footprint as f\nprint(f.vm_rss_kib())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    return int(r.stdout.split()[-1]) if r.returncode == 0 else None


def python_rss_kib() -> int:
    """VmRSS (KiB) of a fresh ``python -c pass`` (read by the child itself, so nothing but the interpreter)."""
    code = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')][0])"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)


EMBED = """
import sys, time
import onnxruntime as ort
from bench.footprint import vm_rss_kib
from bench.scifact_data import load
from node.rag.embed import Embedder, EmbedderSettings
if sys.argv[1] == "optimised":  # onnxruntime's default graph optimisation, the baseline
    class Options(ort.SessionOptions):
        def __setattr__(self, name, value):
            if name != "graph_optimization_level":
                super().__setattr__(name, value)
    ort.SessionOptions = Options
texts = [t[:1000] for t in list(load().docs.values())[: int(sys.argv[2])]]
e = Embedder(EmbedderSettings(intra_op_threads=2, batch_size=8))
e.load()
loaded = vm_rss_kib()
t0 = time.perf_counter()
e.embed(texts)
dt = time.perf_counter() - t0
hwm = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")][0]
print(loaded, hwm, len(texts) / dt)
"""


def embedder_figures(mode: str, texts: int) -> tuple[int, int, float]:
    """The knowledge base's embedder in a child: RSS once loaded, peak RSS (KiB) and texts/s over SciFact texts."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'bench'}"}
    r = subprocess.run([sys.executable, "-c", EMBED, mode, str(texts)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"the embedder figure needs SciFact ($VILLAGE_SHARED_DIR/data/scifact):\n{r.stderr}")
    loaded, hwm, rate = r.stdout.split()
    return int(loaded), int(hwm), float(rate)


def proc_figures(pid: int | str = "self") -> dict[str, int]:
    """Anonymous and file-backed resident KiB (/proc/PID/status), threads, and private dirty KiB (smaps_rollup)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            out[key] = int(value.split()[0])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            out["Private_Dirty"] = int(line.split()[1])
    return out


def idle_node(extra_config: str, settle_s: float, extra_env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    """A real `village run`: its VmRSS (KiB) once ready and settled, and the modules it had imported."""
    figures, mods = idle_node_figures(extra_config, settle_s, extra_env)
    return figures["VmRSS"], mods


def idle_node_figures(
    extra_config: str, settle_s: float, extra_env: dict[str, str] | None = None
) -> tuple[dict[str, int], set[str]]:
    """A real `village run`: :func:`proc_figures` once ready and settled, and the modules it had imported."""
    tmp = Path(tempfile.mkdtemp(prefix="vfoot-", dir="/tmp"))
    data = tmp / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text(LISTEN + extra_config)
    env = {**os.environ, **(extra_env or {}), "PYTHONPATH": str(ROOT), "VILLAGE_DATA_DIR": str(data)}
    # cwd=ROOT: `python -m`/`-c` put the working directory first on sys.path, before PYTHONPATH (the tree measured)
    subprocess.run([sys.executable, "-m", "node.cli", "init"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    notify.settimeout(120)
    mods = tmp / "modules.txt"
    cmd = [sys.executable, "-c", RUN_AND_LIST, str(mods)]
    env = {**env, "NOTIFY_SOCKET": str(tmp / "notify.sock")}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        if notify.recv(64) != b"READY=1":
            raise SystemExit("the daemon did not report READY=1")
        time.sleep(settle_s)  # a benchmark's idle period, not a wait for an event
        figures = proc_figures(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        return figures, set(mods.read_text().split())
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


FIRST_CALLS: tuple[tuple[str, dict[str, object]], ...] = (  # twin.* and mcp.* are no twin events: each loads alone
    ("twin.suggest", {"text": "the walrus colony meets at "}),
    ("mcp.tools", {}),
    ("rag.query", {"text": "where does the walrus colony nest"}),
    ("agents.list", {}),
    ("node.status", {}),
)


def _fresh_data_dir(prefix: str, config: str, root: Path) -> tuple[Path, Path, dict[str, str]]:
    """A scratch dir with an initialised node data dir (``config`` as its config.toml): (scratch, data, env)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    data = tmp / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text(config)
    env = {**os.environ, "PYTHONPATH": str(root), "VILLAGE_DATA_DIR": str(data)}
    # cwd=root: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    subprocess.run([sys.executable, "-m", "node.cli", "init"], env=env, cwd=root, stdout=subprocess.DEVNULL, check=True)
    return tmp, data, env


@contextlib.contextmanager
def _daemon(tmp: Path, data: Path, env: dict[str, str], root: Path) -> Iterator[tuple[subprocess.Popen[bytes], Any]]:
    """A real `village run` on ``data`` (started from ``root``), ready (sd_notify READY=1): its process and a
    control client; stopped (SIGTERM, waited for) on the way out."""
    from node.control.client import ControlClient

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    (tmp / "notify.sock").unlink(missing_ok=True)
    notify.bind(str(tmp / "notify.sock"))
    notify.settimeout(120)
    cmd = [sys.executable, "-m", "node.cli", "run"]
    # cwd=root: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.Popen(
        cmd, env={**env, "NOTIFY_SOCKET": str(tmp / "notify.sock")}, cwd=root, stderr=subprocess.DEVNULL
    )
    try:
        if notify.recv(64) != b"READY=1":
            raise SystemExit("the daemon did not report READY=1")
        with ControlClient(data / "control.sock", timeout_s=300) as c:
            yield proc, c
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        notify.close()


def first_use_figures(extra_config: str, settle_s: float, root: Path = ROOT) -> dict[str, float]:
    """A real `village run` (default plugins) restarted on a knowledge base holding one document: after READY=1 and
    ``settle_s`` idle, each plugin's first call and the same call again (ms; the difference is the one-time cost of
    loading what it needs), the RSS at idle and after those calls (KiB)."""

    tmp, data, env = _fresh_data_dir("vfirst-", LISTEN + extra_config, root)
    doc = tmp / "walrus.txt"
    doc.write_text("The walrus colony nests on the northern ice shelf every spring, and meets at dawn.\n")
    out: dict[str, float] = {}
    try:
        for run in ("populate", "measure"):
            with _daemon(tmp, data, env, root) as (proc, c):
                if run == "populate":
                    c.call("rag.add", paths=[str(doc)])
                    continue
                time.sleep(settle_s)  # a benchmark's idle period, not a wait for an event
                out["idle_kib"] = proc_figures(proc.pid)["VmRSS"]
                for label, params in FIRST_CALLS:
                    for nth in ("first", "second"):
                        t0 = time.perf_counter()
                        c.call(label, **params)
                        out[f"{label} {nth}"] = (time.perf_counter() - t0) * 1000
                out["used_kib"] = proc_figures(proc.pid)["VmRSS"]
        return out
    finally:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


FIRST_TEXT = "see you at the walrus colony tomorrow morning"


def first_command_figures(settle_s: float, root: Path = ROOT) -> dict[str, float]:
    """A real `village run` (default plugins) on a fresh data dir, then restarted on it: VmRSS (KiB) at idle,
    after the user's first command (``node.status`` over the control socket, a twin *action* event; ``twin.status``
    with ``wait_s`` waits until it is learned), after the first text event (``twin.observe``) and after the first
    suggestion (``twin.suggest``); in the restarted node the same after the first command and the first text event
    (the state saved at the first run's stop is read). Keys ``<run> <step>``; ``<run> lm`` is whether ``twin.status``
    said the language model was loaded after the first command (None: the tree does not say)."""

    tmp, data, env = _fresh_data_dir("vcmd-", LISTEN, root)
    out: dict[str, float] = {}
    try:
        for run in ("fresh", "restart"):
            with _daemon(tmp, data, env, root) as (proc, c):
                time.sleep(settle_s)  # a benchmark's idle period, not a wait for an event
                out[f"{run} idle"] = proc_figures(proc.pid)["VmRSS"]
                c.call("node.status")
                st = c.call("twin.status", wait_s=25)
                if st.get("events", 1) < 1:
                    raise SystemExit(f"the command was not learned: {st}")
                out[f"{run} lm"] = st["language_model"]["loaded"] if "language_model" in st else -1
                out[f"{run} command"] = proc_figures(proc.pid)["VmRSS"]
                c.call("twin.observe", text=FIRST_TEXT)
                c.call("twin.status", wait_s=25)
                out[f"{run} text"] = proc_figures(proc.pid)["VmRSS"]
                if run == "fresh":
                    c.call("twin.suggest", text="see you at the ")
                    out[f"{run} suggest"] = proc_figures(proc.pid)["VmRSS"]
        return out
    finally:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def print_first_command(settle_s: float, trees: list[tuple[str, Path]]) -> None:
    for label, root in trees * 2:  # alternated
        f = first_command_figures(settle_s, root)
        for run in ("fresh", "restart"):
            lm = {1: "loaded", 0: "not loaded", -1: "not said"}[int(f[f"{run} lm"])]
            idle, cmd, text = (_mb(int(f[f"{run} {k}"])) for k in ("idle", "command", "text"))
            line = (
                f"first command, {label}, {run:7s} node: idle {idle:.1f} MB, after `village status` {cmd:.1f} MB "
                f"(+{cmd - idle:.1f}; language model {lm}), after the first text event {text:.1f} MB "
                f"(+{text - idle:.1f})"
            )
            if f"{run} suggest" in f:
                line += f", after the first suggestion {_mb(int(f[f'{run} suggest'])):.1f} MB"
            print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settle-s", type=float, default=3.0, help="idle seconds before reading RSS (default 3)")
    ap.add_argument("--embed-texts", type=int, default=120, help="SciFact texts for the embedder figure (0: skip)")
    ap.add_argument("--first-use", action="store_true", help="also time each default plugin's first call")
    ap.add_argument("--first-command", action="store_true", help="only the RSS after the first command / text event")
    ap.add_argument("--baseline-tree", help="with --first-use: the same figures for another checkout, alternated")
    args = ap.parse_args()
    if args.first_command:
        trees = [("this tree", ROOT)] + ([("baseline", Path(args.baseline_tree))] if args.baseline_tree else [])
        print_first_command(args.settle_s, trees)
        return
    bare = python_rss_kib()
    floor = import_rss_kib("pass")
    print(f"floor: python -c pass                               {_mb(bare):6.1f} MB")
    print(f"floor: python + import trio                         {_mb(floor or 0):6.1f} MB")
    nodes: tuple[tuple[str, str, dict[str, str]], ...] = (
        ("default plugins", "", {}),
        ("BetaNet only", PLUGINS_OFF, {}),
        ("BetaNet only, MALLOC_ARENA_MAX=2", PLUGINS_OFF, {"MALLOC_ARENA_MAX": "2"}),
    )
    for label, plugins, env in nodes:
        fig, mods = idle_node_figures(plugins, args.settle_s, env)
        heavy = ", ".join(m for m in HEAVY if m in mods) or "none"
        print(
            f"idle village run, BetaNet on, {label:16s}     {_mb(fig['VmRSS']):6.1f} MB = {fig['VmRSS'] / bare:.2f}x "
            f"python -c pass (goal <= 90 MB; anon {_mb(fig['RssAnon']):.1f}, file {_mb(fig['RssFile']):.1f}, "
            f"private dirty {_mb(fig['Private_Dirty']):.1f} MB; {fig['Threads']} threads; {len(mods)} modules; "
            f"heavy libs: {heavy})"
        )
    if args.first_use:
        trees = [("this tree", ROOT)] + ([("baseline", Path(args.baseline_tree))] if args.baseline_tree else [])
        for label, root in trees * 2:  # alternated
            fu = first_use_figures("", args.settle_s, root)
            idle, used = _mb(int(fu["idle_kib"])), _mb(int(fu["used_kib"]))
            print(
                f"first use after a restart, default plugins, {label}: idle {idle:.1f} MB, "
                f"after the calls {used:.1f} MB"
            )
            for name, _params in FIRST_CALLS:
                first, second = fu[f"{name} first"], fu[f"{name} second"]
                print(
                    f"first use, {label}: {name:12s} first call {first:7.0f} ms, second {second:6.0f} ms "
                    f"(one-time {first - second:.0f} ms)"
                )
    if args.embed_texts:
        runs = [(embedder_figures("ours", n), embedder_figures("optimised", n)) for n in [args.embed_texts] * 2]
        ours = (runs[0][0][0], runs[0][0][1], max(r[0][2] for r in runs))  # alternated; best rate of each
        base = (runs[0][1][0], runs[0][1][1], max(r[1][2] for r in runs))
        print(
            f"RAG embedder, {args.embed_texts} SciFact texts, batch 8: loaded {_mb(ours[0]):.0f} MB (graph-optimised "
            f"{_mb(base[0]):.0f}), peak {_mb(ours[1]):.0f} MB (graph-optimised {_mb(base[1]):.0f}), speed "
            f"{ours[2]:.1f} texts/s = {ours[2] / base[2]:.2f}x graph-optimised"
        )
    for label, statement in SUBSYSTEMS.items():
        kib = import_rss_kib(statement)
        figure = "not installed" if kib is None or floor is None else f"+{_mb(kib - floor):5.1f} MB"
        print(f"import cost over the floor: {label:44s} {figure}")


if __name__ == "__main__":
    main()

"""Circuit relay v2 between three real daemons in network namespaces this test creates: a relay R in the
middle namespace joined by a veth pair to each of two edge namespaces, with no IP forwarding, so the edge
nodes E1 and E2 can reach R and nothing else. Both bootstrap to R with `betanet.relay = "client"`; E2
reserves a slot on R and advertises a /p2p-circuit address; E1 connects to E2 by its peer ID alone (the DHT
on R answers; the connection runs through R, Noise end to end) and a private message sent with the CLI is
delivered. Skipped with a reason where `ip netns` cannot be used (not root, no iproute2, no namespaces)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import WAIT_S
from tests.test_netns import _ip, cli, start_in

EDGE1, EDGE2 = "10.231.78", "10.231.79"  # R is .1 on both; E1 is EDGE1.2, E2 is EDGE2.2
WAIT = f"{WAIT_S:g}"


@pytest.fixture
def three_namespaces() -> Iterator[tuple[str, str, str]]:
    """(relay, edge1, edge2) namespaces: edge1 <-veth-> relay <-veth-> edge2, forwarding off in the relay."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's `ip`")
    r, e1, e2 = (f"vlgr{os.getpid()}{s}" for s in ("r", "e1", "e2"))
    if _ip("netns", "add", r).returncode != 0:
        pytest.skip("`ip netns add` is not permitted here")
    try:
        for ns in (e1, e2):
            assert _ip("netns", "add", ns).returncode == 0
        for ns, mine, theirs, subnet in ((e1, "ve1", "vr1", EDGE1), (e2, "ve2", "vr2", EDGE2)):
            made = _ip("link", "add", mine, "netns", ns, "type", "veth", "peer", "name", theirs, "netns", r)
            assert made.returncode == 0, made.stderr
            for where, dev, host in ((ns, mine, 2), (r, theirs, 1)):
                for cmd in (["addr", "add", f"{subnet}.{host}/24", "dev", dev], ["link", "set", dev, "up"]):
                    done = _ip("-n", where, *cmd)
                    assert done.returncode == 0, done.stderr
        for ns in (r, e1, e2):
            assert _ip("-n", ns, "link", "set", "lo", "up").returncode == 0
        forward = subprocess.run(
            ["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=0"], capture_output=True, check=False
        )
        assert forward.returncode == 0, forward.stderr
        yield r, e1, e2
    finally:
        for ns in (r, e1, e2):
            _ip("netns", "del", ns)


def start_relay_node(
    ns: str, data: Path, name: str, relay: str, bootstrap: str = "", listen: str | None = '["/ip4/0.0.0.0/tcp/0"]'
) -> subprocess.Popen[bytes]:
    boot = f'"{bootstrap}"' if bootstrap else ""
    dht = 'dht_mode = "server"\n' if relay == "hop" else ""  # the relay is the anchor: it answers lookups
    redial = "reconnect_initial_s = 0.2\nreconnect_max_s = 1.0\n"
    return start_in(
        ns,
        data,
        name,
        f'mdns = false\nrelay = "{relay}"\nbootstrap = [{boot}]\n{redial}{dht}',
        listen=listen,
    )


def ok(r: subprocess.CompletedProcess[str], root: Path) -> str:
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(root.glob("*.log")))
    assert r.returncode == 0, f"{r.args}: {r.stderr}{logs}"
    return r.stdout


def status(data: Path, root: Path) -> dict[str, object]:
    result: dict[str, object] = json.loads(ok(cli(data, "status", "--json"), root))
    return result


@pytest.mark.parametrize(
    "listen", ['["/ip4/0.0.0.0/tcp/0"]', None], ids=["tcp", "default-quic-and-tcp"]
)  # None: the default listen, QUIC and TCP on 4001; bootstraps and relayed hops then run over QUIC
def test_edges_reach_each_other_only_through_the_relay(
    three_namespaces: tuple[str, str, str], listen: str | None
) -> None:
    ns_r, ns_e1, ns_e2 = three_namespaces
    root = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    procs = []
    try:
        # The premise: from E1's namespace, E2's subnet is unreachable (no route, no forwarding).
        probe = subprocess.run(
            ["ip", "netns", "exec", ns_e1, sys.executable, "-c",
             f"import socket; socket.create_connection(('{EDGE2}.2', 9), timeout=2)"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert probe.returncode != 0 and "unreachable" in probe.stderr, probe.stderr

        dr, d1, d2 = root / "r", root / "e1", root / "e2"
        procs.append(start_relay_node(ns_r, dr, "relay", "hop", listen=listen))
        relay_addrs = status(dr, root)["listen_addrs"]
        assert isinstance(relay_addrs, list)
        via1 = next(a for a in relay_addrs if a.startswith(f"/ip4/{EDGE1}.1/"))  # QUIC first when listening on it
        via2 = next(a for a in relay_addrs if a.startswith(f"/ip4/{EDGE2}.1/"))
        assert ("/quic-v1/" in via1) == (listen is None), relay_addrs
        relay_p2p = via1.rsplit("/p2p/", 1)[1]
        procs.append(start_relay_node(ns_e2, d2, "e2", "client", via2, listen=listen))
        procs.append(start_relay_node(ns_e1, d1, "e1", "client", via1, listen=listen))
        # R hears E2's first announce only after E2's slot on R is reserved (E2 reserves before its mesh
        # stream opens), so once R knows E2 it can relay to E2.
        ok(cli(dr, "peers", "--wait", "e2", "--timeout", WAIT), root)
        e2_status = status(d2, root)
        e2_addrs = e2_status["listen_addrs"]
        assert isinstance(e2_addrs, list)
        e2_p2p = e2_addrs[0].rsplit("/p2p/", 1)[1]
        assert f"{via2}/p2p-circuit/p2p/{e2_p2p}" in e2_addrs  # the advertised circuit address

        # E1 knows only E2's peer ID: the DHT (on R) finds E2's addresses; the direct one is unreachable, so
        # E1 connects through R.
        started = os.times().elapsed
        connected = json.loads(ok(cli(d1, "connect", f"/p2p/{e2_p2p}", "--json"), root))
        connect_ms = (os.times().elapsed - started) * 1000
        assert connected["remote"] == f"/p2p/{relay_p2p}/p2p-circuit/p2p/{e2_p2p}", connected

        # E1 may know E2 already through R's mesh (2 hops); wait for the E1-E2 link's own announce.
        ok(cli(d1, "peers", "--wait", "e2", "--direct", "--timeout", WAIT), root)
        sent = json.loads(ok(cli(d1, "send", "e2", "through the relay", "--wait", WAIT, "--json"), root))
        assert sent["state"] == "delivered", sent
        [received] = [m for m in json.loads(ok(cli(d2, "inbox", "--json"), root)) if m["text"] == "through the relay"]
        # Over the E1-E2 circuit link (1 hop) unless its round trip is ~100 ms worse than E1-R's, when the path table
        # rightly prefers R's mesh (2 hops; link cost 1 + rtt/0.1 s): which one depends on this machine's load, so
        # the circuit itself is proven by the connect above, the peer's address below and the relay counters.
        assert received["private"] and received["hops"] in (1, 2), received
        view = {p["nickname"]: p for p in json.loads(ok(cli(d1, "peers", "--json"), root))}
        assert view["e2"]["address"] == f"/p2p/{relay_p2p}/p2p-circuit/p2p/{e2_p2p}"

        c1 = status(d1, root)["transport_counters"]["betanet"]  # type: ignore[index]
        c2 = e2_status["transport_counters"]["betanet"]  # type: ignore[index]
        assert c1["dht_lookups"] == 1 and c1["dht_found"] == 1 and c1["relay_dials"] == 1, c1
        assert c2["relay_reservations"] == 1, c2
        print(f"E1 -> E2 by peer ID through R (DHT lookup + relayed connect, CLI round trip): {connect_ms:.0f} ms")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)

"""mDNS discovery between two real daemons, each in a network namespace this test creates and joins by a
veth pair: neither is told about the other, yet they find each other, connect over BetaNet and exchange a
private message. Multicast stays inside the namespaces. Skipped with a reason where `ip netns` cannot be used
(not root, no iproute2, no namespace support)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import VILLAGE, WAIT_S

SUBNET = "10.231.77"  # addresses of the two test hosts, inside their own namespaces only


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's `ip`")
    a, b = f"vlg{os.getpid()}a", f"vlg{os.getpid()}b"
    if _ip("netns", "add", a).returncode != 0:
        pytest.skip("`ip netns add` is not permitted here")
    try:
        assert _ip("netns", "add", b).returncode == 0
        assert _ip("link", "add", "v0", "netns", a, "type", "veth", "peer", "name", "v1", "netns", b).returncode == 0
        for ns, dev, host in ((a, "v0", 1), (b, "v1", 2)):
            for cmd in (
                ["addr", "add", f"{SUBNET}.{host}/24", "dev", dev],
                ["link", "set", dev, "up"],
                ["link", "set", "lo", "up"],
                ["route", "add", "224.0.0.0/4", "dev", dev],
            ):
                r = _ip("-n", ns, *cmd)
                assert r.returncode == 0, r.stderr
        yield a, b
    finally:
        _ip("netns", "del", a)
        _ip("netns", "del", b)


def start_in(
    ns: str, data: Path, name: str, betanet: str = "mdns = true\n", listen: str | None = '["/ip4/0.0.0.0/tcp/0"]'
) -> subprocess.Popen[bytes]:
    """`village run` inside namespace ``ns``; ``betanet`` is extra `[betanet]` config lines; ``listen`` the
    `listen` value (None: the default, QUIC and TCP on port 4001). Returns once ready."""
    data.mkdir(mode=0o700, parents=True)
    listen_line = f"listen = {listen}\n" if listen is not None else ""
    (data / "config.toml").write_text(f'[node]\nnickname = "{name}"\n[betanet]\n{listen_line}{betanet}')
    subprocess.run([*VILLAGE, "init", "--data-dir", str(data)], check=True, capture_output=True)
    notify_path = data.parent / f"{name}.notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(WAIT_S)
        with open(data.parent / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *VILLAGE, "run", "--data-dir", str(data)],
                env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        assert notify.recv(64) == b"READY=1"
    return proc


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The control socket is a file: the CLI reaches a daemon in another namespace through it.
    return subprocess.run(
        [*VILLAGE, *args, "--data-dir", str(data)], capture_output=True, text=True, timeout=WAIT_S + 15, check=False
    )


def test_mdns_discovery_across_namespaces(namespaces: tuple[str, str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    procs = []
    try:
        ns_a, ns_b = namespaces
        da, db = root / "a", root / "b"
        procs.append(start_in(ns_a, da, "north"))
        procs.append(start_in(ns_b, db, "south"))
        south = json.loads(cli(db, "id", "--json").stdout)["peer_id"]
        r = cli(da, "peers", "--wait", south, "--timeout", f"{WAIT_S:g}", "--json")
        assert r.returncode == 0, r.stderr + (root / "north.log").read_text()
        peer = json.loads(r.stdout)
        assert peer["nickname"] == "south" and peer["transport"] == "betanet"
        assert SUBNET in (peer["address"] or "") or peer["address"].startswith("/p2p/")
        r = cli(da, "send", "south", "found you by mDNS", "--wait", f"{WAIT_S:g}", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["state"] == "delivered", r.stderr
        status = json.loads(cli(da, "status", "--json").stdout)
        assert (
            status["transport_counters"]["betanet"]["mdns_discovered"] >= 1
            or json.loads(cli(db, "status", "--json").stdout)["transport_counters"]["betanet"]["mdns_discovered"] >= 1
        )
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_mdns_discovery_over_quic_with_the_default_listen(namespaces: tuple[str, str]) -> None:
    """Default `[betanet] listen` (QUIC and TCP on 4001) across a real veth link: mDNS advertises both, the
    discovering node dials the QUIC address, and a private message is delivered over it."""
    root = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    procs = []
    try:
        ns_a, ns_b = namespaces
        da, db = root / "a", root / "b"
        procs.append(start_in(ns_a, da, "north", listen=None))
        procs.append(start_in(ns_b, db, "south", listen=None))
        status = json.loads(cli(db, "status", "--json").stdout)
        assert status["listen_addrs"][0].startswith(f"/ip4/{SUBNET}.2/udp/4001/quic-v1/p2p/12D3Koo"), status
        assert any(a.startswith(f"/ip4/{SUBNET}.2/tcp/4001/p2p/") for a in status["listen_addrs"])
        south = json.loads(cli(db, "id", "--json").stdout)["peer_id"]
        r = cli(da, "peers", "--wait", south, "--timeout", f"{WAIT_S:g}", "--json")
        assert r.returncode == 0, r.stderr + (root / "north.log").read_text()
        assert "/udp/" in json.loads(r.stdout)["address"] and "/quic-v1/" in json.loads(r.stdout)["address"]
        r = cli(da, "send", "south", "found you by mDNS, over QUIC", "--wait", f"{WAIT_S:g}", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["state"] == "delivered", r.stderr
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(root, ignore_errors=True)

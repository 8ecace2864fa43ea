"""Real daemons over BetaNet on 127.0.0.1: separate `village run` processes with their own data dirs,
connected through bootstrap, exchanging public and private messages through the CLI; one is killed with
SIGKILL and restarted, and the other reconnects by itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.test_cli import VILLAGE, WAIT_S

WAIT = f"{WAIT_S:g}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    root: Path
    name: str
    listen: str  # one multiaddr, or several separated by ", "
    bootstrap: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    extra_config: str = ""  # more TOML sections (not [node] or [betanet])

    @property
    def data(self) -> Path:
        return self.root / self.name

    def cli(self, *args: str, check: bool = True, timeout_s: float = WAIT_S + 15) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [*VILLAGE, *args, "--data-dir", str(self.data)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"village {' '.join(args)} failed: {r.stderr}")
        return r

    def start(self) -> None:
        self.data.mkdir(mode=0o700, exist_ok=True)
        boot = ", ".join(f'"{b}"' for b in self.bootstrap)
        listen = ", ".join(f'"{a}"' for a in self.listen.split(", "))
        (self.data / "config.toml").write_text(
            f'[node]\nnickname = "{self.name}"\n[betanet]\nlisten = [{listen}]\nbootstrap = [{boot}]\n'
            "reconnect_initial_s = 0.2\nreconnect_max_s = 1.0\nmdns = false\n" + self.extra_config
        )
        self.cli("init", "--exist-ok")
        notify_path = self.root / f"{self.name}.notify"
        notify_path.unlink(missing_ok=True)
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
            open(self.root / f"{self.name}.log", "ab") as log,
        ):
            notify.bind(str(notify_path))
            notify.settimeout(WAIT_S)
            self.proc = subprocess.Popen(
                [*VILLAGE, "run", "--data-dir", str(self.data)],
                env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            assert notify.recv(64) == b"READY=1", "the daemon did not report readiness"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def wait_for_message(self, text: str) -> dict[str, object]:
        """Follow the inbox (a streaming control call) until a message with ``text`` arrives."""
        with subprocess.Popen(
            [*VILLAGE, "inbox", "--follow", "--json", "--data-dir", str(self.data)], stdout=subprocess.PIPE, text=True
        ) as follow:
            try:
                assert follow.stdout is not None
                for line in follow.stdout:  # the stream's own events; the test's timeout bounds it
                    msg: dict[str, object] = json.loads(line)
                    if msg["text"] == text:
                        return msg
                raise AssertionError(f"inbox stream ended before {text!r} arrived")
            finally:
                follow.kill()

    def status(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.cli("status", "--json").stdout)
        return data


@pytest.fixture
def root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def test_two_daemons_over_betanet_with_kill_and_reconnect(root: Path) -> None:
    port = free_port()
    alice = Daemon(root, "alice", f"/ip4/127.0.0.1/tcp/{port}")
    bob = Daemon(root, "bob", "/ip4/127.0.0.1/tcp/0")
    try:
        alice.start()
        status = alice.status()
        addrs = status["listen_addrs"]
        assert isinstance(addrs, list) and len(addrs) == 1
        alice_addr = addrs[0]
        assert alice_addr.startswith(f"/ip4/127.0.0.1/tcp/{port}/p2p/12D3Koo"), alice_addr
        assert status["transports"] == ["betanet"]
        assert status["transport_counters"] == {
            "betanet": {
                **{k: 0 for k in ("links_opened", "oversize_frames", "dial_failures", "stalled", "mdns_discovered")},
                **{k: 0 for k in ("identified", "identify_skipped", "dht_routing_added", "dht_lookups", "dht_found")},
                **{k: 0 for k in ("peer_addrs_refused", "identify_push_timeouts", "identify_push_closes")},
                **{k: 0 for k in ("dht_answers_cut", "dht_answers_refused", "dht_records_dropped")},
                **{k: 0 for k in ("dht_requests_refused", "dht_puts_refused")},
                **{k: 0 for k in ("dht_streams_refused", "dht_requests_timed_out")},
                **{k: 0 for k in ("dht_streams_expired", "dht_streams_preempted", "dht_slots_refused")},
                "dht_streams_closed": 0,
                **{k: 0 for k in ("dht_providers_refused", "dht_providers_evicted")},
                **{k: 0 for k in ("relay_reservations", "relay_dials", "dial_fallbacks")},
                **{k: 0 for k in ("mesh_streams_refused", "quic_initials_dropped", "quic_connections_refused")},
                "quic_retries": 0,
                "quic_streams_over_limit": 0,
            }
        }
        bob.bootstrap = [alice_addr]
        bob.start()
        bob_id = bob.status()["peer_id"]
        alice_id = status["peer_id"]
        assert isinstance(bob_id, str) and isinstance(alice_id, str)

        # Bootstrap connects them; each learns the other from its (Noise-bound) announce.
        peer = json.loads(alice.cli("peers", "--wait", bob_id, "--timeout", WAIT, "--json").stdout)
        assert peer["nickname"] == "bob" and peer["transport"] == "betanet"
        bob.cli("peers", "--wait", alice_id, "--timeout", WAIT)

        # A private message with a delivery ack, and a public one.
        sent = json.loads(alice.cli("send", "bob", "hello over the internet", "--wait", WAIT, "--json").stdout)
        assert sent["state"] == "delivered"
        bob.cli("broadcast", "hello from bob")
        heard = alice.wait_for_message("hello from bob")
        assert heard["private"] is False and heard["from"] == bob_id
        follow = subprocess.run(
            [*VILLAGE, "inbox", "--json", "--data-dir", str(bob.data)],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=True,
        )
        inbox = json.loads(follow.stdout)
        assert [(m["text"], m["private"], m["from"]) for m in inbox] == [("hello over the internet", True, alice_id)]

        # kill -9 alice (the listener); bob keeps redialling with backoff and reconnects by itself.
        alice.kill()
        alice.start()  # same data dir, same port, same identity
        alice.cli("peers", "--wait", bob_id, "--timeout", WAIT)
        again = json.loads(alice.cli("send", bob_id, "are you still there?", "--wait", WAIT, "--json").stdout)
        assert again["state"] == "delivered"
        texts = [m["text"] for m in json.loads(bob.cli("inbox", "--json").stdout)]
        assert texts == ["hello over the internet", "are you still there?"]
        # alice's inbox survived the SIGKILL.
        alice_inbox = [m["text"] for m in json.loads(alice.cli("inbox", "--json").stdout)]
        assert "hello from bob" in alice_inbox
    finally:
        for d in (alice, bob):
            d.stop()


def test_two_daemons_over_betanet_quic(root: Path) -> None:
    """The default shape: alice listens on QUIC and TCP on one port; bob dials her QUIC address; they exchange
    a private message with a delivery ack over QUIC; both stop on SIGTERM with exit status 0 and no traceback."""
    port = free_port()
    alice = Daemon(root, "alice", f"/ip4/127.0.0.1/udp/{port}/quic-v1, /ip4/127.0.0.1/tcp/{port}")
    bob = Daemon(root, "bob", "/ip4/127.0.0.1/udp/0/quic-v1")
    try:
        alice.start()
        status = alice.status()
        alice_id = status["peer_id"]
        assert isinstance(alice_id, str)
        addrs = status["listen_addrs"]
        assert isinstance(addrs, list)
        libp2p_id = addrs[0].rpartition("/p2p/")[2]
        assert libp2p_id.startswith("12D3Koo") and addrs == [
            f"/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{libp2p_id}",
            f"/ip4/127.0.0.1/tcp/{port}/p2p/{libp2p_id}",
        ]
        bob.bootstrap = [addrs[0]]
        bob.start()
        bob_id = bob.status()["peer_id"]
        assert isinstance(bob_id, str)
        peer = json.loads(bob.cli("peers", "--wait", alice_id, "--timeout", WAIT, "--json").stdout)
        assert "/quic-v1/" in peer["address"], peer
        alice.cli("peers", "--wait", bob_id, "--timeout", WAIT)
        sent = json.loads(bob.cli("send", alice_id, "hello over quic", "--wait", WAIT, "--json").stdout)
        assert sent["state"] == "delivered"
        assert [m["text"] for m in json.loads(alice.cli("inbox", "--json").stdout)] == ["hello over quic"]
        counters = bob.status()["transport_counters"]
        assert isinstance(counters, dict) and counters["betanet"]["dial_fallbacks"] == 0
        for d in (bob, alice):
            assert d.proc is not None
            d.proc.terminate()
            assert d.proc.wait(timeout=WAIT_S) == 0
            log = (root / f"{d.name}.log").read_text()
            assert "Traceback" not in log and "closed to new arrivals" not in log, log[-2000:]
    finally:
        for d in (alice, bob):
            d.stop()


@pytest.mark.slow
def test_quic_peer_killed_and_restarted_is_reconnected(root: Path) -> None:
    """Over QUIC a killed peer sends no CONNECTION_CLOSE (and its restarted process drops the old connection's
    packets silently), so the survivor learns of it from the QUIC idle timeout (30 s, kept alive by PINGs
    while the peer lives) or an ICMP port unreachable, then redials its bootstrap peer and delivers again."""
    port = free_port()
    alice = Daemon(root, "alice", f"/ip4/127.0.0.1/udp/{port}/quic-v1, /ip4/127.0.0.1/tcp/{port}")
    bob = Daemon(root, "bob", "/ip4/127.0.0.1/udp/0/quic-v1")
    long_wait = "75"  # the 30 s idle timeout, the redial backoff and a loaded machine
    try:
        alice.start()
        addrs = alice.status()["listen_addrs"]
        assert isinstance(addrs, list)
        bob.bootstrap = [addrs[0]]
        bob.start()
        bob_id = bob.status()["peer_id"]
        assert isinstance(bob_id, str)
        alice.cli("peers", "--wait", bob_id, "--timeout", WAIT)
        alice.kill()
        alice.start()  # same port, same identity; bob's old connection is dead but nobody told bob
        alice.cli("peers", "--wait", bob_id, "--direct", "--timeout", long_wait, timeout_s=float(long_wait) + 15)
        sent = json.loads(alice.cli("send", bob_id, "back over quic", "--wait", WAIT, "--json").stdout)
        assert sent["state"] == "delivered"
        assert "back over quic" in [m["text"] for m in json.loads(bob.cli("inbox", "--json").stdout)]
    finally:
        for d in (alice, bob):
            d.stop()

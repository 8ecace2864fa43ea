"""Real `village run` daemons talking over BLE: each opens its Bumble adapter on an HCI transport (a controller
served over TCP by tests/transports/ble/radio_hub.py, standing in for a USB dongle), BetaNet off; a private
message and a public message go through the CLI from one to the other."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import VILLAGE, WAIT_S
from tests.test_multiprocess import Daemon, free_port

WAIT = f"{WAIT_S:g}"

REPO = Path(__file__).resolve().parents[3]


def start_ble_daemon(root: Path, name: str, hci_port: int) -> Daemon:
    """``Daemon.start`` with a [ble] section (Bumble on an HCI transport, required) and BetaNet off."""
    d = Daemon(root, name, listen="")
    d.data.mkdir(mode=0o700, exist_ok=True)
    (d.data / "config.toml").write_text(
        f'[node]\nnickname = "{name}"\n[betanet]\nenabled = false\n'
        f'[ble]\nenabled = "true"\nadapter = "bumble"\nbumble_transport = "tcp-client:127.0.0.1:{hci_port}"\n'
        'power_mode = "performance"\n'
    )
    d.cli("init", "--exist-ok")
    notify_path = root / f"{name}.notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify, open(root / f"{name}.log", "ab") as log:
        notify.bind(str(notify_path))
        notify.settimeout(WAIT_S)
        d.proc = subprocess.Popen(
            [*VILLAGE, "run", "--data-dir", str(d.data)],
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        assert notify.recv(64) == b"READY=1", "the daemon did not report readiness"
    return d


@pytest.fixture
def hub() -> Iterator[list[int]]:
    ports = [free_port(), free_port()]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.transports.ble.radio_hub", *map(str, ports)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        yield ports
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vlg-ble-", dir="/tmp"))
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def test_two_daemons_over_ble(root: Path, hub: list[int]) -> None:
    daemons: list[Daemon] = []
    try:
        alice = start_ble_daemon(root, "alice", hub[0])
        daemons.append(alice)
        bob = start_ble_daemon(root, "bob", hub[1])
        daemons.append(bob)
        status = alice.status()
        assert "ble" in str(status["transports"])
        alice_id, bob_id = str(status["peer_id"]), str(bob.status()["peer_id"])
        peer = json.loads(alice.cli("peers", "--wait", bob_id, "--timeout", WAIT, "--json").stdout)
        assert peer["nickname"] == "bob" and peer["transport"] == "ble"
        bob.cli("peers", "--wait", alice_id, "--timeout", WAIT)
        sent = json.loads(alice.cli("send", "bob", "hello over the air", "--wait", WAIT, "--json").stdout)
        assert sent["state"] == "delivered"
        bob.cli("broadcast", "hello from bob, over BLE")
        heard = alice.wait_for_message("hello from bob, over BLE")
        assert heard["private"] is False and heard["from"] == bob_id
        counters = alice.status()["transport_counters"]
        assert isinstance(counters, dict)
        ble = next(v for k, v in counters.items() if k.startswith("ble"))
        assert ble["links_up"] >= 1 and ble["frames_out"] > 0 and ble["frames_in"] > 0
    finally:
        for d in daemons:
            d.stop()

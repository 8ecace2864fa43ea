"""The real `village` CLI: help on every command, documented RPC methods, a real `village run` daemon
driven through its socket, signals and exit codes, and messaging between nodes through the CLI."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from node.cli import build_parser, main
from node.control.rpc import NoParams
from node.identity import Identity
from node.node import Node
from node.settings import Config
from node.transports.memory import MemoryNetwork

BIN = Path(sys.executable).parent
VILLAGE = [str(BIN / "village")] if (BIN / "village").exists() else [sys.executable, "-m", "node.cli"]
WAIT_S = 30.0  # real seconds; a passing run takes well under one
# Daemons in tests listen on loopback only, on a free port.
LOOPBACK_CONFIG = '[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmdns = false\n'


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short path: Unix socket paths are limited to 107 bytes.
    d = Path(tempfile.mkdtemp(prefix="vlg-", dir="/tmp"))
    data = d / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text(LOOPBACK_CONFIG)
    yield data
    subprocess.run(["rm", "-rf", str(d)], check=False)


def village(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = WAIT_S,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VILLAGE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@contextlib.contextmanager
def running_daemon(extra_config: str, prefix: str) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A real `village run` on loopback with ``extra_config`` appended to its config, started and ready (READY=1);
    yields its data dir and process, and checks it stops cleanly (unless the test stopped it already)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    data = d / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text(LOOPBACK_CONFIG + extra_config)
    assert village("init", "--data-dir", str(data)).returncode == 0
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(d / "notify.sock"))
    notify.settimeout(WAIT_S)
    env = {**os.environ, "NOTIFY_SOCKET": str(d / "notify.sock"), "VILLAGE_DATA_DIR": str(data)}
    proc = subprocess.Popen([*VILLAGE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(64) == b"READY=1"
        yield data, proc
        if proc.poll() is None:
            proc.terminate()
        _out, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
        subprocess.run(["rm", "-rf", str(d)], check=False)


# ---------------------------------------------------------------- documentation
def test_every_command_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands: dict[str, argparse.ArgumentParser] = sub.choices
    assert {"init", "id", "run", "status", "peers", "send", "broadcast", "inbox", "stop", "config"} <= set(commands)
    for name, p in commands.items():
        assert p.description, f"`village {name}` has no help text"
        for action in p._actions:
            if action.dest not in ("help",):
                assert action.help, f"`village {name}` option {action.dest} has no help"
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0


def test_every_rpc_method_is_documented(tmp_path: Path) -> None:
    from node.control.methods import build_registry

    reg = build_registry(Node(Config(data_dir=tmp_path), Identity.generate()))
    assert {
        "node.status",
        "node.id",
        "peers.list",
        "messages.send",
        "messages.broadcast",
        "inbox.list",
        "inbox.follow",
    } <= set(reg.methods)
    for m in reg.methods.values():
        d = m.describe()
        assert len(d["doc"]) > 20, f"{m.name} is not documented"
        if m.params is not NoParams:
            assert all(p["doc"] for p in d["params"]), f"{m.name} has an undocumented param"


# ---------------------------------------------------------------- one real daemon
def test_init_id_and_key_files(data_dir: Path) -> None:
    r = village("init", "--data-dir", str(data_dir), "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["created"] and len(created["peer_id"]) == 16
    for f in (data_dir / "identity").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    r = village("id", "--data-dir", str(data_dir), "--json")
    assert json.loads(r.stdout)["peer_id"] == created["peer_id"]
    assert village("init", "--data-dir", str(data_dir)).returncode == 1  # never overwrites keys
    r = village("init", "--data-dir", str(data_dir), "--exist-ok", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["peer_id"] == created["peer_id"]


def _notify_socket(tmp: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp / "notify.sock"))
    s.settimeout(WAIT_S)
    return s


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_status_and_clean_stop_on_signal(data_dir: Path, signum: signal.Signals) -> None:
    assert village("init", "--data-dir", str(data_dir)).returncode == 0
    notify = _notify_socket(data_dir.parent)
    env = {**os.environ, "NOTIFY_SOCKET": str(data_dir.parent / "notify.sock"), "VILLAGE_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen([*VILLAGE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(64) == b"READY=1"  # waits on the daemon's own readiness signal
        sock = data_dir / "control.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        status = json.loads(village("status", "--json", env={"VILLAGE_DATA_DIR": str(data_dir)}).stdout)
        ident = json.loads(village("id", "--json", "--data-dir", str(data_dir)).stdout)
        assert status["peer_id"] == ident["peer_id"] and status["fingerprint"] == ident["fingerprint"]
        assert status["nickname"] == f"village-{ident['peer_id'][:4]}"
        assert status["peers"] == 0 and status["uptime_s"] >= 0
        assert {"transports", "listen_addrs"} <= set(status)
        dd = ["--data-dir", str(data_dir)]
        assert json.loads(village("peers", "--json", *dd).stdout) == []
        assert json.loads(village("peers", "--pins", "--json", *dd).stdout) == []
        forgot = json.loads(village("peers", "forget", "0123456789abcdef", "--json", *dd).stdout)
        assert forgot == {"peer_id": "0123456789abcdef", "forgotten": False}
        assert village("peers", "forget", "0123", *dd).returncode == 1  # not a full peer ID
        r = village("broadcast", "hello nobody", *dd)
        assert r.returncode == 0 and len(r.stdout.strip()) == 32
        r = village("send", "nobody", "hi", *dd)
        assert r.returncode == 1 and "no known peer matches 'nobody'" in r.stderr
        r = village("send", "0123456789abcdef", "hi", *dd)  # a full peer ID: held in the outbox until it appears
        assert r.returncode == 0
        held = json.loads(village("outbox", "--json", *dd).stdout)
        assert [(m["to"], m["text"], m["state"]) for m in held] == [("0123456789abcdef", "hi", "pending")]
        assert json.loads(village("inbox", "--json", *dd).stdout) == []
        r = village("rpc", "rpc.methods", *dd)
        assert "inbox.follow" in r.stdout
        proc.send_signal(signum)
        assert notify.recv(64) == b"STOPPING=1"
        _out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()
    assert proc.returncode == 0, err
    assert "node ready" in err and "node stopped cleanly" in err
    assert "start-up heap frozen" in err  # [node] gc_freeze, on by default (node/heap.py)
    assert not (data_dir / "control.sock").exists()
    r = village("status", "--data-dir", str(data_dir))
    assert r.returncode == 1 and "no node is running" in r.stderr


def test_failed_starts_say_why(data_dir: Path) -> None:
    dd = ["--data-dir", str(data_dir)]
    r = village("run", *dd)
    assert r.returncode == 1 and "village init" in r.stderr  # no identity yet
    assert village("init", *dd).returncode == 0
    bad = data_dir.parent / "bad.toml"
    bad.write_text("[mesh]\nannounce_interval_s = -3\n")
    r = village("run", *dd, "--config", str(bad))
    assert r.returncode == 2 and "mesh.announce_interval_s: expected a value from 1 to 3,600" in r.stderr
    with socket.socket() as taken:  # a port someone else holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = data_dir.parent / "busy.toml"
        busy.write_text(f'[betanet]\nlisten = ["/ip4/127.0.0.1/tcp/{port}"]\nmdns = false\n')
        r = village("run", *dd, "--config", str(busy))
        assert r.returncode == 1 and f"betanet could not listen on /ip4/127.0.0.1/tcp/{port}" in r.stderr
        assert "change betanet.listen" in r.stderr
    key = data_dir / "identity" / "signing.key"
    key.chmod(0o644)
    r = village("run", *dd)
    assert r.returncode == 1 and f"chmod 600 {key}" in r.stderr
    key.chmod(0o600)
    notify = _notify_socket(data_dir.parent)
    env = {**os.environ, "NOTIFY_SOCKET": str(data_dir.parent / "notify.sock")}
    first = subprocess.Popen([*VILLAGE, "run", *dd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert notify.recv(64) == b"READY=1"
        r = village("run", *dd)
        assert r.returncode == 1 and "another node is already running" in r.stderr
        assert village("stop", *dd).returncode == 0
        first.wait(timeout=WAIT_S)
        assert first.returncode == 0
    finally:
        if first.poll() is None:
            first.kill()
        notify.close()


# ---------------------------------------------------------------- messaging through the CLI
async def test_cli_send_and_follow_between_nodes(nursery: trio.Nursery, data_dir: Path) -> None:
    """Two in-process nodes linked in memory, each with a real control socket; real CLI subprocesses send,
    follow the inbox, and read delivery state."""
    net = MemoryNetwork(seed=2)
    await nursery.start(net.run)
    nodes = []
    for name in ("alice", "bob"):
        cfg = Config(data_dir=data_dir / name)
        cfg.data_dir.mkdir(parents=True)
        t = net.transport(name)
        node = Node(cfg, Identity.generate(), transports=[t])
        await nursery.start(node.run)
        nodes.append((node, t, ["--socket", str(cfg.socket_path)]))
    (alice, ta, sa), (bob, tb, sb) = nodes
    net.connect(ta, tb)
    assert alice.core is not None and bob.core is not None
    with trio.fail_after(WAIT_S):
        await alice.wait_until(lambda: alice.core.peers.get(bob.identity.peer_id) is not None)  # type: ignore[union-attr]

        async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
            return await trio.run_process([*VILLAGE, *args], capture_stdout=True, capture_stderr=True, check=False)

        follow = await trio.lowlevel.open_process(
            [*VILLAGE, "inbox", "--follow", "--json", *sb], stdout=subprocess.PIPE
        )
        try:
            r = await cli("send", bob.nickname, "hi bob, it's alice", *sa)
            assert r.returncode == 0, r.stderr
            message_id = r.stdout.decode().strip()
            await alice.wait_until(lambda: alice.outgoing[message_id].state == "delivered")
            state = json.loads((await cli("message", message_id, "--json", *sa)).stdout)
            assert state["state"] == "delivered" and state["to"] == bob.identity.peer_id_hex
            assert follow.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await follow.stdout.receive_some(4096)
            got = json.loads(line)
            assert (got["text"], got["private"], got["id"]) == ("hi bob, it's alice", True, message_id)
            assert got["from"] == alice.identity.peer_id_hex
            r = await cli("broadcast", "public hello", *sb)
            await alice.wait_until(lambda: any(m.text == "public hello" for m in alice.inbox.list()))  # type: ignore[union-attr]
            listed = json.loads((await cli("inbox", "--json", *sa)).stdout)
            assert [(m["text"], m["private"]) for m in listed] == [("public hello", False)]
            peers = json.loads((await cli("peers", "--json", *sa)).stdout)
            assert peers[0]["peer_id"] == bob.identity.peer_id_hex and peers[0]["session"] is True
        finally:
            follow.kill()
            await follow.wait()
    nursery.cancel_scope.cancel()

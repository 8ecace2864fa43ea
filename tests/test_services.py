"""Running the node as a service: the Termux service (termux/sv/aivillage) under Debian's runit, the systemd unit
checked by `systemd-analyze verify`, and the systemd watchdog fed through a fake notify socket."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.settings import load_config
from node.systemd import watchdog_interval_s
from tests import runit
from tests.runit import service_processes, supervised
from tests.test_cli import LOOPBACK_CONFIG, VILLAGE, village

ROOT = Path(__file__).resolve().parents[1]
TERMUX_SERVICE = ROOT / "termux" / "sv" / "aivillage"
UNIT = ROOT / "systemd" / "aivillage.service"
WAIT_S = 60.0  # real seconds for a daemon to start or stop under load; a passing run takes a few


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="vsv-", dir="/tmp"))  # Unix socket paths are limited to 107 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(WAIT_S)
    return sock


@pytest.mark.skipif(shutil.which("runsv") is None, reason="runit is not installed (apt-get install runit)")
def test_termux_service_runs_under_runit(short_tmp: Path) -> None:
    service = short_tmp / "sv" / "aivillage"
    shutil.copytree(TERMUX_SERVICE, service)
    # The shipped battery-aware config, on loopback for the test (it is copied into the data dir on first start).
    shipped = (service / "config.toml").read_text()
    assert "[betanet]\n" in shipped
    (service / "config.toml").write_text(shipped.replace("[betanet]\n", "[betanet]\n" + LOOPBACK_CONFIG[10:], 1))
    data, prefix, fake_bin = short_tmp / "data", short_tmp / "prefix", short_tmp / "bin"
    fake_bin.mkdir()
    wakelock = short_tmp / "wakelock"
    for name, word in (("termux-wake-lock", "lock"), ("termux-wake-unlock", "unlock")):  # termux-tools stand-ins
        tool = fake_bin / name
        tool.write_text(f"#!/bin/sh\necho {word} >> {wakelock}\n")
        tool.chmod(0o755)
    # The data dir named in VILLAGE_ARGS (not VILLAGE_DATA_DIR) is the one init, the config copy and run all use.
    unused = short_tmp / "unused"
    (service / "conf").write_text(
        f"VILLAGE={VILLAGE[0]}\nVILLAGE_DATA_DIR={unused}\nVILLAGE_ARGS='--data-dir {data}'\nexport PYTHONPATH={ROOT}\n"
    )
    notify = notify_socket(short_tmp / "notify.sock")
    env = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "PREFIX": str(prefix),
        "NOTIFY_SOCKET": str(short_tmp / "notify.sock"),
    }
    env.pop("VILLAGE_DATA_DIR", None)
    # supervised(): however this ends, the node and svlogd are stopped and waited for (CI once found a node left)
    with contextlib.closing(notify), supervised(service, env) as runsv:
        assert notify.recv(64) == b"READY=1"
        status = village("status", "--json", env={"VILLAGE_DATA_DIR": str(data)})
        assert status.returncode == 0 and '"peer_id"' in status.stdout, status.stderr
        assert wakelock.read_text() == "lock\n"
        installed = data / "config.toml"
        assert 'mode = "bm25"' in installed.read_text() and stat.S_IMODE(installed.stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        sv = subprocess.run(["sv", "-w", str(int(WAIT_S)), "down", str(service)], capture_output=True, text=True)
        assert sv.returncode == 0 and sv.stdout.startswith("ok: down:"), sv.stdout + sv.stderr
        assert subprocess.run(["sv", "exit", str(service)], capture_output=True).returncode == 0
        assert runsv.wait(timeout=WAIT_S) == 0
    assert not unused.exists()
    log_dir = prefix / "var" / "log" / "sv" / "aivillage"
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700  # log/run's umask 077: the log is this user's only
    log = (log_dir / "current").read_text()
    assert "node ready" in log and "node stopped cleanly" in log, log
    assert wakelock.read_text() == "lock\nunlock\n"  # ./finish released the wake lock


CHILD = """import os, socket, sys, threading
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(f"{sys.argv[1]} {os.getpid()}".encode(), os.environ["NOTIFY_SOCKET"])
threading.Event().wait()
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("runsv") is None, reason="runit is not installed (apt-get install runit)")
def test_a_runit_test_failing_midway_leaves_no_process_behind(short_tmp: Path) -> None:
    """The teardown of the runit test (tests/runit.py): a test that fails while runsv runs its service and log
    service still stops both and waits for them by pid; one that ignores SIGTERM is killed."""
    service = short_tmp / "sv" / "t"
    (service / "log").mkdir(parents=True)
    child = short_tmp / "child.py"
    child.write_text(CHILD)
    for run, setup in ((service / "run", "trap '' TERM\n"), (service / "log" / "run", "")):  # run ignores TERM
        run.write_text(f"#!/bin/sh\n{setup}exec {sys.executable} {child} {run.parent.name}\n")
        run.chmod(0o755)
    env = {**os.environ, "NOTIFY_SOCKET": str(short_tmp / "notify.sock")}
    pids: dict[str, int] = {}
    notify = notify_socket(short_tmp / "notify.sock")
    with (
        contextlib.closing(notify),
        pytest.raises(RuntimeError, match="midway"),
        supervised(service, env, term_timeout_s=2.0),
    ):
        for _ in range(2):
            name, pid = notify.recv(64).decode().split()
            pids[name] = int(pid)
        assert all(_running(pid) for pid in pids.values())
        raise RuntimeError("the test fails midway")
    assert sorted(pids) == ["log", "t"]
    assert not [pid for pid in pids.values() if _running(pid)]
    assert not service_processes(None, service)


def test_the_runit_teardown_never_kills_a_process_that_took_a_listed_number(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of fix8 (LOW): the teardown listed the service's processes, then pinned each number with pidfd_open; a
    number freed and reused in between named another process, which was then SIGKILLed. Now each pinned process is
    confirmed by a second look at the process list: a stale first look naming an unrelated process (the stand-in
    for a reused number) leaves that process running."""
    service = short_tmp / "sv" / "t"
    (service / "log").mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    runsv = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    looks = [0]

    def listing(runsv_pid: int | None, where: Path) -> set[int]:
        looks[0] += 1
        return {bystander.pid} if looks[0] == 1 else real_listing(runsv_pid, where)

    real_listing = runit.service_processes
    monkeypatch.setattr(runit, "service_processes", listing)
    try:
        runit.stop_service(runsv, service, term_timeout_s=0.5)
        assert looks[0] >= 2 and bystander.poll() is None
    finally:
        for proc in (bystander, runsv):
            proc.kill()
            proc.wait()


def test_termux_battery_config_is_valid() -> None:
    cfg = load_config(TERMUX_SERVICE / "config.toml", data_dir=Path("/nonexistent"), env={})
    assert cfg.betanet.dht is False and cfg.ble.power_mode == "auto"
    done = village("config", "check", "--config", str(TERMUX_SERVICE / "config.toml"), "--data-dir", "/nonexistent")
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (systemd)")
def test_systemd_unit_verifies(short_tmp: Path) -> None:
    text = UNIT.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text
    # The unit names the installed path; verify it against this machine's real `village` executable instead.
    unit = short_tmp / "aivillage.service"
    unit.write_text(text.replace("/opt/aivillage/.venv/bin/village", VILLAGE[0]))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    # The check has teeth: a misspelt key is reported.
    unit.write_text(
        text.replace("WatchdogSec=", "WatchdogSecs=").replace("/opt/aivillage/.venv/bin/village", VILLAGE[0])
    )
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in done.stderr


def test_watchdog_interval_follows_systemd() -> None:
    base = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "60000000"}
    assert watchdog_interval_s(base, 42) == 30.0
    assert watchdog_interval_s({**base, "WATCHDOG_PID": "42"}, 42) == 30.0
    assert watchdog_interval_s({**base, "WATCHDOG_PID": "7"}, 42) is None  # meant for another process
    assert watchdog_interval_s({**base, "WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval_s({**base, "WATCHDOG_USEC": "soon"}, 42) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000"}, 42) is None  # nowhere to send pings


def test_a_real_node_feeds_the_watchdog(short_tmp: Path) -> None:
    """`village run` under a fake systemd: READY=1, then WATCHDOG=1 every WATCHDOG_USEC/2, then STOPPING=1."""
    data = short_tmp / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text(LOOPBACK_CONFIG)
    assert village("init", "--data-dir", str(data)).returncode == 0
    notify = notify_socket(short_tmp / "notify.sock")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(short_tmp / "notify.sock"),
        "VILLAGE_DATA_DIR": str(data),
        "WATCHDOG_USEC": "200000",  # 0.2 s: a ping every 0.1 s
    }
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(64) == b"READY=1"
        assert [notify.recv(64) for _ in range(5)] == [b"WATCHDOG=1"] * 5
        proc.terminate()
        while (msg := notify.recv(64)) == b"WATCHDOG=1":
            pass
        assert msg == b"STOPPING=1"
        _out, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_anchor_is_one_command_for_servers_identity_and_anchor() -> None:
    """`make anchor` (dry run: the real one installs into .venv): the servers, an identity, then the anchor in the
    foreground pointed at the servers' settings."""
    # Under `make test` this is a sub-make: without the parent's MAKEFLAGS/MAKELEVEL it prints no "Entering directory".
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "anchor"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()[-3:]
    assert lines[0] == "scripts/services up"
    assert lines[1].endswith("/village init --exist-ok")
    assert lines[2] == f'VILLAGE_SERVICES_SETTINGS="{ROOT}/.services/settings.json" .venv/bin/village anchor run'

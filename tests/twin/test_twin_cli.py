"""`village twin ...` against a real `village run` daemon: the user's messages are learned through the real
control socket, suggestions come back, the state file is 0600 in the data dir, and forget erases it."""

from __future__ import annotations

import argparse
import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.control.client import ControlClient
from node.twin import cli as twin_cli
from tests.test_cli import WAIT_S, running_daemon, village


@pytest.fixture
def daemon() -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    with running_daemon("[twin]\nactions = false\n", "vtwin-") as running:
        yield running


def twin(data: Path, *args: str) -> tuple[int, Any]:
    r = village("twin", *args, "--json", "--data-dir", str(data), timeout=120)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else r.stderr)


def test_twin_cli_against_a_running_node(daemon: tuple[Path, subprocess.Popen[str]]) -> None:
    daemon_dir, proc = daemon
    with ControlClient(daemon_dir / "control.sock", timeout_s=60) as c:
        for _ in range(3):
            c.call("messages.broadcast", text="the snorkel club meets at dawn")
    code, st = twin(daemon_dir, "status", "--wait", "25")  # learning is asynchronous: wait for the queue
    assert code == 0 and st["learning"] == "allowed", st
    assert st["messages_learned"] == 3 and st["prior_bytes"] > 0
    code, sug = twin(daemon_dir, "suggest", "the snorkel ")
    assert code == 0 and sug[0]["token"] == "club"
    code, exported = twin(daemon_dir, "export")
    assert "snorkel" in exported["personal_words"] or "snorkel" in json.dumps(exported["trigram_counts"])
    # Persisted at shutdown / on demand: stop the node and look at the file.
    with ControlClient(daemon_dir / "control.sock", timeout_s=60) as c:
        c.call("node.stop")
    assert proc.wait(timeout=WAIT_S) == 0
    state = daemon_dir / "twin" / "state.bin"
    assert state.exists() and stat.S_IMODE(state.stat().st_mode) == 0o600


def test_twin_forget_needs_yes_and_erases(daemon: tuple[Path, subprocess.Popen[str]]) -> None:
    daemon_dir, _proc = daemon
    with ControlClient(daemon_dir / "control.sock", timeout_s=60) as c:
        c.call("messages.broadcast", text="remember the walrus-canary")
        c.call("twin.status", wait_s=25)
    r = village("twin", "forget", "--data-dir", str(daemon_dir))
    assert r.returncode == 2 and "--yes" in r.stderr
    code, out = twin(daemon_dir, "forget", "--yes")
    assert code == 0 and out["path"].endswith("twin")
    code, exported = twin(daemon_dir, "export")
    assert "walrus" not in json.dumps(exported)
    assert not (daemon_dir / "twin").exists()


def test_status_text_names_the_set_aside_state_files(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The human text of `village twin status` (what a user reads after a downgrade and a restart) says the files
    set aside are there and how to restore one; no daemon needed: the control call answers a status dict."""
    st = {
        "learning": "allowed",
        "reason": "ok",
        "messages_learned": 0,
        "tokens_learned": 0,
        "personal_words": 0,
        "personal_trigrams": 0,
        "actions_known": 1,
        "recent_bits_per_token": None,
        "neural": None,
        "language_model": {"loaded": False, "loads_at_save": None},
        "battery_percent": 90,
        "external_power": True,
        "temp_c": 35.0,
        "cpu_used_s_this_hour": 0.0,
        "cpu_budget_s_per_hour": 60.0,
        "queued_events": 0,
        "deferred_events": 0,
        "deferred_bytes": 0,
        "deferred_dropped": 0,
        "state_path": "/data/twin/state.bin",
        "state_bytes": 300,
        "max_disk_bytes": 10_000_000,
        "load_error": None,
        "set_aside": {
            "count": 2,
            "bytes": 9000,
            "files": [
                {"name": "state.bin.bad.17", "bytes": 5000, "age_s": 7300},
                {"name": "state.bin.bad", "bytes": 4000, "age_s": 90_000},
            ],
        },
    }
    monkeypatch.setattr(twin_cli, "call", lambda *a, **kw: st)
    assert twin_cli.cmd_status(argparse.Namespace(wait=0.0, json=False)) == 0
    out = capsys.readouterr().out
    assert "2 state file(s) set aside, 9000 bytes" in out and "state.bin.bad.17, last written 2 h ago" in out
    assert "`mv state.bin.bad.17 state.bin` in /data/twin" in out and "forget` deletes them" in out
    st["set_aside"] = None
    twin_cli.cmd_status(argparse.Namespace(wait=0.0, json=False))
    assert "set aside" not in capsys.readouterr().out

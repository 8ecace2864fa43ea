"""`village ask`, `village agents list|trace` and `village vote propose|status|evidence` against a real daemon;
a certified change survives a restart."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from node.agents.plugin import ask_human, trace_human
from tests.test_cli import VILLAGE, WAIT_S, _notify_socket, data_dir, village

__all__ = ["data_dir"]


def start(data: Path) -> tuple[subprocess.Popen[str], object]:
    (data.parent / "notify.sock").unlink(missing_ok=True)
    notify = _notify_socket(data.parent)
    env = {**os.environ, "NOTIFY_SOCKET": str(data.parent / "notify.sock"), "VILLAGE_DATA_DIR": str(data)}
    proc = subprocess.Popen([*VILLAGE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert notify.recv(64) == b"READY=1"
    return proc, notify


def stop(proc: subprocess.Popen[str], notify: object) -> None:
    proc.terminate()
    proc.communicate(timeout=WAIT_S)
    notify.close()  # type: ignore[attr-defined]
    assert proc.returncode == 0


@pytest.mark.timeout(300)
def test_ask_trace_and_vote_against_a_real_daemon(data_dir: Path) -> None:
    (data_dir / "config.toml").write_text((data_dir / "config.toml").read_text() + '\n[llm]\nbackend = "off"\n')
    dd = ["--data-dir", str(data_dir)]
    assert village("init", *dd).returncode == 0
    proc, notify = start(data_dir)
    try:
        roster = json.loads(village("agents", "list", "--json", *dd).stdout)
        assert len(roster) == 23
        r = village("ask", "--json", "which", "peers", "can", "I", "reach", *dd, timeout=120)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["steps"][0]["agent"] == "Navigator" and "No peers are known yet" in out["answer"]
        trace = json.loads(village("agents", "trace", out["id"], "--json", *dd).stdout)
        assert [s["tool"] for s in trace["steps"] if s["kind"] == "call"] == ["mesh.peers", "mesh.routes"]
        r = village("vote", "propose", "config", "rag.candidates", "40", "--json", *dd)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["certificate"]["value"] == "yes"  # the node's 23 agents are the local electorate: all voted
        assert {v["agent"] for v in out["votes"]} == {a["name"] for a in roster}
        r = village("vote", "propose", "admit", "00" * 32, "1", "--json", *dd)
        assert json.loads(r.stdout)["state"]["epoch"] == 1
    finally:
        stop(proc, notify)
    proc, notify = start(data_dir)
    try:
        st = json.loads(village("vote", "status", "--json", *dd).stdout)
        assert st["state"]["config"] == {"rag.candidates": 40}
        assert st["epoch"] == 1 and len(st["electorate"]) == 24
        assert json.loads(village("vote", "evidence", "--json", *dd).stdout) == []
    finally:
        stop(proc, notify)


def test_answers_and_traces_from_peers_are_printed_with_visible_escapes() -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J\x1b[31mFAKE: node compromised\u202e"
    out = ask_human({"id": "ab12", "answer": f"[Sage@bob] line one\n{hostile}"})
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert out.split("\n") == [
        "[Sage@bob] line one",
        "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mFAKE: node compromised\\u202e",
        "(trace: village agents trace ab12)",
    ]
    listed = trace_human([{"id": "ab12", "request": f"what\n{hostile}"}])
    assert "\x1b" not in listed and "\n" not in listed and "\\x0a" in listed
    steps = trace_human(
        {"steps": [{"seq": 0, "agent": "King", "kind": "remote", "tool": "", "detail": f"asked {hostile}"}]}
    )
    assert "\x1b" not in steps and "\\x1b[2J" in steps

"""`village ask` against a real `village run` daemon with the agents off: the twin is the entry point, the matching
tool answers, and the ask (a call on the user's own control socket) is learned by the twin as a query."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import running_daemon, village


@pytest.fixture
def daemon() -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    config = '[twin]\nactions = false\nneural = false\n[agents]\nenabled = false\n[rag]\nmode = "bm25"\n'
    with running_daemon(config, "vask-") as running:
        yield running


@pytest.mark.timeout(300)
def test_village_ask_goes_through_the_twin_to_the_tool(daemon: tuple[Path, subprocess.Popen[str]]) -> None:
    data, _proc = daemon
    dd = ["--data-dir", str(data)]
    r = village("ask", "--json", "which", "peers", "can", "I", "reach", *dd, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["via"] == "tool" and out["steps"][0]["tool"] == "peers" and "0 of 0 known peers" in out["answer"]
    assert out["personal_context"] == {}  # the socket's caller is the owner: the field is there, nothing applied
    r = village("ask", "how", "do", "the", "quokkas", "sleep", *dd, timeout=120)
    assert r.returncode == 0 and "nothing about this" in r.stdout, r.stderr
    r = village("ask", "--agent", "Sage", "hello", *dd, timeout=60)
    assert r.returncode != 0 and "agents are disabled" in r.stderr
    r = village("twin", "export", "--json", *dd, timeout=120)
    exported = json.loads(r.stdout)
    assert "quokkas" in exported["personal_words"]  # learned from the user's own ask
    assert exported["status"]["events"] == 2  # the failed ask (refused) is not an event

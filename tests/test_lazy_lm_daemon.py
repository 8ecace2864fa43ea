"""Footprint (issue 17 item 3, session 8): a real `village run` with the default plugins learns the user's first
command (`village status`, a twin action event) without loading the twin's language model, and loads it at the first
text; a restart that sees only commands writes the language-model state back unchanged, and it still predicts."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

from node.twin import store
from node.twin.engine import LIGHT_ARRAYS, LIGHT_META
from tests.test_lazy_plugins import RAG_BM25, daemon, data_dir

__all__ = ["data_dir"]  # the fixture
# bench/footprint.py --first-command (bench/README.md, lazy8): the first command costs +14 MB (numpy, the engine's
# modules, the next-action head); with the language model (prior, neural tier) loaded, as before: +31 MB.
MAX_COMMAND_GROWTH_KIB = 22_000
TEXTS = ("see you at the vorpal lounge", "the vorpal lounge opens at nine", "meet me at the vorpal lounge")


def _rss_kib(control: Path) -> int:
    """VmRSS of the daemon serving ``control`` (its pid from the socket's peer credentials)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(control))
        pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _lm_part(path: Path) -> tuple[dict[str, tuple[str, tuple[int, ...], bytes]], dict[str, object]]:
    arrays, meta = store.unpack_state(path.read_bytes(), max_bytes=1 << 30)
    kept = {k: (v.dtype.name, v.shape, v.tobytes()) for k, v in arrays.items() if k[2:] not in LIGHT_ARRAYS}
    return kept, {k: v for k, v in meta.items() if k not in LIGHT_META}


def test_a_command_does_not_load_the_language_model_and_a_text_does(data_dir: Path) -> None:
    control = data_dir / "control.sock"
    state = data_dir / "twin" / "state.bin"
    with daemon(data_dir, RAG_BM25) as (client, _modules):
        idle = _rss_kib(control)
        assert client.call("node.status")["peer_id"]  # what `village status` calls: a twin action event
        st = client.call("twin.status", wait_s=25)
        assert (
            st["events"] == 1
            and st["actions_known"] == 1
            and st["language_model"] == {"loaded": False, "loads_at_save": None}
        ), st
        grown = _rss_kib(control) - idle
        assert grown < MAX_COMMAND_GROWTH_KIB, f"+{grown} KiB after the first command"
        env = {**os.environ, "VILLAGE_DATA_DIR": str(data_dir)}
        cli = subprocess.run(
            [sys.executable, "-m", "node.cli", "twin", "status"], env=env, capture_output=True, text=True, timeout=60
        )
        assert cli.returncode == 0 and "language model: not loaded" in cli.stdout, cli.stdout + cli.stderr
        assert "learned: 0 messages, 0 tokens" in cli.stdout and "1 actions" in cli.stdout, cli.stdout
        for text in TEXTS:
            client.call("twin.observe", text=text)
        st = client.call("twin.status", wait_s=25)
        assert st["language_model"] == {"loaded": True} and st["messages_learned"] == 3, st
        assert client.call("twin.suggest", text="see you at the ")[0]["token"] == "vorpal"
    learned = _lm_part(state)
    assert "tri" in learned[0] and learned[1]["messages"] == 3
    with daemon(data_dir, RAG_BM25) as (client, _modules):  # a restart that sees commands only
        client.call("node.status")
        st = client.call("twin.status", wait_s=25)
        assert (
            st["events"] == 5
            and st["language_model"] == {"loaded": False, "loads_at_save": None}
            and st["messages_learned"] == 3
        ), st
    assert _lm_part(state) == learned  # saved at the stop without the model: its part as it was
    with daemon(data_dir, RAG_BM25) as (client, _modules):
        assert client.call("twin.suggest", text="see you at the ")[0]["token"] == "vorpal"
        st = client.call("twin.status")
        assert st["events"] == 5 and st["actions_known"] == 1 and st["messages_learned"] == 3, st
